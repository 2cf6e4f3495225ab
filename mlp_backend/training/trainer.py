"""The training loop: epochs, metrics, early stopping, progress, and what a step trains on.

Data flow (see docs/architecture.md): pixels arrive on the device as uint8 rows, once. Each
epoch the trainer draws the row order on the host and hands it to its epoch runner
(:mod:`mlp_backend.training.runner`), which runs the one training step
(:mod:`mlp_backend.training.step`) over it; the step gathers and scales each batch on the
device, and loss and correct counts accumulate as device scalars. The host reads them back
once per epoch, in one transfer, for the history and the progress line. Nothing in a step
waits for the device.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from mlp_backend import functional as F
from mlp_backend.backends import host_rng
from mlp_backend.backends.placement import place_inputs
from mlp_backend.model import MLP
from mlp_backend.optim import Optimizer, make_schedule
from mlp_backend.training.runner import check_mode, epoch_runner, runner_key
from mlp_backend.training.step import PIXEL_SCALE, Batch, EpochPlan, TrainingStep, prepare_inputs

__all__ = ["Trainer", "History", "TrainingDiverged", "fit", "train", "evaluate", "prepare_inputs", "PIXEL_SCALE"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says at which epoch and what to try."""


@dataclass
class History:
    """One row per epoch: epoch, seconds, lr, train_loss, train_accuracy, val_loss, val_accuracy."""
    rows: list = field(default_factory=list)

    def append(self, row: dict) -> None:
        self.rows.append(row)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: str) -> list:
        return [r.get(key) for r in self.rows]

    def to_dataframe(self):
        import pandas as pd
        return pd.DataFrame(self.rows)


def evaluate(model: MLP, x, y, batch_size: int = 10_000):
    """(sum of per-batch mean losses weighted by batch size, number correct) as device
    scalars: divide by ``x.shape[0]`` on the host for the means. No host sync.

    Host (NumPy) ``x``/``y`` are copied to the model's device once, first; arrays on
    another device raise :class:`~mlp_backend.backends.placement.DeviceMismatchError`."""
    x, y = place_inputs(model, x, y)
    xp = model.xp
    loss_sum = correct = None
    for i in range(0, x.shape[0], batch_size):
        j = min(i + batch_size, x.shape[0])
        xb, yb = prepare_inputs(x[i:j, ...], model), y[i:j]
        cache = model.forward(xb)
        l_b = model.loss(cache, yb) * xb.shape[0]
        c_b = F.accuracy_count(cache.output, yb, xp)
        loss_sum = l_b if loss_sum is None else loss_sum + l_b
        correct = c_b if correct is None else correct + c_b
    return loss_sum, correct


