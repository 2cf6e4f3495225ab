"""``mlp-backend``: train, evaluate and use MNIST classifiers from the command line.

Exit codes: 0 success; 1 an error (bad data, unusable device, bad option value, unreadable
checkpoint; one ``error: ...`` line on stderr); 2 usage errors (unknown option, missing
argument); 3 training diverged (NaN/inf loss); 130 interrupted by Ctrl-C, 143 by SIGTERM
(training saves ``DIR/interrupted.npz`` first and prints how to resume).

Other modules add subcommands: if ``mlp_backend.studies.reproduce`` or ``mlp_backend.studies.bench`` is
importable and defines ``register(subparsers)``, it is called with the ``argparse``
subparsers object. A registered command sets ``parser.set_defaults(func=handler)``;
``handler(args)`` returns an exit code (``None`` means 0). Its exceptions get the same
one-line error treatment as the built-in commands.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import signal
import sys
import threading
import time
from pathlib import Path

from mlp_backend.training.presets import PRESETS
from mlp_backend.training.runner import MODES as CUDA_GRAPH_MODES
from mlp_backend.apps.exit_codes import EXIT_DIVERGED, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE

PLUGINS = ("mlp_backend.studies.reproduce", "mlp_backend.studies.bench", "mlp_backend.interop.onnx_export", "mlp_backend.apps.serve")

DEVICE_HELP = ("where the maths runs: cpu, cuda, cuda:N, auto (CUDA if usable, else cpu), torch, "
               "torch:cuda[:N], array_api_strict[:device1|:no_float64] (default: $MLP_BACKEND_DEVICE or auto)")


def _d(key):
    """The default preset's value, for help texts."""
    v = PRESETS["default"].get(key)
    return " ".join(map(str, v)) if isinstance(v, list) else v


# ----- parser -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlp-backend",
        description="A from-scratch multilayer perceptron for MNIST that runs on NumPy (CPU), "
                    "CuPy (CUDA) or PyTorch, picked with --device.",
        epilog="Start with `mlp-backend train` (about 98% test accuracy on MNIST in 10 epochs, "
               "about 15 s on a 2-core CPU), then `mlp-backend evaluate runs/<dir>/model.npz`. "
               "`mlp-backend COMMAND --help` explains each command.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    _add_data(sub)
    _add_info(sub)
    for name in PLUGINS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a missing dependency *inside* the module is a real error
                raise
            continue
        if hasattr(mod, "register"):
            mod.register(sub)
    from mlp_backend.apps.cli_names import accept_both_spellings
    return accept_both_spellings(p)  # --loss cross-entropy or cross_entropy, --init paper_he ...


