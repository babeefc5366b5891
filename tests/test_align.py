"""Known-answer tests for aetdask.kernels.preprocessing.align (registration, centre of mass, common line, drift)."""

import numpy as np
import pytest

from aetdask.kernels.preprocessing import align
from aetdask.kernels.preprocessing.shift import fourier_shift
from aetdask.simulate import amorphous_particle, linear

ANGLES = np.arange(0.0, 180.0, 6.0)  # 30 projections
PIXEL = 0.3                          # Å; the 60-atom particle spans ~45 of 64 px


def rms(x):
    return float(np.sqrt(np.mean(np.square(x))))


@pytest.fixture(scope="module")
def series():
    """Noise-free linear-ADF tilt series (30, 64, 64) of a 60-atom Si particle centred on the origin."""
    model = amorphous_particle(60, species=["Si"], seed=1)
    ts = linear(model, angles=ANGLES, pixel_size=PIXEL, shape=64).values.astype(float)
    return ts / ts.max()


@pytest.fixture(scope="module")
def misaligned(series):
    """The series with known random shifts (±2 px, sub-pixel) and scale errors (±10 %)."""
    rng = np.random.default_rng(0)
    shifts = rng.uniform(-2.0, 2.0, (len(series), 2))
    scales = rng.uniform(0.9, 1.1, len(series))
    return fourier_shift(series, shifts) * scales[:, None, None], shifts, scales


def check_recovery(data, shifts, scales, tol_shift, tol_scale):
    dy = align.center_of_mass_shifts(data)
    dx = align.common_line_shifts(data)
    sc = align.common_line_scales(data)
    # a shift of the whole series is not observable: compare after removing the means;
    # the recovered shifts undo the applied ones, hence the sign
    err_y = (dy - dy.mean()) + (shifts[:, 0] - shifts[:, 0].mean())
    err_x = dx + (shifts[:, 1] - shifts[:, 1].mean())
    assert abs(dx.mean()) < 1e-9
    assert rms(err_y) <= tol_shift, rms(err_y)
    assert rms(err_x) <= tol_shift, rms(err_x)
    # scales multiply the images, so they undo the applied factors
    want = (1 / scales) / np.mean(1 / scales)
    assert np.max(np.abs(sc / sc.mean() - want)) <= tol_scale
    # and applying them gives an aligned, equal-total series
    fixed = fourier_shift(data, np.stack([dy, dx], axis=1)) * sc[:, None, None]
    totals = fixed.sum(axis=(1, 2))
    assert np.ptp(totals) / totals.mean() < 1e-6
    return rms(err_y), rms(err_x)


def test_center_of_mass_and_common_line_recover_shifts_and_scales(misaligned):
    data, shifts, scales = misaligned
    assert rms(shifts - shifts.mean(axis=0)) > 1.0  # the errors to undo are large
    err_y, err_x = check_recovery(data, shifts, scales, tol_shift=0.1, tol_scale=0.01)
    assert err_y < 0.05 and err_x < 0.01  # noise-free: ~0.014 px and ~1e-4 px


def test_recovery_with_poisson_noise(misaligned):
    data, shifts, scales = misaligned
    counts = np.random.default_rng(5).poisson(200.0 * np.clip(data, 0, None)).astype(float)  # ~200 counts peak
    # ~1e5 counts per projection: the totals themselves scatter by ~0.3 %, so 2 % for the worst of 30
    check_recovery(counts, shifts, scales, tol_shift=0.1, tol_scale=0.02)


@pytest.mark.parametrize("shift", [(1.37, -0.62), (-1.81, 0.23), (0.04, 2.96)])
def test_register_subpixel(series, shift):
    image = series[5]
    moved = fourier_shift(image[None], np.array([shift]))[0]
    dy, dx = align.register(image, moved)
    assert abs(dy + shift[0]) <= 0.05 and abs(dx + shift[1]) <= 0.05
    # the returned shift, applied with fourier_shift, aligns the image
    back = fourier_shift(moved[None], np.array([[dy, dx]]))[0]
    assert np.abs(back - image).max() < 0.01 * image.max()


def test_register_1d_and_shift_1d():
    x = np.arange(80, dtype=float)
    line = np.exp(-((x - 35.0) ** 2) / 12.0) + 0.5 * np.exp(-((x - 44.0) ** 2) / 4.0)
    for s in (-3.73, 0.018, 1.5, 6.21):
        assert abs(align.register_1d(line, align.shift_1d(line, s)) + s) < 0.005
        assert abs(align.register_1d(line, 3.0 * align.shift_1d(line, s), upsample=5) + s) < 0.02


