"""The training loop: minibatches or the full batch, metrics, early stopping, progress.

Data flow (see docs/architecture.md): pixels arrive on the device as uint8 rows, once.
Each step gathers a batch by index on the device and scales it to [0, 1] there;
loss and correct counts accumulate as device scalars; the host reads them back once
per epoch, in one transfer, for the history and the progress line. Nothing in a step
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
from mlp_backend.training.runner import check_mode, epoch_runner, runner_key
from mlp_backend.model import MLP
from mlp_backend.optim import Optimizer, make_schedule
from mlp_backend.backends.placement import place_inputs

PIXEL_SCALE = 1.0 / 255.0


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


def prepare_inputs(x, model: MLP):
    """Rows as the model's float dtype; integer pixels (0-255) are scaled to [0, 1]."""
    xp = model.xp
    if xp.isdtype(x.dtype, "integral"):
        return xp.astype(x, model.dtype) * PIXEL_SCALE
    return x if x.dtype == model.dtype else xp.astype(x, model.dtype)


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

    # ----- one epoch ------------------------------------------------------------------
    def _batches(self, n: int):
        """Index slices for one epoch: device index arrays, or None for the full batch."""
        if self.dist is not None:  # distributed: this rank's rows of every global batch, in order
            order, bounds, self._batch_rows = self.dist.shard_epoch(n, self.batch_size, self.rng, self.shuffle)
            perm = self._perm = self.model.backend.asarray(order, "int64")
            return [perm[a:b] for a, b in bounds]
        if self.batch_size is None or self.batch_size >= n:
            return [None]
        order = self.rng.permutation(n) if self.shuffle else range(n)
        perm = self._perm = self.model.backend.asarray(order, "int64")  # one host->device copy, no sync
        return [perm[i:min(i + self.batch_size, n)] for i in range(0, n, self.batch_size)]

    def train_epoch(self, x, y, bar=None):
        """One pass over (x, y); returns (loss_sum, correct) as device scalars.

        The training metrics come from each step's own forward pass, before its update
        (as in the paper), so the full-batch mode runs the network once per epoch.

        Each step gathers its rows from ``x`` as stored (uint8 pixels stay uint8 on the
        device) and scales them on the fly; labels become one-hot rows gathered from a
        table built once per data set. Where the backend reuses buffers (NumPy, CuPy) the
        batch, the activations, the gradients and the optimizer's temporaries live in
        preallocated buffers: a step allocates nothing.
        """
        model, xp, ops = self.model, self.model.xp, self.model.ops
        scale = PIXEL_SCALE if xp.isdtype(x.dtype, "integral") else None
        targets = self._targets(y)
        loss_sum = correct = None
        # Buffer-reusing backends with integer labels: each step only writes its predicted
        # classes into an epoch-long buffer; they are compared with the labels once, at the
        # end of the epoch (the labels are then gathered in the epoch's order, once).
        preds = self._preds(x.shape[0]) if ops.reuses_buffers and y.ndim == 1 else None
        pos = 0
        model.reuse_buffers = ops.reuses_buffers
        try:
            for k, idx in enumerate(self._batches(x.shape[0])):
                if idx is not None and idx.shape[0] == 0:  # distributed: no rows for this rank (short last batch)
                    self.optimizer.step(model.params, self.dist.allreduce_grads(None), xp)
                    continue
                if idx is None:
                    xb, yb, tb = self._full_batch(x), y, targets
                else:
                    buf = self._buffers(idx.shape[0], x, y, targets)
                    xb = ops.cast_scale(ops.gather_rows(x, idx, buf[0]), model.dtype, scale, buf[1])
                    yb = None if preds is not None else ops.gather_rows(y, idx, buf[2])
                    tb = ops.gather_rows(targets, idx, buf[3]) if yb is None or targets is not y else yb
                if self.dist is None:
                    loss, grads, cache = model.loss_and_grads(xb, tb, self.normalizer)
                else:  # distributed: scale by 1/(global batch rows), as one process does, then sum the ranks
                    loss, grads, cache = model.loss_and_grads(xb, tb, self.normalizer or self._batch_rows[k])
                    grads = self.dist.allreduce_grads(grads)
                self.optimizer.step(model.params, grads, xp)
                l_b = loss * xb.shape[0]
                loss_sum = l_b if loss_sum is None else loss_sum + l_b
                if idx is not None and preds is not None:
                    ops.argmax_rows(cache.output, preds[pos:pos + idx.shape[0]])
                    pos += idx.shape[0]
                else:
                    c_b = F.accuracy_count(cache.output, yb, xp)
                    correct = c_b if correct is None else correct + c_b
                if bar is not None:
                    bar.update(xb.shape[0] if self.dist is None else self._batch_rows[k])
        finally:
            model.reuse_buffers = False
        if pos:
            c_e = F.count_equal(preds[:pos], ops.gather_rows(y, self._perm[:pos]), xp)
            correct = c_e if correct is None else correct + c_e
        return loss_sum, correct

    def _preds(self, n):
        """An (n,) index buffer for the predicted classes of one epoch (reused)."""
        p = getattr(self, "_preds_buf", None)
        if p is None or p.shape[0] != n:
            ops = self.model.ops
            p = self._preds_buf = ops.empty((n,), self.model.xp.int64, self.model.backend.device)
        return p

    def _targets(self, y):
        """One-hot rows for integer labels, built on the device once per (y, model dtype)."""
        if y.ndim != 1:
            return y
        key = (id(y), y.shape, self.model.dtype_name, self.model.backend.label)
        if getattr(self, "_targets_key", None) != key:
            self._targets_key, self._targets_val = key, self.model.targets(y)
        return self._targets_val

    def _buffers(self, n, x, y, targets):
        """(uint8 rows, float rows, labels, target rows) buffers for batches of n rows, or Nones."""
        ops = self.model.ops
        if not ops.reuses_buffers:
            return (None, None, None, None)
        key = (n, x.shape[1:], x.dtype, y.shape[1:], y.dtype, targets.shape[1:], targets.dtype, self.model.backend.label)
        cache = self.__dict__.setdefault("_bufs", {})
        buf = cache.get(key)
        if buf is None:
            if len(cache) > 4:
                cache.clear()
            dev, dt = self.model.backend.device, self.model.dtype
            buf = cache[key] = (ops.empty((n, *x.shape[1:]), x.dtype, dev),
                                ops.empty((n, *x.shape[1:]), dt, dev),
                                ops.empty((n, *y.shape[1:]), y.dtype, dev),
                                ops.empty((n, *targets.shape[1:]), targets.dtype, dev))
        return buf

    def _full_batch(self, x):
        # Scaled once and kept: the full batch is the same every epoch.
        key = (id(x), x.shape)
        if getattr(self, "_full_key", None) != key:
            self._full_key, self._full_x = key, prepare_inputs(x, self.model)
        return self._full_x

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
            # the backend's epoch runner: replays a CUDA graph or runs train_epoch; kept for
            # the next fit while runner_key holds (no re-capture), freed on an exception
            runner = self._epoch_runner(x, y)
            try:
                self._fit_epochs(runner, x, y, epochs, x_val, y_val, n, has_val)
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
            scale = PIXEL_SCALE if self.model.xp.isdtype(x.dtype, "integral") else None
            self._runner = epoch_runner(self, x, y, self.cuda_graphs, scale, self.log)
            self._runner_key = key
        self.graph_status = self._runner.status
        return self._runner

    def close(self) -> None:
        """Free the epoch runner kept between fits (on CUDA: its graph, buffers and cuBLAS
        handle). Training again later simply builds a new one."""
        runner, self._runner, self._runner_key = self._runner, None, None
        if runner is not None:
            runner.close()

    def _fit_epochs(self, runner, x, y, epochs, x_val, y_val, n, has_val):
        model, backend = self.model, self.model.backend
        try:
            while self.epoch < epochs:
                lr = self.optimizer.lr = float(self.schedule(self.epoch))
                t0 = time.perf_counter()
                bar = self._bar(epochs, n)
                loss_sum, correct = runner.run(bar)
                self.graph_status = runner.status
                sums = [loss_sum, model.xp.astype(correct, model.dtype)]
                if has_val:
                    vl, vc = evaluate(model, x_val, y_val)
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
