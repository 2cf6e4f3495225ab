r"""The training step: the one place where a batch becomes an update of the weights.

Step ``i`` of an epoch, for the rows ``order[start:start + rows]`` of the training set:

1. **gather** the rows by index on the device and scale uint8 pixels to [0, 1] there;
2. **forward**: :math:`a_0 = x`, :math:`a_l = f_l(a_{l-1} W_l + b_l)` (:meth:`MLP.forward`);
3. **loss**: add the batch's loss times its rows to a device accumulator;
4. **backward**: every :math:`\partial L/\partial W_l`, :math:`\partial L/\partial b_l` (:meth:`MLP.backward`);
5. **reduce** the gradients over the ranks (data-parallel training only);
6. **update** the weights (:meth:`Optimizer.update`), its learning rate and step count read from
   row ``i`` of a device table written once per epoch;
7. **predict**: each row's class into an epoch-long buffer, compared with the labels once, at the
   end of the epoch.

:class:`TrainingStep` holds every buffer these write, made once (per batch size on the first
call), so a step allocates nothing where the kernels honour ``out=`` buffers, and on CuPy a
captured CUDA graph replays the same calls (:mod:`mlp_backend.training.runner` decides whether
it is captured). Per epoch the host sends two things: the permutation and the scalar table
(:meth:`TrainingStep.begin_epoch`); per step it sends nothing and waits for nothing.

A new ingredient of training (a regulariser, an augmentation) is a line in :meth:`__call__`
(plus its kernel where CuPy needs a fused one): the eager and the captured path both run it.
"""
from __future__ import annotations

from typing import NamedTuple

from mlp_backend import functional as F

PIXEL_SCALE = 1.0 / 255.0


def prepare_inputs(x, model):
    """Rows as the model's float dtype; integer pixels (0-255) are scaled to [0, 1]
    (``ops.cast_scale``: on NumPy one pass, with no float copy before the multiply)."""
    scale = PIXEL_SCALE if model.xp.isdtype(x.dtype, "integral") else None
    return model.ops.cast_scale(x, model.dtype, scale)


class Batch(NamedTuple):
    """Step ``i``'s rows: ``order[start:start + rows]``; ``normalizer`` replaces the row count
    in the gradient's mean (None: the rows); ``seen`` is what the progress bar counts."""
    start: int
    rows: int
    normalizer: "float | None"
    seen: int


class EpochPlan(NamedTuple):
    """The steps of every epoch (fixed while the data and batch size are) and whether the
    batch is the whole training set, used as it is (no permutation, no gather)."""
    batches: tuple
    full: bool
    rows: int  # len(order): the rows this process trains on per epoch


