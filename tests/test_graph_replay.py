"""GraphRunner's capture and replay, emulated on the CPU (no GPU, no CuPy).

A CUDA graph records the kernel launches and cuBLAS calls issued on the capturing stream;
each replay runs them again on the same device memory, every scalar argument as it was at
capture. Here a fake ``cupy`` and the stand-in cuBLAS of test_cupy_graph_ops.py do the
same: while the fake stream captures, CupyGraphOps' ElementwiseKernel calls, RawModule
launches, ``cupy.copyto`` and cuBLAS GEMMs are recorded instead of run (the kernels are the
real CUDA sources compiled for the CPU), and ``Graph.launch`` runs the records: arrays by
reference (their memory is read at replay), scalars by value (frozen at capture), alpha and
beta read at capture (cuBLAS's host pointer mode). As under a real capture, host work done
during a capture -- a NumPy call, a host copy of a device value -- happens once, at
capture, and never at a replay; a host-to-device copy, an allocation, a NumPy gather or a
launch on another stream while capturing raises.

So ``GraphRunner`` (warm-up with saved-and-restored state, one capture, a fresh
permutation and the schedule's device table written before every replay, the optimizer
step count, adoption of replaced parameters) is run here epoch after epoch against the
eager NumPy path: a per-epoch quantity frozen into the graph gives different parameters
from the second epoch on. The mutants at the end show the comparison catches that.
What this cannot show: what CUDA itself does (cuBLAS picking another kernel under capture,
asynchrony between streams, NVRTC compiling) -- the ``gpu`` tests of test_graphs.py do.
"""
import contextlib
import ctypes
import dataclasses
import sys
import types

import numpy as np
import pytest

import mlp_backend as mb
from mlp_backend.training import trainer as train_mod
from mlp_backend.backends import cupy_ops as co
from mlp_backend.training.runner import EagerRunner, GraphRunner
from mlp_backend.training.step import TrainingStep
from mlp_backend.optim import make_optimizer, make_schedule
from mlp_backend.training.trainer import Trainer

from conftest import blobs
from test_cupy_graph_ops import CpuEK, CpuRawModule, FakeCublas, dev, pointer_views
from test_graphs import _assert_bitwise, _state


class Device:
    """The CUDA device: whatever is launched or captured goes to the stream on top."""

    def __init__(self):
        self.default = Stream(self)
        self.current = [self.default]
        self.capturing = None  # (stream, records) while a stream captures
        self.allocator = None  # cupy.cuda.using_allocator's, while set
        self.captures = self.launches = 0

    def issue(self, what, fn):
        """Run ``fn`` now, or record it when the current stream captures."""
        if self.capturing is None:
            fn()
            return
        stream, records = self.capturing
        if self.current[-1] is not stream:
            raise RuntimeError(f"{what} launched on another stream while a stream captures")
        records.append((what, fn))

    def host_only(self, what):
        if self.capturing is not None:
            raise RuntimeError(f"{what} while a stream captures: it would run once, at capture")


class Stream:
    def __init__(self, device, non_blocking=False):
        self.d, self.ptr = device, id(self)
        self.waited_for = []  # the streams whose events this one waited for, in order

    def __enter__(self):
        self.d.current.append(self)
        return self

    def __exit__(self, *exc):
        assert self.d.current.pop() is self

    def record(self):
        self.d.host_only("an event record")  # not captured by this emulation (the runner needs none)
        return types.SimpleNamespace(synchronize=lambda: None, stream=self)

    def wait_event(self, event):
        self.d.host_only("a stream wait")
        self.waited_for.append(event.stream)

    def begin_capture(self):
        if self.d.capturing is not None:
            raise RuntimeError("a stream is capturing already")
        if self.d.current[-1] is not self:
            raise RuntimeError("capture begun on a stream that is not current: the kernels would miss it")
        self.d.capturing = (self, [])

    def end_capture(self):
        stream, records = self.d.capturing
        assert stream is self
        self.d.capturing = None
        self.d.captures += 1
        return Graph(self.d, records)


class Graph:
    def __init__(self, device, records):
        self.d, self.records = device, records

    def launch(self, stream=None):
        self.d.host_only("a graph launch")
        self.d.launches += 1
        for _, fn in self.records:
            fn()


class RecordingEK(CpuEK):
    def __init__(self, device, *spec):
        super().__init__(*spec)
        self.d = device

    def __call__(self, *args):
        assert len(args) == len(self.ins) + len(self.outs), self.name  # CuPy would allocate the rest
        self.d.issue(self.name, lambda: CpuEK.__call__(self, *args))
        return args[len(self.ins)]