class Trainer:
    """Trains ``model`` with ``optimizer``; keeps the epoch, history and RNG for resuming.

    ``batch_size=None`` trains on the full batch each epoch (the paper's gradient
    descent). ``schedule`` maps a 0-based epoch to a learning rate. ``normalizer``
    replaces the sample count in the gradient's mean (the paper's quirk). With
    ``patience`` set, training stops once the validation loss has not improved for that
    many epochs and the best weights are restored.

    ``cuda_graphs`` (``auto``, ``on``, ``off``): on ``--device cuda`` an epoch's steps are
    captured once into a CUDA graph and replayed every epoch, also across :meth:`fit` calls
    while the data, shapes and configuration stay the same (:meth:`close` frees the graph;
    see :mod:`mlp_backend.training.runner`); ``auto`` runs eager where that cannot be done and
    logs why once, ``on`` raises instead, ``off`` never captures. Elsewhere ``auto`` is
    silently eager. After :meth:`fit`, :attr:`graph_status` is one line: ``captured: ...``
    or ``eager: <reason>``.

    ``dist`` (a :class:`mlp_backend.training.distributed.Distributed`, or None for one process)
    trains data-parallel: the loop calls it at fixed points (weights broadcast at the
    start of ``fit``, this rank's share of each batch, the gradient all-reduce after each
    backward pass, the metric sums once per epoch); only rank 0 logs and draws the bar.
    """

    def __init__(self, model: MLP, optimizer: Optimizer, *, batch_size: int | None = 128,
                 schedule: Callable[[int], float] | None = None, seed=0, shuffle: bool = True,
                 normalizer=None, patience: int | None = None, progress: str = "auto",
                 log: Callable[[str], None] = print, callbacks: Iterable[Callable] = (),
                 cuda_graphs: str = "auto", dist=None):
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None for the full batch, got {batch_size}")
        if progress not in ("auto", "bar", "lines", "none"):
            raise ValueError(f"progress must be auto, bar, lines or none, got {progress!r}")
        self.model, self.optimizer = model, optimizer
        self.batch_size, self.shuffle, self.normalizer = batch_size, shuffle, normalizer
        self.schedule = schedule or make_schedule("constant", optimizer.lr, 1)
        self.rng = host_rng(seed)
        self.patience, self.progress, self.log = patience, progress, log
        self.callbacks = list(callbacks)
        self.dist = dist
        if dist is not None and not dist.root:  # distributed: only rank 0 prints
            self.progress, self.log = "none", lambda msg: None
        self.epoch = 0
        self.history = History()
        self.best = None  # (val_loss, epoch, params) when early stopping
        self.stop_reason = ""
        self.cuda_graphs, self.graph_status = check_mode(cuda_graphs), ""
        self._runner = self._runner_key = None  # the epoch runner kept between fits

    # ----- what a step trains on: the public hooks of the epoch runner ---------------------
    def plan(self, n: int) -> EpochPlan:
        """The batches of every epoch over ``n`` training rows: minibatches of
        ``batch_size`` rows in the order :meth:`epoch_order` draws, or the full batch as it
        is; data-parallel, this rank's share of each global batch (scaled by the global
        batch's rows, as one process would)."""
        if self.dist is not None:
            _, bounds, rows = self.dist.shard_epoch(n, self.batch_size, None, shuffle=False)
            batches = tuple(Batch(a, b - a, self.normalizer or r, r) for (a, b), r in zip(bounds, rows))
            return EpochPlan(batches, False, bounds[-1][1])
        if self._whole(n):
            return EpochPlan((Batch(0, n, self.normalizer, n),), True, n)
        sizes = [(i, min(self.batch_size, n - i)) for i in range(0, n, self.batch_size)]
        return EpochPlan(tuple(Batch(i, m, self.normalizer, m) for i, m in sizes), False, n)

    def _whole(self, n: int) -> bool:
        """Whether every epoch over ``n`` rows is one full batch (one process)."""
        return self.batch_size is None or self.batch_size >= n

    def epoch_order(self, n: int):
        """This epoch's row order as host indices, drawn from the trainer's RNG (None for the
        full batch, which is used as it is)."""
        if self.dist is not None:
            return self.dist.shard_epoch(n, self.batch_size, self.rng, self.shuffle)[0]
        if self._whole(n):
            return None
        return self.rng.permutation(n) if self.shuffle else range(n)

    def targets(self, y):
        """The rows the loss compares with: one-hot rows for integer labels, built on the
        device once per (y, model dtype); 2-D targets as they are."""
        if y.ndim != 1:
            return y
        key = (id(y), y.shape, self.model.dtype_name, self.model.backend.label)
        if getattr(self, "_targets_key", None) != key:
            self._targets_key, self._targets_val = key, self.model.targets(y)
        return self._targets_val

    def make_step(self, x, y, ops=None) -> TrainingStep:
        """The training step over ``(x, y)`` (on the model's device) with kernels ``ops``
        (default: the model's); data-parallel, it all-reduces the gradients."""
        labels = y if y.ndim == 1 else self.model.xp.argmax(y, axis=1)  # accuracy of 2-D targets: their argmax
        reduce = self.dist.allreduce_grads if self.dist is not None else None
        return TrainingStep(self.model, self.optimizer, x, labels, self.targets(y), self.plan(x.shape[0]),
                            ops or self.model.ops, reduce)

    def train_epoch(self, x, y, bar=None):
        """One pass over ``(x, y)`` (on the model's device) by this trainer's epoch runner;
        returns ``(loss_sum, correct)`` as device scalars.

        The training metrics come from each step's own forward pass, before its update (as
        in the paper), so the full-batch mode runs the network once per epoch."""
        runner = self._epoch_runner(x, y)
        try:
            return runner.run(bar)
        finally:
            self.graph_status = runner.status

    # ----- the loop -------------------------------------------------------------------
    def fit(self, x, y, epochs: int, x_val=None, y_val=None) -> History:
        """Train until ``epochs`` epochs have run in total (a resumed trainer continues).

        ``x``/``y`` are uint8 pixels or floats and integer labels, on the model's device or
        host NumPy arrays, which are copied to the model's device once, here (float rows in
        the model's dtype); arrays on another device raise
        :class:`~mlp_backend.backends.placement.DeviceMismatchError`. Raises
        :class:`TrainingDiverged` on a NaN/inf loss. On Ctrl-C every callback's
        ``on_interrupt(trainer)`` runs before the KeyboardInterrupt propagates.
        """
        x, y = place_inputs(self.model, x, y)
        x_val, y_val = place_inputs(self.model, x_val, y_val, ("x_val", "y_val"))
        model = self.model
        n, has_val = x.shape[0], x_val is not None and x_val.shape[0] > 0
        self.stop_reason = ""
        if self.dist is not None:  # distributed: every rank starts from rank 0's weights
            self.dist.broadcast_params(model, self)
        if self.epoch < epochs:
            # the epoch runner: runs the step eagerly or replays a CUDA graph of it; kept for
            # the next fit while runner_key holds (no re-capture), freed on an exception
            runner = self._epoch_runner(x, y)
            try:
                self._fit_epochs(x, y, epochs, x_val, y_val, n, has_val)
            except BaseException:
                self.close()
                raise
            finally:
                self.graph_status = runner.status
        if self.best is not None and self.patience is not None:
            model.params = self.best[2]
            if self.stop_reason:
                self.log(f"early stopping: {self.stop_reason}; restored the weights of epoch {self.best[1]}")
        return self.history

    def _epoch_runner(self, x, y):
        """This trainer's runner for (x, y): the one kept from the last fit where nothing it
        was built for has changed (:func:`~mlp_backend.training.runner.runner_key`), else a
        new one (the old one closed first: one graph per trainer at most)."""
        key = runner_key(self, x, y, self.cuda_graphs)
        if self._runner is None or self._runner_key != key:
            self.close()
            self._runner = epoch_runner(self, x, y, self.cuda_graphs, self.log)
            self._runner_key = key
        self.graph_status = self._runner.status
        return self._runner

    def _validation_rows(self, x):
        """``prepare_inputs(x)``, made once and kept while the same array (the object itself,
        kept alive here so that its id cannot be reused) comes back for this model's dtype and
        device: the validation rows are the same every epoch, as the training rows are."""
        key = (self.model.dtype_name, self.model.backend.label)
        hit = self.__dict__.get("_val_rows")
        if hit is None or hit[0] is not x or hit[1] != key:
            hit = self._val_rows = (x, key, prepare_inputs(x, self.model))
        return hit[2]

    def close(self) -> None:
        """Free the epoch runner kept between fits (on CUDA: its graph, buffers and cuBLAS
        handle) and the prepared validation rows. Training again later makes them anew."""
        self.__dict__.pop("_val_rows", None)
        runner, self._runner, self._runner_key = self._runner, None, None
        if runner is not None:
            runner.close()

    def _fit_epochs(self, x, y, epochs, x_val, y_val, n, has_val):
        model, backend = self.model, self.model.backend
        try:
            while self.epoch < epochs:
                lr = self.optimizer.lr = float(self.schedule(self.epoch))
                t0 = time.perf_counter()
                bar = self._bar(epochs, n)
                loss_sum, correct = self.train_epoch(x, y, bar)
                sums = [loss_sum, model.xp.astype(correct, model.dtype)]
                if has_val:
                    vl, vc = evaluate(model, self._validation_rows(x_val), y_val)
                    sums += [vl, model.xp.astype(vc, model.dtype)]
                values = backend.to_numpy(model.xp.stack(sums))  # the epoch's one host sync
                if self.dist is not None:  # distributed: the training sums of all ranks (validation runs whole on each)
                    values = self.dist.allreduce_sum(values, first=2)
                seconds = time.perf_counter() - t0
                row = {"epoch": self.epoch + 1, "seconds": seconds, "lr": lr,
                       "train_loss": float(values[0]) / n, "train_accuracy": float(values[1]) / n}
                if has_val:
                    m = x_val.shape[0]
                    row.update(val_loss=float(values[2]) / m, val_accuracy=float(values[3]) / m)
                if bar is not None:
                    bar.set_postfix_str(self._summary(row, short=True))
                    bar.close()
                self.epoch += 1
                self.history.append(row)
                if not all(math.isfinite(v) for v in values.tolist()):
                    raise TrainingDiverged(
                        f"training diverged at epoch {row['epoch']}: the loss is {row['train_loss']} "
                        f"(lr {lr:g}). Lower the learning rate (--lr), use a scaled init (he, lecun), "
                        f"or use --optimizer adam")
                if self.progress == "lines" or (self.progress == "auto" and bar is None):
                    self.log(self._summary(row, epochs=epochs))
                for cb in self.callbacks:
                    if hasattr(cb, "on_epoch_end"):
                        cb.on_epoch_end(self, row)
                    elif callable(cb):
                        cb(self, row)
                if has_val and self.patience is not None and self._early_stop(row):
                    break
        except KeyboardInterrupt:
            for cb in self.callbacks:
                if hasattr(cb, "on_interrupt"):
                    cb.on_interrupt(self)
            raise

    def _early_stop(self, row) -> bool:
        val = row["val_loss"]
        if self.best is None or val < self.best[0]:
            xp = self.model.xp
            self.best = (val, row["epoch"], {k: xp.astype(v, v.dtype, copy=True)
                                              for k, v in self.model.params.items()})
            return False
        if row["epoch"] - self.best[1] >= self.patience:
            self.stop_reason = (f"validation loss has not improved for {self.patience} epochs "
                                f"(best {self.best[0]:.4f} at epoch {self.best[1]})")
            return True
        return False

    # ----- progress -------------------------------------------------------------------
    def _bar(self, epochs, n):
        use_bar = self.progress == "bar" or (self.progress == "auto" and sys.stderr.isatty())
        if not use_bar:
            return None
        from tqdm.auto import tqdm
        return tqdm(total=n, desc=f"epoch {self.epoch + 1}/{epochs}", unit="img", leave=True,
                    dynamic_ncols=True)

    @staticmethod
    def _summary(row, epochs=None, short=False) -> str:
        parts = [] if short else [f"epoch {row['epoch']}" + (f"/{epochs}" if epochs else "")]
        parts.append(f"loss {row['train_loss']:.4f} acc {row['train_accuracy']:.2%}")
        if "val_loss" in row:
            parts.append(f"val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.2%}")
        if not short:
            parts.append(f"lr {row['lr']:.3g}  {row['seconds']:.2f}s")
        return "  ".join(parts)

    # ----- resuming -------------------------------------------------------------------
    def state(self) -> dict:
        """Host-side state for checkpoints: epoch, history rows, RNG state."""
        return {"epoch": self.epoch, "history": list(self.history.rows),
                "rng_state": self.rng.bit_generator.state}

    def load_state(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.history = History(list(state.get("history", [])))
        self.rng.bit_generator.state = state["rng_state"]


def fit(model: MLP, optimizer: Optimizer, x, y, *, epochs: int, x_val=None, y_val=None,
        **trainer_kwargs) -> History:
    """Train ``model`` in one call; see :class:`Trainer` for the options."""
    return Trainer(model, optimizer, **trainer_kwargs).fit(x, y, epochs, x_val, y_val)


train = fit
