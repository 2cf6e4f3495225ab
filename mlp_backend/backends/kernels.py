"""Which kernels a namespace gets: buffer-reusing on NumPy, fused on CuPy, portable elsewhere."""
from __future__ import annotations

import os

import array_api_compat
import numpy as np

from mlp_backend.backends.cupy_ops import CupyOps
from mlp_backend.backends.numpy_ops import BufferOps
from mlp_backend.backends.portable import PortableOps

_OPS: dict = {}
_FORCE_PORTABLE = os.environ.get("MLP_BACKEND_PORTABLE") == "1"


def ops_for(xp, portable: bool = False) -> PortableOps:
    """The kernels for namespace ``xp``: buffer-reusing on NumPy, fused on CuPy, else portable.

    ``portable=True`` (or ``MLP_BACKEND_PORTABLE=1`` in the environment at import) forces
    the reference kernels everywhere, for parity tests and for debugging.
    """
    key = (id(xp), portable or _FORCE_PORTABLE)
    ops = _OPS.get(key)
    if ops is None:
        portable = key[1]
        if not portable and array_api_compat.is_numpy_namespace(xp):
            ops = BufferOps(xp, np)
        elif not portable and array_api_compat.is_cupy_namespace(xp):
            import cupy
            ops = CupyOps(xp, cupy)
        else:
            ops = PortableOps(xp)
        _OPS[key] = ops
    return ops
