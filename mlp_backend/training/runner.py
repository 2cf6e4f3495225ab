"""The epoch runner: an epoch's steps over buffers that never move, replayed as one CUDA graph on CuPy.

:class:`~mlp_backend.training.trainer.Trainer` asks :func:`epoch_runner` for a runner once per
``fit`` and calls ``runner.run(bar)`` once per epoch; it gets back ``(loss_sum, correct)``
as device scalars and does not know whether they came from a replayed graph.

* :class:`EagerRunner` runs ``Trainer.train_epoch``: today's path, on every device.
* :class:`StaticRunner` is the graph-ready epoch: every buffer allocated once; the host
  RNG's permutation copied into a persistent device buffer and the rows gathered (and
  uint8 pixels scaled) inside the step; the learning rate and Adam's bias-corrected step
  read from a per-step device table written before each epoch; the loss summed into a
  device accumulator; the predicted classes written into an epoch-long buffer and
  compared with the labels once. It runs eagerly on any buffer-reusing backend (the CPU
  tests run it on NumPy, where it gives bitwise the parameters of ``train_epoch``).
* :class:`GraphRunner` runs the same steps on CuPy on a private stream with
  :class:`~mlp_backend.backends.cupy_ops.CupyGraphOps` (GEMMs on a cuBLAS handle of
  nvmath-python), warms up on every step shape (parameters and state restored after),
  captures the whole epoch into one CUDA graph on the first epoch and replays it.

Re-capture rules: a runner's graph fixes what :func:`runner_key` lists -- the data
arrays, the shapes, the batch size, the optimizer object and its hyper-parameters other
than the learning rate, the model's architecture, dtype and device, the normaliser, the
distributed context and the mode. The trainer keeps its one runner from ``fit`` to ``fit`` while that key holds
(so ``fit(x, y, trainer.epoch + 1)`` called epoch by epoch captures once) and builds a new
one, freeing the old (graph, buffers, cuBLAS handle), when it changes; ``Trainer.close()``,
an exception inside ``fit`` or dropping the trainer frees it too, so a trainer holds at
most one graph. Nothing else re-captures: schedules change only the device table, and
parameters or optimizer state replaced between epochs or fits (a checkpoint, early
stopping's restore) are copied into the captured buffers before the next replay. A runner
refers to its trainer weakly, so dropping the trainer frees the runner at once.
"""
from __future__ import annotations

import gc
import json
import weakref

import numpy as np

