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

from . import functional as F
from .backend import get_backend, to_numpy
from .init import initialize


class Cache(NamedTuple):
    """What the backward pass needs: every layer's output (``a[0]`` is the input) and the
    output layer's pre-activation ``z_out`` (for losses computed from logits)."""
    a: list
    z_out: object

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
    device : a device string or :class:`~mlp_backend.backend.Backend`.
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
        return self

    def astype(self, dtype: str) -> "MLP":
        """Cast the parameters to ``float32`` or ``float64`` (in place; returns self)."""
        self.dtype_name, self.dtype = dtype, self.backend.dtype(dtype)
        self.params = {k: self.xp.astype(v, self.dtype) for k, v in self.params.items()}
        return self

    def host_params(self) -> dict:
        """The parameters as host NumPy arrays (a host sync)."""
        return {k: self.backend.to_numpy(v) for k, v in self.params.items()}

    def __repr__(self) -> str:
        return (f"MLP({'-'.join(map(str, self.sizes))}, activations={list(self.activations)}, "
                f"output={self.output!r}, loss={self.loss_name!r}, dtype={self.dtype_name!r}, "
                f"device={self.backend.label!r})")

    # ----- the maths ------------------------------------------------------------------
    def forward(self, x) -> Cache:
        """Run the network on rows ``x`` (n, sizes[0]); keep what backward needs."""
        xp, a = self.xp, [x]
        z = x
        for i in range(1, self.n_layers + 1):
            z = a[-1] @ self.params[f"w{i}"] + self.params[f"b{i}"]
            act = self.activations[i - 1] if i < self.n_layers else self.output
            a.append(F.ACTIVATIONS[act](z, xp))
        return Cache(a, z)

    def targets(self, y):
        """Integer labels (n,) -> one-hot rows of the model's dtype; 2-D targets pass through."""
        if y.ndim == 1:
            return F.one_hot(y, self.sizes[-1], self.dtype, self.xp, self.backend.device)
        return y

    def loss(self, cache: Cache, y):
        """The mean loss for targets ``y`` (labels or one-hot) as a 0-d device array."""
        return F.LOSSES[self.loss_name].value(cache.z_out, cache.output, self.targets(y), self.xp)

    def backward(self, cache: Cache, y, normalizer=None) -> dict:
        """Every gradient ``{'w1': dL/dw1, 'b1': dL/db1, ...}`` for targets ``y``.

        ``normalizer`` replaces the sample count in the mean (see :func:`functional.output_delta`).
        """
        xp, grads = self.xp, {}
        delta = F.output_delta(self.output, self.loss_name, cache.z_out, cache.output,
                               self.targets(y), xp, normalizer)
        for i in range(self.n_layers, 0, -1):
            grads[f"w{i}"] = xp.matrix_transpose(cache.a[i - 1]) @ delta
            grads[f"b{i}"] = xp.sum(delta, axis=0)
            if i > 1:
                grad_a = delta @ xp.matrix_transpose(self.params[f"w{i}"])
                delta = F.activation_backward(self.activations[i - 2], grad_a, cache.a[i - 1], xp)
        return grads

    def loss_and_grads(self, x, y, normalizer=None):
        """(loss, grads, cache) for one batch: forward, loss, backward."""
        cache = self.forward(x)
        return self.loss(cache, y), self.backward(cache, y, normalizer), cache

    # ----- inference ------------------------------------------------------------------
    def predict_proba(self, x):
        """The output layer's activations for rows ``x`` (on the model's device)."""
        return self.forward(x).output

    def predict(self, x):
        """The predicted class of each row (argmax of the output)."""
        return self.xp.argmax(self.predict_proba(x), axis=1)
