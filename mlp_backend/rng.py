r"""Counter-based random numbers: Philox4x32-10, the same bits on every backend and device.

Philox (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011)
maps a 128-bit *counter* and a 64-bit *key* to 128 random bits with ten rounds of

.. math::
    (c_0, c_1, c_2, c_3) \mapsto (\mathrm{hi}(M_1 c_2) \oplus c_1 \oplus k_0,\;
    \mathrm{lo}(M_1 c_2),\; \mathrm{hi}(M_0 c_0) \oplus c_3 \oplus k_1,\; \mathrm{lo}(M_0 c_0)),

the key bumped by the Weyl constants :math:`W_0, W_1` between rounds. There is no state to carry:
the words for (key, counter) are the same whenever and wherever they are computed, which is
what makes a training step's random draws reproducible across backends, resumable from a
checkpoint, and drawable inside a replayed CUDA graph (the counter's step word is read from
device memory, as the learning rate is). It is the generator behind cuRAND's
``curandStatePhilox4_32_10`` and Random123's ``philox4x32``; the tests check Random123's
known-answer vectors.

:func:`philox4x32` is written once against the Array API. 32 x 32 -> 64-bit products are taken
in ``uint64`` where the namespace has its arithmetic (NumPy, CuPy, array_api_strict), and from
16-bit halves in ``int64`` where it does not (PyTorch has no ``uint64`` shifts): both are exact,
so the words are the same. From the words:

* :func:`uniform`: floats in [0, 1) with 24 random bits (exact in float32 and float64);
* :func:`keep_mask`: Bernoulli "keep" masks from 16-bit halves of the words, the drop rate
  rounded to a multiple of :math:`2^{-16}` (0.5 and 0.25 exactly; 0.2 as 13107/65536);
* :class:`Stream`: a seed and a purpose as (key, counter) for a training step's draws.

The counter of a draw is ``(block, purpose, step_lo, step_hi)``: ``block`` numbers the
128-bit blocks of one draw, ``purpose`` says which draw (dropout of layer 2, the augmentation's
parameters, ...), and the step is the optimizer's global step number, so every step of every
epoch draws anew and a resumed run continues the same stream.
"""
from __future__ import annotations

import array_api_compat

__all__ = ["philox4x32", "uniform", "keep_mask", "keep_threshold", "Stream", "seed_key",
           "PHILOX_M", "PHILOX_W"]

PHILOX_M = (0xD2511F53, 0xCD9E8D57)  # the round multipliers M0, M1
PHILOX_W = (0x9E3779B9, 0xBB67AE85)  # the key's Weyl increments W0, W1 (golden ratio, sqrt(3) - 1)
ROUNDS = 10
MASK32 = 0xFFFFFFFF


def _wide_dtype(xp):
    """The integer type the rounds compute in: uint64 where the namespace has uint64
    multiplies and shifts, else int64 (products from 16-bit halves)."""
    if array_api_compat.is_torch_namespace(xp):
        return xp.int64
    return xp.uint64


def _mulhilo(m: int, c, xp, wide):
    """(hi, lo) 32-bit words of the 64-bit product ``m * c`` (``c`` in [0, 2**32), of ``wide``)."""
    if wide == xp.uint64:
        p = c * m
        return p >> 32, p & MASK32
    m_hi, m_lo = m >> 16, m & 0xFFFF
    p_lo, p_hi = c * m_lo, c * m_hi  # each < 2**48: exact in int64
    mid = p_lo + ((p_hi & 0xFFFF) << 16)  # the low 48 bits' sum, < 2**49
    return (p_hi >> 16) + (mid >> 32), mid & MASK32


