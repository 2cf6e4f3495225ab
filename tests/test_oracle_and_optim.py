"""Independent oracles (PyTorch autograd and torch.optim), optimizer parity across
backends, training on a tiny problem, and the rules of docs/backends.md."""
import ast
import pathlib

import numpy as np
import pytest

import mlp_backend as mb
from mlp_backend.backends import devices as backend_mod
from mlp_backend import functional as F
from mlp_backend.gradcheck import check_gradients
from mlp_backend.training.trainer import Trainer, TrainingDiverged, fit

from conftest import MATRIX, TOL, blobs, hide_module, needs_torch
from test_core import HEADS, HIDDEN, batch, sizes_for

PKG = pathlib.Path(mb.__file__).parent


# ----- PyTorch autograd as an independent oracle ------------------------------------------

def torch_loss(params, x, labels, acts, output, loss):
    import torch
    import torch.nn.functional as TF
    a = x
    n_layers = len(params) // 2
    fns = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "identity": lambda t: t,
           "leaky_relu": lambda t: TF.leaky_relu(t, 0.01), "softmax": lambda t: torch.softmax(t, dim=1)}
    for i in range(1, n_layers + 1):
        z = a @ params[f"w{i}"] + params[f"b{i}"]
        a = fns[acts[i - 1] if i < n_layers else output](z)
    if loss == "cross_entropy":
        return TF.cross_entropy(z, labels)  # mean over samples, from the logits
    y = TF.one_hot(labels, a.shape[1]).to(a.dtype)
    return ((a - y) ** 2).sum() / (2 * a.shape[0])


@needs_torch
@pytest.mark.parametrize("output,loss", HEADS)
@pytest.mark.parametrize("act", HIDDEN)
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_gradients_equal_pytorch_autograd(act, output, loss, depth):
    import torch
    model = mb.MLP(sizes_for(depth), act, output, loss, "he", "float64", "cpu", 7)
    x, y = batch(seed=4)
    lval, grads, _ = model.loss_and_grads(x, y)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in model.params.items()}
    tl = torch_loss(tp, torch.tensor(x), torch.tensor(y), model.activations, output, loss)
    tl.backward()
    assert float(lval) == pytest.approx(tl.item(), rel=1e-12)
    for k, g in grads.items():
        np.testing.assert_allclose(g, tp[k].grad.numpy(), rtol=1e-10, atol=1e-13, err_msg=k)


def test_gradient_check_catches_a_wrong_derivative(monkeypatch):
    model = mb.MLP([7, 6, 4], "tanh", "softmax", "cross_entropy", "lecun", "float64", "cpu", 1)
    x, y = batch()
    assert check_gradients(model, x, y) < 1e-6
    monkeypatch.setitem(F.DERIVATIVES, "tanh", lambda a, xp: 1.0 - a)  # a plausible bug
    assert check_gradients(model, x, y) > 1e-2


# ----- optimizers ---------------------------------------------------------------------------

OPTS = [("gd", {}), ("sgd", {}), ("momentum", {"momentum": 0.9}), ("nesterov", {"momentum": 0.8}),
        ("adam", {}), ("adamw", {})]


def run_steps(device, dtype, name, kw, steps=3, wd=0.01):
    model = mb.MLP([7, 6, 5, 4], ["relu", "tanh"], "softmax", "cross_entropy", "he", dtype, device, 9)
    b = model.backend
    opt = mb.make_optimizer(name, lr=0.05, weight_decay=wd, **kw)
    x, y = batch()
    xd, yd = b.asarray(x, dtype), b.asarray(y)
    for _ in range(steps):
        _, grads, _ = model.loss_and_grads(xd, yd)
        opt.step(model.params, grads, model.xp)
    for bufs in opt.state.values():
        assert all(b.owns(v) for v in bufs.values()), "optimizer state left the model's device"
    return model


