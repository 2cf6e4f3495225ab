"""The epoch runner (mlp_backend/training/runner.py): the graph-ready step on the CPU, the
cuda_graphs option everywhere, and (``-m gpu``) the captured CUDA graph against eager runs."""
import ast
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import mlp_backend as mb
from mlp_backend.training import trainer as train_mod
from mlp_backend.backends import devices
from mlp_backend.backends import ops_for
from mlp_backend.training.runner import EagerRunner, GraphRunner, GraphUnavailable
from mlp_backend.optim import OPTIMIZERS, make_optimizer, make_schedule
from mlp_backend.training.trainer import Trainer

from conftest import TOL, blobs, hide_module, needs_gpu

PKG = pathlib.Path(mb.__file__).parent
SCHEDULES = {"constant": dict(name="constant"), "step": dict(name="step", step_size=2, gamma=0.5),
             "cosine": dict(name="cosine", warmup=1)}


def _fit(device, dtype, optimizer, schedule="constant", wd=0.0, batch_size=64, epochs=4, sizes=(8, 16, 3),
         runner=None, n=300, cuda_graphs="auto", callbacks=(), log=None, activation="relu",
         output="softmax", loss="cross_entropy"):
    """(model, optimizer, trainer) after ``epochs`` epochs; ``runner`` forces the static runner."""
    x, y = blobs(n=n, n_features=sizes[0], n_classes=sizes[-1])
    model = mb.MLP(list(sizes), activation, output=output, loss=loss, device=device, seed=0, dtype=dtype)
    b = model.backend
    opt = make_optimizer(optimizer, 0.05, wd)
    sched = make_schedule(lr=0.05, epochs=epochs, **SCHEDULES[schedule])
    tr = Trainer(model, opt, batch_size=batch_size, schedule=sched, seed=1, progress="none",
                 cuda_graphs=cuda_graphs, callbacks=callbacks, log=log or (lambda *_: None))
    tr.fit(b.asarray(x), b.asarray(y), epochs)
    return model, opt, tr


@pytest.fixture
def static_runner(monkeypatch):
    """Call it to make every later Trainer.fit use an EagerRunner with the model's kernels."""
    def on():
        monkeypatch.setattr(train_mod, "epoch_runner",
                            lambda tr, x, y, mode, log: EagerRunner(tr, x, y, "eager", tr.model.ops))
    return on


def gpu(fn):
    """The needs_gpu marks (``gpu``, skipped without a usable CUDA GPU)."""
    for mark in needs_gpu:
        fn = mark(fn)
    return fn


def _state(model, opt, tr):
    st = opt.state_dict(model.backend)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in tr.history.rows]
    return model.host_params(), {k: np.asarray(v) for k, v in st.items()}, strip


def _assert_bitwise(a, b):
    (pa, sa, ha), (pb, sb, hb) = a, b
    assert pa.keys() == pb.keys() and sa.keys() == sb.keys()
    for k in pa:
        assert np.array_equal(pa[k], pb[k]), k
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), k
    assert ha == hb


# ----- the step on the CPU: buffers made once, no allocation, no sync ------------------------------
# (that it trains bitwise as before the redesign: tests/test_step.py)

def _ready_runner(optimizer, wd=0.0):
    """An EagerRunner after one epoch (every lazy buffer made), on a net whose batch-sized
    arrays are >= 128 KiB, so that any per-step temporary shows up in tracemalloc's peak."""
    x, y = blobs(n=512, n_features=64, n_classes=128)
    model = mb.MLP([64, 256, 128], "relu", device="cpu", seed=0, dtype="float64")
    tr = Trainer(model, make_optimizer(optimizer, 0.01, wd), batch_size=128, seed=0, progress="none")
    xd, yd = model.backend.asarray(x), model.backend.asarray(y)
    runner = EagerRunner(tr, xd, yd, "eager", model.ops)
    runner.run()
    return tr, runner, xd, yd


def _peak_bytes(fn):
    """Peak traced memory of ``fn()`` above its start. NumPy's ufunc iterator keeps a
    fixed scratch of ``bufsize`` elements (8,192 by default: 64 KiB of float64) for
    broadcast operands; it is no array of ours, so the measurement shrinks it to 16."""
    old = np.setbufsize(16)
    tracemalloc.start()
    try:
        fn()  # once before measuring: first-call caches of numpy itself
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        np.setbufsize(old)


SMALLEST_TEMPORARY = 128 * 128 * 8  # one (batch, classes) float64 array


