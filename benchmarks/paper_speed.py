"""Time one epoch of the printed appendix code (benchmarks/paper_code.py) against our
faithful preset, in the same process, interleaved, median of several repetitions.

The printed code is NumPy, so it always runs on this machine's CPU; ours runs on
``--device`` (default ``cpu``; ``cuda`` times our CuPy path against the printed code on the
same machine's CPU). The result names both devices (``ours_device``, ``paper_device``).

One epoch is what the printed ``train_neural_network`` does per epoch with validation
data: forward on the training rows, loss and accuracy, backpropagation and update,
forward on the validation rows. Both sides use float64 and the same rows. Ours is a
persistent :class:`~mlp_backend.training.trainer.Trainer` advanced one epoch at a time (the pixel
scaling is done once, as the printed code scales ``X`` once); the printed side calls
``train_neural_network(num_epochs=1)``, whose weight draw costs ~1 ms.

    MLP_BACKEND_DATA_DIR=/tmp/mlpcache python benchmarks/paper_speed.py [--rows 42000] [--preset paper-he] [--device cuda]
    MLP_BACKEND_DATA_DIR=/tmp/mlpcache python benchmarks/paper_speed.py --breakdown

For all three paper presets at once, as ``mlp-backend train`` runs them, on one pinned
core with one BLAS thread (wall and CPU time): ``benchmarks/paper_presets_speed.py``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import paper_code  # noqa: E402

from mlp_backend.training.presets import PRESETS  # noqa: E402
from mlp_backend.studies.reproduce.experiments import build, load_pool  # noqa: E402


def paper_arrays(n_rows: int, seed: int = 0):
    """The printed preparation on ``n_rows`` MNIST rows (an int64 array, as pandas reads the CSV),
    and the same training/validation rows in our uint8 layout."""
    x, y, _ = load_pool("mnist", log=None)
    idx = np.random.default_rng(seed).permutation(len(x))[:n_rows]
    df_array = np.concatenate([y[idx, None], x[idx]], axis=1).astype(np.int64)
    np.random.seed(seed)
    printed = paper_code.prepare(df_array)  # shuffles df_array in place, as printed
    rest = df_array[1000:]
    n_val = int(0.1 * len(rest))
    ours = {"x_train": rest[n_val:, 1:].astype(np.uint8), "y_train": rest[n_val:, 0].astype(np.uint8),
            "x_val": rest[:n_val, 1:].astype(np.uint8), "y_val": rest[:n_val, 0].astype(np.uint8)}
    return printed, ours


def measure(n_rows: int = 42_000, preset: str = "paper-he", reps: int = 5, warmup: int = 1, log=print,
            device="cpu") -> dict:
    cfg = PRESETS[preset]
    (tr_x, tr_y, va_x, va_y), ours = paper_arrays(n_rows)
    h1, h2 = cfg["hidden"]
    init = {"paper-random": "random", "paper-he": "he", "paper-lecun": "lecun"}[preset]
    layer2 = cfg["activation"][1]
    trainer, arrays, _ = build(cfg, ours, seed=0, device=device)

    def paper_epoch():
        paper_code.train_neural_network(tr_x, tr_y, 784, h1, h2, 10, learning_rate=cfg["lr"], num_epochs=1,
                                        validation_data=[va_x, va_y], print_every=5, init_type=init,
                                        layer2=layer2, log=lambda s: None)

    def our_epoch():  # fit ends the epoch with its one host sync: the device's work is in the time
        trainer.fit(arrays[0], arrays[1], trainer.epoch + 1, arrays[2], arrays[3])

    times = {"paper": [], "ours": []}
    with np.errstate(over="ignore"):  # the printed sigmoid overflows on unscaled weights
        for i in range(warmup + reps):
            for name, fn in (("paper", paper_epoch), ("ours", our_epoch)) if i % 2 == 0 else \
                    (("ours", our_epoch), ("paper", paper_epoch)):
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
                if i >= warmup:
                    times[name].append(dt)
    res = {"preset": preset, "sizes": f"784-{h1}-{h2}-10", "n_train": int(tr_x.shape[1]),
           "n_val": int(va_x.shape[0]), "reps": reps, "dtype": "float64",
           "ours_device": trainer.model.backend.label, "paper_device": "cpu"}
    for name, ts in times.items():
        res[name] = {"median": statistics.median(ts), "min": min(ts), "max": max(ts), "all": ts}
    res["ratio"] = res["paper"]["median"] / res["ours"]["median"]
    log(f"speed {preset}: printed (cpu) {res['paper']['median']:.3f} s/epoch, ours ({res['ours_device']}) "
        f"{res['ours']['median']:.4f} s/epoch, ratio {res['ratio']:.2f}x (median of {reps})")
    return res


def breakdown(n_rows: int = 42_000, preset: str = "paper-he", reps: int = 3) -> dict:
    """Median seconds of the printed backpropagation's three weight-gradient products
    (``dz @ a.T``: samples as columns, the long reduction along contiguous rows of both
    operands) beside our layout of the same products (``a.T @ delta``: samples as rows).
    Run it with OPENBLAS_NUM_THREADS=1 and =2 on a busy machine to see the threading effect."""
    cfg = PRESETS[preset]
    (tr_x, tr_y, _, _), _ = paper_arrays(n_rows)
    np.random.seed(0)
    p = paper_code.initialize_weights_and_biases(784, *cfg["hidden"], 10, init_type="he")
    with np.errstate(over="ignore"):
        iv = paper_code.forward_prop(p, tr_x)
    rng = np.random.default_rng(0)
    out = {}
    for name, a in (("dw1", tr_x), ("dw2", iv["a1"]), ("dw3", iv["a2"])):
        width = {"dw1": iv["a1"], "dw2": iv["a2"], "dw3": iv["a3"]}[name].shape[0]
        dz = rng.standard_normal((width, a.shape[1]))
        a_rows, d_rows = np.ascontiguousarray(a.T), np.ascontiguousarray(dz.T)
        for label, fn in (("printed dz@a.T", lambda: np.matmul(dz, a.T)), ("ours a.T@delta", lambda: a_rows.T @ d_rows)):
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            out[f"{name} {label}"] = statistics.median(ts)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=42_000)
    p.add_argument("--preset", default="paper-he", choices=["paper-random", "paper-he", "paper-lecun"])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="cpu", help="where ours runs: cpu, cuda, ... (the printed code: the CPU)")
    p.add_argument("--breakdown", action="store_true", help="time the three weight-gradient products instead")
    a = p.parse_args(argv)
    if a.breakdown:
        print(json.dumps(breakdown(a.rows, a.preset, a.reps), indent=1))
        return 0
    print(json.dumps(measure(a.rows, a.preset, a.reps, device=a.device), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
