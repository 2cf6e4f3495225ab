"""``mlp-backend train --ranks N``: check the number of ranks, then rerun the same command
as an ``mpiexec -n N`` job and report a job that a rank ended early.

``mpiexec`` is the one next to this Python (the MPI wheels put it there), else the one on
``PATH`` (:func:`~mlp_backend.training.distributed.find_mpiexec`). Each rank gets
``cores // N`` BLAS threads unless ``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/
``MKL_NUM_THREADS`` are set. Under ``mpiexec`` each rank joins the job with
:func:`mlp_backend.training.distributed.init`.
"""
from __future__ import annotations

import os
import subprocess
import sys

from mlp_backend.apps.exit_codes import KNOWN as KNOWN_EXIT_CODES
from mlp_backend.training.distributed import INSTALL_HINT, DistributedError, find_mpiexec, have_mpi4py, launched_size

__all__ = ["check_ranks", "spawn"]


def check_ranks(ranks: "int | None", batch_size=None) -> int:
    """The number of ranks to train with (``--ranks``, else the launcher's), checked
    against ``batch_size``; raises ValueError naming the option. Needs no MPI."""
    launched = launched_size()
    if ranks is not None:
        if ranks < 1:
            raise ValueError(f"--ranks must be >= 1, got {ranks}")
        if launched > 1 and ranks != launched:
            raise ValueError(f"--ranks {ranks} given inside an mpiexec job of {launched} ranks: "
                             "drop --ranks (mpiexec -n sets the number of ranks)")
    n = ranks or launched
    if n > 1 and batch_size not in (None, "full") and int(batch_size) < n:
        raise ValueError(f"--batch-size {batch_size} is smaller than the {n} ranks: each rank needs at "
                         "least one row of every batch; use a batch size >= the number of ranks")
    return n


def spawn(ranks: int, argv: list, *, log=None) -> int:
    """Run ``mlp-backend`` with ``argv`` (``--ranks`` removed) as an ``mpiexec -n ranks``
    job; returns its exit code, saying so on stderr when it is not one of the CLI's own."""
    if not have_mpi4py():
        raise DistributedError(f"--ranks {ranks} needs MPI, and mpi4py is not installed: {INSTALL_HINT}")
    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise DistributedError(f"--ranks {ranks}: mpi4py is installed but no mpiexec was found next to "
                               f"{sys.executable} or on PATH: {INSTALL_HINT}, or put your MPI's mpiexec on PATH")
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--ranks":
            skip = True
        elif not a.startswith("--ranks="):
            rest.append(a)
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // ranks))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)
    cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", "mlp_backend", *rest]
    if log is not None:
        log(f"running {ranks} ranks ({env['OPENBLAS_NUM_THREADS']} BLAS thread(s) each): {' '.join(cmd)}")
    proc = subprocess.Popen(cmd, env=env)
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:  # mpiexec forwards Ctrl-C to the ranks; wait for them to save and stop
            continue
    if code not in KNOWN_EXIT_CODES:  # not one of mlp-backend's own: a rank exited early or was killed
        sys.stderr.write(f"error: the {ranks}-rank job ended with exit code {code}: a rank exited or was killed "
                         "(its message, if it printed one, is above)\n")
    return code
