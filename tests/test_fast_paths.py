"""The fast paths (issue 5): buffer-reusing NumPy kernels and fused CuPy kernels agree with
the portable Array-API kernels; training stays float32; a step allocates no new buffers
and waits for no host sync."""
import numpy as np
import pytest

import mlp_backend as mb
from mlp_backend import backends as backend_mod
from mlp_backend.backends import BufferOps, PortableOps, ops_for
from mlp_backend.optim import Optimizer
from mlp_backend.training.trainer import Trainer

from conftest import blobs, needs_gpu

OPT_CASES = [("sgd", {}, 0.0), ("sgd", {}, 0.01), ("momentum", {"momentum": 0.9}, 0.0),
             ("nesterov", {"momentum": 0.8}, 0.01), ("adam", {}, 0.0), ("adamw", {}, 0.01)]


def _kernel_cases(xp_mod, dtype, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(9, 7)).astype(dtype)
    w = rng.normal(size=(7, 5)).astype(dtype)
    b = rng.normal(size=(5,)).astype(dtype)
    g = rng.normal(size=(9, 5)).astype(dtype)
    y = np.eye(5, dtype=dtype)[rng.integers(0, 5, 9)]
    u8 = rng.integers(0, 256, (12, 7), dtype=np.uint8)
    idx = rng.permutation(12)[:9]
    return {k: xp_mod.asarray(v) for k, v in dict(a=a, w=w, b=b, g=g, y=y, u8=u8, idx=idx).items()}


def _run_kernels(ops, c, dtype, with_out):
    m = ops.xp
    o = (lambda shape, dt=dtype: m.empty(shape, dtype=dt)) if with_out else (lambda *s, **k: None)
    out = {}
    out["gather"] = ops.cast_scale(ops.gather_rows(c["u8"], c["idx"], o((9, 7), m.uint8)), c["a"].dtype,
                                   1 / 255, o((9, 7)))
    out["linear"] = ops.linear(c["a"], c["w"], c["b"], o((9, 5)))
    out["linear_relu"] = ops.linear_relu(c["a"], c["w"], c["b"], o((9, 5)))
    out["relu_bwd"] = ops.relu_backward(c["g"], out["linear_relu"], o((9, 5)), o((9, 5), m.bool))
    p, lse = ops.softmax(out["linear"], o((9, 5)), (o((9, 1)), o((9, 1))) if with_out else None)
    out["softmax"], out["lse"] = p, lse
    out["delta"] = ops.sub_scaled(p, c["y"], 1 / 9, o((9, 5)))
    out["tn"] = ops.matmul_tn(c["a"], c["g"], o((7, 5)))
    out["nt"] = ops.matmul_nt(c["g"], c["w"], o((9, 7)))
    out["sum"] = ops.sum_rows(c["g"], o((5,)))
    return {k: backend_mod.to_numpy(v) for k, v in out.items()}


def _run_updates(ops, c, dtype, with_tmp):
    m = ops.xp
    res = {}
    for name, kw, wd in OPT_CASES:
        w, g = m.asarray(c["w"], copy=True), c["w"] * 0.5 + 0.1
        v1, v2 = m.zeros_like(w), m.zeros_like(w)
        tmp = m.empty_like(w) if with_tmp else None
        for t in range(1, 4):
            if name == "sgd":
                ops.sgd_(w, g, 0.05, wd, tmp)
            elif name in ("momentum", "nesterov"):
                ops.momentum_(w, v1, g, 0.05, kw["momentum"], wd, name == "nesterov", tmp)
            else:
                c2 = (1 - 0.999 ** t) ** 0.5
                ops.adam_(w, v1, v2, g, 0.05, 0.9, 0.999, 1e-8 * c2, 0.05 * c2 / (1 - 0.9 ** t), wd,
                          name == "adamw", tmp)
        res[f"{name}-{wd}"] = backend_mod.to_numpy(w)
    return res


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("with_out", [True, False], ids=["out", "alloc"])
def test_numpy_buffer_kernels_equal_portable(dtype, with_out):
    import array_api_compat.numpy as xp
    fast, ref = ops_for(xp), ops_for(xp, portable=True)
    assert isinstance(fast, BufferOps) and fast.reuses_buffers
    assert type(ref) is PortableOps and not ref.reuses_buffers
    c = _kernel_cases(np, dtype)
    got, want = _run_kernels(fast, c, dtype, with_out), _run_kernels(ref, c, dtype, False)
    tol = 1e-6 if dtype == "float32" else 1e-13
    for k in want:
        assert got[k].dtype == np.dtype(dtype), k
        np.testing.assert_allclose(got[k], want[k], rtol=tol, atol=tol, err_msg=k)
    got, want = _run_updates(fast, c, dtype, with_out), _run_updates(ref, c, dtype, False)
    for k in want:
        assert got[k].dtype == np.dtype(dtype), k
        np.testing.assert_allclose(got[k], want[k], rtol=tol, atol=tol, err_msg=k)


