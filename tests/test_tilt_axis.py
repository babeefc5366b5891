"""The tilt axis where it really is: recorded shifts that follow the applied ones (no pull towards zero),
noise not taken for misalignment, and an in-plane tilt axis carried in the projections' Euler angles
(never by resampling them), and found from the data."""

import numpy as np
import pytest

from aetdask.geometry import detector_coordinates, remove_rigid_motion, rigid_motion_basis
from aetdask.kernels.preprocessing.align import beyond_noise, common_line_shifts
from aetdask.kernels.preprocessing.shift import fourier_shift
from aetdask.kernels.preprocessing.tilt_axis import estimate_tilt_axis, rotate_from_x, rotate_to_x, turned_angles
from aetdask.preprocess import preprocess
from aetdask.simulate import amorphous_particle, linear

THETA = np.arange(0.0, 180.0, 6.0)


@pytest.fixture(scope="module")
def model():
    return amorphous_particle(80, species=["Si", "Ge"], seed=2)


@pytest.fixture(scope="module")
def clean(model):
    """A 96-px series of a small particle on a flat background of 1 count, no noise."""
    return linear(model, angles=THETA, pixel_size=0.3, shape=96, dose=2e5, poisson=False, background=1.0).compute()


def _counts(clean, applied, seed=4):
    moved = fourier_shift(clean.values.astype(float) - 1.0, applied) + 1.0
    return clean.copy(data=np.random.default_rng(seed).poisson(np.clip(moved, 0, None)).astype(np.float32))


def test_integer_shifts_are_recorded_as_applied(clean):
    """Shifts of up to ±5 px, Poisson counts: recorded to ≤ 0.1 px RMS, with a slope of 1 (before: the
    shrinkage towards zero recorded them short by e²/(s² + e²))."""
    applied = np.random.default_rng(3).integers(-5, 6, size=(len(THETA), 2)).astype(float)
    out = preprocess(_counts(clean, applied), "none").compute()
    found = np.c_[out.shift_y.values, out.shift_x.values]
    basis = rigid_motion_basis(THETA)[1]
    err = remove_rigid_motion(found + applied, basis)
    assert np.sqrt((err**2).mean(axis=0)).max() <= 0.1
    found, applied = remove_rigid_motion(found, basis), remove_rigid_motion(applied, basis)  # the object's centre aside
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


@pytest.mark.parametrize("angle", [1.0, -7.5, 30.0, 85.0])
def test_turned_angles_turn_the_detector_and_keep_theta(angle):
    euler = np.c_[np.zeros(30), THETA - 60.0, np.zeros(30)]
    e = turned_angles(euler, angle)
    pts = np.random.default_rng(0).normal(0, 5, (20, 3))
    a = np.deg2rad(angle)
    turn = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])  # (y_det, x_det) → image (y, x)
    want = np.einsum("ij,tnj->tni", turn, detector_coordinates(pts, euler))
    np.testing.assert_allclose(detector_coordinates(pts, e), want, atol=1e-9)
    if abs(angle) <= 10:  # the branch that keeps θ's meaning (a large turn mixes θ into φ and ψ)
        assert np.abs(e[:, 1] - euler[:, 1]).max() <= abs(angle)


