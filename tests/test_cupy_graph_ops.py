"""CupyGraphOps (mlp_backend/backends/cupy_ops.py) without a GPU: its calls into cuBLAS and
its kernel launches, checked against what the callees require.

* The cuBLAS calls go to a stand-in ``nvmath.bindings.cublas`` that does what cuBLAS does
  with the arguments: it reads the operands as column-major matrices at the raw pointers
  with the given leading dimensions (and rejects the leading dimensions cuBLAS rejects), so
  a wrong argument order, size or leading dimension gives a wrong product here, as it would
  on the GPU (where it would read out of bounds instead of failing).
* The row kernels' arguments are checked against the C signatures in ``_ROW_SRC``: CuPy
  passes each argument by the bytes of its own type, so a Python int (8 bytes) given for an
  ``int`` parameter, or a float64 scalar for a ``float`` one, would be read as garbage.
* The ElementwiseKernel calls against their parameter lists, as CuPy matches them, with
  every output given (CuPy allocates a missing one: an error inside a capture).
* The kernels' maths: every kernel source compiled for the CPU with the host C++ compiler
  and run on NumPy memory, so a step of CupyGraphOps is compared with the NumPy step.
* GraphStream.capture (GraphRunner._capture) keeps the garbage collector off while the stream captures.
"""
import ctypes
import gc
import re
import sys
import types

import numpy as np
import pytest

from mlp_backend.backends import cupy_ops as co


