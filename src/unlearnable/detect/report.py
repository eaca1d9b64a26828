"""What `unlearnable detect --out DIR` writes: detect.json (the decision and its evidence, with a
manifest), per_sample.npy (each sample's score; NaN where a sample was not measured),
directions.png (the raw classifier's rows as images: a shortcut shows as a pattern, natural
classes as blurry class shapes; the paper's Fig. 3) and a self-contained detect.html."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..core.files import atomic_file, write_json
from ..core.provenance import now_iso, versions
from ..data.identity import content_id
from ..data.imageset import ImageSet
from .core import explain


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
    per_sample.npy, detect.html, then detect.json; each file atomically. Returns `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = result_json(res, ds, data, seed)
    img = directions_image(res["directions"], ds.classes)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    with atomic_file(out / "directions.png", "wb") as f:
        f.write(buf.getvalue())
    with atomic_file(out / "per_sample.npy", "wb") as f:
        np.save(f, res["per_sample"].astype(np.float32), allow_pickle=False)
    with atomic_file(out / "detect.html", "w") as f:
        f.write(render_html(doc, buf.getvalue()))
    write_json(out / "detect.json", doc)  # last: its presence says the rest is there
    return out


def render_html(doc: dict[str, Any], png: bytes) -> str:
    """detect.html: the decision, the held-out errors, the features and their weights, per-class
    errors and the directions image (`png`, embedded), from detect.json's `doc`; self-contained."""
    e = doc["errors"]
    esc = html.escape
    verdict = "protected" if doc["protected"] else "not detected as protected"
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
    body = (f"<h1>Is <code>{esc(str(doc['data']))}</code> protected?</h1>"
            f"<p class=verdict><b>{esc(verdict)}</b>: score {doc['score']:.3f}, threshold {doc['threshold']:.3f} "
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
