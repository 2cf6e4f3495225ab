"""One rank's part in data-parallel training over MPI: joining the job, its share of
every batch, the collectives the training loop calls, and ending the job when a rank fails.

Launch N ranks with ``mpiexec -n N mlp-backend train ...`` (or ``mpiexec -n N python
script.py`` with :func:`init`), or let ``mlp-backend train --ranks N`` run ``mpiexec``
(:mod:`mlp_backend.apps.launch`, which finds MPI with :func:`have_mpi4py` and
:func:`find_mpiexec`). A process that was not started by ``mpiexec`` with more than one
rank never imports MPI: :func:`init` returns ``None`` and the trainer runs alone, unchanged.

What N ranks compute is what one process computes with the same global batch B:

* every rank holds the whole training set and draws the epoch's permutation from the
  same seed, so all ranks agree on the global batches; rank r trains on its contiguous
  share of each one (:func:`shard_bounds`: B/N rows, the first ``B % N`` ranks one more;
  a short last batch splits unevenly and may leave a rank none);
* each rank's backward pass scales its rows by 1/B (the *global* batch), exactly the
  factor one process applies to the same rows, and the ranks' gradients are summed:
  one all-reduce per step, no second division;
* every rank then runs the same optimizer step on the same summed gradient, so weights
  and optimizer state stay identical everywhere; the epoch's loss and accuracy sums are
  reduced once per epoch; only rank 0 prints and writes files.

Transports (:attr:`Distributed.transport`, also in ``metrics.json``):

``mpi``       NumPy arrays reduced in place over MPI (mpi4py)
``nccl``      CuPy arrays reduced on the GPU with NCCL (``cupy.cuda.nccl``; the unique
              id is broadcast over MPI), one GPU per rank
``mpi-host``  device arrays copied to the host, reduced over MPI and copied back: CuPy
              where NCCL is unavailable or ranks share a GPU (``reason`` says which), and
              the portable backends (torch, array_api_strict)

Failure handling: an exception on one rank prints ``error on rank r of N: ...``, waits
(at most 1 s) until ``mpiexec`` has read it, and calls ``MPI_Abort``, which ends every
rank (a killed rank ends the job through ``mpiexec`` itself); a training-step or epoch
collective that waits longer than ``$MLP_BACKEND_DIST_TIMEOUT`` seconds (default 300; 0
waits forever) for the other ranks aborts the job with a message saying so, so a hung rank
cannot hang the others. (The start-up, where ranks load data at their own pace, waits
without a limit.)

Set-up: ``pip install 'mlp-backend[mpi]'`` (mpi4py and the MPICH wheel, which brings
``mpiexec``).
"""
from __future__ import annotations

import os
import shutil
import stat
import struct
import sys
import time
import traceback
from contextlib import contextmanager, nullcontext
from importlib.util import find_spec
from pathlib import Path

import numpy as np  # host side: index arithmetic and host buffers for MPI

from mlp_backend.backends import ENV_DEVICE, BackendError, get_backend

__all__ = ["Distributed", "DistributedError", "init", "launched_size", "have_mpi4py", "find_mpiexec",
           "shard_bounds", "guard", "INSTALL_HINT", "ENV_TIMEOUT"]

INSTALL_HINT = "pip install 'mlp-backend[mpi]' (mpi4py and the mpich wheel, which brings mpiexec)"
ENV_TIMEOUT = "MLP_BACKEND_DIST_TIMEOUT"
ENV_NCCL = "MLP_BACKEND_NCCL"  # 0: never use NCCL (host buffers over MPI instead)
DEFAULT_TIMEOUT = 300.0
# What launchers set for every rank: MPICH/Intel MPI (hydra), Open MPI, MVAPICH.
SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


class DistributedError(BackendError):
    """Distributed training cannot run as asked; the message says why and what to do."""


# ----- the launcher and MPI: what is installed, what mpiexec set (no MPI import) ----------

def launched_size() -> int:
    """The number of ranks ``mpiexec`` started this process with (1 when it did not),
    read from the launcher's environment without importing MPI."""
    for var in SIZE_VARS:
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 1


def have_mpi4py() -> bool:
    """Whether mpi4py is installed, found without importing it (so MPI does not start)."""
    try:
        return find_spec("mpi4py") is not None
    except (ImportError, ValueError):  # ValueError: a module entry without a spec (blocked)
        return False


