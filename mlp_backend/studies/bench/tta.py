"""Time to accuracy: train a net with the test set evaluated after every epoch and record
the wall time until its test accuracy first reaches a target."""
from __future__ import annotations

import time

from mlp_backend.model import MLP
from mlp_backend.optim import make_optimizer, make_schedule
from mlp_backend.studies.bench.candidates import graph_kwargs, graph_status
from mlp_backend.studies.bench.environment import net_sizes
from mlp_backend.training.trainer import Trainer


def time_to_accuracy(x, y, xt, yt, *, net="784-512-256-10", target=0.98, epochs=20, batch=128,
                     optimizer="momentum", lr=0.05, schedule="cosine", device="cpu", weight_decay=0.0,
                     seed=0, log=print, cuda_graphs=None) -> dict:
    """Train ``net`` and evaluate on the test set after every epoch; wall time (training plus
    evaluation, after the data is on the device) until test accuracy >= ``target``.
    ``cuda_graphs``: the Trainer's CUDA-graph mode (None: the Trainer's default)."""
    model = MLP(net_sizes(net), "relu", device=device, seed=seed)
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
