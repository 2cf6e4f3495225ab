"""Benchmark mlp-backend against PyTorch eager, scikit-learn and the GEMM floor.

    python benchmarks/bench.py [--coretype-both] [--time-to-accuracy] [--widths 64,256,1024]
    python benchmarks/bench.py --device cuda [--cuda-graphs auto|on|off]   # the GPU run (docs/gpu.md)

Same as ``mlp-backend bench``; see :mod:`mlp_backend.studies.bench` and docs/benchmarks.md.
"""
import sys

from mlp_backend.studies.bench import main

if __name__ == "__main__":
    sys.exit(main())
