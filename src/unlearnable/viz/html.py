"""Self-contained HTML pages: one stylesheet, figures inlined as base64 PNG (the page opens
offline as one file), tables of already-escaped cells. The audit's report and the reproduced
tables are made with these.

    page("title", "<h1>...</h1>" + table(["a", "b"], [["1", "2"]]) + figure(Path("out"), "x.png", "x"))

The page carries a tiny script that records in `<body data-figures>` how many figures decoded,
which the browser test reads.
"""

from __future__ import annotations

import base64
from pathlib import Path

from ..core.files import within
from ..core.text import for_html


def figure(base: Path, rel: str | None, alt: str, width: int | None = None) -> str:
    """`rel` (a PNG under `base`) inlined as a captioned figure; a note where the file is missing."""
    if not rel:
        return ""
    p = base / rel
    if not within(base, p):  # `rel` is read from a results file: never a file outside its directory
        return f'<p class="missing">figure {for_html(rel)} lies outside {for_html(str(base))}: not shown</p>'
    if not p.is_file():
        return f'<p class="missing">figure {for_html(rel)} is missing</p>'
    data = base64.b64encode(p.read_bytes()).decode()
    w = f' style="max-width:{width}px"' if width else ""
    return f'<figure><img class="fig" alt="{for_html(alt)}" src="data:image/png;base64,{data}"{w}>' \
           f'<figcaption>{for_html(alt)}</figcaption></figure>'


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.8em 0;font-size:.93em} th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
.verdict{font-size:1.25em;padding:.7em 1em;border-radius:6px;color:#fff;margin:1em 0}
.tag{display:inline-block;padding:0 .5em;border-radius:4px;color:#fff;font-size:.9em}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top} img.fig{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555} .muted{color:#777;font-size:.9em} code{background:#f6f6f6;padding:0 .2em}
"""
SCRIPT = """<script>
window.addEventListener('load',function(){var im=document.querySelectorAll('img.fig'),ok=0;
for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++;}
document.body.setAttribute('data-figures',ok+'/'+im.length);});
</script>"""


def table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table; `headers` and `rows` are already-escaped HTML."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def page(title: str, body: str) -> str:
    """A complete page: `body` (HTML) under the shared stylesheet, `title` escaped."""
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{for_html(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}{SCRIPT}</body></html>\n")