class Dev(np.ndarray):
    """A NumPy array posing as a CuPy one: ``.data.ptr`` is its address."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


def dev(a):
    return np.ascontiguousarray(a).view(Dev)


def _matrix(ptr, dtype, rows, cols, ld):
    """The column-major rows x cols matrix at ``ptr`` with leading dimension ``ld`` (a view)."""
    item = np.dtype(dtype).itemsize
    n = ld * (cols - 1) + rows
    buf = (ctypes.c_char * (n * item)).from_address(ptr)
    flat = np.frombuffer(buf, dtype, n)
    return np.lib.stride_tricks.as_strided(flat, (rows, cols), (item, ld * item))


class FakeCublas:
    """The few cuBLAS entry points CupyGraphOps uses, with cuBLAS's semantics."""

    class Operation:
        N, T, C = 0, 1, 2

    class PointerMode:
        HOST, DEVICE = 0, 1

    def __init__(self, fail=None):
        self.calls, self.fail = [], fail

    def _log(self, name, *args):
        self.calls.append((name, *args))
        if name == self.fail:
            raise RuntimeError(f"simulated {name} failure")

    def create(self):
        self._log("create")
        return 1234

    def destroy(self, h):
        self._log("destroy", h)

    def set_stream(self, h, ptr):
        self._log("set_stream", h, ptr)

    def set_pointer_mode(self, h, mode):
        self._log("set_pointer_mode", h, mode)

    def set_workspace(self, h, ptr, nbytes):
        self._log("set_workspace", h, ptr, nbytes)

    def _gemm(self, dtype, h, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
        self._log("gemm", dtype, transa, transb, m, n, k, lda, ldb, ldc)
        for v in (transa, transb, m, n, k, lda, ldb, ldc):
            assert type(v) is int, v  # nvmath's signature: int / intptr_t
        # cuBLAS's own argument checks (CUBLAS_STATUS_INVALID_VALUE otherwise)
        assert m >= 0 and n >= 0 and k >= 0
        assert lda >= max(1, m if transa == 0 else k), ("lda", lda)
        assert ldb >= max(1, k if transb == 0 else n), ("ldb", ldb)
        assert ldc >= max(1, m), ("ldc", ldc)
        a = _matrix(A, dtype, *((m, k) if transa == 0 else (k, m)), lda)
        b = _matrix(B, dtype, *((k, n) if transb == 0 else (n, k)), ldb)
        c = _matrix(C, dtype, m, n, ldc)
        al = np.frombuffer((ctypes.c_char * np.dtype(dtype).itemsize).from_address(alpha), dtype)[0]
        be = np.frombuffer((ctypes.c_char * np.dtype(dtype).itemsize).from_address(beta), dtype)[0]
        opa = a if transa == 0 else a.T
        opb = b if transb == 0 else b.T
        res = al * (opa @ opb) + (be * c if be else 0)
        c[...] = res  # as_strided views are writeable: writes go to the memory at C

    def sgemm(self, *args):
        self._gemm(np.float32, *args)

    def dgemm(self, *args):
        self._gemm(np.float64, *args)


@pytest.fixture
def fake(monkeypatch):
    """A CupyGraphOps on NumPy memory with the stand-in cuBLAS; returns (ops, cublas)."""
    made = []

    def build(fail=None, empty=None):
        cublas = FakeCublas(fail)
        pkg = types.ModuleType("nvmath")
        bindings = types.ModuleType("nvmath.bindings")
        bindings.cublas = cublas
        pkg.bindings = bindings
        monkeypatch.setitem(sys.modules, "nvmath", pkg)
        monkeypatch.setitem(sys.modules, "nvmath.bindings", bindings)
        mod = types.SimpleNamespace(
            __name__="fakecupy", uint8=np.uint8,
            empty=empty or (lambda shape, dtype: dev(np.zeros(shape, dtype))),
            ones=lambda shape, dtype: dev(np.ones(shape, dtype)))
        ops = co.CupyGraphOps(np, mod, types.SimpleNamespace(ptr=0xABC))
        made.append(ops)
        return ops, cublas
    yield build
    for ops in made:
        ops.handle = 0  # nothing real to destroy


# ----- cuBLAS: the handle ------------------------------------------------------------------------

def test_handle_setup_order(fake):
    """The workspace is set after the stream: cublasSetStream resets the handle's workspace
    to cuBLAS's default pool (cuBLAS docs, cublasSetStream), which a graph must not use."""
    ops, cb = fake()
    names = [c[0] for c in cb.calls]
    assert names == ["create", "set_stream", "set_pointer_mode", "set_workspace"], names
    assert cb.calls[1][2] == 0xABC
    assert cb.calls[3][2:] == (ops.workspace.data.ptr, ops.WORKSPACE_BYTES)
    ops.close()
    assert cb.calls[-1] == ("destroy", 1234) and ops.handle == 0
    ops.close()
    assert [c[0] for c in cb.calls].count("destroy") == 1


@pytest.mark.parametrize("fail", ["set_stream", "set_workspace", "empty"])
def test_a_failed_setup_destroys_the_handle_once(fake, fail):
    """A setup step that raises destroys the new handle, and the half-made object's
    __del__ (its close()) must not destroy it a second time (a double cublasDestroy)."""
    def no_memory(shape, dtype):
        raise MemoryError("simulated out of memory")
    cublas_calls = []
    with pytest.raises((RuntimeError, MemoryError), match="simulated"):
        try:
            fake(fail=fail if fail != "empty" else None, empty=no_memory if fail == "empty" else None)
        finally:
            cublas_calls.append(sys.modules["nvmath.bindings"].cublas.calls)
    gc.collect()  # the half-made CupyGraphOps is garbage now: its __del__ has run
    assert [c[0] for c in cublas_calls[0]].count("destroy") == 1, cublas_calls[0]


# ----- cuBLAS: the GEMMs -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_is_the_row_major_product(fake, dtype, ta, tb):
    ops, cb = fake()
    rng = np.random.default_rng(0)
    m, k, n = 5, 7, 3
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    out = dev(np.full((m, n), np.nan, dtype))
    assert ops.gemm(dev(a), dev(b), out, ta=ta, tb=tb) is out
    want = (a.T if ta else a) @ (b.T if tb else b)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert cb.calls[-1][1] == dtype and cb.calls[-1][0] == "gemm"


def test_the_steps_gemms_on_views_of_flat_buffers(fake):
    """What a training step does: weights and gradients as views into flat buffers (at an
    offset), a batch that is a row slice of a bigger buffer, the bias gradient as a GEMM of
    a ones row into a 1-D view, dW = aᵀδ and δWᵀ."""
    ops, _ = fake()
    rng = np.random.default_rng(1)
    rows, n_in, n_out = 6, 4, 3
    params = dev(rng.standard_normal(50).astype(np.float32))
    grads = dev(np.zeros(50, np.float32))
    w = params[7:7 + n_in * n_out].reshape(n_in, n_out)
    gw = grads[7:7 + n_in * n_out].reshape(n_in, n_out)
    gb = grads[30:30 + n_out]
    big = dev(rng.standard_normal((10, n_in)).astype(np.float32))
    x = big[2:2 + rows]  # a batch of rows: C-contiguous, at an offset
    z = dev(np.zeros((rows, n_out), np.float32))
    delta = dev(rng.standard_normal((rows, n_out)).astype(np.float32))
    back = dev(np.zeros((rows, n_in), np.float32))
    ops.gemm(x, w, z)
    ops.matmul_tn(x, delta, gw)
    ops.sum_rows(delta, gb)
    ops.matmul_nt(delta, w, back)
    x_, w_, d_ = (np.asarray(v) for v in (x, w, delta))
    np.testing.assert_allclose(np.asarray(z), x_ @ w_, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gw), x_.T @ d_, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gb), d_.sum(axis=0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(back), d_ @ w_.T, rtol=1e-5)
    rest = np.ones(50, bool)
    rest[7:7 + n_in * n_out] = rest[30:30 + n_out] = False
    assert not np.asarray(grads)[rest].any()  # nothing written outside the views


