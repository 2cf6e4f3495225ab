"""Checkpoints: one ``.npz`` holding parameters, optimizer state and JSON metadata.

A checkpoint is a single NumPy ``.npz`` archive, written atomically (temp file in the
same directory, fsync, ``os.replace``), so a crash or a full disk never leaves a
half-written file where a good one was. It is read with ``np.load(allow_pickle=False)``:
loading a checkpoint never unpickles anything, so a file from a stranger cannot run code.

Inside the archive:

=====================  ==============================================================
``param/w1`` ...       the model's parameters (host copies, the model's dtype)
``optim/m/w1`` ...     the optimizer's per-parameter buffers (Adam's ``m``/``v``,
                       momentum's ``v``), as returned by ``Optimizer.state_dict``
``best/w1`` ...        early stopping's best weights so far (only while training)
``__meta__``           UTF-8 JSON as a ``uint8`` array: format version, model config,
                       optimizer config and step count, trainer state (epoch, history,
                       the host RNG's bit-generator state), best-weights epoch/loss,
                       the run's config, the device it was saved from, library versions
                       and any ``extra`` you pass
=====================  ==============================================================

A human-readable copy of the metadata is written next to it as ``<name>.json``
(informational: :func:`load_checkpoint` reads only the ``.npz``).

Arrays are stored on the host, so a checkpoint saved from ``cuda:0`` loads on a machine
without a GPU (``device="cpu"``), and vice versa. Saving, loading and training on gives
bit-identical results to never stopping (on the CPU): the RNG state and the optimizer's
step count and buffers travel with the weights.

>>> save_checkpoint("run/model.npz", model, optimizer, trainer)        # doctest: +SKIP
>>> ckpt = load_checkpoint("run/model.npz", device="cpu")              # doctest: +SKIP
>>> ckpt.model.predict(x); ckpt.restore(trainer)                      # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np  # host side only: checkpoints are host arrays

from mlp_backend.backends import get_backend
from mlp_backend.data.atomic import atomic_write_bytes, write_json_atomic
from mlp_backend.model import MLP
from mlp_backend.optim import Optimizer, make_optimizer

FORMAT = "mlp-backend-checkpoint"
VERSION = 1
META_KEY = "__meta__"

__all__ = ["CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint", "read_metadata",
           "FORMAT", "VERSION"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit; the message says which and why."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns.

    ``model`` is rebuilt on the requested device; ``optimizer`` (or ``None`` if none was
    saved) has its buffers there too; ``trainer_state`` is what ``Trainer.load_state``
    takes (``None`` if no trainer was saved); ``meta`` is the full metadata dict.
    """
    model: MLP
    optimizer: "Optimizer | None"
    trainer_state: "dict | None"
    meta: dict
    best: "tuple | None" = None  # (val_loss, epoch, params on the device) for early stopping
    path: "Path | None" = None
    extra: dict = field(default_factory=dict)

    @property
    def epoch(self) -> int:
        return int((self.trainer_state or {}).get("epoch", 0))

    @property
    def run_config(self) -> dict:
        return dict(self.meta.get("run_config") or {})

    @property
    def class_labels(self) -> list:
        """The label of each output, in order: the classes an estimator was fitted on (saved in
        ``extra["estimator"]["classes"]``), else the output indices 0, 1, 2, ..."""
        est = (self.extra or {}).get("estimator") or {}
        return list(est.get("classes") or range(self.model.sizes[-1]))

    def restore(self, trainer) -> None:
        """Put the saved epoch, history, RNG state and best weights into ``trainer``."""
        if self.trainer_state is not None:
            trainer.load_state(self.trainer_state)
        trainer.best = self.best


# ----- saving -------------------------------------------------------------------------

