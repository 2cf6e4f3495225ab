"""Run one training configuration end to end and write its outputs (what ``mlp-backend
train`` does, callable from Python).

>>> from mlp_backend.training.config import resolve_config
>>> from mlp_backend.training.run import train_run
>>> cfg = resolve_config("default", epochs=2)                           # doctest: +SKIP
>>> result = train_run(cfg, "runs/try", device="cpu")                   # doctest: +SKIP
>>> result["metrics"]["test_accuracy"]                                  # doctest: +SKIP

Output directory:

================  ================================================================
``history.csv``   one row per epoch: epoch, seconds, lr, train/val loss and accuracy
``metrics.json``  final train/val/test loss and accuracy, the full config, backend,
                  device, library versions, seconds per epoch, status
``model.npz``     the final checkpoint (``model.json``: its metadata, for reading)
``loss.png``      training vs validation loss per epoch
``accuracy.png``  training vs validation accuracy per epoch
================  ================================================================

With ``loss_report="paper"`` (the paper presets) every *reported* MSE loss (history,
metrics, plots) is twice the training loss, to match the printed code's
``mean_squared_loss`` (:func:`~mlp_backend.training.presets.loss_report_factor`);
metrics.json says so under ``loss_report``. The config itself (defaults, presets,
checks) is :mod:`mlp_backend.training.config`.
"""
from __future__ import annotations

import csv
import io
import math
import platform
import sys
from pathlib import Path

import numpy as np  # host side: data splits and metrics

from mlp_backend import __version__
from mlp_backend.backends import get_backend
from mlp_backend.training.checkpoint import _jsonable, load_checkpoint, save_checkpoint
from mlp_backend.data import load_dataset, train_val_split
from mlp_backend.data.atomic import atomic_write_bytes, write_json_atomic
from mlp_backend.data.formats import N_CLASSES
from mlp_backend.model import MLP
from mlp_backend.optim import make_optimizer, make_schedule
from mlp_backend.training.presets import loss_report_factor, paper_split
from mlp_backend.training.trainer import Trainer, TrainingDiverged, evaluate