def test_gemm_refuses_what_cublas_would_read_out_of_bounds(fake):
    ops, cb = fake()
    a, b = dev(np.ones((4, 3), np.float32)), dev(np.ones((5, 2), np.float32))
    with pytest.raises(ValueError, match="inner sizes differ"):
        ops.gemm(a, b, dev(np.zeros((4, 2), np.float32)))
    with pytest.raises(ValueError, match="out has shape"):
        ops.gemm(a, dev(np.ones((3, 2), np.float32)), dev(np.zeros((2, 4), np.float32)))
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.gemm(dev(np.ones((3, 4), np.float32)).T, dev(np.ones((3, 2), np.float32)),
                 dev(np.zeros((4, 2), np.float32)))
    with pytest.raises(TypeError, match="one dtype"):
        ops.gemm(a, dev(np.ones((3, 2), np.float64)), dev(np.zeros((4, 2), np.float32)))
    assert not [c for c in cb.calls if c[0] == "gemm"]


# ----- the row kernels: arguments against the C signatures ---------------------------------------

_C_SCALARS = {"long long": np.int64, "int": np.int32}


def _signatures():
    sigs = {}
    for name, params in re.findall(r"__global__ void (\w+)\(([^)]*)\)", co._ROW_SRC):
        sigs[name] = [" ".join(p.split()[:-1]) for p in params.split(",")]
    return sigs


class FakeModule:
    def __init__(self, code):
        self.code, self.launches = code, []

    def get_function(self, name):
        return lambda grid, block, args: self.launches.append((name, grid, block, args))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_kernels_get_the_c_types_of_their_parameters(fake, dtype):
    ops, _ = fake()
    modules = []
    ops.m.RawModule = lambda code: modules.append(FakeModule(code)) or modules[-1]
    t = np.dtype(dtype)
    n, c = 300, 10  # more rows than one block of 128
    arr = lambda *shape, dt=t: dev(np.zeros(shape, dt))  # noqa: E731
    z, p, a, y, d = arr(n, c), arr(n, c), arr(n, c), arr(n, c), arr(n, c)
    rows = (arr(n, 1), arr(n, 1))
    ops.softmax(z, p, rows)
    ops.argmax_rows(a, arr(n, dt=np.int64))
    ops.output_delta("softmax", "mse", z, a, y, normalizer=None, out=d)
    ops.output_delta("softmax", "mse", z, a, y, normalizer=7, out=d)
    ops.loss_sum_("cross_entropy", z, rows[1], a, y, arr())
    ops.loss_sum_("mse", z, None, a, y, arr())
    assert len(modules) == 1  # one module per dtype, T its float type
    assert modules[0].code.startswith(f"typedef {'float' if dtype == np.float32 else 'double'} T;\n")
    launches = modules[0].launches
    assert [name for name, *_ in launches] == ["mlpb_softmax_rows", "mlpb_argmax_rows", "mlpb_softmax_mse_delta",
                                               "mlpb_softmax_mse_delta", "mlpb_loss_sum", "mlpb_loss_sum"]
    sigs = _signatures()
    for name, grid, block, args in launches:
        assert all(type(v) is int for v in (*grid, *block)), (name, grid, block)
        if name == "mlpb_loss_sum":
            assert (grid, block) == ((1,), (256,))  # the kernel's shared array is 256 long
        else:
            assert grid[0] * block[0] >= n > (grid[0] - 1) * block[0], (name, grid, block)
        params = sigs[name]
        assert len(args) == len(params), (name, args)
        for ctype, arg in zip(params, args):
            base = ctype.replace("const", "").strip()
            if base.endswith("*"):
                want = t if base[:-1].strip() == "T" else np.dtype(_C_SCALARS[base[:-1].strip()])
                assert isinstance(arg, np.ndarray) and arg.dtype == want, (name, ctype, arg)
            else:
                want = t.type if base == "T" else _C_SCALARS[base]
                assert type(arg) is want, (name, ctype, type(arg))
        if name == "mlpb_softmax_rows":
            assert args[1] is p and args[2] is rows[1]


