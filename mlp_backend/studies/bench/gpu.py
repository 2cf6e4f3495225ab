"""The GPU run's own records: the card's and libraries' versions, and the default ``train``
run with its time to accuracy.

With ``--device cuda``, ``mlp-backend bench`` records the card/driver/CUDA/library versions
with its figures and, before the interleaved comparison, two end-to-end figures: the
default ``mlp-backend train --device cuda`` run (its 10 epochs) and the time to 98 % MNIST
test accuracy of the same configuration (both also run on the CPU, as the tests do). Nothing
here imports CuPy or PyTorch until it is called.
"""
from __future__ import annotations

import subprocess
import tempfile
import time

from mlp_backend.studies.bench.candidates import graph_status
from mlp_backend.studies.bench.tta import time_to_accuracy
from mlp_backend.training.presets import PRESETS


def _version(mod: str):
    try:
        return __import__(mod).__version__
    except Exception:  # not installed, or a broken CUDA install: recorded, not fatal
        return None


def _cuda_version(v: int) -> str:
    """CUDA's integer versions (13000) as "13.0"."""
    return f"{v // 1000}.{v % 1000 // 10}"


def gpu_environment() -> dict:
    """Card, driver, CUDA (driver and runtime), CuPy, PyTorch, nvmath-python: what a GPU
    figure must be recorded with. Missing pieces are recorded as errors, not raised."""
    env = {"cupy": _version("cupy"), "torch": _version("torch"), "nvmath": _version("nvmath")}
    try:
        import cupy
        rt = cupy.cuda.runtime
        props = rt.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        env.update(gpu=name.decode() if isinstance(name, bytes) else str(name),
                   gpu_memory_bytes=int(props["totalGlobalMem"]),
                   cuda_driver_api=_cuda_version(rt.driverGetVersion()),
                   cuda_runtime=_cuda_version(rt.runtimeGetVersion()))
    except Exception as exc:
        env["cupy_error"] = f"{type(exc).__name__}: {exc}"
    try:
        import torch
        env["torch_cuda"] = torch.version.cuda
    except ImportError:
        pass
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        env["nvidia_smi"] = smi.stdout.strip() if smi.returncode == 0 else f"exit {smi.returncode}: {smi.stderr.strip()}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        env["nvidia_smi"] = f"not run: {exc}"
    return env


def default_run(dataset: str, device: str = "cuda", cuda_graphs: "str | None" = "auto", *,
                epochs: "int | None" = None, log=print) -> dict:
    """``mlp-backend train --device DEVICE`` with the default configuration (``--dataset``
    and ``--cuda-graphs`` aside), written to a temporary folder: the sum of its epoch times
    (``total_train_seconds``, what `train` reports: training plus the per-epoch validation),
    each epoch's time (the first includes any capture), the accuracies and the graph status."""
    from mlp_backend.training.config import resolve_config  # with the data package: not at `mlp-backend` start
    from mlp_backend.training.run import train_run
    options = {"dataset": dataset, "epochs": epochs}
    if cuda_graphs is not None:
        options["cuda_graphs"] = cuda_graphs
    cfg = resolve_config(None, **options)
    with tempfile.TemporaryDirectory(prefix="mlp-bench-train-") as out:
        t0 = time.perf_counter()
        res = train_run(cfg, out, device=device, quiet=True)
        wall = time.perf_counter() - t0
    m = res["metrics"]
    summary = {"command": f"mlp-backend train --device {device}"
                          + (f" --dataset {dataset}" if dataset != "mnist" else "")
                          + (f" --epochs {epochs}" if epochs else ""),
               "epochs": m["epochs_run"], "total_train_seconds": m["total_train_seconds"],
               "epoch_seconds": m["epoch_seconds"], "wall_seconds_with_load_and_outputs": wall,
               "val_accuracy": m["val_accuracy"], "test_accuracy": m["test_accuracy"],
               "device": m["device"], "graph_status": graph_status(res["trainer"])}
    log(f"\ndefault train run on {m['device']}: {summary['epochs']} epochs in {summary['total_train_seconds']:.3f} s "
        f"(first {m['epoch_seconds'][0]:.3f} s), test accuracy {m['test_accuracy']:.2%}; graphs: {summary['graph_status']}")
    return summary


def default_time_to_accuracy(x, y, xt, yt, device: str = "cuda", cuda_graphs: "str | None" = "auto", *,
                             target: float = 0.98, log=print) -> dict:
    """The default configuration (net, Adam 1e-3, cosine over its 10 epochs, batch 128,
    float32, seed 0) trained on all of ``x`` with the test set evaluated after every epoch:
    wall time until test accuracy >= ``target`` (:func:`~mlp_backend.studies.bench.tta.time_to_accuracy`)."""
    from mlp_backend.data.formats import N_CLASSES
    cfg = PRESETS["default"]
    net = "-".join(str(v) for v in (x.shape[1], *cfg["hidden"], N_CLASSES))
    log(f"\ntime to {target:.1%} test accuracy, default configuration ({net}, {cfg['optimizer']} lr {cfg['lr']:g}, "
        f"{cfg['schedule']}, batch {cfg['batch_size']}) on {device}:")
    res = time_to_accuracy(x, y, xt, yt, net=net, target=target, epochs=cfg["epochs"], batch=cfg["batch_size"],
                           optimizer=cfg["optimizer"], lr=cfg["lr"], schedule=cfg["schedule"], device=device,
                           cuda_graphs=cuda_graphs, log=log)
    hit = res["reached"]
    log(f"  {'reached at epoch %d after %.3f s' % (hit['epoch'], hit['seconds']) if hit else 'not reached'}; "
        f"{res['epochs']} epochs in {res['total_seconds']:.3f} s" + (f"; graphs: {res['graph_status']}"
                                                                      if "graph_status" in res else ""))
    return res
