"""What a training configuration is: its options and their defaults, how a preset and
overrides resolve into one checked config, and what a resumed run may change.

A config is a flat dict with the names of ``mlp-backend train``'s options (``hidden``,
``activation``, ``lr``, ``batch_size``, ...); the named starting points are the presets of
:mod:`mlp_backend.training.presets`.

>>> from mlp_backend.training.config import resolve_config
>>> resolve_config("paper-he", epochs=5)["batch_size"]
'full'
"""
from __future__ import annotations

import numpy as np  # host side: normalising the hidden widths

from mlp_backend.training.checkpoint import read_metadata
from mlp_backend.training.presets import PRESETS
from mlp_backend.training.runner import MODES

__all__ = ["EXTRA_DEFAULTS", "DEFAULTS", "RESUME_FIXED", "resolve_config", "validate_config", "load_run_config"]

# Options that are not in every preset, with their defaults.
EXTRA_DEFAULTS = {"dataset": "mnist", "seed": 0, "weight_decay": 0.0, "momentum": 0.9,
                  "patience": None, "schedule": "constant", "val_fraction": 0.1,
                  "grad_divisor": "samples", "split": "standard", "loss_report": "ours",
                  "cuda_graphs": "auto"}
DEFAULTS = {**EXTRA_DEFAULTS, **PRESETS["default"]}
# What a resumed run may not change: the architecture and the optimizer's kind.
RESUME_FIXED = ("hidden", "activation", "output", "loss", "init", "dtype", "optimizer")
# Options that take one of a few names.
CHOICES = {"grad_divisor": ("samples", "features"), "split": ("standard", "paper"),
           "loss_report": ("ours", "paper"), "cuda_graphs": MODES}


def resolve_config(preset: "str | None" = None, **options) -> dict:
    """The full training config: ``DEFAULTS``, then ``PRESETS[preset]``, then ``options``
    (``None`` values are ignored, so unset command-line options keep the preset's)."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    cfg = {**EXTRA_DEFAULTS, **PRESETS[preset or "default"]}
    cfg.update({k: v for k, v in options.items() if v is not None})
    cfg["preset"] = preset or "default"
    return validate_config(cfg)


def validate_config(cfg: dict) -> dict:
    """Normalise and check a config (raises ValueError with the option's name)."""
    cfg = dict(cfg)
    cfg["hidden"] = [int(h) for h in np.atleast_1d(cfg["hidden"])]
    if any(h < 1 for h in cfg["hidden"]):
        raise ValueError(f"--hidden widths must be >= 1, got {cfg['hidden']}")
    act = cfg["activation"]
    cfg["activation"] = [act] if isinstance(act, str) else list(act)
    if len(set(cfg["activation"])) == 1:  # one name for every layer, e.g. the default's relu
        cfg["activation"] = cfg["activation"][:1] * len(cfg["hidden"])
    bs = cfg["batch_size"]
    if isinstance(bs, str):
        if bs != "full" and not bs.isdigit():
            raise ValueError(f"--batch-size must be a positive integer or 'full', got {bs!r}")
        bs = "full" if bs == "full" else int(bs)
    if bs != "full" and int(bs) < 1:
        raise ValueError(f"--batch-size must be >= 1 or 'full', got {bs}")
    cfg["batch_size"] = bs
    for key, kind in (("epochs", int), ("seed", int), ("lr", float), ("weight_decay", float),
                      ("momentum", float), ("val_fraction", float)):
        cfg[key] = kind(cfg[key])
    if not cfg["lr"] > 0:
        raise ValueError(f"--lr must be > 0, got {cfg['lr']}")
    if cfg["epochs"] < 1:
        raise ValueError(f"--epochs must be >= 1, got {cfg['epochs']}")
    if not 0 <= cfg["val_fraction"] < 1:
        raise ValueError(f"--val-fraction must be in [0, 1), got {cfg['val_fraction']}")
    if cfg["patience"] is not None:
        cfg["patience"] = int(cfg["patience"])
        if cfg["patience"] < 1:
            raise ValueError(f"--patience must be >= 1, got {cfg['patience']}")
    cfg["cuda_graphs"] = cfg.get("cuda_graphs") or "auto"
    for key, allowed in CHOICES.items():
        if cfg[key] not in allowed:
            raise ValueError(f"--{key.replace('_', '-')} must be one of {', '.join(allowed)}, got {cfg[key]!r}")
    cfg["dataset"] = str(cfg["dataset"])
    return cfg


def load_run_config(resume, explicit: dict) -> dict:
    """The config to resume with: the checkpoint's, updated with ``explicit`` options,
    refusing changes to the architecture or the optimizer kind (``RESUME_FIXED``)."""
    meta = read_metadata(resume)
    base = dict(meta.get("run_config") or {})
    if not base:
        raise ValueError(f"{resume}: this checkpoint has no run config (not written by `mlp-backend train`); "
                         "resume it from Python with load_checkpoint + Trainer.load_state")
    for key, value in explicit.items():
        if value is None:
            continue
        if key in RESUME_FIXED and validate_config({**base, key: value})[key] != base.get(key):
            raise ValueError(f"cannot change --{key.replace('_', '-')} when resuming "
                             f"(checkpoint has {base.get(key)!r}); start a new run instead")
        base[key] = value
    return validate_config(base)
