"""Known-answer tests for aetdask.kernels.preprocessing.background (Otsu mask + harmonic background fill)."""

import time

import numpy as np
import pytest
from scipy import ndimage

from aetdask.kernels.preprocessing.background import harmonic_fill, particle_mask, subtract_background

N = 128


def particle_image(n=N, radius=0.25, n_atoms=130, sigma=1.2, peak=10.0, seed=0):
    """A 2-D 'particle': Gaussian atoms (σ px) at least 2.6σ apart in a disk; peak scaled to `peak`."""
    rng = np.random.default_rng(seed)
    centre = np.array([0.52 * n, 0.47 * n])
    r = radius * n
    points = np.empty((0, 2))
    while len(points) < n_atoms:
        p = centre + rng.uniform(-r, r, 2)
        if np.sum((p - centre) ** 2) <= r**2 and (
            len(points) == 0 or np.min(np.sum((points - p) ** 2, axis=1)) >= (2.6 * sigma) ** 2
        ):
            points = np.vstack([points, p])
    y, x = np.arange(n, dtype=float), np.arange(n, dtype=float)
    gy = np.exp(-((y[None, :] - points[:, :1]) ** 2) / (2 * sigma**2))  # separable atoms
    gx = np.exp(-((x[None, :] - points[:, 1:]) ** 2) / (2 * sigma**2))
    image = gy.T @ gx
    image *= peak / image.max()
    region = ndimage.binary_fill_holes(image > 0.01 * peak)
    return image, region


def smooth_background(n, level, hump_width):
    """Tilted plane plus a Gaussian hump, both of amplitude `level` (the particle's mean signal)."""
    yy, xx = np.mgrid[:n, :n].astype(float)
    plane = level * (0.3 + 0.4 * xx / n - 0.3 * yy / n)
    hump = level * np.exp(-((yy - 0.35 * n) ** 2 + (xx - 0.6 * n) ** 2) / (2 * (hump_width * n) ** 2))
    return plane + hump


@pytest.fixture(scope="module")
def particle():
    return particle_image()


def residual(corrected, particle, region):
    """Mean |corrected − particle| over the particle region, as a fraction of its mean signal."""
    return float(np.abs(corrected - particle)[region].mean() / particle[region].mean())


@pytest.mark.parametrize("noise", [0.0, 0.2])
def test_smooth_background_removed(particle, noise):
    p, region = particle
    mean = p[region].mean()
    assert 3.0 < mean < 4.0  # peak 10, mean signal ≈ 3.4 over the particle
    bg = smooth_background(N, mean, hump_width=1.0)
    noisy = noise * np.random.default_rng(1).standard_normal(p.shape)
    corrected, background, mask = subtract_background(p + bg + noisy)
    # residual background only: compare with the particle plus its own noise
    res = residual(corrected, p + noisy, region)
    assert res <= 0.05, res
    assert float(np.abs(background - bg)[region].mean() / mean) <= 0.05
    # the particle region is inside the mask, and the mask is not much bigger
    assert np.all(mask[region] > 0)
    assert (mask > 0).sum() < 1.6 * region.sum()
    # outside the mask: exactly zero
    assert np.all(corrected[mask == 0] == 0)
    assert mask.min() >= 0 and mask.max() == 1.0
    # without the subtraction the error would be the background itself (≈ its mean level)
    assert float(np.abs(bg)[region].mean() / mean) > 1.0


def test_plain_harmonic_fill_misses_a_curved_hump_and_trend_fixes_it(particle):
    p, region = particle
    mean = p[region].mean()
    bg = smooth_background(N, mean, hump_width=0.45)  # hump about as wide as the particle
    plain = residual(subtract_background(p + bg)[0], p, region)
    quad = residual(subtract_background(p + bg, trend=2)[0], p, region)
    assert plain > 0.06          # harmonic underestimates a hump: ~ A R² / (2σ²)
    assert quad <= 0.02 and quad < plain / 4
    noisy = 0.2 * np.random.default_rng(2).standard_normal(p.shape)
    assert residual(subtract_background(p + bg + noisy, trend=2)[0], p + noisy, region) <= 0.05


def test_flat_background_removed_exactly(particle):
    p, region = particle
    corrected, background, mask = subtract_background(p + 2.5)
    reference, background0, mask0 = subtract_background(p)
    # a constant offset changes nothing but the background, by exactly that constant
    assert np.array_equal(mask, mask0)
    assert np.allclose(corrected, reference, rtol=0, atol=1e-9)
    assert np.allclose(background - background0, 2.5, rtol=0, atol=1e-9)
    # ... and what is left is the particle (its tails beyond the mask are < 1e-3 of the peak)
    inside = mask > 0
    assert np.abs(corrected - mask * p)[inside].max() < 1e-3 * p.max()
    assert np.all(corrected[~inside] == 0)
    # a pure plane too (harmonic functions are filled exactly), with or without a quadratic trend
    yy, xx = np.mgrid[:N, :N]
    plane = 1.0 + 0.01 * yy - 0.02 * xx
    for trend in (0, 2):
        _, background, mask = subtract_background(p + plane, trend=trend)
        assert np.abs(background - plane).max() < 0.01 * p.max()


def test_harmonic_fill_is_exact_for_harmonic_functions():
    yy, xx = np.mgrid[:40, :50].astype(float)
    saddle = (yy - 20) ** 2 - (xx - 25) ** 2 + 3 * yy  # ∇² = 0, also for the 5-point stencil
    box = np.zeros(saddle.shape, bool)
    box[8:30, 14:42] = True
    filled = harmonic_fill(np.where(box, 0.0, saddle), box)
    assert np.allclose(filled, saddle, atol=1e-8)
    # a mask touching the border (reflecting there) still obeys the maximum principle
    edge = box.copy()
    edge[15:20, 0:14] = True
    filled = harmonic_fill(np.where(edge, 0.0, saddle), edge)
    assert saddle[~edge].min() <= filled[edge].min() and filled[edge].max() <= saddle[~edge].max()
    assert np.allclose(filled[~edge], saddle[~edge])
    with pytest.raises(ValueError):
        harmonic_fill(saddle, np.ones_like(box))


def test_mask_options(particle):
    p, region = particle
    small = particle_mask(p, dilation=2)
    big = particle_mask(p, dilation=8)
    assert small.sum() < big.sum() and np.all(big[small])
    assert particle_mask(p, otsu_factor=2.0).sum() < particle_mask(p, otsu_factor=0.5).sum()
    _, _, hard = subtract_background(p + 1.0, smoothing=0)
    assert set(np.unique(hard)) == {0.0, 1.0}


def test_speed_256():
    p, region = particle_image(256, n_atoms=520)
    bg = smooth_background(256, p[region].mean(), hump_width=1.0)
    t = time.perf_counter()
    corrected, _, _ = subtract_background(p + bg)
    assert time.perf_counter() - t < 2.0
    assert residual(corrected, p, region) <= 0.05
