"""Scaling benchmark: training epoch time on N MPI ranks against one process
(``mlp-backend bench --ranks 1,2``).

Every configuration runs in a fresh child process (:mod:`mlp_backend.studies.bench.ranks_child`,
under ``mpiexec -n N`` for N > 1) with its BLAS thread count fixed before NumPy loads: N ranks
x 1 thread for each N given, and, beside them, one process with as many threads as the
largest N (the other way to use the same cores). Each child trains one warm-up epoch, then
times epochs of plain SGD (the ``Trainer``'s epoch: rank 0's wall time between barriers);
the configurations run twice, in opposite orders, so drifting load from other processes hits
them alike. The child with N > 1 ranks also times the gradient all-reduce alone (the same
buffer, 20 calls) and reports it against the step time (epoch time / steps).

    mlp-backend bench --ranks 1,2                         # 784-512-256-10 and 784-2048-2048-10, batch 512
    mlp-backend bench --ranks 1,2 --nets 784-2048-2048-10 --rows 20000 --repeats 4
"""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys

from mlp_backend.studies.bench.comparison import DEFAULT_NETS
from mlp_backend.studies.bench.environment import cpu_model

NETS = ("784-512-256-10", "784-2048-2048-10")
BATCH = 512
CHILD = "mlp_backend.studies.bench.ranks_child"


def run_config(net: str, ranks: int, threads: int, *, batch: int, epochs: int, data: str, rows) -> dict:
    """Time one configuration in a child process; returns the child's result."""
    from mlp_backend.training.distributed import find_mpiexec
    spec = {"net": net, "batch": batch, "epochs": epochs, "data": data, "rows": rows}
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", CHILD, json.dumps(spec)]
    if ranks > 1:
        mpiexec = find_mpiexec()
        if mpiexec is None:
            from mlp_backend.training.distributed import INSTALL_HINT, DistributedError
            raise DistributedError(f"bench --ranks {ranks} needs mpiexec: {INSTALL_HINT}")
        cmd = [mpiexec, "-n", str(ranks), *cmd]
    child = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
    if child.returncode or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({child.returncode}):\n{child.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def scaling(nets, ranks_list, *, batch=BATCH, repeats=4, data="mnist", rows=None, log=print) -> list[dict]:
    """Median epoch times and scaling for every net and configuration (see the module doc)."""
    top = max(ranks_list)
    configs = [(n, 1) for n in ranks_list] + ([(1, top)] if top > 1 else [])
    per_child = max(1, math.ceil(repeats / 2))
    results = []
    for net in nets:
        runs = {c: [] for c in configs}
        extra = {}
        for order in (configs, configs[::-1]):
            for ranks, threads in order:
                log(f"{net}: {ranks} rank(s) x {threads} thread(s) ...")
                r = run_config(net, ranks, threads, batch=batch, epochs=per_child, data=data, rows=rows)
                runs[(ranks, threads)] += r["times"]
                extra[(ranks, threads)] = r
        base = statistics.median(runs[(1, 1)]) if (1, 1) in runs else None
        for (ranks, threads), times in runs.items():
            med, r = statistics.median(times), extra[(ranks, threads)]
            row = {"net": net, "batch": batch, "rows": r["rows"], "ranks": ranks, "threads": threads,
                   "median_s": med, "min_s": min(times), "max_s": max(times), "epochs_timed": len(times),
                   "step_s": med / r["steps"]}
            if base is not None:
                row["speedup"] = base / med
                row["efficiency"] = base / (med * ranks * threads)
            if "allreduce_s" in r:
                row.update(allreduce_s=r["allreduce_s"], allreduce_bytes=r["allreduce_bytes"],
                           allreduce_share=r["allreduce_s"] / row["step_s"], transport=r["transport"])
            results.append(row)
    return results


def format_table(rows: list[dict]) -> str:
    lines = ["| net | ranks × BLAS threads | median s/epoch | min–max | speed-up vs 1×1 | efficiency per core "
             "| one all-reduce (size) / one step |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ar = (f"{r['allreduce_s'] * 1e3:.1f} ms ({r['allreduce_bytes'] / 1e6:.1f} MB) / {r['step_s'] * 1e3:.0f} ms "
              f"= {r['allreduce_share']:.0%}" if "allreduce_s" in r else f"— / {r['step_s'] * 1e3:.0f} ms")
        sp = f"{r['speedup']:.2f}×" if "speedup" in r else "—"
        eff = f"{r['efficiency']:.0%}" if "efficiency" in r else "—"
        lines.append(f"| {r['net']} | {r['ranks']} × {r['threads']} | {r['median_s']:.2f} | "
                     f"{r['min_s']:.2f}–{r['max_s']:.2f} | {sp} | {eff} | {ar} |")
    return "\n".join(lines)


def main_args(args) -> dict:
    """``mlp-backend bench --ranks 1,2 [--nets ...] [--batch N] [--repeats N] [--rows N] [--data NAME]``:
    --nets left at the comparison's default and --batch unset mean this benchmark's (NETS, 512)."""
    ranks_list = sorted({int(s) for s in str(args.ranks).split(",") if s.strip()})
    if not ranks_list or ranks_list[0] < 1:
        raise ValueError(f"--ranks takes rank counts >= 1, e.g. 1,2; got {args.ranks!r}")
    nets = NETS if args.nets == ",".join(DEFAULT_NETS) else tuple(s for s in args.nets.split(",") if s)
    batches = [int(b) for b in str(args.batch).split(",") if b.strip()] if args.batch is not None else [BATCH]
    if len(batches) != 1:
        raise ValueError(f"bench --ranks takes one --batch, got {args.batch!r}")
    batch = batches[0]
    load_start = os.getloadavg()
    rows = scaling(nets, ranks_list, batch=batch, repeats=args.repeats, data=args.data, rows=args.rows)
    out = {"command": " ".join(["mlp-backend bench", *sys.argv[2:]]), "cores": os.cpu_count(), "cpu": cpu_model(),
           "load_average_start": load_start, "load_average_end": os.getloadavg(), "results": rows}
    print()
    print(format_table(rows))
    fmt = lambda la: " ".join(f"{v:.2f}" for v in la)  # noqa: E731
    print(f"\n(load average {fmt(load_start)} at the start, {fmt(out['load_average_end'])} at the end; "
          f"{os.cpu_count()} cores, {out['cpu']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out
