r"""Activations, losses and their gradients: pure Array-API code on a namespace ``xp``.

Conventions (the paper's, transposed so that samples are rows):

* a layer computes :math:`z = a_{prev} W + b` and :math:`a = f(z)`;
* an activation's *backward* maps :math:`\partial L/\partial a` to
  :math:`\partial L/\partial z`. For elementwise activations that is
  :math:`\partial L/\partial a \odot f'(z)`, and each derivative is written in terms
  of the activation's output ``a`` (as scikit-learn does), so the forward pass need
  not keep ``z``: :math:`\sigma' = a(1-a)`, :math:`\tanh' = 1-a^2`,
  :math:`\mathrm{relu}' = [a>0]`. Softmax is not elementwise; its backward is the
  Jacobian-vector product :math:`a \odot (g - \sum_k g_k a_k)`.
* losses are means over the samples (rows). ``"mse"`` is the paper's equation (15),
  :math:`L = \frac{1}{2n}\sum_i \lVert a_i - y_i\rVert^2`, whose gradient
  :math:`(a-y)/n` is exactly the printed code's ``dz3 = (a3 - y)·σ'(z3)`` (before its
  division). ``"cross_entropy"`` is :math:`-\frac1n\sum_i y_i\cdot\log\mathrm{softmax}(z_i)`.

Nothing here imports an array library; every function takes ``xp``.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

LEAKY_SLOPE = 0.01


# ----- activations -------------------------------------------------------------------

def identity(z, xp):
    return z


def relu(z, xp):
    return xp.where(z > 0, z, 0.0)


def leaky_relu(z, xp):
    return xp.where(z > 0, z, LEAKY_SLOPE * z)


def tanh(z, xp):
    return xp.tanh(z)


def sigmoid(z, xp):
    # Overflow-safe: exp only ever sees non-positive arguments.
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softmax(z, xp):
    e = xp.exp(z - xp.max(z, axis=1, keepdims=True))
    return e / xp.sum(e, axis=1, keepdims=True)


def log_softmax(z, xp):
    shifted = z - xp.max(z, axis=1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))


# ----- derivatives f'(z), written with the activation's output a = f(z) ----------------

def identity_derivative(a, xp):
    return xp.ones_like(a)


def relu_derivative(a, xp):
    # The subgradient at 0 is taken as 0, like the paper's np.where(x > 0, 1, 0).
    return xp.astype(a > 0, a.dtype)


def leaky_relu_derivative(a, xp):
    return xp.where(a > 0, xp.ones_like(a), LEAKY_SLOPE)


def tanh_derivative(a, xp):
    return 1.0 - a * a


def sigmoid_derivative(a, xp):
    return a * (1.0 - a)


def softmax_backward(grad_a, a, xp):
    """dL/dz for a = softmax(z): the Jacobian-vector product, row by row."""
    return a * (grad_a - xp.sum(grad_a * a, axis=1, keepdims=True))


ACTIVATIONS: dict[str, Callable] = {
    "identity": identity, "relu": relu, "leaky_relu": leaky_relu,
    "tanh": tanh, "sigmoid": sigmoid, "softmax": softmax,
}
DERIVATIVES: dict[str, Callable] = {
    "identity": identity_derivative, "relu": relu_derivative,
    "leaky_relu": leaky_relu_derivative, "tanh": tanh_derivative,
    "sigmoid": sigmoid_derivative,
}
HIDDEN_ACTIVATIONS = tuple(DERIVATIVES)  # softmax only as an output


def activation_backward(name: str, grad_a, a, xp):
    """dL/dz from dL/da for activation ``name`` with output ``a``."""
    if name == "softmax":
        return softmax_backward(grad_a, a, xp)
    if name == "relu":  # a mask, no multiply by a 0/1 array (and +0.0 where the mask is off)
        return xp.where(a > 0, grad_a, 0.0)
    return grad_a * DERIVATIVES[name](a, xp)


# ----- losses --------------------------------------------------------------------------

def mse(z, a, y, xp):
    """The paper's eq. (15): (1/2n) * sum of squared errors over samples and classes."""
    d = a - y
    return xp.sum(d * d) / (2 * a.shape[0])


def mse_grad(z, a, y, xp):
    """dL/da for :func:`mse`: (a - y) / n."""
    return (a - y) / a.shape[0]


def cross_entropy(z, a, y, xp):
    """Mean categorical cross-entropy, computed from the logits z for stability."""
    return -xp.sum(y * log_softmax(z, xp)) / z.shape[0]


def cross_entropy_from_lse(z, lse, y, xp):
    """:func:`cross_entropy` given the rows' log-sum-exp of ``z`` (kept by the forward pass)."""
    return -xp.sum(y * (z - lse)) / z.shape[0]


def cross_entropy_grad(z, a, y, xp):
    """dL/da for cross-entropy on probabilities a (only used off the fused path)."""
    return -y / (xp.clip(a, 1e-12, None) * a.shape[0])


class Loss(NamedTuple):
    value: Callable
    grad: Callable


LOSSES: dict[str, Loss] = {
    "mse": Loss(mse, mse_grad),
    "cross_entropy": Loss(cross_entropy, cross_entropy_grad),
}

# Output/loss pairs whose dL/dz collapses to (a - y)/n: softmax with cross-entropy is
# the canonical link (the log cancels the softmax's exponentials), so the fused form is
# both cheaper and exact where the chained form would divide by tiny probabilities.
FUSED = {("softmax", "cross_entropy")}


def output_delta(output: str, loss: str, z, a, y, xp, normalizer=None):
    """dL/dz at the output layer.

    ``normalizer`` replaces the sample count n in the loss's mean (the paper's printed
    code divides by the feature count instead: see :mod:`mlp_backend.training.presets`).
    """
    n = a.shape[0]
    if (output, loss) in FUSED:
        return (a - y) * (1.0 / (n if normalizer is None else normalizer))
    delta = activation_backward(output, LOSSES[loss].grad(z, a, y, xp), a, xp)
    if normalizer is not None and normalizer != n:
        delta = delta * (n / normalizer)
    return delta


def one_hot(labels, n_classes: int, dtype, xp, device):
    """Integer labels (n,) -> one-hot (n, n_classes) of ``dtype``, built on the device."""
    classes = xp.arange(n_classes, device=device)
    return xp.astype(xp.astype(labels, classes.dtype)[:, None] == classes[None, :], dtype)


def accuracy_count(a, labels, xp):
    """Number of rows whose argmax equals the label (a 0-d device array; no host sync)."""
    return count_equal(xp.argmax(a, axis=1), labels, xp)


def count_equal(pred, labels, xp):
    """Number of positions where the predicted class equals the label (0-d, int64)."""
    return xp.sum(xp.astype(pred == xp.astype(labels, pred.dtype), xp.int64))


def check_names(activations, output: str, loss: str) -> None:
    """Raise ValueError naming the bad choice and the valid ones."""
    for name in activations:
        if name not in HIDDEN_ACTIVATIONS:
            raise ValueError(f"unknown hidden activation {name!r}; choose from {', '.join(HIDDEN_ACTIVATIONS)}"
                             + (" (softmax is only an output activation)" if name == "softmax" else ""))
    if output not in ACTIVATIONS:
        raise ValueError(f"unknown output activation {output!r}; choose from {', '.join(ACTIVATIONS)}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
    if loss == "cross_entropy" and output != "softmax":
        raise ValueError(f"loss 'cross_entropy' needs output='softmax' (got {output!r}); "
                         "use --output softmax, or --loss mse for sigmoid outputs as in the paper")
