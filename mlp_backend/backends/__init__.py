"""The array backends: the only package of :mod:`mlp_backend` that imports an array library.

Everything else receives a :class:`Backend` and writes its maths against ``backend.xp``, an
Array-API namespace (via ``array-api-compat``), calling the kernels of :func:`ops_for` where
a buffer-reusing or fused version exists. One job per module:

================  ====================================================================
``devices``       device strings -> :class:`Backend`; host transfers; ``cuda_available``
``portable``      :class:`PortableOps`: the reference kernels, plain Array-API expressions
``numpy_ops``     :class:`BufferOps` (``out=`` buffers) and the flat parameter layout
``cupy_ops``      :class:`CupyOps`: fused CUDA kernels; ``CupyGraphOps``: the capturable step
``kernels``       :func:`ops_for`: which of these kernels a namespace gets
``capture``       :class:`GraphStream`: a private CUDA stream and the capture of one graph on it
``placement``     inputs onto a model's device once, or a clear mismatch error
================  ====================================================================

The host waits for the device only in :func:`to_numpy`, :meth:`Backend.to_float` and
:meth:`Backend.synchronize`.
"""
from __future__ import annotations

from mlp_backend.backends.devices import (ENV_DEVICE, Backend, BackendError, array_backend, available_backends,
                      cuda_available, get_backend, host_rng, to_numpy, use)
from mlp_backend.backends.numpy_ops import BufferOps, FlatDict, flat_layout, n_decay
from mlp_backend.backends.portable import PortableOps
from mlp_backend.backends.cupy_ops import CupyOps
from mlp_backend.backends.kernels import ops_for

__all__ = [
    "Backend", "BackendError", "get_backend", "to_numpy", "cuda_available",
    "available_backends", "array_backend", "ENV_DEVICE", "use", "host_rng",
    "ops_for", "PortableOps", "BufferOps", "CupyOps", "FlatDict", "flat_layout", "n_decay",
]
