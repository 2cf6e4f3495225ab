"""The epoch runner: runs the training step over an epoch, eagerly or as one replayed CUDA graph.

:class:`~mlp_backend.training.trainer.Trainer` asks :func:`epoch_runner` for a runner once
per ``fit`` and calls ``runner.run(bar)`` once per epoch; it gets back ``(loss_sum,
correct)`` as device scalars and does not know whether they came from a replayed graph.
Both runners run the same :class:`~mlp_backend.training.step.TrainingStep`:

* :class:`EagerRunner` calls the step for each batch in a Python loop, on every backend (the
  progress bar moves after each step).
* :class:`GraphRunner` (CuPy) makes the step with the capturable kernels on a private stream
  (:class:`~mlp_backend.backends.capture.GraphStream`), warms up on every step shape
  (parameters and state restored after), captures the whole epoch's steps into one CUDA
  graph on the first epoch and replays it after.

Re-capture rules: a runner's graph fixes what :func:`runner_key` lists -- the data arrays,
the shapes, the batch size, the optimizer object and its hyper-parameters other than the
learning rate, the model's architecture, dtype and device, the normaliser, the distributed
context and the mode. The trainer keeps its one runner from ``fit`` to ``fit`` while that
key holds (so ``fit(x, y, trainer.epoch + 1)`` called epoch by epoch captures once) and
builds a new one, freeing the old (graph, buffers, cuBLAS handle), when it changes;
``Trainer.close()``, an exception inside ``fit`` or dropping the trainer frees it too, so a
trainer holds at most one graph. Nothing else re-captures: schedules change only the step's
scalar table, and parameters or optimizer state replaced between epochs or fits (a
checkpoint, early stopping's restore) are copied into the step's buffers before the next
epoch (:meth:`MLP.bind_params`, :meth:`Optimizer.bind`). A runner refers to its trainer
weakly, so dropping the trainer frees the runner at once.
"""
from __future__ import annotations

import json
import weakref

from mlp_backend.backends.devices import BackendError

MODES = ("auto", "on", "off")
NOT_CUDA = "CUDA graphs apply to --device cuda only"
FIX = "use cuda_graphs='auto' (captures where it can, else runs eager and says why) or 'off'"


class GraphUnavailable(BackendError):
    """``cuda_graphs='on'`` where this fit cannot be captured; the message says why and what to do."""


def check_mode(mode) -> str:
    """``mode`` if it is one of :data:`MODES`, else a ValueError naming the choices."""
    if mode not in MODES:
        raise ValueError(f"cuda_graphs must be 'auto', 'on' or 'off', got {mode!r}")
    return mode


def graph_blocker(trainer, x, y) -> "str | None":
    """Why this fit cannot run as a captured CUDA graph (None when it can)."""
    model = trainer.model
    if model.backend.name != "cupy":
        return NOT_CUDA
    if getattr(trainer, "dist", None) is not None:  # mlp_backend.training.distributed
        return "distributed training: the gradients are all-reduced between the steps"
    if not model.ops.fused:
        return "the portable kernels are forced (MLP_BACKEND_PORTABLE=1 is set)"
    if y.ndim != 1 or not model.xp.isdtype(y.dtype, "integral"):
        return "the targets are not 1-D integer class labels"
    if x.ndim != 2:
        return f"the inputs are not 2-D rows (shape {tuple(x.shape)})"
    from mlp_backend.backends.cupy_ops import graph_blocker as ops_blocker
    return ops_blocker(model)


def runner_key(trainer, x, y, mode: str) -> tuple:
    """What a runner (and its graph) is built for: while this key is unchanged, the
    trainer's runner is reused from one ``fit`` to the next; a change re-captures. The data
    arrays count by identity (a runner keeps them alive, so an identity is never reused);
    the optimizer by identity and by every hyper-parameter except the learning rate, which
    the step's scalar table carries."""
    model, opt = trainer.model, trainer.optimizer
    hyper = {k: v for k, v in opt.config().items() if k != "lr"}
    return (mode, id(x), tuple(x.shape), str(x.dtype), id(y), tuple(y.shape), str(y.dtype),
            trainer.batch_size, trainer.normalizer, id(opt), json.dumps(hyper, sort_keys=True, default=str),
            model.sizes, model.activations, model.output, model.loss_name, model.dtype_name,
            model.backend.label, id(getattr(trainer, "dist", None)))


def epoch_runner(trainer, x, y, mode: str = "auto", log=print):
    """The runner for ``trainer.fit(x, y, ...)``: a :class:`GraphRunner` where ``mode``
    allows and the fit can be captured, else an :class:`EagerRunner` whose ``status``
    says why (logged once on CUDA with ``auto``). ``on`` raises :class:`GraphUnavailable`
    where it cannot capture."""
    check_mode(mode)
    if mode == "off":
        return EagerRunner(trainer, x, y, "eager: cuda_graphs='off'")
    why = graph_blocker(trainer, x, y)
    if why is None:
        try:
            return GraphRunner(trainer, x, y, strict=mode == "on", log=log)
        except Exception as exc:  # a handle, stream or buffer that could not be made
            if mode == "on":
                raise GraphUnavailable(f"cuda_graphs='on': setting up the CUDA graph failed "
                                       f"({type(exc).__name__}: {exc}); {FIX}") from exc
            why = f"setting up the CUDA graph failed ({type(exc).__name__}: {exc})"
    if mode == "on":
        raise GraphUnavailable(f"cuda_graphs='on' cannot capture this run: {why}; {FIX}")
    runner = EagerRunner(trainer, x, y, f"eager: {why}")
    if why != NOT_CUDA:
        log(f"cuda graphs: {runner.status}")
    return runner