def _jsonable(obj, strict: bool = False):
    """JSON-ready ``obj``: NumPy scalars and arrays become Python numbers and lists, tuples
    lists; ``strict`` also turns NaN/inf into ``None`` (strict JSON has neither)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, strict) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, strict) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist(), strict)
    if isinstance(obj, np.generic):
        obj = obj.tolist()  # a host NumPy scalar -> Python
    if strict and isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def save_checkpoint(path, model: MLP, optimizer: "Optimizer | None" = None, trainer=None, *,
                    run_config: "dict | None" = None, extra: "dict | None" = None,
                    state: "dict | None" = None, sidecar: bool = True) -> Path:
    """Write ``model`` (and optionally ``optimizer`` and ``trainer``'s state) to ``path``.

    ``state`` overrides what is read from the live objects: a dict with any of
    ``params``, ``optimizer`` (a ``state_dict``), ``trainer`` (a ``Trainer.state()``) and
    ``best`` (``(val_loss, epoch, params)``); :class:`~mlp_backend.training.run.EpochSnapshot`
    uses it to save the state of the last completed epoch. Returns the path written.
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    state = state or {}
    backend = model.backend
    params = state.get("params", model.params)
    arrays = {f"param/{k}": backend.to_numpy(v) for k, v in params.items()}
    meta = {"format": FORMAT, "version": VERSION, "model": model.config(),
            "saved_from": {"device": backend.label, "backend": backend.name},
            "versions": backend.versions(), "run_config": run_config or {}, "extra": extra or {}}
    if optimizer is not None:
        sd = state.get("optimizer") or optimizer.state_dict(backend)
        meta["optimizer"] = {"config": optimizer.config(), "t": int(sd["t"]), "lr": float(sd["lr"])}
        arrays.update({f"optim/{k}": backend.to_numpy(v) for k, v in sd.items() if "/" in k})
    if trainer is not None or "trainer" in state:
        meta["trainer"] = state.get("trainer") or trainer.state()
    best = state.get("best", getattr(trainer, "best", None))
    if best is not None:
        meta["best"] = {"val_loss": float(best[0]), "epoch": int(best[1])}
        arrays.update({f"best/{k}": backend.to_numpy(v) for k, v in best[2].items()})
    meta = _jsonable(meta)
    text = json.dumps(meta, indent=1, sort_keys=True)
    arrays[META_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    for k, v in arrays.items():
        if v.dtype == object:
            raise CheckpointError(f"checkpoint entry {k!r} is an object array; only numeric arrays are saved")
    atomic_write_bytes(path, lambda f: np.savez(f, **arrays))
    if sidecar:
        write_json_atomic(path.with_suffix(".json"), meta)
    return path


# ----- loading ------------------------------------------------------------------------

def _open(path) -> tuple[dict, dict]:
    """(arrays, meta) from a checkpoint file, never unpickling."""
    p = Path(path)
    if not p.is_file():
        hint = " (did you mean the .npz next to it?)" if p.suffix == ".json" else ""
        raise CheckpointError(f"{p}: no such checkpoint file{hint}")
    with open(p, "rb") as f:
        head = f.read(4)
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):  # np.load would take any other bytes for a pickle
        raise CheckpointError(f"{p}: not a readable .npz checkpoint (it is not a zip archive: "
                              f"{'empty file' if not head else 'starts with ' + repr(head)}); "
                              "give the model.npz that `mlp-backend train` or save_checkpoint wrote")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as exc:  # object arrays refuse to load without pickle
        raise CheckpointError(f"{p}: refused to load: it holds pickled objects ({exc}); "
                              "mlp-backend checkpoints never need pickle") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{p}: not a readable .npz checkpoint ({exc})") from None
    if META_KEY not in arrays:
        raise CheckpointError(f"{p}: an .npz without mlp-backend metadata ({META_KEY!r} missing); "
                              "was it written by save_checkpoint / `mlp-backend train`?")
    try:
        meta = json.loads(arrays.pop(META_KEY).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{p}: corrupt checkpoint metadata ({exc})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not an mlp-backend checkpoint (format {meta.get('format')!r})")
    if int(meta.get("version", 0)) > VERSION:
        raise CheckpointError(f"{p}: checkpoint format version {meta['version']} is newer than this "
                              f"mlp-backend understands ({VERSION}); upgrade mlp-backend")
    return arrays, meta


def read_metadata(path) -> dict:
    """The metadata dict of a checkpoint (no model is built)."""
    return _open(path)[1]


def _group(arrays: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def load_checkpoint(path, device=None, dtype: "str | None" = None) -> Checkpoint:
    """Rebuild a checkpoint's model (and optimizer) on ``device``.

    ``device`` is any device string (``cpu``, ``cuda:1``, ``torch:cpu``, ...); ``None``
    takes the process default (``auto``), never the device the file was saved from, so a
    CUDA-trained model loads on a CPU-only machine. ``dtype`` casts everything (e.g.
    ``float32`` for a float64 checkpoint on a device without float64).
    """
    arrays, meta = _open(path)
    backend = get_backend(device)
    cfg = dict(meta["model"])
    if dtype is not None:
        cfg["dtype"] = dtype
    elif cfg["dtype"] == "float64" and not backend.supports_float64:
        raise CheckpointError(f"{path}: a float64 checkpoint cannot load on {backend.label}, which has "
                              "no float64; pass dtype='float32' (--dtype float32)")
    cast = np.dtype(cfg["dtype"])
    params = _group(arrays, "param/")
    try:
        model = MLP(cfg["sizes"], cfg["activations"], output=cfg["output"], loss=cfg["loss"],
                    init=cfg["init"], dtype=cfg["dtype"], device=backend, params=params)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: parameters do not match the saved architecture: {exc}") from None
    optimizer = None
    if "optimizer" in meta:
        oc = dict(meta["optimizer"]["config"])
        oc.pop("lr")  # may be a schedule's final 0; the saved lr is restored just below
        optimizer = make_optimizer(oc.pop("name"), 1.0, oc.pop("weight_decay", 0.0), **oc)
        sd = {"t": meta["optimizer"]["t"], "lr": meta["optimizer"]["lr"]}
        sd.update({k: v.astype(cast) for k, v in _group(arrays, "optim/").items()})
        optimizer.load_state_dict(sd, backend)
    best = None
    if "best" in meta:
        best_params = {k: backend.asarray(v, cfg["dtype"]) for k, v in _group(arrays, "best/").items()}
        best = (float(meta["best"]["val_loss"]), int(meta["best"]["epoch"]), best_params)
    return Checkpoint(model, optimizer, meta.get("trainer"), meta, best, Path(path), meta.get("extra") or {})