__all__ = ["train_run", "build_model", "build_optimizer", "build_trainer", "EpochSnapshot",
           "TrainingInterrupted", "TrainingDiverged"]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``checkpoint`` is the path of the saved ``interrupted.npz``."""

    def __init__(self, checkpoint, out_dir):
        super().__init__(str(checkpoint))
        self.checkpoint, self.out_dir = Path(checkpoint), Path(out_dir)


# ----- data -------------------------------------------------------------------------------

def split_data(cfg: dict, log=print) -> dict:
    """Host arrays ``x_train, y_train, x_val, y_val, x_test, y_test`` plus ``dataset`` info."""
    ds = load_dataset(cfg["dataset"], log=log)
    if cfg["split"] == "paper":
        x_all = np.concatenate([ds.x_train, ds.x_test])
        y_all = np.concatenate([ds.y_train, ds.y_test])
        parts = paper_split(x_all, y_all, seed=cfg["seed"], val_fraction=cfg["val_fraction"])
    else:
        parts = (*train_val_split(ds.x_train, ds.y_train, cfg["val_fraction"], cfg["seed"]),
                 ds.x_test, ds.y_test)
    names = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    data = dict(zip(names, parts))
    if len(data["y_train"]) == 0:
        raise ValueError(f"{cfg['dataset']}: the {cfg['split']} split leaves no training rows "
                         f"({len(ds.y_train) + len(ds.y_test)} rows in all; the paper split needs > 1,000)")
    data["dataset"] = {"name": ds.name, "source": ds.source, "n_train": len(data["y_train"]),
                       "n_val": len(data["y_val"]), "n_test": len(data["y_test"])}
    return data


# ----- building -----------------------------------------------------------------------------

def build_model(cfg: dict, n_features: int, n_classes: int, backend, params=None) -> MLP:
    """The config's network on ``backend``: drawn with ``cfg["seed"]``, or starting from
    ``params`` (host arrays in the model's layout) when given."""
    return MLP([n_features, *cfg["hidden"], n_classes], cfg["activation"], output=cfg["output"],
               loss=cfg["loss"], init=cfg["init"], dtype=cfg["dtype"], device=backend, seed=cfg["seed"],
               params=params)


def build_optimizer(cfg: dict):
    """The config's optimizer (``momentum`` only for the momentum kinds)."""
    extra = {"momentum": cfg["momentum"]} if cfg["optimizer"] in ("momentum", "nesterov") else {}
    return make_optimizer(cfg["optimizer"], cfg["lr"], cfg["weight_decay"], **extra)


def build_trainer(cfg: dict, model: MLP, optimizer, *, progress="auto", log=print, callbacks=(), dist=None) -> Trainer:
    """A :class:`Trainer` honouring the config's batch size ("full" -> full batch),
    schedule, seed, patience and ``grad_divisor`` ("features" -> divide by n_features)."""
    return Trainer(model, optimizer,
                   batch_size=None if cfg["batch_size"] == "full" else int(cfg["batch_size"]),
                   schedule=make_schedule(cfg["schedule"], cfg["lr"], cfg["epochs"]),
                   seed=cfg["seed"], patience=cfg["patience"], progress=progress, log=log,
                   normalizer=model.sizes[0] if cfg["grad_divisor"] == "features" else None,
                   callbacks=callbacks, cuda_graphs=cfg.get("cuda_graphs", "auto"), dist=dist)


class EpochSnapshot:
    """A callback that keeps a device-side copy of the state at the end of every epoch
    (no host sync) and, on Ctrl-C, saves it as a checkpoint. Resuming from it is exactly
    equivalent to not stopping, because it never holds a half-finished epoch."""

    def __init__(self, path, run_config: "dict | None" = None, extra: "dict | None" = None):
        self.path, self.run_config, self.extra = Path(path), run_config, extra
        self.state = None
        self.saved: "Path | None" = None

    def take(self, trainer, row=None) -> None:
        model, xp = trainer.model, trainer.model.xp
        copy = lambda v: xp.astype(v, v.dtype, copy=True)  # noqa: E731
        params = {k: copy(v) for k, v in model.params.items()}
        opt = trainer.optimizer
        osd = {"t": opt.t, "lr": opt.lr}
        osd.update({f"{kind}/{k}": copy(v) for kind, bufs in opt.state.items() for k, v in bufs.items()})
        best = trainer.best
        # Trainer updates its best weights after the callbacks; do the same here.
        if (row is not None and trainer.patience is not None and row.get("val_loss") is not None
                and (best is None or row["val_loss"] < best[0])):
            best = (row["val_loss"], row["epoch"], params)
        self.state = {"params": params, "optimizer": osd, "trainer": trainer.state(), "best": best}

    def on_epoch_end(self, trainer, row) -> None:
        self.take(trainer, row)

    def on_interrupt(self, trainer) -> None:
        if self.state is None:
            self.take(trainer)
        self.saved = save_checkpoint(self.path, trainer.model, trainer.optimizer, trainer,
                                     run_config=self.run_config, extra=self.extra, state=self.state)


# ----- outputs -----------------------------------------------------------------------------

HISTORY_COLUMNS = ("epoch", "seconds", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy")


def reported_rows(rows, cfg: dict) -> list:
    """History rows with losses scaled as the config reports them (:func:`loss_report_factor`)."""
    factor = loss_report_factor(cfg)
    return [{k: (v * factor if k.endswith("_loss") and v is not None else v) for k, v in r.items()}
            for r in rows]


def write_history_csv(rows, path) -> Path:
    cols = [c for c in HISTORY_COLUMNS if any(c in r for r in rows)] or list(HISTORY_COLUMNS[:5])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    data = buf.getvalue().encode()
    return atomic_write_bytes(path, lambda f: f.write(data))


def _finite(v):
    return v if v is None or math.isfinite(v) else None


def final_metrics(model, backend, data: dict, cfg: dict) -> dict:
    """Loss and accuracy of ``model`` on each non-empty split (one pass each)."""
    factor = loss_report_factor(cfg)
    out = {}
    for split in ("train", "val", "test"):
        x, y = data[f"x_{split}"], data[f"y_{split}"]
        if len(y) == 0:
            out[f"{split}_loss"] = out[f"{split}_accuracy"] = None
            continue
        loss, correct = evaluate(model, backend.asarray(x), backend.asarray(y, "int64"))
        out[f"{split}_loss"] = _finite(backend.to_float(loss) / len(y) * factor)
        out[f"{split}_accuracy"] = backend.to_float(correct) / len(y)
    return out


def versions(backend) -> dict:
    return {"mlp_backend": __version__, "python": platform.python_version(), **backend.versions()}


def write_metrics(out: Path, cfg, backend, trainer, data, status, final=None, extra=None) -> dict:
    secs = [r["seconds"] for r in trainer.history.rows]
    metrics = {"status": status, **(final or {}),
               "epochs_run": trainer.epoch, "seconds_per_epoch": float(np.mean(secs)) if secs else None,
               "epoch_seconds": secs, "total_train_seconds": float(np.sum(secs)),
               "best_epoch": trainer.best[1] if trainer.best is not None else None,
               "stop_reason": trainer.stop_reason or None,
               "config": cfg, "backend": backend.name, "device": backend.label,
               "graph_status": trainer.graph_status or None,
               "versions": versions(backend), "dataset": data["dataset"],
               "loss_report": loss_report_note(cfg),
               **(extra or {})}
    write_json_atomic(out / "metrics.json", _json_safe(metrics))
    return metrics


def loss_report_note(cfg) -> str:
    """What metrics.json says about its losses' scale."""
    if loss_report_factor(cfg) != 1.0:
        return ("paper: every reported loss (history.csv, metrics.json, loss.png) is 2x the "
                "training loss, as the paper's printed mean_squared_loss")
    if cfg["loss_report"] == "paper":
        return ("paper: losses as trained (only an MSE is doubled to the printed mean_squared_loss; "
                "our cross-entropy already has the printed categorical_cross_entropy's scale)")
    return "ours: losses as trained"


def _json_safe(obj):
    return _jsonable(obj, strict=True)


def _silent(*_a, **_k):
    pass


def _stderr(msg):
    print(msg, file=sys.stderr, flush=True)


# ----- the run ------------------------------------------------------------------------------

def train_run(cfg: dict, out_dir, *, device=None, quiet: bool = False, resume=None, log=None,
              callbacks=(), progress: "str | None" = None, dist=None) -> dict:
    """Train ``cfg`` (from :func:`resolve_config`) and write every output to ``out_dir``.

    ``resume``: a checkpoint path; its weights, optimizer state, epoch, history and RNG
    state continue, and training runs until ``cfg["epochs"]`` epochs in total. Returns
    ``{"metrics", "history", "model", "trainer", "out_dir", "files"}``.

    Raises :class:`TrainingDiverged` (history.csv and metrics.json are written first,
    status ``diverged``) and :class:`TrainingInterrupted` on Ctrl-C (after saving
    ``interrupted.npz`` from the last completed epoch).

    ``dist`` (:mod:`mlp_backend.training.distributed`): this rank of a data-parallel job; only
    rank 0 logs and writes files (the other ranks return ``metrics`` None, no files).
    """
    root = dist is None or dist.root
    log = _silent if quiet or not root else (log or _stderr)
    out = Path(out_dir)
    backend = get_backend(device) if dist is None else dist.pick_device(device)
    data = split_data(cfg, log=log) if dist is None else dist.root_first(lambda: split_data(cfg, log=log))
    n_features, n_classes = data["x_train"].shape[1], N_CLASSES
    if resume is not None:
        ckpt = load_checkpoint(resume, device=backend)
        model, optimizer = ckpt.model, ckpt.optimizer
        if optimizer is None:
            raise ValueError(f"{resume}: the checkpoint has no optimizer state, so it cannot resume training")
        log(f"resuming from {resume} at epoch {ckpt.epoch}")
    else:
        model, optimizer = build_model(cfg, n_features, n_classes, backend), build_optimizer(cfg)
    if root:
        out.mkdir(parents=True, exist_ok=True)
    snapshot = EpochSnapshot(out / "interrupted.npz", run_config=cfg)
    progress = progress or ("none" if quiet else "auto")
    trainer = build_trainer(cfg, model, optimizer, progress=progress, log=log,
                            callbacks=[snapshot, *callbacks] if root else list(callbacks), dist=dist)
    if resume is not None:
        ckpt.restore(trainer)
    log(f"training {'-'.join(map(str, model.sizes))} on {backend.label} ({cfg['dtype']}): "
        f"{data['dataset']['n_train']} train / {data['dataset']['n_val']} val / "
        f"{data['dataset']['n_test']} test images, {cfg['epochs']} epochs")
    x, y = backend.asarray(data["x_train"]), backend.asarray(data["y_train"], "int64")
    xv, yv = backend.asarray(data["x_val"]), backend.asarray(data["y_val"], "int64")
    snapshot.take(trainer)
    files = {}
    try:
        trainer.fit(x, y, cfg["epochs"], xv, yv)
    except TrainingDiverged as exc:
        if not root:
            raise
        rows = reported_rows(trainer.history.rows, cfg)
        write_history_csv(rows, out / "history.csv")
        write_metrics(out, cfg, backend, trainer, data, "diverged", extra={"error": str(exc)})
        raise
    except KeyboardInterrupt:
        if not root:
            raise
        rows = reported_rows(trainer.history.rows, cfg)
        write_history_csv(rows, out / "history.csv")
        if snapshot.saved is None:
            raise
        raise TrainingInterrupted(snapshot.saved, out) from None
    trainer.close()  # a run trains once: free its epoch runner (on CUDA the graph and its buffers)
    rows = reported_rows(trainer.history.rows, cfg)
    if not root:
        return {"metrics": None, "history": rows, "model": model, "trainer": trainer, "out_dir": out, "files": {}}
    files["history.csv"] = write_history_csv(rows, out / "history.csv")
    files["model.npz"] = save_checkpoint(out / "model.npz", model, optimizer, trainer, run_config=cfg)
    final = final_metrics(model, backend, data, cfg)
    status = "early_stopped" if trainer.stop_reason else "completed"
    metrics = write_metrics(out, cfg, backend, trainer, data, status, final,
                            extra=None if dist is None else {"distributed": dist.describe()})
    files["metrics.json"] = out / "metrics.json"
    from mlp_backend.apps.plots import plot_history
    title = f"{'-'.join(map(str, model.sizes))} {'/'.join(cfg['activation'])}, {cfg['optimizer']} lr {cfg['lr']:g}"
    files.update(plot_history(rows, out, title=title,
                              loss_label="loss (x2, paper's report)" if loss_report_factor(cfg) != 1.0 else "loss"))
    (out / "interrupted.npz").unlink(missing_ok=True)  # a finished run supersedes an old interruption
    (out / "interrupted.json").unlink(missing_ok=True)
    return {"metrics": metrics, "history": rows, "model": model, "trainer": trainer, "out_dir": out,
            "files": files}


RUN_FILES = ("model.npz", "model.json", "history.csv", "metrics.json", "loss.png", "accuracy.png",
             "interrupted.npz", "interrupted.json")


class OutputExists(FileExistsError):
    """``--out DIR`` already holds a run; the message says how to continue or replace it."""


def check_out_dir(out, *, resume=None, overwrite: bool = False) -> None:
    """Refuse to train into a directory that already holds a run (any of ``RUN_FILES``),
    before anything is written, unless ``overwrite`` is set or ``resume`` is a checkpoint
    in that same directory (continuing it is what the files are for)."""
    out = Path(out)
    found = [f for f in RUN_FILES if (out / f).exists()]
    if not found or overwrite:
        return
    if resume is not None and Path(resume).resolve().parent == out.resolve():
        return
    ckpt = out / ("interrupted.npz" if "interrupted.npz" in found else "model.npz")
    raise OutputExists(
        f"{out} already holds a training run ({', '.join(found)}); nothing was changed. "
        f"Continue it with `mlp-backend train --resume {ckpt} --out {out} --epochs N`, "
        f"replace it with --overwrite, or choose another --out")


def unused_dir(path) -> Path:
    """``path``, or ``path-2``, ``path-3`` ... if it exists (default output directories)."""
    path, n = Path(path), 2
    candidate = path
    while candidate.exists():
        candidate, n = path.with_name(f"{path.name}-{n}"), n + 1
    return candidate