def find_mpiexec() -> "str | None":
    """``mpiexec`` next to this Python (the MPI wheels put it there), else on ``PATH``."""
    here = Path(sys.executable).with_name("mpiexec")
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("mpiexec") or shutil.which("mpirun")


def _mpi():
    """``mpi4py.MPI``, or a DistributedError saying what to install."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedError(f"distributed training needs mpi4py: {INSTALL_HINT} ({exc})") from None
    except RuntimeError as exc:  # mpi4py without an MPI library it can load
        raise DistributedError(f"mpi4py cannot load an MPI library ({str(exc).splitlines()[0]}): "
                               f"{INSTALL_HINT}") from None
    return MPI


def init(comm=None, *, timeout: "float | None" = None, abort_on_error: bool = True) -> "Distributed | None":
    """This process's place in a data-parallel job, or ``None`` when it runs alone.

    Without ``comm``, MPI is imported only if ``mpiexec`` started more than one rank
    (:func:`launched_size`); then ``comm`` is ``MPI.COMM_WORLD``. ``abort_on_error``
    installs a ``sys.excepthook`` that prints the traceback with the rank and calls
    ``MPI_Abort``, so an exception on one rank ends the whole job instead of leaving the
    others waiting.
    """
    if comm is None:
        if launched_size() <= 1:
            return None
        comm = _mpi().COMM_WORLD
    dist = Distributed(comm, timeout=timeout)
    if abort_on_error:
        dist.install_excepthook()
    return dist


# ----- sharding -------------------------------------------------------------------------

def shard_bounds(start: int, stop: int, rank: int, size: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous share of rows ``[start, stop)`` split over ``size``
    ranks: ``(stop - start) // size`` rows each, one more for the first ``% size``."""
    q, r = divmod(stop - start, size)
    lo = start + rank * q + min(rank, r)
    return lo, lo + q + (rank < r)


# ----- failure --------------------------------------------------------------------------

def _wait_until_read(streams, timeout: float = 1.0) -> float:
    """Wait (at most ``timeout`` seconds) until the launcher has read what this process
    wrote to ``streams``; returns the seconds waited.

    A rank's stdout and stderr are pipes to ``mpiexec``, which forwards them. ``MPI_Abort``
    ends the job at once: bytes still in a pipe then are lost, and with them the message
    saying why (measured with MPICH 5 on the 2-core machine: 3 of 310 aborts lost their
    line, 2 of them while both cores were busy; the pipe still held it at ``MPI_Abort`` in
    96 of 200). A pipe's unread
    byte count (``FIONREAD``) says when the reader has it. Streams that are not pipes
    (a terminal, a file) need no wait."""
    try:
        import fcntl
        import termios
    except ImportError:  # not POSIX: nothing to ask
        return 0.0
    fds = []
    for stream in streams:
        try:
            fd = stream.fileno()
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                fds.append(fd)
        except (AttributeError, OSError, ValueError):
            continue

    def unread(fd):
        try:
            return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError:
            return 0

    start = time.monotonic()
    while fds and any(unread(fd) for fd in fds) and time.monotonic() - start < timeout:
        time.sleep(0.001)
    return time.monotonic() - start


# ----- the process group -----------------------------------------------------------------

