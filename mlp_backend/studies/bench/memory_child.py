"""The child process of :func:`~mlp_backend.studies.bench.memory.peak_memory`: one training
run (load, train with the test set evaluated after every epoch), then its peak memory as one
JSON line on stdout.

    python -m mlp_backend.studies.bench.memory_child SPEC                # the peak resident set
    python -X tracemalloc -m mlp_backend.studies.bench.memory_child SPEC # and the tracemalloc peak

``SPEC`` is JSON: ``{"net", "epochs", "batch", "optimizer", "lr", "data"}``. The tracemalloc
peak is read in a child of its own, started with ``-X tracemalloc`` so that it counts from
the first import on; its bookkeeping would inflate the other child's resident set.
"""
from __future__ import annotations

import json
import resource
import sys
import tracemalloc

from mlp_backend.model import MLP
from mlp_backend.optim import make_optimizer, make_schedule
from mlp_backend.studies.bench.environment import load_data, net_sizes
from mlp_backend.training.trainer import Trainer


def peak_resident_bytes() -> int:
    """This process image's peak RSS (``VmHWM``). ``ru_maxrss`` would also count the parent's
    RSS at fork time (Linux keeps the high-water mark across exec): the benchmark's own torch."""
    try:
        with open("/proc/self/status") as f:
            return [int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:")][0]
    except (OSError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def train_and_measure(spec: dict) -> dict:
    """Train as ``spec`` says (on the CPU, cosine schedule, the model seeded 0); the peaks and the run's sizes."""
    x, y, xt, yt = load_data(spec["data"], None)
    model = MLP(net_sizes(spec["net"]), "relu", device="cpu", seed=0)
    b = model.backend
    xd, yd, xv, yv = b.asarray(x), b.asarray(y), b.asarray(xt), b.asarray(yt)
    del x, y, xt, yt
    tr = Trainer(model, make_optimizer(spec["optimizer"], spec["lr"]), batch_size=spec["batch"], progress="none",
                 schedule=make_schedule("cosine", spec["lr"], spec["epochs"]), log=lambda s: None)
    tr.fit(xd, yd, spec["epochs"], xv, yv)
    _, peak = tracemalloc.get_traced_memory()  # (0, 0) unless started with -X tracemalloc
    return {"maxrss_bytes": peak_resident_bytes(),
            "tracemalloc_peak_bytes": peak, "train_rows": int(xd.shape[0]), "features": int(xd.shape[1]),
            "test_rows": int(xv.shape[0]), "params": sum(int(v.size) for v in model.params.values()),
            "val_accuracy": tr.history.rows[-1]["val_accuracy"]}


if __name__ == "__main__":
    print(json.dumps(train_and_measure(json.loads(sys.argv[1]))))