@pytest.mark.parametrize("optimizer,wd", [("sgd", 0.01), ("momentum", 0.0), ("nesterov", 0.0), ("adam", 0.0),
                                          ("adamw", 0.01)])
def test_a_step_allocates_nothing(optimizer, wd):
    """The device work of an epoch (4 steps: what a graph captures) allocates no array: its
    memory peak stays below the size of the smallest batch-sized array, while the same steps
    with the portable (allocating) kernels go above it (the control that the measurement
    sees temporaries)."""
    tr, runner, xd, yd = _ready_runner(optimizer, wd)
    steps = _peak_bytes(runner._steps)
    portable = EagerRunner(tr, xd, yd, "eager", ops_for(tr.model.xp, portable=True))
    allocating = _peak_bytes(portable._steps)
    assert allocating > SMALLEST_TEMPORARY, allocating
    assert steps < SMALLEST_TEMPORARY // 2, f"an epoch's steps allocated {steps} bytes at peak"


def test_the_runner_is_kept_between_fits_while_nothing_changes(static_runner):
    """One runner from fit to fit (what keeps a CUDA graph from being re-captured), bitwise
    the same training as one fit; a new one, the old closed, when the batch size or the
    optimizer's hyper-parameters change; dropping the trainer frees it (no cycle)."""
    import gc
    import weakref
    static_runner()
    whole = _fit("cpu", "float32", "momentum", "cosine", epochs=4)
    x, y = blobs(n=300)
    model = mb.MLP([8, 16, 3], device="cpu", seed=0)
    opt = make_optimizer("momentum", 0.05)
    tr = Trainer(model, opt, batch_size=64, schedule=make_schedule(lr=0.05, epochs=4, **SCHEDULES["cosine"]),
                 seed=1, progress="none", log=lambda *_: None)
    runners = []
    for e in range(4):
        tr.fit(x, y, e + 1)
        runners.append(tr_runner(tr))
    assert all(r is runners[0] for r in runners)
    _assert_bitwise(_state(model, opt, tr), _state(*whole))
    opt.momentum = 0.5  # a hyper-parameter a graph would have frozen
    tr.fit(x, y, 5)
    assert tr_runner(tr) is not runners[0] and runners[0].x is None  # the old one closed
    second = tr_runner(tr)
    tr.batch_size = 32
    tr.fit(x, y, 6)
    assert tr_runner(tr) is not second and second.x is None
    ref = weakref.ref(tr_runner(tr))
    gc.disable()
    try:
        del tr, runners, second
        assert ref() is None  # freed by reference counting alone: the runner holds its trainer weakly
    finally:
        gc.enable()


def test_a_step_never_syncs(monkeypatch, static_runner):
    """No host-sync helper runs inside an epoch of the runner; fit syncs once per epoch."""
    calls = []
    real = devices.to_numpy
    monkeypatch.setattr(devices, "to_numpy", lambda x: calls.append("to_numpy") or real(x))
    monkeypatch.setattr(devices.Backend, "synchronize", lambda self: calls.append("synchronize"))
    tr, runner, xd, yd = _ready_runner("adam")
    calls.clear()
    runner._steps()
    runner.run()
    assert calls == []
    static_runner()
    tr.fit(xd, yd, tr.epoch + 3)
    assert calls == ["to_numpy"] * 3


def test_step_scalars_are_the_host_formulas():
    opt = make_optimizer("adamw", 0.003, 0.1)
    opt.t = 7
    lr, decay, step, eps = opt.step_scalars(7)
    assert (lr, decay) == (0.003, 1.0 - 0.003 * 0.1)
    assert (step, eps) == opt._corrected(7)
    assert make_optimizer("sgd", 0.1).step_scalars(3) == (0.1, 1.0, 0.0, 0.0)


# ----- the option and its status on the CPU ------------------------------------------------------

def test_cuda_graphs_status_on_the_cpu():
    logs = []
    _, _, tr = _fit("cpu", "float32", "sgd", epochs=1, log=logs.append)
    assert tr.graph_status == "eager: CUDA graphs apply to --device cuda only"
    assert not any("cuda graphs" in line for line in logs)  # auto is silent off CUDA
    _, _, tr = _fit("cpu", "float32", "sgd", epochs=1, cuda_graphs="off")
    assert tr.graph_status == "eager: cuda_graphs='off'"


