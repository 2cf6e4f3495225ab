"""Device strings -> :class:`Backend` (namespace + device), host transfers, and the clear errors.

This module turns a user's device string into an Array-API namespace plus a device,
moves arrays between the host and that device, and is the one sanctioned place where
the host waits for the device (:func:`to_numpy`, :meth:`Backend.to_float`,
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
    def ops(self):
        """This backend's kernels (see :func:`~mlp_backend.backends.ops_for`)."""
        from mlp_backend.backends.kernels import ops_for  # kernels import devices' neighbours, not devices
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
