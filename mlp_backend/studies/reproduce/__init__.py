"""Reproduce the seed paper's three experiments, then ablate its quirks (issue 4).

``mlp-backend reproduce`` trains the faithful presets ``paper-random``, ``paper-he`` and
``paper-lecun`` (:mod:`mlp_backend.training.presets`), and ``paper-random-printed`` (the code as
printed, tanh in layer 2), over several seeds with the library's own
:class:`~mlp_backend.model.MLP` and :class:`~mlp_backend.training.trainer.Trainer`, times the printed
appendix code on this machine's CPU against our faithful preset on the run's own device
(``--device``; ``benchmarks/paper_speed.py``), runs an ablation
that removes one quirk at a time, and writes ``docs/reproduction.md`` with its figures and
data under ``docs/img/reproduction/``. ``mlp-backend sweep`` covers the paper's other
dimensions (hidden widths, epochs) and writes a CSV and a plot.

================  ====================================================================
``experiments``   the training runs: the paper's split, one run, the experiments over
                  seeds, the ablation, the speed comparison, saturation, the sweep
``figures``       the paper's Figures 5-10, the ablation's and the sweep's plots
``report``        docs/reproduction.md: the run's numbers filled into ``report.md``
``report.md``     the report's prose, a template shipped with the package
``commands``      the ``reproduce`` and ``sweep`` subcommands: options and steps
================  ====================================================================

Without the ``mlp-backend`` entry point: ``python -m mlp_backend.apps.cli reproduce --help``
(or ``python -m mlp_backend.studies.reproduce``, these two subcommands alone).
"""
from __future__ import annotations

import argparse
import sys

from mlp_backend.studies.reproduce.commands import register

__all__ = ["register", "main"]


def main(argv=None) -> int:
    """``reproduce`` and ``sweep`` without the rest of the CLI (``argv`` as on the command line)."""
    parser = argparse.ArgumentParser(prog="mlp-backend", description=__doc__.splitlines()[0])
    register(parser.add_subparsers(dest="command", required=True))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    return args.func(args)
