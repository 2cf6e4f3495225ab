"""Mixed devices: the high-level entry points copy host arrays to the model's device once;
the low-level MLP methods refuse inputs on another device with a clear error.

``array_api_strict:device1`` stands in for a GPU: its arrays cannot be mixed with NumPy
arrays or with its own ``CPU_DEVICE``, just as CUDA arrays cannot.
"""
import numpy as np
import pytest

import mlp_backend as mb
from conftest import blobs, needs_gpu, needs_torch
from mlp_backend.backends import Backend, get_backend
from mlp_backend.training.checkpoint import load_checkpoint, save_checkpoint
from mlp_backend.interop.estimator import MLPClassifier
from mlp_backend.backends.placement import DeviceMismatchError, on_device
from mlp_backend.training.trainer import Trainer, evaluate

DEVICES = [
    pytest.param("cpu", id="numpy"),
    pytest.param("array_api_strict:device1", id="strict-device1"),
    pytest.param("torch:cpu", id="torch", marks=needs_torch),
    pytest.param("cuda", id="cupy", marks=needs_gpu),
]
# a model's device, and an array on another device that it must refuse
FOREIGN = [
    pytest.param("cpu", "array_api_strict:device1", id="numpy-model-strict-input"),
    pytest.param("array_api_strict:device1", "array_api_strict:CPU_DEVICE", id="strict-device1-model-strict-cpu-input"),
    pytest.param("torch:cpu", "array_api_strict:device1", id="torch-model-strict-input", marks=needs_torch),
    pytest.param("cpu", "torch:cpu", id="numpy-model-torch-input", marks=needs_torch),
]


def _trainer(model, seed=3):
    opt = mb.make_optimizer("adam", 0.01)
    return Trainer(model, opt, batch_size=32, seed=seed, progress="none", log=lambda s: None)


def _host(model):
    return {k: np.array(v, copy=True) for k, v in model.host_params().items()}


@pytest.mark.parametrize("device", DEVICES)
def test_fit_and_evaluate_copy_host_arrays_once(device, monkeypatch):
    x, y = blobs(n=160, seed=5)
    xv, yv = blobs(n=40, seed=6)
    moved = []
    real = Backend.asarray

    def counting(self, host, dtype=None):
        moved.append(id(host))
        return real(self, host, dtype)

    model = mb.MLP([8, 12, 3], "relu", device=device, seed=0)
    monkeypatch.setattr(Backend, "asarray", counting)
    _trainer(model).fit(x, y, 3, xv, yv)
    loss, correct = evaluate(model, xv, yv)
    # each host array crossed once per call (fit: x, y, x_val, y_val; evaluate: x_val, y_val);
    # NumPy arrays are already on a NumPy model's device: used as they are
    expected = [0, 0, 0, 0] if device == "cpu" else [1, 1, 2, 2]
    assert [moved.count(id(a)) for a in (x, y, xv, yv)] == expected
    assert all(on_device(model.backend, p) for p in model.params.values())
    assert 0 < model.backend.to_float(correct) <= 40 and model.backend.to_float(loss) > 0


@pytest.mark.parametrize("device", DEVICES)
def test_host_and_device_inputs_train_identically(device):
    """Moving host data inside fit is exact: the same run from device arrays gives the same weights."""
    x, y = blobs(n=160, seed=5)
    runs = []
    for on_host in (True, False):
        model = mb.MLP([8, 12, 3], "relu", device=device, seed=0)
        b = model.backend
        xs, ys = (x, y) if on_host else (b.asarray(x), b.asarray(y, "int64"))
        _trainer(model).fit(xs, ys, 2)
        runs.append(_host(model))
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k], err_msg=k)


