"""A string from a dataset is data, never markup or control: one renderer per place it goes.

    for_html(name)      # escaped: <script> shows as text
    for_md(name)        # one line, escaped, at most 120 characters: no forged "**Verdict**" line
    for_term(name)      # control characters and escape sequences shown, not obeyed
    for_filename(name)  # letters, digits, "._-" only; never empty, never hidden, never ".."

Manifests, class names, file and folder names and parameters come from whoever published a
dataset. A manifest `name` holding `\\x1b]0;...\\x07` would retitle the user's terminal when a
summary prints it; a `kind` holding a newline would write a second verdict line into report.md.
Every report, table and printed line passes dataset strings through one of these; the CLI's log
handler passes every message through `for_term` (`TerminalSafe`).
"""

from __future__ import annotations

import html
import logging
import re
import unicodedata

# Characters a terminal or a text viewer obeys rather than shows: C0 and C1 controls (ESC starts
# every ANSI/OSC sequence, CSI is U+009B), DEL, and Unicode format characters (bidirectional
# overrides that reorder what is shown, zero-width characters that hide text).
_CONTROL_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}
MD_LIMIT = 120
FILENAME_LIMIT = 80
# Markdown's punctuation that can start or end markup inside a line (emphasis, code, links and
# images, which need "[", table cells, headings); escaped with a backslash. < > & become entities:
# raw HTML is markup too. A string never starts a line, so list and quote markers are harmless.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~])")


def _visible(ch: str) -> str:
    """A control character as the escape a person reads (\\x1b, \\u202e), never the character."""
    o = ord(ch)
    return f"\\x{o:02x}" if o < 0x100 else (f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) in _CONTROL_CATEGORIES


def for_term(text: object, keep_newlines: bool = False) -> str:
    """`text` for a terminal: every control and format character shown as its escape (so no escape
    sequence reaches the terminal); `keep_newlines` keeps line breaks and tabs (multi-line messages)."""
    s = str(text)
    if not any(_is_control(ch) for ch in s):
        return s  # the common case, without building a new string
    return "".join(ch if keep_newlines and ch in "\n\t" else (_visible(ch) if _is_control(ch) else ch) for ch in s)


def _cap(s: str, limit: int) -> str:
    return s if len(s) <= limit else s[:limit - 1] + "…"


def for_md(text: object, limit: int = MD_LIMIT) -> str:
    """`text` for Markdown: on one line (controls shown as escapes), markup escaped, at most
    `limit` characters before escaping (so a long name cannot push the table apart)."""
    s = _cap(for_term(text), limit)
    s = html.escape(s, quote=False)  # & < > first: the backslashes added next are not entities
    return _MD_SPECIAL.sub(r"\\\1", s)


def for_html(text: object) -> str:
    """`text` for HTML text or a quoted attribute: escaped, controls shown as escapes."""
    return html.escape(for_term(text), quote=True)


def for_filename(text: object, limit: int = FILENAME_LIMIT, spaces: bool = False) -> str:
    """`text` as one path component: ASCII letters, digits and "._-" (and " " with `spaces`;
    anything else "_"), no leading dot (hidden, "." and "..") and never empty."""
    keep = r"A-Za-z0-9._ -" if spaces else r"A-Za-z0-9._-"
    s = re.sub(f"[^{keep}]", "_", str(text)).strip().lstrip(".").strip()[:limit].strip()
    return s or "_"


class TerminalSafe(logging.Filter):
    """A log filter that renders every record's message with `for_term` (its arguments, which
    may quote a dataset, are formatted first); installed on the CLI's stderr handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        safe = for_term(msg, keep_newlines=True)
        if safe is not msg:
            record.msg, record.args = safe, None
        return True
