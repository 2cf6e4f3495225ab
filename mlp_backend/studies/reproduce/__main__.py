"""``python -m mlp_backend.studies.reproduce``: the ``reproduce`` and ``sweep`` subcommands alone."""
from mlp_backend.studies.reproduce import main

raise SystemExit(main())
