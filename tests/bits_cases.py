"""Small trainings whose exact bits are pinned in tests/fixtures/bits_before_redesign.json.

The fixture was written by the code of commit 4458ae9 (before the redesign of issue 15:
``python tests/bits_cases.py > tests/fixtures/bits_before_redesign.json`` in a checkout of
that commit, with this file copied in), so test_step.py checks that the one training step
trains bitwise as the two paths before it did. Every case: 300 rows of blobs, 4 epochs.
"""
import hashlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import blobs  # noqa: E402

import mlp_backend as mb  # noqa: E402
from mlp_backend.optim import OPTIMIZERS, make_optimizer, make_schedule

try:  # the layout before the redesign first (an editable install may resolve the new one from elsewhere)
    from mlp_backend.train import Trainer  # noqa: E402
except ImportError:
    from mlp_backend.training.trainer import Trainer  # noqa: E402

SCHEDULES = {"constant": dict(name="constant"), "step": dict(name="step", step_size=2, gamma=0.5),
             "cosine": dict(name="cosine", warmup=1)}


def _halve(tr, row):  # parameters and optimizer state replaced between epochs (a checkpoint does so)
    m, o = tr.model, tr.optimizer
    m.params = {k: v * 0.5 for k, v in m.params.items()}
    o.state = {kind: {k: v + 0.001 for k, v in bufs.items()} for kind, bufs in o.state.items()}


def cases():
    for opt in OPTIMIZERS:
        for sched in SCHEDULES:
            for wd in (0.0, 0.01):
                yield f"{opt}-{sched}-wd{wd}-f32", dict(optimizer=opt, schedule=sched, wd=wd)
        for bs in (64, None):
            yield f"{opt}-cosine-f64-bs{bs}", dict(optimizer=opt, schedule="cosine", wd=0.01, dtype="float64",
                                                   batch_size=bs)
    for act, out, loss in [("tanh", "softmax", "cross_entropy"), ("sigmoid", "sigmoid", "mse"),
                           ("leaky_relu", "identity", "mse"), ("identity", "softmax", "mse")]:
        yield f"momentum-{act}-{out}-{loss}", dict(optimizer="momentum", activation=act, output=out, loss=loss,
                                                   sizes=(8, 16, 12, 3))
    yield "adam-replaced-between-epochs", dict(optimizer="adam", callbacks=[_halve])
    # the paper presets' shape: full-batch gd, float64, sigmoid/mse, the feature count as divisor
    yield "paper-gd-full-f64-sigmoid-mse", dict(optimizer="gd", batch_size=None, dtype="float64",
                                                activation=["relu", "tanh"], output="sigmoid", loss="mse",
                                                sizes=(8, 16, 12, 3), normalizer=8, init="paper-he", lr=0.5)
    yield "sgd-no-shuffle-bs50", dict(optimizer="sgd", batch_size=50, shuffle=False)


def train(optimizer, schedule="constant", wd=0.0, dtype="float32", batch_size=64, sizes=(8, 16, 3),
          activation="relu", output="softmax", loss="cross_entropy", callbacks=(), normalizer=None,
          init="he", lr=0.05, shuffle=True, epochs=4):
    x, y = blobs(n_features=sizes[0], n_classes=sizes[-1])
    model = mb.MLP(list(sizes), activation, output=output, loss=loss, init=init, device="cpu", seed=0, dtype=dtype)
    opt = make_optimizer(optimizer, lr, wd)
    tr = Trainer(model, opt, batch_size=batch_size, schedule=make_schedule(lr=lr, epochs=epochs, **SCHEDULES[schedule]),
                 seed=1, progress="none", callbacks=callbacks, normalizer=normalizer, shuffle=shuffle,
                 log=lambda *_: None)
    tr.fit(x, y, epochs)
    return model, opt, tr


def digest(model, opt, tr) -> dict:
    """sha256 of the parameters, of the optimizer state and of the history (no timings)."""
    params, state = model.host_params(), opt.state_dict(model.backend)
    h = hashlib.sha256()
    for k in sorted(params):
        h.update(k.encode() + np.ascontiguousarray(params[k]).tobytes())
    s = hashlib.sha256()
    for k in sorted(state):
        s.update(k.encode() + np.ascontiguousarray(np.asarray(state[k])).tobytes())
    rows = [{k: v for k, v in r.items() if k != "seconds"} for r in tr.history.rows]
    return {"params": h.hexdigest(), "state": s.hexdigest(),
            "history": hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest(), "t": opt.t}


if __name__ == "__main__":
    json.dump({name: digest(*train(**kw)) for name, kw in cases()}, sys.stdout, indent=1, sort_keys=True)
    print()
