"""Compatibility shim: the backends moved to the package :mod:`mlp_backend.backends`.

``from mlp_backend.backend import get_backend`` (and every other public name of the
old module) keeps working; new code imports from :mod:`mlp_backend.backends`.
"""
from .backends import *  # noqa: F401,F403
from .backends import __all__, flat_layout, n_decay  # noqa: F401