# ----- the elementwise kernels: arguments against their parameter lists --------------------------

class FakeEK:
    """Checks a call as CuPy's ElementwiseKernel would match it to its parameters."""

    def __init__(self, ins, outs, body, name):
        self.ins = [p.split() for p in ins.split(",")]
        self.outs = [p.split() for p in outs.split(",")]
        self.name = name

    def __call__(self, *args):
        # every output given: without one, CuPy allocates it (an error during a capture)
        assert len(args) == len(self.ins) + len(self.outs), (self.name, len(args))
        bound = {}
        for words, arg in zip(self.ins + self.outs, args):
            ty, raw = words[-2], words[0] == "raw"
            if isinstance(arg, np.ndarray):
                dt = arg.dtype
                if len(ty) == 1:  # a type placeholder: one dtype for all its arrays
                    assert bound.setdefault(ty, dt) == dt, (self.name, words, dt)
                else:
                    assert dt == np.dtype(ty), (self.name, words, dt)
            else:
                assert not raw, (self.name, words)
                if ty == "bool":
                    assert type(arg) is bool, (self.name, words, arg)
                elif len(ty) == 1:
                    # scalars of a placeholder type: given in the arrays' dtype, never a
                    # Python float (CuPy would make it a weak float64 and cast it)
                    assert isinstance(arg, np.generic), (self.name, words, arg)
                    bound.setdefault(ty + "_scalars", []).append(arg.dtype)
                else:
                    assert type(arg) is np.dtype(ty).type, (self.name, words, type(arg))
        for ty in [k for k in bound if k.endswith("_scalars")]:
            assert all(d == bound[ty[0]] for d in bound[ty]), (self.name, bound)
        return args[len(self.ins)]


def test_elementwise_calls_match_their_parameters(fake):
    ops, _ = fake()
    ops.m.ElementwiseKernel = FakeEK
    f = np.float32
    arr = lambda *shape, dt=f: dev(np.zeros(shape, dt))  # noqa: E731
    x8, idx = arr(20, 6, dt=np.uint8), arr(4, dt=np.int64)
    ops.gather_cast_scale(x8, idx, f, 1 / 255, arr(4, 6, dt=np.uint8), arr(4, 6))
    ops.gather_rows(arr(20, 3), idx, arr(4, 3))
    ops.fill_(arr(), 0)
    w, g, sc = arr(30), arr(30), arr(4)
    ops.sgd_dev(w, g, sc, 0.01)
    ops.momentum_dev(w, arr(30), g, sc, 0.9, 0.01, True)
    ops.adam_dev(w, arr(30), arr(30), g, sc, 0.9, 0.999, 0.01, True)
    a, wl, b, z = arr(4, 5), arr(5, 3), arr(3), arr(4, 3)
    for act in co._ACT:
        ops.linear_act(a, wl, b, act, z)
        ops.activation(act, z)
        grad = arr(4, 3)
        ops.activation_backward(act, grad, z, grad)
        ops.output_delta(act, "mse", z, z, arr(4, 3), normalizer=9, out=arr(4, 3))
    ops.linear(a, wl, b, z)
    ops.linear_relu(a, wl, b, z)
    ops.relu_backward(arr(4, 3), z, arr(4, 3))
    ops.sub_scaled(z, arr(4, 3), 0.25, arr(4, 3))


# ----- the kernels' maths, run on the CPU ---------------------------------------------------------
# Every kernel source compiled with the host C++ compiler and run on NumPy memory: the
# ElementwiseKernel bodies in a loop shaped like CuPy's (inputs const references, outputs
# references, raw arrays indexable, T the float type), the row kernels (_ROW_SRC, as given
# to RawModule) with CUDA's thread indices emulated (the loss sum's 256 threads as real
# threads meeting at __syncthreads). A step of CupyGraphOps then gives the numbers of the
# NumPy step (BufferOps) -- forward, loss sum, gradients, every optimizer, predictions.

_EK_PRELUDE = r"""
#include <cmath>
using std::max; using std::exp; using std::log; using std::tanh; using std::fabs; using std::sqrt;
template <typename V> struct Raw { const V* p; const V& operator[](long long i) const { return p[i]; } };
"""
_ROWS_PRELUDE = r"""
#include <cmath>
#include <barrier>
#include <thread>
#include <vector>
using std::exp; using std::log;
struct Dim { long long x; };
static thread_local Dim threadIdx, blockIdx;
static Dim blockDim;
static std::barrier<>* _bar = nullptr;
static void __syncthreads() { if (_bar) _bar->arrive_and_wait(); }
#define __global__
#define __shared__ static
"""
_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.uint8): "unsigned char",
          np.dtype(np.int64): "long long", np.dtype(np.bool_): "bool"}
