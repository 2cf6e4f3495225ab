"""Benchmark: mlp-backend against PyTorch eager and scikit-learn, and the GEMM floor.

One interleaved run per net: every repeat times each candidate once, in turn, so load
from other processes hits all of them alike; the report gives medians, min-max and the
ratios. The *floor* is the epoch's matrix products alone (forward, weight gradients,
input gradients for every batch shape of the epoch) at the BLAS rate measured in the
same run, into preallocated outputs.

    python benchmarks/bench.py                       # CPU, 1 BLAS thread, both nets
    python benchmarks/bench.py --coretype-both       # also a child with OPENBLAS_CORETYPE unset
    python benchmarks/bench.py --device cuda         # the GPU run (below), where a GPU is
    python benchmarks/bench.py --time-to-accuracy    # epochs until >= 98% test accuracy

All candidates train the same net (He init, relu, softmax cross-entropy), the same batch
size and dtype (float32), with plain SGD (lr 0.1) or Adam (lr 1e-3), from data already in
memory, on the same number of threads.

``--device cuda`` times first the default ``mlp-backend train --device cuda`` run (10
epochs) and the time to 98% test accuracy of the same configuration on the full training
set (:mod:`mlp_backend.studies.bench_gpu`), then, per net x batch (128, 1024) x optimizer (SGD,
Adam), in one interleaved run: mlp-backend with ``--cuda-graphs`` (default ``auto``),
mlp-backend with graphs off, PyTorch CUDA eager, PyTorch with the whole epoch captured as
one CUDA graph, and the GEMM floor (CuPy matmuls). The device is synchronised around every
timer.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

DEFAULT_NETS = ("784-100-40-10", "784-512-256-10")
LR = {"sgd": 0.1, "adam": 1e-3}  # each optimizer's learning rate, for every candidate
GRAPH_MODES = ("auto", "on", "off")
# Defaults per device: (batch sizes, optimizers).
DEVICE_DEFAULTS = {"cpu": ("128", "sgd"), "cuda": ("128,1024", "sgd,adam")}


# ----- environment ------------------------------------------------------------------------

def environment(threads: int) -> dict:
    """BLAS kernels in use, thread counts, versions, CPU model."""
    env = {"python": platform.python_version(), "numpy": np.__version__, "threads": threads,
           "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
           "cpu": _cpu_model(), "cores": os.cpu_count()}
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


def _cpu_model() -> str:
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


# ----- data -----------------------------------------------------------------------------

def load_data(name: str, rows: int | None):
    """(x uint8 (n, 784), y int64, x_test, y_test) on the host: real MNIST, or synthetic."""
    if name == "synthetic":
        rng = np.random.default_rng(0)
        n = rows or 60_000
        return (rng.integers(0, 256, (n, 784), dtype=np.uint8), rng.integers(0, 10, n),
                rng.integers(0, 256, (10_000, 784), dtype=np.uint8), rng.integers(0, 10, 10_000))
    from mlp_backend.data import load_dataset
    d = load_dataset(name)
    x, y = d.x_train, d.y_train.astype(np.int64)
    if rows:
        x, y = x[:rows], y[:rows]
    return x, y, d.x_test, d.y_test.astype(np.int64)


# ----- candidates: each returns a callable that runs (and times) one epoch -----------------

def _sizes(net: str) -> list[int]:
    return [int(s) for s in net.split("-")]


def floor_epoch(sizes, n, batch, device):
    """The epoch's GEMMs only, into preallocated outputs."""
    shapes = [batch] * (n // batch) + ([n % batch] if n % batch else [])
    if device == "cpu":
        xpm, sync = np, (lambda: None)
    else:
        import cupy as xpm
        sync = xpm.cuda.Device().synchronize
    rng = np.random.default_rng(0)
    W = [xpm.asarray(rng.standard_normal((a, b), dtype=np.float32)) for a, b in zip(sizes[:-1], sizes[1:])]
    bufs = {}
    for m in set(shapes):
        A = [xpm.asarray(rng.standard_normal((m, s), dtype=np.float32)) for s in sizes]
        Z = [xpm.empty((m, s), dtype=np.float32) for s in sizes]
        G = [xpm.empty_like(w) for w in W]
        bufs[m] = (A, Z, G)

    def run():
        sync()
        t0 = time.perf_counter()
        for m in shapes:
            A, Z, G = bufs[m]
            for i, w in enumerate(W):
                xpm.matmul(A[i], w, out=Z[i + 1])          # forward
                xpm.matmul(A[i].T, A[i + 1], out=G[i])    # dL/dW
                if i:
                    xpm.matmul(A[i + 1], w.T, out=Z[i])   # dL/da of the layer below
        sync()
        return time.perf_counter() - t0
    return run


def graph_kwargs(mode: "str | None") -> dict:
    """The ``Trainer`` keyword for CUDA-graph mode ``mode`` (``None``: none at all, the CPU
    benchmark's Trainer as always). A Trainer without the option runs eager, which is what
    ``off`` asks for and what ``auto`` falls back to; ``on`` cannot be honoured by it."""
    if mode is None:
        return {}
    if mode not in GRAPH_MODES:
        raise ValueError(f"cuda_graphs must be one of {', '.join(GRAPH_MODES)}, got {mode!r}")
    from mlp_backend.training.trainer import Trainer
    if "cuda_graphs" in inspect.signature(Trainer).parameters:
        return {"cuda_graphs": mode}
    if mode == "on":
        raise RuntimeError("--cuda-graphs on: this mlp_backend's Trainer has no cuda_graphs option, so it "
                           "cannot capture; use --cuda-graphs auto or off")
    return {}


def graph_status(trainer) -> str:
    """The trainer's one-line capture status after a fit ("captured ..." or "eager: why")."""
    return getattr(trainer, "graph_status", None) or "eager: this Trainer has no cuda_graphs option"


def ours_epoch(sizes, x, y, batch, device, lr=0.1, optimizer="sgd", cuda_graphs=None):
    """One epoch of mlp-backend. With ``cuda_graphs`` None (the CPU benchmark) the trainer's
    ``train_epoch``; with a mode, ``Trainer.fit`` one epoch further (the path that captures,
    with its one host sync per epoch). The callable's ``trainer`` attribute is the Trainer."""
    from mlp_backend.model import MLP
    from mlp_backend.optim import make_optimizer
    from mlp_backend.training.trainer import Trainer
    model = MLP(sizes, "relu", device=device, seed=0)
    b = model.backend
    xd, yd = b.asarray(x), b.asarray(y)
    tr = Trainer(model, make_optimizer(optimizer, lr), batch_size=batch, seed=0, progress="none",
                 log=lambda s: None, **graph_kwargs(cuda_graphs))

    def run():
        b.synchronize()
        t0 = time.perf_counter()
        if cuda_graphs is None:
            tr.train_epoch(xd, yd)
        else:
            tr.fit(xd, yd, tr.epoch + 1)
        b.synchronize()
        return time.perf_counter() - t0
    run.trainer = tr
    return run


def torch_net(sizes, x, y, device):
    """(net, x float32 scaled, y) for PyTorch on ``device`` ("cpu" or a CUDA device): the
    same layers as ours, PyTorch's default init (seeded), the data pre-scaled in memory."""
    import torch
    dev = torch.device("cuda" if device != "cpu" else "cpu")
    torch.manual_seed(0)  # PyTorch's default init from a fixed draw, as ours from seed 0
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers).to(dev)
    xt = torch.from_numpy(x).to(dev).float().mul_(1 / 255)  # pre-scaled: float32 in memory
    yt = torch.from_numpy(y).to(dev)
    return net, xt, yt


