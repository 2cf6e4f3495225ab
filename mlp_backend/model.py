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
from mlp_backend.backends import flat_layout, get_backend, ops_for, to_numpy
from mlp_backend.backends.numpy_ops import refill
from mlp_backend.backends.workspace import LayerKernels, Workspace
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
            p = self.params = refill(old, p, self.ops)
        self._bound = (p, dict(p), p.flat)
        return p

    @property
    def ops(self):
        """The backend's kernels (:mod:`mlp_backend.backends`): buffer-reusing on NumPy,
        fused on CuPy, plain Array-API expressions elsewhere."""
        return ops_for(self.xp)

    def workspace(self, n: int) -> "Workspace | None":
        """Preallocated activation/gradient buffers for batches of ``n`` rows, or None where
        the backend allocates anyway (kept per batch size)."""
        if not self.ops.reuses_buffers:
            return None
        key = (n, self.backend.label, self.dtype_name)
        cache = self.__dict__.setdefault("_workspaces", {})
        ws = cache.get(key)
        if ws is None:
            if len(cache) > 4:
                cache.clear()
            ws = cache[key] = Workspace(self.ops, self.sizes, self.activations, n, self.dtype, self.backend.device,
                                        self.xp.bool)
        return ws

    def kernels(self, n: int, ops=None) -> LayerKernels:
        """The layer kernels of a training step on batches of ``n`` rows: results written into
        this model's buffers for that batch size (where the kernels reuse buffers), so a step
        allocates nothing and its results live until the next step. ``ops`` replaces the
        backend's kernels (the CUDA-graph runner passes its capturable ones)."""
        return LayerKernels(ops or self.ops, self.workspace(n))

    # ----- the maths: the equations of the module docstring, line by line ---------------
    def forward(self, x, k: "LayerKernels | None" = None) -> Cache:
        """Run the network on rows ``x`` (n, sizes[0]); keep what backward needs.

        ``k`` (:meth:`kernels`) writes into a training step's buffers; without it every
        result is a fresh array. ``x`` must be on the model's device: this and the other
        low-level methods never move data, and raise
        :class:`~mlp_backend.backends.placement.DeviceMismatchError` naming both devices
        otherwise (``Trainer.fit``, ``evaluate`` and the estimator copy host arrays for you)."""
        check_device(self.backend, x, "x")
        k, L, W, b = k or LayerKernels(self.ops), self.n_layers, self._w, self._b
        a = [x]                                                    # a_0 = x
        for l in range(1, L):
            a.append(k.hidden(l, a[-1], W(l), b(l), self.activations[l - 1]))  # a_l = f_l(a_{l-1} W_l + b_l)
        z = k.affine(L, a[-1], W(L), b(L))                         # z_L = a_{L-1} W_L + b_L
        out, lse = k.output(L, self.output, z)                     # a_L = f_L(z_L)
        return Cache(a + [out], z, lse)

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

    def loss_sum_(self, cache: Cache, y, acc, k: "LayerKernels | None" = None):
        """``acc += loss * rows`` in place for targets ``y`` (the training step's loss sum:
        the same value as ``loss(cache, y) * rows``, without a new array where ``k`` has buffers)."""
        k = k or LayerKernels(self.ops)
        return k.loss_sum_(self.loss_name, cache.z_out, cache.lse, cache.output, self.targets(y), acc)

    def backward(self, cache: Cache, y, normalizer=None, k: "LayerKernels | None" = None) -> dict:
        """Every gradient ``{'w1': dL/dw1, 'b1': dL/db1, ...}`` for targets ``y``.

        ``normalizer`` replaces the sample count in the mean (see :func:`functional.output_delta`);
        ``k`` as for :meth:`forward`.
        """
        k, L, a, grads = k or LayerKernels(self.ops), self.n_layers, cache.a, {}
        delta = k.output_delta(self.output, self.loss_name, cache.z_out, a[L], self.targets(y), normalizer, L)
        for l in range(L, 0, -1):                                  # delta_L = dL/dz_L
            grads[f"w{l}"] = k.grad_w(l, a[l - 1], delta)          # dL/dW_l = a_{l-1}^T delta_l
            grads[f"b{l}"] = k.grad_b(l, delta)                    # dL/db_l = sum_i delta_{l,i}
            if l > 1:                                              # delta_{l-1} = (delta_l W_l^T) * f'_{l-1}(a_{l-1})
                delta = k.back(l - 1, delta, self._w(l), a[l - 1], self.activations[l - 2])
        return k.gradients(grads)

    def _w(self, l):
        return self.params[f"w{l}"]

    def _b(self, l):
        return self.params[f"b{l}"]

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

