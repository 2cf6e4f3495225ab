"""MLPClassifier under scikit-learn's own tools: check_estimator, Pipeline, GridSearchCV,
cross_val_score, clone and pickle; and `import mlp_backend` without scikit-learn."""
import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import GPU_OK, GPU_WHY, blobs, needs_torch
from mlp_backend.interop.estimator import MLPClassifier, SKLEARN_MISSING

needs_sklearn = pytest.mark.skipif(SKLEARN_MISSING is not None, reason=str(SKLEARN_MISSING))
FAST = dict(hidden=(16,), epochs=8, batch_size=32, lr=0.01, schedule="constant", device="cpu")


@pytest.fixture(scope="module")
def data():
    x, y = blobs(300, n_features=8, n_classes=3)
    return x[:240], y[:240], x[240:], y[240:]


CHECK_SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    from sklearn.utils.estimator_checks import check_estimator
    from mlp_backend.interop.estimator import MLPClassifier, EXPECTED_FAILED_CHECKS
    est = MLPClassifier(hidden=(16,), epochs=20, batch_size=32, lr=0.01, schedule="constant", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = check_estimator(est, expected_failed_checks=EXPECTED_FAILED_CHECKS, on_fail=None, on_skip=None)
    json.dump([{"check": r["check_name"], "status": r["status"], "error": repr(r["exception"])} for r in rows],
              sys.stdout)
""")


@needs_sklearn
def test_check_estimator_passes():
    """Every check of scikit-learn's check_estimator passes (none skipped: the array-API
    check runs because SCIPY_ARRAY_API=1 is set, which scipy reads at import, hence the
    subprocess); a check that cannot pass must be in EXPECTED_FAILED_CHECKS with a reason."""
    from mlp_backend.interop.estimator import EXPECTED_FAILED_CHECKS
    env = {**os.environ, "SCIPY_ARRAY_API": "1"}
    out = subprocess.run([sys.executable, "-c", CHECK_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads(out.stdout)
    assert len(rows) >= 50, f"only {len(rows)} checks ran"
    bad = [r for r in rows if r["status"] != "passed" and not
           (r["status"] == "xfail" and r["check"] in EXPECTED_FAILED_CHECKS)]
    assert not bad, bad
    assert all(reason.strip() for reason in EXPECTED_FAILED_CHECKS.values())
    assert {"check_estimators_pickle", "check_classifiers_train", "check_fit_idempotent",
            "check_methods_subset_invariance"} <= {r["check"] for r in rows}


@needs_sklearn
def test_pipeline_with_standard_scaler(data):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    x, y, xs, ys = data
    pipe = make_pipeline(StandardScaler(), MLPClassifier(**FAST)).fit(x, y)
    assert pipe.score(xs, ys) > 0.9
    proba = pipe.predict_proba(xs)
    assert proba.shape == (60, 3) and np.array_equal(pipe.predict(xs), proba.argmax(1))
    # the scaler changed the inputs: the pipeline is not the bare model on the same pixels
    bare = MLPClassifier(**FAST).fit(x, y)
    assert not np.allclose(bare.predict_proba(xs), proba)


@needs_sklearn
def test_grid_search_over_device_and_width(data):
    """`device` is an ordinary hyper-parameter: GridSearchCV clones and sets it like any other."""
    from sklearn.model_selection import GridSearchCV
    x, y, xs, ys = data
    grid = {"device": ["cpu", "array_api_strict:device1"], "hidden": [(4,), (16,)]}
    gs = GridSearchCV(MLPClassifier(**FAST), grid, cv=3).fit(x, y)
    assert len(gs.cv_results_["params"]) == 4 and np.all(np.isfinite(gs.cv_results_["mean_test_score"]))
    best = gs.best_estimator_
    expected = {"cpu": "numpy", "array_api_strict:device1": "array_api_strict"}[gs.best_params_["device"]]
    assert best.model_.backend.name == expected and best.hidden == gs.best_params_["hidden"]
    assert gs.score(xs, ys) > 0.9
    # the same width on either device learns the same model (the one seed; float32 rounding)
    scores = gs.cv_results_["mean_test_score"].reshape(2, 2)
    np.testing.assert_allclose(scores[0], scores[1], atol=0.02)


@needs_sklearn
def test_cross_val_score(data):
    from sklearn.model_selection import cross_val_score
    x, y, _, _ = data
    scores = cross_val_score(MLPClassifier(**FAST), x, y, cv=4)
    assert scores.shape == (4,) and scores.min() > 0.85


@needs_sklearn
def test_clone_and_pickle(data):
    from sklearn.base import clone
    x, y, xs, _ = data
    names = np.array(["a", "b", "c"])
    clf = MLPClassifier(**FAST).fit(x, names[y])
    fresh = clone(clf)
    assert fresh.get_params() == clf.get_params() and not hasattr(fresh, "model_")
    back = pickle.loads(pickle.dumps(clf))
    assert back.model_ is not clf.model_ and back.model_.backend.label == "cpu"
    assert np.array_equal(back.predict_proba(xs), clf.predict_proba(xs))  # bit-identical on the CPU
    assert list(back.classes_) == ["a", "b", "c"] and back.n_epochs_ == clf.n_epochs_
    assert back.history_ == clf.history_


@needs_sklearn
@needs_torch
def test_torch_tensors_through_sklearn_tools(data):
    """torch:cpu tensors in, tensors out, for a model that trained on torch; and a
    cross-validation on tensors works (scikit-learn indexes them as arrays)."""
    import torch
    from sklearn.model_selection import cross_val_score
    x, y, xs, ys = data
    clf = MLPClassifier(**{**FAST, "device": "torch:cpu"}).fit(torch.from_numpy(x), torch.from_numpy(y))
    assert clf.model_.backend.name == "torch"
    out = clf.predict_proba(torch.from_numpy(xs))
    assert isinstance(out, torch.Tensor) and out.device.type == "cpu" and out.shape == (60, 3)
    assert isinstance(clf.predict(torch.from_numpy(xs)), torch.Tensor)
    assert isinstance(clf.predict(xs), np.ndarray)  # NumPy in, NumPy out, wherever it trained
    assert cross_val_score(MLPClassifier(**FAST), torch.from_numpy(x), torch.from_numpy(y), cv=3).min() > 0.85


@needs_sklearn
@pytest.mark.gpu
@pytest.mark.skipif(not GPU_OK, reason=f"no usable CUDA GPU here: {GPU_WHY}")
def test_cupy_in_cupy_out_pipeline_and_pickle_on_cuda(data):
    import cupy
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    x, y, xs, ys = data
    clf = MLPClassifier(**{**FAST, "device": None}).fit(cupy.asarray(x), cupy.asarray(y))
    assert clf.model_.backend.name == "cupy"  # trained where the data lives
    proba = clf.predict_proba(cupy.asarray(xs))
    assert isinstance(proba, cupy.ndarray) and isinstance(clf.predict(cupy.asarray(xs)), cupy.ndarray)
    assert isinstance(clf.predict(xs), np.ndarray) and clf.score(cupy.asarray(xs), cupy.asarray(ys)) > 0.9
    back = pickle.loads(pickle.dumps(clf))
    assert back.model_.backend.name == "cupy"
    np.testing.assert_allclose(cupy.asnumpy(back.predict_proba(cupy.asarray(xs))), cupy.asnumpy(proba), rtol=1e-6)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(**{**FAST, "device": "cuda"})).fit(x, y)
    assert pipe[-1].model_.backend.name == "cupy" and pipe.score(xs, ys) > 0.9


def test_import_without_sklearn_says_what_to_install():
    """With scikit-learn unimportable, `import mlp_backend` and the CLI still work, and
    creating an MLPClassifier raises ImportError naming the extra to install."""
    script = textwrap.dedent("""
        import sys
        sys.modules["sklearn"] = None  # makes `import sklearn` raise ImportError
        import mlp_backend
        from mlp_backend.interop.estimator import MLPClassifier, SKLEARN_MISSING
        assert SKLEARN_MISSING is not None
        try:
            mlp_backend.MLPClassifier(hidden=(4,))
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("no ImportError")
        from mlp_backend.apps.cli import build_parser
        build_parser()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install 'mlp-backend[sklearn]'" in out.stdout
