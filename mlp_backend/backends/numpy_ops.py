"""Buffer-reusing kernels (NumPy, and CuPy's shared ``out=`` API) and the flat parameter layout.

:class:`BufferOps` computes each :class:`~mlp_backend.backends.portable.PortableOps`
primitive into caller-owned buffers with ``out=``; :class:`FlatDict` and
:func:`flat_layout` keep parameters, gradients and optimizer state as views of one flat
buffer, so an optimizer updates all of them with a few calls.
"""
from __future__ import annotations

from mlp_backend.backends.portable import PortableOps


class FlatDict(dict):
    """A dict of arrays that are views into one flat 1-D buffer ``flat`` (buffer-reusing
    backends only): parameters, gradients and optimizer state share one ``layout``
    (``(key, shape)`` pairs, weights before biases), so an optimizer updates all of them
    with a few calls on ``flat`` instead of a few per parameter.

    Any change of the mapping itself (``d[k] = new``, ``update``, ``del`` ...) drops
    ``flat`` (sets it to None): the entries may no longer be its views, and the owner
    packs them again before the next step. Copies (``copy``, ``deepcopy``, pickling) are
    plain dicts, so a copied array is never mistaken for a view of the original buffer.
    """

    def __init__(self, views, flat=None, layout=None):
        super().__init__(views)
        self.flat, self.layout = flat, layout
        self.n_decay = n_decay(layout) if layout is not None else 0

    def _drop(self):
        self.flat = None

    def __setitem__(self, k, v):
        self._drop()
        super().__setitem__(k, v)

    def __delitem__(self, k):
        self._drop()
        super().__delitem__(k)

    def __ior__(self, other):
        self._drop()
        return super().__ior__(other)

    def update(self, *a, **k):
        self._drop()
        super().update(*a, **k)

    def setdefault(self, k, default=None):
        self._drop()
        return super().setdefault(k, default)

    def pop(self, *a):
        self._drop()
        return super().pop(*a)

    def popitem(self):
        self._drop()
        return super().popitem()

    def clear(self):
        self._drop()
        super().clear()

    def copy(self):
        return dict(self)

    __copy__ = copy

    def __deepcopy__(self, memo):
        import copy as _copy
        return {k: _copy.deepcopy(v, memo) for k, v in self.items()}

    def __reduce__(self):
        return (dict, (dict(self),))


def flat_layout(shapes: dict) -> tuple:
    """The flat order of a parameter dict: weights (``w*``) first, then the rest, so the
    weights (the only decayed entries) are one prefix ``flat[:n_decay]``."""
    keys = [k for k in shapes if k.startswith("w")] + [k for k in shapes if not k.startswith("w")]
    return tuple((k, tuple(shapes[k])) for k in keys)


def refill(bound: tuple, values, ops) -> FlatDict:
    """``values`` in the flat buffer an earlier binding handed out, so that the buffer stays
    put (a captured CUDA graph updates it): ``bound`` is (the FlatDict, its views, their flat
    buffer); entries of ``values`` that are not those views are copied into them, missing ones
    zeroed. Returns a FlatDict over the same buffer."""
    d, views, flat = bound
    for k, v in views.items():
        src = (values or {}).get(k)
        if src is None:
            ops.fill_(v, 0)
        elif src is not v:
            ops.copy_(v, src)
    return FlatDict(views, flat, d.layout)


def n_decay(layout: tuple) -> int:
    """Length of the weight prefix of a :func:`flat_layout`."""
    return sum(_size(shape) for k, shape in layout if k.startswith("w"))



# Rows from which matmul_tn takes the transposed route on NumPy. Measured 2026-12-04 (one
# OpenBLAS thread, float64, transposed time / direct time): 0.74-0.96 at 4,096 rows for
# (p, q) in (784, 100), (784, 512), (512, 256), (100, 40); at 128 rows 0.91-1.52, so the
# default minibatch keeps the direct product (and its bits).
TN_MIN_ROWS = 4096


