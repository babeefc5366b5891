import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from aetdask.geometry import remove_rigid_motion, rigid_motion_basis
from aetdask.kernels.preprocessing.shift import fourier_shift
from aetdask.preprocess import aligned, combine_frames, preprocess
from aetdask.simulate import amorphous_particle, linear

from ._util import ncc, needs_seed, raise_if_dask_computes


@pytest.fixture(scope="module")
def series():
    model = amorphous_particle(80, species=["Si", "Ge"], seed=2)
    angles = np.arange(0.0, 180.0, 6.0)
    clean = linear(model, angles=angles, pixel_size=0.3, shape=96, dose=2e5, poisson=False, background=1.0)
    return model, angles, clean.compute()


def test_stage_is_lazy_and_records_its_coords(series):
    _, _, clean = series
    with raise_if_dask_computes():
        out = preprocess(clean, "none")
    for name in ("noise_alpha", "noise_sigma", "shift_y", "shift_x", "scale"):
        assert name in out.coords and out.coords[name].dims == ("tilt",)
    assert out.data.numblocks[0] == clean.sizes["tilt"] and out.attrs["units"] == "a.u."
    assert out.attrs["provenance"][-1]["stage"] == "preprocess"


def test_known_shifts_and_scales_are_recovered(series):
    _, _, clean = series
    rng = np.random.default_rng(0)
    n = clean.sizes["tilt"]
    shifts = rng.uniform(-2, 2, (n, 2))
    scales = rng.uniform(0.9, 1.1, n)
    data = fourier_shift(clean.values - 1.0, shifts) * scales[:, None, None] + 1.0
    out = preprocess(clean.copy(data=data), "none").compute()
    found = np.c_[out.shift_y, out.shift_x]
    # a translation of the whole object is not observable: compare modulo its projections
    err = remove_rigid_motion(found + shifts, rigid_motion_basis(clean.theta.values)[1])
    assert np.sqrt((err**2).mean(axis=0)).max() <= 0.1
    s = np.asarray(out.scale) * scales
    assert np.abs(s / s.mean() - 1).max() <= 0.01


def test_denoising_brings_noisy_counts_closer_to_the_model(series):
    model, angles, _ = series
    noisy = linear(model, angles=angles[:6], pixel_size=0.3, shape=64, dose=1.6e4, seed=3).compute()
    truth = linear(model, angles=angles[:6], pixel_size=0.3, shape=64).values
    out = aligned(preprocess(noisy, "nlm")).values
    before = np.mean([ncc(noisy.values[k], truth[k]) for k in range(6)])
    after = np.mean([ncc(out[k], truth[k]) for k in range(6)])
    assert after > before + 0.1 and after > 0.85


@needs_seed
def test_seed_series_matches_the_noise_free_model(seed_dir):
    from aetdask.io import read_atoms, read_tilt_series

    raw = read_tilt_series(seed_dir / "aSi_2nmFosCetr_Dose1p6e4_cov35pm_ForBM3D.mat",
                           angles=seed_dir / "Si_Angle.mat", pixel_size=0.195)
    raw = raw.isel(tilt=slice(0, None, 3))  # every third projection, 9° apart: BM3D is a minute for all 60
    model = linear(read_atoms(seed_dir / "aSi_208atoms_GT.txt"), like=raw).values
    pre = preprocess(raw, "bm3d").compute()  # the denoiser's product: none, the default, leaves the noise
    out = pre.values  # the product: denoised, background removed (its alignment is recorded, not applied)
    scores = np.array([ncc(out[k], model[k]) for k in range(len(out))])
    moved = aligned(pre).values
    aligned_scores = np.array([ncc(moved[k], model[k]) for k in range(len(out))])
    raw_scores = np.array([ncc(raw.values[k], model[k]) for k in range(len(out))])
    blur_scores = np.array([ncc(gaussian_filter(raw.values[k].astype(float), 1.5), model[k]) for k in range(len(out))])
    print(f"seed NCC: preprocessed mean {scores.mean():.3f} min {scores.min():.3f}; with the recorded alignment "
          f"applied mean {aligned_scores.mean():.3f} min {aligned_scores.min():.3f}; raw mean {raw_scores.mean():.3f}; "
          f"Gaussian blur mean {blur_scores.mean():.3f}")
    assert scores.mean() >= 0.90 and scores.min() >= 0.85


