"""What tests/test_distributed.py runs under ``mpiexec -n N``:

    mpiexec -n 2 python tests/mpi_worker.py equivalence OUT.npz [DEVICE]
    mpiexec -n 2 python tests/mpi_worker.py raise|hang|die OUT.npz

``equivalence`` trains every case of :data:`CASES` data-parallel and rank 0 saves the
final weights and optimizer state of each (``CASE/param/w1``, ``CASE/optim/m/w1`` ...),
whether every rank ended with bit-identical weights and optimizer state, and the
transport used. The test trains the same cases in one process (:func:`train_case`
with ``dist=None``) and compares. ``raise``/``hang``/``die``: rank 1 raises, sleeps or
exits in the middle of epoch 2's callbacks; the job must end, non-zero, in bounded time.
"""
import json
import os
import sys
import time

import numpy as np

from mlp_backend.backends import get_backend
from mlp_backend.model import MLP
from mlp_backend.optim import make_optimizer
from mlp_backend.training.trainer import Trainer

EPOCHS = 4
# (name, optimizer, options, dtype, batch size or None for the full batch, rows).
# 206 rows in batches of 41: every batch splits unevenly over 2 ranks (21 + 20) and the
# last one has a single row, so rank 1 gets none of it (it contributes zeros).
CASES = [
    ("sgd-f64", "sgd", {}, "float64", 41, 206),
    ("momentum-f64", "momentum", {"momentum": 0.9, "weight_decay": 1e-3}, "float64", 41, 206),
    ("adam-f64", "adam", {}, "float64", 41, 206),
    ("sgd-f32", "sgd", {}, "float32", 41, 206),
    ("momentum-f32", "momentum", {"momentum": 0.9}, "float32", 41, 206),
    ("adam-f32", "adam", {}, "float32", 41, 206),
    ("gd-full-f64", "gd", {}, "float64", None, 203),
    ("adam-full-f64", "adam", {}, "float64", None, 203),
]


def data(rows, n_features=12, n_classes=4, seed=0):
    """Gaussian blobs as uint8 'pixels' (so the loop scales them, as for MNIST)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, rows)
    centers = rng.normal(size=(n_classes, n_features)) * 2.0
    x = np.clip((centers[y] + rng.normal(size=(rows, n_features))) * 25 + 128, 0, 255).astype(np.uint8)
    return x, y


def train_case(case, device="cpu", dist=None, callbacks=()):
    """Train one case; returns the trainer (model, optimizer and history in it)."""
    name, opt, options, dtype, batch, rows = case
    x, y = data(rows)
    backend = get_backend(device) if dist is None else dist.pick_device(device)
    model = MLP([x.shape[1], 16, 8, 4], "relu", dtype=dtype, device=backend, seed=1)
    lr = {"sgd": 0.2, "gd": 0.5, "momentum": 0.05, "adam": 0.01}[opt]
    trainer = Trainer(model, make_optimizer(opt, lr, **options), batch_size=batch, seed=3, progress="none",
                      log=lambda s: None, dist=dist, callbacks=callbacks)
    b = model.backend
    xv, yv = data(37, seed=5)
    trainer.fit(b.asarray(x), b.asarray(y, "int64"), EPOCHS, b.asarray(xv), b.asarray(yv, "int64"))
    return trainer


def state(trainer) -> dict:
    """Host copies of the weights and optimizer state of a trained case."""
    out = {f"param/{k}": v for k, v in trainer.model.host_params().items()}
    sd = trainer.optimizer.state_dict(trainer.model.backend)
    out.update({f"optim/{k}": np.asarray(v) for k, v in sd.items() if "/" in k})
    out["history/train_loss"] = np.array(trainer.history["train_loss"])
    out["history/train_accuracy"] = np.array(trainer.history["train_accuracy"])
    return out


def main():
    scenario, out = sys.argv[1], sys.argv[2]
    device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
    from mpi4py import MPI
    from mlp_backend.training import distributed
    dist = distributed.init(MPI.COMM_WORLD)  # also under mpiexec -n 1 (the one-rank NCCL check)
    if scenario == "equivalence":
        saved, identical = {}, {}
        for case in CASES:
            tr = train_case(case, device, dist)
            st = state(tr)
            everyone = dist.comm.gather(st, root=0)
            if dist.root:
                identical[case[0]] = all(all(np.array_equal(o[k], st[k]) for k in st if not k.startswith("history"))
                                         for o in everyone)
                saved.update({f"{case[0]}/{k}": v for k, v in st.items()})
        if dist.root:
            meta = {"identical": identical, "ranks": dist.size, **dist.describe(),
                    "graph_status": getattr(tr, "graph_status", "")}
            np.savez(out, meta=np.array(json.dumps(meta)), **saved)
        return

    def misbehave(trainer, row):
        if row["epoch"] == 2 and dist.rank == 1:
            if scenario == "raise":
                raise RuntimeError("rank 1 fails on purpose in epoch 2")
            if scenario == "hang":
                time.sleep(600)
            if scenario == "die":
                os._exit(3)
    train_case(("sgd", "sgd", {}, "float64", 41, 206), device, dist, callbacks=[misbehave])


if __name__ == "__main__":
    main()
