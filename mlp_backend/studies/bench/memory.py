"""Peak memory of a training run, measured in fresh child processes
(:mod:`mlp_backend.studies.bench.memory_child`) against the issue's bound."""
from __future__ import annotations

import json
import subprocess
import sys

CHILD = "mlp_backend.studies.bench.memory_child"


def peak_memory(net="784-512-256-10", epochs=2, batch=128, optimizer="momentum", lr=0.05, data="mnist") -> dict:
    """Peak memory of a training run (load, train with per-epoch test evaluation) in fresh
    child processes: the peak resident set (``VmHWM``; whole process: interpreter, libraries,
    data, buffers) in one, the tracemalloc peak (Python and NumPy allocations only) in another.
    ``budget_bytes`` is the issue's bound: 2 x the training set as float32 plus the parameters."""
    spec = json.dumps({"net": net, "epochs": epochs, "batch": batch, "optimizer": optimizer, "lr": lr, "data": data})
    out = []
    for trace in (False, True):  # maxrss without tracemalloc running, then the tracemalloc peak
        flags = ["-X", "tracemalloc"] if trace else []
        child = subprocess.run([sys.executable, *flags, "-m", CHILD, spec], capture_output=True, text=True)
        if child.returncode != 0:
            return {"error": child.stderr[-2000:]}
        out.append(json.loads(child.stdout.strip().splitlines()[-1]))
    res = {**out[0], "tracemalloc_peak_bytes": out[1]["tracemalloc_peak_bytes"]}
    f32 = res["train_rows"] * res["features"] * 4
    res.update(net=net, epochs=epochs, batch=batch, optimizer=optimizer, dataset_float32_bytes=f32,
               budget_bytes=2 * f32 + 4 * res["params"])
    return res
