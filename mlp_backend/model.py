r"""The multilayer perceptron: parameters, forward pass, backward pass. Any depth.

Samples are rows. With :math:`a_0 = x` and layers :math:`l = 1..L`:

.. math::
    z_l = a_{l-1} W_l + b_l, \qquad a_l = f_l(z_l)

and backpropagation, from :math:`\delta_L = \partial L/\partial z_L` down:

.. math::
    \frac{\partial L}{\partial W_l} = a_{l-1}^\top \delta_l, \qquad
    \frac{\partial L}{\partial b_l} = \textstyle\sum_i \delta_{l,i}, \qquad
    \delta_{l-1} = (\delta_l W_l^\top) \odot f_{l-1}'(z_{l-1}).

These are the paper's equations (8)-(27) with every matrix transposed (the paper keeps
samples as columns: :math:`Z_1 = W_1^\top X + b_1`). Parameters keep the paper's names
and shapes: ``w1`` is (784, hidden1), ``b1`` is (hidden1,).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

from mlp_backend import functional as F
from mlp_backend.backends import FlatDict, flat_layout, get_backend, ops_for, to_numpy
from mlp_backend.init import initialize
from mlp_backend.backends.placement import check_device


class Cache(NamedTuple):
    """What the backward pass needs: every layer's output (``a[0]`` is the input) and the
    output layer's pre-activation ``z_out`` (for losses computed from logits). ``lse`` is
    the per-row log-sum-exp of ``z_out`` when the output is softmax, so the
    cross-entropy needs no second pass of exponentials."""
    a: list
    z_out: object
    lse: object = None

    @property
    def output(self):
        return self.a[-1]


class MLP:
    """A fully connected network ``sizes[0] -> ... -> sizes[-1]``.

    Parameters
    ----------
    sizes : widths of every layer, input first, e.g. ``(784, 100, 40, 10)``.
    activations : one name per hidden layer, or one name for all of them
        (relu, leaky_relu, tanh, sigmoid, identity).
    output : output activation (softmax, sigmoid, identity, ...).
    loss : ``cross_entropy`` (needs softmax) or ``mse`` (the paper's).
    init : initialiser name (:mod:`mlp_backend.init`).
    dtype : ``float32`` (default) or ``float64``.
    device : a device string or :class:`~mlp_backend.backends.Backend`.
    seed : int or ``numpy.random.Generator`` for the initial weights.
    params : host or device arrays to use instead of drawing new ones.
    """

    def __init__(self, sizes: Sequence[int], activations="relu", output: str = "softmax",
                 loss: str = "cross_entropy", init: str = "he", dtype: str = "float32",
                 device=None, seed=0, params: dict | None = None):
        self.sizes = tuple(int(s) for s in sizes)
        n_hidden = len(self.sizes) - 2
        if n_hidden < 0:
            raise ValueError(f"sizes needs at least an input and an output width, got {list(sizes)}")
        if isinstance(activations, str):
            activations = [activations] * n_hidden
        self.activations = tuple(activations)
        if len(self.activations) != n_hidden:
            raise ValueError(f"{len(self.activations)} activations given for {n_hidden} hidden layers "
                             f"(sizes {list(self.sizes)}): give one per hidden layer, or one for all")
        F.check_names(self.activations, output, loss)
        self.output, self.loss_name, self.init, self.dtype_name = output, loss, init, dtype
        self.backend = get_backend(device)
        self.dtype = self.backend.dtype(dtype)
        host = params if params is not None else initialize(self.sizes, init, seed)
        self.params = {k: self._place(v) for k, v in host.items()}
        self._check_shapes()
        self.flat_params()

    # ----- housekeeping ---------------------------------------------------------------
    @property
    def xp(self):
        return self.backend.xp

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def _place(self, v):
        """A private copy of ``v`` on this model's device and dtype (cast on the host if moved)."""
        if self.backend.owns(v):
            return self.xp.astype(v, self.dtype, copy=True)
        return self.backend.asarray(to_numpy(v), self.dtype_name)

    def _check_shapes(self):
        for i, (fi, fo) in enumerate(zip(self.sizes[:-1], self.sizes[1:]), start=1):
            w, b = self.params.get(f"w{i}"), self.params.get(f"b{i}")
            if w is None or b is None or tuple(w.shape) != (fi, fo) or tuple(b.shape) != (fo,):
                raise ValueError(f"parameters for layer {i} must be w{i} {(fi, fo)} and b{i} {(fo,)}, got "
                                 f"{None if w is None else tuple(w.shape)} and {None if b is None else tuple(b.shape)}")

    def config(self) -> dict:
        """Everything needed to rebuild this architecture (JSON-serialisable)."""
        return {"sizes": list(self.sizes), "activations": list(self.activations), "output": self.output,
                "loss": self.loss_name, "init": self.init, "dtype": self.dtype_name}

    def to(self, device) -> "MLP":
        """Move the parameters to another device (in place; returns self)."""
        self.backend = get_backend(device)
        self.dtype = self.backend.dtype(self.dtype_name)
        self.params = {k: self._place(v) for k, v in self.params.items()}
        self.flat_params()
        return self

    def astype(self, dtype: str) -> "MLP":
        """Cast the parameters to ``float32`` or ``float64`` (in place; returns self)."""
        self.dtype_name, self.dtype = dtype, self.backend.dtype(dtype)
        self.params = {k: self.xp.astype(v, self.dtype) for k, v in self.params.items()}
        self.flat_params()
        return self

    def host_params(self) -> dict:
        """The parameters as host NumPy arrays (a host sync)."""
        return {k: self.backend.to_numpy(v) for k, v in self.params.items()}

    def __repr__(self) -> str:
        return (f"MLP({'-'.join(map(str, self.sizes))}, activations={list(self.activations)}, "
                f"output={self.output!r}, loss={self.loss_name!r}, dtype={self.dtype_name!r}, "
                f"device={self.backend.label!r})")

    # ----- buffers for the training loop's fast path ---------------------------------
    def flat_params(self):
        """Where the backend reuses buffers, make ``params`` a :class:`FlatDict`: every
        weight and bias a view into one flat buffer, so the optimizer updates them all in
        a few calls. Parameters replaced since (``model.params = ...``, ``params[k] = ...``,
        :meth:`to`, :meth:`astype`, a checkpoint, early stopping's restore) are copied
        into a new flat buffer here; the training loop calls this before every step.
        Returns ``params``."""
        p = self.params
        if getattr(p, "flat", None) is not None or not self.ops.reuses_buffers:
            return p
        layout = flat_layout({k: v.shape for k, v in p.items()})
        self.params = self.ops.pack(layout, self.dtype, self.backend.device, p, order=list(p))
        return self.params

    def bind_params(self):
        """The parameters as the buffers a training step updates in place, which stay put
        from call to call (so a captured CUDA graph that updates them stays valid): where
        the kernels reuse buffers, views of one flat buffer, into which parameters assigned
        since the last call (``model.params = ...``, a checkpoint, early stopping's restore)
        are copied. Elsewhere the parameter dict itself. Returns ``params``."""
        p = self.params
        if not self.ops.reuses_buffers:
            return p
        old = self.__dict__.get("_bound")  # (the dict, its views, their flat buffer)
        if old is not None and p is old[0] and p.flat is not None:
            return p
        layout = flat_layout({k: v.shape for k, v in p.items()})
        if old is None or old[0].layout != layout or old[2].dtype != self.dtype or not self.backend.owns(old[2]):
            p = self.flat_params()
        else:
            for k, v in old[1].items():
                if p[k] is not v:
                    self.ops.copy_(v, p[k])
            p = self.params = FlatDict(old[1], old[2], layout)
        self._bound = (p, dict(p), p.flat)
        return p

    @property
    def ops(self):
        """The backend's kernels (:mod:`mlp_backend.backends`): buffer-reusing on NumPy,
        fused on CuPy, plain Array-API expressions elsewhere."""
        return ops_for(self.xp)

    def workspace(self, n: int) -> "Workspace | None":
        """Preallocated activation/gradient buffers for batches of ``n`` rows, or None where
        the backend allocates anyway. The training step passes one to :meth:`forward` and
        :meth:`backward`, so a step allocates nothing; results then live in these buffers
        until the next step."""
        if not self.ops.reuses_buffers:
            return None
        key = (n, self.backend.label, self.dtype_name)
        cache = self.__dict__.setdefault("_workspaces", {})
        ws = cache.get(key)
        if ws is None:
            if len(cache) > 4:
                cache.clear()
            ws = cache[key] = Workspace(self, n)
        return ws

    # ----- the maths ------------------------------------------------------------------
    def forward(self, x, workspace=None, ops=None) -> Cache:
        """Run the network on rows ``x`` (n, sizes[0]); keep what backward needs.

        ``ops`` replaces the backend's kernels (the epoch runner passes its graph-ready ones).
        ``x`` must be on the model's device: this and the other low-level methods never
        move data, and raise :class:`~mlp_backend.backends.placement.DeviceMismatchError` naming
        both devices otherwise (``Trainer.fit``, ``evaluate`` and the estimator copy host
        arrays for you)."""
        check_device(self.backend, x, "x")
        ops, ws, a = ops or self.ops, workspace, [x]
        z, lse, last = x, None, self.n_layers
        for i in range(1, last + 1):
            w, b = self.params[f"w{i}"], self.params[f"b{i}"]
            out = ws.z[i] if ws is not None else None
            act = self.activations[i - 1] if i < last else self.output
            if act == "relu" and i < last:  # hidden relu: bias and activation in place
                a.append(ops.linear_relu(a[-1], w, b, out))
                continue
            if i < last:  # other hidden activations: one fused kernel where the ops have one
                a.append(ops.linear_act(a[-1], w, b, act, out))
                continue
            z = ops.linear(a[-1], w, b, out)
            if act == "softmax":
                p, lse = ops.softmax(z, ws.p if ws is not None else None, ws.rows if ws is not None else None)
                a.append(p)
            else:
                a.append(ops.activation(act, z, out))
        return Cache(a, z, lse)

    def targets(self, y):
        """Integer labels (n,) -> one-hot rows of the model's dtype; 2-D targets pass through.
        ``y`` must be on the model's device (see :meth:`forward`)."""
        check_device(self.backend, y, "y")
        if y.ndim == 1:
            return F.one_hot(y, self.sizes[-1], self.dtype, self.xp, self.backend.device)
        return y

    def loss(self, cache: Cache, y):
        """The mean loss for targets ``y`` (labels or one-hot) as a 0-d device array."""
        return self.ops.loss_value(self.loss_name, cache.z_out, cache.lse, cache.output, self.targets(y))

    def loss_sum_(self, cache: Cache, y, acc, workspace=None, ops=None):
        """``acc += loss * rows`` in place for targets ``y`` (the epoch runner's loss sum:
        the same value as ``loss(cache, y) * rows``, without a new array where the kernels
        reuse buffers)."""
        ops, ws = ops or self.ops, workspace
        return ops.loss_sum_(self.loss_name, cache.z_out, cache.lse, cache.output, self.targets(y), acc,
                             ws.loss_tmp if ws is not None else None, ws.scalar if ws is not None else None)

    def backward(self, cache: Cache, y, normalizer=None, workspace=None, ops=None) -> dict:
        """Every gradient ``{'w1': dL/dw1, 'b1': dL/db1, ...}`` for targets ``y``.

        ``normalizer`` replaces the sample count in the mean (see :func:`functional.output_delta`).
        """
        ops, ws, grads = ops or self.ops, workspace, {}
        a, last = cache.a, self.n_layers
        if (self.output, self.loss_name) in F.FUSED:  # dL/dz = (a - y) / n, in one kernel
            scale = 1.0 / (a[-1].shape[0] if normalizer is None else normalizer)
            delta = ops.sub_scaled(a[-1], self.targets(y), scale, ws.delta[last] if ws is not None else None)
        else:
            delta = ops.output_delta(self.output, self.loss_name, cache.z_out, a[-1], self.targets(y),
                                     normalizer, ws.delta[last] if ws is not None else None)
        for i in range(last, 0, -1):
            grads[f"w{i}"] = ops.matmul_tn(a[i - 1], delta, ws.gw[i] if ws is not None else None)
            grads[f"b{i}"] = ops.sum_rows(delta, ws.gb[i] if ws is not None else None)
            if i > 1:
                grad_a = ops.matmul_nt(delta, self.params[f"w{i}"], ws.delta[i - 1] if ws is not None else None)
                act = self.activations[i - 2]
                if act == "relu":  # a mask, in place where buffers are reused
                    delta = ops.relu_backward(grad_a, a[i - 1], grad_a if ws is not None else None,
                                              ws.mask[i - 1] if ws is not None else None)
                else:
                    delta = ops.activation_backward(act, grad_a, a[i - 1], grad_a if ws is not None else None)
        return grads if ws is None else ws.flat_grads()

    def loss_and_grads(self, x, y, normalizer=None):
        """(loss, grads, cache) for one batch: forward, loss, backward, in fresh arrays."""
        cache = self.forward(x)
        return self.loss(cache, y), self.backward(cache, y, normalizer), cache

    # ----- inference ------------------------------------------------------------------
    def predict_proba(self, x):
        """The output layer's activations for rows ``x`` (on the model's device)."""
        return self.forward(x).output

    def predict(self, x):
        """The predicted class of each row (argmax of the output)."""
        return self.xp.argmax(self.predict_proba(x), axis=1)


class Workspace:
    """Buffers for one batch size: per layer ``z`` (pre-activations; hidden relu layers
    keep their activations there, in place), ``delta`` (dL/dz), ``mask`` (relu masks),
    ``gw``/``gb`` (gradients), plus the softmax output ``p``, two (n, 1) row buffers and
    the loss's scratch (``loss_tmp`` like the output, ``scalar`` 0-d)."""

    def __init__(self, model: MLP, n: int):
        ops, dt, dev = model.ops, model.dtype, model.backend.device
        sizes, last = model.sizes, model.n_layers
        self.z = {i: ops.empty((n, sizes[i]), dt, dev) for i in range(1, last + 1)}
        self.delta = {i: ops.empty((n, sizes[i]), dt, dev) for i in range(1, last + 1)}
        self.mask = {i: ops.empty((n, sizes[i]), model.xp.bool, dev) for i in range(1, last)}
        # the gradients: views into one flat buffer laid out like the parameters' (FlatDict)
        shapes = {}
        for i in range(1, last + 1):
            shapes[f"w{i}"], shapes[f"b{i}"] = (sizes[i - 1], sizes[i]), (sizes[i],)
        self.grads = ops.pack(flat_layout(shapes), dt, dev, order=list(shapes))
        self._grad_views, self._grad_flat = dict(self.grads), self.grads.flat
        self.gw = {i: self.grads[f"w{i}"] for i in range(1, last + 1)}
        self.gb = {i: self.grads[f"b{i}"] for i in range(1, last + 1)}
        self.p = ops.empty((n, sizes[-1]), dt, dev)
        self.rows = (ops.empty((n, 1), dt, dev), ops.empty((n, 1), dt, dev))
        self.loss_tmp, self.scalar = ops.empty((n, sizes[-1]), dt, dev), ops.empty((), dt, dev)

    def flat_grads(self) -> FlatDict:
        """The gradients written by the last backward pass, as views of one flat buffer
        (rebuilt if a caller replaced entries of the dict handed out before)."""
        g = self.grads
        if g.flat is None:
            g = self.grads = FlatDict(self._grad_views, self._grad_flat, g.layout)
        return g