class Distributed:
    """One rank of a data-parallel job over ``comm`` (an mpi4py communicator).

    The :class:`~mlp_backend.training.trainer.Trainer` takes it as ``dist=`` and calls
    :meth:`broadcast_params` when ``fit`` starts, :meth:`shard_epoch` for each epoch's
    batches, :meth:`allreduce_grads` after every backward pass and
    :meth:`allreduce_sum` on the epoch's metric sums.
    """

    def __init__(self, comm, *, timeout: "float | None" = None):
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        if timeout is None:
            timeout = float(os.environ.get(ENV_TIMEOUT) or DEFAULT_TIMEOUT)
        self.timeout = timeout if timeout > 0 else None
        self.transport, self.reason = "mpi", "NumPy arrays reduced in place over MPI"
        self._backend = self._nccl = self._zeros = None
        self._last_grads = None

    @property
    def root(self) -> bool:
        """True on rank 0, the rank that prints and writes files."""
        return self.rank == 0

    def describe(self) -> dict:
        """Ranks and transport, for logs and ``metrics.json``."""
        return {"ranks": self.size, "transport": self.transport, "reason": self.reason}

    def __repr__(self) -> str:
        return f"Distributed(rank {self.rank} of {self.size}, transport {self.transport!r})"

    # ----- set-up ----------------------------------------------------------------------
    def local_rank(self) -> int:
        """This rank's index among the ranks on its machine (collective: every rank calls it)."""
        local = self.comm.Split_type(_mpi().COMM_TYPE_SHARED)
        try:
            return local.Get_rank()
        finally:
            local.Free()

    def pick_device(self, spec=None):
        """The backend this rank trains on: a CUDA device given without an index
        (``cuda``, ``auto`` on a GPU machine) becomes ``cuda:<local rank mod GPUs>``, one
        GPU per rank; an explicit ``cuda:N`` is kept (ranks then share it). Collective
        where the device is CUDA: every rank calls it."""
        backend = get_backend(spec)
        raw = spec if isinstance(spec, str) else (os.environ.get(ENV_DEVICE) if spec is None else None)
        if backend.name != "cupy" or (raw and raw.strip().rpartition(":")[2].isdigit()):
            return backend
        import cupy  # the CuPy backend is in use, so CuPy is installed
        return get_backend(f"cuda:{self.local_rank() % cupy.cuda.runtime.getDeviceCount()}")

    def root_first(self, fn):
        """``fn()`` on rank 0, then on the other ranks (so a download or cache write
        happens once); returns this rank's result."""
        if self.root:
            result = fn()
            self.comm.Barrier()
        else:
            self.comm.Barrier()
            result = fn()
        return result

    def _bind(self, backend) -> None:
        """Choose the transport for ``backend``'s arrays (collective: every rank calls it)."""
        if self._backend is not None and self._backend.label == backend.label:
            return
        self._backend, self._nccl, self._zeros = backend, None, None
        if backend.name == "numpy":
            self.transport, self.reason = "mpi", "NumPy arrays reduced in place over MPI"
            return
        self.transport = "mpi-host"
        self.reason = f"{backend.name} arrays copied to the host for MPI"
        if backend.name != "cupy":
            return
        import cupy
        why = _nccl_unusable()
        bus = cupy.cuda.runtime.deviceGetPCIBusId(backend.device.id)  # the same GPU, whatever its index here
        peers = self.comm.allgather((_mpi().Get_processor_name(), bus, why))
        whys = sorted({w for _, _, w in peers if w})
        gpus = [(host, bus) for host, bus, _ in peers]
        if whys:
            self.reason = f"NCCL unavailable ({'; '.join(whys)}): CuPy arrays go through host buffers over MPI"
        elif len(set(gpus)) < len(gpus):
            self.reason = ("ranks share a GPU (NCCL needs one GPU per rank; give each rank its own with "
                           "--device cuda): CuPy arrays go through host buffers over MPI")
        else:
            from cupy.cuda import nccl
            uid = self.comm.bcast(nccl.get_unique_id() if self.root else None, root=0)
            with cupy.cuda.Device(backend.device.id):
                self._nccl = nccl.NcclCommunicator(self.size, uid, self.rank)
            self.transport, self.reason = "nccl", "CuPy arrays reduced on the GPUs with NCCL, one GPU per rank"

    # ----- the collectives the training loop calls --------------------------------------
    def broadcast_params(self, model, trainer=None) -> None:
        """Give every rank rank 0's weights (in place), choosing the transport for the
        model's device first; with ``trainer``, also check that every rank starts from
        the same epoch, optimizer step and shuffling RNG state (the same checkpoint)."""
        self._bind(model.backend)
        self._last_grads = None
        params = model.flat_params()
        flat = getattr(params, "flat", None)
        if flat is not None:
            self._collective(flat, "bcast")
        else:
            host = self._host_concat(params)
            self._mpi_inplace(host, "bcast", "the weights' broadcast")
            model.params = self._host_split(host, params)
        if trainer is not None:
            self._check_same_start(model, trainer)
            if self.root:
                trainer.log(f"data-parallel over {self.size} ranks: {self.transport} ({self.reason})")

    def shard_epoch(self, n: int, batch_size: "int | None", rng, shuffle: bool = True):
        """This rank's rows of one epoch: ``(order, bounds, rows)`` with ``order`` the host
        indices of its rows in training order, ``bounds`` the ``(start, stop)`` of each
        batch within ``order`` and ``rows`` each global batch's size. The permutation is
        drawn from ``rng`` exactly as one process draws it (none for the full batch)."""
        full = batch_size is None or batch_size >= n
        order = np.arange(n) if full or not shuffle else rng.permutation(n)
        bs = n if full else batch_size
        if bs < self.size:
            raise ValueError(f"batch size {bs} is smaller than the {self.size} ranks: each rank needs at least "
                             "one row of every batch; use a batch size >= the number of ranks")
        parts, bounds, rows, pos = [], [], [], 0
        for i in range(0, n, bs):
            j = min(i + bs, n)
            lo, hi = shard_bounds(i, j, self.rank, self.size)
            parts.append(order[lo:hi])
            bounds.append((pos, pos + hi - lo))
            rows.append(j - i)
            pos += hi - lo
        return np.concatenate(parts), bounds, rows

    def allreduce_grads(self, grads):
        """Sum ``grads`` over the ranks, in place where the backend allows; returns the
        summed dict. ``None`` stands for this rank's share of a batch that gave it no
        rows: it contributes zeros (laid out like the last gradients)."""
        if self._backend is None:
            raise RuntimeError("call broadcast_params(model) before allreduce_grads")
        if grads is None:
            grads = self._zero_grads()
        else:
            self._last_grads = grads
        flat = getattr(grads, "flat", None)
        if flat is not None:
            self._collective(flat, "sum")
            return grads
        host = self._host_concat(grads)
        self._mpi_inplace(host, "sum", "the gradients' all-reduce")
        return self._host_split(host, grads)

    def allreduce_sum(self, values, first: "int | None" = None) -> np.ndarray:
        """A copy of the host array ``values`` (the epoch's loss and correct-count sums)
        with its ``first`` entries (default: all) summed over the ranks."""
        if self._nccl is not None:  # once an epoch: an NCCL failure raised so far, as an exception here
            self._nccl.check_async_error()
        out = np.array(values, copy=True)
        part = out[:first] if first is not None else out
        self._mpi_inplace(part, "sum", "the metrics' all-reduce")
        return out

    # ----- transports --------------------------------------------------------------------
    def _collective(self, flat, op: str) -> None:
        """``op`` (``sum`` or ``bcast`` from rank 0) on a flat device buffer, in place."""
        what = "the gradients' all-reduce" if op == "sum" else "the weights' broadcast"
        if self._nccl is not None:
            self._nccl_inplace(flat, op)
        elif self._backend.name == "numpy":
            self._mpi_inplace(flat, op, what)
        else:
            host = np.array(self._backend.to_numpy(flat), copy=True)
            self._mpi_inplace(host, op, what)
            flat[...] = self._backend.asarray(host)

    def _mpi_inplace(self, buf: np.ndarray, op: str, what: str) -> None:
        MPI = _mpi()
        if op == "sum":
            req = self.comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        else:
            req = self.comm.Ibcast(buf, root=0)
        self._wait(req, what, op)

    def _nccl_inplace(self, flat, op: str) -> None:
        import cupy
        from cupy.cuda import nccl
        dtype = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64}[str(flat.dtype)]
        ptr, stream = flat.data.ptr, cupy.cuda.get_current_stream().ptr  # queued after the backward pass
        with cupy.cuda.Device(self._backend.device.id):
            if op == "sum":
                self._nccl.allReduce(ptr, ptr, flat.size, dtype, nccl.NCCL_SUM, stream)
            else:
                self._nccl.bcast(ptr, flat.size, dtype, 0, stream)

    def _wait(self, req, what: str, op: str = "sum") -> None:
        """Complete a nonblocking MPI request, aborting the job after ``timeout`` seconds.
        The broadcast (``op="bcast"``) waits without a limit: it comes once, at the start,
        after each rank has loaded the data, which may take the ranks very different times."""
        if self.timeout is None or op == "bcast":
            req.Wait()
            return
        deadline = time.monotonic() + self.timeout
        while not req.Test():
            if time.monotonic() > deadline:
                self.abort(f"{what} got no answer from the other ranks within {self.timeout:g} s "
                           f"(a rank hangs or is stuck); ending the job. Set {ENV_TIMEOUT} (seconds) "
                           "to wait longer")

    def _host_concat(self, arrays: dict) -> np.ndarray:
        return np.concatenate([np.ravel(self._backend.to_numpy(v)) for v in arrays.values()])

    def _host_split(self, host: np.ndarray, like: dict) -> dict:
        out, off = {}, 0
        for k, v in like.items():
            n = int(np.prod(v.shape))
            out[k] = self._backend.asarray(host[off:off + n].reshape(tuple(v.shape)))
            off += n
        return out

    def _zero_grads(self):
        like = self._last_grads
        if like is None:
            raise RuntimeError("a rank had no rows in its first batch; the batch size must be >= the ranks")
        flat = getattr(like, "flat", None)
        if flat is None:
            return {k: self._backend.xp.zeros_like(v) for k, v in like.items()}
        if self._zeros is None or self._zeros.layout != like.layout or self._zeros.flat.dtype != flat.dtype:
            self._zeros = self._backend.ops.pack(like.layout, flat.dtype, self._backend.device, order=list(like))
        else:
            self._zeros.flat[...] = 0
        return self._zeros

    def _check_same_start(self, model, trainer) -> None:
        opt = trainer.optimizer
        mine = {"epoch": trainer.epoch, "optimizer step": opt.t, "optimizer": opt.config(),
                "model": model.config(), "shuffling RNG state": trainer.rng.bit_generator.state}
        states = self.comm.allgather(mine)
        for r, other in enumerate(states[1:], start=1):
            diff = [k for k in mine if other[k] != states[0][k]]
            if diff:
                raise ValueError(f"rank {r} starts from a different {', '.join(diff)} than rank 0: every rank "
                                 "must run the same command (same options, same --resume checkpoint)")

    # ----- failure ----------------------------------------------------------------------
    def abort(self, message: str, code: int = 1) -> None:
        """Print ``message`` with this rank and end every rank of the job (``MPI_Abort``)."""
        try:
            sys.stderr.write(f"error on rank {self.rank} of {self.size}: {message}\n")
            sys.stderr.flush()
            sys.stdout.flush()
            _wait_until_read((sys.stdout, sys.stderr))
        finally:
            try:
                self.comm.Abort(code)
            finally:
                os._exit(code)  # MPI_Abort may return before the launcher ends this process

    def install_excepthook(self) -> None:
        """Make an uncaught exception on this rank print its traceback and abort the job."""
        def hook(kind, exc, tb):
            text = "".join(traceback.format_exception(kind, exc, tb)).rstrip()
            self.abort(f"uncaught exception, aborting the job:\n{text}")
        sys.excepthook = hook

    @contextmanager
    def guard(self, collective: dict):
        """Run a rank's training so that a failure cannot leave the other ranks waiting.

        ``collective`` maps exception types that every rank raises at the same point
        (a diverged loss: the reduced loss is the same everywhere; Ctrl-C: ``mpiexec``
        forwards it to every rank) to exit codes: rank 0 re-raises them for the caller to
        report once, the other ranks exit quietly with the code. Any other exception is
        this rank's alone: it is printed with the rank and the job is aborted."""
        try:
            yield
        except BaseException as exc:
            for kind, code in collective.items():
                if isinstance(exc, kind):
                    if self.root:
                        raise
                    raise SystemExit(code) from None
            if isinstance(exc, (ValueError, OSError, BackendError)):
                self.abort(str(exc))
            self.abort("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip())


def guard(dist: "Distributed | None", *, diverged: int, interrupted: int):
    """:meth:`Distributed.guard` for a training run (a diverged loss and Ctrl-C reach every
    rank together; their exit codes are given); a no-op context for one process."""
    if dist is None:
        return nullcontext()
    from mlp_backend.training.trainer import TrainingDiverged
    return dist.guard({TrainingDiverged: diverged, KeyboardInterrupt: interrupted})


def _nccl_unusable() -> "str | None":
    """Why NCCL cannot be used through CuPy here, or None."""
    if os.environ.get(ENV_NCCL, "").strip() == "0":
        return f"${ENV_NCCL}=0"
    try:
        from cupy.cuda import nccl
    except ImportError as exc:
        return f"cupy.cuda.nccl cannot be imported: {exc}"
    if not getattr(nccl, "available", False):
        return "CuPy finds no NCCL library (pip install nvidia-nccl-cu12, or the one for your CUDA)"
    return None
