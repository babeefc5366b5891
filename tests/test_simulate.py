import dask
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from aetdask import physics
from aetdask.schema import atoms
from aetdask.simulate import amorphous_particle, linear

from ._util import ncc, needs_seed, raise_if_dask_computes


# ------------------------------------------------------------------ physics
def test_wavelength_known_values():
    assert physics.wavelength(200e3) == pytest.approx(0.025079, abs=2e-6)
    assert physics.wavelength(300e3) == pytest.approx(0.019687, abs=2e-6)
    assert physics.wavelength(80e3) == pytest.approx(0.041757, abs=2e-6)


def test_adf_cross_section_grows_with_z():
    sigma = [physics.adf_cross_section(s, 200e3) for s in ["C", "O", "Si", "Ge", "Pd", "Pt"]]
    assert all(np.diff(sigma) > 0)
    ratio = sigma[-1] / sigma[2]  # Pt / Si: Z-contrast roughly (78/14)^1.5-2
    assert 10 < ratio < 35
    # a wider annulus collects more
    assert physics.adf_cross_section("Si", 200e3, (30, 190)) > physics.adf_cross_section("Si", 200e3, (60, 190))


def test_probe_transfer_is_the_fourier_transform_of_the_airy_intensity():
    energy, alpha = 200e3, 17.5
    n, d = 512, 0.05
    k = np.fft.fftfreq(n, d)
    kk = np.hypot(*np.meshgrid(k, k, indexing="ij"))
    aperture = (kk <= alpha * 1e-3 / physics.wavelength(energy)).astype(float)
    intensity = np.abs(np.fft.ifft2(aperture)) ** 2
    otf = np.fft.fft2(intensity).real
    otf /= otf[0, 0]
    np.testing.assert_allclose(otf, physics.probe_transfer(kk, energy, alpha), atol=0.02)
    assert physics.probe_transfer(0.0, energy, alpha) == pytest.approx(1.0)


