"""``mlp-backend bench``: training speed against PyTorch, scikit-learn and the GEMM floor;
this package gives the CLI's plugin table :func:`register` (and ``python -m`` its ``main``).

==================  ==================================================================
``command``         the command line: options, the run's plan, ``main``, ``register``
``environment``     the machine's record, thread limits, the data in memory, net sizes
``candidates``      each candidate's epoch as a timing callable; which run where
``comparison``      the interleaved comparison, its summary and Markdown table
``tta``             time to a target test accuracy
``memory``          peak memory of a training run, in child processes
``memory_child``    that child: ``python -m mlp_backend.studies.bench.memory_child``
``gpu``             the GPU run's versions, default ``train`` run and its time to accuracy
``ranks``           data-parallel scaling over MPI ranks (``bench --ranks 1,2``)
``ranks_child``     one configuration of it: ``python -m mlp_backend.studies.bench.ranks_child``
==================  ==================================================================

    python -m mlp_backend.studies.bench [OPTIONS]     # = mlp-backend bench [OPTIONS]
"""
from mlp_backend.studies.bench.command import main, register

__all__ = ["main", "register"]
