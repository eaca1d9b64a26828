"""The asserting helpers the tests share (one copy): what "nothing changed" compares, what a
one-line error looks like, a command refused cleanly, a protected set's integer perturbation.

    before = snapshot(tmp_path); ...; assert snapshot(tmp_path) == before
    line = refused(capsys, ["import", "npz", path, "--out", out], "p.npz", unchanged=tmp_path)
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from unlearnable import ImageSet
from unlearnable.cli import main


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` (hidden ones too): a regular file by its bytes' hash, anything else
    by its type (never opened: a FIFO would block)."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(root))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) \
            else f"type {stat.S_IFMT(st.st_mode)}"
    return out


def one_line(text: str) -> bool:
    """Whether a message is one line (the CLI's promise for every error)."""
    return len(str(text).strip().splitlines()) == 1


def error_line(err: str, *names: str) -> str:
    """`err` (a command's stderr) is one line `unlearnable: error: ...` naming each of `names`; it."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unlearnable: error: "), err
    for n in names:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def refused(capsys, argv: list[str], *names: str, unchanged: Path | None = None) -> str:
    """Run the command: it exits 2 with one stderr line naming each of `names` and, with
    `unchanged`, leaves that directory as it was."""
    before = snapshot(unchanged) if unchanged is not None else None
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    line = error_line(err, *names)
    if unchanged is not None:
        assert snapshot(unchanged) == before
    return line


def delta_of(p: ImageSet, base: ImageSet) -> np.ndarray:
    """A protected set's perturbation in grey levels (int16): what the stored files change."""
    return p.images.astype(np.int16) - base.images.astype(np.int16)


def write_png(path: Path, arr: np.ndarray, fmt: str = "PNG") -> None:
    """Write one uint8 image (HW or HWC) in `fmt` (JPEG at quality 95), making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def check_docstring_template(fn, command: str, params_cls) -> None:
    """torchattacks' template on a registered method's function: Paper (with a link), Threat
    model, Args naming every field of `params_cls`, Shapes, Example running `command`, in order."""
    doc = inspect.getdoc(fn) or ""
    at = [doc.find(label) for label in ("Paper:", "Threat model:", "Args", "Shapes:", "Example:")]
    assert min(at) > 0 and at == sorted(at), (command, at)
    assert "https://" in doc[at[0]:at[1]], command
    assert command in doc[at[4]:], command
    missing = [f.name for f in dataclasses.fields(params_cls) if f.name not in doc[at[2]:at[3]]]
    assert not missing, (command, missing)


def chromium() -> str | None:
    """The headless browser the page tests use (Debian's chromium, `make browser`), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def open_in_chromium(page: Path, profile: Path, screenshot: Path | None = None) -> str:
    """`page` rendered by headless Chromium, offline: its DOM after the scripts ran (and a
    screenshot at 1200x1600 when asked)."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
    url = page.resolve().as_uri()
    dom = subprocess.run([chromium(), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    if screenshot is not None:
        subprocess.run([chromium(), *flags, "--window-size=1200,1600", f"--screenshot={screenshot}", url],
                       capture_output=True, timeout=120)
    return dom
