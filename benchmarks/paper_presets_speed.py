"""Per-epoch time of the three paper presets beside the printed appendix code, one core, side by side.

For each of ``paper-random``, ``paper-he`` and ``paper-lecun`` this times one full-batch
float64 epoch of ours -- the epoch ``mlp-backend train --preset P --dtype float64`` runs
(the CLI's own config, model, optimizer and trainer builders, its end-of-epoch snapshot
callback, int64 labels) -- and one epoch of the printed code
(``benchmarks/paper_code.py``: ``train_neural_network(num_epochs=1)`` with validation
data) on the same 36,900 training and 4,100 validation rows. Ours is one persistent
trainer advanced an epoch at a time, so its first epoch (which scales the full batch once
and allocates the workspace) is reported apart and left out of the medians.

The repetitions are interleaved -- printed, ours, ours, printed, ... for every preset in
turn -- so that a change in the machine's load falls on both sides alike; the ratio is
printed median / ours median (> 1: ours is faster). BLAS runs one thread
(threadpoolctl) and the process is pinned to one CPU (``--cpu``), so set the environment
as well to keep OpenBLAS from starting its thread pool at all::

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/paper_presets_speed.py [--reps 7] [--cpu 1] [--presets paper-random paper-he paper-lecun]
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/paper_presets_speed.py --breakdown --presets paper-lecun

``--breakdown`` instead prints, per preset, the CPU time of every source line of both
epochs (exclusive, averaged over ``--reps``; a line-tracing profiler, so the sums run a
little above the plain times): each GEMM, each elementwise pass, the one-hot targets, the
loss, the accuracy, the update are lines of their own on both sides. ``--json FILE`` writes every timing. MNIST comes from the
library's cache (``MLP_BACKEND_DATA_DIR`` or ``~/.cache/mlp-backend``). No assertion is
made on the times: it reports, it does not judge.
"""
from __future__ import annotations

import argparse
import collections
import json
import linecache
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import paper_code  # noqa: E402
from paper_speed import paper_arrays  # noqa: E402

PAPER_PRESETS = ("paper-random", "paper-he", "paper-lecun")
PRINTED_INIT = {"paper-random": "random", "paper-he": "he", "paper-lecun": "lecun"}


def our_side(preset: str, data: dict):
    """(one-epoch callable, trainer): the epoch ``mlp-backend train --preset P --dtype float64``
    runs on the CPU, built with the CLI's own functions."""
    from mlp_backend.backends import get_backend
    from mlp_backend.data.formats import N_CLASSES
    from mlp_backend.training.config import resolve_config
    from mlp_backend.training.run import EpochSnapshot, build_model, build_optimizer, build_trainer
    cfg = resolve_config(preset, dtype="float64")
    backend = get_backend("cpu")
    model = build_model(cfg, data["x_train"].shape[1], N_CLASSES, backend)
    snapshot = EpochSnapshot(os.devnull, run_config=cfg)
    trainer = build_trainer(cfg, model, build_optimizer(cfg), progress="none", log=lambda s: None,
                            callbacks=[snapshot])
    x, y = backend.asarray(data["x_train"]), backend.asarray(data["y_train"], "int64")
    xv, yv = backend.asarray(data["x_val"]), backend.asarray(data["y_val"], "int64")

    def epoch():  # fit ends the epoch with its one host sync
        trainer.fit(x, y, trainer.epoch + 1, xv, yv)
    return epoch, trainer


def printed_side(preset: str, printed):
    """One epoch of the printed ``train_neural_network`` (its weight draw costs ~1 ms)."""
    from mlp_backend.training.presets import PRESETS
    cfg = PRESETS[preset]
    tr_x, tr_y, va_x, va_y = printed
    h1, h2 = cfg["hidden"]

    def epoch():
        paper_code.train_neural_network(tr_x, tr_y, 784, h1, h2, 10, learning_rate=cfg["lr"], num_epochs=1,
                                        validation_data=[va_x, va_y], print_every=5,
                                        init_type=PRINTED_INIT[preset], layer2=cfg["activation"][1],
                                        log=lambda s: None)
    return epoch


