"""CUDA graphs on CuPy: a private stream ordered with the caller's, and the capture of a
function's launches on it into one graph.

The epoch runner (:mod:`mlp_backend.training.runner`) decides *whether* an epoch is captured;
this module is *how*, the only place besides :mod:`~mlp_backend.backends.cupy_ops` that
touches CuPy's streams. Nothing here imports CuPy at module level.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager

from mlp_backend.backends.devices import BackendError


def _refuse_allocation(nbytes):
    raise BackendError(f"a {nbytes}-byte device allocation during CUDA graph capture: every buffer of a "
                       "captured step must exist before the capture (a bug in mlp_backend: please report it)")


class GraphStream:
    """A non-blocking CUDA stream of ``device`` on which captured work runs, with the
    capturable kernels (:class:`~mlp_backend.backends.cupy_ops.CupyGraphOps`) bound to it."""

    def __init__(self, device, xp):
        import cupy
        from mlp_backend.backends.cupy_ops import CupyGraphOps
        self.cp, self.device = cupy, device
        with device:
            self.stream = cupy.cuda.Stream(non_blocking=True)
            self.ops = CupyGraphOps(xp, cupy, self.stream)

    def contiguous(self, x):
        """``x`` as a C-contiguous array (the gather kernel indexes rows by their stride)."""
        return self.cp.ascontiguousarray(x)

    @contextmanager
    def ordered(self):
        """Run the block's work on this stream, after whatever the caller's current stream
        has queued (a restore, a copy) and before whatever it queues next (its reads of the
        parameters and the epoch's sums)."""
        cp, s = self.cp, self.stream
        with self.device:
            outer = cp.cuda.get_current_stream()
            s.wait_event(outer.record())
            try:
                with s:
                    yield
            finally:
                outer.wait_event(s.record())

    def capture(self, fn):
        """The launches of ``fn()`` on this stream, recorded into one CUDA graph (not run).

        Any allocation during the capture raises (every buffer must exist before), and the
        garbage collector is off meanwhile: an unreachable runner collected there would
        destroy its cuBLAS handle, and cublasDestroy synchronises the device, which is
        invalid while a stream captures. A capture that raises is ended before the error
        propagates (a stream left capturing would fail every later launch)."""
        s, cp = self.stream, self.cp
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            with cp.cuda.using_allocator(_refuse_allocation):
                s.begin_capture()
                try:
                    fn()
                except BaseException:
                    try:
                        s.end_capture()
                    except Exception:
                        pass
                    raise
                return s.end_capture()
        finally:
            if was_enabled:
                gc.enable()

    def launch(self, graph) -> None:
        """Replay ``graph`` on this stream."""
        graph.launch(stream=self.stream)

    def close(self) -> None:
        """Free the cuBLAS handle and workspace of the kernels (cuBLAS waits for the device)."""
        if self.ops is not None:
            with self.device:
                self.ops.close()
        self.ops = None
