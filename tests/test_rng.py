"""Philox4x32 (mlp_backend.rng): Random123's known answers on every backend of the matrix, the
two product routes (uint64, int64 halves) equal, and the derived uniforms and masks."""
import numpy as np
import pytest

import mlp_backend as mb
from mlp_backend import rng
from conftest import MATRIX

# Random123 1.14, tests/kat_vectors: counter (4 words), key (2 words) -> result (4 words).
KAT = [
    (7, "00000000 00000000 00000000 00000000", "00000000 00000000", "5f6fb709 0d893f64 4f121f81 4f730a48"),
    (7, "ffffffff ffffffff ffffffff ffffffff", "ffffffff ffffffff", "5207ddc2 45165e59 4d8ee751 8c52f662"),
    (7, "243f6a88 85a308d3 13198a2e 03707344", "a4093822 299f31d0", "4dfccaba 190a87f0 c47362ba b6b5242a"),
    (10, "00000000 00000000 00000000 00000000", "00000000 00000000", "6627e8d5 e169c58d bc57ac4c 9b00dbd8"),
    (10, "ffffffff ffffffff ffffffff ffffffff", "ffffffff ffffffff", "408f276d 41c83b0e a20bc7c6 6d5451fd"),
    (10, "243f6a88 85a308d3 13198a2e 03707344", "a4093822 299f31d0", "d16cfe09 94fdcceb 5001e420 24126ea1"),
]


def _words(text):
    return [int(w, 16) for w in text.split()]


def _uint32(be, values):
    """``values`` as a uint32 array of backend ``be`` (through int64: torch builds no uint32 from lists)."""
    a = be.xp.asarray(np.asarray(values, dtype=np.int64), device=be.device)
    return be.xp.astype(a, be.xp.uint32)


def _host(be, a):
    return np.asarray(be.to_numpy(be.xp.astype(a, be.xp.int64)))


@pytest.mark.parametrize("device, dtype", MATRIX)
def test_known_answers_on_every_backend(device, dtype):
    be = mb.get_backend(device)
    counters = _uint32(be, [_words(c) for _, c, _, _ in KAT])
    keys = _uint32(be, [_words(k) for _, _, k, _ in KAT])
    for i, (rounds, _, _, want) in enumerate(KAT):
        out = rng.philox4x32(counters[i, :], keys[i, :], rounds=rounds)
        assert out.dtype == be.xp.uint32 and tuple(out.shape) == (4,)
        assert be.owns(out)
        assert _host(be, out).tolist() == _words(want), f"{rounds} rounds, case {i}"


def test_batched_equals_one_by_one_and_broadcasts_the_key():
    r = np.random.default_rng(1)
    c = r.integers(0, 2 ** 32, size=(5, 3, 4), dtype=np.uint64).astype(np.uint32)
    k = np.array([0xDEADBEEF, 0x12345678], dtype=np.uint32)
    batched = rng.philox4x32(c, k)
    assert batched.shape == (5, 3, 4)
    for idx in np.ndindex(5, 3):
        assert (rng.philox4x32(c[idx], k) == batched[idx]).all()


def test_int64_halves_route_equals_uint64_route(monkeypatch):
    """PyTorch's route (32x32 products from 16-bit halves in int64) gives the uint64 route's words."""
    r = np.random.default_rng(2)
    c = r.integers(0, 2 ** 32, size=(4096, 4), dtype=np.uint64).astype(np.uint32)
    c[:4] = [[0xFFFFFFFF] * 4, [0] * 4, [0xFFFFFFFF, 0, 0xFFFFFFFF, 0], [1, 2, 3, 4]]
    k = np.array([0xFFFFFFFF, 0xFFFFFFFE], dtype=np.uint32)
    via_u64 = rng.philox4x32(c, k)
    monkeypatch.setattr(rng, "_wide_dtype", lambda xp: xp.int64)
    assert (rng.philox4x32(c, k) == via_u64).all()


def test_uniform_is_in_range_exact_and_unbiased():
    words = rng.Stream(7, 3).words(np, None, 0, 200_000)
    u32, u64 = rng.uniform(words, np.float32), rng.uniform(words, np.float64)
    assert (u32.astype(np.float64) == u64).all()  # 24 bits: exact in float32
    assert u64.min() >= 0.0 and u64.max() < 1.0
    assert abs(u64.mean() - 0.5) < 0.005 and abs(u64.var() - 1 / 12) < 0.002


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.5, 0.9])
def test_keep_mask_rate(rate):
    words = rng.Stream(0, 1).words(np, None, 5, 100_000)
    keep = rng.keep_mask(words, rate)
    assert keep.shape == (200_000,) and keep.dtype == bool
    used = rng.keep_threshold(rate) / 65536
    assert abs(used - rate) <= 2 ** -17
    assert abs((1 - keep.mean()) - used) < 0.005


def test_rates_outside_the_unit_interval_are_refused():
    for bad in (1.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="drop rate must be in"):
            rng.keep_threshold(bad)


def test_stream_words_differ_by_step_purpose_seed_and_continue_by_block():
    s = rng.Stream(0, 1)
    a = s.words(np, None, 3, 64)
    assert (a == s.words(np, None, 3, 64)).all()
    assert not (a == s.words(np, None, 4, 64)).all()
    assert not (a == rng.Stream(0, 2).words(np, None, 3, 64)).all()
    assert not (a == rng.Stream(1, 1).words(np, None, 3, 64)).all()
    assert (s.words(np, None, 3, 32, first_block=8) == a[32:]).all()
    big = 2 ** 40 + 5  # a step number above 32 bits reaches the counter's fourth word
    assert not (s.words(np, None, big, 8) == s.words(np, None, 5, 8)).all()
    assert (s.words(np, None, np.asarray(big), 8) == s.words(np, None, big, 8)).all()


def test_seed_key_bounds():
    assert rng.seed_key(2 ** 32 + 3) == (3, 1)
    with pytest.raises(ValueError, match="Philox seed"):
        rng.seed_key(-1)
