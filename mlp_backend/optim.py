r"""Optimizers and learning-rate schedules. State lives on the model's device.

Every optimizer updates the parameter dict in place from a gradient dict with the same
keys. L2 weight decay adds :math:`\lambda W` to the gradient of every weight matrix
(``w*``; biases are not decayed), except ``adamw`` which decays decoupled from the
adaptive step (Loshchilov & Hutter).

===========  ===============================================================
``gd``       :math:`W \leftarrow W - \eta g` (the paper; full batch is a trainer setting)
``sgd``      the same rule on minibatches
``momentum`` :math:`v \leftarrow \mu v + g,\; W \leftarrow W - \eta v`
``nesterov`` :math:`v \leftarrow \mu v + g,\; W \leftarrow W - \eta (g + \mu v)`
``adam``     Kingma & Ba with bias correction
``adamw``    Adam with decoupled weight decay
===========  ===============================================================
"""
from __future__ import annotations

import math
from typing import Callable

from mlp_backend.backends import get_backend, ops_for


class Optimizer:
    """Base class: holds the learning rate, the step count and per-parameter buffers."""

    name = "base"
    buffer_names: tuple[str, ...] = ()

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0):
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.lr, self.weight_decay, self.t = float(lr), float(weight_decay), 0
        self.state: dict[str, dict] = {b: {} for b in self.buffer_names}

    def _decayed(self, key, g, w):
        if self.weight_decay and key.startswith("w"):
            return g + self.weight_decay * w
        return g

    def _buffer(self, kind, key, like, xp):
        buf = self.state[kind].get(key)
        if buf is None:
            buf = self.state[kind][key] = xp.zeros_like(like)
        return buf

    def _scratch(self, key, like, ops):
        """A private temporary per parameter (not state: never saved) where the backend
        reuses buffers, so an update allocates nothing; None elsewhere."""
        if not ops.reuses_buffers:
            return None
        bufs = self.__dict__.setdefault("_tmp", {})
        t = bufs.get(key)
        if t is None or t.shape != like.shape or t.dtype != like.dtype:
            t = bufs[key] = ops.xp.empty_like(like)
        return t

    def step(self, params: dict, grads: dict, xp) -> None:
        """One update of every parameter in ``params`` (in place).

        Where ``params`` and ``grads`` are :class:`~mlp_backend.backends.FlatDict` views of
        two flat buffers with one layout (the training loop's buffer-reusing path), the
        update runs on the flat buffers: one kernel sequence for all weights (decayed) and
        one for all biases, instead of one per parameter. Same arithmetic either way."""
        self.t += 1
        pf, gf = getattr(params, "flat", None), getattr(grads, "flat", None)
        if pf is not None and gf is not None and params.layout == grads.layout:
            ops = ops_for(xp)
            if ops.reuses_buffers:
                self._step_flat(params, pf, gf, ops)
                return
        for key, g in grads.items():
            self._update(key, params, g, xp)

    def _step_flat(self, params, pf, gf, ops, sc=None):
        bufs = [self._flat_state(kind, params, ops) for kind in self.buffer_names]
        tmp = self._scratch("__flat__", pf, ops)
        nd = params.n_decay
        if self.weight_decay and nd:  # weights (the prefix) decayed, biases not
            self._apply(ops, pf[:nd], gf[:nd], [b[:nd] for b in bufs], self.weight_decay, tmp[:nd], sc)
            if nd < pf.shape[0]:
                self._apply(ops, pf[nd:], gf[nd:], [b[nd:] for b in bufs], 0.0, tmp[nd:], sc)
        else:
            self._apply(ops, pf, gf, bufs, 0.0, tmp, sc)

    # ----- the graph-ready step: every per-step scalar read from a device array -----------
    SCALARS = ("lr", "decay", "step", "eps")  # the columns of step_scalars / a device row

    def step_scalars(self, t: int) -> tuple:
        """The host scalars update number ``t`` (1-based) uses, as floats in :attr:`SCALARS`
        order: the learning rate, the decoupled decay factor ``1 - lr * weight_decay`` and,
        for Adam, the bias-corrected step and epsilon. Computed in float64 exactly as
        :meth:`step` computes them, so a device copy cast to the parameters' dtype gives
        bitwise the same update."""
        return (self.lr, 1.0 - self.lr * self.weight_decay, 0.0, 0.0)

    def step_device(self, params, grads, ops, sc) -> None:
        """:meth:`step` on flat buffers with its scalars read from the device row ``sc``
        (one row of :meth:`step_scalars`, in the parameters' dtype), so that a captured
        CUDA graph replays it with new learning rates and step counts. The caller owns the
        step count: it advances :attr:`t` once per replayed step. Nothing is read from the
        host, nothing is allocated (on the fused and buffer backends) and nothing syncs."""
        self._step_flat(params, params.flat, grads.flat, ops, sc)

    def _flat_state(self, kind, params, ops):
        """The flat buffer behind ``state[kind]``, laid out like ``params``; state loaded or
        built per parameter before is copied in (missing entries start at zero)."""
        st = self.state.get(kind)
        if getattr(st, "flat", None) is None or st.layout != params.layout:
            st = self.state[kind] = ops.pack(params.layout, params.flat.dtype, getattr(params.flat, "device", None),
                                             st or None, order=list(params))
        return st.flat

    def _update(self, key, params, g, xp):
        ops, w = ops_for(xp), params[key]
        wd = self.weight_decay if key.startswith("w") else 0.0
        bufs = [self._buffer(kind, key, g, xp) for kind in self.buffer_names]
        self._apply(ops, w, g, bufs, wd, self._scratch(key, w, ops))

    def _apply(self, ops, w, g, bufs, wd, tmp, sc=None):  # pragma: no cover - abstract
        """Update ``w`` in place from ``g`` with state buffers ``bufs`` (``buffer_names``);
        with ``sc`` (a device row of :meth:`step_scalars`) the scalars come from there."""
        raise NotImplementedError

    # ----- checkpoints ------------------------------------------------------------------
    def config(self) -> dict:
        return {"name": self.name, "lr": self.lr, "weight_decay": self.weight_decay}

    def state_dict(self, backend) -> dict:
        """Host copies of every buffer plus the scalars (for checkpoints)."""
        out = {"t": self.t, "lr": self.lr}
        for kind, bufs in self.state.items():
            for key, v in bufs.items():
                out[f"{kind}/{key}"] = backend.to_numpy(v)
        return out

    def load_state_dict(self, state: dict, backend) -> None:
        """Restore :meth:`state_dict` output onto ``backend``'s device."""
        backend = get_backend(backend)
        self.t, self.lr = int(state["t"]), float(state["lr"])
        self.state = {b: {} for b in self.buffer_names}
        for name, v in state.items():
            kind, _, key = name.partition("/")
            if key:
                self.state.setdefault(kind, {})[key] = backend.asarray(v)


