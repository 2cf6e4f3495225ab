"""Finite-difference gradient checking (central differences, float64).

``numerical_gradients`` perturbs parameters on the host, one entry at a time, and
evaluates the model's loss on its own backend; ``check_gradients`` compares those
numbers with :meth:`MLP.backward` and reports the worst relative error.
"""
from __future__ import annotations

import numpy as np  # host-side: perturbations are made on host copies

from mlp_backend.model import MLP


def numerical_gradients(model: MLP, x, y, eps: float = 1e-6, max_entries: int | None = None,
                        seed: int = 0, normalizer=None) -> dict:
    """Central-difference estimates ``{name: (indices, values)}`` of dL/dparam.

    With ``max_entries`` only that many randomly chosen entries per parameter are checked
    (flat indices returned alongside). ``normalizer`` rescales the loss like
    :meth:`MLP.backward`'s argument of the same name.
    """
    if model.dtype_name != "float64":
        raise ValueError("gradient checks need float64: build the model with dtype='float64'")
    rng = np.random.default_rng(seed)
    host = model.host_params()
    scale = 1.0 if normalizer is None else x.shape[0] / normalizer
    out = {}
    for name, value in host.items():
        flat = value.reshape(-1)
        idx = np.arange(flat.size)
        if max_entries is not None and flat.size > max_entries:
            idx = np.sort(rng.choice(flat.size, max_entries, replace=False))
        est = np.empty(idx.size)
        for j, k in enumerate(idx):
            vals = []
            for sign in (1.0, -1.0):
                pert = flat.copy()
                pert[k] += sign * eps
                model.params[name] = model.backend.asarray(pert.reshape(value.shape))
                vals.append(model.backend.to_float(model.loss(model.forward(x), y)))
            est[j] = (vals[0] - vals[1]) / (2 * eps) * scale
        model.params[name] = model.backend.asarray(value)
        out[name] = (idx, est)
    return out


def check_gradients(model: MLP, x, y, eps: float = 1e-6, max_entries: int | None = 50,
                    seed: int = 0, normalizer=None, floor: float = 1e-12) -> float:
    """The largest normwise relative error between backprop and central differences.

    For each parameter, ``max|a - n| / max(max|n|, floor)`` over the checked entries:
    relative to the tensor's largest entry, so entries that are zero up to rounding
    cannot dominate. A correct float64 gradient gives about 1e-8 or less; a wrong one
    gives about 1.
    """
    numeric = numerical_gradients(model, x, y, eps, max_entries, seed, normalizer)
    analytic = {k: model.backend.to_numpy(v) for k, v in
                model.backward(model.forward(x), y, normalizer).items()}
    worst = 0.0
    for name, (idx, est) in numeric.items():
        a = analytic[name].reshape(-1)[idx]
        worst = max(worst, float(np.abs(a - est).max() / max(np.abs(est).max(), floor)))
    return worst
