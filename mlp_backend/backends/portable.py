"""Reference kernels: every primitive the maths modules call, as plain Array-API expressions.

The maths modules call these primitives through ``ops_for(xp)``. Every primitive has
a portable Array-API definition (:class:`PortableOps`, the reference and the path of
torch and array_api_strict); :class:`BufferOps` computes the same thing into
caller-owned buffers with ``out=`` (NumPy and CuPy, which share that API), and
:class:`CupyOps` replaces the elementwise chains by fused CUDA kernels. ``out`` and
scratch arguments are hints: the portable path ignores them and allocates.
"""
from __future__ import annotations

import array_api_compat
import numpy as np  # host side only: what copy_in sends is a host array

from mlp_backend import functional as F  # pure Array-API maths: imports no array library


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

    def gather_cast_scale(self, x, idx, dtype, scale=None, tmp=None, out=None):
        """``cast_scale(gather_rows(x, idx))``: a batch of rows as floats (``tmp`` holds the
        gathered raw rows)."""
        return self.cast_scale(self.gather_rows(x, idx, tmp), dtype, scale, out)

    def copy_in(self, dst, host):
        """``dst`` (a device buffer) filled from the host array or sequence ``host``, cast on
        the host to ``dst``'s dtype; returns ``dst`` (no sync, no new device buffer where the
        kernels reuse buffers)."""
        xp = self.xp
        name = next(n for n in ("float32", "float64", "int64", "int32") if dst.dtype == getattr(xp, n))
        h = np.asarray(host, dtype=name)
        dst[...] = xp.asarray(h, device=array_api_compat.device(dst))
        return dst

    def device_of(self, x):
        """The device ``x`` lives on."""
        return array_api_compat.device(x)

    def same_device(self, a, b) -> bool:
        """Whether ``a`` and ``b`` live on one device."""
        return str(array_api_compat.device(a)) == str(array_api_compat.device(b))

    def copy_(self, dst, src):
        """``dst[...] = src`` for two device arrays of one shape; returns ``dst``."""
        dst[...] = src
        return dst

    def fill_(self, x, value):
        """Every element of ``x`` set to ``value``, in place; returns ``x``."""
        x[...] = value
        return x

    def argmax_into(self, a, preds, start):
        """Each row's class (argmax of ``a``) written into ``preds[start:start + rows]``;
        returns ``preds``."""
        preds[start:start + a.shape[0]] = self.xp.argmax(a, axis=1)
        return preds

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

    tn_scratch = False  # True where matmul_tn wants ``tmp``: a (b.shape[1], a.shape[1]) buffer

    def matmul_tn(self, a, b, out=None, tmp=None):
        """``a.T @ b`` (no copy of the transpose; ``tmp`` is scratch where :attr:`tn_scratch`)."""
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

    def activation(self, name, z, out=None):
        """Activation ``name`` of ``z`` (:data:`functional.ACTIVATIONS`). The graph kernels
        apply it in place on ``z``; every other backend returns a new array."""
        return F.ACTIVATIONS[name](z, self.xp)

    def linear_act(self, a, w, b, name, out=None):
        """``activation(name, a @ w + b)`` for a hidden layer (its pre-activation is not
        kept: the backward pass needs only the output)."""
        return self.activation(name, self.linear(a, w, b, out), out)

    def activation_backward(self, name, grad_a, a, out=None, tmp=None):
        """dL/dz from dL/da for activation ``name`` with output ``a``
        (:func:`functional.activation_backward`; ``out`` may be ``grad_a`` itself; ``tmp``,
        like ``a``, is scratch where buffers are honoured)."""
        return F.activation_backward(name, grad_a, a, self.xp)

    def output_delta(self, output, loss, z, a, y, normalizer=None, out=None):
        """dL/dz at the output layer for pairs without the fused (a - y)/n form
        (:func:`functional.output_delta`)."""
        return F.output_delta(output, loss, z, a, y, self.xp, normalizer)

    def loss_value(self, loss, z, lse, a, y):
        """The batch's mean loss as a 0-d array: from the log-sum-exp for cross-entropy
        when the forward pass kept it, else :data:`functional.LOSSES`."""
        if loss == "cross_entropy" and lse is not None:
            return F.cross_entropy_from_lse(z, lse, y, self.xp)
        return F.LOSSES[loss].value(z, a, y, self.xp)

    def loss_sum_(self, loss, z, lse, a, y, acc, tmp=None, s=None):
        """``acc += mean loss * rows`` in place (the training loop's loss sum); ``tmp``
        (like ``z``) and ``s`` (0-d) are scratch where buffers are honoured."""
        acc += self.loss_value(loss, z, lse, a, y) * z.shape[0]
        return acc

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

    def adam_(self, w, m, v, g, lr, b1, b2, eps, step, wd=0.0, decoupled=False, tmp=None, decay=None):
        """Adam with the bias corrections folded into ``step`` and ``eps`` by the caller;
        ``decay`` (AdamW's ``1 - lr * wd``, computed by the caller) defaults to that product."""
        xp = self.xp
        if decoupled:
            if wd:
                w *= 1.0 - lr * wd if decay is None else decay
        elif wd:
            g = g + wd * w
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * (g * g)
        w -= step * m / (xp.sqrt(v) + eps)

    # the updates with their scalars read from a device row ``sc`` (the columns of
    # Optimizer.SCALARS: lr, decay, step, eps); (1,)-slices of it broadcast like host floats
    def sgd_dev(self, w, g, sc, wd=0.0, tmp=None):
        self.sgd_(w, g, sc[0:1], wd, tmp)

    def momentum_dev(self, w, v, g, sc, mu, wd=0.0, nesterov=False, tmp=None):
        self.momentum_(w, v, g, sc[0:1], mu, wd, nesterov, tmp)

    def adam_dev(self, w, m_, v, g, sc, b1, b2, wd=0.0, decoupled=False, tmp=None):
        self.adam_(w, m_, v, g, sc[0:1], b1, b2, sc[3:4], sc[2:3], wd, decoupled, tmp, decay=sc[1:2])