class SGD(Optimizer):
    name = "sgd"

    def _apply(self, ops, w, g, bufs, wd, tmp, sc=None):
        if sc is not None:
            ops.sgd_dev(w, g, sc, wd, tmp)
        else:
            ops.sgd_(w, g, self.lr, wd, tmp)


class GD(SGD):
    """Plain gradient descent; the paper runs it on the full batch."""
    name = "gd"


class Momentum(Optimizer):
    name = "momentum"
    buffer_names = ("v",)
    nesterov = False

    def __init__(self, lr=0.01, momentum=0.9, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)

    def config(self):
        return {**super().config(), "momentum": self.momentum}

    def _apply(self, ops, w, g, bufs, wd, tmp, sc=None):
        if sc is not None:
            ops.momentum_dev(w, bufs[0], g, sc, self.momentum, wd, self.nesterov, tmp)
        else:
            ops.momentum_(w, bufs[0], g, self.lr, self.momentum, wd, self.nesterov, tmp)


class Nesterov(Momentum):
    name = "nesterov"
    nesterov = True


class Adam(Optimizer):
    name = "adam"
    buffer_names = ("m", "v")
    decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.beta1, self.beta2, self.eps = float(betas[0]), float(betas[1]), float(eps)

    def config(self):
        return {**super().config(), "betas": [self.beta1, self.beta2], "eps": self.eps}

    def _corrected(self, t):
        """(step, eps): the learning rate and epsilon with the bias corrections of update
        ``t`` folded in, in float64."""
        c2 = math.sqrt(1.0 - self.beta2 ** t)
        return self.lr * c2 / (1.0 - self.beta1 ** t), self.eps * c2

    def step_scalars(self, t):
        return (self.lr, 1.0 - self.lr * self.weight_decay, *self._corrected(t))

    def _apply(self, ops, w, g, bufs, wd, tmp, sc=None):
        if sc is not None:
            ops.adam_dev(w, bufs[0], bufs[1], g, sc, self.beta1, self.beta2, wd, self.decoupled, tmp)
            return
        step, eps = self._corrected(self.t)
        ops.adam_(w, bufs[0], bufs[1], g, self.lr, self.beta1, self.beta2, eps, step, wd,
                  self.decoupled, tmp)


class AdamW(Adam):
    name = "adamw"
    decoupled = True


OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (GD, SGD, Momentum, Nesterov, Adam, AdamW)
}


def make_optimizer(name: str, lr: float, weight_decay: float = 0.0, **kwargs) -> Optimizer:
    """An optimizer by name (see the module docstring)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](lr=lr, weight_decay=weight_decay, **kwargs)


# ----- learning-rate schedules: epoch (0-based) -> learning rate ---------------------------

def make_schedule(name: str, lr: float, epochs: int, *, step_size: int = 10, gamma: float = 0.1,
                  min_lr: float = 0.0, warmup: int = 0) -> Callable[[int], float]:
    """``constant``, ``step`` (x gamma every ``step_size`` epochs) or ``cosine`` (half a cosine
    from ``lr`` down towards ``min_lr``, which it would reach one epoch after the last, so the
    last epoch still learns), each with an optional linear warm-up over ``warmup`` epochs."""
    if name == "constant":
        base = lambda e: lr  # noqa: E731
    elif name == "step":
        if step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        base = lambda e: lr * gamma ** (e // step_size)  # noqa: E731
    elif name == "cosine":
        span = max(epochs - warmup, 1)
        base = lambda e: min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(e - warmup, span) / span))  # noqa: E731
    else:
        raise ValueError(f"unknown schedule {name!r}; choose from constant, step, cosine")
    if warmup > 0:
        return lambda e: lr * (e + 1) / warmup if e < warmup else base(e)
    return base


SCHEDULES = ("constant", "step", "cosine")
