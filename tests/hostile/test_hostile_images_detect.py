"""Hostile input, round 3: images read by one rule (8-bit, opaque, a colour image never made
grey), `detect` that says "cannot judge" where the data holds no evidence, and `detect --out`
that writes all of its files or none."""

from __future__ import annotations

import errno
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unlearnable import DataError, ImageSet, save_dataset
from unlearnable.auditor.report import detect_line
from unlearnable.auditor.steps import AUDITS
from unlearnable.cli import main
from unlearnable.core.process import host_tag
from unlearnable.data.resolve import load_data
from unlearnable.detect import detect, explain
from unlearnable.detect import report as detect_report
from unlearnable.imports import read_png

from helpers import refused, write_png

GREY = (7, 200)  # the grey levels of the training images `_grey_folder` writes


def _png_bytes(w: int, h: int, depth: int, colour_type: int, rows: list[bytes]) -> bytes:
    """A PNG written by hand (PIL writes no 16-bit colour PNGs): IHDR, one IDAT, IEND."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _grey_folder(root: Path) -> Path:
    """ROOT/train/{a,b}/*.png and ROOT/test/a/0.png: 8-bit grey 4x4 images."""
    for split, cls, i, v in (("train", "a", 0, GREY[0]), ("train", "b", 0, GREY[1]), ("test", "a", 0, 9)):
        write_png(root / split / cls / f"{i}.png", np.full((4, 4), v, np.uint8))
    return root


# ---------------------------------------------------------------------------------------------
# Images: one decoding rule for image folders and PNG releases

def test_a_16_bit_png_among_8_bit_ones_is_refused_not_clipped(tmp_path, capsys):
    root = _grey_folder(tmp_path / "f")
    # 1000 and 60000 would become 255 and 255 if clipped, 3 and 234 if cut to the high byte.
    deep = np.array([[1000, 60000, 0, 0]] * 4, np.uint16)
    Image.fromarray(deep).save(root / "train" / "b" / "1.png")
    assert Image.open(root / "train" / "b" / "1.png").mode.startswith("I;16")
    line = refused(capsys, ["detect", f"imagefolder:{root}", "--level", "tiny"], "1.png", "16-bit image",
                   unchanged=tmp_path)
    assert "only 8-bit images are read" in line
    # A 16-bit colour PNG, which PIL itself reads as 8-bit RGB (each sample's high byte).
    (root / "train" / "b" / "1.png").write_bytes(_png_bytes(4, 1, 16, 2, [bytes(range(24))]))
    with pytest.raises(DataError, match=r"1\.png: 16-bit image"):
        load_data(f"imagefolder:{root}", "train")
    # The same files through the PNG-folder importer: the same rule, the same words.
    base = save_dataset(tmp_path / "base", ImageSet(np.zeros((2, 4, 4, 1), np.uint8), np.arange(2), ["a", "b"], "g"),
                        {"method": "clean"})
    rel = tmp_path / "rel" / "data"
    write_png(rel / "0.png", np.zeros((4, 4), np.uint8))
    Image.fromarray(deep).save(rel / "1.png")
    with pytest.raises(DataError, match=r"1\.png: 16-bit image: only 8-bit images are read"):
        read_png(rel / "1.png", 1, (4, 4))
    refused(capsys, ["import", "png-folder", str(rel.parent), "--base", str(base), "--out", str(tmp_path / "o")],
            "1.png", "16-bit image", unchanged=tmp_path)


def test_a_colour_image_among_grey_ones_makes_a_colour_set_never_a_grey_one(tmp_path):
    root = _grey_folder(tmp_path / "f")  # class a (read first) is grey
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    write_png(root / "train" / "b" / "1.png", red)
    write_png(root / "train" / "b" / "2.bmp", np.full((4, 4), 90, np.uint8), "BMP")
    ds = load_data(f"imagefolder:{root}", "train")
    assert ds.chw == (3, 4, 4) and ds.labels.tolist() == [0, 1, 1, 1]
    assert ds.images[2, 0, 0].tolist() == [255, 0, 0]  # was 76: red read as its grey level
    for i, v in ((0, GREY[0]), (1, GREY[1]), (3, 90)):  # grey images repeated on three channels
        assert (ds.images[i] == v).all()
    # A CMYK JPEG (print workflows make them) is converted to RGB; a 1-bit BMP is grey 0/255.
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(root / "train" / "b" / "3.jpg")
    Image.new("1", (4, 4), 1).save(root / "train" / "b" / "4.bmp")
    ds = load_data(f"imagefolder:{root}", "train")
    assert ds.images[4, 0, 0].tolist() == [255, 0, 0] and (ds.images[5] == 255).all()
    (root / "train" / "b" / "3.jpg").unlink()
    (root / "train" / "b" / "4.bmp").unlink()
    # The test split alone holds only grey: it is judged by its own images.
    assert load_data(f"imagefolder:{root}", "test").chw == (1, 4, 4)
    # An RGB file whose channels are equal is grey: the set stays 1 channel, losslessly.
    (root / "train" / "b" / "1.png").unlink()
    write_png(root / "train" / "b" / "1.png", np.full((4, 4, 3), 33, np.uint8))
    ds = load_data(f"imagefolder:{root}", "train")
    assert ds.chw == (1, 4, 4) and ds.images[:, 0, 0, 0].tolist() == [GREY[0], GREY[1], 33, 90]


def test_alpha_must_be_opaque_and_palettes_are_read_as_their_colours(tmp_path, capsys):
    root = _grey_folder(tmp_path / "f")
    Image.new("RGBA", (4, 4), (10, 20, 30, 0)).save(root / "train" / "b" / "1.png")
    refused(capsys, ["detect", f"imagefolder:{root}", "--level", "tiny"], "1.png", "has transparent pixels (16 of 16)",
            unchanged=tmp_path)
    # Fully opaque: read as its RGB.
    Image.new("RGBA", (4, 4), (10, 20, 30, 255)).save(root / "train" / "b" / "1.png")
    ds = load_data(f"imagefolder:{root}", "train")
    assert ds.chw == (3, 4, 4) and ds.images[2, 0, 0].tolist() == [10, 20, 30]
    # A palette image: its colours, not its indices.
    pal = Image.new("P", (4, 4))
    pal.putpalette([0, 0, 255, 0, 255, 0])
    pal.putpixel((1, 0), 1)
    pal.save(root / "train" / "b" / "1.png")
    ds = load_data(f"imagefolder:{root}", "train")
    assert ds.images[2, 0, 0].tolist() == [0, 0, 255] and ds.images[2, 0, 1].tolist() == [0, 255, 0]
    # A palette entry or a grey key colour marked transparent is an alpha channel too.
    pal.save(root / "train" / "b" / "1.png", transparency=1)
    with pytest.raises(DataError, match=r"1\.png: has transparent pixels \(1 of 16\)"):
        load_data(f"imagefolder:{root}", "train")
    Image.fromarray(np.full((4, 4), 5, np.uint8)).save(root / "train" / "b" / "1.png", transparency=5)
    with pytest.raises(DataError, match=r"1\.png: has transparent pixels"):
        read_png(root / "train" / "b" / "1.png", 1)
    # A palette whose key colour no pixel uses is opaque.
    pal.save(root / "train" / "b" / "1.png", transparency=3)
    assert load_data(f"imagefolder:{root}", "train").images[2, 0, 1].tolist() == [0, 255, 0]


# ---------------------------------------------------------------------------------------------
# detect: no decision without evidence

@pytest.fixture(scope="module")
def thousand_classes() -> ImageSet:
    """All 1,797 digits relabelled into 1,000 classes (0 to 2 images each)."""
    tr, te = load_data("digits", "train"), load_data("digits", "test")
    images = np.concatenate([tr.images, te.images])
    return ImageSet(images, np.arange(len(images)) % 1000, [f"c{i}" for i in range(1000)], "digits-1000")


def test_a_set_of_1000_classes_cannot_be_judged(thousand_classes):
    r = detect(thousand_classes, "tiny")
    assert r["protected"] is None and r["decision"] == "cannot judge"
    assert "samples of a class in each half" in r["cannot_judge"] and "1000 classes" in r["cannot_judge"]
    assert r["support"]["per_class_half"] < 1 and 0 <= r["score"] <= 1  # the score is still evidence
    assert explain(r).startswith(f"cannot judge: {r['cannot_judge']}; score")
    # What the audit shows of the step.
    doc = json.loads(json.dumps({k: v for k, v in r.items() if k not in ("per_sample", "directions")}))
    assert detect_line({"detect": doc}).startswith(f"cannot judge: {r['cannot_judge']}")
    assert AUDITS["detect"].headline(doc) == f"detectable: cannot judge ({r['score']:.2f})"


def test_labels_no_better_than_chance_cannot_be_judged_and_clean_sets_still_are(digits_train):
    shuffled = ImageSet(digits_train.images, np.random.default_rng(0).permutation(digits_train.labels),
                        digits_train.classes, "shuffled")
    r = detect(shuffled, "tiny")
    assert r["protected"] is None and "no better than chance" in r["cannot_judge"], r["errors"]
    for ds in (digits_train, digits_train.subset(np.random.default_rng(7).permutation(len(digits_train))[:300])):
        r = detect(ds, "tiny")
        assert isinstance(r["protected"], bool) and r["cannot_judge"] is None, r["support"]
        assert r["decision"] == ("protected" if r["protected"] else "not detected as protected")


def test_the_cli_says_cannot_judge_with_exit_3_and_writes_the_evidence(tmp_path, capsys, thousand_classes):
    data = save_dataset(tmp_path / "d1000", thousand_classes, {"method": "clean"})
    out = tmp_path / "det"
    capsys.readouterr()
    assert main(["-q", "detect", str(data), "--level", "tiny", "--out", str(out)]) == 3
    cap = capsys.readouterr()
    assert cap.out.splitlines()[0].startswith(f"{data}: cannot judge: ") and not cap.err.strip(), cap
    doc = json.loads((out / "detect.json").read_text())
    assert doc["protected"] is None and doc["decision"] == "cannot judge" and doc["cannot_judge"]
    assert "<b>cannot judge</b>" in (out / "detect.html").read_text()


def test_detect_out_on_a_full_disk_leaves_the_directory_as_it_was(tmp_path, capsys, monkeypatch):
    out = tmp_path / "det"
    argv = ["-q", "detect", "digits", "--level", "tiny", "--out", str(out)]

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    # The second file (per_sample.npy) fails: no directions.png is left without its detect.json.
    with monkeypatch.context() as m:
        m.setattr(np, "save", full)
        refused(capsys, argv, str(out / "per_sample.npy"), "No space left on device", unchanged=tmp_path)
    assert not out.exists()
    # Over an earlier detect's files: a failure at the last rename puts every old file back.
    out.mkdir()
    for name in detect_report.FILES:
        (out / name).write_text(f"old {name}")
    real = os.replace

    def replace(src, dst):
        if Path(dst) == out / "detect.json" and Path(src).name == "detect.json":  # not the old one put back
            raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", replace)
        refused(capsys, argv, str(out / "detect.json"), "No space left", unchanged=tmp_path)
    # A killed write's staging directory is removed by the next write, which succeeds.
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / f".detect-files.{int(child.stdout)}@{host_tag()}.abcd1234.tmp"
    stale.mkdir()
    (stale / "directions.png").write_bytes(b"half")
    assert main(argv) == 0
    assert not stale.exists() and sorted(p.name for p in out.iterdir()) == sorted(detect_report.FILES)
    assert json.loads((out / "detect.json").read_text())["protected"] is False