class BufferOps(PortableOps):
    """NumPy (and CuPy) kernels that write into caller-owned buffers with ``out=``.

    ``mod`` is the array module itself (``numpy`` or ``cupy``), whose ufuncs, ``matmul``,
    ``take`` and reductions all accept ``out=``. With ``out=None`` each call allocates,
    exactly like :class:`PortableOps`, so these kernels also serve one-off calls.
    """

    reuses_buffers = True

    def __init__(self, xp, mod):
        super().__init__(xp)
        self.m = mod
        self._ones = {}
        self._numpy = getattr(mod, "__name__", "") == "numpy"
        self.tn_scratch = self._numpy  # matmul_tn computes the transposed product (NumPy's OpenBLAS)

    def pack(self, layout, dtype, device=None, values=None, order=None):
        """A :class:`FlatDict` of views into one new flat buffer laid out as ``layout``;
        each view holds a copy of ``values[key]`` where given, zeros otherwise. ``order``
        (keys) is the dict's iteration order (default: the layout's)."""
        total = sum(_size(shape) for _, shape in layout)
        flat = self.xp.zeros((total,), dtype=dtype, device=device)
        views, off = {}, 0
        for k, shape in layout:
            n = _size(shape)
            v = views[k] = flat[off:off + n].reshape(shape)
            if values is not None and k in values:
                self.m.copyto(v, values[k], casting="same_kind")
            off += n
        if order is not None:
            views = {k: views[k] for k in order}
        return FlatDict(views, flat, layout)

    def argmax_rows(self, a, out=None):
        """Row-wise argmax into ``out`` (an index buffer slice)."""
        return self.m.argmax(a, axis=1, out=out)

    def gather_rows(self, x, idx, out=None):
        if out is not None and self._numpy:
            # mode="raise" (the default) makes NumPy gather into a hidden copy of ``out``;
            # the indices are our own permutation's, always in range, so "clip" is the same
            return self.m.take(x, idx, axis=0, out=out, mode="clip")
        return self.m.take(x, idx, axis=0, out=out)

    def cast_scale(self, x, dtype, scale=None, out=None):
        m = self.m
        if scale is None:
            if out is None:
                return x if x.dtype == dtype else x.astype(dtype)
            m.copyto(out, x, casting="unsafe")
            return out
        if out is None:  # uint8 * float32 -> float32 loop: no float64 detour, no intermediate
            return m.multiply(x, m.asarray(scale, dtype=dtype), dtype=dtype)
        # into a buffer: an exact cast, then an in-place multiply (the same float32 result;
        # measured 3 us/step cheaper than the mixed-dtype multiply's buffered cast loop)
        m.copyto(out, x, casting="unsafe")
        return m.multiply(out, m.asarray(scale, dtype=dtype), out=out)

    def linear(self, a, w, b, out=None):
        m = self.m
        z = m.matmul(a, w, out=out)
        return m.add(z, b, out=z)

    def relu(self, z, out=None):
        return self.m.maximum(z, 0, out=out)

    def relu_backward(self, grad_a, a, out=None, mask=None):
        m = self.m
        mask = m.greater(a, 0, out=mask)
        return m.multiply(grad_a, mask, out=out)

    def activation(self, name, z, out=None):
        if out is not None and name == "tanh":  # in place: no new (n, width) array per step
            return self.m.tanh(z, out=out)
        return super().activation(name, z, out)

    def activation_backward(self, name, grad_a, a, out=None, tmp=None):
        # functional's grad_a * f'(a), operation by operation into the scratch ``tmp``: the
        # same bits, without three new (n, width) arrays per layer and step
        if out is None or tmp is None or name not in ("tanh", "sigmoid"):
            return super().activation_backward(name, grad_a, a, out)
        m = self.m
        if name == "tanh":  # 1.0 - a * a
            d = m.multiply(a, a, out=tmp)
            m.subtract(1.0, d, out=d)
        else:  # sigmoid: a * (1.0 - a)
            d = m.subtract(1.0, a, out=tmp)
            m.multiply(a, d, out=d)
        return m.multiply(grad_a, d, out=out)

    def softmax(self, z, out=None, rowbuf=None):
        m = self.m
        mx = m.max(z, axis=1, keepdims=True, out=None if rowbuf is None else rowbuf[0])
        e = m.subtract(z, mx, out=out)
        m.exp(e, out=e)
        s = m.sum(e, axis=1, keepdims=True, out=None if rowbuf is None else rowbuf[1])
        m.divide(e, s, out=e)
        lse = m.log(s, out=s)
        return e, m.add(lse, mx, out=lse)

    def matmul_tn(self, a, b, out=None, tmp=None):
        m = self.m
        if not self.tn_scratch or tmp is None or out is None or a.ndim != 2 or a.shape[0] < TN_MIN_ROWS:
            return m.matmul(a.T, b, out=out)
        # The weight gradients a.T @ b (a: (n, p) rows, b: (n, q); the reduction runs over the
        # n rows) of a large batch as the transposed product b.T @ a into the (q, p) scratch
        # ``tmp``, copied back transposed: single-threaded OpenBLAS gets the same bits either
        # way and is 20-30% faster this way on (36,900, 784) x (36,900, 100) float64 (the paper
        # presets' dW1). On minibatches the copy costs more than it saves (see TN_MIN_ROWS).
        m.copyto(out, m.matmul(b.T, a, out=tmp).T)
        return out

    def matmul_nt(self, a, b, out=None):
        return self.m.matmul(a, b.T, out=out)

    def sum_rows(self, x, out=None):
        # a (n,) ones vector times x: one BLAS gemv, ~4x faster than the axis-0 reduction
        # on (128, 100) float32 (the bias gradients)
        if x.ndim != 2:
            return self.m.sum(x, axis=0, out=out)
        key = (x.shape[0], x.dtype)
        ones = self._ones.get(key)
        if ones is None:
            if len(self._ones) > 8:
                self._ones.clear()
            ones = self._ones[key] = self.m.ones((x.shape[0],), dtype=x.dtype)
        return self.m.matmul(ones, x, out=out)

    def sub_scaled(self, a, y, scale, out=None):
        m = self.m
        d = m.subtract(a, y, out=out)
        return m.multiply(d, scale, out=d)

    def loss_sum_(self, loss, z, lse, a, y, acc, tmp=None, s=None):
        # the expressions of loss_value, term by term into scratch: the same bits, no allocation
        if tmp is None or s is None:
            return super().loss_sum_(loss, z, lse, a, y, acc)
        m, n = self.m, z.shape[0]
        if loss == "cross_entropy" and lse is not None:  # -sum(y * (z - lse)) / n
            d = m.subtract(z, lse, out=tmp)
            m.multiply(y, d, out=d)
            m.sum(d, out=s)
            m.negative(s, out=s)
            m.divide(s, n, out=s)
        elif loss == "mse":  # sum((a - y) ** 2) / (2 n)
            d = m.subtract(a, y, out=tmp)
            m.multiply(d, d, out=d)
            m.sum(d, out=s)
            m.divide(s, 2 * n, out=s)
        else:
            return super().loss_sum_(loss, z, lse, a, y, acc)
        m.multiply(s, n, out=s)
        return m.add(acc, s, out=acc)

    def fill_(self, x, value):
        self.m.copyto(x, value)
        return x

    def copy_in(self, dst, host):
        self.m.copyto(dst, host, casting="same_kind")
        return dst

    def copy_(self, dst, src):
        self.m.copyto(dst, src)
        return dst

    def argmax_into(self, a, preds, start):
        self.argmax_rows(a, preds[start:start + a.shape[0]])
        return preds

    def _tmp(self, tmp, like):
        return tmp if tmp is not None else self.m.empty_like(like)

    def _descend_(self, w, t, lr, x, c=None, y=None):
        """``w -= lr * (x * c + y)``, or ``w -= lr * x`` without ``c``, through the scratch ``t``."""
        m = self.m
        if c is not None:
            m.multiply(x, c, out=t)
            m.add(t, y, out=t)
            m.multiply(t, lr, out=t)
        else:
            m.multiply(x, lr, out=t)
        m.subtract(w, t, out=w)

    def sgd_(self, w, g, lr, wd=0.0, tmp=None):
        t = self._tmp(tmp, w)
        if wd:
            self._descend_(w, t, lr, w, wd, g)
        else:
            self._descend_(w, t, lr, g)

    def momentum_(self, w, v, g, lr, mu, wd=0.0, nesterov=False, tmp=None):
        m, t = self.m, self._tmp(tmp, w)
        if wd:
            g = g + wd * w
        m.multiply(v, mu, out=v)
        m.add(v, g, out=v)
        if nesterov:
            self._descend_(w, t, lr, v, mu, g)
        else:
            self._descend_(w, t, lr, v)

    def adam_(self, w, m_, v, g, lr, b1, b2, eps, step, wd=0.0, decoupled=False, tmp=None, decay=None):
        """``decay`` (AdamW's ``1 - lr * wd``, computed by the caller) defaults to that product."""
        m, t = self.m, self._tmp(tmp, w)
        if decoupled:
            if wd:
                m.multiply(w, 1.0 - lr * wd if decay is None else decay, out=w)
        elif wd:
            g = g + wd * w
        m.multiply(m_, b1, out=m_)
        m.multiply(g, 1.0 - b1, out=t)
        m.add(m_, t, out=m_)
        m.multiply(v, b2, out=v)
        m.multiply(g, g, out=t)
        m.multiply(t, 1.0 - b2, out=t)
        m.add(v, t, out=v)
        m.sqrt(v, out=t)
        m.add(t, eps, out=t)
        m.divide(m_, t, out=t)
        m.multiply(t, step, out=t)
        m.subtract(w, t, out=w)


def _size(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
