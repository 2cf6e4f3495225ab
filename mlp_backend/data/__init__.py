"""Host-side data loading for mlp-backend (NumPy only; pixels stay uint8).

Public API::

    DataError                 # ValueError subclass for every bad-input problem
    Dataset                   # frozen dataclass: x_train, y_train, x_test, y_test, name, source
    load_dataset(name_or_path, *, cache_dir=None, log=print, download=True) -> Dataset
    fetch(name, *, cache_dir=None, log=print, force=False, download=True) -> Path
    info(name, *, cache_dir=None) -> dict;  format_info(dict) -> str
    cache_dir() -> Path;  cache_path(name, cache_dir=None) -> Path
    read_idx(path, *, expect=None) -> ndarray
    read_csv(path) -> (x, y)
    read_npz(path) -> (x_train, y_train, x_test, y_test)
    validate(x, y, *, where="", allow_empty=False) -> (x_uint8, y_uint8)
    train_val_split(x, y, fraction, seed) -> (x_tr, y_tr, x_val, y_val)

See docs/data.md.
"""

from mlp_backend.data.cache import ENV_DATA_DIR, cache_dir, cache_path
from mlp_backend.data.dataset import Dataset, train_val_split
from mlp_backend.data.errors import DataError
from mlp_backend.data.formats import read_csv, read_idx, read_npz, validate, write_npz_atomic
from mlp_backend.data.loading import fetch, format_info, info, load_dataset

__all__ = [
    "DataError",
    "Dataset",
    "load_dataset",
    "fetch",
    "info",
    "format_info",
    "cache_dir",
    "cache_path",
    "read_idx",
    "read_csv",
    "read_npz",
    "validate",
    "train_val_split",
    "write_npz_atomic",
    "ENV_DATA_DIR",
]
