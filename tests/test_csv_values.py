"""CSV values outside 0..255 (or not integers) are refused, never wrapped or rounded.

pandas 2.2 and 3.x turn 256 into 0 when asked to read ``uint8``, and infer other dtypes
for other inputs, so both CSV readers read wide, check, then narrow. CI runs this file on
the newest pandas (the main run) and on the declared floor (``.ci/lowest``).
"""
import numpy as np
import pytest

from mlp_backend.data.inputs import read_csv_rows as load_csv_rows
from mlp_backend.data import DataError
from mlp_backend.data.formats import read_csv

BAD_PIXELS = [
    pytest.param("256", "out of range", id="256"),
    pytest.param("-1", "out of range", id="minus1"),
    pytest.param("-256", "out of range", id="minus256-wraps-to-0"),
    pytest.param("65536", "out of range", id="65536-wraps-to-0"),
    pytest.param("4294967296", "out of range", id="2pow32-wraps-to-0"),
    pytest.param("99999999999999999999", "out of range", id="beyond-int64"),
    pytest.param("0.5", "not an integer", id="half"),
    pytest.param("255.5", "not an integer", id="255.5"),
    pytest.param("1e3", "out of range", id="1e3"),
]


def _rows(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return np.c_[rng.integers(0, 10, n), rng.integers(0, 256, (n, 784))]


def _write(path, a, cell=None, value=None, header=False):
    lines = [",".join(str(int(v)) for v in row) for row in a]
    if cell is not None:
        r, c = cell
        fields = lines[r].split(",")
        fields[c] = value
        lines[r] = ",".join(fields)
    if header:
        lines.insert(0, "label," + ",".join(f"pixel{i}" for i in range(784)))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("value, kind", BAD_PIXELS)
@pytest.mark.parametrize("header", [False, True], ids=["no-header", "header"])
def test_data_reader_refuses_bad_pixels(tmp_path, value, kind, header):
    p = _write(tmp_path / "d.csv", _rows(), cell=(2, 100), value=value, header=header)
    with pytest.raises(DataError, match=rf"pixel column 100 value .* in data row 2 .*is {kind}"):
        read_csv(p)


@pytest.mark.parametrize("value", ["10", "-1", "266", "259", "0.5"], ids=["10", "minus1", "266-wraps-to-10",
                                                                         "259-wraps-to-3", "half"])
def test_data_reader_refuses_bad_labels(tmp_path, value):
    p = _write(tmp_path / "d.csv", _rows(), cell=(1, 0), value=value)
    with pytest.raises(DataError, match=r"label value .* in data row 1"):
        read_csv(p)


def test_data_reader_whole_column_out_of_range(tmp_path):
    """A column that is 256 everywhere: pandas infers one dtype for it, and it must still fail."""
    a = _rows(6)
    a[:, 5] = 256
    with pytest.raises(DataError, match=r"pixel column 5 value 256 in data row 0 .*out of range"):
        read_csv(_write(tmp_path / "d.csv", a))


def test_data_reader_exact_in_range(tmp_path):
    a = _rows(25_001 // 1000)  # small, with 0 and 255 forced in
    a[0, 1:3] = (0, 255)
    x, y = read_csv(_write(tmp_path / "d.csv", a))
    assert x.dtype == np.uint8 and y.dtype == np.uint8
    np.testing.assert_array_equal(x, a[:, 1:])
    np.testing.assert_array_equal(y, a[:, 0])


def test_data_reader_across_chunks(tmp_path, monkeypatch):
    """The range check runs on every chunk, not only the first."""
    from mlp_backend.data import formats
    monkeypatch.setattr(formats, "CSV_CHUNK_ROWS", 3)
    a = _rows(8)
    x, _ = read_csv(_write(tmp_path / "ok.csv", a))
    np.testing.assert_array_equal(x, a[:, 1:])
    with pytest.raises(DataError, match=r"pixel column 9 value 256 in data row 7 .*out of range"):
        read_csv(_write(tmp_path / "bad.csv", a, cell=(7, 9), value="256"))


@pytest.mark.parametrize("value, kind", BAD_PIXELS)
def test_predict_reader_refuses_bad_pixels(tmp_path, value, kind):
    p = _write(tmp_path / "rows.csv", _rows(), cell=(2, 100), value=value)
    with pytest.raises(ValueError, match=rf"pixel value .* in row 2 is ({kind}|negative)"):
        load_csv_rows(p)


@pytest.mark.parametrize("value", ["-1", "2.5", "nan"], ids=["minus1", "2.5", "nan"])
def test_predict_reader_refuses_bad_labels(tmp_path, value):
    p = _write(tmp_path / "rows.csv", _rows(), cell=(1, 0), value=value)
    with pytest.raises(ValueError, match=r"row 1"):
        load_csv_rows(p)


def test_predict_reader_values(tmp_path):
    a = _rows(3)
    x, y = load_csv_rows(_write(tmp_path / "a.csv", a, header=True))
    assert x.dtype == np.uint8 and np.array_equal(x, a[:, 1:]) and np.array_equal(y, a[:, 0])
    x, y = load_csv_rows(_write(tmp_path / "b.csv", a[:, 1:]))  # no labels
    assert y is None and np.array_equal(x, a[:, 1:])
    unit = np.round(a[:, 1:] / 255, 3)
    (tmp_path / "c.csv").write_text("\n".join(",".join(map(str, r)) for r in unit) + "\n")
    x, y = load_csv_rows(tmp_path / "c.csv")  # floats in [0, 1] are used as given
    assert x.dtype == np.float64 and np.allclose(x, unit)
    (tmp_path / "d.csv").write_text("\n".join(",".join(map(str, r)) for r in -unit) + "\n")
    with pytest.raises(ValueError, match="negative"):
        load_csv_rows(tmp_path / "d.csv")
    (tmp_path / "e.csv").write_text("1,2,3\n1,2,x\n")
    with pytest.raises(ValueError, match="non-numeric"):
        load_csv_rows(tmp_path / "e.csv")