def _add_train(sub):
    t = sub.add_parser(
        "train", help="train a model and write history, metrics, checkpoint and plots",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train an MLP. With no options: 784-256-128-10 ReLU, Adam 1e-3 with a cosine "
                    "schedule, batch 128, 10 epochs on MNIST (>= 97.5% test accuracy).\n"
                    "Options you give override the preset's (--preset, default: 'default').",
        epilog="writes to --out DIR: history.csv, metrics.json, model.npz (+ model.json), loss.png, "
               "accuracy.png\n\nexamples:\n"
               "  mlp-backend train                                  # the default, on MNIST\n"
               "  mlp-backend train --device cuda --epochs 20 --out runs/gpu\n"
               "  mlp-backend train --dataset fashion-mnist --hidden 512 256 --patience 3\n"
               "  mlp-backend train --preset paper-he --epochs 50    # the paper's experiment\n"
               "  mlp-backend train --resume runs/x/interrupted.npz --out runs/x\n"
               f"\npresets: {', '.join(PRESETS)}\n"
               "exit codes: 0 ok, 1 error (also: --out DIR already holds a run; use --overwrite or "
               "--resume), 2 usage, 3 diverged (NaN/inf loss), 130 Ctrl-C, 143 SIGTERM "
               "(DIR/interrupted.npz saved)")
    S = argparse.SUPPRESS  # unset options stay unset, so the preset's value applies
    g = t.add_argument_group("data")
    g.add_argument("--dataset", default=S, metavar="NAME|PATH",
                   help="mnist, fashion-mnist, or a path: IDX directory, .npz (x_train, y_train, x_test, "
                        "y_test), .csv (label, 784 pixels) (default: mnist)")
    g.add_argument("--val-fraction", type=float, default=S, metavar="F",
                   help=f"share of the training set held out for validation (default: {_d('val_fraction')})")
    g.add_argument("--split", choices=("standard", "paper"), default=S,
                   help="standard: 60k/10k with a validation share; paper: 42,000 rows drawn from all "
                        "70k, 1,000 test (default: standard, paper presets: paper)")
    g = t.add_argument_group("model")
    g.add_argument("--hidden", type=int, nargs="+", default=S, metavar="N",
                   help=f"hidden layer widths (default: {_d('hidden')})")
    g.add_argument("--activation", nargs="+", default=S, metavar="NAME",
                   help="hidden activations, one per layer or one for all: relu, leaky_relu, tanh, "
                        f"sigmoid, identity (default: {_d('activation')})")
    g.add_argument("--output", default=S, help=f"output activation: softmax, sigmoid, identity (default: {_d('output')})")
    g.add_argument("--loss", default=S, help=f"cross_entropy (needs softmax) or mse (default: {_d('loss')})")
    g.add_argument("--init", default=S,
                   help=f"he, lecun, xavier, uniform, paper-he, paper-lecun, paper-random (default: {_d('init')})")
    g.add_argument("--dtype", choices=("float32", "float64"), default=S, help=f"(default: {_d('dtype')})")
    g = t.add_argument_group("optimisation")
    g.add_argument("--optimizer", default=S,
                   help=f"gd, sgd, momentum, nesterov, adam, adamw (default: {_d('optimizer')})")
    g.add_argument("--lr", type=float, default=S, help=f"learning rate (default: {_d('lr')})")
    g.add_argument("--schedule", choices=("constant", "step", "cosine"), default=S,
                   help=f"learning-rate schedule over the epochs (default: {_d('schedule')})")
    g.add_argument("--batch-size", default=S, metavar="N|full",
                   help=f"minibatch size, or 'full' for full-batch gradient descent (default: {_d('batch_size')})")
    g.add_argument("--epochs", type=int, default=S, help=f"(default: {_d('epochs')})")
    g.add_argument("--weight-decay", type=float, default=S, metavar="L2", help="L2 penalty on weights (default: 0)")
    g.add_argument("--momentum", type=float, default=S, help="for momentum/nesterov (default: 0.9)")
    g.add_argument("--patience", type=int, default=S, metavar="EPOCHS",
                   help="early stopping: stop when the validation loss has not improved for this many "
                        "epochs and restore the best weights (default: off)")
    g.add_argument("--grad-divisor", choices=("samples", "features"), default=S,
                   help="divide gradients by the batch size (correct) or by 784 features (the paper's "
                        "printed code) (default: samples)")
    g.add_argument("--loss-report", choices=("ours", "paper"), default=S,
                   help="paper: report losses x2 as the paper's printed code does (default: ours)")
    g = t.add_argument_group("run")
    g.add_argument("--preset", default=None, choices=list(PRESETS), help="start from a named configuration")
    g.add_argument("--seed", type=int, default=S, help="seed for the split, the weights and shuffling (default: 0)")
    g.add_argument("--device", default=None, help=DEVICE_HELP)
    g.add_argument("--cuda-graphs", choices=CUDA_GRAPH_MODES, default=S,
                   help="on --device cuda, replay each epoch as one captured CUDA graph: auto (where it "
                        "can, else eager with a one-line reason), on (or fail), off (default: auto)")
    g.add_argument("--out", default=None, metavar="DIR", help="output directory (default: runs/<dataset>-<time>)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out DIR (otherwise refused, unless --resume continues it)")
    g.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue from DIR/interrupted.npz or DIR/model.npz: same config, up to --epochs in total")
    g.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    g.add_argument("--ranks", type=int, default=None, metavar="N",
                   help="data-parallel training on N MPI ranks: runs this command under `mpiexec -n N` (needs "
                        "pip install 'mlp-backend[mpi]'); `mpiexec -n N mlp-backend train ...` works too")
    t.set_defaults(func=cmd_train)


def _add_evaluate(sub):
    e = sub.add_parser("evaluate", help="accuracy, per-class precision/recall and confusion matrix of a model",
                       description="Evaluate a checkpoint on a data set's test split (the training split "
                                   "when it has no test split).")
    e.add_argument("model", metavar="MODEL", help="a checkpoint, e.g. runs/x/model.npz")
    e.add_argument("--dataset", default=None, metavar="NAME|PATH",
                   help="default: the data set the model was trained on")
    e.add_argument("--split", choices=("test", "train"), default="test", help="(default: test)")
    e.add_argument("--device", default=None, help=DEVICE_HELP)
    e.add_argument("--out", default=None, metavar="DIR",
                   help="also write evaluation.json, per_class.csv, confusion.csv and confusion.png here")
    e.add_argument("--json", action="store_true", help="print the results as JSON")
    e.set_defaults(func=cmd_evaluate)