def test_a_given_tilt_axis_is_carried_in_the_geometry_not_by_resampling(model, clean):
    """A series turned by 20° with shifts of ±3 px: given its axis, the product holds the projections
    as they are, Euler angles whose projections of the model are the turned images, and the shifts
    recorded in the image's own (y, x)."""
    angle = 20.0
    applied = np.random.default_rng(6).integers(-3, 4, size=(len(THETA), 2)).astype(float)
    turned = clean.copy(data=rotate_from_x(clean.values.astype(float) - 1.0, angle) + 1.0)
    series = _counts(turned, applied, seed=7)
    out = preprocess(series, "none", tilt_axis=angle).compute()
    plain = preprocess(series, "none").compute()
    np.testing.assert_array_equal(out.values, plain.values)  # not resampled
    e = np.c_[out.phi.values, out.theta.values, out.psi.values]
    np.testing.assert_allclose(e, turned_angles(np.c_[0 * THETA, THETA, 0 * THETA], angle), atol=1e-9)
    sim = linear(model, angles=e, pixel_size=0.3, shape=96, poisson=False).compute().values
    ncc = [np.corrcoef(s.ravel(), t.ravel())[0, 1] for s, t in zip(sim, turned.values)]
    assert min(ncc) > 0.99
    found = np.c_[out.shift_y.values, out.shift_x.values]
    a = np.deg2rad(angle)  # rigid translations of the object show up along the turned detector axes
    turn = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])  # (y_det, x_det) → image (y, x)
    err = remove_rigid_motion(found + applied, np.einsum("ij,tjk->tik", turn, rigid_motion_basis(THETA)[1]))
    assert np.sqrt((err**2).mean(axis=0)).max() <= 0.1, err


def test_the_tilt_axis_is_found_in_clean_projections(clean):
    data = clean.values.astype(float) - 1.0
    assert abs(estimate_tilt_axis(data)[0]) <= 0.2
    found, _ = estimate_tilt_axis(rotate_from_x(data, 12.0))
    assert abs(found - 12.0) <= 0.2


def test_the_tilt_axis_option_carries_the_direction_into_the_preprocessed_angles(tmp_path):
    from click.testing import CliRunner
    from distributed import LocalCluster

    from aetdask.cli import main
    from aetdask.io import RunStore

    model = amorphous_particle(20, species=["Si"], seed=3)
    ts = linear(model, angles=np.arange(-60.0, 60.0, 10.0), pixel_size=0.3, shape=48, dose=2e5, background=1.0)
    RunStore(tmp_path / "r.zarr").write("raw", ts.compute())
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address=":0") as cluster:
        args = ["preprocess", str(tmp_path / "r.zarr"), "--scheduler", cluster.scheduler_address, "--json"]
        bad = CliRunner().invoke(main, args + ["--tilt-axis", "inf"])
        assert bad.exit_code == 2 and "finite angle" in bad.output
        result = CliRunner().invoke(main, args + ["--tilt-axis", "20"])
        assert result.exit_code == 0, result.output
    pre = RunStore(tmp_path / "r.zarr", create=False).read("preprocessed")
    raw = RunStore(tmp_path / "r.zarr", create=False).read("raw")
    want = turned_angles(np.stack([raw.phi, raw.theta, raw.psi], axis=1), 20.0)
    np.testing.assert_allclose(np.stack([pre.phi, pre.theta, pre.psi], axis=1), want, atol=1e-6)


def _turned_counts(model, angle, shifts=0, seed=5):
    """Poisson counts of ``model`` on a detector turned by ``angle`` degrees (the geometry, not resampled images),
    each projection moved by whole pixels up to ``shifts``."""
    e = turned_angles(np.c_[0 * THETA, THETA, 0 * THETA], angle)
    ideal = linear(model, angles=e, pixel_size=0.3, shape=96, dose=2e4, poisson=False, background=1.0).compute()
    rng = np.random.default_rng(seed)
    moved = [np.roll(p, tuple(rng.integers(-shifts, shifts + 1, 2))) for p in ideal.values] if shifts else ideal.values
    counts = rng.poisson(np.clip(np.asarray(moved, dtype=float), 0, None)).astype(np.float32)
    return ideal.copy(data=counts).assign_coords(phi=("tilt", 0 * THETA), theta=("tilt", THETA), psi=("tilt", 0 * THETA))


@pytest.mark.parametrize("angle", [0.0, 30.0, -62.0])
def test_the_tilt_axis_is_found_in_noisy_misaligned_counts_within_its_standard_error(model, angle):
    """The common lines compared with their phases, each projection's shift along the axis fitted: a turned axis
    is found in Poisson counts whatever the projections' shifts, to within 4 of its (honest) standard errors."""
    counts = _turned_counts(model, angle, shifts=4).values.astype(float)
    stack = counts - np.median(counts, axis=(1, 2), keepdims=True)
    found, se = estimate_tilt_axis(stack, counts.sum(axis=(1, 2)))
    assert 0 < se < 0.5  # magnitudes alone: 0.9–1.8° on these counts, and 6.9° off at −62°
    assert abs(found - angle) <= max(4 * se, 0.2), (found, se)


