"""Anderson mixing of a fixed-point iteration (the geometry refinement's accelerator)."""

import numpy as np
import pytest

from aetdask.reconstruct.anderson import AndersonMixer


def _slow_linear_map(n=20, seed=0):
    """x ← M x + b with contractions between 0.5 and 0.99 (a few slow directions), and its fixed point."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    rho = np.r_[0.99, 0.98, 0.95, rng.uniform(0.0, 0.5, n - 3)]
    m = q @ np.diag(rho) @ q.T
    b = rng.normal(size=n)
    return m, b, np.linalg.solve(np.eye(n) - m, b)


def _iterate(mixer, m, b, rounds):
    x = np.zeros(len(b))
    for _ in range(rounds):
        x = x + mixer.step(x, m @ x + b - x)
    return x


def test_mixing_removes_slow_directions_that_plain_iteration_keeps():
    m, b, truth = _slow_linear_map()
    start = np.abs(truth).max()
    plain = np.abs(_iterate(AndersonMixer(0), m, b, 20) - truth).max()
    mixed = np.abs(_iterate(AndersonMixer(5), m, b, 20) - truth).max()
    assert plain > 0.5 * start  # 0.99²⁰ ≈ 0.82: plain iteration has hardly started on the slowest direction
    assert mixed < 0.01 * plain


def test_memory_zero_is_the_plain_correction_and_projection_confines_the_step():
    mixer = AndersonMixer(0)
    f = np.array([1.0, -2.0, 3.0])
    np.testing.assert_array_equal(mixer.step(np.zeros(3), f), f)
    keep_first_two = lambda v: np.r_[v[:2], 0.0]  # noqa: E731
    mixer = AndersonMixer(3)
    m, b, _ = _slow_linear_map(3, seed=1)
    x = np.zeros(3)
    for _ in range(4):
        s = mixer.step(x, m @ x + b - x, project=keep_first_two)
        assert s[2] == 0.0
        x = x + s


def test_an_untrusted_step_restarts_the_history_and_takes_the_plain_correction():
    m, b, _ = _slow_linear_map(5, seed=2)
    seen = []
    mixer = AndersonMixer(3, limit=lambda mixed, plain: seen.append(1) or False)
    x = np.zeros(5)
    for _ in range(4):
        f = m @ x + b - x
        s = mixer.step(x, f)
        np.testing.assert_allclose(s, f)
        x = x + s
    assert mixer.restarts == 3 and len(seen) == 3  # the first round has no history to mix


def test_negative_memory_is_refused():
    with pytest.raises(ValueError, match="memory"):
        AndersonMixer(-1)