def torch_optimizer(name, params, lr, **kw):
    import torch
    if name not in LR:
        raise ValueError(f"the benchmark's optimizers are {', '.join(LR)}, got {name!r}")
    return (torch.optim.SGD if name == "sgd" else torch.optim.Adam)(params, lr=lr, **kw)


def torch_epoch(sizes, x, y, batch, device, lr=0.1, optimizer="sgd"):
    import torch
    net, xt, yt = torch_net(sizes, x, y, device)
    dev = xt.device
    opt = torch_optimizer(optimizer, net.parameters(), lr)
    lossf = torch.nn.CrossEntropyLoss()
    n = xt.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(0)

    def run():
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen).to(dev)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss = lossf(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0
    run.net = net
    return run


def sklearn_epoch(sizes, x, y, batch, lr=0.1):
    import warnings
    from sklearn.neural_network import MLPClassifier
    xf = x.astype(np.float32) / np.float32(255)
    clf = MLPClassifier(hidden_layer_sizes=tuple(sizes[1:-1]), solver="sgd", learning_rate_init=lr,
                        momentum=0.0, alpha=0.0, batch_size=batch, shuffle=True, random_state=0)
    classes = np.arange(sizes[-1])

    def run():
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.partial_fit(xf, y, classes=classes)
        return time.perf_counter() - t0
    return run


# ----- the interleaved run ------------------------------------------------------------------

OURS_EAGER = "mlp-backend graphs off"
TORCH_GRAPH = "torch graph-epoch"


def candidate_names(device: str, cuda_graphs: "str | None" = "auto", peers: bool = True,
                    optimizer: str = "sgd") -> list[str]:
    """The candidates of one comparison, in the order each repeat runs them. On the CPU:
    the floor, mlp-backend, PyTorch and scikit-learn (SGD only). On CUDA: the floor,
    mlp-backend (``cuda_graphs`` mode), mlp-backend with graphs off (unless the mode is
    off), PyTorch eager and PyTorch's whole epoch as one CUDA graph."""
    if device == "cpu":
        return ["floor", "mlp-backend"] + (["torch"] + (["sklearn"] if optimizer == "sgd" else []) if peers else [])
    return (["floor", "mlp-backend"] + ([OURS_EAGER] if cuda_graphs != "off" else [])
            + (["torch", TORCH_GRAPH] if peers else []))


def candidates(sizes, x, y, *, batch: int, device: str, optimizer: str = "sgd",
               cuda_graphs: "str | None" = None, peers: bool = True, log=print) -> dict:
    """{name: callable timing one epoch} for :func:`candidate_names`; a peer whose library
    is missing is left out with a note."""
    n, lr = x.shape[0], LR[optimizer]
    cuda = device != "cpu"
    mode = (cuda_graphs or "auto") if cuda else None
    cands = {}
    for name in candidate_names(device, mode, peers, optimizer):
        try:
            if name == "floor":
                cands[name] = floor_epoch(sizes, n, batch, device)
            elif name == "mlp-backend":
                cands[name] = ours_epoch(sizes, x, y, batch, "cuda" if cuda else "cpu", lr, optimizer, mode)
            elif name == OURS_EAGER:
                cands[name] = ours_epoch(sizes, x, y, batch, "cuda", lr, optimizer, "off")
            elif name == "torch":
                cands[name] = torch_epoch(sizes, x, y, batch, device, lr, optimizer)
            elif name == TORCH_GRAPH:
                from mlp_backend.studies.bench_gpu import torch_graph_epoch
                cands[name] = torch_graph_epoch(sizes, x, y, batch, lr, optimizer)
            elif name == "sklearn":
                cands[name] = sklearn_epoch(sizes, x, y, batch, lr)
        except ImportError as exc:
            log(f"  ({name}: {exc.name or exc} not installed: skipped)")
    return cands


def interleave(cands: dict, repeats: int, warmup: int = 1) -> dict:
    """{name: [seconds per repeat]}: ``warmup`` untimed rounds (caches, buffers, kernels,
    captures), then ``repeats`` rounds, each running every candidate once, in turn."""
    for _ in range(warmup):
        for run in cands.values():
            run()
    times = {k: [] for k in cands}
    for _ in range(repeats):
        for k, run in cands.items():
            times[k].append(run())
    return times


def summarise(times: dict, **meta) -> dict:
    """Medians, min, max and mlp-backend's ratio to every other candidate (its median over
    theirs: below 1, mlp-backend is faster)."""
    res = {**meta, "times": times,
           "median": {k: statistics.median(v) for k, v in times.items()},
           "min": {k: min(v) for k, v in times.items()}, "max": {k: max(v) for k, v in times.items()}}
    ours = res["median"]["mlp-backend"]
    res["ratios"] = {f"mlp-backend/{k}": ours / v for k, v in res["median"].items() if k != "mlp-backend"}
    return res


def compare(net: str, x, y, *, batch: int, device: str, repeats: int, peers: bool = True,
            log=print, optimizer: str = "sgd", cuda_graphs: "str | None" = None) -> dict:
    """One interleaved comparison of :func:`candidates` for ``net`` at ``batch`` with ``optimizer``."""
    sizes = _sizes(net)
    cands = candidates(sizes, x, y, batch=batch, device=device, optimizer=optimizer,
                       cuda_graphs=cuda_graphs, peers=peers, log=log)
    times = interleave(cands, repeats)
    meta = {"net": net, "rows": x.shape[0], "batch": batch, "device": device, "repeats": repeats}
    if device != "cpu" or optimizer != "sgd":
        meta.update(optimizer=optimizer, lr=LR[optimizer])
    if device != "cpu":
        meta.update(cuda_graphs=cuda_graphs or "auto", graph_status=graph_status(cands["mlp-backend"].trainer))
    return summarise(times, **meta)


def format_table(results: list[dict]) -> str:
    """The Markdown table of :func:`compare` results; batch and optimizer columns where the
    results carry an optimizer (the GPU run, or a CPU run with --optimizers)."""
    long = any("optimizer" in r for r in results)
    lines = ["| net | " + ("batch | optimizer | " if long else "") + "candidate | median s/epoch | min–max | "
             "mlp-backend ÷ this |", "|---|---|---|---|---|" + ("---|---|" if long else "")]
    for res in results:
        key = f"| {res['net']} | " + (f"{res['batch']} | {res.get('optimizer', 'sgd')} | " if long else "")
        for k, med in res["median"].items():
            ratio = "—" if k == "mlp-backend" else f"{res['ratios'][f'mlp-backend/{k}']:.2f}×"
            lines.append(f"{key}{k} | {med:.4f} | {res['min'][k]:.4f}–{res['max'][k]:.4f} | {ratio} |" if long else
                         f"{key}{k} | {med:.3f} | {res['min'][k]:.3f}–{res['max'][k]:.3f} | {ratio} |")
    return "\n".join(lines)


# ----- time to accuracy --------------------------------------------------------------------

def time_to_accuracy(x, y, xt, yt, *, net="784-512-256-10", target=0.98, epochs=20, batch=128,
                     optimizer="momentum", lr=0.05, schedule="cosine", device="cpu", weight_decay=0.0,
                     seed=0, log=print, cuda_graphs=None) -> dict:
    """Train ``net`` and evaluate on the test set after every epoch; wall time (training plus
    evaluation, after the data is on the device) until test accuracy >= ``target``.
    ``cuda_graphs``: the Trainer's CUDA-graph mode (None: the Trainer's default)."""
    from mlp_backend.model import MLP
    from mlp_backend.optim import make_optimizer, make_schedule
    from mlp_backend.training.trainer import Trainer
    model = MLP(_sizes(net), "relu", device=device, seed=seed)
    b = model.backend
    xd, yd, xv, yv = b.asarray(x), b.asarray(y), b.asarray(xt), b.asarray(yt)
    hit, rows = None, []

    def cb(tr, row):
        nonlocal hit
        rows.append(row)
        log(f"  epoch {row['epoch']:2d}  {time.perf_counter() - t0:6.1f}s  test acc {row['val_accuracy']:.4f}")
        if hit is None and row["val_accuracy"] >= target:
            hit = (row["epoch"], time.perf_counter() - t0, row["val_accuracy"])
    tr = Trainer(model, make_optimizer(optimizer, lr, weight_decay), batch_size=batch, seed=seed, progress="none",
                 schedule=make_schedule(schedule, lr, epochs), callbacks=[cb], log=lambda s: None,
                 **graph_kwargs(cuda_graphs))
    b.synchronize()
    t0 = time.perf_counter()
    tr.fit(xd, yd, epochs, xv, yv)
    total = time.perf_counter() - t0
    best = max(r["val_accuracy"] for r in rows)
    extra = {} if cuda_graphs is None else {"cuda_graphs": cuda_graphs, "graph_status": graph_status(tr)}
    return {**extra, "net": net, "optimizer": optimizer, "lr": lr, "weight_decay": weight_decay, "schedule": schedule,
            "epochs": epochs, "batch": batch, "device": device, "target": target, "seed": seed,
            "accuracy_per_epoch": [r["val_accuracy"] for r in rows],
            "seconds_per_epoch": [r["seconds"] for r in rows],
            "reached": None if hit is None else {"epoch": hit[0], "seconds": hit[1], "accuracy": hit[2]},
            "best_accuracy": best, "total_seconds": total}


# ----- peak memory -----------------------------------------------------------------------------

_MEMORY_CHILD = r"""
import json, resource, sys, tracemalloc
a = json.loads(sys.argv[1])
if a["trace"]:  # tracemalloc's own bookkeeping inflates maxrss: measured in a separate child
    tracemalloc.start()
from mlp_backend.studies.bench import load_data
from mlp_backend.model import MLP
from mlp_backend.optim import make_optimizer, make_schedule
from mlp_backend.training.trainer import Trainer
x, y, xt, yt = load_data(a["data"], None)
model = MLP([int(s) for s in a["net"].split("-")], "relu", device="cpu", seed=0)
b = model.backend
xd, yd, xv, yv = b.asarray(x), b.asarray(y), b.asarray(xt), b.asarray(yt)
del x, y, xt, yt
tr = Trainer(model, make_optimizer(a["optimizer"], a["lr"]), batch_size=a["batch"], progress="none",
             schedule=make_schedule("cosine", a["lr"], a["epochs"]), log=lambda s: None)
tr.fit(xd, yd, a["epochs"], xv, yv)
cur, peak = tracemalloc.get_traced_memory()
n_params = sum(int(v.size) for v in model.params.values())
try:  # VmHWM: this process image's peak RSS. ru_maxrss would also count the parent's RSS at
    # fork time (Linux keeps the high-water mark across exec), i.e. the benchmark's own torch.
    with open("/proc/self/status") as f:
        hwm = [int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:")][0]
except (OSError, IndexError):
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"maxrss_bytes": hwm,
                  "tracemalloc_peak_bytes": peak, "train_rows": int(xd.shape[0]), "features": int(xd.shape[1]),
                  "test_rows": int(xv.shape[0]), "params": n_params,
                  "val_accuracy": tr.history.rows[-1]["val_accuracy"]}))
"""


def peak_memory(net="784-512-256-10", epochs=2, batch=128, optimizer="momentum", lr=0.05, data="mnist") -> dict:
    """Peak memory of a training run (load, train with per-epoch test evaluation) in fresh
    child processes: the peak resident set (``VmHWM``; whole process: interpreter, libraries,
    data, buffers) in one, the tracemalloc peak (Python and NumPy allocations only) in another. ``budget_bytes`` is the issue's bound:
    2 x the training set as float32 plus the parameters."""
    out = []
    for trace in (False, True):  # maxrss without tracemalloc running, then the tracemalloc peak
        arg = json.dumps({"net": net, "epochs": epochs, "batch": batch, "optimizer": optimizer, "lr": lr,
                          "data": data, "trace": trace})
        child = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, arg], capture_output=True, text=True)
        if child.returncode != 0:
            return {"error": child.stderr[-2000:]}
        out.append(json.loads(child.stdout.strip().splitlines()[-1]))
    res = {**out[0], "tracemalloc_peak_bytes": out[1]["tracemalloc_peak_bytes"]}
    f32 = res["train_rows"] * res["features"] * 4
    res.update(net=net, epochs=epochs, batch=batch, optimizer=optimizer, dataset_float32_bytes=f32,
               budget_bytes=2 * f32 + 4 * res["params"])
    return res


