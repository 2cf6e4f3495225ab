"""Host time to issue one captured epoch, measured on the CPU with the emulated CUDA device.

What the first epoch of ``--device cuda`` costs on the host before the graph exists: our
Python per step (the model's forward, loss and backward calls, the ops' argument checks,
the optimizer) plus the emulation's recording of each launch -- but NOT CuPy's and
cuBLAS's own cost per launch (a few µs each on a GPU host), so a GPU host adds that for
each node. Uses ``install_emulation`` of tests/test_graph_replay.py (kernels compiled with
the host C++ compiler for the warm-up step); random uint8 rows of MNIST's shape, batch 128.

    python benchmarks/capture_host_cost.py [--rows 60000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

NETS = (("784-100-40-10", "sgd"), ("784-256-128-10", "adam"), ("784-512-256-10", "sgd"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=60_000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    import mlp_backend as mb
    from mlp_backend.training.runner import GraphRunner
    from mlp_backend.optim import make_optimizer
    from mlp_backend.training.trainer import Trainer
    from test_graph_replay import _on_fake_gpu, install_emulation

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.rows, 784), dtype=np.uint8)
    y = rng.integers(0, 10, args.rows)
    print(f"host time to capture one epoch ({args.rows} rows, batch {args.batch}, float32), "
          f"median of {args.repeats}; CuPy's own launch cost not included:")
    with pytest.MonkeyPatch.context() as mp:
        install_emulation(mp)
        for net, opt in NETS:
            sizes = [int(v) for v in net.split("-")]
            model = _on_fake_gpu(mb.MLP(sizes, "relu", device="cpu", seed=0, dtype="float32"))
            tr = Trainer(model, make_optimizer(opt, 0.1), batch_size=args.batch, progress="none", log=lambda *_: None)
            runner = GraphRunner(tr, x, y, strict=True)
            times = []
            with runner.gs.stream:
                runner._warm_up()
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    runner._capture()
                    times.append(time.perf_counter() - t0)
            steps, nodes = len(runner.step.plan.batches), len(runner.graph.records)
            t = statistics.median(times)
            print(f"  {net:16s} {opt:5s} {steps} steps, {nodes} nodes ({nodes / steps:.1f} per step): "
                  f"{t:.3f} s, {t / steps * 1e6:.0f} µs per step, {t / nodes * 1e6:.1f} µs per node")
            runner.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