from mlp_backend import functional as F
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
    the device table carries."""
    model, opt = trainer.model, trainer.optimizer
    hyper = {k: v for k, v in opt.config().items() if k != "lr"}
    return (mode, id(x), tuple(x.shape), str(x.dtype), id(y), tuple(y.shape), str(y.dtype),
            trainer.batch_size, trainer.normalizer, id(opt), json.dumps(hyper, sort_keys=True, default=str),
            model.sizes, model.activations, model.output, model.loss_name, model.dtype_name,
            model.backend.label, id(getattr(trainer, "dist", None)))


def epoch_runner(trainer, x, y, mode: str = "auto", scale=None, log=print):
    """The runner for ``trainer.fit(x, y, ...)``: a :class:`GraphRunner` where ``mode``
    allows and the fit can be captured, else an :class:`EagerRunner` whose ``status``
    says why (logged once on CUDA with ``auto``). ``on`` raises :class:`GraphUnavailable`
    where it cannot capture. ``scale`` multiplies integer pixels (1/255)."""
    check_mode(mode)
    if mode == "off":
        return EagerRunner(trainer, x, y, "eager: cuda_graphs='off'")
    why = graph_blocker(trainer, x, y)
    if why is None:
        try:
            return GraphRunner(trainer, x, y, scale, strict=mode == "on", log=log)
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
    """Each epoch is ``trainer.train_epoch(x, y, bar)``: the eager path, unchanged."""

    def __init__(self, trainer, x, y, status: str):
        self.trainer, self.x, self.y, self.status = weakref.proxy(trainer), x, y, status

    def run(self, bar=None):
        return self.trainer.train_epoch(self.x, self.y, bar)

    def close(self) -> None:
        self.trainer = self.x = self.y = None


class StaticRunner:
    """The graph-ready epoch (see the module docstring), run eagerly with ``ops``."""

    def __init__(self, trainer, x, y, scale, ops):
        self.trainer, self.model, self.opt, self.ops = weakref.proxy(trainer), trainer.model, trainer.optimizer, ops
        self.x, self.y, self.scale = x, y, scale
        n = self.n = x.shape[0]
        bs = trainer.batch_size
        self.full = bs is None or bs >= n
        self.steps = [(0, n)] if self.full else [(i, min(bs, n - i)) for i in range(0, n, bs)]
        self.status = self._describe("eager (graph-ready steps)")
        self._alloc()

    def _describe(self, head: str) -> str:
        m, opt = self.model, self.opt
        if self.full:
            shape = f"full batch of {self.n} rows"
        else:
            bs, last = self.steps[0][1], self.steps[-1][1]
            k = len(self.steps) - (last != bs)
            shape = f"{k} x {bs} rows" + (f" + 1 x {last} rows" if last != bs else "")
        return f"{head}: {len(self.steps)} steps per epoch ({shape}), {opt.name}, {m.dtype_name}"

    # ----- buffers, made once --------------------------------------------------------
    def _alloc(self):
        model, opt, ops, tr = self.model, self.opt, self.ops, self.trainer
        xp, dev, dt = model.xp, model.backend.device, model.dtype
        self.targets = tr._targets(self.y)
        p = self.params = model.flat_params()
        if getattr(p, "flat", None) is None:
            raise BackendError(f"the epoch runner needs buffer-reusing kernels; {type(ops).__name__} has none")
        self.param_views, self.layout = dict(p), p.layout
        self.state, self.state_views = {}, {}
        for kind in opt.buffer_names:
            opt._flat_state(kind, p, ops)
            self.state[kind] = opt.state[kind]
            self.state_views[kind] = dict(opt.state[kind])
        opt._scratch("__flat__", p.flat, ops)
        sizes = sorted({m for _, m in self.steps})
        self.ws = {m: model.workspace(m) for m in sizes}
        x, t = self.x, self.targets
        if self.full:
            self.x_full = tr._full_batch(x)
            self.bufs, self.perm, self.idx = {}, None, None
        else:
            self.bufs = {m: (ops.empty((m, *x.shape[1:]), x.dtype, dev), ops.empty((m, *x.shape[1:]), dt, dev),
                             ops.empty((m, *t.shape[1:]), t.dtype, dev)) for m in sizes}
            self.perm = ops.empty((self.n,), xp.int64, dev)
            ops.copy_in(self.perm, np.arange(self.n, dtype=np.int64))  # valid rows for any warm-up
            self.idx = [self.perm[s:s + m] for s, m in self.steps]
        self.preds = ops.empty((self.n,), xp.int64, dev)
        self.pred_views = [self.preds[s:s + m] for s, m in self.steps]
        self.acc = ops.fill_(ops.empty((), dt, dev), 0)
        self.table = ops.empty((len(self.steps), len(opt.SCALARS)), dt, dev)
        self.host_table = np.empty(tuple(self.table.shape), np.float64)
        self.rows = [self.table[i] for i in range(len(self.steps))]
        self._write_table()

    def _write_table(self):
        """The optimizer's scalars for every step of the coming epoch (float64 on the host,
        cast once to the parameters' dtype on the way to the device)."""
        t0, opt = self.opt.t, self.opt
        for i in range(len(self.steps)):
            self.host_table[i] = opt.step_scalars(t0 + i + 1)
        self.ops.copy_in(self.table, self.host_table)

    def _adopt(self):
        """Parameters or optimizer state replaced since the buffers were made (a checkpoint,
        early stopping's restore, a user's assignment) are copied into them, and the model
        and optimizer point at the runner's flat buffers again."""
        from mlp_backend.backends.numpy_ops import FlatDict
        model, opt, ops = self.model, self.opt, self.ops
        p = model.params
        if p is not self.params or p.flat is None:
            if set(p) != set(self.param_views):
                raise BackendError(f"the parameters changed from {sorted(self.param_views)} to {sorted(p)} "
                                   "during a fit; start a new fit")
            for k, v in p.items():
                if v is not self.param_views[k]:
                    ops.m.copyto(self.param_views[k], v)
            self.params = FlatDict(self.param_views, self.params.flat, self.layout)
            model.params = self.params
        for kind, mine in self.state.items():
            st = opt.state.get(kind)
            if st is mine and mine.flat is not None:
                continue
            for k, v in self.state_views[kind].items():
                src = (st or {}).get(k)
                if src is None:
                    ops.fill_(v, 0)
                elif src is not v:
                    ops.m.copyto(v, src)
            self.state[kind] = opt.state[kind] = FlatDict(self.state_views[kind], mine.flat, self.layout)

    # ----- an epoch -------------------------------------------------------------------
    def _new_epoch(self):
        """This epoch's permutation (the host RNG, exactly as ``Trainer._batches`` draws it)
        and schedule scalars, copied into the persistent device buffers."""
        tr = self.trainer
        if not self.full:
            order = tr.rng.permutation(self.n) if tr.shuffle else np.arange(self.n)
            self.ops.copy_in(self.perm, np.asarray(order, dtype=np.int64))
        self._write_table()

    def _step(self, i):
        """Step ``i`` of the epoch: gather, forward, loss sum, backward, update, predictions.
        The same kernel calls as ``Trainer.train_epoch``'s step, over fixed buffers."""
        start, m = self.steps[i]
        model, ops = self.model, self.ops
        if self.full:
            xb, tb = self.x_full, self.targets
        else:
            idx, (xu, xf, tbuf) = self.idx[i], self.bufs[m]
            xb = ops.gather_cast_scale(self.x, idx, model.dtype, self.scale, xu, xf)
            tb = ops.gather_rows(self.targets, idx, tbuf)
        ws = self.ws[m]
        cache = model.forward(xb, ws, ops)
        model.loss_sum_(cache, tb, self.acc, ws, ops)
        grads = model.backward(cache, tb, self.trainer.normalizer, ws, ops)
        self.opt.step_device(self.params, grads, ops, self.rows[i])
        ops.argmax_rows(cache.output, self.pred_views[i])

    def _steps(self):
        """The whole epoch's device work: what a graph captures."""
        self.ops.fill_(self.acc, 0)
        for i in range(len(self.steps)):
            self._step(i)

    def _correct(self):
        """Correct predictions of the epoch, a 0-d device array (labels in the epoch's order)."""
        xp = self.model.xp
        labels = self.y if self.full else self.ops.gather_rows(self.y, self.perm)
        return F.count_equal(self.preds, labels, xp)

    def run(self, bar=None):
        """One epoch; returns (loss_sum, correct) as device scalars. No host sync."""
        self._adopt()
        self._new_epoch()
        self._steps()
        self.opt.t += len(self.steps)
        correct = self._correct()
        if bar is not None:
            bar.update(self.n)
        return self.acc, correct

    def close(self) -> None:
        """Drop every buffer of the runner (parameters and optimizer state stay the model's)."""
        self.bufs = self.ws = self.perm = self.idx = self.preds = self.pred_views = None
        self.table = self.rows = self.acc = self.x_full = self.targets = None
        self.trainer = self.x = self.y = None