class TrainingStep:
    """Step ``i`` of the epoch :meth:`__call__` (see the module docstring) over buffers made once.

    ``model``, ``optimizer``: what is trained; ``x``, ``y``: the training rows and integer labels
    on the model's device; ``targets``: the rows the loss compares with (one-hot of ``y``);
    ``plan``: an :class:`EpochPlan`; ``ops``: the kernels (the model's, or a capturable set);
    ``reduce``: the gradients' all-reduce over ranks, or None for one process.
    """

    def __init__(self, model, optimizer, x, y, targets, plan: EpochPlan, ops, reduce=None):
        self.model, self.optimizer, self.ops, self.reduce = model, optimizer, ops, reduce
        self.x, self.y, self.targets, self.plan = x, y, targets, plan
        xp, dev, dt = model.xp, model.backend.device, model.dtype
        self.scale = PIXEL_SCALE if xp.isdtype(x.dtype, "integral") else None
        sizes = sorted({b.rows for b in plan.batches if b.rows})
        self.kernels = {m: model.kernels(m, ops) for m in sizes}  # each batch size's layer kernels and buffers
        if plan.full:
            self.x_full, self.perm, self.gathered = prepare_inputs(x, model), None, {}
        else:
            self.x_full = None
            self.gathered = {m: (ops.empty((m, *x.shape[1:]), x.dtype, dev), ops.empty((m, *x.shape[1:]), dt, dev),
                                 ops.empty((m, *targets.shape[1:]), targets.dtype, dev)) for m in sizes}
            self.perm = ops.copy_in(ops.empty((plan.rows,), xp.int64, dev), range(plan.rows))  # valid rows for a warm-up
        self.preds = ops.empty((plan.rows,), xp.int64, dev)
        self.loss_sum = ops.empty((), dt, dev)
        self.scalars = ops.empty((len(plan.batches), len(optimizer.SCALARS)), dt, dev)
        self.begin_epoch(None)

    def _bind_params(self):
        """The parameters and the optimizer state as the buffers this step updates in place
        (flat buffers where the kernels reuse them); values replaced since the last call (a
        checkpoint, early stopping's restore, a user's assignment) are copied into them."""
        params = self.model.bind_params()
        self.optimizer.bind(params, self.ops)
        return params

    # ----- once per epoch: what the host sends ------------------------------------------------
    def begin_epoch(self, order) -> None:
        """Copy this epoch's row order (host indices; None keeps the last) and the optimizer's
        scalars for each of its steps into their device buffers."""
        self.params = self._bind_params()
        if order is not None and self.perm is not None:
            self.perm = self.ops.copy_in(self.perm, order)
        t0, opt, steps = self.optimizer.t, self.optimizer, range(len(self.plan.batches))
        self.scalars = self.ops.copy_in(self.scalars, [opt.step_scalars(t0 + i + 1) for i in steps])
        self.rows = [self.scalars[i, :] for i in steps]  # views (of the same memory each epoch, on CuPy)

    # ----- the epoch's device work: what a CUDA graph captures -------------------------------
    def zero_sums(self) -> None:
        """Start the epoch's loss sum at zero (on the device: the first node of a captured epoch)."""
        self.loss_sum = self.ops.fill_(self.loss_sum, 0)

    def __call__(self, i: int) -> None:
        """Step ``i``: gather, forward, loss, backward, reduce, update, predict."""
        model, ops, batch = self.model, self.ops, self.plan.batches[i]
        if batch.rows == 0:  # data-parallel: this rank has no rows of a short last batch
            self.optimizer.update(self.params, self.reduce(None), ops, self.rows[i])
            return
        x, t = self._batch(batch)
        k = self.kernels[batch.rows]
        cache = model.forward(x, k)
        self.loss_sum = model.loss_sum_(cache, t, self.loss_sum, k)
        grads = model.backward(cache, t, batch.normalizer, k)
        if self.reduce is not None:
            grads = self.reduce(grads)
        self.optimizer.update(self.params, grads, ops, self.rows[i])
        self.preds = ops.argmax_into(cache.output, self.preds, batch.start)

    def _batch(self, batch: Batch):
        """(float rows, target rows) of ``batch``, gathered through the permutation."""
        if self.plan.full:
            return self.x_full, self.targets
        xu, xf, tbuf = self.gathered[batch.rows]
        idx = self.perm[batch.start:batch.start + batch.rows]
        x = self.ops.gather_cast_scale(self.x, idx, self.model.dtype, self.scale, xu, xf)
        return x, self.ops.gather_rows(self.targets, idx, tbuf)

    # ----- the epoch's results ---------------------------------------------------------------
    def correct(self):
        """Correct predictions of the epoch so far, a 0-d device array (labels in the epoch's order)."""
        labels = self.y if self.plan.full else self.ops.gather_rows(self.y, self.perm)
        return F.count_equal(self.preds, labels, self.model.xp)

    def release(self) -> None:
        """Drop every buffer (the parameters and optimizer state stay the model's and optimizer's)."""
        self.gathered = self.kernels = self.perm = self.preds = self.scalars = self.rows = None
        self.loss_sum = self.x_full = self.targets = self.x = self.y = None