def _add_predict(sub):
    p = sub.add_parser(
        "predict", help="classify images (PNG/JPEG) or CSV rows with a trained model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Classify inputs with a checkpoint.\n\n"
                    "Images (.png .jpg .jpeg .bmp .gif .tif .webp) are converted to grayscale and made into "
                    "28x28 digits\nas MNIST's were, as `mlp-backend serve` does: the ink's box scaled to 20x20, "
                    "centred by its\ncentre of mass. MNIST digits are white on black: an image whose border is "
                    "mostly light\n(mean border pixel > 127) is inverted first, so a dark digit on white paper "
                    "works. Use\n--no-invert to turn that off (an image then gets exactly the answer serve "
                    "gives it).\n\n"
                    "CSV files: one image per row, 784 pixel values 0..255 (or 785 with the label first, "
                    "as in\nmnist_test.csv); a header line is skipped. Pixels are scaled by 1/255, unless "
                    "they are floats in [0, 1].")
    p.add_argument("model", metavar="MODEL", help="a checkpoint, e.g. runs/x/model.npz")
    p.add_argument("inputs", metavar="INPUT", nargs="+", help="image or CSV files")
    p.add_argument("--top", type=int, default=3, help="how many classes to show per input (default: 3)")
    p.add_argument("--no-invert", action="store_true", help="never invert images")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object per input with all probabilities")
    p.set_defaults(func=cmd_predict)


def _add_data(sub):
    d = sub.add_parser("data", help="download or inspect cached data sets",
                       description="fetch: make sure a data set is in the cache (downloads it if needed). "
                                   "info: what is cached, where, and where it would come from. "
                                   "The cache is $MLP_BACKEND_DATA_DIR or the user cache directory.")
    d.add_argument("action", choices=("fetch", "info"))
    d.add_argument("name", nargs="?", default=None, metavar="NAME",
                   help="mnist or fashion-mnist (default: mnist for fetch, both for info)")
    d.add_argument("--force", action="store_true", help="fetch again even if cached")
    d.set_defaults(func=cmd_data)


def _add_info(sub):
    i = sub.add_parser("info", help="backends, devices, library versions and BLAS usable here")
    i.add_argument("--json", action="store_true", help="print as JSON")
    i.set_defaults(func=cmd_info)


# ----- commands -----------------------------------------------------------------------------

def _out(msg=""):
    print(msg, flush=True)


def _err(msg):
    print(msg, file=sys.stderr, flush=True)


