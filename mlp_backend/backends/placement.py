"""Putting inputs on a model's device, or refusing them with a clear error.

Two rules, the same on every backend (docs/backends.md, "Mixed devices"):

* The high-level entry points -- :meth:`Trainer.fit <mlp_backend.training.trainer.Trainer.fit>`,
  :func:`~mlp_backend.training.trainer.evaluate`, the estimator and the CLI's ``predict`` and
  ``evaluate`` -- accept host (NumPy) arrays for a model on any device and copy them to
  the model's device once, at the top of the call (:func:`place_inputs`).
* The low-level :class:`~mlp_backend.model.MLP` methods (``forward``, ``loss``,
  ``backward``, ``loss_and_grads``, ``predict``, ``predict_proba``) never move data: an
  input on another device raises :class:`DeviceMismatchError` naming both devices and
  the fix (:func:`check_device`), as PyTorch does. A silent copy there would hide a host
  transfer in every training step.

Arrays already on another device (a CUDA array for a NumPy model, a torch tensor for a
CuPy model) are refused by ``Trainer.fit`` and ``evaluate`` too: copying them is the
caller's choice (the estimator, which answers in its input's array type, copies any
supported array through the host).
"""
from __future__ import annotations

import numpy as np
import array_api_compat

from mlp_backend.backends.devices import Backend, BackendError, array_backend

__all__ = ["DeviceMismatchError", "check_device", "on_device", "place_inputs", "to_device", "where"]


class DeviceMismatchError(BackendError):
    """An input lives on another device than the model; the message names both and the fix."""


def on_device(backend: Backend, x) -> bool:
    """True when ``x`` is an array of ``backend``'s namespace on its device (cheap: the
    training loop's low-level calls check every step)."""
    name = backend.name
    if name == "numpy":
        return isinstance(x, np.ndarray)
    if name == "torch":
        return array_api_compat.is_torch_array(x) and x.device == backend.device
    if name == "cupy":
        return array_api_compat.is_cupy_array(x) and x.device.id == backend.device.id
    return backend.owns(x)


def where(x) -> "tuple[str | None, str]":
    """(device string, words) for where ``x`` lives: ``("cpu", "cpu (a NumPy array)")``,
    ``("torch:cpu", "torch:cpu")``, ... or ``(None, "no supported array (a list)")``."""
    if isinstance(x, np.ndarray):
        return "cpu", "cpu (a NumPy array)"
    try:
        label = array_backend(x).label
    except Exception:  # lists, scalars, other libraries' arrays
        return None, f"no supported array (a {type(x).__name__})"
    return label, label


def _mismatch(backend: Backend, x, what: str, host_ok: bool) -> DeviceMismatchError:
    dev, words = where(x)
    move_model = f", or move the model with model.to({dev!r})" if dev else ""
    if host_ok:
        fix = (f"copy it to the host first (mlp_backend.to_numpy({what})) and pass the NumPy array"
               f"{move_model}")
    else:
        fix = (f"move it first with model.backend.asarray(numpy_array){move_model}. Trainer.fit, "
               "evaluate, MLPClassifier and `mlp-backend predict` copy host (NumPy) arrays to the "
               "model's device for you")
    return DeviceMismatchError(
        f"expected {what} on the model's device {backend.label}, but it is on {words}: {fix}")


def check_device(backend: Backend, x, what: str = "x") -> None:
    """Raise :class:`DeviceMismatchError` unless ``x`` is on ``backend``'s device."""
    if not on_device(backend, x):
        raise _mismatch(backend, x, what, host_ok=False)


def to_device(backend: Backend, x, dtype: "str | None" = None, what: str = "x"):
    """``x`` on ``backend``'s device: as it is when already there, else a host NumPy array
    (or nested list) copied there in one transfer, cast to ``dtype`` on the host first.
    Arrays on another device raise :class:`DeviceMismatchError`."""
    if x is None or on_device(backend, x):
        return x
    if isinstance(x, (np.ndarray, list, tuple)):
        return backend.asarray(x, dtype)
    raise _mismatch(backend, x, what, host_ok=True)


def place_inputs(model, x, y, names=("x", "y")):
    """(x, y) on ``model``'s device: host rows and labels are copied there once (float rows
    and float targets cast to the model's dtype on the host, integer labels as int64;
    integer pixels keep their dtype, to be scaled on the device); device arrays pass as
    they are. Either may be None."""
    b, dt = model.backend, model.dtype_name
    x, y = (np.asarray(a) if isinstance(a, (list, tuple)) else a for a in (x, y))
    if isinstance(x, np.ndarray):
        x = to_device(b, x, dt if x.dtype.kind == "f" else None, names[0])
    else:
        x = to_device(b, x, None, names[0])
    if isinstance(y, np.ndarray):
        y = to_device(b, y, dt if y.dtype.kind == "f" else "int64" if y.dtype.kind in "iu" else None, names[1])
    else:
        y = to_device(b, y, None, names[1])
    return x, y