def _refuse_allocation(nbytes):
    raise BackendError(f"a {nbytes}-byte device allocation during CUDA graph capture: every buffer of a "
                       "captured step must exist before the capture (a bug in mlp_backend: please report it)")


class GraphRunner(StaticRunner):
    """:class:`StaticRunner` on CuPy, captured into one CUDA graph on the first epoch and
    replayed after. ``capture = False`` (a class switch for tests) runs the same steps
    eagerly on the same stream and handle. A capture that fails raises with ``strict``
    (``cuda_graphs='on'``), else logs one line and trains eagerly (``train_epoch``)."""

    capture = True

    def __init__(self, trainer, x, y, scale, strict=False, log=print):
        import cupy
        from mlp_backend.backends.cupy_ops import CupyGraphOps
        self.cp, self.strict, self.log = cupy, strict, log
        self.device = trainer.model.backend.device
        self.graph, self.fallback, self.x_user = None, False, x
        with self.device:
            self.stream = cupy.cuda.Stream(non_blocking=True)
            ops = CupyGraphOps(trainer.model.xp, cupy, self.stream)
            try:
                # the graph's buffers are made and filled on its stream; the caller's
                # stream (which made x and the parameters) goes first
                self.stream.wait_event(cupy.cuda.get_current_stream().record())
                with self.stream:
                    super().__init__(trainer, cupy.ascontiguousarray(x), y, scale, ops)
            except BaseException:
                ops.close()
                raise
            # ... and the caller's stream waits for them: whatever it does next with the
            # parameters (now views of the flat buffers made here) or the data comes after
            cupy.cuda.get_current_stream().wait_event(self.stream.record())
        self.status = self._describe("captured (at the first epoch)" if self.capture else
                                     "eager (graph-ready steps, capture switched off)")

    def _warm_up(self):
        """One eager step of each shape (kernels compiled, cuBLAS initialised, ones rows
        made) on copies of nothing: the parameters, the optimizer state and the
        accumulators are saved before and restored after, so the run's results do not
        depend on it."""
        flats = [self.params.flat, *(st.flat for st in self.state.values())]
        saved = [f.copy() for f in flats]
        try:
            firsts = {}
            for i, (_, m) in enumerate(self.steps):
                firsts.setdefault(m, i)
            for i in firsts.values():
                self._step(i)
        finally:
            for f, s in zip(flats, saved):
                self.cp.copyto(f, s)
            self.ops.fill_(self.acc, 0)

    def _capture(self):
        s, cp = self.stream, self.cp
        # No garbage collection while capturing: an unreachable runner collected there
        # would destroy its cuBLAS handle, and cublasDestroy synchronises the device, which
        # is invalid while a stream captures (it would invalidate this capture).
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            with cp.cuda.using_allocator(_refuse_allocation):
                s.begin_capture()
                try:
                    self._steps()
                except BaseException:
                    try:  # end the capture whatever happened, and report the first error
                        s.end_capture()
                    except Exception:
                        pass
                    raise
                self.graph = s.end_capture()
        finally:
            if was_enabled:
                gc.enable()

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
            self.fallback, self.status = True, f"eager: {why}"
            self.log(f"cuda graphs: {self.status}")

    def run(self, bar=None):
        if self.fallback:
            return self.trainer.train_epoch(self.x_user, self.y, bar)
        cp, s = self.cp, self.stream
        with self.device:
            outer = cp.cuda.get_current_stream()
            s.wait_event(outer.record())  # whatever the caller queued (a restore, a copy) first
            try:
                with s:
                    self._adopt()
                    if self.capture and self.graph is None:
                        self._try_capture()
                    if not self.fallback:
                        self._new_epoch()
                        if self.graph is not None:
                            self.graph.launch(stream=s)
                        else:
                            self._steps()
                        self.opt.t += len(self.steps)
                        result = self.acc, self._correct()
            finally:
                outer.wait_event(s.record())  # the caller's next reads come after the epoch
        if self.fallback:
            return self.trainer.train_epoch(self.x_user, self.y, bar)
        if bar is not None:
            bar.update(self.n)
        return result

    def close(self) -> None:
        """Free the graph, the buffers and the cuBLAS handle (which waits for the device)."""
        self.graph = None
        ops = self.ops
        super().close()
        if ops is not None:
            with self.device:
                ops.close()
        self.ops = None
