"""Read the files ``mlp-backend predict`` classifies (images, CSV rows) as the rows a model gets.

Images go through :func:`mlp_backend.data.images.image_row`, the path ``mlp-backend serve``
takes too; CSV files are read with the training CSV reader's header rule and ``pandas``
options (:mod:`mlp_backend.data.formats`), but take any number of pixel columns, an optional
label column, and pixels that are floats in [0, 1].
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mlp_backend.data.formats import csv_header, csv_opener, csv_read_options
from mlp_backend.data.images import IMAGE_SUFFIXES, SIDE, image_row

__all__ = ["read_inputs", "read_image", "read_csv_rows"]


def read_inputs(paths, n_features: int, *, invert: "bool | None" = None) -> tuple[list, np.ndarray, list]:
    """Image and CSV files as ``(names, x, labels)``: per input its name (``FILE``, or ``FILE[i]``
    for row ``i`` of a CSV), its row of ``x`` and its true label (None where unknown).

    ``x`` holds uint8 pixels 0..255 when every input's are, else floats in [0, 1]. ``invert``
    is :func:`read_image`'s. Files with an image suffix (:data:`IMAGE_SUFFIXES`) are images,
    the others CSV.
    """
    names, rows, truth = [], [], []
    for inp in paths:
        p = Path(inp)
        if not p.is_file():
            raise ValueError(f"{p}: no such file")
        if p.suffix.lower() in IMAGE_SUFFIXES:
            if n_features != SIDE * SIDE:
                raise ValueError(f"the model takes {n_features} features, not 28x28 images")
            names.append(str(p))
            rows.append(read_image(p, invert=invert)[None, :])
            truth.append(None)
        else:
            x, labels = read_csv_rows(p, n_features)
            names += [f"{p}[{i}]" for i in range(len(x))]
            rows.append(x)
            truth += list(labels) if labels is not None else [None] * len(x)
    if any(r.dtype != np.uint8 for r in rows):
        rows = [r.astype(np.float64) / (255.0 if r.dtype == np.uint8 else 1.0) for r in rows]
    return names, np.concatenate(rows), truth


def read_image(path, *, invert: "bool | None" = None) -> np.ndarray:
    """An image file as the (784,) uint8 row the model gets (:func:`~mlp_backend.data.images.image_row`).

    ``invert=None`` inverts when the border is mostly light (mean border pixel > 127), so a
    dark digit on white paper works; ``False`` never inverts (what ``serve`` does).
    """
    try:
        return image_row(path, invert=invert)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: cannot read as an image ({exc})") from None


def read_csv_rows(path, n_features: int = 784):
    """Rows of a CSV file: (x, labels or None). ``n_features + 1`` columns: label first.

    Pixels are integers 0..255 (returned as uint8) or floats in [0, 1] (returned as is).
    Values are read as float64 -- wide enough that nothing wraps, whatever dtype pandas
    would infer -- checked, and only then narrowed.
    """
    import pandas as pd
    fix = f"expected {n_features} pixel columns (or {n_features + 1} with the label first)"
    opener = csv_opener(path)
    try:
        fields, has_header = csv_header(opener)
        if fields is None:
            raise pd.errors.EmptyDataError
        with opener() as f:
            a = pd.read_csv(f, dtype=np.float64, **csv_read_options(has_header)).to_numpy(np.float64)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: no rows; {fix}") from None
    except ValueError:
        raise ValueError(f"{path}: non-numeric values; {fix}") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read as CSV ({exc})") from None
    if a.ndim != 2 or a.shape[1] not in (n_features, n_features + 1):
        raise ValueError(f"{path}: {a.shape[1] if a.ndim == 2 else 0} columns; {fix}")
    if not np.isfinite(a).all():
        r, c = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{path}: empty, NaN or infinite value in row {r}, column {c}; every value must be a number")
    labels = None
    if a.shape[1] == n_features + 1:
        lab = a[:, 0]
        bad = np.flatnonzero((lab < 0) | (lab != np.rint(lab)))
        if bad.size:
            raise ValueError(f"{path}: label {lab[bad[0]]:g} in row {bad[0]} is not a class index (0, 1, 2, ...); "
                             "the label must be the first column")
        labels = lab.astype(np.int64)
    x = a[:, -n_features:]
    if x.min(initial=0) < 0:
        r, c = np.argwhere(x < 0)[0]
        raise ValueError(f"{path}: pixel value {x[r, c]:g} in row {r} is negative; pixels are integers "
                         "0..255 or floats in [0, 1]")
    if x.max(initial=0) > 1.0:  # 0..255 pixels; floats in [0, 1] are used as given
        bad = (x > 255) | (x != np.rint(x))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            kind = "not an integer" if x[r, c] != np.rint(x[r, c]) else "out of range"
            raise ValueError(f"{path}: pixel value {x[r, c]:g} in row {r} is {kind}: pixels are integers "
                             "0..255 (or all floats in [0, 1])")
        x = x.astype(np.uint8)
    return x, labels
