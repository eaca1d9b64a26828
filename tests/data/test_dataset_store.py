import json

import numpy as np
import pytest

from unlearnable import DataError, ImageSet, load_data, load_dataset_dir, save_dataset
from unlearnable.data import export_png_folder, load_npy
from unlearnable.data.resolve import load_base


def _protected(base: ImageSet, eps: int = 8) -> ImageSet:
    x = base.images.astype(np.int16)
    x[:, 0, 0, :] += eps
    return base.replace(np.clip(x, 0, 255).astype(np.uint8))


def test_round_trip_keeps_every_array_and_records_checksums(tmp_path, digits_train):
    base = digits_train.subset(np.arange(100, 200))
    prot = _protected(base)
    out = save_dataset(tmp_path / "p", prot, {"method": "test", "params": {"eps": 8}, "seed": 3,
                                               "base": {"name": "digits"}}, base=base)
    back = load_dataset_dir(out)
    assert np.array_equal(back.images, prot.images)
    assert np.array_equal(back.labels, prot.labels)
    assert np.array_equal(back.indices, np.arange(100, 200))
    man = back.meta["manifest"]
    assert man["seed"] == 3 and man["method"] == "test"
    assert man["perturbation_measured"]["linf_max"] == pytest.approx(8 / 255)
    assert man["perturbation_measured"]["images_changed"] == 100
    assert len(man["arrays"]["images.npy"]["sha256"]) == 64
    assert man["versions"]["torch"]
    # The base can be recovered from the manifest, aligned sample for sample.
    clean = load_base(back)
    assert np.array_equal(clean.images, base.images)


def test_corrupted_array_is_detected(tmp_path, digits_train):
    out = save_dataset(tmp_path / "p", digits_train.subset(np.arange(50)), {"method": "none"})
    arr = np.load(out / "images.npy")
    arr[0, 0, 0, 0] ^= 1
    np.save(out / "images.npy", arr)
    with pytest.raises(DataError, match=r"images\.npy: SHA-256 mismatch"):
        load_dataset_dir(out)


def test_truncated_and_pickled_npy_are_refused(tmp_path, digits_train):
    out = save_dataset(tmp_path / "p", digits_train.subset(np.arange(50)), {"method": "none"})
    raw = (out / "labels.npy").read_bytes()
    (out / "labels.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"labels\.npy"):
        load_dataset_dir(out)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="refused"):
        load_npy(tmp_path / "obj.npy")


def test_labels_out_of_range_and_bad_manifest(tmp_path, digits_train):
    out = save_dataset(tmp_path / "p", digits_train.subset(np.arange(20)), {"method": "none"})
    man = json.loads((out / "manifest.json").read_text())
    man["classes"] = man["classes"][:3]
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(DataError, match="labels out of range"):
        load_dataset_dir(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="manifest.json: not valid JSON"):
        load_dataset_dir(out)


def test_existing_output_is_not_overwritten_and_failed_write_leaves_nothing(tmp_path, digits_train):
    small = digits_train.subset(np.arange(10))
    save_dataset(tmp_path / "p", small, {"method": "none"})
    with pytest.raises(Exception, match="already exists"):
        save_dataset(tmp_path / "p", small, {"method": "none"})
    with pytest.raises(TypeError):
        save_dataset(tmp_path / "q", small, {"method": object()})  # not JSON serializable
    assert not (tmp_path / "q").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["p"]


def test_imageset_rejects_bad_arrays():
    with pytest.raises(DataError, match="uint8"):
        ImageSet(np.zeros((2, 4, 4, 1), np.float32), np.zeros(2, np.int64), ["a"])
    with pytest.raises(DataError, match="2 images but 3 labels"):
        ImageSet(np.zeros((2, 4, 4, 1), np.uint8), np.zeros(3, np.int64), ["a"])
    with pytest.raises(DataError, match="out of range"):
        ImageSet(np.zeros((2, 4, 4, 1), np.uint8), np.array([0, 5]), ["a", "b"])


def test_export_png_folder(tmp_path, digits_train):
    from PIL import Image

    small = digits_train.subset(np.arange(5, 12))
    out = export_png_folder(small, tmp_path / "png")
    img = np.asarray(Image.open(out / "data" / f"{small.indices[2]}.png"))
    assert np.array_equal(img, small.images[2, ..., 0])
    assert (out / "labels.csv").read_text().count("\n") == 8


def test_protected_dir_resolves_clean_test_split(tmp_path, digits_train):
    out = save_dataset(tmp_path / "p", digits_train.subset(np.arange(30)),
                       {"method": "none", "base": {"name": "digits"}})
    test = load_data(out, "test")
    assert test.name == "digits" and len(test) == 360


def test_written_files_get_ordinary_permissions(tmp_path, digits_train):
    import os
    import stat

    from unlearnable.core.files import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "x.json", {"a": 1})
        out = save_dataset(tmp_path / "d", digits_train.subset(np.arange(5)), {"method": "none"})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def test_base_of_another_order_is_refused(tmp_path, digits_train):
    from unlearnable import DataError as DE

    base = digits_train.subset(np.arange(40))
    out = save_dataset(tmp_path / "p", _protected(base), {"method": "t", "base": {"name": "digits"}}, base=base)
    prot = load_dataset_dir(out)
    assert np.array_equal(load_base(prot).images, base.images)
    shuffled = digits_train.subset(np.arange(len(digits_train))[::-1])
    with pytest.raises(DE, match="do not match the SHA-256"):
        load_base(prot, full=shuffled)
