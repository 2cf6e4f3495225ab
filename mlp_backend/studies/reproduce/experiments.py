"""The reproduction's training runs: the paper's split of a data pool, one preset-style run
built with the library's own builders, the experiments over seeds, the ablation, the speed
comparison with the printed code, saturation at initialisation, and the width sweep."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np  # host-side: data pools and the saturation statistics

from mlp_backend.backends import get_backend
from mlp_backend.data import load_dataset, read_csv
from mlp_backend.data.formats import N_CLASSES
from mlp_backend.training.config import EXTRA_DEFAULTS, validate_config
from mlp_backend.training.presets import MODERN, PRESETS, QUIRKS, paper_split, remove_quirks, step_lr
from mlp_backend.training.run import build_model, build_optimizer, build_trainer, reported_rows
from mlp_backend.training.trainer import prepare_inputs

FAITHFUL = ("paper-random", "paper-he", "paper-lecun")
# Every preset of the results table: the three experiments as the text describes them, and the
# random experiment with the code exactly as printed (tanh in layer 2).
EXPERIMENTS = (*FAITHFUL, "paper-random-printed")
# --quick: the CI size. A 5,000-row pool gives 200 test, 480 validation, 4,320 training rows.
QUICK = {"rows": 5_000, "test": 200,
         "epochs": {"paper-random": 60, "paper-he": 60, "paper-lecun": 30, "paper-random-printed": 60},
         "ablation_epochs": 30, "seeds": 2}
# The per-epoch columns of a run's curves (curves.csv, ablation.csv, sweep.csv).
CURVE_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
# The benchmark that times the printed code against ours (a source checkout has it).
PAPER_SPEED = Path(__file__).resolve().parents[3] / "benchmarks" / "paper_speed.py"


# ----- data ----------------------------------------------------------------------------

def load_pool(dataset: str = "mnist", data_path: str | None = None, log=print):
    """(x, y, description): the rows the paper's split is drawn from.

    With ``data_path`` (the paper's 42,000-row ``digit_data.csv``, label first) all its rows;
    otherwise the named data set's train and test sets together (70,000 for MNIST).
    """
    if data_path:
        x, y = read_csv(data_path)
        return x, y, f"{data_path} ({len(x):,} rows)"
    ds = load_dataset(dataset, log=log)
    x, y = np.concatenate([ds.x_train, ds.x_test]), np.concatenate([ds.y_train, ds.y_test])
    return x, y, f"{ds.name} train+test ({len(x):,} rows)"


def split(pool, seed: int, quick: bool = False) -> dict:
    """The paper's split of a seeded draw from ``pool`` (see :func:`presets.paper_split`)."""
    x, y = pool[0], pool[1]
    kw = {"n_rows": QUICK["rows"], "n_test": QUICK["test"]} if quick else {}
    x_tr, y_tr, x_val, y_val, x_te, y_te = paper_split(x, y, seed=seed, **kw)
    return {"x_train": x_tr, "y_train": y_tr, "x_val": x_val, "y_val": y_val}


# ----- one training run ----------------------------------------------------------------

def run_settings(cfg: dict, seed: int) -> dict:
    """Preset-style ``cfg`` as a full training config (:mod:`mlp_backend.training.config`)
    with ``seed`` for the weights and the batch order."""
    return validate_config({**EXTRA_DEFAULTS, **cfg, "seed": seed})


def build(cfg: dict, data: dict, seed: int, *, device="cpu", params=None):
    """(trainer, device arrays [x_train, y_train, x_val, y_val], lr) for preset-style ``cfg``,
    from the builders ``mlp-backend train`` uses (:mod:`mlp_backend.training.run`).

    ``lr_scale="n/784"`` multiplies the learning rate by (samples per step)/784
    (:func:`~mlp_backend.training.presets.step_lr`), which makes the mean gradient take
    exactly the printed code's step. ``params`` (host arrays in our layout) replaces the
    seeded initial draw.
    """
    n, n_features = data["x_train"].shape
    settings = run_settings(cfg, seed)
    settings["lr"] = step_lr(settings, n, n_features)
    model = build_model(settings, n_features, N_CLASSES, get_backend(device), params=params)
    trainer = build_trainer(settings, model, build_optimizer(settings), progress="none")
    arrays = [model.backend.asarray(data[k]) for k in ("x_train", "y_train", "x_val", "y_val")]
    return trainer, arrays, settings["lr"]


def run_config(cfg: dict, data: dict, seed: int, *, epochs: int | None = None, device="cpu") -> dict:
    """Train preset-style config ``cfg`` on ``data`` with the library; return the history.

    Losses are reported the way the config says (:func:`~mlp_backend.training.run.reported_rows`,
    as ``mlp-backend train`` reports them): ``loss_report="paper"`` doubles our MSE (eq. 15's
    1/2n) into the printed code's sum over classes / n.
    """
    epochs = int(epochs or cfg["epochs"])
    trainer, arrays, lr = build(cfg, data, seed, device=device)
    t0 = time.perf_counter()
    hist = trainer.fit(arrays[0], arrays[1], epochs, arrays[2], arrays[3])
    seconds = time.perf_counter() - t0
    rows = [{k: r[k] for k in CURVE_COLUMNS} for r in reported_rows(hist.rows, cfg)]
    return {"rows": rows, "seconds": seconds, "lr": lr, "n_train": len(data["x_train"]),
            "n_val": len(data["x_val"]), "last": rows[-1]}


def curves_frame(runs, key="preset"):
    """The runs' per-epoch rows as one pandas table, each row labelled with its run's
    ``key`` and seed."""
    import pandas as pd  # loaded on use: the CLI imports this module at every start
    frames = []
    for r in runs:
        df = pd.DataFrame(r["rows"])
        df.insert(0, "seed", r["seed"])
        df.insert(0, key, r[key])
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


# ----- the three experiments -----------------------------------------------------------

def parse_seed_overrides(items) -> dict:
    """``--seeds-for PRESET=N`` items as {preset: N}."""
    out = {}
    for item in items or []:
        name, _, k = item.partition("=")
        if name not in EXPERIMENTS or not k.isdigit():
            raise SystemExit(f"--seeds-for wants PRESET=N with PRESET in {', '.join(EXPERIMENTS)}, got {item!r}")
        out[name] = int(k)
    return out


def run_faithful(pool, args, log=print) -> list[dict]:
    """Every (preset, seed) run of the table's experiments (:data:`EXPERIMENTS`), with any
    --off quirks removed."""
    per = parse_seed_overrides(args.seeds_for)
    runs = []
    for name in EXPERIMENTS:
        cfg = remove_quirks(PRESETS[name], args.off or [])
        epochs = QUICK["epochs"][name] if args.quick else cfg["epochs"]
        for seed in range(per.get(name, args.seeds)):
            r = run_config(cfg, split(pool, seed, args.quick), seed, epochs=epochs, device=args.device)
            r.update(preset=name, seed=seed, epochs=epochs)
            last = r["last"]
            log(f"{name} seed {seed}: {epochs} epochs in {r['seconds']:.0f}s, train {last['train_accuracy']:.2%} "
                f"val {last['val_accuracy']:.2%}")
            runs.append(r)
    return runs


def ablation_configs(base: str) -> list[tuple[str, str, dict]]:
    """(key, description, config): the faithful preset, each quirk removed alone, then modern."""
    cfg = PRESETS[base]
    rows = [("faithful", f"{base}, as printed", cfg)]
    for q in QUIRKS:
        rows.append((f"-{q}", f"remove {q}", remove_quirks(cfg, [q])))
        if q == "feature_divisor":
            rows.append(("-feature_divisor@lr0.01", "mean gradient at the stated lr 0.01",
                         {**remove_quirks(cfg, [q]), "lr_scale": None}))
    rows.append(("modern", "He init, ReLU-ReLU, softmax + CE, Adam 1e-3, batch 128, mean gradient",
                 {**cfg, **MODERN}))
    return rows


def run_ablation(pool, args, log=print) -> list[dict]:
    """Every (row, seed) run of the ablation (:func:`ablation_configs`)."""
    epochs = QUICK["ablation_epochs"] if args.quick else args.ablation_epochs
    mb_epochs = min(epochs, args.minibatch_epochs)
    runs = []
    for key, desc, cfg in ablation_configs(args.ablation_preset):
        n_ep = epochs if cfg["batch_size"] in ("full", None) else mb_epochs
        for seed in range(args.ablation_seeds):
            r = run_config(cfg, split(pool, seed, args.quick), seed, epochs=n_ep, device=args.device)
            r.update(key=key, description=desc, seed=seed, epochs=n_ep)
            log(f"ablation {key} seed {seed}: {r['seconds']:.0f}s, val {r['last']['val_accuracy']:.2%}")
            runs.append(r)
    return runs


def run_speed(args, log=print) -> dict | None:
    """Time the printed code (NumPy, this machine's CPU) against our faithful preset on the
    run's own device ``args.device`` (benchmarks/paper_speed.py), if present; float64 both."""
    if not PAPER_SPEED.exists():
        log(f"speed: {PAPER_SPEED} not found (not a source checkout); skipped")
        return None
    spec = importlib.util.spec_from_file_location("paper_speed", PAPER_SPEED)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    n = QUICK["rows"] if args.quick else 42_000
    return mod.measure(n_rows=n, preset=args.speed_preset, reps=3 if args.quick else 5, log=log,
                       device=args.device)


def saturation(pool, quick: bool = False, device="cpu") -> list[dict]:
    """At initialisation (seed 0, the seed-0 validation rows): how saturated each layer is.

    For the printed unscaled draws against the scaled ones: the spread of the layer-2
    pre-activations, the share of tanh units with |a| > 0.99 (where tanh' < 0.02), the share
    of sigmoid outputs outside (0.01, 0.99), and the mean sigmoid derivative a(1-a) that
    multiplies every output error in the printed backpropagation.
    """
    data = split(pool, 0, quick)
    backend = get_backend(device)
    out = []
    for label, name, init in (("paper-random (uniform ±0.5)", "paper-random", "paper-random"),
                              ("paper-he (printed: randn)", "paper-he", "paper-he"),
                              ("paper-he, scaled He", "paper-he", "he"),
                              ("paper-lecun (printed: randn)", "paper-lecun", "paper-lecun"),
                              ("paper-lecun, scaled LeCun", "paper-lecun", "lecun")):
        cfg = PRESETS[name]
        m = build_model(run_settings({**cfg, "init": init}, 0), data["x_val"].shape[1], N_CLASSES, backend)
        cache = m.forward(prepare_inputs(m.backend.asarray(data["x_val"]), m))
        a1, a2, a3 = (m.backend.to_numpy(a) for a in cache.a[1:])
        z2 = a1 @ m.host_params()["w2"] + m.host_params()["b2"]
        out.append({"network": label, "hidden2": cfg["activation"][1], "z2_sd": float(z2.std()),
                    "tanh_saturated": float((np.abs(a2) > 0.99).mean()) if cfg["activation"][1] == "tanh" else None,
                    "sigmoid_saturated": float(((a3 < 0.01) | (a3 > 0.99)).mean()),
                    "sigmoid_slope": float((a3 * (1 - a3)).mean())})
    return out


# ----- the sweep -----------------------------------------------------------------------

def run_sweep(pool, args, log=print) -> list[dict]:
    """Hidden widths x epochs for the given inits (``mlp-backend sweep``): one row per
    recorded epoch of every (init, widths, seed) run."""
    widths = [tuple(int(v) for v in w.split("x")) for w in args.widths.split(",")]
    epochs = 15 if args.quick else args.epochs
    rows = []
    for init in args.inits.split(","):
        base = PRESETS["paper-random" if init in ("paper-random", "uniform") else "paper-he"]
        for h1, h2 in widths:
            cfg = {**base, "init": init, "hidden": [h1, h2]}
            for seed in range(args.seeds):
                r = run_config(cfg, split(pool, seed, args.quick), seed, epochs=epochs, device=args.device)
                for row in r["rows"]:
                    if row["epoch"] % args.every == 0 or row["epoch"] == epochs:
                        rows.append({"init": init, "hidden1": h1, "hidden2": h2, "seed": seed,
                                     "activation": "-".join(cfg["activation"]), **row})
                log(f"sweep {init} {h1}x{h2} seed {seed}: val {r['last']['val_accuracy']:.2%} "
                    f"({r['seconds']:.0f}s)")
    return rows