def test_combine_frames_undoes_drift(series):
    from aetdask.kernels.preprocessing.shift import fourier_shift as shift

    _, _, clean = series
    img = clean.values[:2] - 1.0
    rng = np.random.default_rng(1)
    frames = np.stack([shift(img, np.array([[0.4 * f, -0.3 * f]] * 2)) for f in range(6)], axis=1)
    noisy = rng.poisson(np.clip(frames, 0, None) * 50) / 50.0
    import xarray as xr

    da4 = xr.DataArray(noisy, dims=("tilt", "frame", "y", "x"),
                       coords={"theta": ("tilt", [0.0, 6.0]), "y": clean.y, "x": clean.x},
                       attrs={"pixel_size": 0.3, "units": "a.u."})
    out = combine_frames(da4)
    assert out.dims == ("tilt", "y", "x") and out.data.numblocks[0] == 2
    avg = out.values
    plain = noisy.mean(axis=1)
    for k in range(2):
        assert ncc(avg[k], img[k]) > ncc(plain[k], img[k]) + 0.02 and ncc(avg[k], img[k]) > 0.95


def test_writing_the_product_cleans_each_projection_once(series, tmp_path, monkeypatch):
    import aetdask.preprocess.stage as stage
    from aetdask.io import RunStore

    _, _, clean = series
    calls = []
    original = stage._clean
    monkeypatch.setattr(stage, "_clean", lambda block, *a: calls.append(len(block)) or original(block, *a))
    RunStore(tmp_path / "s.zarr").write("preprocessed", stage.preprocess(clean, "none"))
    assert sum(calls) == clean.sizes["tilt"]


def test_neighbour_alignment_mode(series):
    _, _, clean = series
    rng = np.random.default_rng(3)
    n = clean.sizes["tilt"]
    drift = np.cumsum(rng.normal(0, 0.5, (n, 2)), axis=0)  # a slow random walk, as stage drift would be
    data = fourier_shift(clean.values - 1.0, drift) + 1.0
    out = preprocess(clean.copy(data=data), "none", alignment="neighbours").compute()
    err = remove_rigid_motion(np.c_[out.shift_y, out.shift_x] + drift, rigid_motion_basis(clean.theta.values)[1])
    raw_err = remove_rigid_motion(drift, rigid_motion_basis(clean.theta.values)[1])
    assert np.sqrt((err**2).mean()) < 0.5 < np.sqrt((raw_err**2).mean())
    with pytest.raises(ValueError, match="alignment"):
        preprocess(clean, "none", alignment="sideways")


def test_stage_background_settings_remove_a_curved_background():
    """The stage's background step (its pixel-size-derived mask, quadratic trend + harmonic fill)."""
    import xarray as xr

    from .test_background import N, particle_image, smooth_background

    particle, region = particle_image()
    mean = particle[region].mean()
    for width in (1.0, 0.45):
        image = particle + smooth_background(N, mean, hump_width=width)
        # the same projection three times over 120° (one projection is no tilt series, and is refused)
        ts = xr.DataArray(np.stack([image] * 3), dims=("tilt", "y", "x"),
                          coords={"phi": ("tilt", [0.0] * 3), "theta": ("tilt", [0.0, 60.0, 120.0]),
                                  "psi": ("tilt", [0.0] * 3)},
                          attrs={"pixel_size": 0.3, "units": "a.u.", "provenance": []})
        out = preprocess(ts, "none", alignment="none", normalize=False).values[0]
        assert np.abs(out - particle)[region].mean() / mean <= 0.05


def test_a_failed_noise_estimate_is_replaced_by_the_series():
    """α and σ are the detector's, shared by every projection: one projection's estimate far from the
    others (its spectrum had no noise-only band, and the fallback took structure for noise) takes the
    series' medians; a series whose projections agree, or too short to say, is left as it is."""
    from aetdask.preprocess.stage import _series_noise

    rng = np.random.default_rng(0)
    params = np.c_[rng.normal(1.0, 0.002, 30), np.abs(rng.normal(0.0, 0.01, 30))]
    params[4] = 1.12, 0.95
    out = _series_noise(params)
    np.testing.assert_allclose(out[4], [np.median(params[np.arange(30) != 4, 0]),
                                        np.median(params[np.arange(30) != 4, 1])])
    np.testing.assert_array_equal(np.delete(out, 4, axis=0), np.delete(params, 4, axis=0))
    np.testing.assert_array_equal(_series_noise(np.delete(params, 4, axis=0)), np.delete(params, 4, axis=0))
    np.testing.assert_array_equal(_series_noise(params[:4]), params[:4])
    nan = params.copy()
    nan[:, :] = np.nan  # noise-free data: nothing to replace
    assert np.isnan(_series_noise(nan)).all()
