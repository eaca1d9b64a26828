"""What `unlearnable detect --out DIR` writes: detect.json (the decision and its evidence, with a
manifest), per_sample.npy (each sample's score; NaN where a sample was not measured),
directions.png (the raw classifier's rows as images: a shortcut shows as a pattern, natural
classes as blurry class shapes; the paper's Fig. 3) and a self-contained detect.html.

The four files are written all or nothing: a full disk or a kill part-way leaves the directory
as it was (a killed write's staging directory is removed by the next write)."""

from __future__ import annotations

import base64
import contextlib
import html
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..core.errors import UnlearnableError
from ..core.files import atomic_file, named, remove_stale, temp_prefix, write_json
from ..core.provenance import now_iso, versions
from ..data.identity import content_id
from ..data.imageset import ImageSet
from .core import decision_of, explain

log = logging.getLogger(__name__)

# What `write` puts under OUT, in order: detect.json last, its presence says the rest is there.
FILES = ("directions.png", "per_sample.npy", "detect.html", "detect.json")


def directions_image(directions: np.ndarray, classes: list[str], scale: int | None = None) -> Image.Image:
    """One tile per class, each row of the classifier scaled to its own [-max, max] -> [0, 255]."""
    k, c, h, w = directions.shape
    scale = scale or max(1, 64 // max(h, w))
    tiles = []
    for d in directions:
        m = float(np.abs(d).max()) or 1.0
        t = np.clip((d / m + 1) * 127.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)
        im = Image.fromarray(t[..., 0] if c == 1 else t[..., :3])
        tiles.append(im.resize((w * scale, h * scale), Image.NEAREST))
    pad = 2
    canvas = Image.new("L" if c == 1 else "RGB", (k * (w * scale + pad) + pad, h * scale + 2 * pad), 255)
    for i, t in enumerate(tiles):
        canvas.paste(t, (pad + i * (w * scale + pad), pad))
    return canvas


def result_json(res: dict[str, Any], ds: ImageSet, data: str, seed: int) -> dict[str, Any]:
    """detect.json: the decision, the evidence and the manifest (input checksum, seed, versions)."""
    keep = {k: v for k, v in res.items() if k not in ("per_sample", "directions")}
    return {**keep, "data": data, "dataset": {"name": ds.name, "num_samples": len(ds), "shape_chw": list(ds.chw),
                                                "classes": list(ds.classes), "content": content_id(ds)},
            "seed": seed, "created": now_iso(), "versions": versions(),
            "files": {"per_sample": "per_sample.npy", "directions": "directions.png", "html": "detect.html"}}


def write(out: str | os.PathLike[str], res: dict[str, Any], ds: ImageSet, data: str, seed: int) -> Path:
    """Write `detect(ds)`'s result `res` under `out` (created if needed): directions.png,
    per_sample.npy, detect.html and detect.json, all or nothing. Returns `out`.

    Every file is written into a staging directory inside `out` first, then renamed into place
    (detect.json last), each file it replaces moved aside meanwhile. Any error (a full disk,
    Ctrl-C) puts the old files back, removes what this write made, and is raised again; an
    OSError names the file it was writing.
    """
    out = Path(out)
    for name in FILES:
        # A rename would replace a directory, device or FIFO of that name rather than write a file.
        if (out / name).is_dir() or ((out / name).exists() and not (out / name).is_file()):
            raise UnlearnableError(f"{out / name}: exists and is not a regular file; choose another --out")
    doc = result_json(res, ds, data, seed)
    buf = io.BytesIO()
    directions_image(res["directions"], ds.classes).save(buf, format="PNG")
    png = buf.getvalue()
    writers: dict[str, Callable[[Path], None]] = {
        "directions.png": lambda p: _write_bytes(p, png),
        "per_sample.npy": lambda p: _write_npy(p, res["per_sample"].astype(np.float32)),
        "detect.html": lambda p: _write_bytes(p, render_html(doc, png).encode()),
        "detect.json": lambda p: write_json(p, doc),
    }
    made = [d for d in (out, *out.parents) if not os.path.lexists(d)]
    stage_name = out / "detect-files"  # names the staging directory (`temp_prefix`), never made itself
    stage: Path | None = None
    placed: list[tuple[Path, Path | None]] = []  # (where a file goes, where the one it replaces is set aside)
    try:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale(stage_name)
        stage = Path(tempfile.mkdtemp(prefix=temp_prefix(stage_name), suffix=".tmp", dir=out))
        for name in FILES:
            try:
                writers[name](stage / name)
            except OSError as e:
                raise named(e, out / name) from e
        for name in FILES:
            dest = out / name
            old = stage / f"old-{name}" if os.path.lexists(dest) else None
            placed.append((dest, old))  # before the renames: an interrupt between them is undone too
            try:
                if old is not None:
                    os.replace(dest, old)
                os.replace(stage / name, dest)
            except OSError as e:
                raise named(e, dest) from e  # the staging name means nothing to the user
    except BaseException:
        kept = False
        for dest, old in reversed(placed):
            try:
                if old is None:
                    dest.unlink(missing_ok=True)
                elif os.path.lexists(old):  # else it was never moved aside: `dest` is still the old file
                    os.replace(old, dest)
            except OSError as e:
                # The first error is the one to report; the previous file must then outlive the staging.
                kept = True
                log.warning("%s: could not be put back (%s); its previous version is %s", dest, e, old)
        if stage is not None and not kept:
            shutil.rmtree(stage, ignore_errors=True)
        for d in made:  # deepest first; only what this write created, and only if still empty
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    shutil.rmtree(stage, ignore_errors=True)  # the files replaced
    return out


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)


