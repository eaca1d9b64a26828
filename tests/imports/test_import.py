"""Importing released poisons: every format byte-exact, auto-detection, refusals, round trips."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from unlearnable import DataError, ImageSet, load_dataset_dir, save_dataset
from unlearnable.core.hashing import sha256_file
from unlearnable.cli import main
from unlearnable.data.resolve import load_base
from unlearnable.imports import EXPORTERS, IMPORTERS, detect_format, import_dataset

N, K, H, W = 24, 4, 8, 8


@pytest.fixture
def rgb_base(tmp_path) -> tuple[str, ImageSet]:
    """A saved clean base: 24 random 3x8x8 images, 4 interleaved classes (not sorted by class)."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(N, H, W, 3), dtype=np.uint8)
    x[0, 0, 0] = (0, 255, 128)  # pixels at the range ends, so clipping is exercised
    labels = rng.permutation(np.arange(N) % K)
    ds = ImageSet(x, labels, ["cat", "dog", "T-shirt/top", "ship"], "tiny-base")
    save_dataset(tmp_path / "base", ds, {"method": "clean"})
    return str(tmp_path / "base"), ds


# ---------------------------------------------------------------------------------------------
# One writer per format: writes files as the original project releases them and returns
# (path, expected protected images, expected indices, expected labels), the expectation computed
# per sample the way the original loader does.

def _ue(tmp, base):
    rng = np.random.default_rng(2)
    delta = torch.from_numpy(rng.uniform(-8 / 255, 8 / 255, (N, 3, H, W)).astype(np.float32))
    delta[1, 0, 0, 0] = 0.7 / 255  # truncation, not rounding: x + 0.7 stays x
    torch.save(delta, tmp / "perturbation.pt")
    exp = np.empty_like(base.images)
    for i in range(N):
        y = base.images[i].astype(np.float32)
        y += delta[i].mul(255).clamp(-255, 255).permute(1, 2, 0).numpy()
        exp[i] = np.clip(y, 0, 255).astype(np.uint8)
    assert exp[1, 0, 0, 0] == base.images[1, 0, 0, 0] or base.images[1, 0, 0, 0] == 255
    return tmp / "perturbation.pt", exp, np.arange(N), base.labels


def _rem(tmp, base):
    delta = np.random.default_rng(3).integers(-8, 9, size=(N, 3, H, W)).astype(np.int8)
    (tmp / "rem.pkl").write_bytes(pickle.dumps(delta))
    exp = np.stack([np.clip(base.images[i].astype(int) + delta[i].transpose(1, 2, 0), 0, 255)
                    for i in range(N)]).astype(np.uint8)
    return tmp / "rem.pkl", exp, np.arange(N), base.labels


def _ntga(tmp, base):
    rng = np.random.default_rng(4)
    x = np.clip(base.images / 255 + rng.uniform(-8 / 255, 8 / 255, base.images.shape), 0, 1).astype(np.float32)
    np.save(tmp / "x_train_cifar10_ntga_cnn_best.npy", x)
    np.save(tmp / "y_train_cifar10_ntga_cnn_best.npy", np.eye(K, dtype=np.float32)[base.labels])
    exp = np.stack([(x[i] * 255).astype(np.uint8) for i in range(N)])
    return tmp, exp, np.arange(N), base.labels


