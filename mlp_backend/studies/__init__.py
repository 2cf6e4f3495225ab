"""Studies run with the library: the paper's reproduction and the benchmarks.

================  ====================================================================
``reproduce``     ``mlp-backend reproduce`` and ``sweep``: the paper's experiments and report
``bench``         ``mlp-backend bench``: training speed against PyTorch and scikit-learn,
                  on the CPU, on CUDA and over MPI ranks (a package: see its docstring)
================  ====================================================================
"""
