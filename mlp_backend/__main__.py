"""``python -m mlp_backend ...`` runs the ``mlp-backend`` command line."""
import sys

from mlp_backend.apps.cli import main

sys.exit(main())
