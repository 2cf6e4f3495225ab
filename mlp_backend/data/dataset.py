"""The :class:`Dataset` container and :func:`train_val_split`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mlp_backend.data.errors import DataError


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded data set; all arrays are host-side NumPy ``uint8``.

    ``x_*`` has shape ``(n, 784)`` (pixels 0..255), ``y_*`` shape ``(n,)`` (labels 0..9).
    The test part may be empty (shape ``(0, 784)`` / ``(0,)``) when the source had no
    test split (e.g. a single CSV file).  ``eq=False``: arrays make ``==`` ambiguous, so
    instances compare by identity.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    source: str

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    def __repr__(self) -> str:  # arrays are huge; keep the repr short
        return (
            f"Dataset(name={self.name!r}, train={self.x_train.shape}, test={self.x_test.shape}, "
            f"source={self.source!r})"
        )


def train_val_split(x, y, fraction: float, seed):
    """Seeded random split of ``(x, y)`` into ``(x_tr, y_tr, x_val, y_val)``.

    ``n_val = round(fraction * n)``; the permutation comes from
    ``numpy.random.default_rng(seed).permutation(n)``, so the same seed gives the same
    split.  ``fraction`` must be in ``[0, 1)``; ``0`` gives an empty validation set.
    Returned arrays are copies.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        raise DataError(f"validation fraction {fraction!r} is not a number; use a value in [0, 1), e.g. 0.1.") from None
    if not math.isfinite(f) or not 0.0 <= f < 1.0:
        raise DataError(
            f"validation fraction {fraction!r} is outside [0, 1); use e.g. 0.1 for 10% validation "
            "or 0 for no validation set."
        )
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"train_val_split: {x.shape[0]} images but {y.shape[0]} labels; they must have the same length."
        )
    n = x.shape[0]
    n_val = int(round(f * n))
    if n_val >= n and n > 0:
        raise DataError(
            f"validation fraction {f} of {n} samples leaves no training data; use a smaller fraction."
        )
    perm = np.random.default_rng(seed).permutation(n)
    val, tr = perm[:n_val], perm[n_val:]
    return x[tr], y[tr], x[val], y[val]


__all__ = ["Dataset", "train_val_split"]
