"""Where named data sets are cached: the names known, the cache directory, each name's NPZ
file and the metadata JSON written beside it.  See ``docs/data.md``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mlp_backend.data.atomic import write_json_atomic
from mlp_backend.data.errors import DataError
from mlp_backend.data.formats import NPZ_KEYS, sha256_file, write_npz_atomic

ENV_DATA_DIR = "MLP_BACKEND_DATA_DIR"

# name -> canonical name
NAMES = {
    "mnist": "mnist",
    "fashion-mnist": "fashion-mnist",
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
}


def cache_dir() -> Path:
    """The data cache directory.

    ``$MLP_BACKEND_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/mlp-backend``, else
    ``~/.cache/mlp-backend``.  Not created here.
    """
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "mlp-backend"
    return Path.home() / ".cache" / "mlp-backend"


def _resolve_cache_dir(cdir) -> Path:
    return Path(cdir).expanduser() if cdir is not None else cache_dir()


def cache_path(name: str, cache_dir=None) -> Path:
    """Path of the cached NPZ for a named data set."""
    return _resolve_cache_dir(cache_dir) / f"{_canonical(name)}.npz"


def _canonical(name: str) -> str:
    try:
        return NAMES[name.lower()]
    except KeyError:
        raise DataError(f"unknown data set name {name!r}; known names: mnist, fashion-mnist (or pass a file/directory path).") from None


def _meta_path(npz: Path) -> Path:
    return npz.with_suffix(".json")


def _write_cache(cpath: Path, arrays: Sequence[np.ndarray], origin: str, log: Callable[[str], None]) -> None:
    try:
        write_npz_atomic(cpath, *arrays)
        write_json_atomic(
            _meta_path(cpath),
            {
                "source": origin,
                "sha256": sha256_file(cpath),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "shapes": {k: list(a.shape) for k, a in zip(NPZ_KEYS, arrays)},
            },
        )
        log(f"cached to {cpath}")
    except OSError as e:
        log(f"warning: could not write cache {cpath}: {e} (data still loaded)")


def _read_meta(cpath: Path) -> dict:
    try:
        return json.loads(_meta_path(cpath).read_text())
    except (OSError, ValueError):
        return {}


__all__ = ["ENV_DATA_DIR", "cache_dir", "cache_path"]