class RecordingRawModule(CpuRawModule):
    def __init__(self, device, code):
        super().__init__(code)
        self.d = device

    def get_function(self, name):
        launch = super().get_function(name)
        return lambda grid, block, args: self.d.issue(name, lambda: launch(grid, block, args))


class RecordingCublas(FakeCublas):
    """The stand-in cuBLAS; while capturing, a GEMM is recorded with alpha and beta read now."""

    def __init__(self, device):
        super().__init__()
        self.d, self.stream_ptr = device, None

    def set_stream(self, h, ptr):
        super().set_stream(h, ptr)
        self.stream_ptr = ptr

    def _gemm(self, dtype, h, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
        if self.d.capturing is None:
            return super()._gemm(dtype, h, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
        if self.stream_ptr != self.d.capturing[0].ptr:
            raise RuntimeError("a cuBLAS call on a handle bound to another stream while a stream captures")
        item = np.dtype(dtype).itemsize
        al, be = (np.frombuffer((ctypes.c_char * item).from_address(p), dtype).copy() for p in (alpha, beta))
        self.d.capturing[1].append(("cublas gemm", lambda: super(RecordingCublas, self)._gemm(
            dtype, h, transa, transb, m, n, k, al.ctypes.data, A, lda, B, ldb, be.ctypes.data, C, ldc)))


def fake_cupy(device):
    def alloc(shape, dtype, fill):
        if device.allocator is not None:
            device.allocator(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        return dev(np.full(shape, fill, dtype))

    def take(*args, **kw):
        device.host_only("cupy.take (an allocating gather)")
        return np.take(*args, **kw)

    @contextlib.contextmanager
    def using_allocator(fn):
        before, device.allocator = device.allocator, fn
        try:
            yield
        finally:
            device.allocator = before

    def copyto(dst, src, **kw):
        device.issue("cupy.copyto", lambda: np.copyto(dst, src, **kw))

    cuda = types.SimpleNamespace(Stream=lambda non_blocking=False: Stream(device, non_blocking),
                                 get_current_stream=lambda: device.current[-1], using_allocator=using_allocator,
                                 alloc_pinned_memory=lambda n: bytearray(n))
    mod = types.ModuleType("cupy")
    mod.__dict__.update(
        cuda=cuda, uint8=np.uint8, take=take, copyto=copyto, ascontiguousarray=np.ascontiguousarray,
        empty=lambda shape, dtype: alloc(shape, dtype, 0), ones=lambda shape, dtype: alloc(shape, dtype, 1),
        ElementwiseKernel=lambda *spec: RecordingEK(device, *spec),
        RawModule=lambda code: RecordingRawModule(device, code),
        ndarray=type("ndarray", (), {}))  # array_api_compat.is_cupy_array: no array here is CuPy's
    return mod


class ContextDevice(str):
    """NumPy's device "cpu", usable as ``with device:`` (as a CuPy Device is)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def emulated(monkeypatch):
    """Every Trainer trains through GraphRunner (``cuda_graphs='on'``) on the emulated
    device, for models moved there by :func:`_on_fake_gpu`; returns the :class:`Device`."""
    return install_emulation(monkeypatch)


def install_emulation(monkeypatch):
    """The fake ``cupy`` and ``nvmath`` in ``sys.modules`` and the patches of the fixture
    above, undone by ``monkeypatch``; returns the :class:`Device`
    (benchmarks/capture_host_cost.py uses it too)."""
    device = Device()
    cublas = RecordingCublas(device)
    nvmath = types.ModuleType("nvmath")
    nvmath.bindings = types.ModuleType("nvmath.bindings")
    nvmath.bindings.cublas = cublas
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(device))
    monkeypatch.setitem(sys.modules, "nvmath", nvmath)
    monkeypatch.setitem(sys.modules, "nvmath.bindings", nvmath.bindings)

    class H2D(np.ndarray):  # a device buffer: copies from pinned host memory, never while capturing
        @property
        def data(self):
            def copy_from_host_async(src, nbytes, stream):
                device.host_only("a host-to-device copy")
                assert nbytes == self.nbytes and stream is not None
                ctypes.memmove(self.ctypes.data, src, nbytes)
            return types.SimpleNamespace(ptr=self.ctypes.data, copy_from_host_async=copy_from_host_async)

    pointer_views(monkeypatch, H2D)
    monkeypatch.setattr(train_mod, "epoch_runner",
                        lambda tr, x, y, mode, log: GraphRunner(tr, x, y, strict=True, log=log))
    return device


def _model(sizes=(8, 16, 12, 3), activations=("relu", "tanh"), output="softmax", loss="cross_entropy",
           dtype="float64"):
    return mb.MLP(list(sizes), list(activations), output=output, loss=loss, device="cpu", seed=0, dtype=dtype)


def _on_fake_gpu(model):
    """``model`` (made on the CPU) as if on the emulated device: its device usable as ``with``."""
    model.backend = dataclasses.replace(model.backend, device=ContextDevice("cpu"))
    return model


def _trainer(model, optimizer, batch_size, epochs, wd=0.01, normalizer=None):
    opt = make_optimizer(optimizer, 0.05, wd) if isinstance(optimizer, str) else optimizer
    return Trainer(model, opt, batch_size=batch_size, schedule=make_schedule("cosine", 0.05, epochs, warmup=1),
                   seed=1, progress="none", log=lambda *_: None, normalizer=normalizer)


def _assert_close(got, want, rtol=1e-10):
    """:func:`test_graphs._assert_bitwise` within ``rtol``: the CUDA sources compiled for the
    CPU round some functions (tanh, exp) differently from NumPy."""
    (gp, gs, gh), (wp, ws, wh) = got, want
    assert gp.keys() == wp.keys() and gs.keys() == ws.keys()
    for k in wp:
        np.testing.assert_allclose(gp[k], wp[k], rtol=rtol, atol=1e-12, err_msg=k)
    for k in ws:
        np.testing.assert_allclose(gs[k], ws[k], rtol=rtol, atol=1e-12, err_msg=k)
    np.testing.assert_allclose([r["train_loss"] for r in gh], [r["train_loss"] for r in wh], rtol=rtol)
    assert [{k: v for k, v in r.items() if k != "train_loss"} for r in gh] == \
        [{k: v for k, v in r.items() if k != "train_loss"} for r in wh]


def _fit_both(emulated, optimizer, batch_size, epochs=3, model_kw=None, wd=0.01, normalizer=None):
    x, y = blobs(n=300, n_features=8, n_classes=3)
    eager = _model(**(model_kw or {}))
    tr_e = _trainer(eager, optimizer, batch_size, epochs, wd, normalizer)
    with pytest.MonkeyPatch.context() as mp:  # the NumPy path, as a user gets it
        mp.setattr(train_mod, "epoch_runner", lambda tr, x, y, mode, log: EagerRunner(tr, x, y, "eager"))
        tr_e.fit(x, y, epochs)
    graph = _on_fake_gpu(_model(**(model_kw or {})))
    tr_g = _trainer(graph, optimizer, batch_size, epochs, wd, normalizer)
    tr_g.fit(x, y, epochs)
    return _state(graph, tr_g.optimizer, tr_g), _state(eager, tr_e.optimizer, tr_e), tr_g


@pytest.mark.parametrize("optimizer,batch_size", [
    ("adamw", 64), ("adam", 64), ("nesterov", 64), ("momentum", 100), ("sgd", 64), ("gd", None), ("adam", None)])
def test_replayed_epochs_train_as_the_numpy_path(emulated, optimizer, batch_size):
    """One capture, one replay per epoch, and the parameters, optimizer state, step count,
    losses and accuracies of the eager NumPy path: a fresh shuffle and the schedule's
    learning rate every epoch, the partial last batch (300 = 4 x 64 + 44), full batch."""
    got, want, tr = _fit_both(emulated, optimizer, batch_size)
    assert tr.graph_status.startswith("captured: one CUDA graph per epoch")
    assert (emulated.captures, emulated.launches) == (1, 3)
    _assert_close(got, want)


@pytest.mark.parametrize("activations,output,loss", [
    (("sigmoid", "leaky_relu"), "softmax", "mse"), (("identity", "tanh"), "sigmoid", "mse")])
def test_replayed_epochs_for_the_mse_kernels(emulated, activations, output, loss):
    model_kw = dict(activations=activations, output=output, loss=loss)
    got, want, _ = _fit_both(emulated, "momentum", 64, model_kw=model_kw)
    assert (emulated.captures, emulated.launches) == (1, 3)
    _assert_close(got, want)


def test_replayed_epochs_of_the_paper_presets(emulated):
    """What ``mlp-backend reproduce --device cuda`` trains: full-batch gradient descent,
    float64, sigmoid outputs with the squared error, every gradient divided by the number
    of input features (the printed code's quirk) instead of the rows."""
    model_kw = dict(activations=("relu", "tanh"), output="sigmoid", loss="mse")
    got, want, tr = _fit_both(emulated, "gd", None, epochs=4, model_kw=model_kw, wd=0.0, normalizer=8)
    assert tr.graph_status.startswith("captured") and "full batch of 300 rows" in tr.graph_status
    assert (emulated.captures, emulated.launches) == (1, 4)
    _assert_close(got, want)


def test_capture_and_replay_give_the_bits_of_running_the_same_steps(emulated, monkeypatch):
    """Replays against the same runner with capture switched off (the same kernels run
    eagerly on the same stream): bitwise equal, as the gpu tests demand of the device."""
    x, y = blobs(n=300, n_features=8, n_classes=3)
    states = []
    for capture in (True, False):
        monkeypatch.setattr(GraphRunner, "capture", capture)
        model = _on_fake_gpu(_model(dtype="float32"))
        tr = _trainer(model, "adamw", 64, 4)
        tr.fit(x, y, 4)
        states.append(_state(model, tr.optimizer, tr))
    assert (emulated.captures, emulated.launches) == (1, 4)
    _assert_bitwise(*states)


def test_epoch_by_epoch_fits_capture_once_and_resume_mid_run(emulated, tmp_path):
    """fit(x, y, epoch + 1) four times replays one graph; a checkpoint after two epochs,
    loaded into a new model and trainer (parameters and Adam state adopted into new
    captured buffers), ends where the uninterrupted run ends."""
    from mlp_backend.training.checkpoint import load_checkpoint, save_checkpoint
    x, y = blobs(n=300, n_features=8, n_classes=3)
    straight = _on_fake_gpu(_model())
    tr_s = _trainer(straight, "adam", 64, 4)
    for e in range(4):
        tr_s.fit(x, y, e + 1)
    assert (emulated.captures, emulated.launches) == (1, 4)
    half = _on_fake_gpu(_model())
    tr = _trainer(half, "adam", 64, 4)
    tr.fit(x, y, 2)
    path = save_checkpoint(tmp_path / "half.npz", half, tr.optimizer, tr)
    ck = load_checkpoint(path, device="cpu")
    tr2 = _trainer(_on_fake_gpu(ck.model), ck.optimizer, 64, 4)
    ck.restore(tr2)
    tr2.fit(x, y, 4)
    assert (emulated.captures, emulated.launches) == (3, 8)
    _assert_bitwise(_state(ck.model, tr2.optimizer, tr2), _state(straight, tr_s.optimizer, tr_s))


def test_a_failed_capture_falls_back_without_a_trace(emulated, monkeypatch):
    """A launch failing inside the capture: the capture is ended, ``auto`` logs one line and
    trains eagerly with the bits of the NumPy path (the warm-up step's parameters and state
    were restored), and ``on`` raises GraphUnavailable with the cause."""
    from mlp_backend.training.runner import GraphUnavailable
    real = RecordingEK.__call__

    def call(self, *args):
        if self.d.capturing is not None and self.name == "mlpb_sub_scaled":
            raise RuntimeError("simulated launch failure during capture")
        return real(self, *args)
    monkeypatch.setattr(RecordingEK, "__call__", call)
    logs = []
    monkeypatch.setattr(train_mod, "epoch_runner", lambda tr, x, y, mode, log: GraphRunner(
        tr, x, y, strict=False, log=logs.append))
    got, want, tr = _fit_both(emulated, "adam", 64)
    assert emulated.capturing is None and emulated.launches == 0
    assert tr.graph_status.startswith("eager: the CUDA graph capture failed (RuntimeError: simulated")
    assert len(logs) == 1 and logs[0].startswith("cuda graphs: eager: the CUDA graph capture failed")
    _assert_bitwise(got, want)
    monkeypatch.setattr(train_mod, "epoch_runner", lambda tr, x, y, mode, log: GraphRunner(
        tr, x, y, strict=True, log=logs.append))
    with pytest.raises(GraphUnavailable, match="simulated launch failure during capture"):
        _fit_both(emulated, "adam", 64)
    assert emulated.capturing is None


def test_the_streams_wait_for_each_other(emulated):
    """The runner's stream waits for the caller's before it makes its buffers and before
    every epoch; the caller's waits for the runner's after both (the parameters are views
    of buffers the runner's stream wrote). Only the order of the waits is checked here."""
    x, y = blobs(n=300, n_features=8, n_classes=3)
    model = _on_fake_gpu(_model())
    tr = _trainer(model, "sgd", 64, 2)
    caller = emulated.default
    runner = GraphRunner(tr, x, y, strict=True)
    stream = runner.gs.stream
    assert stream.waited_for == [caller] and caller.waited_for == [stream]
    runner.run()
    runner.run()
    assert stream.waited_for == [caller] * 3 and caller.waited_for == [stream] * 3
    runner.close()


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("optimizer,wd,updates", [("sgd", 0.0, 1), ("adamw", 0.01, 2)])
def test_what_a_captured_step_launches(emulated, depth, optimizer, wd, updates):
    """The graph's nodes per step (what a replay costs on the GPU, where a step is ~70 us of
    work and each node adds its launch): a softmax cross-entropy net of ``depth`` layers
    takes 4 * depth - 1 GEMMs (per layer the forward product, the weight gradient, the bias
    gradient as a product with a ones row, and the input gradient but for the first layer)
    and 2 * depth + 5 kernels (the gathers of rows and of one-hot targets, a bias+activation
    per layer, softmax, its delta, the loss sum, the argmax, an activation backward per
    hidden layer) plus the optimizer update over the flat buffer: one launch, two with
    weight decay (weights and biases apart). docs/gpu.md predicts the GPU epoch from these
    counts: a change here changes it."""
    import collections
    x, y = blobs(n=300, n_features=8, n_classes=3)
    sizes = (8, *(16,) * (depth - 1), 3)
    model = _on_fake_gpu(_model(sizes=sizes, activations=("relu",) * (depth - 1), dtype="float32"))
    tr = _trainer(model, optimizer, 64, 1, wd=wd)
    tr.fit(x, y, 1)
    records, steps = tr._runner.graph.records, len(tr._runner.step.plan.batches)
    kinds = collections.Counter(what for what, _ in records)
    assert steps == 5 and kinds.pop("mlpb_fill") == 1  # the loss accumulator, once per epoch
    assert kinds.pop("cublas gemm") == steps * (4 * depth - 1)
    assert kinds.pop(f"mlpb_{optimizer.rstrip('w')}_dev") == steps * updates
    assert sum(kinds.values()) == steps * (2 * depth + 5), kinds


# ----- the emulation catches what a capture would freeze ---------------------------------------

def _frozen_learning_rate(monkeypatch):
    real = TrainingStep.__call__

    def step(self, i):  # the optimizer's scalar row copied on the host: its values of the capture
        rows, self.rows = self.rows, [r.copy() for r in self.rows]
        try:
            real(self, i)
        finally:
            self.rows = rows
    monkeypatch.setattr(TrainingStep, "__call__", step)


def _host_gather(monkeypatch):
    # the rows gathered by NumPy (no kernel): the permutation of the capture, every epoch
    monkeypatch.setattr(co.CupyGraphOps, "gather_cast_scale", lambda self, x, idx, dtype, scale=None, tmp=None,
                        out=None: (np.copyto(out, np.take(x, np.asarray(idx), axis=0) * (scale or 1)), out)[1])


def _host_loss_reset(monkeypatch):
    # the loss accumulator zeroed on the host: once, at capture, so the epochs' sums pile up
    monkeypatch.setattr(co.CupyGraphOps, "fill_", lambda self, x, value: (np.copyto(x, value), x)[1])


@pytest.mark.parametrize("mutant", [_frozen_learning_rate, _host_gather, _host_loss_reset])
def test_the_emulation_catches_host_work_frozen_into_the_graph(emulated, monkeypatch, mutant):
    """Each mutant does on the host what the runner does on the device; on a GPU the graph
    would replay the capture's values silently. Here it must show as a difference."""
    mutant(monkeypatch)
    got, want, _ = _fit_both(emulated, "sgd", 64)
    with pytest.raises(AssertionError):
        _assert_close(got, want)


def test_the_capture_host_cost_benchmark_runs(capsys):
    """benchmarks/capture_host_cost.py (docs/gpu.md's prediction of the capture epoch), small."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "capture_host_cost.py"
    spec = importlib.util.spec_from_file_location("capture_host_cost", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--rows", "600", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("5 steps, 116 nodes") == 3, out  # 23 per step and the loss accumulator's reset
    assert "cupy" not in sys.modules or getattr(sys.modules["cupy"], "__file__", None)  # the fake is gone