_LIBS = {}


def _cxx(src, name):
    """``src`` compiled into a shared library (once per source in a session)."""
    import hashlib
    import shutil
    import subprocess
    import tempfile
    lib = _LIBS.get(src)
    if lib is not None:
        return lib
    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler (g++ or clang++) to run the kernel sources on the CPU")
    d = _LIBS.get("dir")
    if d is None:  # the first compile of this process: one folder, removed at exit
        import atexit
        d = _LIBS["dir"] = tempfile.mkdtemp(prefix="mlpb-kernels-")
        atexit.register(shutil.rmtree, d, True)
    stem = f"{d}/{name}_{hashlib.sha1(src.encode()).hexdigest()[:10]}"
    with open(stem + ".cpp", "w") as f:
        f.write(src)
    out = subprocess.run([cxx, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-o", stem + ".so",
                          stem + ".cpp"], capture_output=True, text=True)
    if out.returncode and "barrier" in out.stderr and "#include <barrier>" in src:
        pytest.skip(f"{cxx} has no C++20 <barrier> (needed to emulate __syncthreads)")
    assert out.returncode == 0, out.stderr[-3000:]
    lib = _LIBS[src] = ctypes.CDLL(stem + ".so")
    return lib


def _words(text):
    return [p.split() for p in text.split(",")]


def _ek_function(spec, types, fid):
    """C++ of one ElementwiseKernel as CuPy shapes it: inputs const references (raw ones
    indexable), outputs references, the body in a loop over the flat index ``i``."""
    cty = lambda ty: types[ty] if len(ty) == 1 else "bool" if ty == "bool" else _CTYPE[np.dtype(ty)]  # noqa: E731
    ins, outs = _words(spec.i), _words(spec.o)
    params = [f"const {cty(w[-2])}* _{w[-1]}" for w in ins] + [f"{cty(w[-2])}* _{w[-1]}" for w in outs]
    raws = [f"const Raw<{cty(w[-2])}> {w[-1]}{{_{w[-1]}}};" for w in ins if w[0] == "raw"]
    refs = [f"const {cty(w[-2])}& {w[-1]} = _{w[-1]}[i];" for w in ins if w[0] != "raw"]
    refs += [f"{cty(w[-2])}& {w[-1]} = _{w[-1]}[i];" for w in outs]
    tag = "__".join(f"{k}_{v.replace(' ', '_')}" for k, v in sorted(types.items()))
    typedefs = " ".join(f"typedef {v} {k};" for k, v in types.items())
    return (f'extern "C" void {fid}__{tag}({", ".join(params)}, long long n) {{\n  {typedefs}\n  '
            f'{" ".join(raws)}\n  for (long long i = 0; i < n; ++i) {{\n    {" ".join(refs)}\n    {spec.body};\n  }}\n}}\n')


class Spec:  # what ElementwiseKernel is given
    def __init__(self, i, o, body, name):
        self.i, self.o, self.body, self.name = i, o, body, name


def all_kernel_specs():
    """Every ElementwiseKernel of CupyOps and CupyGraphOps, as :class:`Spec` (what
    ElementwiseKernel is given); the NVRTC test of test_graphs.py compiles these too."""
    ops = co.CupyGraphOps.__new__(co.CupyGraphOps)
    ops._gk, ops._k, ops.m = {}, {}, types.SimpleNamespace(ElementwiseKernel=Spec)
    names = ["bias_add", "gather", "gather_scale", "fill", "sgd", "momentum", "adam"]
    names += [f"{k}:{a}" for a in co._ACT for k in ("act", "bias_act", "mse_delta")]
    names += [f"act_bwd:{a}" for a in co._ACT if co._ACT[a][1]]
    specs = [ops._g(n) for n in names]
    return specs + [co.CupyOps._kernel(ops, n) for n in ("bias_relu", "relu_bwd", "scale", "sub_scaled", "sgd",
                                                          "momentum", "adam")]


def _ek_library():
    """Every ElementwiseKernel of CupyOps/CupyGraphOps for float32 and float64 (X: the
    gathered rows' dtype, uint8 or the float type), in one library."""
    src, ids = [_EK_PRELUDE], {}
    for spec in all_kernel_specs():  # two kernels may share a name (CuPy keys its cache on the source)
        fid = ids[(spec.name, spec.body)] = f"k{len(ids)}"
        used = {w[-2] for w in _words(spec.i) + _words(spec.o)}
        for t in ("float", "double"):
            for x in ((t, "unsigned char") if "X" in used else (None,)):
                tys = {**({"T": t} if "T" in used else {}), **({"X": x} if x else {})}
                if "T" in used or x != "unsigned char" or t == "float":
                    src.append(_ek_function(spec, tys, fid))
    return _cxx("".join(src), "elementwise"), ids