def test_cupy_fused_kernels_equal_portable():
    import cupy
    import array_api_compat.cupy as xp
    from mlp_backend.backends import CupyOps
    fast, ref = ops_for(xp), ops_for(xp, portable=True)
    assert isinstance(fast, CupyOps) and fast.fused
    c = _kernel_cases(cupy, "float32")
    got, want = _run_kernels(fast, c, "float32", True), _run_kernels(ref, c, "float32", False)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)
    got, want = _run_updates(fast, c, "float32", True), _run_updates(ref, c, "float32", False)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)


for _mark in needs_gpu:
    test_cupy_fused_kernels_equal_portable = _mark(test_cupy_fused_kernels_equal_portable)


def _train(device, opt="momentum", epochs=2, batch_size=32, monkeypatch=None, portable=False):
    x, y = blobs(n=200, seed=4)
    model = mb.MLP([8, 16, 12, 3], "relu", device=device, seed=0)
    b = model.backend
    if portable and monkeypatch is not None:
        monkeypatch.setattr(mb.MLP, "ops", property(lambda self: ops_for(self.xp, portable=True)))
        monkeypatch.setattr("mlp_backend.optim.ops_for", lambda xp: ops_for(xp, portable=True))
    tr = Trainer(model, mb.make_optimizer(opt, 0.05, weight_decay=1e-3), batch_size=batch_size, seed=1,
                 progress="none", log=lambda s: None)
    hist = tr.fit(b.asarray(x), b.asarray(y), epochs)
    return model, hist, tr


