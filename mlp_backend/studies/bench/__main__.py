"""``python -m mlp_backend.studies.bench [OPTIONS]``: the benchmark, as ``mlp-backend bench``."""
import sys

from mlp_backend.studies.bench.command import main

sys.exit(main())
