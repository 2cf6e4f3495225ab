"""What a benchmark runs in and on: the machine's record, the thread limits, the data set in
memory and the layer sizes a net's name stands for.

Nothing here imports PyTorch, threadpoolctl or the data package until it is called.
"""
from __future__ import annotations

import os
import platform

import numpy as np


def environment(threads: int) -> dict:
    """BLAS kernels in use, thread counts, versions, CPU model."""
    env = {"python": platform.python_version(), "numpy": np.__version__, "threads": threads,
           "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
           "cpu": cpu_model(), "cores": os.cpu_count()}
    try:
        from threadpoolctl import threadpool_info
        env["blas"] = [{k: i.get(k) for k in ("internal_api", "architecture", "num_threads", "version",
                                              "filepath")} for i in threadpool_info()]
    except ImportError:
        env["blas"] = "threadpoolctl not installed"
    for mod in ("torch", "sklearn", "cupy", "array_api_compat"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            pass
    try:
        import torch
        env["torch_threads"] = torch.get_num_threads()
        env["torch_blas"] = "MKL" if torch.backends.mkl.is_available() else "other"
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return env


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def limit_threads(threads: int):
    """Pin BLAS (threadpoolctl) and torch to ``threads``; returns the threadpoolctl guard."""
    guard = None
    try:
        from threadpoolctl import threadpool_limits
        guard = threadpool_limits(threads)
    except ImportError:
        pass
    try:
        import torch
        torch.set_num_threads(threads)
    except ImportError:
        pass
    return guard


def load_data(name: str, rows: int | None):
    """(x uint8 (n, 784), y int64, x_test, y_test) on the host: real MNIST, or synthetic."""
    if name == "synthetic":
        from mlp_backend.data.formats import N_CLASSES, N_PIXELS
        rng = np.random.default_rng(0)
        n = rows or 60_000
        return (rng.integers(0, 256, (n, N_PIXELS), dtype=np.uint8), rng.integers(0, N_CLASSES, n),
                rng.integers(0, 256, (10_000, N_PIXELS), dtype=np.uint8), rng.integers(0, N_CLASSES, 10_000))
    from mlp_backend.data import load_dataset
    d = load_dataset(name)
    x, y = d.x_train, d.y_train.astype(np.int64)
    if rows:
        x, y = x[:rows], y[:rows]
    return x, y, d.x_test, d.y_test.astype(np.int64)


def net_sizes(net: str) -> list[int]:
    """The layer sizes a net's name lists: ``"784-100-10"`` -> ``[784, 100, 10]``."""
    return [int(s) for s in net.split("-")]
