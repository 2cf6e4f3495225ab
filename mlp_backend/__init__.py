"""mlp-backend: a from-scratch multilayer perceptron whose one math core runs on
NumPy (CPU), CuPy (CUDA) or any Array-API namespace, picked at run time.

>>> import mlp_backend as mb
>>> model = mb.MLP([784, 100, 40, 10], activations=["relu", "tanh"], device="cpu")

The default device is ``$MLP_BACKEND_DEVICE`` or ``auto``; :func:`use` changes it for
the process.
"""
from importlib import import_module

from mlp_backend.backends import Backend, BackendError, get_backend, use, to_numpy, cuda_available
from mlp_backend.model import MLP
from mlp_backend.optim import make_optimizer, make_schedule, OPTIMIZERS
from mlp_backend.init import initialize, INITIALIZERS

__version__ = "0.1.0"

# Heavier modules load on first use, so `import mlp_backend` stays quick.
_LAZY = {
    "train": "mlp_backend.training.trainer", "fit": "mlp_backend.training.trainer", "History": "mlp_backend.training.trainer",
    "MLPClassifier": "mlp_backend.interop.estimator",
    "load_dataset": "mlp_backend.data", "Dataset": "mlp_backend.data", "DataError": "mlp_backend.data",
    "save_checkpoint": "mlp_backend.training.checkpoint", "load_checkpoint": "mlp_backend.training.checkpoint",
    "check_gradients": "mlp_backend.gradcheck",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mlp_backend' has no attribute {name!r}")


__all__ = ["Backend", "BackendError", "get_backend", "use", "to_numpy", "cuda_available", "MLP",
           "make_optimizer", "make_schedule", "OPTIMIZERS", "initialize", "INITIALIZERS",
           *_LAZY]
