"""Studies run with the library: the paper's reproduction and the benchmarks.

================  ====================================================================
``reproduce``     ``mlp-backend reproduce`` and ``sweep``: the paper's experiments and report
``bench``         ``mlp-backend bench``: training speed against PyTorch and scikit-learn
``bench_gpu``     the CUDA part of ``bench``
``bench_ranks``   data-parallel scaling over MPI ranks
================  ====================================================================
"""