# ------------------------------------------------------------------ linear model
def test_single_atom_lands_at_its_subpixel_position():
    p, n = 0.2, 64
    model = atoms([[0.37, -0.23, 0.5]], ["Si"])  # x, y, z in Å
    img = linear(model, angles=[0.0], pixel_size=p, shape=n).values[0].astype(float)
    yy, xx = np.mgrid[:n, :n]
    cy, cx = (img * yy).sum() / img.sum(), (img * xx).sum() / img.sum()
    # (the centroid of a cropped image is biased by the Airy tails: 0.05 px tolerance)
    assert cx == pytest.approx(n // 2 + 0.37 / p, abs=0.05)
    assert cy == pytest.approx(n // 2 - 0.23 / p, abs=0.05)
    # at θ = 90° the depth coordinate z shows up on the detector's y axis: y_det = -z
    img90 = linear(model, angles=[90.0], pixel_size=p, shape=n).values[0].astype(float)
    cy90 = (img90 * yy).sum() / img90.sum()
    assert cy90 == pytest.approx(n // 2 - 0.5 / p, abs=0.05)


def test_render_places_atoms_exactly_at_subpixel_positions():
    from aetdask.kernels.simulation.linear_adf import render

    m = 40
    pos = np.array([[17.3, 21.77]])
    transfer = np.ones((1, m, m // 2 + 1))  # a point atom
    full = (slice(None), slice(None))
    img = render(pos, np.array([0]), transfer, (m, m), full, 1.0)
    f = np.fft.fft2(img)
    assert f[1, 0] / abs(f[1, 0]) == pytest.approx(np.exp(-2j * np.pi * 17.3 / m), abs=1e-9)
    assert f[0, 1] / abs(f[0, 1]) == pytest.approx(np.exp(-2j * np.pi * 21.77 / m), abs=1e-9)
    assert img.sum() == pytest.approx(1.0)


def test_integrated_intensity_is_the_adf_cross_section():
    p = 0.25
    model = atoms([[0, 0, 0], [3, 0, 0]], ["Si", "Pt"])
    img = linear(model, angles=[0.0], pixel_size=p, shape=128, dtype="float64").values[0]
    total = img.sum() * p**2
    expected = physics.adf_cross_section("Si", 200e3) + physics.adf_cross_section("Pt", 200e3)
    assert total == pytest.approx(expected, rel=0.02)


def test_lazy_one_task_per_projection_and_like():
    model = amorphous_particle(30, seed=2)
    with raise_if_dask_computes():
        ts = linear(model, angles=np.arange(0, 180, 30), pixel_size=0.3, shape=48, dose=1e4, seed=5)
    assert ts.dims == ("tilt", "y", "x") and ts.data.numblocks == (6, 1, 1)
    assert ts.attrs["units"] == "counts" and ts.attrs["dose"] == 1e4
    again = linear(model, like=ts, dose=1e4, seed=5)
    np.testing.assert_array_equal(again.theta, ts.theta)
    assert again.attrs["pixel_size"] == 0.3 and again.shape == ts.shape


def test_noise_is_seeded_per_projection_and_scheduler_independent():
    model = amorphous_particle(30, seed=2)
    kw = dict(angles=np.arange(0, 180, 30), pixel_size=0.3, shape=48, dose=1e4, seed=5)
    with dask.config.set(scheduler="threads"):
        a = linear(model, **kw).values
    with dask.config.set(scheduler="synchronous"):
        b = linear(model, **kw).values
        single = linear(model, **{**kw, "angles": kw["angles"]})[3].values
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[3], single)
    c = linear(model, **{**kw, "seed": 6}).values
    assert not np.array_equal(a, c)
    assert linear(model, **{**kw, "seed": None}).attrs["provenance"][0]["params"]["seed"] is not None


def test_poisson_statistics_and_background():
    model = amorphous_particle(40, seed=3)
    kw = dict(angles=[0.0] * 40, pixel_size=0.4, shape=48, dose=2e4, background=2.0, seed=1)
    expected = linear(model, poisson=False, **kw).values.astype(float)
    noisy = linear(model, **kw).values.astype(float)
    assert expected.min() >= 2.0
    mean, var = noisy.mean(axis=0), noisy.var(axis=0, ddof=1)
    assert np.mean(mean) == pytest.approx(np.mean(expected[0]), rel=0.01)
    assert np.mean(var / expected[0]) == pytest.approx(1.0, abs=0.05)
    assert np.all(noisy == np.round(noisy))


def test_warns_when_atoms_leave_the_field_of_view():
    model = atoms([[20.0, 0, 0]], ["Si"])
    with pytest.warns(UserWarning, match="outside"):
        linear(model, angles=[0.0], pixel_size=0.2, shape=32)


def test_amorphous_particle_respects_minimum_distance():
    from scipy.spatial.distance import pdist

    model = amorphous_particle(150, species=["Si", "Ge"], seed=4)
    assert model.sizes["atom"] == 150 and set(model.species.values) == {"Si", "Ge"}
    assert pdist(model.position.values).min() >= 0.95 * 2 * 1.11 - 1e-9  # Si covalent radius 1.11 Å
    np.testing.assert_allclose(model.position.values.mean(axis=0), 0, atol=1e-9)
    with pytest.raises(ValueError, match="larger radius"):
        amorphous_particle(50, radius=2.0, max_tries=2000)


# ------------------------------------------------------------------ seed acceptance
@needs_seed
def test_seed_ground_truth_reproduces_the_seed_tilt_series(seed_dir):
    from aetdask.io import read_atoms, read_tilt_series

    tilts = read_tilt_series(seed_dir / "aSi_2nmFosCetr_Dose1p6e4_cov35pm_ForBM3D.mat",
                             angles=seed_dir / "Si_Angle.mat", pixel_size=0.195)
    truth = read_atoms(seed_dir / "aSi_208atoms_GT.txt")
    sim = linear(truth, like=tilts).values
    raw = tilts.values
    scores = [ncc(gaussian_filter(raw[k].astype(float), 1.5), sim[k]) for k in range(len(raw))]
    assert min(scores) >= 0.80, scores
    # the test can tell: a transposed (wrong-axis) convention scores far lower
    wrong = [ncc(gaussian_filter(raw[k].astype(float), 1.5), sim[k].T) for k in range(len(raw))]
    assert min(wrong) < 0.75
    # the physical scale is right too: expected counts at the file's dose match the data's mean
    counts = linear(truth, like=tilts, dose=1.6e4, background=1.0, poisson=False).values
    assert counts.mean() == pytest.approx(raw.mean(), rel=0.05)


def test_add_noise_dose_statistics():
    """Mean counts = dose · pixel area · detected fraction + background, within 1 % (and Poisson variance)."""
    from aetdask.schema import tilt_series
    from aetdask.simulate.noise import add_noise

    rng = np.random.default_rng(0)
    clean = tilt_series(rng.uniform(0, 0.02, size=(4, 128, 128)), [0, 45, 90, 135], 0.3, units="fraction")
    dose, background = 2e4, 1.5
    counts = add_noise(clean, dose, background=background, seed=11).values
    expected = dose * 0.3**2 * clean.values + background
    assert counts.mean() == pytest.approx(expected.mean(), rel=0.01)
    assert np.var(counts - expected) == pytest.approx(expected.mean(), rel=0.03)
    again = add_noise(clean.chunk({"tilt": 1}), dose, background=background, seed=11).values
    np.testing.assert_array_equal(counts, again)  # seeded per projection, whatever the chunks
    with pytest.raises(Exception, match="dose"):
        add_noise(clean, -1.0)
