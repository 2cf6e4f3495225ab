"""Shared fixtures: the backend matrix of docs/backends.md, and synthetic data."""
import os

import numpy as np
import pytest

from mlp_backend.backends import ENV_DEVICE, BackendError, cuda_available, get_backend

try:
    import torch  # noqa: F401
    HAVE_TORCH = True
except ImportError:  # torch is optional: CI installs the CPU wheel
    HAVE_TORCH = False

GPU_OK, GPU_WHY = cuda_available()
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed (pip install torch)")
needs_gpu = [pytest.mark.gpu,
             pytest.mark.skipif(not GPU_OK, reason=f"no usable CUDA GPU here: {GPU_WHY}")]

# (device, dtype) pairs every backend-parametrised test runs on.
MATRIX = [
    pytest.param("cpu", "float64", id="numpy-f64"),
    pytest.param("cpu", "float32", id="numpy-f32"),
    pytest.param("array_api_strict:device1", "float32", id="strict-device1-f32"),
    pytest.param("array_api_strict:device1", "float64", id="strict-device1-f64"),
    pytest.param("array_api_strict:no_float64", "float32", id="strict-nof64-f32"),
    pytest.param("torch:cpu", "float32", id="torch-f32", marks=needs_torch),
    pytest.param("torch:cpu", "float64", id="torch-f64", marks=needs_torch),
    pytest.param("cuda", "float32", id="cupy-f32", marks=needs_gpu),
    pytest.param("cuda", "float64", id="cupy-f64", marks=needs_gpu),
]

# Tolerances fitted to the dtype: relative to the largest entry of the reference.
TOL = {"float64": 1e-9, "float32": 2e-4}


def hide_module(monkeypatch, top: str) -> None:
    """Make ``import top`` (and ``import top.anything``) raise ImportError for this test, as
    on a machine without that package, even where it is installed or already imported."""
    import builtins
    real_import = builtins.__import__

    def refuse(name, *a, **k):
        if name == top or name.startswith(top + "."):
            raise ImportError(f"No module named '{top}'")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", refuse)


@pytest.fixture(scope="session", autouse=True)
def _pin_default_device():
    """The suite is hermetic: a test that names no device runs on NumPy (``cpu``), whatever
    ``$MLP_BACKEND_DEVICE`` says and whether or not a GPU is here (``auto`` would pick it).
    Session-scoped, so module fixtures and subprocesses see it too. The tests of ``auto``
    and of the variable set them explicitly (``get_backend("auto")``, ``monkeypatch``)."""
    old = os.environ.get(ENV_DEVICE)
    os.environ[ENV_DEVICE] = "cpu"
    yield
    if old is None:
        os.environ.pop(ENV_DEVICE, None)
    else:
        os.environ[ENV_DEVICE] = old


def blobs(n=300, n_features=8, n_classes=3, seed=0, as_uint8=True):
    """A small separable classification problem: Gaussian blobs as uint8 'pixels'."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    centers = rng.normal(size=(n_classes, n_features)) * 2.5
    x = centers[y] + rng.normal(size=(n, n_features))
    if as_uint8:
        x = np.clip(x * 25 + 128, 0, 255).astype(np.uint8)
    return x, y


def pytest_collection_modifyitems(config, items):
    if os.environ.get("MLP_BACKEND_TEST_NETWORK") == "1":
        return
    skip = pytest.mark.skip(reason="network test: set MLP_BACKEND_TEST_NETWORK=1 to fetch real data")
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip)
