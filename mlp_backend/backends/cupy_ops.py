"""CuPy kernels: :class:`BufferOps` with the elementwise chains fused into single CUDA kernels.

Nothing here imports CuPy at module level: :func:`~mlp_backend.backends.ops_for` passes
the ``cupy`` module in, on a machine that has it.
"""
from __future__ import annotations

from .numpy_ops import BufferOps


class CupyOps(BufferOps):
    """CuPy: :class:`BufferOps` plus fused elementwise kernels (one launch per chain).

    Kernels are compiled on first use; each mirrors a :class:`PortableOps` expression,
    and ``tests/test_fast_paths.py`` checks them against it on a GPU (``-m gpu``).
    """

    fused = True

    def __init__(self, xp, mod):
        super().__init__(xp, mod)
        self._k = {}

    def _kernel(self, name):
        k = self._k.get(name)
        if k is None:
            ek = self.m.ElementwiseKernel
            k = self._k[name] = {
                "bias_relu": lambda: ek("T b", "T z", "z = max(z + b, (T)0)", "mlpb_bias_relu"),
                "relu_bwd": lambda: ek("T g, T a", "T o", "o = a > (T)0 ? g : (T)0", "mlpb_relu_bwd"),
                "scale": lambda: ek("X x, T s", "T o", "o = (T)x * s", "mlpb_scale"),
                "sub_scaled": lambda: ek("T a, T y, T s", "T d", "d = (a - y) * s", "mlpb_sub_scaled"),
                "sgd": lambda: ek("T g, T lr, T wd", "T w", "w -= lr * (g + wd * w)", "mlpb_sgd"),
                "momentum": lambda: ek(
                    "T g, T lr, T mu, T wd, bool nesterov", "T w, T v",
                    "T gg = g + wd * w; v = mu * v + gg; w -= lr * (nesterov ? gg + mu * v : v)",
                    "mlpb_momentum"),
                "adam": lambda: ek(
                    "T g, T lr, T b1, T b2, T eps, T step, T wd, bool decoupled", "T w, T m, T v",
                    "T gg = g; if (decoupled) { w *= (T)1 - lr * wd; } else { gg = g + wd * w; } "
                    "m = b1 * m + ((T)1 - b1) * gg; v = b2 * v + ((T)1 - b2) * gg * gg; "
                    "w -= step * m / (sqrt(v) + eps)",
                    "mlpb_adam"),
            }[name]()
        return k

    @staticmethod
    def _s(value, like):
        # a host scalar of the array's dtype: passed by value to the kernel (no transfer, no sync)
        return like.dtype.type(value)

    def cast_scale(self, x, dtype, scale=None, out=None):
        if scale is None:
            return super().cast_scale(x, dtype, None, out)
        if out is None:
            out = self.m.empty(x.shape, dtype=dtype)
        return self._kernel("scale")(x, self._s(scale, out), out)

    def sum_rows(self, x, out=None):
        return self.m.sum(x, axis=0, out=out)  # one reduction kernel; no ones vector per device

    def linear_relu(self, a, w, b, out=None):
        z = self.m.matmul(a, w, out=out)
        return self._kernel("bias_relu")(b, z)

    def relu_backward(self, grad_a, a, out=None, mask=None):
        return self._kernel("relu_bwd")(grad_a, a, out) if out is not None else self._kernel("relu_bwd")(grad_a, a)

    def sub_scaled(self, a, y, scale, out=None):
        k = self._kernel("sub_scaled")
        return k(a, y, self._s(scale, a), out) if out is not None else k(a, y, self._s(scale, a))

    def sgd_(self, w, g, lr, wd=0.0, tmp=None):
        self._kernel("sgd")(g, self._s(lr, w), self._s(wd, w), w)

    def momentum_(self, w, v, g, lr, mu, wd=0.0, nesterov=False, tmp=None):
        self._kernel("momentum")(g, self._s(lr, w), self._s(mu, w), self._s(wd, w), bool(nesterov), w, v)

    def adam_(self, w, m_, v, g, lr, b1, b2, eps, step, wd=0.0, decoupled=False, tmp=None):
        s = lambda val: self._s(val, w)  # noqa: E731
        self._kernel("adam")(g, s(lr), s(b1), s(b2), s(eps), s(step), s(wd), bool(decoupled), w, m_, v)
