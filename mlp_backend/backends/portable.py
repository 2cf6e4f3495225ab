"""Reference kernels: every primitive the maths modules call, as plain Array-API expressions.

The maths modules call these primitives through ``ops_for(xp)``. Every primitive has
a portable Array-API definition (:class:`PortableOps`, the reference and the path of
torch and array_api_strict); :class:`BufferOps` computes the same thing into
caller-owned buffers with ``out=`` (NumPy and CuPy, which share that API), and
:class:`CupyOps` replaces the elementwise chains by fused CUDA kernels. ``out`` and
scratch arguments are hints: the portable path ignores them and allocates.
"""
from __future__ import annotations

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

    def matmul_tn(self, a, b, out=None):
        """``a.T @ b`` (no copy of the transpose)."""
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

    def activation_backward(self, name, grad_a, a, out=None):
        """dL/dz from dL/da for activation ``name`` with output ``a``
        (:func:`functional.activation_backward`; ``out`` may be ``grad_a`` itself)."""
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

    def adam_(self, w, m, v, g, lr, b1, b2, eps, step, wd=0.0, decoupled=False, tmp=None):
        """Adam with the bias corrections folded into ``step`` and ``eps`` by the caller."""
        xp = self.xp
        if decoupled:
            if wd:
                w *= 1.0 - lr * wd
        elif wd:
            g = g + wd * w
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * (g * g)
        w -= step * m / (xp.sqrt(v) + eps)
