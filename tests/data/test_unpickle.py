import os
import pickle

import numpy as np
import pytest

from unlearnable import DataError
from unlearnable.data import restricted_load


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_plain_data_and_numpy_arrays_load():
    obj = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), b"labels": [1, 2, 3], "x": 1.5}
    for proto in (2, 4, 5):
        back = restricted_load(pickle.dumps(obj, protocol=proto))
        assert np.array_equal(back[b"data"], obj[b"data"]) and back[b"labels"] == [1, 2, 3]


def test_code_in_a_pickle_is_refused_and_never_runs(tmp_path):
    evil = _Evil()
    evil.marker = tmp_path / "pwned"
    data = pickle.dumps(evil)
    with pytest.raises(DataError, match="refused to load global"):
        restricted_load(data, "evil.pkl")
    assert not evil.marker.exists()


def test_codecs_encode_only_as_latin1():
    ok = pickle.dumps(b"\x00\xffabc", protocol=2)  # written as _codecs.encode(..., "latin1")
    assert restricted_load(ok) == b"\x00\xffabc"
    bad = ok.replace(b"latin1", b"zlib__")
    with pytest.raises(DataError):
        restricted_load(bad)


def test_truncated_pickle_names_the_source():
    data = pickle.dumps({"a": np.zeros(100)})
    with pytest.raises(DataError, match="batch.pkl"):
        restricted_load(data[:30], "batch.pkl")
