"""One configuration of the scaling benchmark (:mod:`mlp_backend.studies.bench.ranks`), inside
its own process, or as one rank of it under ``mpiexec``: a warm-up epoch, then timed epochs of
plain SGD, and with ranks the gradient all-reduce alone; rank 0 prints ``RESULT {json}``.

    python -m mlp_backend.studies.bench.ranks_child SPEC    # SPEC: {"net", "batch", "epochs", "data", "rows"}
"""
from __future__ import annotations

import json
import math
import sys
import time

from mlp_backend.model import MLP
from mlp_backend.optim import make_optimizer
from mlp_backend.studies.bench.environment import load_data, net_sizes
from mlp_backend.training.distributed import init
from mlp_backend.training.trainer import Trainer

ALLREDUCE_CALLS = 20


def run_one(spec: dict) -> None:
    """Time ``spec``'s configuration (the ``Trainer``'s epoch: rank 0's wall time between
    barriers) and print its ``RESULT`` line."""
    dist = init()
    x, y, _, _ = (load_data(spec["data"], spec["rows"]) if dist is None
                  else dist.root_first(lambda: load_data(spec["data"], spec["rows"])))
    model = MLP(net_sizes(spec["net"]), "relu", device="cpu", seed=0)
    tr = Trainer(model, make_optimizer("sgd", 0.05), batch_size=spec["batch"], seed=0, progress="none", dist=dist)
    barrier = dist.comm.Barrier if dist is not None else (lambda: None)
    if dist is not None:
        dist.broadcast_params(model)
    times = []
    for e in range(spec["epochs"] + 1):
        barrier()
        t0 = time.perf_counter()
        tr.train_epoch(x, y)
        barrier()
        if e:  # epoch 0 warms caches and buffers
            times.append(time.perf_counter() - t0)
    out = {"times": times, "steps": math.ceil(x.shape[0] / spec["batch"]), "rows": int(x.shape[0])}
    if dist is not None:
        grads = model.ops.pack(model.params.layout, model.dtype, model.backend.device, order=list(model.params))
        dist.allreduce_grads(grads)
        barrier()
        t0 = time.perf_counter()
        for _ in range(ALLREDUCE_CALLS):
            dist.allreduce_grads(grads)
        out["allreduce_s"] = (time.perf_counter() - t0) / ALLREDUCE_CALLS
        out["allreduce_bytes"] = int(grads.flat.nbytes)
        out["transport"] = dist.transport
    if dist is None or dist.root:
        print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    run_one(json.loads(sys.argv[1]))