def philox4x32(counter, key, rounds: int = ROUNDS):
    """Philox4x32-``rounds`` of ``counter`` (..., 4) under ``key`` (..., 2), both uint32 arrays
    of one namespace and device (broadcast against each other): uint32 (..., 4), same namespace
    and device. Word 0 of the counter is the least significant, as in Random123."""
    xp = array_api_compat.array_namespace(counter, key)
    wide = _wide_dtype(xp)
    c = [xp.astype(counter[..., i], wide) for i in range(4)]
    k0, k1 = xp.astype(key[..., 0], wide), xp.astype(key[..., 1], wide)
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + PHILOX_W[0]) & MASK32, (k1 + PHILOX_W[1]) & MASK32
        hi0, lo0 = _mulhilo(PHILOX_M[0], c[0], xp, wide)
        hi1, lo1 = _mulhilo(PHILOX_M[1], c[2], xp, wide)
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
    return xp.astype(xp.stack(c, axis=-1), xp.uint32)


def seed_key(seed: int) -> tuple:
    """A non-negative integer seed below 2**64 as Philox's two key words (low word first)."""
    seed = int(seed)
    if not 0 <= seed < 2 ** 64:
        raise ValueError(f"a Philox seed must be in [0, 2**64), got {seed}")
    return seed & MASK32, seed >> 32


def uniform(words, dtype, xp=None):
    """Floats in [0, 1) from uint32 ``words``: the top 24 bits times 2**-24 (every value
    exact in float32 and float64, so the same on every backend)."""
    xp = xp or array_api_compat.array_namespace(words)
    top = xp.astype(words, _wide_dtype(xp)) >> 8
    return xp.astype(top, dtype) * (2.0 ** -24)


def keep_threshold(rate: float) -> int:
    """The 16-bit threshold of drop rate ``rate``: a half-word below it drops its unit
    (so the rate used is ``keep_threshold(rate) / 65536``)."""
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"a drop rate must be in [0, 1), got {rate}")
    return int(round(rate * 65536))


def keep_mask(words, rate: float, xp=None):
    """Bernoulli keep masks of drop rate ``rate`` from uint32 ``words`` (..., n): bool
    (..., 2n), each 16-bit half a unit (the low half first): kept where the half is at least
    :func:`keep_threshold`."""
    xp = xp or array_api_compat.array_namespace(words)
    w = xp.astype(words, _wide_dtype(xp))
    halves = xp.stack([w & 0xFFFF, w >> 16], axis=-1)
    halves = xp.reshape(halves, (*words.shape[:-1], 2 * words.shape[-1]))
    return halves >= keep_threshold(rate)


class Stream:
    """The random words of one kind of draw (``purpose``, a small integer) for ``seed``:
    :meth:`words` gives ``n`` uint32 words for a step, from the blocks
    ``(first_block .. , purpose, step_lo, step_hi)``. ``step`` may be a Python int or a 0-d
    integer device array (read on the device, as a captured CUDA graph needs)."""

    def __init__(self, seed: int, purpose: int):
        self.key_words, self.purpose = seed_key(seed), int(purpose) & MASK32

    def counters(self, xp, device, step, blocks: int, first_block: int = 0):
        """The (blocks, 4) uint32 counters of ``blocks`` consecutive blocks of ``step``."""
        wide = _wide_dtype(xp)
        b = xp.arange(first_block, first_block + blocks, dtype=wide, device=device)
        s = step if isinstance(step, int) else xp.astype(step, wide)
        zero = b * 0
        cols = [b & MASK32, zero + self.purpose, (zero + s) & MASK32, ((zero + s) >> 32) & MASK32]
        return xp.astype(xp.stack(cols, axis=-1), xp.uint32)

    def key(self, xp, device):
        """The key as a (2,) uint32 array on ``device``."""
        return xp.asarray(self.key_words, dtype=xp.uint32, device=device)

    def words(self, xp, device, step, n: int, first_block: int = 0):
        """``n`` uint32 words (from ``ceil(n / 4)`` blocks) of ``step``."""
        blocks = -(-n // 4)
        out = philox4x32(self.counters(xp, device, step, blocks, first_block), self.key(xp, device))
        return xp.reshape(out, (4 * blocks,))[:n]
