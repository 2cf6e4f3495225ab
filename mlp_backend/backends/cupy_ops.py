"""CuPy kernels: fused elementwise chains (:class:`CupyOps`) and the capturable step (:class:`CupyGraphOps`).

Nothing here imports CuPy or nvmath-python at module level: :func:`~mlp_backend.backends.ops_for`
and the epoch runner pass the ``cupy`` module in, on a machine that has it.
"""
from __future__ import annotations

import numpy as np

from mlp_backend import functional as F
from mlp_backend.backends.numpy_ops import BufferOps


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


# ---------------------------------------------------------------------------------
# The capturable step: every primitive of a training step as one kernel launch or one
# cuBLAS call, into buffers that exist before the capture, with no host scalar that
# changes between epochs. Written against the CuPy and nvmath-python sources; it has
# NOT run on a GPU yet (see docs/gpu.md).

NVMATH_FIX = ("install nvmath-python: pip install 'mlp-backend[cuda13]' (or [cuda12], matching "
              "your CUDA driver)")
# elementwise activations as (forward of z in place, f'(a) as a factor of g; None: g itself)
_SLOPE = repr(float(F.LEAKY_SLOPE))
_ACT = {
    "identity": ("", None),
    "relu": ("z = z > (T)0 ? z : (T)0", "(a > (T)0 ? (T)1 : (T)0)"),
    "leaky_relu": (f"z = z > (T)0 ? z : (T){_SLOPE} * z", f"(a > (T)0 ? (T)1 : (T){_SLOPE})"),
    "tanh": ("z = tanh(z)", "((T)1 - a * a)"),
    "sigmoid": ("T e = exp(-fabs(z)); z = z >= (T)0 ? (T)1 / ((T)1 + e) : e / ((T)1 + e)",
                "(a * ((T)1 - a))"),
}
GRAPH_HIDDEN = tuple(_ACT)
# (output, loss) pairs with a graph kernel: softmax + cross-entropy (fused), softmax + mse
# (a row kernel), every elementwise output + mse
GRAPH_PAIRS = {("softmax", "cross_entropy"), ("softmax", "mse"), *((o, "mse") for o in _ACT)}

_ROW_SRC = r"""
extern "C" {
__global__ void mlpb_softmax_rows(const T* z, T* p, T* lse, long long rows, long long c) {
  long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const T* zr = z + r * c; T* pr = p + r * c;
  T m = zr[0];
  for (long long j = 1; j < c; ++j) m = zr[j] > m ? zr[j] : m;
  T s = 0;
  for (long long j = 0; j < c; ++j) { T e = exp(zr[j] - m); pr[j] = e; s += e; }
  for (long long j = 0; j < c; ++j) pr[j] = pr[j] / s;
  lse[r] = log(s) + m;
}
__global__ void mlpb_argmax_rows(const T* a, long long* out, long long rows, long long c) {
  long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const T* ar = a + r * c;
  long long best = 0; T v = ar[0];
  for (long long j = 1; j < c; ++j) if (ar[j] > v) { v = ar[j]; best = j; }
  out[r] = best;
}
__global__ void mlpb_softmax_mse_delta(const T* a, const T* y, T* d, long long rows, long long c,
                                         T nn, T k, int rescale) {
  long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const T* ar = a + r * c; const T* yr = y + r * c; T* dr = d + r * c;
  T s = 0;
  for (long long j = 0; j < c; ++j) s += (ar[j] - yr[j]) / nn * ar[j];
  for (long long j = 0; j < c; ++j) {
    T v = ar[j] * ((ar[j] - yr[j]) / nn - s);
    dr[j] = rescale ? v * k : v;
  }
}
// one block of 256 threads: a fixed summation order, so every replay gives the same bits
__global__ void mlpb_loss_sum(const T* z, const T* lse, const T* a, const T* y, T* acc,
                                long long rows, long long c, int kind) {
  __shared__ T part[256];
  T s = 0;
  for (long long r = threadIdx.x; r < rows; r += blockDim.x) {
    T row = 0;
    for (long long j = 0; j < c; ++j) {
      long long q = r * c + j;
      if (kind == 0) { row += y[q] * (z[q] - lse[r]); }
      else { T e = a[q] - y[q]; row += e * e; }
    }
    s += row;
  }
  part[threadIdx.x] = s;
  __syncthreads();
  for (int h = blockDim.x / 2; h > 0; h >>= 1) {
    if (threadIdx.x < h) part[threadIdx.x] += part[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) acc[0] += kind == 0 ? -part[0] : part[0] / (T)2;
}
}
"""


