"""The exit codes of ``mlp-backend``, in one place (the CLI returns them; the ``--ranks``
launcher recognises them in what mpiexec returns)."""

EXIT_OK = 0
EXIT_ERROR = 1         # bad data, unusable device, bad option value, unreadable checkpoint
EXIT_USAGE = 2         # unknown option, missing argument (argparse)
EXIT_DIVERGED = 3      # the loss became NaN or infinite
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143   # SIGTERM (128 + SIGTERM)

KNOWN = (EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_TERMINATED)
