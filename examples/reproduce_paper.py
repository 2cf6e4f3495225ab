"""Train the seed paper's printed 'He' network faithfully, then with the He scale restored.

    MLP_BACKEND_DATA_DIR=/tmp/mlpcache python examples/reproduce_paper.py [--epochs 50]

The full study (all three experiments over seeds, the ablation, the report) is
``mlp-backend reproduce``; this shows the library calls it is built from.
"""
import argparse

from mlp_backend.training.presets import PRESETS, remove_quirks
from mlp_backend.studies.reproduce.experiments import load_pool, run_config, split


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    data = split(load_pool("mnist", log=None), a.seed)  # the paper's split of 42,000 MNIST rows
    for label, cfg in (("printed 'he' (unscaled randn)", PRESETS["paper-he"]),
                       ("scaled He, every other quirk kept", remove_quirks(PRESETS["paper-he"], ["unscaled_init"]))):
        r = run_config(cfg, data, a.seed, epochs=a.epochs)
        print(f"{label:40s} val accuracy {r['last']['val_accuracy']:.2%} after {a.epochs} epochs "
              f"({r['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