def graph_blocker(model) -> "str | None":
    """Why ``model`` cannot train in a captured CUDA graph here (None when it can)."""
    try:
        from nvmath.bindings import cublas  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install failing to load
        return f"nvmath-python is not usable ({type(exc).__name__}: {exc}); {NVMATH_FIX}"
    for act in model.activations:
        if act not in GRAPH_HIDDEN:
            return f"the hidden activation {act!r} has no graph kernel"
    if (model.output, model.loss_name) not in GRAPH_PAIRS:
        return f"the output/loss pair ({model.output!r}, {model.loss_name!r}) has no graph kernel"
    return None


class CupyGraphOps(CupyOps):
    """:class:`CupyOps` whose every training-step primitive can be captured into a CUDA graph.

    CuPy refuses cuBLAS while a stream captures (cupy/cupy#6290), so the GEMMs go to cuBLAS
    through nvmath-python on a handle of our own, bound to ``stream`` and given an explicit
    workspace (cuBLAS asks for one under graphs): row-major ``C = A @ B`` is column-major
    ``Cᵀ = Bᵀ Aᵀ``, so ``B`` goes first. Bias gradients are a GEMM of a ones row; softmax,
    the loss sum and the row argmax are row kernels; the optimizer updates read their
    scalars from a device row. Nothing allocates once the buffers exist (the runner makes
    any allocation during capture an error). ``close()`` frees the handle and workspace.
    """

    WORKSPACE_BYTES = 32 << 20  # cuBLAS's recommendation for Hopper; 4 MiB suffice before it

    def __init__(self, xp, mod, stream):
        super().__init__(xp, mod)
        from nvmath.bindings import cublas
        self.cublas, self.stream = cublas, stream
        self._ops = (int(cublas.Operation.N), int(cublas.Operation.T))
        self._gk, self._rows, self._pinned = {}, {}, {}
        # alpha = 1, beta = 0 as host scalars (pointer mode HOST): read when a call is
        # issued, so frozen into a graph, which is what we want for constants
        self._ab = {name: (np.ones(1, name), np.zeros(1, name)) for name in ("float32", "float64")}
        self.handle = cublas.create()
        try:
            cublas.set_stream(self.handle, stream.ptr)
            cublas.set_pointer_mode(self.handle, int(cublas.PointerMode.HOST))
            self.workspace = mod.empty((self.WORKSPACE_BYTES,), dtype=mod.uint8)
            cublas.set_workspace(self.handle, self.workspace.data.ptr, self.workspace.nbytes)
        except BaseException:
            cublas.destroy(self.handle)
            self.handle = 0  # destroyed: close() (and __del__) must not destroy it again
            raise

    def __del__(self):  # a runner dropped without close() (its trainer garbage-collected)
        try:
            self.close()
        except Exception:  # at interpreter exit the CUDA context may be gone already
            pass

    def close(self) -> None:
        """Destroy the cuBLAS handle (cuBLAS waits for the device) and drop the workspace."""
        if self.handle:
            self.cublas.destroy(self.handle)
            self.handle = 0
        self.workspace = None
        self._ones.clear()
        self._pinned.clear()

    # ----- GEMMs on cuBLAS ----------------------------------------------------------
    def gemm(self, a, b, out, ta=False, tb=False):
        """``out = op(a) @ op(b)`` for C-contiguous row-major arrays (``op``: transpose
        where ``ta``/``tb``), as cuBLAS's column-major ``outᵀ = op(b)ᵀ op(a)ᵀ``."""
        name = out.dtype.name
        if name not in self._ab or a.dtype != out.dtype or b.dtype != out.dtype:
            raise TypeError(f"gemm needs float32 or float64 operands of one dtype, got {a.dtype}, {b.dtype}, {out.dtype}")
        if not (a.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous):
            raise ValueError("gemm needs C-contiguous operands")
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"gemm needs 2-D operands, got shapes {a.shape} and {b.shape}")
        m = a.shape[1] if ta else a.shape[0]
        k = a.shape[0] if ta else a.shape[1]
        n = b.shape[0] if tb else b.shape[1]
        # cuBLAS reads whatever the sizes say: a mismatch would read out of bounds, not raise
        if (b.shape[1] if tb else b.shape[0]) != k:
            raise ValueError(f"gemm: inner sizes differ, op(a) is {m}x{k}, op(b) {b.shape[::-1] if tb else b.shape}")
        if out.shape != (m, n) and not (m == 1 and out.shape == (n,)):
            raise ValueError(f"gemm: out has shape {out.shape}, the product {m}x{n}")
        one, zero = self._ab[name]
        opn, opt = self._ops
        fn = self.cublas.sgemm if name == "float32" else self.cublas.dgemm
        fn(self.handle, opt if tb else opn, opt if ta else opn, n, m, k, one.ctypes.data,
           b.data.ptr, b.shape[1], a.data.ptr, a.shape[1], zero.ctypes.data, out.data.ptr, n)
        return out

    def linear(self, a, w, b, out=None):
        if out is None:
            return super().linear(a, w, b)
        return self._g("bias_add")(b, self.gemm(a, w, out))

    def linear_relu(self, a, w, b, out=None):
        if out is None:
            return super().linear_relu(a, w, b)
        return self._kernel("bias_relu")(b, self.gemm(a, w, out))

    def linear_act(self, a, w, b, name, out=None):
        if out is None or name not in _ACT:
            return super().linear_act(a, w, b, name, out)
        return self._g("bias_act:" + name)(b, self.gemm(a, w, out))

    def matmul_tn(self, a, b, out=None, tmp=None):
        return super().matmul_tn(a, b) if out is None else self.gemm(a, b, out, ta=True)

    def matmul_nt(self, a, b, out=None):
        return super().matmul_nt(a, b) if out is None else self.gemm(a, b, out, tb=True)

    def sum_rows(self, x, out=None):
        if out is None or x.ndim != 2:
            return super().sum_rows(x, out)
        key = (x.shape[0], x.dtype.name)
        ones = self._ones.get(key)
        if ones is None:  # made by the warm-up step, before any capture
            ones = self._ones[key] = self.m.ones((1, x.shape[0]), dtype=x.dtype)
        return self.gemm(ones, x, out)

    # ----- elementwise and row kernels ----------------------------------------------
    def _g(self, name):
        k = self._gk.get(name)
        if k is None:
            ek, head = self.m.ElementwiseKernel, name.partition(":")
            kind, _, act = head
            if kind == "bias_add":
                k = ek("T b", "T z", "z = z + b", "mlpb_bias_add")
            elif kind == "bias_act":
                k = ek("T b", "T z", "z = z + b; " + _ACT[act][0], f"mlpb_bias_{act}")
            elif kind == "act":
                k = ek("T x", "T z", _ACT[act][0], f"mlpb_act_{act}")
            elif kind == "act_bwd":
                k = ek("T a", "T g", f"g = g * {_ACT[act][1]}", f"mlpb_act_bwd_{act}")
            elif kind == "mse_delta":
                d = "g" if _ACT[act][1] is None else f"g * {_ACT[act][1]}"
                k = ek("T a, T y, T nn, T k, bool rescale", "T d",
                       f"T g = (a - y) / nn; T v = {d}; d = rescale ? v * k : v", f"mlpb_mse_delta_{act}")
            elif kind == "gather":
                k = ek("raw X x, raw int64 idx, int64 cols", "X o",
                       "o = x[idx[i / cols] * cols + i % cols]", "mlpb_gather")
            elif kind == "gather_scale":
                k = ek("raw X x, raw int64 idx, int64 cols, T s", "T o",
                       "o = (T)x[idx[i / cols] * cols + i % cols] * s", "mlpb_gather_scale")
            elif kind == "fill":
                k = ek("T v", "T o", "o = v", "mlpb_fill")
            elif kind == "sgd":
                k = ek("T g, raw T sc, T wd", "T w", "w -= sc[0] * (g + wd * w)", "mlpb_sgd_dev")
            elif kind == "momentum":
                k = ek("T g, raw T sc, T mu, T wd, bool nesterov", "T w, T v",
                       "T gg = g + wd * w; v = mu * v + gg; w -= sc[0] * (nesterov ? gg + mu * v : v)",
                       "mlpb_momentum_dev")
            elif kind == "adam":
                k = ek("T g, raw T sc, T b1, T b2, T wd, bool decoupled", "T w, T m, T v",
                       "T gg = g; if (decoupled) { if (wd != (T)0) w *= sc[1]; } else { gg = g + wd * w; } "
                       "m = b1 * m + ((T)1 - b1) * gg; v = b2 * v + ((T)1 - b2) * gg * gg; "
                       "w -= sc[2] * m / (sqrt(v) + sc[3])",
                       "mlpb_adam_dev")
            else:  # pragma: no cover - a typo here is a bug
                raise KeyError(name)
            self._gk[name] = k
        return k

    def _row(self, name, dtype):
        key = (name, dtype.name)
        fn = self._rows.get(key)
        if fn is None:
            mod = self._rows.get(dtype.name)
            if mod is None:  # one module per dtype: T is its float type
                t = {"float32": "float", "float64": "double"}[dtype.name]
                mod = self._rows[dtype.name] = self.m.RawModule(code=f"typedef {t} T;\n" + _ROW_SRC)
            fn = self._rows[key] = mod.get_function(f"mlpb_{name}")
        return fn

    def _launch_rows(self, name, rows, *args):
        block = 128
        self._row(name, args[0].dtype)(((rows + block - 1) // block,), (block,), args)

    def activation(self, name, z, out=None):
        if name not in _ACT:
            return super().activation(name, z, out)
        if _ACT[name][0]:
            self._g("act:" + name)(z, z)
        return z

    def activation_backward(self, name, grad_a, a, out=None, tmp=None):
        if out is None or name not in _ACT:
            return super().activation_backward(name, grad_a, a, out)
        if _ACT[name][1] is not None:
            self._g("act_bwd:" + name)(a, grad_a)
        if out is not grad_a:
            self.m.copyto(out, grad_a)
        return out

    def softmax(self, z, out=None, rowbuf=None):
        if out is None or rowbuf is None:
            return super().softmax(z, out, rowbuf)
        n, c = z.shape
        self._launch_rows("softmax_rows", n, z, out, rowbuf[1], np.int64(n), np.int64(c))
        return out, rowbuf[1]

    def output_delta(self, output, loss, z, a, y, normalizer=None, out=None):
        if out is None or loss != "mse" or (output not in _ACT and output != "softmax"):
            return super().output_delta(output, loss, z, a, y, normalizer, out)
        n, c = a.shape
        t = a.dtype.type
        rescale = normalizer is not None and normalizer != n
        k = t(n / normalizer) if rescale else t(1)
        if output == "softmax":
            self._launch_rows("softmax_mse_delta", n, a, y, out, np.int64(n), np.int64(c), t(n), k,
                              np.int32(rescale))
        else:
            self._g("mse_delta:" + output)(a, y, t(n), k, bool(rescale), out)
        return out

    def loss_sum_(self, loss, z, lse, a, y, acc, tmp=None, s=None):
        ce = loss == "cross_entropy" and lse is not None
        if not ce and loss != "mse":
            return super().loss_sum_(loss, z, lse, a, y, acc, tmp, s)
        n, c = a.shape
        self._row("loss_sum", a.dtype)((1,), (256,), (z, lse if ce else z, a, y, acc, np.int64(n), np.int64(c),
                                                      np.int32(0 if ce else 1)))
        return acc

    def argmax_rows(self, a, out=None):
        if out is None:
            return super().argmax_rows(a, out)
        n, c = a.shape
        self._launch_rows("argmax_rows", n, a, out, np.int64(n), np.int64(c))
        return out

    def gather_rows(self, x, idx, out=None):
        if out is None:
            return super().gather_rows(x, idx, out)
        return self._g("gather")(x, idx, np.int64(x.size // x.shape[0]), out)

    def gather_cast_scale(self, x, idx, dtype, scale=None, tmp=None, out=None):
        if out is None:
            return super().gather_cast_scale(x, idx, dtype, scale, tmp, out)
        s = out.dtype.type(1 if scale is None else scale)
        return self._g("gather_scale")(x, idx, np.int64(x.size // x.shape[0]), s, out)

    def fill_(self, x, value):
        return self._g("fill")(x.dtype.type(value), x)

    def copy_in(self, dst, host):
        # through a pinned staging buffer per destination, so the copy is truly asynchronous;
        # the event guards the staging buffer against a copy still in flight from before
        key = (dst.data.ptr, dst.nbytes)
        stage = self._pinned.get(key)
        if stage is None:
            mem = self.m.cuda.alloc_pinned_memory(dst.nbytes)
            stage = self._pinned[key] = [mem, np.frombuffer(mem, dst.dtype, dst.size).reshape(dst.shape), None]
        if stage[2] is not None:
            stage[2].synchronize()  # long done in a training loop: the epoch's sync came after it
        np.copyto(stage[1], host, casting="same_kind")
        dst.data.copy_from_host_async(stage[1].ctypes.data, dst.nbytes, self.stream)
        stage[2] = self.stream.record()
        return dst

    def sgd_dev(self, w, g, sc, wd=0.0, tmp=None):
        self._g("sgd")(g, sc, self._s(wd, w), w)

    def momentum_dev(self, w, v, g, sc, mu, wd=0.0, nesterov=False, tmp=None):
        self._g("momentum")(g, sc, self._s(mu, w), self._s(wd, w), bool(nesterov), w, v)

    def adam_dev(self, w, m_, v, g, sc, b1, b2, wd=0.0, decoupled=False, tmp=None):
        s = lambda val: self._s(val, w)  # noqa: E731
        self._g("adam")(g, sc, s(b1), s(b2), s(wd), bool(decoupled), w, m_, v)