@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam"])
def test_training_fast_path_equals_portable_path(opt, monkeypatch):
    """Whole epochs: the NumPy buffer path and the portable path give the same weights."""
    fast, hf, _ = _train("cpu", opt)
    with monkeypatch.context() as mp:
        ref, hr, _ = _train("cpu", opt, monkeypatch=mp, portable=True)
    for k, v in ref.host_params().items():
        np.testing.assert_allclose(fast.host_params()[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(hf["train_loss"], hr["train_loss"], rtol=1e-5)
    assert hf["train_accuracy"] == hr["train_accuracy"]


def test_fast_path_equals_gpu_stand_in():
    """The NumPy buffer path against array_api_strict (the portable path CI runs for CuPy)."""
    fast, hf, _ = _train("cpu", "momentum")
    ref, hr, _ = _train("array_api_strict:device1", "momentum")
    for k, v in ref.host_params().items():
        np.testing.assert_allclose(fast.host_params()[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_everything_stays_float32_on_the_fast_path(monkeypatch):
    """No silent float64: batches, activations, buffers, gradients, optimizer state."""
    seen = []
    real_forward, real_backward = mb.MLP.forward, mb.MLP.backward

    def forward(self, x, *a, **k):
        cache = real_forward(self, x, *a, **k)
        seen.extend([x.dtype, cache.z_out.dtype, cache.lse.dtype, *(a.dtype for a in cache.a)])
        return cache

    def backward(self, cache, y, *a, **k):
        grads = real_backward(self, cache, y, *a, **k)
        seen.extend([y.dtype, *(g.dtype for g in grads.values())])
        return grads
    monkeypatch.setattr(mb.MLP, "forward", forward)
    monkeypatch.setattr(mb.MLP, "backward", backward)
    model, hist, tr = _train("cpu", "adam")
    assert seen and all(d == np.float32 for d in seen), set(map(str, seen))
    assert all(v.dtype == np.float32 for v in model.params.values())
    assert all(v.dtype == np.float32 for bufs in tr.optimizer.state.values() for v in bufs.values())
    for ws in model._workspaces.values():
        for group in (ws.z, ws.delta, ws.gw, ws.gb):
            assert all(v.dtype == np.float32 for v in group.values())


def test_steps_reuse_their_buffers(monkeypatch):
    """After the first epoch, steps write into the same buffers: the gradients handed to the
    optimizer are the workspace's arrays, identical objects from step to step."""
    grads_seen = []
    real = Optimizer.update

    def spy(self, params, grads, ops, scalars=None):
        grads_seen.append({k: id(v) for k, v in grads.items()})
        return real(self, params, grads, ops, scalars)
    monkeypatch.setattr(Optimizer, "update", spy)
    x, y = blobs(n=128, seed=4)
    model = mb.MLP([8, 16, 3], "relu", device="cpu", seed=0)
    Trainer(model, mb.make_optimizer("momentum", 0.05), batch_size=32, progress="none").fit(x, y, 2)
    assert len(grads_seen) == 8 and all(g == grads_seen[0] for g in grads_seen)
    # outside training, results are fresh arrays as before
    g1 = model.loss_and_grads(x[:4] / 255.0, y[:4])[1]
    g2 = model.loss_and_grads(x[:4] / 255.0, y[:4])[1]
    assert all(g1[k] is not g2[k] for k in g1)


def test_full_batch_runs_the_network_once_per_epoch(monkeypatch):
    n_forward = []
    real = mb.MLP.forward
    monkeypatch.setattr(mb.MLP, "forward", lambda self, x, *a: n_forward.append(1) or real(self, x, *a))
    x, y = blobs(n=100)
    model = mb.MLP([8, 16, 3], "relu", device="cpu", seed=0)
    mb.fit(model, mb.make_optimizer("gd", 0.5), x, y, epochs=4, batch_size=None, progress="none")
    assert len(n_forward) == 4


# ----- one flat buffer for parameters, gradients and optimizer state (issue 5, round 2) ------

def _flat_of(d):
    return getattr(d, "flat", None)


def _views_of_flat(d):
    f = _flat_of(d)
    return f is not None and all(np.shares_memory(v, f) for v in d.values())


@pytest.mark.parametrize("opt", ["sgd", "momentum", "nesterov", "adam", "adamw"])
@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_flat_optimizer_step_equals_per_parameter_step(opt, wd):
    """The flat update (weights decayed, biases not) = the per-parameter update, state too."""
    import array_api_compat.numpy as xp
    model = mb.MLP([7, 6, 5, 3], "relu", device="cpu", seed=0)
    assert _views_of_flat(model.params)
    ws = model.workspace(4)
    grads = ws.flat_grads()
    rng = np.random.default_rng(0)
    grads.flat[:] = rng.normal(size=grads.flat.shape)
    plain_p = {k: v.copy() for k, v in model.params.items()}
    plain_g = {k: v.copy() for k, v in grads.items()}
    kw = {"momentum": 0.8} if opt in ("momentum", "nesterov") else {}
    o_flat, o_key = mb.make_optimizer(opt, 0.05, wd, **kw), mb.make_optimizer(opt, 0.05, wd, **kw)
    for _ in range(3):
        o_flat.step(model.params, grads, xp)
        o_key.step(plain_p, plain_g, xp)
    for k in plain_p:
        np.testing.assert_allclose(model.params[k], plain_p[k], rtol=1e-6, atol=1e-7, err_msg=k)
    sd_flat, sd_key = o_flat.state_dict(model.backend), o_key.state_dict(model.backend)
    assert sorted(sd_flat) == sorted(sd_key)
    for k in sd_key:
        np.testing.assert_allclose(sd_flat[k], sd_key[k], rtol=1e-6, atol=1e-7, err_msg=k)
    assert all(_views_of_flat(st) for st in o_flat.state.values())


def test_params_stay_views_and_references_see_training():
    x, y = blobs(n=128, seed=4)
    model = mb.MLP([8, 16, 3], "relu", device="cpu", seed=0)
    held, w1 = model.params, model.params["w1"]
    before = w1.copy()
    mb.fit(model, mb.make_optimizer("momentum", 0.05, 1e-3), x, y, epochs=2, batch_size=32, progress="none")
    assert model.params is held and model.params["w1"] is w1 and _views_of_flat(model.params)
    assert not np.array_equal(w1, before)


def _fit_twice(replace, opt="adam"):
    """Train 1 epoch, apply ``replace(model, trainer)``, train 1 more; the same run on the
    portable path (no flat buffers) must give the same weights."""
    x, y = blobs(n=200, seed=4)
    out = []
    for portable in (False, True):
        with pytest.MonkeyPatch.context() as mp:
            if portable:
                mp.setattr(mb.MLP, "ops", property(lambda self: ops_for(self.xp, portable=True)))
                mp.setattr("mlp_backend.optim.ops_for", lambda xp: ops_for(xp, portable=True))
            model = mb.MLP([8, 16, 12, 3], "relu", device="cpu", seed=0)
            assert _flat_of(model.params) is None if portable else _views_of_flat(model.params)
            tr = Trainer(model, mb.make_optimizer(opt, 0.05, weight_decay=1e-3), batch_size=32, seed=1,
                         progress="none", log=lambda s: None)
            tr.fit(x, y, 1)
            replace(model, tr)
            tr.fit(x, y, 2)
        out.append(model)
    fast, ref = out
    assert _views_of_flat(fast.params), "the flat path was not rebuilt"
    for k, v in ref.params.items():
        np.testing.assert_allclose(np.asarray(fast.params[k]), np.asarray(v), rtol=1e-5, atol=1e-6, err_msg=k)
    return fast


def test_flat_path_survives_params_replaced_by_assignment():
    """``model.params = {...}`` (early stopping's restore does this): repacked, not lost."""
    def replace(model, tr):
        model.params = {k: np.array(v) * 0.5 for k, v in model.params.items()}
    _fit_twice(replace)


def test_flat_path_survives_item_assignment_gradcheck_style():
    """``model.params[name] = new`` (gradcheck's perturbation) drops the flat buffer."""
    def replace(model, tr):
        model.params["w2"] = np.array(model.params["w2"]) + 0.01
        assert _flat_of(model.params) is None  # dropped on the fast run; plain dict on the other
    _fit_twice(replace)


def test_flat_path_after_gradcheck_and_early_stopping():
    from mlp_backend.gradcheck import check_gradients
    x, y = blobs(n=120, seed=2)
    model = mb.MLP([8, 10, 3], "tanh", device="cpu", dtype="float64", seed=0)
    mb.fit(model, mb.make_optimizer("sgd", 0.1), x, y, epochs=1, batch_size=32, progress="none")
    check_gradients(model, np.asarray(x[:5], np.float64) / 255, y[:5])
    mb.fit(model, mb.make_optimizer("sgd", 0.1), x, y, epochs=1, batch_size=32, progress="none")
    assert _views_of_flat(model.params)
    # early stopping restores the best weights by assignment; training afterwards repacks
    tr = Trainer(model, mb.make_optimizer("momentum", 0.5), batch_size=16, patience=1, progress="none",
                 log=lambda s: None)
    tr.fit(x, y, 6, x[:40], y[:40])
    best = tr.best[2]
    for k in best:
        np.testing.assert_array_equal(model.params[k], best[k])
    mb.fit(model, mb.make_optimizer("sgd", 0.1), x, y, epochs=1, batch_size=32, progress="none")
    assert _views_of_flat(model.params)
    assert all(not np.shares_memory(model.params[k], best[k]) for k in best)


def test_flat_path_after_to_astype_and_deepcopy():
    import copy
    x, y = blobs(n=96, seed=3)
    model = mb.MLP([8, 10, 3], "relu", device="cpu", seed=0)
    model.astype("float64")
    assert _views_of_flat(model.params) and model.params.flat.dtype == np.float64
    model.astype("float32").to("cpu")
    assert _views_of_flat(model.params) and model.params.flat.dtype == np.float32
    import pickle
    for dup in (copy.deepcopy(model.params), copy.copy(model.params), model.params.copy(),
                pickle.loads(pickle.dumps(model.params))):
        assert type(dup) is dict and _flat_of(dup) is None  # copies are plain dicts
    dup = copy.deepcopy(model.params)
    assert not any(np.shares_memory(dup[k], model.params.flat) for k in dup)
    twin = mb.MLP([8, 10, 3], "relu", device="cpu", params=dup)
    before = {k: np.array(v) for k, v in model.params.items()}
    mb.fit(twin, mb.make_optimizer("sgd", 0.1), x, y, epochs=1, batch_size=32, progress="none")
    for k in before:  # training the copy leaves the original alone
        np.testing.assert_array_equal(model.params[k], before[k])
    assert _views_of_flat(twin.params)


def test_flat_path_after_checkpoint_round_trip(tmp_path):
    """A checkpoint's model and optimizer state (plain arrays) repack and resume exactly."""
    from mlp_backend.training.checkpoint import load_checkpoint, save_checkpoint
    x, y = blobs(n=160, seed=5)

    def run(resume):
        model = mb.MLP([8, 12, 3], "relu", device="cpu", seed=0)
        opt = mb.make_optimizer("adam", 0.01, 1e-3)
        tr = Trainer(model, opt, batch_size=32, seed=3, progress="none", log=lambda s: None)
        tr.fit(x, y, 1)
        if resume:
            save_checkpoint(tmp_path / "c.npz", model, opt, tr)
            ck = load_checkpoint(tmp_path / "c.npz", device="cpu")
            model, opt = ck.model, ck.optimizer
            tr = Trainer(model, opt, batch_size=32, seed=3, progress="none", log=lambda s: None)
            ck.restore(tr)
        tr.fit(x, y, 3)
        return model, opt
    (m1, o1), (m2, o2) = run(False), run(True)
    for k in m1.params:
        np.testing.assert_allclose(m2.params[k], m1.params[k], rtol=1e-6, atol=1e-7, err_msg=k)
    assert _views_of_flat(m2.params) and all(_views_of_flat(s) for s in o2.state.values())


def test_flat_grads_rebuilt_when_caller_replaces_an_entry():
    x, y = blobs(n=64, seed=1)
    model = mb.MLP([8, 6, 3], "relu", device="cpu", seed=0)
    k = model.kernels(16)
    xb = np.asarray(x[:16], np.float32) / 255
    g = model.backward(model.forward(xb, k), y[:16], None, k)
    g["w1"] = np.zeros_like(g["w1"])  # the caller's own array
    g2 = model.backward(model.forward(xb, k), y[:16], None, k)
    assert _views_of_flat(g2) and not np.all(g2["w1"] == 0)


def test_epoch_accuracy_from_deferred_predictions_equals_per_step_count():
    """The fast path counts correct predictions once per epoch; same counts as per step."""
    fast, hf, _ = _train("cpu", "sgd", epochs=3)
    with pytest.MonkeyPatch.context() as mp:
        ref, hr, _ = _train("cpu", "sgd", epochs=3, monkeypatch=mp, portable=True)
    assert hf["train_accuracy"] == hr["train_accuracy"]


def test_bias_gradient_gemv_equals_reduction():
    import array_api_compat.numpy as xp
    ops = ops_for(xp)
    d = np.random.default_rng(0).normal(size=(128, 100)).astype(np.float32)
    np.testing.assert_allclose(ops.sum_rows(d, np.empty(100, np.float32)), d.sum(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ops.sum_rows(d), d.sum(0), rtol=1e-5, atol=1e-5)


def test_weight_gradients_of_a_large_batch_take_the_transposed_product():
    """matmul_tn with its (q, p) scratch on NumPy: from TN_MIN_ROWS rows the product is
    computed as (b.T @ a).T (written into the scratch, then copied), below it directly; both
    equal a.T @ b (bitwise with one OpenBLAS thread on this project's machines: the paper
    presets train to the same bits as before, docs/benchmarks.md)."""
    import array_api_compat.numpy as xp
    from mlp_backend.backends.numpy_ops import TN_MIN_ROWS
    ops = ops_for(xp)
    rng = np.random.default_rng(0)
    for n in (TN_MIN_ROWS - 1, TN_MIN_ROWS):
        a, b = rng.normal(size=(n, 30)), rng.normal(size=(n, 7))
        out, tmp = np.empty((30, 7)), np.full((7, 30), np.nan)
        assert ops.matmul_tn(a, b, out, tmp) is out
        np.testing.assert_allclose(out, a.T @ b, rtol=1e-12, atol=1e-12)
        assert np.isnan(tmp).all() == (n < TN_MIN_ROWS)  # the scratch is used only from TN_MIN_ROWS rows