def smooth_drift(n):
    u = (np.arange(n) - n // 2) / n
    return np.stack([1.5 * np.sin(2 * np.pi * u) + 0.8 * u, 8.0 * u**2 - 1.0 * u], axis=1)


def test_prealign_neighbours_recovers_smooth_drift(series):
    n = len(series)
    drift = smooth_drift(n)
    relative = drift - drift[n // 2]
    assert np.abs(relative).max() > 2.0
    # (a) one view repeated with the drift and Poisson noise: the chain recovers it directly
    frames = np.repeat(series[:1], n, axis=0)
    counts = np.random.default_rng(2).poisson(200.0 * np.clip(fourier_shift(frames, drift), 0, None)).astype(float)
    found = align.prealign_neighbours(counts)
    assert np.all(found[n // 2] == 0)
    assert rms(found + relative) <= 0.2, rms(found + relative)
    # (b) the real tilt series: neighbours differ by 6°, so the chain also picks up how the
    # projections change (about 0.3 px RMS here, independent of the drift); what the drift
    # adds is recovered
    base = align.prealign_neighbours(series)
    found = align.prealign_neighbours(fourier_shift(series, drift))
    assert rms(found - base + relative) <= 0.05, rms(found - base + relative)


# --- drift correction ------------------------------------------------------------------

SIZE = 96
VELOCITY = np.array([0.3, 0.5])  # px per frame, (y, x)


def blob_field(n_blobs=250, sigma=1.5, seed=0):
    """An analytic image: random Gaussian blobs, defined beyond the field of view."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(-10, SIZE + 10, (n_blobs, 2))
    amp = rng.uniform(0.5, 1.0, n_blobs)

    def image(yy, xx):
        out = np.zeros(yy.shape)
        for (py, px), a in zip(pos, amp):
            out += a * np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * sigma**2))
        return out

    return image


def raster_frames(image, velocity, n_frames=8):
    """Frames of a raster scan (rows = slow axis) of a sample drifting at `velocity` px/frame."""
    r, x = np.mgrid[:SIZE, :SIZE].astype(float)
    frames = [image(r - velocity[0] * (f + r / SIZE), x - velocity[1] * (f + r / SIZE)) for f in range(n_frames)]
    return np.array(frames), image(r, x)


def ncc(a, b, margin=10):
    """Normalised cross-correlation over the centre (drifted-in edges excluded)."""
    a = a[margin:-margin, margin:-margin] - a[margin:-margin, margin:-margin].mean()
    b = b[margin:-margin, margin:-margin] - b[margin:-margin, margin:-margin].mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.fixture(scope="module")
def drifted():
    return raster_frames(blob_field(), VELOCITY)


def test_drift_correct_noise_free(drifted):
    frames, clean = drifted
    average, shifts = align.drift_correct(frames)
    assert np.all(shifts[0] == 0)
    assert np.allclose(shifts, np.arange(len(frames))[:, None] * shifts[1][None, :])  # −v·f
    assert np.abs(-shifts[1] - VELOCITY).max() <= 0.01
    assert ncc(average, clean) > 0.9995
    # the shear matters: shifting whole frames only is clearly worse
    measured = np.array([align.register(frames[0], f) for f in frames])
    assert ncc(fourier_shift(frames, measured).mean(axis=0), clean) < 0.995


def test_drift_correct_with_poisson_noise(drifted):
    frames, clean = drifted
    counts = np.random.default_rng(1).poisson(20.0 * frames + 2.0).astype(float)
    average, shifts = align.drift_correct(counts)
    velocity = -shifts[1]
    assert np.abs(velocity - VELOCITY).max() <= 0.05, velocity
    plain = ncc(counts.mean(axis=0), clean)
    corrected = ncc(average, clean)
    assert corrected > 0.98 and corrected - plain > 0.2, (corrected, plain)
    assert corrected > ncc(counts[0], clean) + 0.05  # better than one frame: the averaging works


def test_drift_correct_no_drift_is_plain_average():
    rng = np.random.default_rng(3)
    frames = np.repeat(blob_field(seed=4)(*np.mgrid[:SIZE, :SIZE].astype(float))[None], 4, axis=0)
    frames = frames + 0.01 * rng.standard_normal(frames.shape)
    average, shifts = align.drift_correct(frames)
    assert np.abs(shifts).max() < 0.01
    assert np.abs(average - frames.mean(axis=0)).max() < 0.01


def test_input_checks():
    with pytest.raises(ValueError):
        align.common_line_shifts(np.zeros((4, 4)))
    with pytest.raises(ValueError):
        align.common_line_scales(np.zeros((2, 4, 4)))


def test_projection_matching_records_shifts_unshrunk():
    """Photon-noise-limited shifts: projection matching against reconstructions from the other fold
    recovers whole- and sub-pixel shifts without pulling them towards zero, where the centre of mass
    and the common line (the whole field's noise with its lever arm) are off by several tenths."""
    from aetdask.geometry import remove_rigid_motion, rigid_motion_basis
    from aetdask.kernels.preprocessing.matching import projection_matching
    from aetdask.kernels.tomography.iterative import resire
    from aetdask.kernels.tomography.projector_slices import SliceProjector

    model = amorphous_particle(60, species=["Si"], seed=1)
    counts = linear(model, angles=ANGLES, pixel_size=PIXEL, shape=64, dose=1e5, background=1.0, seed=4).values
    rng = np.random.default_rng(1)
    applied = rng.integers(-3, 4, (len(ANGLES), 2)) + rng.uniform(-0.5, 0.5, (len(ANGLES), 2))
    data = fourier_shift(counts.astype(float), applied) - 1.0  # background-free
    variance = np.clip(data + 1.0, 0.0, None)
    basis = rigid_motion_basis(np.c_[0 * ANGLES, ANGLES, 0 * ANGLES])[1]

    def reproject(aligned, train, test):
        vol, _ = resire(np.ascontiguousarray(aligned[train], dtype=np.float32),
                        SliceProjector((64, 64), 64, ANGLES[train]), 30)
        return SliceProjector((64, 64), 64, ANGLES[test]).forward(vol)

    def error(found):
        return np.sqrt((remove_rigid_motion(found + applied, basis) ** 2).mean(axis=0))  # found undoes applied

    initial = np.c_[align.center_of_mass_shifts(data, background=None), align.common_line_shifts(data)]
    found, errors, history = projection_matching(data, variance, basis, reproject, initial)
    assert error(initial).max() > 0.15  # the starting point: a few tenths of a pixel
    assert error(found).max() < 0.08, error(found)
    for i in range(2):  # recorded against applied: a slope of 1, no pull towards zero
        assert abs(np.polyfit(-applied[:, i], found[:, i], 1)[0] - 1.0) < 0.02
    assert history[-1] < history[0]
    assert np.all(np.isfinite(errors)) and 0.02 < np.median(errors) < 0.3  # photon-noise errors, in px