def cmd_train(args) -> int:
    from mlp_backend.training.config import load_run_config, resolve_config
    from mlp_backend.training.run import check_out_dir, train_run, unused_dir
    names = ("dataset", "val_fraction", "split", "hidden", "activation", "output", "loss", "init", "dtype",
             "optimizer", "lr", "schedule", "batch_size", "epochs", "weight_decay", "momentum", "patience",
             "grad_divisor", "loss_report", "seed", "cuda_graphs")
    given = {k: getattr(args, k) for k in names if hasattr(args, k)}
    if args.resume:
        if args.preset:
            raise ValueError("--preset cannot be combined with --resume: the checkpoint has its config")
        cfg = load_run_config(args.resume, given)
        out = Path(args.out) if args.out else Path(args.resume).resolve().parent
    else:
        cfg = resolve_config(args.preset, **given)
        stem = Path(cfg["dataset"]).stem if cfg["dataset"] not in ("mnist", "fashion-mnist") else cfg["dataset"]
        out = Path(args.out) if args.out else unused_dir(Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    check_out_dir(out, resume=args.resume, overwrite=args.overwrite)  # never replace a run silently
    from mlp_backend.apps import launch  # data-parallel ranks: --ranks N reruns the command under mpiexec
    from mlp_backend.training import distributed  # under mpiexec, each rank joins the job
    ranks = launch.check_ranks(args.ranks, cfg["batch_size"])
    if ranks > 1 and distributed.launched_size() == 1:
        return launch.spawn(ranks, args.argv, log=None if args.quiet else _err)
    dist = distributed.init() if ranks > 1 else None
    import numpy as np
    with np.errstate(over="ignore", invalid="ignore"), \
            distributed.guard(dist, diverged=EXIT_DIVERGED, interrupted=EXIT_INTERRUPTED):  # a diverging run ends with one clear message
        result = train_run(cfg, out, device=args.device, quiet=args.quiet, resume=args.resume, dist=dist)
    if not args.quiet and result["metrics"] is not None:
        m = result["metrics"]
        fmt = lambda v: "n/a" if v is None else f"{v:.2%}"  # noqa: E731
        _out(f"test accuracy {fmt(m['test_accuracy'])}  val accuracy {fmt(m['val_accuracy'])}  "
             f"train accuracy {fmt(m['train_accuracy'])}  ({m['epochs_run']} epochs, "
             f"{m['seconds_per_epoch']:.2f} s/epoch on {m['device']})")
        _out(f"wrote {out}/: " + ", ".join(sorted(p.name for p in map(Path, result["files"].values()))))
    return 0


def _load_model(path, device):
    from mlp_backend.training.checkpoint import load_checkpoint
    ckpt = load_checkpoint(path, device=device)
    return ckpt, ckpt.class_labels


def cmd_evaluate(args) -> int:
    import numpy as np
    from mlp_backend.data import load_dataset
    from mlp_backend.training.run import _json_safe
    from mlp_backend.training.trainer import prepare_inputs
    ckpt, classes = _load_model(args.model, args.device)
    model, backend = ckpt.model, ckpt.model.backend
    name = args.dataset or ckpt.run_config.get("dataset") or "mnist"
    ds = load_dataset(name, log=_err)
    x, y = (ds.x_test, ds.y_test) if args.split == "test" and ds.n_test else (ds.x_train, ds.y_train)
    split = "test" if args.split == "test" and ds.n_test else "train"
    if x.shape[1] != model.sizes[0]:
        raise ValueError(f"the model takes {model.sizes[0]} features but {name} has {x.shape[1]}")
    pred = np.concatenate([backend.to_numpy(model.predict(prepare_inputs(backend.asarray(x[i:i + 10_000]), model)))
                           for i in range(0, len(x), 10_000)])
    k = model.sizes[-1]
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y.astype(np.int64), pred.astype(np.int64)), 1)
    tp = np.diag(cm).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), np.nan)
        recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), np.nan)
    acc = float(tp.sum() / cm.sum())
    per_class = [{"class": str(classes[c]), "precision": float(precision[c]), "recall": float(recall[c]),
                  "f1": float(f1[c]), "support": int(cm[c].sum())} for c in range(k)]
    result = {"model": str(args.model), "dataset": name, "split": split, "n": int(len(y)), "accuracy": acc,
              "per_class": per_class, "confusion_matrix": cm.tolist(), "device": backend.label}
    if args.json:
        _out(json.dumps(_json_safe(result), indent=2))
    else:
        _out(f"{name} {split} split, {len(y)} images: accuracy {acc:.2%}")
        _out(f"{'class':>6} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}")
        for r in per_class:
            _out(f"{r['class']:>6} {r['precision']:>9.4f} {r['recall']:>7.4f} {r['f1']:>7.4f} {r['support']:>8}")
        _out("confusion matrix (rows: true, columns: predicted):")
        _out("\n".join("  " + " ".join(f"{v:5d}" for v in row) for row in cm))
    if args.out:
        import csv
        import io
        from mlp_backend.data.atomic import atomic_write_bytes, write_json_atomic
        from mlp_backend.apps.plots import plot_confusion
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "evaluation.json", _json_safe(result))
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["true\\predicted", *map(str, classes)])
        w.writerows([str(classes[i]), *map(int, row)] for i, row in enumerate(cm))
        cm_csv = buf.getvalue().encode()
        atomic_write_bytes(out / "confusion.csv", lambda f: f.write(cm_csv))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(per_class[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(per_class)
        pc_csv = buf.getvalue().encode()
        atomic_write_bytes(out / "per_class.csv", lambda f: f.write(pc_csv))
        plot_confusion(cm, classes, out / "confusion.png", title=f"{name} {split}: accuracy {acc:.2%}")
        if not args.json:
            _out(f"wrote {out}/: confusion.csv, confusion.png, evaluation.json, per_class.csv")
    return 0


def cmd_predict(args) -> int:
    import numpy as np
    from mlp_backend.data.inputs import read_inputs
    from mlp_backend.training.trainer import prepare_inputs
    ckpt, classes = _load_model(args.model, args.device)
    model, backend = ckpt.model, ckpt.model.backend
    names, x, truth = read_inputs(args.inputs, model.sizes[0], invert=False if args.no_invert else None)
    proba = backend.to_numpy(model.predict_proba(prepare_inputs(backend.asarray(x), model)))
    top = max(1, min(args.top, proba.shape[1]))
    for name, pr, t in zip(names, proba, truth):
        best = int(np.argmax(pr))
        if args.json:
            rec = {"input": name, "label": _plain(classes[best]),
                   "probabilities": {str(classes[c]): float(pr[c]) for c in range(len(pr))}}
            if t is not None:
                rec["true_label"] = int(t)
            _out(json.dumps(rec))
        else:
            order = np.argsort(-pr, kind="stable")[:top]
            others = "  ".join(f"{classes[c]}: {pr[c]:.3f}" for c in order)
            _out(f"{name}: {classes[best]}  ({others})" + (f"  true {t}" if t is not None else ""))
    return 0


def _plain(v):
    return v.tolist() if hasattr(v, "tolist") else v  # a host NumPy scalar -> Python


def cmd_data(args) -> int:
    from mlp_backend.data import fetch, format_info, info
    if args.action == "fetch":
        path = fetch(args.name or "mnist", log=_err, force=args.force)
        _out(f"{args.name or 'mnist'}: cached at {path}")
    else:
        _out("\n".join(format_info(info(n)) for n in ([args.name] if args.name else ["mnist", "fashion-mnist"])))
    return 0


def blas_info() -> str:
    """BLAS/OpenMP libraries in use (threadpoolctl if installed, else numpy.show_config)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        import contextlib
        import io
        import numpy as np
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            np.show_config()
        return buf.getvalue().rstrip()
    def line(d):
        what = " ".join(str(d[k]) for k in ("internal_api", "version") if d.get(k))
        how = ", ".join(str(v) for v in (d.get("threading_layer"), d.get("architecture")) if v)
        return f"{what} ({how + ', ' if how else ''}{d.get('num_threads')} threads): {d.get('filepath')}"
    return "\n".join(line(d) for d in threadpool_info())


def cmd_info(args) -> int:
    import os
    import platform
    from mlp_backend import __version__
    from mlp_backend.backends import ENV_DEVICE, available_backends, get_backend
    rows = available_backends()
    try:
        default = get_backend().label
    except Exception as exc:  # the env var may name an unusable device
        default = f"unusable ({exc})"
    if args.json:
        _out(json.dumps({"mlp_backend": __version__, "python": platform.python_version(),
                         "default_device": default, "backends": rows, "blas": blas_info()}, indent=2))
        return 0
    _out(f"mlp-backend {__version__}, Python {platform.python_version()} on {platform.platform()}")
    _out(f"default device: {default}  (${ENV_DEVICE}={os.environ.get(ENV_DEVICE, '')!r}, override with --device)")
    _out("backends:")
    for r in rows:
        if r["usable"]:
            vers = ", ".join(f"{k} {v}" for k, v in r["versions"].items())
            _out(f"  {r['device']:<26} usable   ({vers})")
        else:
            _out(f"  {r['device']:<26} unusable: {r['reason']}")
    _out("BLAS:")
    _out("\n".join("  " + line for line in blas_info().splitlines()))
    return 0


# ----- entry point --------------------------------------------------------------------------

def main(argv=None) -> int:
    """Run the CLI; returns the exit code (``mlp-backend`` exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for `train --ranks N`, which reruns it under mpiexec
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    with _sigterm_as_interrupt() as term:
        code = _run(args, term)
    if code == EXIT_INTERRUPTED and term["signal"]:
        return EXIT_TERMINATED
    return code


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (what SLURM, Kubernetes and `timeout` send first) is handled like Ctrl-C: it
    raises KeyboardInterrupt, so training saves ``interrupted.npz`` after the last completed
    epoch; ``main`` then exits 143 (128 + SIGTERM). Later SIGTERMs are ignored while that
    checkpoint is written. The previous handler comes back afterwards."""
    state = {"signal": None}

    def on_term(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        state["signal"] = signum
        raise KeyboardInterrupt("SIGTERM")

    if threading.current_thread() is not threading.main_thread():
        yield state  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield state
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args, term) -> int:
    from mlp_backend.backends import BackendError
    from mlp_backend.data import DataError
    from mlp_backend.training.trainer import TrainingDiverged
    from mlp_backend.training.run import TrainingInterrupted
    try:
        code = args.func(args)
        return 0 if code is None else int(code)
    except TrainingDiverged as exc:
        _err(f"error: {exc}")
        _err(f"(exit code {EXIT_DIVERGED}: training diverged; history.csv and metrics.json were written)")
        return EXIT_DIVERGED
    except TrainingInterrupted as exc:
        out = exc.out_dir
        why = " by SIGTERM" if term["signal"] else ""
        _err(f"\ninterrupted{why}: saved the state after the last completed epoch to {exc.checkpoint}")
        _err(f"resume with: mlp-backend train --resume {exc.checkpoint} --out {out}")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        _err("\ninterrupted" + (" by SIGTERM" if term["signal"] else ""))
        return EXIT_INTERRUPTED
    except (DataError, BackendError, ValueError, OSError) as exc:
        _err(f"error: {exc}")
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
