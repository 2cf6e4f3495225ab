"""MLPClassifier: the scikit-learn protocol, array types in and out, save/load.
(scikit-learn's own tools on it: test_sklearn_api.py.)"""
import numpy as np
import pytest

from conftest import blobs, needs_torch
from mlp_backend.interop.estimator import MLPClassifier, NotFittedError, SKLEARN_MISSING

pytestmark = pytest.mark.skipif(SKLEARN_MISSING is not None, reason=str(SKLEARN_MISSING))

FAST = dict(hidden=(16,), epochs=8, batch_size=32, lr=0.01, schedule="constant")


@pytest.fixture(scope="module")
def data():
    x, y = blobs(300, n_features=8, n_classes=3)
    return x[:240], y[:240], x[240:], y[240:]


@pytest.fixture(scope="module")
def fitted(data):
    return MLPClassifier(**FAST).fit(data[0], data[1])


def test_numpy_fit_predict_score(fitted, data):
    _, _, xs, ys = data
    pred = fitted.predict(xs)
    assert isinstance(pred, np.ndarray) and pred.shape == (60,)
    proba = fitted.predict_proba(xs)
    assert proba.shape == (60, 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert np.array_equal(pred, fitted.classes_[proba.argmax(1)])
    assert fitted.score(xs, ys) > 0.9
    assert fitted.n_features_in_ == 8 and len(fitted.history_) == 8 and fitted.n_epochs_ == 8


def test_uint8_is_scaled_floats_used_as_given(fitted, data):
    xs = data[2]
    a = fitted.predict_proba(xs)
    b = fitted.predict_proba(xs.astype(np.float32) / 255)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(a, fitted.predict_proba(xs.astype(np.float64)))  # raw floats are not scaled


def test_string_labels_keep_classes(data):
    x, y, xs, ys = data
    names = np.array(["cat", "dog", "emu"])
    clf = MLPClassifier(**FAST).fit(x, names[y])
    assert list(clf.classes_) == ["cat", "dog", "emu"]
    pred = clf.predict(xs)
    assert pred.dtype.kind == "U" and clf.score(xs, names[ys]) > 0.9


def test_integer_labels_any_values(data):
    x, y, xs, ys = data
    clf = MLPClassifier(**FAST).fit(x, y * 10 + 3)
    assert list(clf.classes_) == [3, 13, 23]
    assert set(np.unique(clf.predict(xs))) <= {3, 13, 23}


def test_array_api_strict_in_and_out(data):
    import array_api_strict as xp
    x, y, xs, ys = data
    dev = xp.Device("device1")
    X, Y = xp.asarray(x, device=dev), xp.asarray(y.astype(np.int64), device=dev)
    clf = MLPClassifier(**FAST).fit(X, Y)
    assert clf.model_.backend.name == "array_api_strict"  # trained where the data lives
    p = clf.predict(xp.asarray(xs, device=dev))
    proba = clf.predict_proba(xp.asarray(xs, device=dev))
    assert p.device == dev and proba.device == dev and proba.shape == (60, 3)
    assert clf.score(xp.asarray(xs, device=dev), ys) > 0.9


@needs_torch
def test_torch_in_and_out(data, fitted):
    import torch
    x, y, xs, ys = data
    clf = MLPClassifier(**FAST).fit(torch.from_numpy(x), torch.from_numpy(y))
    assert clf.model_.backend.name == "torch"
    p, proba = clf.predict(torch.from_numpy(xs)), clf.predict_proba(torch.from_numpy(xs))
    assert isinstance(p, torch.Tensor) and isinstance(proba, torch.Tensor) and proba.device.type == "cpu"
    assert clf.score(torch.from_numpy(xs), torch.from_numpy(ys)) > 0.9
    # a NumPy-trained model answers torch input with torch output
    assert isinstance(fitted.predict(torch.from_numpy(xs)), torch.Tensor)


def test_get_set_params_and_clone(fitted):
    params = fitted.get_params()
    assert params["hidden"] == (16,) and params["device"] is None and params["epochs"] == 8
    clone = MLPClassifier(**params)
    assert clone.get_params() == params and not hasattr(clone, "model_")
    assert clone.set_params(lr=0.5, epochs=2) is clone and clone.lr == 0.5
    with pytest.raises(ValueError, match="Invalid parameter 'learning_rate'"):  # scikit-learn's message
        clone.set_params(learning_rate=1)
    assert "hidden=(16,)" in repr(fitted)


def test_errors(fitted, data):
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(data[2])
    with pytest.raises(ValueError, match="features"):
        fitted.predict(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="2 classes"):
        MLPClassifier(**FAST).fit(data[0], np.zeros(240))


def test_early_stopping(data):
    clf = MLPClassifier(hidden=(16,), epochs=40, lr=0.05, schedule="constant", val_fraction=0.2, patience=2,
                        seed=1).fit(data[0], data[1])
    assert clf.n_epochs_ < 40 and "val_loss" in clf.history_[0]


@pytest.mark.parametrize("device", ["cpu", "array_api_strict:device1",
                                    pytest.param("torch:cpu", marks=needs_torch)])
def test_save_load_round_trip(tmp_path, data, device):
    x, y, xs, _ = data
    names = np.array(["zero", "one", "two"])
    clf = MLPClassifier(**FAST, dtype="float64").fit(x, names[y])
    path = clf.save(tmp_path / "clf.npz")
    back = MLPClassifier.load(path, device=device)
    assert back.get_params() == clf.get_params() and list(back.classes_) == list(clf.classes_)
    np.testing.assert_array_equal(back.predict(xs), clf.predict(xs))
    np.testing.assert_allclose(np.asarray(back.predict_proba(xs)), clf.predict_proba(xs), rtol=1e-12)
    if device == "cpu":
        assert np.array_equal(back.predict_proba(xs), clf.predict_proba(xs))  # bit-identical
    assert len(back.history_) == 8
