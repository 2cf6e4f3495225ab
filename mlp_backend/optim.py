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
from mlp_backend.backends.numpy_ops import refill


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
        """Update number ``t + 1`` of every parameter in ``params`` (in place), its scalars
        from this optimizer's attributes (a host value each)."""
        self.t += 1
        self.update(params, grads, ops_for(xp))

    def update(self, params: dict, grads: dict, ops, scalars=None) -> None:
        """One update of every parameter in ``params`` (in place) from ``grads``; the step
        count :attr:`t` is the caller's to advance.

        ``scalars`` is None (the learning rate and step from this optimizer's attributes, as
        host values) or a device row of :meth:`step_scalars` in the parameters' dtype, which
        a captured CUDA graph replays with the values written before each epoch. Where
        ``params`` and ``grads`` are :class:`~mlp_backend.backends.FlatDict` views of two flat
        buffers with one layout (:meth:`bind`), the update runs on the flat buffers: one
        kernel sequence for all weights (decayed) and one for all biases. Same arithmetic
        either way; nothing is read from the device and nothing syncs."""
        pf, gf = getattr(params, "flat", None), getattr(grads, "flat", None)
        if pf is not None and gf is not None and params.layout == grads.layout and ops.reuses_buffers:
            self.bind(params, ops)  # a no-op while the state is the one bound last
            bufs = [self.state[kind].flat for kind in self.buffer_names]
            tmp, nd = self._scratch("__flat__", pf, ops), params.n_decay
            if self.weight_decay and nd:  # weights (the prefix) decayed, biases not
                self._apply(ops, pf[:nd], gf[:nd], [b[:nd] for b in bufs], self.weight_decay, tmp[:nd], scalars)
                if nd < pf.shape[0]:
                    self._apply(ops, pf[nd:], gf[nd:], [b[nd:] for b in bufs], 0.0, tmp[nd:], scalars)
            else:
                self._apply(ops, pf, gf, bufs, 0.0, tmp, scalars)
            return
        for key, g in grads.items():
            w = params[key]
            wd = self.weight_decay if key.startswith("w") else 0.0
            bufs = [self._buffer(kind, key, g, ops.xp) for kind in self.buffer_names]
            self._apply(ops, w, g, bufs, wd, self._scratch(key, w, ops), scalars)

    SCALARS = ("lr", "decay", "step", "eps")  # the columns of step_scalars / a device row

    def step_scalars(self, t: int) -> tuple:
        """The host scalars update number ``t`` (1-based) uses, as floats in :attr:`SCALARS`
        order: the learning rate, the decoupled decay factor ``1 - lr * weight_decay`` and,
        for Adam, the bias-corrected step and epsilon. Computed in float64 exactly as the
        host-scalar update computes them, so a device copy cast to the parameters' dtype
        gives bitwise the same update."""
        return (self.lr, 1.0 - self.lr * self.weight_decay, 0.0, 0.0)

    def bind(self, params, ops) -> None:
        """Lay the state out like ``params`` (a :class:`~mlp_backend.backends.FlatDict`) in
        flat buffers that stay put from call to call, so a captured CUDA graph that updates
        them stays valid: state loaded or replaced since the last call (a checkpoint) is
        copied into them, missing entries start at zero. Makes the update's scratch buffer
        too. Nothing to do where ``params`` is a plain dict (kernels without buffers)."""
        if getattr(params, "flat", None) is None or not ops.reuses_buffers:
            return
        bound = self.__dict__.setdefault("_bound", {})
        flat = params.flat
        for kind in self.buffer_names:
            st, old = self.state.get(kind), bound.get(kind)
            if old is not None and st is old[0] and st.flat is not None:
                continue  # untouched since the last bind
            mine = old is not None and old[0].layout == params.layout and old[2].dtype == flat.dtype \
                and ops.same_device(old[2], flat)
            if mine:  # what was loaded or replaced, copied into the buffers bound before
                st = refill(old, st, ops)
            else:
                st = ops.pack(params.layout, flat.dtype, ops.device_of(flat), st or None, order=list(params))
            self.state[kind] = st
            bound[kind] = (st, dict(st), st.flat)  # the dict, its views, their buffer
        self._scratch("__flat__", flat, ops)

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
        r"""$W \leftarrow W - \eta\,(g + \lambda W)$ ($\lambda$: weight decay, weights only)."""
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
        r"""With $\tilde g = g + \lambda W$: $v \leftarrow \mu v + \tilde g$, then
        $W \leftarrow W - \eta v$ (momentum) or $W \leftarrow W - \eta(\tilde g + \mu v)$ (Nesterov)."""
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
        r"""Kingma & Ba, with the bias corrections folded into two scalars (:meth:`_corrected`):

        .. math::
            m \leftarrow \beta_1 m + (1-\beta_1)\,\tilde g, \quad
            v \leftarrow \beta_2 v + (1-\beta_2)\,\tilde g^2, \quad
            W \leftarrow W - \underbrace{\frac{\eta\sqrt{1-\beta_2^t}}{1-\beta_1^t}}_{\text{step}}
                \frac{m}{\sqrt v + \underbrace{\epsilon\sqrt{1-\beta_2^t}}_{\text{eps}}}

        which is :math:`W - \eta\,\hat m/(\sqrt{\hat v} + \epsilon)` with
        :math:`\hat m = m/(1-\beta_1^t)`, :math:`\hat v = v/(1-\beta_2^t)`, in two fewer passes.
        Adam: :math:`\tilde g = g + \lambda W`; AdamW: :math:`\tilde g = g` and
        :math:`W \leftarrow (1 - \eta\lambda) W` first (decoupled decay)."""
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