def _write_npy(path: Path, a: np.ndarray) -> None:
    with atomic_file(path, "wb") as f:
        np.save(f, a, allow_pickle=False)


def render_html(doc: dict[str, Any], png: bytes) -> str:
    """detect.html: the decision, the held-out errors, the features and their weights, per-class
    errors and the directions image (`png`, embedded), from detect.json's `doc`; self-contained."""
    e = doc["errors"]
    esc = html.escape
    verdict = decision_of(doc["protected"])
    rows = "".join(
        f"<tr><td>{esc(name)}</td><td>{100 * e[key]:.1f}%</td><td>{esc(why)}</td></tr>"
        for name, key, why in [
            ("raw pixels", "raw", "a ridge classifier fit on one half, tested on the other"),
            ("2-bit grey levels", "quant", "a small shortcut does not survive 4 grey levels"),
            ("blurred", "blur", "removes high-frequency patterns"),
            ("top directions removed", "proj", "the raw classifier's directions projected out (Alg. 1)"),
            ("class means, raw", "ncm_raw", "nearest class mean"),
            ("class means, high-pass", "ncm_highpass", "a class-wise pattern is its class's mean residual")])
    feats = "".join(f"<tr><td>{esc(k)}</td><td>{v:+.3f}</td><td>{doc['calibration'].get('weights', {}).get(k, 0):+.3f}</td></tr>"
                    for k, v in doc["features"].items())
    pc = "".join(f"<tr><td>{esc(str(c['name']))}</td><td>{c['n']}</td><td>{100 * c['error_raw']:.1f}%</td>"
                 f"<td>{100 * c['error_quant']:.1f}%</td><td>{100 * c['error_proj']:.1f}%</td></tr>"
                 for c in doc["per_class"])
    img = base64.b64encode(png).decode()
    # Without a decision the score is shown as evidence only, and the reason comes first.
    reason = (f"{esc(doc.get('cannot_judge') or 'the data cannot support a decision')}; not weighed: "
              if doc["protected"] is None else "")
    body = (f"<h1>Is <code>{esc(str(doc['data']))}</code> protected?</h1>"
            f"<p class=verdict><b>{esc(verdict)}</b>: {reason}score {doc['score']:.3f}, threshold {doc['threshold']:.3f} "
            f"(calibrated for {100 * doc['fpr_target']:.0f}% false positives on clean and benignly processed sets)</p>"
            f"<p>{esc(explain(doc))}</p>"
            "<h2>Held-out errors (two halves of the set, each fit on one and tested on the other)</h2>"
            f"<table><tr><th>view</th><th>error</th><th>why</th></tr>{rows}</table>"
            "<h2>Features (log error ratios) and their calibrated weights</h2>"
            f"<table><tr><th>feature</th><th>value</th><th>weight</th></tr>{feats}</table>"
            "<h2>What the linear classifier learned, per class</h2>"
            "<p>Natural classes give blurry class shapes; a planted shortcut shows as a pattern unrelated to the "
            "object (stripes, blocks, single pixels, noise).</p>"
            f"<img alt='classifier directions' src='data:image/png;base64,{img}'>"
            "<h2>Per class</h2>"
            f"<table><tr><th>class</th><th>measured</th><th>raw error</th><th>2-bit error</th><th>projected error</th></tr>{pc}</table>"
            f"<p class=small>{doc['n_measured']} of {doc['n_samples']} samples measured at level {esc(doc['level'])}, "
            f"seed {doc['seed']}; {esc(doc['paper'])}. Input {esc(doc['dataset']['content'])}.</p>")
    css = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}.small{color:#666;font-size:.85em}"
           "img{image-rendering:pixelated;max-width:100%}")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>detect: {esc(str(doc['data']))}</title>"
            f"<style>{css}</style></head><body>{body}</body></html>\n")
