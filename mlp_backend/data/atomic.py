"""Atomic file writes: the one way mlp-backend writes a file (temp file in the same
directory, fsync, ``os.replace``), so a crash or a full disk never leaves half a file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Union

PathLike = Union[str, "os.PathLike[str]"]


def atomic_write_bytes(path: PathLike, writer: Callable[[IO[bytes]], None]) -> Path:
    """Write a file atomically: temp file in the same directory, fsync, ``os.replace``.

    On any failure the temp file is removed and ``path`` is left untouched.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give normal file permissions
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return p


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: PathLike, obj) -> Path:
    """``obj`` as indented, key-sorted JSON, written atomically."""
    return write_bytes_atomic(path, json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n")


def write_bytes_atomic(path: PathLike, data: bytes) -> Path:
    """``data`` written to ``path`` atomically."""
    return atomic_write_bytes(path, lambda f: f.write(data))