def test_cuda_graphs_on_fails_clearly_off_cuda():
    with pytest.raises(GraphUnavailable, match=r"cuda_graphs='on' cannot capture.*--device cuda only.*'auto'"):
        _fit("cpu", "float32", "sgd", epochs=1, cuda_graphs="on")
    assert issubclass(GraphUnavailable, mb.BackendError)


def test_cuda_graphs_rejects_unknown_modes():
    model = mb.MLP([4, 3], device="cpu")
    with pytest.raises(ValueError, match="cuda_graphs must be 'auto', 'on' or 'off', got 'yes'"):
        Trainer(model, make_optimizer("sgd", 0.1), cuda_graphs="yes")
    from mlp_backend.training.config import resolve_config
    assert resolve_config(None, cuda_graphs="off")["cuda_graphs"] == "off"
    assert resolve_config(None)["cuda_graphs"] == "auto"
    with pytest.raises(ValueError, match="--cuda-graphs must be one of auto, on, off"):
        resolve_config(None, cuda_graphs="always")


def test_cli_and_metrics_record_graph_status(tmp_path):
    from mlp_backend.apps import cli
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (300, 784), dtype=np.uint8)
    y = rng.integers(0, 10, 300).astype(np.uint8)
    data = tmp_path / "d.npz"
    np.savez(data, x_train=x, y_train=y, x_test=x[:50], y_test=y[:50])
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", str(data), "--epochs", "1", "--hidden", "8", "--quiet",
                     "--device", "cpu", "--cuda-graphs", "off", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["graph_status"] == "eager: cuda_graphs='off'" and m["config"]["cuda_graphs"] == "off"
    with pytest.raises(SystemExit):
        cli.main(["train", "--dataset", str(data), "--cuda-graphs", "maybe", "--device", "cpu"])


def test_estimator_takes_cuda_graphs():
    from mlp_backend.interop.estimator import MLPClassifier
    x, y = blobs(n=120)
    est = MLPClassifier(hidden=(8,), epochs=1, device="cpu", cuda_graphs="off")
    assert est.get_params()["cuda_graphs"] == "off"
    est.fit(x, y)
    assert est.trainer_.graph_status == "eager: cuda_graphs='off'"
    with pytest.raises(ValueError, match="--cuda-graphs must be one of"):
        MLPClassifier(hidden=(8,), epochs=1, device="cpu", cuda_graphs="sometimes").fit(x, y)


