"""Error type for everything that can go wrong while loading data."""

from __future__ import annotations


class DataError(ValueError):
    """Bad or missing input data.

    Every message names the problem (which file / array, what was expected,
    what was found) *and* how to fix it.
    """


__all__ = ["DataError"]
