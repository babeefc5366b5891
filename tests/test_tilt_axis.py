"""The tilt axis where it really is: its in-plane direction found from the data, the projections turned
only when it is off x, and recorded shifts that follow the applied ones (no pull towards zero)."""

import numpy as np
import pytest

from aetdask.geometry import remove_rigid_motion, rigid_motion_basis
from aetdask.kernels.align import beyond_noise, common_line_shifts
from aetdask.kernels.shift import fourier_shift
from aetdask.kernels.tilt_axis import estimate_tilt_axis, rotate_from_x, rotate_to_x
from aetdask.preprocess import preprocess
from aetdask.simulate import amorphous_particle, linear

from ._util import needs_seed

THETA = np.arange(0.0, 180.0, 6.0)


@pytest.fixture(scope="module")
def clean():
    """A 96-px series of a small particle on a flat background of 1 count, no noise."""
    model = amorphous_particle(80, species=["Si", "Ge"], seed=2)
    return linear(model, angles=THETA, pixel_size=0.3, shape=96, dose=2e5, poisson=False, background=1.0).compute()


def test_integer_shifts_are_recorded_as_applied(clean):
    """Shifts of up to ±5 px, Poisson counts: recorded to ≤ 0.1 px RMS, with a slope of 1 (before: the
    shrinkage towards zero recorded them short by e²/(s² + e²))."""
    applied = np.random.default_rng(3).integers(-5, 6, size=(len(THETA), 2)).astype(float)
    moved = fourier_shift(clean.values.astype(float) - 1.0, applied) + 1.0
    counts = np.random.default_rng(4).poisson(np.clip(moved, 0, None)).astype(np.float32)
    out = preprocess(clean.copy(data=counts), "none").compute()
    found = np.c_[out.shift_y.values, out.shift_x.values]
    err = remove_rigid_motion(found + applied, rigid_motion_basis(THETA)[1])
    assert np.sqrt((err**2).mean(axis=0)).max() <= 0.1
    for i in range(2):
        slope = np.polyfit(-applied[:, i], found[:, i], 1)[0]
        assert abs(slope - 1) <= 0.02, slope


def test_common_line_shifts_move_exactly_with_the_lines():
    rng = np.random.default_rng(0)
    lines = rng.poisson(20 + 30 * np.exp(-((np.arange(64) - 32.0) ** 2) / 200.0), (12, 64)).astype(float)
    d0 = common_line_shifts(lines[:, None, :])
    roll = rng.integers(-5, 6, 12)
    d1 = common_line_shifts(np.stack([np.roll(line, r) for line, r in zip(lines, roll)])[:, None, :])
    diff = d1 + roll - d0
    # exact up to the 1/20-px grid of the sub-pixel search (the series' mean shift is removed)
    assert np.abs(diff - diff.mean()).max() <= 0.03


def test_noise_alone_is_not_taken_for_misalignment():
    noise = np.random.default_rng(1).normal(0, 0.5, 60)
    trend, real, _, _ = beyond_noise(noise, np.full(60, 0.5), np.ones((60, 1)))
    assert not real and abs(trend[0]) < 0.2
    assert beyond_noise(noise + np.random.default_rng(2).integers(-5, 6, 60), np.full(60, 0.5), np.ones((60, 1)))[1]


def test_rotation_round_trip():
    yy, xx = np.mgrid[:33, :33]
    img = np.exp(-((yy - 16) ** 2 / 4.0 + (xx - 19) ** 2 / 20.0))[None]
    turned = rotate_from_x(img, 30.0)
    peak = np.unravel_index(turned[0].argmax(), (33, 33))
    assert peak == (18, 19)  # 3 px along x from the centre (16, 16) ends 30° towards +y
    assert np.abs(rotate_to_x(turned, 30.0) - img).max() < 0.02


def test_an_aligned_series_is_found_aligned_and_not_resampled(clean):
    half = clean.isel(tilt=slice(None, None, 2))
    series = half.copy(data=np.random.default_rng(5).poisson(half.values).astype(np.float32))
    out = preprocess(series, "none").compute()
    assert abs(float(out.tilt_axis)) <= 3 * float(out.tilt_axis_se) and abs(float(out.tilt_axis)) < 1.0
    assert not bool(out.tilt_axis_rotated)
    given = preprocess(series, "none", tilt_axis=0.0).compute()  # a user's 0: no resampling either
    assert not bool(given.tilt_axis_rotated)
    np.testing.assert_array_equal(out.values, given.values)
    assert out.attrs["provenance"][-1]["params"]["tilt_axis"] is None


@needs_seed
@pytest.mark.parametrize("angle", [7.3, -12.0])
def test_a_rotated_seed_series_has_its_axis_found(seed_dir, angle):
    """The seed's 1.6×10⁴ e⁻/Å² counts (flat background of about 1 count removed), each projection moved
    by whole pixels and the series turned by ``angle``: the axis within 0.2°."""
    from aetdask.io import read_tilt_series

    raw = read_tilt_series(seed_dir / "aSi_2nmFosCetr_Dose1p6e4_cov35pm_ForBM3D.mat",
                           angles=seed_dir / "Si_Angle.mat", pixel_size=0.195).values.astype(float)
    applied = np.random.default_rng(0).integers(-5, 6, size=(len(raw), 2))
    signal = np.stack([np.roll(p, tuple(a), axis=(0, 1)) for p, a in zip(raw, applied)]) - np.median(raw)
    found, se = estimate_tilt_axis(rotate_from_x(signal, angle))
    assert abs(found - angle) <= 0.2, (found, se)
    assert abs(found) > 3 * se