def _ops(tmp, base):
    # As OPS makes it: per class one pixel and corner colour; δ = colour - x/255 at that pixel.
    delta = np.zeros((N, H, W, 3))
    for i in range(N):
        k = base.labels[i]
        delta[i, k, 2 * k] = np.array([k % 2, (k // 2) % 2, 1.0]) - base.images[i, k, 2 * k] / 255
    np.save(tmp / "perturbation.npy", delta)
    exp = np.stack([np.uint8(np.clip(base.images[i] / 255 + delta[i], 0, 1) * 255) for i in range(N)])
    return tmp, exp, np.arange(N), base.labels


def _lsp(tmp, base):
    rng = np.random.default_rng(5)
    m = N + 8
    data = rng.normal(0, 4 / 255, (m, H, W, 3)).astype(np.float32)
    lab = rng.permutation(np.arange(m) % K)
    np.save(tmp / "simple_data.npy", data)
    np.save(tmp / "simple_label.npy", lab)
    exp = base.images.astype(np.float64) / 255.0
    for k in range(K):  # the LSP code, class by class
        exp[base.labels == k] += data[lab == k][: int((base.labels == k).sum())]
    exp = np.clip(exp * 255, 0, 255).astype(np.uint8)
    return tmp, exp, np.arange(N), base.labels


def _png(tmp, base):
    exp = base.images ^ np.uint8(3)
    (tmp / "data").mkdir()
    for i in range(N):
        Image.fromarray(exp[i]).save(tmp / "data" / f"{i}.png")
    return tmp, exp, np.arange(N), base.labels


def _npz(tmp, base):
    idx = np.array([5, 0, 17, 3, 9])
    x = (base.images[idx] ^ np.uint8(1)).transpose(0, 3, 1, 2).astype(np.float32) / 255  # NCHW, [0, 1]
    np.savez(tmp / "poison.npz", images=x, labels=base.labels[idx], indices=idx)
    exp = np.rint(x.transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    return tmp / "poison.npz", exp, idx, base.labels[idx]


WRITERS = {"ue-pt": _ue, "rem-pkl": _rem, "ntga-npy": _ntga, "ops-npy": _ops, "lsp-npy": _lsp,
           "png-folder": _png, "npz": _npz}


def test_every_registered_format_has_a_writer_here():
    assert set(WRITERS) == set(IMPORTERS)


@pytest.mark.parametrize("fmt", sorted(IMPORTERS))
def test_import_is_byte_exact_and_auto_detected(fmt, rgb_base, tmp_path, capsys):
    base_dir, base = rgb_base
    src = tmp_path / "release"
    src.mkdir()
    path, exp, idx, labels = WRITERS[fmt](src, base)
    assert detect_format(path) == fmt
    for how in (fmt, "auto"):
        out = tmp_path / f"out-{how}"
        assert main(["import", how, str(path), "--base", base_dir, "--out", str(out), "--no-progress"]) == 0
        got = load_dataset_dir(out)
        assert np.array_equal(got.images, exp), f"{how}: {(got.images != exp).sum()} values differ"
        assert np.array_equal(got.indices, idx) and np.array_equal(got.labels, labels)
        man = got.meta["manifest"]
        v = man["verification"]
        assert man["method"] == f"import:{fmt}" and v["base"] == str(tmp_path / "base")
        assert v["images_changed"] == int((exp != base.images[idx]).reshape(len(idx), -1).any(1).sum())
        assert v["perturbation"]["linf_max"] == pytest.approx(
            np.abs(exp.astype(int) - base.images[idx]).max() / 255)
        assert v["perturbation"] == {k: man["perturbation_measured"][k] for k in v["perturbation"]}
        for name, digest in v["source_sha256"].items():
            f = (path if path.is_dir() else path.parent) / name
            assert sha256_file(f) == digest
        # The manifest names the base so the clean images can be found again, aligned.
        assert np.array_equal(load_base(got).images, base.images[idx])
    assert f"import:{fmt}" in capsys.readouterr().out


def test_ue_class_wise_and_released_loader_clamp(rgb_base, tmp_path):
    base_dir, base = rgb_base
    delta = torch.full((K, 3, H, W), -4 / 255)
    delta[:, 1] = 3 / 255
    torch.save(delta, tmp_path / "classwise.pt")
    out = import_dataset("ue-pt", tmp_path / "classwise.pt", base_dir, tmp_path / "cw")
    man = load_dataset_dir(out).meta["manifest"]
    assert man["verification"]["class_wise"] is True
    assert man["verification"]["perturbation_kind"] == "class-wise"
    # The UE repository's own loader clamps δ to [0, 1]: the negative channels vanish.
    out = import_dataset("ue-pt", tmp_path / "classwise.pt", base_dir, tmp_path / "nn",
                         params={"noise_range": "nonnegative"})
    got = load_dataset_dir(out).images.astype(int)
    assert np.array_equal(got[..., 0], base.images[..., 0])
    assert np.array_equal(got[..., 1], np.minimum(base.images[..., 1].astype(int) + 3, 255))


def test_ops_universal_pattern(rgb_base, tmp_path):
    base_dir, base = rgb_base
    delta = np.zeros((H, W, 3), np.float32)
    delta[3, 4] = 1.0  # pushes the pixel to white everywhere
    np.save(tmp_path / "perturbation.npy", delta)
    got = load_dataset_dir(import_dataset("auto", tmp_path / "perturbation.npy", base_dir, tmp_path / "o"))
    assert (got.images[:, 3, 4] == 255).all()
    assert got.meta["manifest"]["verification"]["perturbation_kind"] == "universal"


def test_grey_base_png_policy(digits_train, tmp_path):
    base = digits_train.subset(np.arange(6))
    save_dataset(tmp_path / "base", base, {"method": "clean"})
    d = tmp_path / "rel" / "data"
    d.mkdir(parents=True)
    for i in range(6):  # RGB files whose channels are equal are grey images
        Image.fromarray(np.repeat(base.images[i], 3, axis=2)).save(d / f"{i}.png")
    got = load_dataset_dir(import_dataset("png-folder", d.parent, tmp_path / "base", tmp_path / "ok"))
    assert np.array_equal(got.images, base.images)
    rgb = np.repeat(base.images[2], 3, axis=2)
    rgb[0, 0, 1] ^= 1
    Image.fromarray(rgb).save(d / "2.png")
    with pytest.raises(DataError, match=r"2\.png: colour image for a grey"):
        import_dataset("png-folder", d.parent, tmp_path / "base", tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------------------------
# Refusals: one line naming the file and the problem, exit code 2, nothing written.

class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_inputs(tmp, base):
    rng = np.random.default_rng(6)
    cases = {}
    f = tmp / "short.pkl"
    f.write_bytes(pickle.dumps(np.zeros((N - 1, 3, H, W), np.int8)))
    cases["wrong count"] = ("rem-pkl", f, "short.pkl", "23 perturbations but the base set has 24")
    f = tmp / "shape.pt"
    torch.save(torch.zeros(N, 3, H, W + 1), f)
    cases["wrong shape"] = ("ue-pt", f, "shape.pt", "expected (N or K, C, H, W)")
    f = tmp / "nan" / "perturbation.npy"
    f.parent.mkdir()
    a = np.zeros((N, H, W, 3))
    a[7, 1, 2, 0] = np.nan
    np.save(f, a)
    cases["NaN"] = ("ops-npy", f, "perturbation.npy", "NaN")
    f = tmp / "evil.pkl"
    f.write_bytes(pickle.dumps(_RunsCode(tmp / "PWNED")))
    cases["pickle that runs code"] = ("rem-pkl", f, "evil.pkl", "refused to load global")
    f = tmp / "evil.pt"
    torch.save({"x": _RunsCode(tmp / "PWNED")}, f)
    cases["torch file with code"] = ("ue-pt", f, "evil.pt", "refused")
    d = tmp / "size" / "data"
    d.mkdir(parents=True)
    for i in range(N):
        Image.fromarray(base.images[i] if i != 5 else np.zeros((H, W + 2, 3), np.uint8)).save(d / f"{i}.png")
    cases["PNG of the wrong size"] = ("png-folder", d.parent, "5.png", "10x8 pixels")
    d = tmp / "gap" / "data"
    d.mkdir(parents=True)
    for i in range(N):
        if i != 11:
            Image.fromarray(base.images[i]).save(d / f"{i}.png")
    cases["missing index"] = ("png-folder", d.parent, "11.png", "missing: 1 of 24")
    f = tmp / "labels.npz"
    np.savez(f, images=base.images, labels=(base.labels + 1) % K)
    cases["labels disagree"] = ("npz", f, "labels.npz", "24 of 24 labels disagree")
    f = tmp / "range" / "x_train_a.npy"
    f.parent.mkdir()
    np.save(f, (base.images / 255 * 1.5).astype(np.float32))
    np.save(tmp / "range" / "y_train_a.npy", np.eye(K)[base.labels])
    cases["out of range"] = ("ntga-npy", f.parent, "x_train_a.npy", "values outside [0, 1]")
    f = tmp / "lsp" / "simple_data.npy"
    f.parent.mkdir()
    np.save(f, rng.normal(size=(N, H, W, 3)).astype(np.float32))
    np.save(f.parent / "simple_label.npy", np.zeros(N, np.int64))
    cases["too few LSP perturbations"] = ("lsp-npy", f.parent, "simple_label.npy", "class 1 has")
    return cases


def test_bad_inputs_are_refused_in_one_line_and_nothing_is_written(rgb_base, tmp_path, capsys):
    base_dir, base = rgb_base
    for what, (fmt, path, fname, problem) in _bad_inputs(tmp_path, base).items():
        out = tmp_path / "out"
        rc = main(["import", fmt, str(path), "--base", base_dir, "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc == 2, what
        assert len(err.splitlines()) == 1 and fname in err and problem in err, f"{what}: {err}"
        assert not out.exists(), what
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")], what
    assert not (tmp_path / "PWNED").exists()


def test_trust_labels_keeps_and_records_disagreement(rgb_base, tmp_path):
    base_dir, base = rgb_base
    lab = base.labels.copy()
    lab[:3] = (lab[:3] + 1) % K
    np.savez(tmp_path / "p.npz", images=base.images, labels=lab)
    out = tmp_path / "o"
    assert main(["import", "npz", str(tmp_path / "p.npz"), "--base", base_dir, "--out", str(out),
                 "--trust-labels"]) == 0
    got = load_dataset_dir(out)
    assert np.array_equal(got.labels, lab)
    assert got.meta["manifest"]["verification"]["labels"] == {"from": "file", "file": "p.npz", "disagreements": 3}


def test_auto_refuses_ambiguity_and_unknown(rgb_base, tmp_path):
    torch.save(torch.zeros(N, 3, H, W), tmp_path / "perturbation.pt")
    (tmp_path / "rem.pkl").write_bytes(pickle.dumps(np.zeros((N, 3, H, W), np.int8)))
    with pytest.raises(DataError, match="ambiguous format: looks like ue-pt, rem-pkl"):
        detect_format(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell the format"):
        detect_format(tmp_path / "empty")


def test_npz_layout_and_scale_options(tmp_path):
    # 3x3x3 images fit NHWC and NCHW alike: the layout must be given.
    ds = ImageSet(np.random.default_rng(7).integers(0, 256, (5, 3, 3, 3), dtype=np.uint8),
                  np.arange(5) % 2, ["a", "b"], "cube")
    save_dataset(tmp_path / "base", ds, {"method": "clean"})
    x = ds.images.transpose(0, 3, 1, 2).astype(np.float64)  # NCHW in 0..255, as floats
    np.savez(tmp_path / "c.npz", images=x)
    with pytest.raises(DataError, match="fit both NHWC and NCHW; pass --layout"):
        import_dataset("npz", tmp_path / "c.npz", tmp_path / "base", tmp_path / "o1")
    with pytest.raises(DataError, match="pass --scale 255"):
        import_dataset("npz", tmp_path / "c.npz", tmp_path / "base", tmp_path / "o2", params={"layout": "NCHW"})
    out = tmp_path / "o3"
    assert main(["import", "npz", str(tmp_path / "c.npz"), "--base", str(tmp_path / "base"),
                 "--out", str(out), "--layout", "NCHW", "--scale", "255"]) == 0
    assert np.array_equal(load_dataset_dir(out).images, ds.images)


@pytest.mark.parametrize("fmt", sorted(EXPORTERS))
def test_export_then_import_round_trips(fmt, rgb_base, tmp_path):
    base_dir, base = rgb_base
    idx = np.array([2, 3, 7, 11, 19])  # a subset: indices must survive the trip
    prot = base.subset(idx)
    prot = prot.replace(prot.images ^ np.uint8(5))
    save_dataset(tmp_path / "prot", prot, {"method": "test", "base": {"name": base_dir}}, base=base.subset(idx))
    assert main(["export", str(tmp_path / "prot"), "--format", fmt, "--out", str(tmp_path / "exp"),
                 "--no-progress"]) == 0
    assert (tmp_path / "exp" / "export.json").is_file()
    fmt_in = "npz" if fmt == "npz" else "png-folder"
    subset = [] if fmt == "npz" else ["--param", "subset=true"]  # npz carries its indices
    assert main(["import", "auto", str(tmp_path / "exp"), "--base", base_dir, "--out", str(tmp_path / "back"),
                 "--no-progress", *subset]) == 0
    back = load_dataset_dir(tmp_path / "back")
    assert back.meta["manifest"]["method"] == f"import:{fmt_in}"
    assert np.array_equal(back.images, prot.images)
    assert np.array_equal(back.labels, prot.labels) and np.array_equal(back.indices, idx)
    assert back.meta["manifest"]["verification"]["labels"]["from"] == "file"
