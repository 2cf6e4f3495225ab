"""The ``xp`` backend shim: the only module that imports an array library.

Everything else in :mod:`mlp_backend` receives a :class:`Backend` and writes its
maths against ``backend.xp``, an Array-API namespace (via ``array-api-compat``).
This module turns a user's device string into such a namespace plus a device,
moves arrays between the host and that device, and is the one sanctioned place
where the host waits for the device (:func:`to_numpy`, :meth:`Backend.to_float`,
:meth:`Backend.synchronize`).

Device strings
--------------
=========================  ===============================================
``auto``                   CUDA (CuPy) if usable, else NumPy on the CPU
``cpu`` / ``numpy``        NumPy
``cuda`` / ``cuda:N``      CuPy on GPU ``N`` (default 0); ``cupy[:N]`` too
``torch`` / ``torch:cpu``  PyTorch tensors on the CPU
``torch:cuda[:N]``         PyTorch tensors on a GPU
``array_api_strict[:D]``   the strict reference namespace on device ``D``
                           (``CPU_DEVICE``, ``device1``, ``no_float64`` ...)
=========================  ===============================================

The default when none is given is ``$MLP_BACKEND_DEVICE`` or ``auto``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import array_api_compat

ENV_DEVICE = "MLP_BACKEND_DEVICE"

__all__ = [
    "Backend", "BackendError", "get_backend", "to_numpy", "cuda_available",
    "available_backends", "array_backend", "ENV_DEVICE", "use", "host_rng",
    "ops_for", "PortableOps", "BufferOps", "CupyOps", "FlatDict",
]

_default: "str | None" = None


def use(device: "str | None") -> None:
    """Set the process-wide default device (``None`` goes back to ``$MLP_BACKEND_DEVICE``)."""
    if device is not None:
        get_backend(device)  # fail now, with the clear message, not at first use
    global _default
    _default = device


class BackendError(RuntimeError):
    """A device string that cannot be honoured here; the message says why and what to do."""


def to_numpy(x: Any) -> np.ndarray:
    """Copy any supported array to a host NumPy array (a host sync for device arrays).

    This is *the* host-transfer helper: the training loop calls it once per epoch,
    and tests count its calls to prove that no step waits for the device.
    """
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_array_api_strict_namespace(array_api_compat.array_namespace(x)):
        import array_api_strict
        return np.asarray(x.to_device(array_api_strict.Device("CPU_DEVICE")))
    return np.asarray(x)


@dataclass(frozen=True)
class Backend:
    """An array namespace plus the device on which every array of a model lives.

    ``xp`` is the Array-API namespace; ``device`` is the namespace's own device
    object (pass it as ``device=`` to every array-creating call); ``label`` is the
    user-facing name (``cpu``, ``cuda:0``, ``torch:cpu``, ...).
    """

    name: str  # numpy | cupy | torch | array_api_strict
    xp: Any = field(repr=False)
    device: Any
    label: str

    # ----- dtypes ---------------------------------------------------------------
    @property
    def supports_float64(self) -> bool:
        if self.name == "array_api_strict":
            info = self.xp.__array_namespace_info__()
            return "float64" in info.dtypes(device=self.device, kind="real floating")
        return True

    def dtype(self, name: str):
        """The namespace's dtype called ``name`` (``float32`` or ``float64``)."""
        if name not in ("float32", "float64"):
            raise BackendError(f"unsupported dtype {name!r}: use 'float32' or 'float64'")
        if name == "float64" and not self.supports_float64:
            raise BackendError(
                f"device {self.label} has no float64; use dtype='float32' on it")
        return getattr(self.xp, name)

    # ----- moving data -----------------------------------------------------------
    def asarray(self, host: Any, dtype: "str | None" = None):
        """Move a host array (or nested list) to this device in one transfer.

        ``dtype`` (``'float32'``, ``'float64'``, ``'uint8'``, ...) is applied on the host
        first, so nothing of another dtype ever reaches the device. The result never
        shares memory with ``host``.
        """
        host = np.array(host, dtype=dtype, order="C")  # always a copy: callers own the result
        if dtype in ("float32", "float64"):
            self.dtype(dtype)  # a clear error where the device lacks float64
        if self.name == "numpy":
            return host
        if self.name == "cupy":
            import cupy
            with cupy.cuda.Device(self.device.id):
                return cupy.asarray(host)
        if self.name == "torch":
            import torch
            return torch.from_numpy(host).to(self.device)
        return self.xp.asarray(host, device=self.device)

    def to_numpy(self, x) -> np.ndarray:
        """Copy a device array back to the host (a host sync)."""
        return to_numpy(x)

    def to_float(self, x) -> float:
        """A 0-d device array as a Python float (a host sync)."""
        return float(to_numpy(x))

    def synchronize(self) -> None:
        """Wait for all queued device work, for honest timers; a no-op on CPU."""
        if self.name == "cupy":
            import cupy
            cupy.cuda.Device(self.device.id).synchronize()
        elif self.name == "torch" and self.device.type == "cuda":
            import torch
            torch.cuda.synchronize(self.device)

    @property
    def ops(self) -> "PortableOps":
        """This backend's kernels (see :func:`ops_for`)."""
        return ops_for(self.xp)

    def owns(self, x) -> bool:
        """True when ``x`` is an array of this namespace on this device."""
        try:
            return (array_api_compat.array_namespace(x) is self.xp
                    and str(array_api_compat.device(x)) == str(self.device))
        except TypeError:
            return False

    def versions(self) -> dict:
        """Library versions that matter for this backend (for metrics and reports)."""
        out = {"numpy": np.__version__, "array_api_compat": array_api_compat.__version__}
        mod = {"cupy": "cupy", "torch": "torch", "array_api_strict": "array_api_strict"}.get(self.name)
        if mod:
            out[mod] = __import__(mod).__version__
        return out