# ----- command line -------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--nets", default=",".join(DEFAULT_NETS), help="comma-separated, e.g. 784-100-40-10")
    p.add_argument("--batch", default=None, metavar="B[,B...]",
                   help="batch size(s), comma-separated (default 128; with --device cuda 128,1024)")
    p.add_argument("--optimizers", default=None, metavar="NAME[,NAME...]",
                   help=f"of {', '.join(LR)} (lr {', '.join(f'{k} {v:g}' for k, v in LR.items())}); "
                        "default sgd, with --device cuda sgd,adam")
    p.add_argument("--cuda-graphs", default="auto", choices=GRAPH_MODES,
                   help="mlp-backend's CUDA-graph mode with --device cuda (default auto); unless off, "
                        "graphs off runs beside it as a peer")
    p.add_argument("--default-run", action=argparse.BooleanOptionalAction, default=None,
                   help="also time the default `mlp-backend train` run (10 epochs) and its time to --target "
                        "test accuracy (default: on with --device cuda, off on the CPU)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="BLAS and torch threads (default 1)")
    p.add_argument("--data", default="mnist", help="mnist | fashion_mnist | synthetic")
    p.add_argument("--rows", type=int, default=None, help="use the first ROWS training images")
    p.add_argument("--widths", default="", help="also sweep 784-W-10 for these hidden widths, e.g. 64,256,1024")
    p.add_argument("--no-peers", action="store_true", help="floor and mlp-backend only")
    p.add_argument("--coretype-both", action="store_true",
                   help="also rerun in a child process with OPENBLAS_CORETYPE unset")
    p.add_argument("--time-to-accuracy", action="store_true", help="also time training to --target")
    p.add_argument("--target", type=float, default=0.98)
    p.add_argument("--tta-net", default="784-512-256-10")
    p.add_argument("--tta-epochs", type=int, default=20)
    p.add_argument("--tta-lr", type=float, default=0.05)
    p.add_argument("--tta-optimizer", default="momentum")
    p.add_argument("--tta-batch", type=int, default=128)
    p.add_argument("--tta-weight-decay", type=float, default=0.0)
    p.add_argument("--tta-schedule", default="cosine")
    p.add_argument("--tta-seed", type=int, default=0)
    p.add_argument("--skip-compare", action="store_true", help="no epoch-time comparison (e.g. only --time-to-accuracy)")
    p.add_argument("--tta-threads", type=int, default=None, help="threads for time-to-accuracy (default: all)")
    p.add_argument("--memory", action="store_true",
                   help="also measure the peak memory of a --tta-net training run in a child process")
    p.add_argument("--json", default=None, help="write all results to this JSON file")
    p.add_argument("--ranks", default=None, metavar="1,2",
                   help="instead: data-parallel scaling over MPI ranks (mlp_backend.studies.bench_ranks; nets "
                        "784-512-256-10,784-2048-2048-10 and batch 512 unless --nets/--batch are given)")


def plan(args) -> dict:
    """The run's grid from the arguments: nets, batch sizes, optimizers (device defaults
    filled in), and whether the default train run is timed. Raises ValueError on bad input."""
    batches, optimizers = DEVICE_DEFAULTS[args.device]
    try:
        batches = [int(b) for b in (args.batch or batches).split(",") if b.strip()]
    except ValueError:
        raise ValueError(f"--batch wants positive integers separated by commas, got {args.batch!r}") from None
    if not batches or min(batches) < 1:
        raise ValueError(f"--batch wants positive integers separated by commas, got {args.batch!r}")
    optimizers = [o.strip() for o in (args.optimizers or optimizers).split(",") if o.strip()]
    bad = [o for o in optimizers if o not in LR]
    if bad or not optimizers:
        raise ValueError(f"--optimizers: {', '.join(bad) or 'none given'}; choose from {', '.join(LR)}")
    nets = [s for s in args.nets.split(",") if s] + [f"784-{w}-10" for w in args.widths.split(",") if w]
    default_run = args.device == "cuda" if args.default_run is None else args.default_run
    return {"nets": [] if args.skip_compare else nets, "batches": batches, "optimizers": optimizers,
            "cuda_graphs": args.cuda_graphs if args.device == "cuda" else None, "default_run": default_run}


def save_json(path, out: dict) -> None:
    """Write the results so far (atomically, to a regular file: a run cut short keeps them)."""
    if path and not str(path).startswith("/dev/"):
        from mlp_backend.data.atomic import atomic_write_bytes
        data = json.dumps(out, indent=1, default=str).encode()
        atomic_write_bytes(path, lambda f: f.write(data))


def main_args(args) -> dict:
    if getattr(args, "ranks", None):  # data-parallel scaling has its own runs (mlp_backend.studies.bench_ranks)
        from mlp_backend.studies.bench_ranks import main_args as ranks_main
        return ranks_main(args)
    out: dict = {"command": " ".join(["python benchmarks/bench.py", *sys.argv[1:]])}
    try:
        grid = plan(args)
    except ValueError as exc:
        raise SystemExit(f"mlp-backend bench: {exc}") from None
    guard = limit_threads(args.threads)
    out["environment"] = environment(args.threads)
    if args.device == "cuda":
        from mlp_backend.studies.bench_gpu import gpu_environment
        out["environment"]["cuda"] = gpu_environment()
    print(json.dumps(out["environment"], indent=1))
    x, y, xt, yt = load_data(args.data, args.rows)
    results = out["results"] = []
    if grid["default_run"]:  # first: the two figures of the default run survive a grid cut short
        from mlp_backend.studies.bench_gpu import default_run, default_time_to_accuracy
        dev = "cuda" if args.device == "cuda" else "cpu"
        if args.data == "synthetic":
            print("\ndefault train run: skipped (it needs a real data set, not --data synthetic)")
        else:
            out["default_run"] = default_run(args.data, dev, grid["cuda_graphs"])
            save_json(args.json, out)
        out["default_time_to_accuracy"] = default_time_to_accuracy(x, y, xt, yt, dev, grid["cuda_graphs"],
                                                                   target=args.target)
        save_json(args.json, out)
    for net in grid["nets"]:
        for batch in grid["batches"]:
            for opt in grid["optimizers"]:
                label = net if len(grid["batches"]) == len(grid["optimizers"]) == 1 else f"{net} batch {batch} {opt}"
                print(f"{label}: {args.repeats} interleaved repeats ...", flush=True)
                res = compare(net, x, y, batch=batch, device=args.device, repeats=args.repeats,
                              peers=not args.no_peers, optimizer=opt, cuda_graphs=grid["cuda_graphs"])
                if label != net:  # a grid: every row names its optimizer (the table's long layout)
                    res.setdefault("optimizer", opt)
                    res.setdefault("lr", LR[opt])
                print("  " + "  ".join(f"{k} {v:.3f}s" for k, v in res["median"].items()) + "  |  "
                      + "  ".join(f"{k} {v:.2f}" for k, v in res["ratios"].items())
                      + (f"\n  graphs: {res['graph_status']}" if "graph_status" in res else ""), flush=True)
                results.append(res)
                save_json(args.json, out)
    print()
    print(format_table(results))
    if args.time_to_accuracy:
        if guard is not None:
            guard.restore_original_limits()
        if args.tta_threads:
            limit_threads(args.tta_threads)
        print(f"\ntime to {args.target:.1%} test accuracy ({args.tta_net}, {args.tta_optimizer}, "
              f"{args.tta_schedule}, batch {args.tta_batch}, {args.tta_threads or 'all'} threads):")
        out["time_to_accuracy"] = time_to_accuracy(
            x, y, xt, yt, net=args.tta_net, target=args.target, epochs=args.tta_epochs, lr=args.tta_lr,
            device=args.device, optimizer=args.tta_optimizer, batch=args.tta_batch,
            weight_decay=args.tta_weight_decay, schedule=args.tta_schedule, seed=args.tta_seed)
        out["time_to_accuracy"]["threads"] = args.tta_threads or "all"
        print(json.dumps(out["time_to_accuracy"], indent=1))
    if args.memory:
        mem = out["peak_memory"] = peak_memory(args.tta_net, batch=args.tta_batch, optimizer=args.tta_optimizer,
                                               lr=args.tta_lr, data=args.data)
        if "error" in mem:
            print("\npeak memory: child failed:\n" + mem["error"])
        else:
            mib = 2 ** 20
            print(f"\npeak memory of training {mem['net']} ({mem['epochs']} epochs, with test evaluation): "
                  f"maxrss {mem['maxrss_bytes'] / mib:.0f} MiB, tracemalloc peak "
                  f"{mem['tracemalloc_peak_bytes'] / mib:.0f} MiB; budget (2 x float32 training set + params) "
                  f"{mem['budget_bytes'] / mib:.0f} MiB", flush=True)
    if args.coretype_both:
        if "OPENBLAS_CORETYPE" in os.environ:
            env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
            label = "unset"
        else:
            env = {**os.environ, "OPENBLAS_CORETYPE": "Haswell"}
            label = "Haswell"
        argv = [a for a in sys.argv[1:] if a not in ("--coretype-both", "--time-to-accuracy", "--memory")]
        if "--json" in argv:
            i = argv.index("--json")
            del argv[i:i + 2]
        print(f"\n--- child process with OPENBLAS_CORETYPE {label} ---", flush=True)
        child = subprocess.run([sys.executable, "-m", "mlp_backend.studies.bench", *argv, "--json", "/dev/stdout"],
                               env=env, capture_output=True, text=True)
        cut = child.stdout.find('{\n "command"')
        print(child.stdout[:cut] if child.returncode == 0 and cut >= 0 else child.stdout + child.stderr)
        if cut >= 0:
            out["other_coretype"] = json.loads(child.stdout[cut:])
    if args.json and str(args.json).startswith("/dev/"):  # the --coretype-both child's /dev/stdout
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    else:
        save_json(args.json, out)
    return out


def register(subparsers) -> None:
    """Add the ``bench`` subcommand to the CLI's subparsers."""
    p = subparsers.add_parser("bench", help="time training against PyTorch, scikit-learn and the GEMM floor")
    add_arguments(p)
    p.set_defaults(func=lambda args: (main_args(args), 0)[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="mlp-backend bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    main_args(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