@pytest.mark.parametrize("device,dtype", MATRIX)
@pytest.mark.parametrize("name,kw", OPTS, ids=[o[0] for o in OPTS])
def test_optimizer_steps_match_numpy(device, dtype, name, kw):
    ref = run_steps("cpu", "float64", name, kw).host_params()
    got = run_steps(device, dtype, name, kw)
    for k, v in got.host_params().items():
        assert v.dtype == np.dtype(dtype)
        np.testing.assert_allclose(v, ref[k], rtol=TOL[dtype] * 50, atol=TOL[dtype] * 50 * np.abs(ref[k]).max())


@needs_torch
@pytest.mark.parametrize("name,kw", OPTS, ids=[o[0] for o in OPTS])
def test_optimizers_equal_torch_optim(name, kw):
    import torch
    ours = run_steps("cpu", "float64", name, kw, steps=4)
    model = mb.MLP([7, 6, 5, 4], ["relu", "tanh"], "softmax", "cross_entropy", "he", "float64", "cpu", 9)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in model.params.items()}
    groups = [{"params": [v for k, v in tp.items() if k.startswith("w")], "weight_decay": 0.01},
              {"params": [v for k, v in tp.items() if k.startswith("b")], "weight_decay": 0.0}]
    cls = {"gd": torch.optim.SGD, "sgd": torch.optim.SGD, "momentum": torch.optim.SGD,
           "nesterov": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    extra = {"momentum": kw.get("momentum", 0.0), "nesterov": name == "nesterov"} if cls is torch.optim.SGD else {}
    opt = cls(groups, lr=0.05, **extra)
    x, y = batch()
    for _ in range(4):
        opt.zero_grad()
        torch_loss(tp, torch.tensor(x), torch.tensor(y), ("relu", "tanh"), "softmax", "cross_entropy").backward()
        opt.step()
    for k, v in ours.params.items():
        np.testing.assert_allclose(v, tp[k].detach().numpy(), rtol=1e-9, atol=1e-12, err_msg=k)


def test_schedules():
    step = mb.make_schedule("step", 0.1, 30, step_size=10, gamma=0.5)
    assert [step(e) for e in (0, 9, 10, 25)] == [0.1, 0.1, 0.05, 0.025]
    cos = mb.make_schedule("cosine", 0.1, 10, min_lr=0.001)
    assert cos(0) == pytest.approx(0.1) and cos(5) == pytest.approx(0.0505) and cos(10) == pytest.approx(0.001)
    lrs = [cos(e) for e in range(10)]
    assert lrs == sorted(lrs, reverse=True) and 0.001 < lrs[-1] < 0.005  # the last epoch still learns
    warm = mb.make_schedule("cosine", 0.1, 12, warmup=2)
    assert warm(0) == pytest.approx(0.05) and warm(2) == pytest.approx(0.1) and warm(11) > 0
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        mb.make_schedule("linear", 0.1, 10)


def test_optimizer_argument_errors():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; choose from gd, sgd"):
        mb.make_optimizer("rmsprop", 0.1)
    with pytest.raises(ValueError, match="learning rate must be > 0"):
        mb.make_optimizer("sgd", 0.0)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        mb.make_optimizer("momentum", 0.1, momentum=1.5)


# ----- training -------------------------------------------------------------------------------

CPU_MATRIX = [p for p in MATRIX if "cuda" not in p.values[0]]


@pytest.mark.parametrize("device,dtype", MATRIX)
def test_training_lowers_the_loss_and_learns(device, dtype):
    x, y = blobs(n=400, seed=1)
    model = mb.MLP([8, 16, 3], "relu", dtype=dtype, device=device, seed=0)
    b = model.backend
    xv, yv = blobs(n=200, seed=1)  # same centres (same seed), fresh noise would need another seed
    hist = fit(model, mb.make_optimizer("sgd", 0.1), b.asarray(x), b.asarray(y), epochs=8, batch_size=16,
               progress="none", x_val=b.asarray(xv), y_val=b.asarray(yv))  # 200 steps
    assert hist.rows[-1]["train_loss"] < 0.25 * hist.rows[0]["train_loss"]
    assert hist.rows[-1]["train_accuracy"] >= 0.95
    acc = float(np.mean(b.to_numpy(model.predict(b.asarray(x, dtype) / 255)) == y))
    assert acc >= 0.95


def test_full_batch_gradient_descent_learns():
    x, y = blobs(n=300, seed=2)
    model = mb.MLP([8, 16, 3], "tanh", "sigmoid", "mse", "xavier", device="cpu", seed=0)
    hist = fit(model, mb.make_optimizer("gd", 2.0), x, y, epochs=300, batch_size=None, progress="none")
    assert hist.rows[-1]["train_loss"] < 0.3 * hist.rows[0]["train_loss"]
    assert hist.rows[-1]["train_accuracy"] >= 0.9


def test_divergence_stops_with_a_clear_message():
    x, y = blobs(n=200)
    model = mb.MLP([8, 16, 3], "relu", "identity", "mse", "uniform", device="cpu", seed=0)
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch \d+.*Lower the learning rate"):
        with np.errstate(all="ignore"):
            fit(model, mb.make_optimizer("sgd", 1e4), x, y, epochs=50, batch_size=20, progress="none")


def test_early_stopping_restores_the_best_weights():
    x, y = blobs(n=200, seed=3)
    xv, yv = blobs(n=100, seed=4)  # other centres: validation loss gets worse as training fits
    model = mb.MLP([8, 16, 3], "relu", device="cpu", seed=0)
    logs = []
    tr = Trainer(model, mb.make_optimizer("adam", 0.01), batch_size=20, patience=2, progress="none",
                 log=logs.append)
    tr.fit(x, y, 100, xv, yv)
    assert tr.epoch < 100 and "early stopping" in logs[-1]
    best_val, best_epoch, _ = tr.best
    assert best_val == min(tr.history["val_loss"])
    from mlp_backend.training.trainer import evaluate
    loss_sum, _ = evaluate(model, xv, yv)
    assert float(loss_sum) / len(yv) == pytest.approx(best_val, rel=1e-5)


@pytest.mark.parametrize("device", ["cpu", "array_api_strict:device1"])  # the fast path, the portable one
def test_one_host_sync_per_epoch(monkeypatch, device):
    """The host-transfer helper runs once per epoch (48 steps here), never per step."""
    calls = []
    real = backend_mod.to_numpy
    monkeypatch.setattr(backend_mod, "to_numpy", lambda x: calls.append(1) or real(x))
    x, y = blobs(n=256)
    model = mb.MLP([8, 16, 3], "relu", device=device, seed=0)
    b = model.backend
    xd, yd, xv, yv = b.asarray(x), b.asarray(y), b.asarray(x[:64]), b.asarray(y[:64])
    calls.clear()
    fit(model, mb.make_optimizer("momentum", 0.05), xd, yd, epochs=3, batch_size=16, x_val=xv, y_val=yv,
        progress="none")  # 48 steps
    assert len(calls) == 3


def test_training_stays_float32(monkeypatch):
    seen = []
    real = mb.MLP.backward

    def spy(self, cache, y, *a, **k):
        grads = real(self, cache, y, *a, **k)
        seen.extend([cache.a[0].dtype, cache.z_out.dtype, y.dtype, *(g.dtype for g in grads.values())])
        return grads
    monkeypatch.setattr(mb.MLP, "backward", spy)
    x, y = blobs(n=64)
    model = mb.MLP([8, 16, 3], "relu", device="cpu", seed=0)
    fit(model, mb.make_optimizer("adam", 0.01), x, y, epochs=1, batch_size=16, progress="none")
    assert seen and all(d == np.float32 for d in seen)
    assert all(v.dtype == np.float32 for v in model.params.values())


# ----- the backend rules, checked statically -----------------------------------------------

MATH_MODULES = ["functional.py", "model.py", "optim.py", "training/trainer.py", "training/step.py",
                "training/runner.py"]
ARRAY_LIBS = {"numpy", "cupy", "torch", "array_api_strict", "array_api_compat", "jax"}
HOT_FUNCTIONS = {"functional.py": "*", "model.py": {"forward", "backward", "loss", "targets", "loss_and_grads",
                                                    "predict", "predict_proba"},
                 "optim.py": {"step", "update", "_apply", "_buffer"},
                 "training/trainer.py": {"train_epoch", "plan", "epoch_order", "targets", "evaluate"},
                 "training/step.py": {"__call__", "_batch", "begin_epoch", "correct", "prepare_inputs"},
                 "training/runner.py": {"run", "_begin", "_steps", "_end"}}
SYNC_CALLS = {"float", "int", "bool", "item", "tolist", "to_numpy", "to_float", "asnumpy", "print"}


@pytest.mark.parametrize("name", MATH_MODULES)
def test_math_modules_import_no_array_library(name):
    tree = ast.parse((PKG / name).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mods = [node.module or ""] if node.level == 0 else []
        else:
            continue
        assert not {m.split(".")[0] for m in mods} & ARRAY_LIBS, f"{name} imports {mods}"


@pytest.mark.parametrize("name", list(HOT_FUNCTIONS))
def test_no_host_sync_in_the_per_step_code(name):
    tree = ast.parse((PKG / name).read_text())
    wanted = HOT_FUNCTIONS[name]
    checked = 0
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef) or (wanted != "*" and fn.name not in wanted):
            continue
        checked += 1
        for node in ast.walk(fn):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                assert called not in SYNC_CALLS, f"{name}:{fn.name} line {node.lineno} calls {called}()"
                if called == "get" and not node.args:
                    pytest.fail(f"{name}:{fn.name} line {node.lineno} calls .get() (a CuPy host copy)")
    assert checked >= (1 if wanted == "*" else len(wanted)), f"functions of {name} not found"


def test_only_the_backend_module_syncs_with_the_host():
    """Outside backends/devices.py no module of the package calls .get()/.item() on arrays."""
    for path in PKG.rglob("*.py"):
        if path.relative_to(PKG).as_posix() == "backends/devices.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in ("item", "asnumpy"), f"{path.name}:{node.lineno}"
                assert not (node.func.attr == "get" and not node.args and not node.keywords), f"{path.name}:{node.lineno}"


# ----- backend selection errors -----------------------------------------------------------

def test_unknown_device_message():
    with pytest.raises(mb.BackendError, match="unknown device 'tpu'.*use cpu, cuda, cuda:N"):
        mb.get_backend("tpu")
    with pytest.raises(mb.BackendError, match="bad CUDA device 'cuda:x'"):
        mb.get_backend("cuda:x")
    with pytest.raises(mb.BackendError, match="array_api_strict has no device 'gpu9'"):
        mb.get_backend("array_api_strict:gpu9")


def test_missing_cupy_names_the_extra(monkeypatch):
    hide_module(monkeypatch, "cupy")
    with pytest.raises(mb.BackendError, match=r"needs CuPy, which is not installed.*mlp-backend\[cuda12\]"):
        mb.get_backend("cuda")
    assert mb.get_backend("auto").name == "numpy"  # auto falls back to the CPU


def test_cupy_without_a_gpu_says_what_it_found(monkeypatch):
    import sys
    import types
    fake = types.ModuleType("cupy")
    fake.is_available = lambda: False
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(mb.BackendError, match=r"cuda:1.*not usable: CuPy is installed but cupy.is_available\(\) is False"):
        mb.get_backend("cuda:1")
    assert mb.get_backend("auto").label == "cpu"


def test_float64_on_a_device_without_it():
    with pytest.raises(mb.BackendError, match="has no float64; use dtype='float32'"):
        mb.MLP([3, 2], dtype="float64", device="array_api_strict:no_float64")


def test_default_device_from_environment_and_use(monkeypatch):
    monkeypatch.setenv(backend_mod.ENV_DEVICE, "array_api_strict:device1")
    assert mb.get_backend().label == "array_api_strict:device1"
    mb.use("cpu")
    try:
        assert mb.get_backend().label == "cpu"
    finally:
        mb.use(None)
    monkeypatch.setenv(backend_mod.ENV_DEVICE, "nonsense")
    with pytest.raises(mb.BackendError, match="unknown device 'nonsense'"):
        mb.MLP([3, 2])


def test_array_backend_round_trips():
    from mlp_backend.backends import array_backend
    assert array_backend(np.zeros(2)).label == "cpu"
    b = mb.get_backend("array_api_strict:device1")
    assert array_backend(b.asarray(np.zeros(2))).label == "array_api_strict:device1"
