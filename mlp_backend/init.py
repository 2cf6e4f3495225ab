r"""Weight initialisers, drawn on the host so one seed gives the same weights everywhere.

Every initialiser draws float64 values from a host ``numpy.random.Generator``; the
model then casts them to its dtype on the host and moves them to its device in one
transfer. Same seed, same bits, on NumPy, CuPy, torch or array_api_strict.

=================  =====================================================  ============
name               weights W (fan_in x fan_out)                           biases b
=================  =====================================================  ============
``uniform``        :math:`U(-0.5, 0.5)` (the paper's 'random')             same
``he``             :math:`N(0, 2/\mathrm{fan_{in}})` (He et al. 2015)      0
``lecun``          :math:`N(0, 1/\mathrm{fan_{in}})` (LeCun et al. 1998)   0
``xavier``         :math:`U(\pm\sqrt{6/(\mathrm{fan_{in}}+\mathrm{fan_{out}})})`  0
``paper-he``       :math:`N(0, 1)`: the printed code's 'he', scale forgotten  0
``paper-lecun``    :math:`N(0, 1)`: the printed code's 'lecun', identical    0
=================  =====================================================  ============

``paper-random`` is an alias of ``uniform``. The printed code draws with the legacy
global ``np.random``; we use a ``Generator``, so our draws follow the same
distributions, not the same numbers.
"""
from __future__ import annotations

from typing import Callable

import numpy as np  # host-side only: the draws happen before any device sees them


def _uniform(rng, fan_in, fan_out):
    return rng.uniform(-0.5, 0.5, (fan_in, fan_out)), rng.uniform(-0.5, 0.5, fan_out)


def _normal(scale: Callable[[int, int], float]):
    def draw(rng, fan_in, fan_out):
        return rng.standard_normal((fan_in, fan_out)) * scale(fan_in, fan_out), np.zeros(fan_out)
    return draw


def _xavier(rng, fan_in, fan_out):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out)), np.zeros(fan_out)


INITIALIZERS: dict[str, Callable] = {
    "uniform": _uniform,
    "he": _normal(lambda fi, fo: np.sqrt(2.0 / fi)),
    "lecun": _normal(lambda fi, fo: np.sqrt(1.0 / fi)),
    "xavier": _xavier,
    "paper-he": _normal(lambda fi, fo: 1.0),
    "paper-lecun": _normal(lambda fi, fo: 1.0),
}
ALIASES = {"paper-random": "uniform", "random": "uniform", "glorot": "xavier"}


def initialize(sizes, init: str = "he", seed=0) -> dict[str, np.ndarray]:
    """Host float64 parameters ``{'w1', 'b1', 'w2', ...}`` for layer sizes ``sizes``.

    ``sizes`` lists every layer's width, input first: ``(784, 100, 40, 10)``.
    ``seed`` is an int or a ``numpy.random.Generator``.
    """
    name = ALIASES.get(init, init)
    if name not in INITIALIZERS:
        raise ValueError(f"unknown init {init!r}; choose from {', '.join(list(INITIALIZERS) + list(ALIASES))}")
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"layer sizes must be >= 2 positive widths (input ... output), got {list(sizes)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        params[f"w{i}"], params[f"b{i}"] = INITIALIZERS[name](rng, int(fan_in), int(fan_out))
    return params