def test_cpu_training_imports_nothing_gpu_specific(tmp_path):
    """Importing mlp_backend and training on the CPU never imports cupy or nvmath: stand-in
    packages that record their import are first on the path."""
    for name in ("cupy", "nvmath"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            f"open({str(tmp_path / (name + '.imported'))!r}, 'w').close()\nraise ImportError('stand-in')\n")
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import mlp_backend as mb
        from mlp_backend.training.trainer import Trainer
        m = mb.MLP([8, 16, 3], device="cpu")
        x = m.backend.asarray(np.random.default_rng(0).integers(0, 255, (64, 8)).astype(np.uint8))
        y = m.backend.asarray(np.arange(64) % 3)
        tr = Trainer(m, mb.make_optimizer("adam", 0.01), batch_size=16, progress="none")
        tr.fit(x, y, 2)
        print(tr.graph_status)
        print(sorted(k for k in sys.modules if k.split(".")[0] in ("cupy", "nvmath")))
    """)
    env = {"PYTHONPATH": str(tmp_path), "MLP_BACKEND_DEVICE": "cpu", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["eager: CUDA graphs apply to --device cuda only", "[]"]
    assert not list(tmp_path.glob("*.imported"))


@pytest.mark.parametrize("name", ["training/runner.py", "backends/capture.py", "backends/cupy_ops.py"])
def test_gpu_modules_import_cupy_and_nvmath_lazily(name):
    tree = ast.parse((PKG / name).read_text())
    for node in tree.body:  # module level only: imports inside functions run on use
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not {m.split(".")[0] for m in mods} & {"cupy", "nvmath"}, f"{name} imports {mods}"


# ----- on a GPU: the captured graph ---------------------------------------------------------------

@pytest.fixture
def lean_eager(monkeypatch):
    """The GraphRunner's steps run eagerly on the same stream and cuBLAS handle (no capture)."""
    def on():
        monkeypatch.setattr(GraphRunner, "capture", False)
    return on


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("batch_size", [64, None], ids=["minibatch", "full-batch"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@gpu
def test_graph_is_bitwise_the_lean_eager_steps(lean_eager, optimizer, dtype, batch_size, schedule):
    pytest.importorskip("nvmath")
    graph = _fit("cuda", dtype, optimizer, schedule, 0.01, batch_size, epochs=3, cuda_graphs="on")
    assert graph[2].graph_status.startswith("captured: one CUDA graph per epoch"), graph[2].graph_status
    lean_eager()
    eager = _fit("cuda", dtype, optimizer, schedule, 0.01, batch_size, epochs=3, cuda_graphs="on")
    assert eager[2].graph_status.startswith("eager (graph-ready steps"), eager[2].graph_status
    _assert_bitwise(_state(*graph), _state(*eager))


@gpu
@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adamw"])
@pytest.mark.parametrize("activation,output,loss", [
    ("relu", "softmax", "cross_entropy"), ("tanh", "softmax", "mse"), ("sigmoid", "sigmoid", "mse"),
    ("leaky_relu", "identity", "mse")])
def test_graph_matches_numpy_float64(optimizer, activation, output, loss):
    pytest.importorskip("nvmath")
    args = dict(activation=activation, output=output, loss=loss, sizes=(8, 16, 12, 3), wd=0.01, schedule="cosine")
    gpu = _fit("cuda", "float64", optimizer, cuda_graphs="on", **args)
    assert gpu[2].graph_status.startswith("captured"), gpu[2].graph_status
    cpu = _fit("cpu", "float64", optimizer, **args)
    for k, v in cpu[0].host_params().items():
        got = gpu[0].host_params()[k]
        assert np.max(np.abs(got - v)) <= TOL["float64"] * np.max(np.abs(v)), k
    hg, hc = gpu[2].history, cpu[2].history
    assert hg["train_accuracy"] == hc["train_accuracy"]
    np.testing.assert_allclose(hg["train_loss"], hc["train_loss"], rtol=1e-9)


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lean_steps_match_todays_cupy_path(lean_eager, dtype):
    pytest.importorskip("nvmath")
    lean_eager()
    # momentum, not Adam: Adam's step turns rounding-level gradients into lr-sized updates
    lean = _fit("cuda", dtype, "momentum", "cosine", 0.01, cuda_graphs="on")
    today = _fit("cuda", dtype, "momentum", "cosine", 0.01, cuda_graphs="off")
    for k, v in today[0].host_params().items():
        assert np.max(np.abs(lean[0].host_params()[k] - v)) <= TOL[dtype] * np.max(np.abs(v)), k


@gpu
def test_recapture_on_a_shape_change_and_graphs_are_freed(monkeypatch):
    pytest.importorskip("nvmath")
    made = []
    real_init = GraphRunner.__init__

    def spy(self, *a, **k):
        made.append(self)
        real_init(self, *a, **k)
    monkeypatch.setattr(GraphRunner, "__init__", spy)

    def run(capture):
        monkeypatch.setattr(GraphRunner, "capture", capture)
        x, y = blobs(n=300)
        model = mb.MLP([8, 16, 3], device="cuda", seed=0)
        tr = Trainer(model, make_optimizer("momentum", 0.05), batch_size=64, seed=1, progress="none",
                     cuda_graphs="on")
        b = model.backend
        tr.fit(b.asarray(x), b.asarray(y), 2)
        xs, ys = b.asarray(x[:200]), b.asarray(y[:200])
        tr.fit(xs, ys, 3)  # new shapes: a new graph
        tr.fit(xs, ys, 4)  # the same arrays and configuration: the same graph, no re-capture
        tr.batch_size = 32
        tr.fit(xs, ys, 5)  # new batch size: a new graph
        return tr
    graph = run(True)
    assert len(made) == 3 and all(r.graph is None and r.ops is None for r in made[:2])  # freed when replaced
    assert made[2].graph is not None and tr_runner(graph) is made[2]  # kept for the next fit
    assert graph.graph_status.startswith("captured: one CUDA graph per epoch: 7 steps per epoch (6 x 32 rows + 1 x 8")
    graph.close()
    assert made[2].graph is None and made[2].ops is None and tr_runner(graph) is None
    made.clear()
    eager = run(False)
    _assert_bitwise(_state(graph.model, graph.optimizer, graph), _state(eager.model, eager.optimizer, eager))


def tr_runner(tr):
    return tr._runner


@gpu
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fit_epoch_by_epoch_captures_once(monkeypatch, optimizer):
    """fit(x, y, trainer.epoch + 1) called epoch after epoch (as the benchmark does) replays
    one graph, captured once, and trains bitwise like one fit over all the epochs."""
    pytest.importorskip("nvmath")
    captures = []
    real = GraphRunner._capture

    def spy(self):
        captures.append(self)
        real(self)
    monkeypatch.setattr(GraphRunner, "_capture", spy)
    whole = _fit("cuda", "float32", optimizer, "cosine", epochs=4, cuda_graphs="on")
    assert len(captures) == 1
    x, y = blobs(n=300)
    model = mb.MLP([8, 16, 3], device="cuda", seed=0)
    opt = make_optimizer(optimizer, 0.05)
    tr = Trainer(model, opt, batch_size=64, schedule=make_schedule(lr=0.05, epochs=4, **SCHEDULES["cosine"]),
                 seed=1, progress="none", cuda_graphs="on", log=lambda *_: None)
    b = model.backend
    xd, yd = b.asarray(x), b.asarray(y)
    for e in range(4):
        tr.fit(xd, yd, e + 1)
    assert len(captures) == 2
    _assert_bitwise(_state(model, opt, tr), _state(*whole))


@gpu
def test_auto_falls_back_cleanly_without_nvmath(monkeypatch):
    off = _state(*_fit("cuda", "float32", "adam", cuda_graphs="off"))
    hide_module(monkeypatch, "nvmath")
    logs = []
    model, opt, tr = _fit("cuda", "float32", "adam", log=logs.append)
    assert tr.graph_status.startswith("eager: nvmath-python is not usable"), tr.graph_status
    assert [line for line in logs if line.startswith("cuda graphs:")] == [f"cuda graphs: {tr.graph_status}"]
    _assert_bitwise(_state(model, opt, tr), off)
    with pytest.raises(GraphUnavailable, match=r"nvmath-python.*mlp-backend\[cuda13\]"):
        _fit("cuda", "float32", "adam", cuda_graphs="on")


@gpu
def test_auto_falls_back_cleanly_when_the_capture_fails(monkeypatch):
    pytest.importorskip("nvmath")
    off = _state(*_fit("cuda", "float32", "adam", cuda_graphs="off"))

    def broken(self):
        raise RuntimeError("simulated capture failure")
    monkeypatch.setattr(GraphRunner, "_capture", broken)
    logs = []
    model, opt, tr = _fit("cuda", "float32", "adam", log=logs.append)
    assert tr.graph_status.startswith("eager: the CUDA graph capture failed (RuntimeError: simulated")
    assert sum(line.startswith("cuda graphs:") for line in logs) == 1
    _assert_bitwise(_state(model, opt, tr), off)  # the warm-up left no trace
    with pytest.raises(GraphUnavailable, match="simulated capture failure"):
        _fit("cuda", "float32", "adam", cuda_graphs="on")


@gpu
@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_resume_in_the_middle_of_a_captured_run(tmp_path, optimizer):
    pytest.importorskip("nvmath")
    from mlp_backend.training.checkpoint import load_checkpoint, save_checkpoint
    x, y = blobs(n=300)

    def trainer(model, opt):
        return Trainer(model, opt, batch_size=64, schedule=make_schedule("cosine", 0.05, 4), seed=1,
                       progress="none", cuda_graphs="on")
    straight = mb.MLP([8, 16, 3], device="cuda", seed=0)
    tr_s = trainer(straight, make_optimizer(optimizer, 0.05, 0.01))
    b = straight.backend
    xd, yd = b.asarray(x), b.asarray(y)
    tr_s.fit(xd, yd, 4)
    half = mb.MLP([8, 16, 3], device="cuda", seed=0)
    opt = make_optimizer(optimizer, 0.05, 0.01)
    tr = trainer(half, opt)
    tr.fit(xd, yd, 2)
    path = save_checkpoint(tmp_path / "half.npz", half, opt, tr)
    ck = load_checkpoint(path, device="cuda")
    tr2 = trainer(ck.model, ck.optimizer)
    ck.restore(tr2)
    tr2.fit(xd, yd, 4)
    assert tr2.graph_status.startswith("captured")
    _assert_bitwise(_state(ck.model, ck.optimizer, tr2), _state(straight, tr_s.optimizer, tr_s))


@gpu
def test_one_host_sync_per_captured_epoch(monkeypatch):
    pytest.importorskip("nvmath")
    calls = []
    real = devices.to_numpy
    monkeypatch.setattr(devices, "to_numpy", lambda x: calls.append(1) or real(x))
    _, _, tr = _fit("cuda", "float32", "adam", epochs=3, cuda_graphs="on")
    assert tr.graph_status.startswith("captured") and len(calls) == 3


# ----- the CUDA sources compile (NVRTC only: no GPU needed) ---------------------------------------

def _nvrtc_compile(src: str, name: str) -> str:
    """NVRTC's log for ``src`` compiled for compute_90; '' when it compiled."""
    from cuda.bindings import nvrtc
    err, prog = nvrtc.nvrtcCreateProgram(src.encode(), name.encode(), 0, [], [])
    opts = [b"--gpu-architecture=compute_90", b"-std=c++17"]
    err, = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    _, size = nvrtc.nvrtcGetProgramLogSize(prog)
    log = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, log)
    nvrtc.nvrtcDestroyProgram(prog)
    return "" if err == nvrtc.nvrtcResult.NVRTC_SUCCESS else log.decode(errors="replace")


def test_cuda_sources_compile_with_nvrtc():
    """Every kernel of CupyOps/CupyGraphOps compiles for sm_90, float and double: the row
    kernels as they are, the ElementwiseKernel bodies inside a loop shaped like CuPy's
    (inputs const, outputs as references, raw arrays indexable)."""
    try:
        import cuda.bindings.nvrtc  # noqa: F401
    except ImportError as exc:
        if os.environ.get("MLP_BACKEND_REQUIRE_NVRTC") == "1":  # CI installs it: a skip there is a failure
            raise
        pytest.skip(f"needs NVIDIA's cuda-bindings and NVRTC ({exc})")
    from mlp_backend.backends import cupy_ops as co
    from test_cupy_graph_ops import all_kernel_specs
    specs = all_kernel_specs()

    def params(text):
        for part in filter(None, (p.strip() for p in text.split(","))):
            words = part.split()
            yield words[0] == "raw", words[-2], words[-1]
    failures = []
    for t in ("float", "double"):
        log = _nvrtc_compile(f"typedef {t} T;\n" + co._ROW_SRC, f"rows_{t}.cu")
        if log:
            failures.append(log)
        for k in specs:
            head = (f"typedef {t} T; typedef {'unsigned char' if 'gather' in k.name else t} X; "
                    "typedef long long int64;\n"
                    "template <typename V> struct Raw { const V* p; __device__ const V& operator[](long long i) "
                    "const { return p[i]; } };\n")
            args, body = [], []
            for raw, ty, nm in params(k.i):  # inputs are const in CuPy's kernels: a write to one fails
                args.append(f"const Raw<{ty}> {nm}" if raw else f"const {ty} {nm}")
            for raw, ty, nm in params(k.o):
                args.append(f"{ty}* _{nm}")
                body.append(f"{ty}& {nm} = _{nm}[i];")
            src = head + (f'extern "C" __global__ void {k.name}({", ".join(args)}, long long n) {{\n'
                          f"  long long i = blockIdx.x * blockDim.x + threadIdx.x; if (i >= n) return;\n"
                          f"  {' '.join(body)}\n  {k.body};\n}}\n")
            log = _nvrtc_compile(src, f"{k.name}_{t}.cu")
            if log:
                failures.append(f"{k.name} ({t}):\n{log}")
    assert not failures, "\n".join(failures)


def test_a_finished_run_and_estimator_hold_no_runner(tmp_path):
    """train_run and MLPClassifier.fit train once: their trainers free the epoch runner (which
    would keep the device copy of the data, and on CUDA a graph, alive) when training ends."""
    from mlp_backend.interop.estimator import MLPClassifier
    from mlp_backend.training.config import resolve_config
    from mlp_backend.training.run import train_run
    x, y = blobs(n=200, n_features=784, n_classes=10)
    np.savez(tmp_path / "tiny.npz", x_train=x.reshape(-1, 28, 28), y_train=y,
             x_test=x[:50].reshape(-1, 28, 28), y_test=y[:50])
    res = train_run(resolve_config(None, dataset=str(tmp_path / "tiny.npz"), epochs=1, hidden=[8]),
                    tmp_path / "run", device="cpu", quiet=True)
    assert res["trainer"]._runner is None and res["trainer"].graph_status.startswith("eager:")
    clf = MLPClassifier(hidden=(8,), epochs=1, device="cpu").fit(x, y)
    assert clf.trainer_._runner is None