def test_a_turned_axis_is_found_and_used_where_asked_and_said_otherwise(model):
    """Not given, the axis the images' common lines give is a coordinate of the product (lazy, like every other);
    used where asked (``find_tilt_axis``: the Euler angles of a detector turned by it), else a check says the
    images contradict the angles."""
    from aetdask.preprocess import axis_warning

    series = _turned_counts(model, 25.0)
    plain = preprocess(series, "none").compute()
    np.testing.assert_array_equal(plain.theta.values, THETA)  # not used: the angles as given
    assert abs(float(plain.tilt_axis_found) - 25.0) <= 4 * float(plain.tilt_axis_found_se)
    assert "tilt axis at +2" in axis_warning(plain)
    found = preprocess(series, "none", find_tilt_axis=True).compute()
    assert found.attrs["provenance"][-1]["params"]["tilt_axis"] == "found" and axis_warning(found) is None
    want = turned_angles(np.c_[0 * THETA, THETA, 0 * THETA], float(found.tilt_axis_found))
    np.testing.assert_allclose(np.c_[found.phi.values, found.theta.values, found.psi.values], want, atol=1e-6)
    # a given axis is checked too: the right one passes, one of the wrong sign is named
    assert axis_warning(preprocess(series, "none", tilt_axis=25.0).compute()) is None
    wrong = axis_warning(preprocess(series, "none", tilt_axis=-25.0).compute())
    assert "tilt axis at +2" in wrong and "gives -25.00°" in wrong
    truth = turned_angles(np.c_[0 * THETA, THETA, 0 * THETA], 25.0)
    ideal = linear(model, angles=truth, pixel_size=0.3, shape=96, poisson=False).compute().values
    used = linear(model, angles=want, pixel_size=0.3, shape=96, poisson=False).compute().values
    assert min(np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(ideal, used)) > 0.99


def test_an_axis_along_x_says_nothing(model):
    from aetdask.preprocess import axis_warning

    out = preprocess(_turned_counts(model, 0.0), "none").compute()
    assert abs(float(out.tilt_axis_found)) < 1.0 and axis_warning(out) is None


def test_the_tilt_axis_option_takes_auto_or_a_finite_angle():
    import click

    from aetdask.cli import _AxisAngle

    kind = _AxisAngle()
    assert kind.convert("AUTO", None, None) == "auto" and kind.convert("12.5", None, None) == 12.5
    with pytest.raises(click.BadParameter, match="finite angle"):
        kind.convert("nan", None, None)


def test_the_command_says_a_turned_axis_in_one_line_and_auto_uses_it(model, tmp_path):
    from click.testing import CliRunner
    from distributed import LocalCluster

    from aetdask.cli import main
    from aetdask.io import RunStore

    RunStore(tmp_path / "r.zarr").write("raw", _turned_counts(model, 25.0))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address=":0") as cluster:
        args = ["preprocess", str(tmp_path / "r.zarr"), "--scheduler", cluster.scheduler_address]
        said = CliRunner().invoke(main, args)
        assert said.exit_code == 0, said.output
        lines = [line for line in said.output.splitlines() if "tilt axis at" in line]
        assert len(lines) == 1 and lines[0].startswith("warning: r.zarr/preprocessed: the images' common lines")
        used = CliRunner().invoke(main, args + ["--tilt-axis", "auto"])
        assert used.exit_code == 0 and "tilt axis at" not in used.output, used.output
    pre = RunStore(tmp_path / "r.zarr", create=False).read("preprocessed")
    assert pre.attrs["provenance"][-1]["params"]["tilt_axis"] == "found"
    assert abs(float(pre.tilt_axis_found) - 25.0) <= 4 * float(pre.tilt_axis_found_se)