class CpuEK:
    """ElementwiseKernel on the CPU: the compiled function for the call's dtypes, CuPy's
    broadcasting of non-raw inputs to the output's shape."""

    def __init__(self, ins, outs, body, name):
        self.lib, ids = _ek_library()
        self.fid = ids[(name, body)]  # the very kernel the library was built from
        self.ins, self.outs, self.name = _words(ins), _words(outs), name

    def __call__(self, *args):
        assert len(args) == len(self.ins) + len(self.outs), self.name
        outs = args[len(self.ins):]
        shape = outs[0].shape
        types = {}
        for w, arg in zip(self.ins + self.outs, args):
            if isinstance(arg, np.ndarray) and len(w[-2]) == 1:
                types.setdefault(w[-2], _CTYPE[arg.dtype])
        ptrs, keep = [], []
        for w, arg in zip(self.ins + self.outs, args):
            ty, raw = w[-2], w[0] == "raw"
            dt = (np.dtype({v: k for k, v in _CTYPE.items()}[types[ty]]) if len(ty) == 1
                  else np.dtype(bool) if ty == "bool" else np.dtype(ty))
            if raw or any(arg is o for o in outs):
                assert arg.flags.c_contiguous and arg.dtype == dt, (self.name, w)
                a = arg
            else:  # CuPy broadcasts non-raw inputs to the output's shape
                a = np.ascontiguousarray(np.broadcast_to(np.asarray(arg, dtype=dt), shape))
            keep.append(a)
            ptrs.append(ctypes.c_void_p(a.ctypes.data))
        tag = "__".join(f"{k}_{v.replace(' ', '_')}" for k, v in sorted(types.items()))
        fn = getattr(self.lib, f"{self.fid}__{tag}")
        fn.restype = None
        fn(*ptrs, ctypes.c_longlong(int(np.prod(shape))))
        return outs[0]


class CpuRawModule:
    """RawModule(code=...): the code as given, compiled for the CPU; a launch runs CUDA's
    grid x block threads in turn, or as real threads where the kernel synchronises."""

    def __init__(self, code):
        self.code, wrappers = code, []
        for name, params in _signatures().items():
            decl = ", ".join(f"{t} a{i}" for i, t in enumerate(params))
            call = ", ".join(f"a{i}" for i in range(len(params)))
            wrappers.append(f"""
extern "C" void launch_{name}({decl}, long long grid, long long block, int threads) {{
  blockDim.x = block;
  if (!threads) {{
    for (long long b = 0; b < grid; ++b) for (long long t = 0; t < block; ++t) {{
      blockIdx.x = b; threadIdx.x = t; {name}({call}); }}
    return;
  }}
  std::barrier<> bar(block); _bar = &bar;
  std::vector<std::thread> ts;
  for (long long t = 0; t < block; ++t) ts.emplace_back([=] {{ blockIdx.x = 0; threadIdx.x = t; {name}({call}); }});
  for (auto& th : ts) th.join();
  _bar = nullptr;
}}""")
        self.lib = _cxx(_ROWS_PRELUDE + code + "\n".join(wrappers), "rows")

    def get_function(self, name):
        fn = getattr(self.lib, f"launch_{name}")
        fn.restype = None
        params = _signatures()[name]
        body = self.code.split(f"void {name}(")[1].split("__global__")[0]

        def launch(grid, block, args):
            assert len(grid) == len(block) == 1
            cargs = []
            for ctype, a in zip(params, args):
                if "*" in ctype:
                    assert a.flags.c_contiguous
                    cargs.append(ctypes.c_void_p(a.ctypes.data))
                else:
                    cargs.append(np.ctypeslib.as_ctypes_type(np.asarray(a).dtype)(a))
            fn(*cargs, ctypes.c_longlong(grid[0]), ctypes.c_longlong(block[0]), ctypes.c_int("__syncthreads" in body))
        return launch