@pytest.mark.parametrize("device", DEVICES)
def test_checkpoint_on_device_then_fit_on_host_data(device, tmp_path):
    """The issue's case: load a checkpoint onto a device, keep training on NumPy data."""
    x, y = blobs(n=160, seed=5)
    model = mb.MLP([8, 12, 3], "relu", device="cpu", seed=0)
    tr = _trainer(model)
    tr.fit(x, y, 1)
    save_checkpoint(tmp_path / "c.npz", model, tr.optimizer, tr)
    ck = load_checkpoint(tmp_path / "c.npz", device=device)
    assert ck.model.backend.label == get_backend(device).label
    tr2 = _trainer(ck.model)
    tr2.optimizer = ck.optimizer
    ck.restore(tr2)
    tr2.fit(x, y, 3)
    assert tr2.epoch == 3 and all(on_device(ck.model.backend, p) for p in ck.model.params.values())
    tr.fit(x, y, 3)  # the same run without the round trip, on NumPy
    tol = 1e-5 if device != "cpu" else 0
    for k, v in _host(model).items():
        np.testing.assert_allclose(_host(ck.model)[k], v, rtol=tol, atol=tol, err_msg=k)


@pytest.mark.parametrize("device", [d for d in DEVICES if d.id != "numpy"])
def test_low_level_methods_refuse_host_arrays(device):
    x, y = blobs(n=20, seed=1)
    model = mb.MLP([8, 5, 3], device=device, seed=0)
    b = model.backend
    xf = x.astype(np.float32) / 255
    xd, yd = b.asarray(xf), b.asarray(y, "int64")
    calls = {
        "forward": lambda: model.forward(xf),
        "predict": lambda: model.predict(xf),
        "predict_proba": lambda: model.predict_proba(xf),
        "loss_and_grads": lambda: model.loss_and_grads(xf, yd),
        "loss_and_grads(y)": lambda: model.loss_and_grads(xd, y),
        "loss(y)": lambda: model.loss(model.forward(xd), y),
        "backward(y)": lambda: model.backward(model.forward(xd), y),
    }
    for name, call in calls.items():
        with pytest.raises(DeviceMismatchError) as ei:
            call()
        msg = str(ei.value)
        assert "cpu (a NumPy array)" in msg and b.label in msg, (name, msg)
        assert "model.backend.asarray" in msg and "model.to(" in msg, (name, msg)
    # the same calls with device arrays work
    assert model.predict(xd).shape == (20,)
    loss, grads, _ = model.loss_and_grads(xd, yd)
    assert np.isfinite(b.to_float(loss)) and set(grads) == set(model.params)


@pytest.mark.parametrize("device, other", FOREIGN)
def test_arrays_on_another_device_are_refused_everywhere(device, other):
    x, y = blobs(n=40, seed=1)
    model = mb.MLP([8, 5, 3], device=device, seed=0)
    xo, yo = get_backend(other).asarray(x), get_backend(other).asarray(y, "int64")
    src = get_backend(other).label
    with pytest.raises(DeviceMismatchError, match=rf"expected x on the model's device {model.backend.label}, "
                                                  rf"but it is on {src}.*model.backend.asarray"):
        model.forward(xo)
    # the entry points copy host arrays, but never another device's: that copy is the caller's
    with pytest.raises(DeviceMismatchError, match=rf"{model.backend.label}, but it is on {src}.*to_numpy\(x\)"):
        _trainer(model).fit(xo, y, 1)
    with pytest.raises(DeviceMismatchError, match=rf"expected y on .* but it is on {src}"):
        evaluate(model, x, yo)
    assert mb.BackendError in type(DeviceMismatchError("")).__mro__  # the CLI's exit 1 with one line


@pytest.mark.parametrize("device", DEVICES)
def test_estimator_on_a_device_takes_host_arrays(device, tmp_path):
    x, y = blobs(n=200, seed=2)
    clf = MLPClassifier(hidden=(16,), epochs=4, batch_size=32, lr=0.01, schedule="constant",
                        device=device).fit(x[:160], y[:160])
    assert clf.model_.backend.label == get_backend(device).label
    pred = clf.predict(x[160:])
    assert isinstance(pred, np.ndarray) and clf.score(x[160:], y[160:]) > 0.8
    clf.save(tmp_path / "clf.npz")
    back = MLPClassifier.load(tmp_path / "clf.npz", device=device)
    np.testing.assert_array_equal(back.predict(x[160:]), pred)