class EagerRunner:
    """Each epoch calls ``trainer``'s training step for every batch in a Python loop.

    ``ops`` replaces the model's kernels (tests run the capturable ones eagerly)."""

    def __init__(self, trainer, x, y, status: str, ops=None):
        proxy = trainer if isinstance(trainer, weakref.ProxyType) else weakref.proxy(trainer)
        self.trainer, self.x, self.y = proxy, x, y
        self.step = trainer.make_step(x, y, ops)
        self.status = status

    def _describe(self, head: str) -> str:
        plan, m, opt = self.step.plan, self.step.model, self.step.optimizer
        sizes = [b.rows for b in plan.batches]
        if plan.full:
            shape = f"full batch of {sizes[0]} rows"
        else:
            bs, last = sizes[0], sizes[-1]
            k = len(sizes) - (last != bs)
            shape = f"{k} x {bs} rows" + (f" + 1 x {last} rows" if last != bs else "")
        return f"{head}: {len(sizes)} steps per epoch ({shape}), {opt.name}, {m.dtype_name}"

    def _begin(self) -> None:
        """This epoch's row order (the trainer's RNG) and scalars into the step's buffers."""
        self.step.begin_epoch(self.trainer.epoch_order(self.x.shape[0]))

    def _steps(self, bar=None) -> None:
        """The epoch's device work: the loss sum zeroed, then every step in order (with
        ``bar``, counted after each). What a CUDA graph captures."""
        step = self.step
        step.zero_sums()
        for i, batch in enumerate(step.plan.batches):
            step(i)
            if bar is not None and batch.rows:
                bar.update(batch.seen)

    def _end(self):
        """(loss_sum, correct) of the epoch; the optimizer's step count moves past it."""
        self.step.optimizer.t += len(self.step.plan.batches)
        return self.step.loss_sum, self.step.correct()

    def run(self, bar=None):
        """One epoch; returns (loss_sum, correct) as device scalars. No host sync."""
        self._begin()
        self._steps(bar)
        return self._end()

    def close(self) -> None:
        """Drop every buffer of the step (parameters and optimizer state stay the model's)."""
        if self.step is not None:
            self.step.release()
        self.step = self.trainer = self.x = self.y = None


class GraphRunner(EagerRunner):
    """The step on CuPy's capturable kernels, captured into one CUDA graph at the first
    epoch and replayed after. ``capture = False`` (a class switch for tests) runs the same
    steps eagerly on the same stream and handle. A capture that fails raises with
    ``strict`` (``cuda_graphs='on'``), else logs one line and trains eagerly with the
    model's own kernels."""

    capture = True

    def __init__(self, trainer, x, y, strict=False, log=print):
        from mlp_backend.backends.capture import GraphStream
        self.strict, self.log = strict, log
        self.graph = self.fallback = None
        self.gs = GraphStream(trainer.model.backend.device, trainer.model.xp)
        try:
            with self.gs.ordered():  # the buffers are made and filled on the graph's stream
                super().__init__(trainer, self.gs.contiguous(x), y, "", self.gs.ops)
        except BaseException:
            self.gs.close()
            raise
        self.ops, self.x_user = self.gs.ops, x
        self.status = self._describe("captured (at the first epoch)" if self.capture else
                                     "eager (graph-ready steps, capture switched off)")

    def _warm_up(self):
        """One eager step of each shape (kernels compiled, cuBLAS initialised, ones rows
        made) on copies of nothing: the parameters and the optimizer state are saved before
        and restored after, so the run's results do not depend on it (the loss sum starts
        at zero in every epoch's steps anyway)."""
        step, ops, xp = self.step, self.ops, self.step.model.xp
        flats = [step.params.flat, *(step.optimizer.state[k].flat for k in step.optimizer.buffer_names)]
        saved = [xp.asarray(f, copy=True) for f in flats]
        try:
            firsts = {}
            for i, batch in enumerate(step.plan.batches):
                firsts.setdefault(batch.rows, i)
            for i in firsts.values():
                step(i)
        finally:
            for f, s in zip(flats, saved):
                ops.copy_(f, s)

    def _capture(self):
        self.graph = self.gs.capture(self._steps)

    def _try_capture(self):
        try:
            self._warm_up()
            self._capture()
            self.status = self._describe("captured: one CUDA graph per epoch")
        except Exception as exc:
            self.graph = None
            why = f"the CUDA graph capture failed ({type(exc).__name__}: {exc})"
            if self.strict:
                raise GraphUnavailable(f"cuda_graphs='on': {why}; {FIX}") from exc
            self.status = f"eager: {why}"
            self.log(f"cuda graphs: {self.status}")
            self.fallback = EagerRunner(self.trainer, self.x_user, self.y, self.status)

    def run(self, bar=None):
        if self.fallback is None:
            with self.gs.ordered():
                if self.capture and self.graph is None:
                    self._try_capture()
                if self.fallback is None:
                    self._begin()
                    if self.graph is not None:
                        self.gs.launch(self.graph)
                    else:
                        self._steps()
                    result = self._end()
        if self.fallback is not None:  # the capture failed: the same step, eagerly, on the model's kernels
            return self.fallback.run(bar)
        if bar is not None:
            bar.update(self.x.shape[0])
        return result

    def close(self) -> None:
        """Free the graph, the buffers and the cuBLAS handle (which waits for the device)."""
        self.graph = None
        if self.fallback is not None:
            self.fallback.close()
        super().close()
        self.gs.close()
        self.ops = None