def _as_dev(ws):
    """A Workspace whose arrays are Dev views (the same memory)."""
    from mlp_backend.backends import FlatDict
    for key, v in list(vars(ws).items()):
        if isinstance(v, np.ndarray):
            setattr(ws, key, v.view(Dev))
        elif isinstance(v, tuple):
            setattr(ws, key, tuple(a.view(Dev) for a in v))
        elif isinstance(v, FlatDict):
            setattr(ws, key, FlatDict({k: a.view(Dev) for k, a in v.items()}, v.flat.view(Dev), v.layout))
        elif isinstance(v, dict):
            setattr(ws, key, {k: a.view(Dev) for k, a in v.items()})
    ws.gw = {i: ws.grads[f"w{i}"] for i in ws.gw}
    ws.gb = {i: ws.grads[f"b{i}"] for i in ws.gb}
    ws._grad_views, ws._grad_flat = dict(ws.grads), ws.grads.flat
    return ws


@pytest.mark.parametrize("activations,output,loss", [
    (("relu", "tanh"), "softmax", "cross_entropy"), (("sigmoid", "leaky_relu"), "softmax", "mse"),
    (("identity", "tanh"), "sigmoid", "mse"), (("leaky_relu", "relu"), "identity", "mse")])
@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adamw", "adam"])
def test_graph_step_kernels_compute_the_numpy_step(fake, activations, output, loss, optimizer):
    import mlp_backend as mb
    from mlp_backend.backends import FlatDict
    from mlp_backend.backends.workspace import LayerKernels
    from mlp_backend.optim import make_optimizer
    ops, _ = fake()
    ops.m.ElementwiseKernel, ops.m.RawModule = CpuEK, CpuRawModule
    rng = np.random.default_rng(3)
    m, sizes = 37, (6, 9, 7, 4)
    x8 = rng.integers(0, 256, (50, sizes[0]), dtype=np.uint8)
    labels = rng.integers(0, sizes[-1], 50)
    onehot = np.eye(sizes[-1])[labels]
    idx = rng.permutation(50)[:m].astype(np.int64)
    results = []
    for graph in (False, True):
        model = mb.MLP(list(sizes), list(activations), output=output, loss=loss, device="cpu", dtype="float64", seed=0)
        opt = make_optimizer(optimizer, 0.05, 0.01)
        k = model.ops if not graph else ops
        p = model.params
        if graph:  # the step's operands as 'device' arrays
            p = model.params = FlatDict({key: v.view(Dev) for key, v in p.items()}, p.flat.view(Dev), p.layout)
        ws = model.workspace(m)
        lk = LayerKernels(k, _as_dev(ws) if graph else ws)
        opt.bind(p, k)
        xf = dev(np.zeros((m, sizes[0])))
        tb = dev(np.zeros((m, sizes[-1])))
        acc, preds = np.zeros(()), np.zeros(m, np.int64)
        for t in range(1, 4):
            k.gather_cast_scale(x8, idx, np.float64, 1 / 255, np.zeros((m, sizes[0]), np.uint8), xf)
            k.gather_rows(onehot, idx, tb)
            cache = model.forward(xf, lk)
            model.loss_sum_(cache, tb, acc, lk)
            grads = model.backward(cache, tb, None, lk)
            opt.update(p, grads, k, np.asarray(opt.step_scalars(t), np.float64))
            k.argmax_rows(cache.output, preds)
        results.append((np.array(p.flat), acc.copy(), preds.copy(), np.array(xf), np.array(tb),
                        {kind: np.array(opt.state[kind].flat) for kind in opt.buffer_names}))
    (pn, an, qn, xn, tn, sn), (pg, ag, qg, xg, tg, sg) = results
    np.testing.assert_array_equal(xg, xn)  # the gathered, scaled rows
    np.testing.assert_array_equal(tg, tn)
    np.testing.assert_allclose(pg, pn, rtol=1e-11, atol=1e-13)
    for kind in sn:
        np.testing.assert_allclose(sg[kind], sn[kind], rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(ag, an, rtol=1e-11)
    np.testing.assert_array_equal(qg, qn)


class DevH2D(np.ndarray):
    """A NumPy array whose ``.data`` copies from host memory as CuPy's MemoryPointer does."""

    @property
    def data(self):
        def copy_from_host_async(src, nbytes, stream):
            assert stream is not None and nbytes == self.nbytes
            ctypes.memmove(self.ctypes.data, src, nbytes)
        return types.SimpleNamespace(ptr=self.ctypes.data, copy_from_host_async=copy_from_host_async)


def pointer_views(monkeypatch, h2d=DevH2D):
    """CupyGraphOps.gemm and copy_in on NumPy buffers, which have no ``.data.ptr``: they get
    views of the same memory that do (``h2d`` for copy_in's destination)."""
    real_gemm, real_copy_in = co.CupyGraphOps.gemm, co.CupyGraphOps.copy_in
    monkeypatch.setattr(co.CupyGraphOps, "gemm", lambda self, a, b, out, ta=False, tb=False: (
        real_gemm(self, a.view(Dev), b.view(Dev), out.view(Dev), ta, tb), out)[1])
    monkeypatch.setattr(co.CupyGraphOps, "copy_in", lambda self, dst, host: real_copy_in(self, dst.view(h2d), host))


@pytest.mark.parametrize("optimizer,batch_size", [("adamw", 64), ("nesterov", 64), ("sgd", None)])
def test_runner_epochs_on_graph_ops(fake, monkeypatch, optimizer, batch_size):
    """Trainer.fit through an EagerRunner with CupyGraphOps (its kernels run
    on the CPU as above, its cuBLAS calls on the stand-in, its pinned staging copies and
    events faked): the epochs of the NumPy path, with a partial last batch, a fresh shuffle
    per epoch, the schedule's learning rates from the device table, the loss and accuracy."""
    import mlp_backend as mb
    from mlp_backend.training import trainer as train_mod
    from mlp_backend.training.runner import EagerRunner
    from mlp_backend.optim import make_optimizer, make_schedule
    from conftest import blobs

    ops, _ = fake()
    ops.m.ElementwiseKernel, ops.m.RawModule = CpuEK, CpuRawModule
    ops.m.cuda = types.SimpleNamespace(alloc_pinned_memory=lambda n: bytearray(n))
    ops.m.take, ops.m.copyto = np.take, np.copyto  # CuPy's, used outside the steps
    ops.stream.record = lambda: types.SimpleNamespace(synchronize=lambda: None)
    pointer_views(monkeypatch)

    def fit(graph_ops):
        if graph_ops:
            monkeypatch.setattr(train_mod, "epoch_runner",
                                lambda tr, x, y, mode, log: EagerRunner(tr, x, y, "eager", ops))
        x, y = blobs(n=300, n_features=8, n_classes=3)
        model = mb.MLP([8, 16, 12, 3], ["relu", "tanh"], device="cpu", seed=0, dtype="float64")
        opt = make_optimizer(optimizer, 0.05, 0.01)
        tr = Trainer(model, opt, batch_size=batch_size, schedule=make_schedule("cosine", 0.05, 3, warmup=1),
                     seed=1, progress="none", log=lambda *_: None)
        tr.fit(x, y, 3)
        return model.host_params(), tr.history
    from mlp_backend.training.trainer import Trainer
    want_p, want_h = fit(False)
    got_p, got_h = fit(True)
    for k in want_p:
        np.testing.assert_allclose(got_p[k], want_p[k], rtol=1e-10, atol=1e-12, err_msg=k)
    assert got_h["train_accuracy"] == want_h["train_accuracy"]
    np.testing.assert_allclose(got_h["train_loss"], want_h["train_loss"], rtol=1e-10)


def test_no_garbage_collection_during_a_capture():
    """A collection inside the capture could finalize an unreachable runner, whose
    cublasDestroy synchronises the device: invalid during a capture. The capture runs with
    the collector off and restores it afterwards, also when the capture fails."""
    import contextlib
    import gc
    from mlp_backend.backends.capture import GraphStream
    seen = []

    class Stream:
        def begin_capture(self):
            seen.append(("begin", gc.isenabled()))

        def end_capture(self):
            seen.append(("end", gc.isenabled()))
            return "graph"
    gs = GraphStream.__new__(GraphStream)
    gs.stream = Stream()
    gs.cp = types.SimpleNamespace(cuda=types.SimpleNamespace(using_allocator=lambda f: contextlib.nullcontext()))

    class Runner:  # GraphRunner's part: capture its epoch's steps
        from mlp_backend.training.runner import GraphRunner
        _capture = GraphRunner._capture
    runner = Runner()
    runner.gs = gs
    runner._steps = lambda: seen.append(("steps", gc.isenabled()))
    assert gc.isenabled()
    runner._capture()
    assert seen == [("begin", False), ("steps", False), ("end", False)] and runner.graph == "graph"
    assert gc.isenabled()

    def broken():
        raise RuntimeError("simulated")
    runner._steps = broken
    with pytest.raises(RuntimeError, match="simulated"):
        runner._capture()
    assert gc.isenabled()
    gc.disable()
    try:  # a caller's disabled collector stays disabled
        runner._steps = lambda: None
        runner._capture()
        assert not gc.isenabled()
    finally:
        gc.enable()
