"""The GPU benchmark's own parts: PyTorch's whole epoch as one CUDA graph, the GPU's
versions, and the default ``train`` run with its time to accuracy.

:mod:`mlp_backend.studies.bench` runs the interleaved comparison; with ``--device cuda`` it takes
from here the PyTorch whole-epoch graph (the near launch-free peer: every full batch of an
epoch captured once with ``torch.cuda.CUDAGraph`` and replayed, the same maths as the eager
peer), the card/driver/CUDA/library versions for the record, and two end-to-end figures:
the default ``mlp-backend train --device cuda`` run (its 10 epochs) and the time to 98 %
MNIST test accuracy of the same configuration. Nothing here imports CuPy or PyTorch until
it is called.
"""
from __future__ import annotations

import subprocess
import tempfile
import time


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


def static_step(net, xs, ys, batch, lr, opt=None):
    """``step(i)``: one training step of ``net`` on rows ``i*batch:(i+1)*batch`` of the static
    buffers ``xs``, ``ys``, in the form a CUDA graph can capture (no ``zero_grad``, no host
    sync): mean cross-entropy, ``autograd.grad``, then SGD with ``lr`` as one ``_foreach_add_``
    (``opt`` None) or ``opt.step()`` on the gradients. The same maths as the eager peer's
    ``zero_grad``/``backward``/``step``, on any device."""
    import torch
    params = list(net.parameters())
    lossf = torch.nn.CrossEntropyLoss()

    def step(i):
        rows = slice(i * batch, (i + 1) * batch)
        loss = lossf(net(xs[rows]), ys[rows])
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            if opt is None:
                torch._foreach_add_(params, grads, alpha=-lr)
            else:
                for p, g in zip(params, grads):
                    p.grad = g
                opt.step()
    return step


def torch_graph_epoch(sizes, x, y, batch, lr=0.1, optimizer="sgd", warmup_steps=3):
    """PyTorch with the whole epoch as one CUDA graph (as ../shared/tools/gpu/torch_cuda_ref.py):
    the epoch's full batches (the remainder batch is left out) captured once, each step the
    eager peer's maths (forward, cross-entropy, gradients, SGD or Adam); each timed epoch draws
    a permutation, gathers the rows into the graph's static buffers and replays the graph.

    Returns the timing callable; its attributes ``net``, ``step(i)`` (one eager step on the
    static buffers), ``params``, ``optimizer`` (None for SGD) and ``steps`` let a test replay
    the graph's work eagerly."""
    import torch

    from mlp_backend.studies.bench import torch_net, torch_optimizer
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 products in float32, as ours
    net, xt, yt = torch_net(sizes, x, y, "cuda")
    params = list(net.parameters())
    n = xt.shape[0]
    steps = n // batch
    if steps < 1:
        raise ValueError(f"torch graph-epoch: batch {batch} is larger than the {n} rows")
    xs, ys = xt[:steps * batch].clone(), yt[:steps * batch].clone()
    # Adam's step count and moments must live on the device for a replayed graph to advance them.
    opt = torch_optimizer(optimizer, params, lr, capturable=True, foreach=True) if optimizer != "sgd" else None
    step = static_step(net, xs, ys, batch, lr, opt)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream: lazy state, cuBLAS handles
        for i in range(min(warmup_steps, steps)):
            step(i)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(steps):
            step(i)
    gen = torch.Generator(device="cpu").manual_seed(0)

    def run():
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen).to(xt.device)[:steps * batch]
        torch.index_select(xt, 0, perm, out=xs)
        torch.index_select(yt, 0, perm, out=ys)
        graph.replay()
        torch.cuda.synchronize()
        return time.perf_counter() - t0
    run.net, run.step, run.params, run.steps, run.graph, run.optimizer = net, step, params, steps, graph, opt
    return run


def default_run(dataset: str, device: str = "cuda", cuda_graphs: "str | None" = "auto", *,
                epochs: "int | None" = None, log=print) -> dict:
    """``mlp-backend train --device DEVICE`` with the default configuration (``--dataset``
    and ``--cuda-graphs`` aside), written to a temporary folder: the sum of its epoch times
    (``total_train_seconds``, what `train` reports: training plus the per-epoch validation),
    each epoch's time (the first includes any capture), the accuracies and the graph status."""
    from mlp_backend.studies.bench import graph_status
    from mlp_backend.training.config import resolve_config
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
    wall time until test accuracy >= ``target`` (:func:`mlp_backend.studies.bench.time_to_accuracy`)."""
    from mlp_backend.studies.bench import time_to_accuracy
    from mlp_backend.training.presets import PRESETS
    cfg = PRESETS["default"]
    net = "-".join(str(v) for v in (x.shape[1], *cfg["hidden"], 10))
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