def pin(cpu):
    """One BLAS thread; the process on CPU ``cpu`` (None: leave the affinity)."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def timed(fn) -> tuple:
    """(wall seconds, CPU seconds of this process: user + system, all its threads)."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def measure(presets=PAPER_PRESETS, reps: int = 7, n_rows: int = 42_000, log=print) -> dict:
    printed, ours = paper_arrays(n_rows)
    sides, first = {}, {}
    for p in presets:
        ours_epoch, _ = our_side(p, ours)
        first[p] = timed(ours_epoch)[0]  # scales the full batch once, allocates the workspace
        sides[p] = {"printed": printed_side(p, printed), "ours": ours_epoch}
        timed(sides[p]["printed"])  # warm-up
    times = {p: {"printed": [], "ours": []} for p in presets}
    res = {"machine": machine(), "reps": reps, "n_train": int(printed[0].shape[1]),
           "n_val": int(printed[2].shape[0]), "presets": {}}
    for i in range(reps):
        for p in presets:
            order = ("printed", "ours") if i % 2 == 0 else ("ours", "printed")
            for side in order:
                times[p][side].append(timed(sides[p][side]))
    log(f"one epoch, median of {reps} interleaved (min-max); wall = elapsed, cpu = this process's "
        f"user+system time (the steadier one on a shared machine); ratio = printed / ours")
    log(f"{'preset':13s} {'':5s} {'printed s':>21s} {'ours s':>21s} {'ratio':>6s}")
    for p in presets:
        r = res["presets"][p] = {"ours_first_epoch_wall": first[p]}
        for k, clock in enumerate(("wall", "cpu")):
            pt, ot = [t[k] for t in times[p]["printed"]], [t[k] for t in times[p]["ours"]]
            pm, om = statistics.median(pt), statistics.median(ot)
            r[clock] = {"printed": pt, "ours": ot, "printed_median": pm, "ours_median": om, "ratio": pm / om}
            log(f"{p if k == 0 else '':13s} {clock:5s} {pm:7.3f} ({min(pt):.3f}-{max(pt):.3f}) "
                f"{om:7.3f} ({min(ot):.3f}-{max(ot):.3f}) {pm / om:5.2f}x"
                + (f"   ours' first epoch {first[p]:.3f} s wall" if k == 0 else ""))
    res["load_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return res


def machine() -> dict:
    import platform
    from threadpoolctl import threadpool_info
    blas = [{k: i.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return {"python": platform.python_version(), "numpy": np.__version__, "blas": blas,
            "cpus": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "load_before": os.getloadavg() if hasattr(os, "getloadavg") else None}


# ----- --breakdown: CPU time per source line ---------------------------------------------

def line_times(fn, roots, reps=3) -> dict:
    """Exclusive CPU time (this process's) of every line of the files under ``roots`` during ``fn()``
    (a ``sys.settrace`` line profiler; time in untraced code counts to the calling line)."""
    roots = tuple(str(Path(r).resolve()) for r in roots)
    acc = collections.defaultdict(float)
    st = {"key": None, "t": 0.0}

    def local(frame, event, arg):
        now = time.process_time()
        if st["key"] is not None:
            acc[st["key"]] += now - st["t"]
        if event == "line":
            st["key"] = (frame.f_code.co_filename, frame.f_lineno)
        elif event == "return":
            b = frame.f_back
            st["key"] = (b.f_code.co_filename, b.f_lineno) if b is not None and b.f_code.co_filename.startswith(roots) else None
        st["t"] = time.process_time()
        return local

    def glob(frame, event, arg):
        return local(frame, event, arg) if frame.f_code.co_filename.startswith(roots) else None

    for _ in range(reps):
        st["key"] = None
        sys.settrace(glob)
        try:
            fn()
        finally:
            sys.settrace(None)
    return {k: v / reps for k, v in acc.items()}


def print_lines(title, times, floor=0.001, log=print):
    log(f"== {title}: {sum(times.values()) * 1e3:.1f} ms CPU traced per epoch")
    for (f, line), v in sorted(times.items(), key=lambda kv: -kv[1]):
        if v < floor:
            break
        log(f"{v * 1e3:8.1f} ms  {Path(f).name}:{line:<4d} {linecache.getline(f, line).strip()[:100]}")


def breakdown(presets=PAPER_PRESETS, reps: int = 3, n_rows: int = 42_000, log=print) -> dict:
    import mlp_backend
    printed, ours = paper_arrays(n_rows)
    out = {}
    for p in presets:
        ours_epoch, _ = our_side(p, ours)
        printed_epoch = printed_side(p, printed)
        ours_epoch(), printed_epoch()  # first epoch and warm-up out of the way
        tp = line_times(printed_epoch, [paper_code.__file__], reps)
        to = line_times(ours_epoch, [Path(mlp_backend.__file__).parent], reps)
        print_lines(f"{p} printed", tp, log=log)
        print_lines(f"{p} ours", to, log=log)
        out[p] = {"printed": {f"{Path(f).name}:{n}": v for (f, n), v in tp.items()},
                  "ours": {f"{Path(f).name}:{n}": v for (f, n), v in to.items()}}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=list(PAPER_PRESETS), choices=PAPER_PRESETS)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--rows", type=int, default=42_000, help="rows drawn from MNIST (the paper's CSV has 42,000)")
    ap.add_argument("--cpu", type=int, default=1, help="pin the process to this CPU (-1: do not pin)")
    ap.add_argument("--breakdown", action="store_true", help="CPU time per source line instead")
    ap.add_argument("--json", help="write the timings to this file")
    a = ap.parse_args(argv)
    pin(None if a.cpu < 0 else a.cpu)
    with np.errstate(over="ignore"):  # the printed sigmoid overflows on unscaled weights
        res = (breakdown(a.presets, a.reps, a.rows) if a.breakdown else measure(a.presets, a.reps, a.rows))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
