"""The layer kernels of one batch: what :class:`~mlp_backend.model.MLP` calls for each line of
its equations, writing into the buffers of that batch size where the kernels reuse buffers.

:class:`LayerKernels` is the bridge between the model's maths and the kernel sets
(:class:`PortableOps`, :class:`BufferOps`, :class:`CupyOps`, :class:`CupyGraphOps`): each method
is one equation of a layer, picks the fastest kernel for it (relu's in-place mask, the fused
softmax + cross-entropy delta) and hands it the batch's buffer from a :class:`Workspace`,
or none, so that it allocates. The model never sees a buffer.
"""
from __future__ import annotations

from mlp_backend import functional as F
from mlp_backend.backends.numpy_ops import FlatDict, flat_layout


class Workspace:
    """Buffers for batches of ``n`` rows of a network of layer widths ``sizes`` and hidden
    ``activations``: per layer ``z`` (pre-activations; hidden layers keep their activations
    there, in place), ``delta`` (dL/dz), ``mask`` (relu masks), ``tmp`` (the derivative's
    scratch of each hidden layer that is not relu), ``gw``/``gb`` (gradients, views of one flat
    buffer laid out like the parameters), ``gwt`` (each weight gradient's transpose, where the
    kernels compute it so: ``ops.tn_scratch``), plus the softmax output ``p``, two (n, 1) row
    buffers and the loss's scratch (``loss_tmp`` like the output, ``scalar`` 0-d)."""

    def __init__(self, ops, sizes, activations, n: int, dtype, device, bool_dtype):
        last = len(sizes) - 1
        self.z = {i: ops.empty((n, sizes[i]), dtype, device) for i in range(1, last + 1)}
        self.delta = {i: ops.empty((n, sizes[i]), dtype, device) for i in range(1, last + 1)}
        self.mask = {i: ops.empty((n, sizes[i]), bool_dtype, device) for i in range(1, last)}
        self.tmp = {i: ops.empty((n, sizes[i]), dtype, device) for i in range(1, last) if activations[i - 1] != "relu"}
        self.gwt = ({i: ops.empty((sizes[i], sizes[i - 1]), dtype, device) for i in range(1, last + 1)}
                    if ops.tn_scratch else {})
        shapes = {}
        for i in range(1, last + 1):
            shapes[f"w{i}"], shapes[f"b{i}"] = (sizes[i - 1], sizes[i]), (sizes[i],)
        self.grads = ops.pack(flat_layout(shapes), dtype, device, order=list(shapes))
        self._grad_views, self._grad_flat = dict(self.grads), self.grads.flat
        self.gw = {i: self.grads[f"w{i}"] for i in range(1, last + 1)}
        self.gb = {i: self.grads[f"b{i}"] for i in range(1, last + 1)}
        self.p = ops.empty((n, sizes[-1]), dtype, device)
        self.rows = (ops.empty((n, 1), dtype, device), ops.empty((n, 1), dtype, device))
        self.loss_tmp, self.scalar = ops.empty((n, sizes[-1]), dtype, device), ops.empty((), dtype, device)

    def flat_grads(self) -> FlatDict:
        """The gradients written by the last backward pass, as views of one flat buffer
        (rebuilt if a caller replaced entries of the dict handed out before)."""
        g = self.grads
        if g.flat is None:
            g = self.grads = FlatDict(self._grad_views, self._grad_flat, g.layout)
        return g


class _NoBuffers:
    """The workspace of kernels that allocate: every buffer is None."""

    class _Nones(dict):
        def __missing__(self, key):
            return None

    z = delta = mask = tmp = gw = gwt = gb = _Nones()
    p = rows = loss_tmp = scalar = None


NO_BUFFERS = _NoBuffers()


class LayerKernels:
    """The equations of one layer, each as the best kernel of ``ops`` over ``ws``'s buffers
    (:data:`NO_BUFFERS`: fresh arrays). Layer ``l`` of the methods is 1-based, as in the
    model's equations."""

    def __init__(self, ops, ws: "Workspace | None" = None):
        self.ops, self.ws = ops, ws if ws is not None else NO_BUFFERS

    # ----- forward ----------------------------------------------------------------------
    def hidden(self, l, a, w, b, act):
        """:math:`a_l = f_l(a_{l-1} W_l + b_l)` for a hidden layer (in place of :math:`z_l`)."""
        if act == "relu":  # bias and max(z, 0) in place
            return self.ops.linear_relu(a, w, b, self.ws.z[l])
        return self.ops.linear_act(a, w, b, act, self.ws.z[l])

    def affine(self, l, a, w, b):
        """:math:`z_l = a_{l-1} W_l + b_l` (the output layer keeps its pre-activation)."""
        return self.ops.linear(a, w, b, self.ws.z[l])

    def output(self, l, act, z):
        """(:math:`a_L = f_L(z_L)`, the rows' log-sum-exp of :math:`z_L` for softmax, else None)."""
        if act == "softmax":
            return self.ops.softmax(z, self.ws.p, self.ws.rows)
        return self.ops.activation(act, z, self.ws.z[l]), None

    # ----- loss ---------------------------------------------------------------------------
    def loss_sum_(self, loss, z, lse, a, t, acc):
        """``acc += loss * rows`` in place (the same value as the mean loss times the rows)."""
        return self.ops.loss_sum_(loss, z, lse, a, t, acc, self.ws.loss_tmp, self.ws.scalar)

    # ----- backward -----------------------------------------------------------------------
    def output_delta(self, output, loss, z, a, t, normalizer, l):
        r""":math:`\delta_L = \partial L/\partial z_L` (:func:`functional.output_delta`)."""
        if (output, loss) in F.FUSED:  # (a - t) * (1 / n) in one kernel, as functional.output_delta
            n = a.shape[0] if normalizer is None else normalizer
            return self.ops.sub_scaled(a, t, 1.0 / n, self.ws.delta[l])
        return self.ops.output_delta(output, loss, z, a, t, normalizer, self.ws.delta[l])

    def grad_w(self, l, a, delta):
        r""":math:`\partial L/\partial W_l = a_{l-1}^\top \delta_l`."""
        return self.ops.matmul_tn(a, delta, self.ws.gw[l], self.ws.gwt.get(l))

    def grad_b(self, l, delta):
        r""":math:`\partial L/\partial b_l = \sum_i \delta_{l,i}`."""
        return self.ops.sum_rows(delta, self.ws.gb[l])

    def back(self, l, delta, w, a, act):
        r""":math:`\delta_l = (\delta_{l+1} W_{l+1}^\top) \odot f_l'(a_l)` (in place of the product)."""
        g = self.ops.matmul_nt(delta, w, self.ws.delta[l])
        out = g if self.ws is not NO_BUFFERS else None
        if act == "relu":  # a mask
            return self.ops.relu_backward(g, a, out, self.ws.mask[l])
        return self.ops.activation_backward(act, g, a, out, self.ws.tmp.get(l))

    def gradients(self, grads: dict) -> dict:
        """The gradients as handed to the optimizer: views of one flat buffer where buffered."""
        return grads if self.ws is NO_BUFFERS else self.ws.flat_grads()