def host_rng(seed=0) -> np.random.Generator:
    """The host random generator behind every random choice (init, shuffling)."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


# ---------------------------------------------------------------------------------
# construction

def cuda_available() -> tuple[bool, str]:
    """(usable, reason): whether CuPy is installed and sees at least one GPU."""
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - depends on the machine
        return False, f"CuPy is not installed ({exc})"
    try:
        if not cupy.is_available():
            return False, "CuPy is installed but cupy.is_available() is False (no usable CUDA GPU or driver)"
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA runtime errors come in many classes
        return False, f"CuPy is installed but CUDA failed: {exc}"
    return n > 0, f"{n} CUDA device(s)"


def _cupy(index: int, spec: str) -> Backend:
    try:
        import cupy  # noqa: F401
    except ImportError as exc:
        raise BackendError(
            f"device {spec!r} needs CuPy, which is not installed ({exc}). Install it with "
            "`pip install 'mlp-backend[cuda12]'` or `pip install 'mlp-backend[cuda13]'` "
            "(matching your CUDA driver), or use --device cpu") from None
    ok, why = cuda_available()
    if not ok:
        raise BackendError(f"device {spec!r} is not usable: {why}. Use --device cpu")
    import cupy
    count = cupy.cuda.runtime.getDeviceCount()
    if index >= count:
        raise BackendError(f"device {spec!r}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})")
    import array_api_compat.cupy as xp
    return Backend("cupy", xp, cupy.cuda.Device(index), f"cuda:{index}")


def _torch(where: str, spec: str) -> Backend:
    try:
        import torch
    except ImportError:
        raise BackendError(
            f"device {spec!r} needs PyTorch, which is not installed: `pip install 'mlp-backend[torch]'`"
        ) from None
    import array_api_compat.torch as xp
    dev = torch.device(where)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device {spec!r}: torch.cuda.is_available() is False here; use torch:cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", 0)
    return Backend("torch", xp, dev, "torch:" + str(dev))


def _strict(name: str, spec: str) -> Backend:
    try:
        import array_api_strict
    except ImportError:
        raise BackendError(f"device {spec!r} needs `pip install array-api-strict`") from None
    devices = {str(d).split("'")[1]: d for d in array_api_strict.__array_namespace_info__().devices()}
    if name not in devices:
        raise BackendError(f"array_api_strict has no device {name!r}; choose from {sorted(devices)}")
    return Backend("array_api_strict", array_api_strict, devices[name], f"array_api_strict:{name}")


def get_backend(spec: "str | Backend | None" = None) -> Backend:
    """A :class:`Backend` for a device string (see the module docstring).

    ``None`` takes the default set by :func:`use`, else ``$MLP_BACKEND_DEVICE``, else ``auto``.
    """
    if isinstance(spec, Backend):
        return spec
    raw = spec if spec is not None else (_default or os.environ.get(ENV_DEVICE) or "auto")
    s = str(raw).strip().lower()
    if s == "auto":
        return get_backend("cuda") if cuda_available()[0] else get_backend("cpu")
    if s in ("cpu", "numpy", "numpy:cpu"):
        import array_api_compat.numpy as xp
        return Backend("numpy", xp, "cpu", "cpu")
    head, _, tail = s.partition(":")
    if head in ("cuda", "cupy", "gpu"):
        if tail and not tail.isdigit():
            raise BackendError(f"bad CUDA device {raw!r}: write cuda or cuda:N with N a GPU index")
        return _cupy(int(tail or 0), str(raw))
    if head == "torch":
        return _torch(tail or "cpu", str(raw))
    if head in ("array_api_strict", "strict"):
        return _strict(str(raw).partition(":")[2] or "CPU_DEVICE", str(raw))
    raise BackendError(
        f"unknown device {raw!r}: use cpu, cuda, cuda:N, auto, torch[:cpu|:cuda[:N]] "
        "or array_api_strict[:device1|:no_float64]")


def array_backend(x) -> Backend:
    """The backend an existing array belongs to (for results returned in the input's type)."""
    if isinstance(x, np.ndarray):
        return get_backend("cpu")
    if array_api_compat.is_cupy_array(x):
        return get_backend(f"cuda:{x.device.id}")
    if array_api_compat.is_torch_array(x):
        return get_backend("torch:" + str(x.device))
    xp = array_api_compat.array_namespace(x)
    if array_api_compat.is_array_api_strict_namespace(xp):
        return _strict(str(x.device).split("'")[1], "array_api_strict")
    raise BackendError(f"unsupported array type {type(x).__name__}")


def available_backends() -> list[dict]:
    """Which backends work on this machine, with versions or the reason they do not."""
    rows = []
    for spec in ("cpu", "cuda", "torch:cpu", "torch:cuda", "array_api_strict:device1"):
        try:
            b = get_backend(spec)
            rows.append({"device": spec, "usable": True, "backend": b.name, "versions": b.versions()})
        except BackendError as exc:
            rows.append({"device": spec, "usable": False, "reason": str(exc)})
    return rows


# ---------------------------------------------------------------------------------
# kernels: the one place for out=/in-place/fused fast paths
#
# The maths modules call these primitives through ``ops_for(xp)``. Every primitive has
# a portable Array-API definition (:class:`PortableOps`, the reference and the path of
# torch and array_api_strict); :class:`BufferOps` computes the same thing into
# caller-owned buffers with ``out=`` (NumPy and CuPy, which share that API), and
# :class:`CupyOps` replaces the elementwise chains by fused CUDA kernels. ``out`` and
# scratch arguments are hints: the portable path ignores them and allocates.

class FlatDict(dict):
    """A dict of arrays that are views into one flat 1-D buffer ``flat`` (buffer-reusing
    backends only): parameters, gradients and optimizer state share one ``layout``
    (``(key, shape)`` pairs, weights before biases), so an optimizer updates all of them
    with a few calls on ``flat`` instead of a few per parameter.

    Any change of the mapping itself (``d[k] = new``, ``update``, ``del`` ...) drops
    ``flat`` (sets it to None): the entries may no longer be its views, and the owner
    packs them again before the next step. Copies (``copy``, ``deepcopy``, pickling) are
    plain dicts, so a copied array is never mistaken for a view of the original buffer.
    """

    def __init__(self, views, flat=None, layout=None):
        super().__init__(views)
        self.flat, self.layout = flat, layout
        self.n_decay = n_decay(layout) if layout is not None else 0

    def _drop(self):
        self.flat = None

    def __setitem__(self, k, v):
        self._drop()
        super().__setitem__(k, v)

    def __delitem__(self, k):
        self._drop()
        super().__delitem__(k)

    def __ior__(self, other):
        self._drop()
        return super().__ior__(other)

    def update(self, *a, **k):
        self._drop()
        super().update(*a, **k)

    def setdefault(self, k, default=None):
        self._drop()
        return super().setdefault(k, default)

    def pop(self, *a):
        self._drop()
        return super().pop(*a)

    def popitem(self):
        self._drop()
        return super().popitem()

    def clear(self):
        self._drop()
        super().clear()

    def copy(self):
        return dict(self)

    __copy__ = copy

    def __deepcopy__(self, memo):
        import copy as _copy
        return {k: _copy.deepcopy(v, memo) for k, v in self.items()}

    def __reduce__(self):
        return (dict, (dict(self),))


def flat_layout(shapes: dict) -> tuple:
    """The flat order of a parameter dict: weights (``w*``) first, then the rest, so the
    weights (the only decayed entries) are one prefix ``flat[:n_decay]``."""
    keys = [k for k in shapes if k.startswith("w")] + [k for k in shapes if not k.startswith("w")]
    return tuple((k, tuple(shapes[k])) for k in keys)


def n_decay(layout: tuple) -> int:
    """Length of the weight prefix of a :func:`flat_layout`."""
    return sum(_size(shape) for k, shape in layout if k.startswith("w"))


class PortableOps:
    """Reference kernels: plain Array-API expressions, new arrays every call."""

    reuses_buffers = False  # True where ``out=`` buffers are honoured (no per-step allocation)
    fused = False           # True where elementwise chains run as single fused kernels

    def __init__(self, xp):
        self.xp = xp

    # ----- data -----------------------------------------------------------------
    def empty(self, shape, dtype, device):
        return self.xp.empty(shape, dtype=dtype, device=device)

    def gather_rows(self, x, idx, out=None):
        """``x[idx]`` along axis 0."""
        return self.xp.take(x, idx, axis=0)

    def cast_scale(self, x, dtype, scale=None, out=None):
        """``x`` cast to ``dtype``, times ``scale`` when given (integer pixels -> [0, 1])."""
        xp = self.xp
        y = x if x.dtype == dtype else xp.astype(x, dtype)
        return y * scale if scale is not None else y

    # ----- layers ---------------------------------------------------------------
    def linear(self, a, w, b, out=None):
        """``a @ w + b``."""
        return a @ w + b

    def relu(self, z, out=None):
        """``max(z, 0)``; with ``out=z`` it runs in place where buffers are honoured."""
        return self.xp.where(z > 0, z, 0.0)

    def linear_relu(self, a, w, b, out=None):
        """``relu(a @ w + b)`` (bias and activation fused into one kernel on CuPy)."""
        return self.relu(self.linear(a, w, b, out), out)

    def relu_backward(self, grad_a, a, out=None, mask=None):
        """``grad_a`` where ``a > 0``, else 0 (``out`` may be ``grad_a`` itself)."""
        return self.xp.where(a > 0, grad_a, 0.0)

    def softmax(self, z, out=None, rowbuf=None):
        """(softmax(z), logsumexp(z) per row as (n, 1)): the log-sum-exp lets the
        cross-entropy come from the logits without a second pass of exponentials."""
        xp = self.xp
        m = xp.max(z, axis=1, keepdims=True)
        e = xp.exp(z - m)
        s = xp.sum(e, axis=1, keepdims=True)
        return e / s, m + xp.log(s)

    def matmul_tn(self, a, b, out=None):
        """``a.T @ b`` (no copy of the transpose)."""
        return self.xp.matrix_transpose(a) @ b

    def matmul_nt(self, a, b, out=None):
        """``a @ b.T``."""
        return a @ self.xp.matrix_transpose(b)

    def sum_rows(self, x, out=None):
        """``sum(x, axis=0)``."""
        return self.xp.sum(x, axis=0)

    def sub_scaled(self, a, y, scale, out=None):
        """``(a - y) * scale``: the fused softmax–cross-entropy gradient dL/dz."""
        return (a - y) * scale

    # ----- optimizer updates, in place on w (and the state buffers) ---------------
    def sgd_(self, w, g, lr, wd=0.0, tmp=None):
        if wd:
            g = g + wd * w
        w -= lr * g

    def momentum_(self, w, v, g, lr, mu, wd=0.0, nesterov=False, tmp=None):
        if wd:
            g = g + wd * w
        v *= mu
        v += g
        w -= lr * (g + mu * v if nesterov else v)

    def adam_(self, w, m, v, g, lr, b1, b2, eps, step, wd=0.0, decoupled=False, tmp=None):
        """Adam with the bias corrections folded into ``step`` and ``eps`` by the caller."""
        xp = self.xp
        if decoupled:
            if wd:
                w *= 1.0 - lr * wd
        elif wd:
            g = g + wd * w
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * (g * g)
        w -= step * m / (xp.sqrt(v) + eps)


class BufferOps(PortableOps):
    """NumPy (and CuPy) kernels that write into caller-owned buffers with ``out=``.

    ``mod`` is the array module itself (``numpy`` or ``cupy``), whose ufuncs, ``matmul``,
    ``take`` and reductions all accept ``out=``. With ``out=None`` each call allocates,
    exactly like :class:`PortableOps`, so these kernels also serve one-off calls.
    """

    reuses_buffers = True

    def __init__(self, xp, mod):
        super().__init__(xp)
        self.m = mod
        self._ones = {}

    def pack(self, layout, dtype, device=None, values=None, order=None):
        """A :class:`FlatDict` of views into one new flat buffer laid out as ``layout``;
        each view holds a copy of ``values[key]`` where given, zeros otherwise. ``order``
        (keys) is the dict's iteration order (default: the layout's)."""
        total = sum(_size(shape) for _, shape in layout)
        flat = self.xp.zeros((total,), dtype=dtype, device=device)
        views, off = {}, 0
        for k, shape in layout:
            n = _size(shape)
            v = views[k] = flat[off:off + n].reshape(shape)
            if values is not None and k in values:
                self.m.copyto(v, values[k], casting="same_kind")
            off += n
        if order is not None:
            views = {k: views[k] for k in order}
        return FlatDict(views, flat, layout)

    def argmax_rows(self, a, out=None):
        """Row-wise argmax into ``out`` (an index buffer slice)."""
        return self.m.argmax(a, axis=1, out=out)

    def gather_rows(self, x, idx, out=None):
        return self.m.take(x, idx, axis=0, out=out)

    def cast_scale(self, x, dtype, scale=None, out=None):
        m = self.m
        if scale is None:
            if out is None:
                return x if x.dtype == dtype else x.astype(dtype)
            m.copyto(out, x, casting="unsafe")
            return out
        if out is None:  # uint8 * float32 -> float32 loop: no float64 detour, no intermediate
            return m.multiply(x, m.asarray(scale, dtype=dtype), dtype=dtype)
        # into a buffer: an exact cast, then an in-place multiply (the same float32 result;
        # measured 3 us/step cheaper than the mixed-dtype multiply's buffered cast loop)
        m.copyto(out, x, casting="unsafe")
        return m.multiply(out, m.asarray(scale, dtype=dtype), out=out)

    def linear(self, a, w, b, out=None):
        m = self.m
        z = m.matmul(a, w, out=out)
        return m.add(z, b, out=z)

    def relu(self, z, out=None):
        return self.m.maximum(z, 0, out=out)

    def relu_backward(self, grad_a, a, out=None, mask=None):
        m = self.m
        mask = m.greater(a, 0, out=mask)
        return m.multiply(grad_a, mask, out=out)

    def softmax(self, z, out=None, rowbuf=None):
        m = self.m
        mx = m.max(z, axis=1, keepdims=True, out=None if rowbuf is None else rowbuf[0])
        e = m.subtract(z, mx, out=out)
        m.exp(e, out=e)
        s = m.sum(e, axis=1, keepdims=True, out=None if rowbuf is None else rowbuf[1])
        m.divide(e, s, out=e)
        lse = m.log(s, out=s)
        return e, m.add(lse, mx, out=lse)

    def matmul_tn(self, a, b, out=None):
        return self.m.matmul(a.T, b, out=out)

    def matmul_nt(self, a, b, out=None):
        return self.m.matmul(a, b.T, out=out)

    def sum_rows(self, x, out=None):
        # a (n,) ones vector times x: one BLAS gemv, ~4x faster than the axis-0 reduction
        # on (128, 100) float32 (the bias gradients)
        if x.ndim != 2:
            return self.m.sum(x, axis=0, out=out)
        key = (x.shape[0], x.dtype)
        ones = self._ones.get(key)
        if ones is None:
            if len(self._ones) > 8:
                self._ones.clear()
            ones = self._ones[key] = self.m.ones((x.shape[0],), dtype=x.dtype)
        return self.m.matmul(ones, x, out=out)

    def sub_scaled(self, a, y, scale, out=None):
        m = self.m
        d = m.subtract(a, y, out=out)
        return m.multiply(d, scale, out=d)

    def _tmp(self, tmp, like):
        return tmp if tmp is not None else self.m.empty_like(like)

    def sgd_(self, w, g, lr, wd=0.0, tmp=None):
        m, t = self.m, self._tmp(tmp, w)
        if wd:
            m.multiply(w, wd, out=t)
            m.add(t, g, out=t)
            m.multiply(t, lr, out=t)
        else:
            m.multiply(g, lr, out=t)
        m.subtract(w, t, out=w)

    def momentum_(self, w, v, g, lr, mu, wd=0.0, nesterov=False, tmp=None):
        m, t = self.m, self._tmp(tmp, w)
        if wd:
            g = g + wd * w
        m.multiply(v, mu, out=v)
        m.add(v, g, out=v)
        if nesterov:
            m.multiply(v, mu, out=t)
            m.add(t, g, out=t)
            m.multiply(t, lr, out=t)
        else:
            m.multiply(v, lr, out=t)
        m.subtract(w, t, out=w)

    def adam_(self, w, m_, v, g, lr, b1, b2, eps, step, wd=0.0, decoupled=False, tmp=None):
        m, t = self.m, self._tmp(tmp, w)
        if decoupled:
            if wd:
                m.multiply(w, 1.0 - lr * wd, out=w)
        elif wd:
            g = g + wd * w
        m.multiply(m_, b1, out=m_)
        m.multiply(g, 1.0 - b1, out=t)
        m.add(m_, t, out=m_)
        m.multiply(v, b2, out=v)
        m.multiply(g, g, out=t)
        m.multiply(t, 1.0 - b2, out=t)
        m.add(v, t, out=v)
        m.sqrt(v, out=t)
        m.add(t, eps, out=t)
        m.divide(m_, t, out=t)
        m.multiply(t, step, out=t)
        m.subtract(w, t, out=w)


class CupyOps(BufferOps):
    """CuPy: :class:`BufferOps` plus fused elementwise kernels (one launch per chain).

    Kernels are compiled on first use; each mirrors a :class:`PortableOps` expression,
    and ``tests/test_fast_paths.py`` checks them against it on a GPU (``-m gpu``).
    """

    fused = True

    def __init__(self, xp, mod):
        super().__init__(xp, mod)
        self._k = {}

    def _kernel(self, name):
        k = self._k.get(name)
        if k is None:
            ek = self.m.ElementwiseKernel
            k = self._k[name] = {
                "bias_relu": lambda: ek("T b", "T z", "z = max(z + b, (T)0)", "mlpb_bias_relu"),
                "relu_bwd": lambda: ek("T g, T a", "T o", "o = a > (T)0 ? g : (T)0", "mlpb_relu_bwd"),
                "scale": lambda: ek("X x, T s", "T o", "o = (T)x * s", "mlpb_scale"),
                "sub_scaled": lambda: ek("T a, T y, T s", "T d", "d = (a - y) * s", "mlpb_sub_scaled"),
                "sgd": lambda: ek("T g, T lr, T wd", "T w", "w -= lr * (g + wd * w)", "mlpb_sgd"),
                "momentum": lambda: ek(
                    "T g, T lr, T mu, T wd, bool nesterov", "T w, T v",
                    "T gg = g + wd * w; v = mu * v + gg; w -= lr * (nesterov ? gg + mu * v : v)",
                    "mlpb_momentum"),
                "adam": lambda: ek(
                    "T g, T lr, T b1, T b2, T eps, T step, T wd, bool decoupled", "T w, T m, T v",
                    "T gg = g; if (decoupled) { w *= (T)1 - lr * wd; } else { gg = g + wd * w; } "
                    "m = b1 * m + ((T)1 - b1) * gg; v = b2 * v + ((T)1 - b2) * gg * gg; "
                    "w -= step * m / (sqrt(v) + eps)",
                    "mlpb_adam"),
            }[name]()
        return k

    @staticmethod
    def _s(value, like):
        # a host scalar of the array's dtype: passed by value to the kernel (no transfer, no sync)
        return like.dtype.type(value)

    def cast_scale(self, x, dtype, scale=None, out=None):
        if scale is None:
            return super().cast_scale(x, dtype, None, out)
        if out is None:
            out = self.m.empty(x.shape, dtype=dtype)
        return self._kernel("scale")(x, self._s(scale, out), out)

    def sum_rows(self, x, out=None):
        return self.m.sum(x, axis=0, out=out)  # one reduction kernel; no ones vector per device

    def linear_relu(self, a, w, b, out=None):
        z = self.m.matmul(a, w, out=out)
        return self._kernel("bias_relu")(b, z)

    def relu_backward(self, grad_a, a, out=None, mask=None):
        return self._kernel("relu_bwd")(grad_a, a, out) if out is not None else self._kernel("relu_bwd")(grad_a, a)

    def sub_scaled(self, a, y, scale, out=None):
        k = self._kernel("sub_scaled")
        return k(a, y, self._s(scale, a), out) if out is not None else k(a, y, self._s(scale, a))

    def sgd_(self, w, g, lr, wd=0.0, tmp=None):
        self._kernel("sgd")(g, self._s(lr, w), self._s(wd, w), w)

    def momentum_(self, w, v, g, lr, mu, wd=0.0, nesterov=False, tmp=None):
        self._kernel("momentum")(g, self._s(lr, w), self._s(mu, w), self._s(wd, w), bool(nesterov), w, v)

    def adam_(self, w, m_, v, g, lr, b1, b2, eps, step, wd=0.0, decoupled=False, tmp=None):
        s = lambda val: self._s(val, w)  # noqa: E731
        self._kernel("adam")(g, s(lr), s(b1), s(b2), s(eps), s(step), s(wd), bool(decoupled), w, m_, v)


def _size(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


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
