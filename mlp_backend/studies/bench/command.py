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
set (:mod:`mlp_backend.studies.bench.gpu`), then, per net x batch (128, 1024) x optimizer (SGD,
Adam), in one interleaved run: mlp-backend with ``--cuda-graphs`` (default ``auto``),
mlp-backend with graphs off, PyTorch CUDA eager, PyTorch with the whole epoch captured as
one CUDA graph, and the GEMM floor (CuPy matmuls). The device is synchronised around every
timer.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from mlp_backend.studies.bench import ranks
from mlp_backend.studies.bench.candidates import LR
from mlp_backend.studies.bench.comparison import DEFAULT_NETS, compare, format_table
from mlp_backend.studies.bench.environment import environment, limit_threads, load_data
from mlp_backend.studies.bench.gpu import default_run, default_time_to_accuracy, gpu_environment
from mlp_backend.studies.bench.memory import peak_memory
from mlp_backend.studies.bench.tta import time_to_accuracy
from mlp_backend.training.runner import MODES

# Defaults per device: (batch sizes, optimizers).
DEVICE_DEFAULTS = {"cpu": ("128", "sgd"), "cuda": ("128,1024", "sgd,adam")}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's options, added to ``p`` (``mlp-backend bench`` and ``python -m``'s parser alike)."""
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--nets", default=",".join(DEFAULT_NETS), help="comma-separated, e.g. 784-100-40-10")
    p.add_argument("--batch", default=None, metavar="B[,B...]",
                   help="batch size(s), comma-separated (default 128; with --device cuda 128,1024)")
    p.add_argument("--optimizers", default=None, metavar="NAME[,NAME...]",
                   help=f"of {', '.join(LR)} (lr {', '.join(f'{k} {v:g}' for k, v in LR.items())}); "
                        "default sgd, with --device cuda sgd,adam")
    p.add_argument("--cuda-graphs", default="auto", choices=MODES,
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
                   help="instead: data-parallel scaling over MPI ranks (mlp_backend.studies.bench.ranks; nets "
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
        from mlp_backend.data.atomic import write_bytes_atomic  # the data package: not at `mlp-backend` start
        write_bytes_atomic(path, json.dumps(out, indent=1, default=str).encode())


def main_args(args) -> dict:
    """Run what the parsed ``args`` ask for (``--ranks``: the scaling benchmark instead), printing
    as it goes; returns the results (written to ``--json`` too)."""
    if getattr(args, "ranks", None):  # data-parallel scaling has its own runs
        return ranks.main_args(args)
    out: dict = {"command": " ".join(["python benchmarks/bench.py", *sys.argv[1:]])}
    try:
        grid = plan(args)
    except ValueError as exc:
        raise SystemExit(f"mlp-backend bench: {exc}") from None
    guard = limit_threads(args.threads)
    out["environment"] = environment(args.threads)
    if args.device == "cuda":
        out["environment"]["cuda"] = gpu_environment()
    print(json.dumps(out["environment"], indent=1))
    x, y, xt, yt = load_data(args.data, args.rows)
    results = out["results"] = []
    if grid["default_run"]:  # first: the two figures of the default run survive a grid cut short
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
    """``python -m mlp_backend.studies.bench`` and ``benchmarks/bench.py``: parse ``argv``, run, exit 0."""
    p = argparse.ArgumentParser(prog="mlp-backend bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    main_args(p.parse_args(argv))
    return 0
