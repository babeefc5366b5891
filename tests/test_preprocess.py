import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from aetdask.geometry import remove_rigid_motion, rigid_motion_basis
from aetdask.kernels.shift import fourier_shift
from aetdask.preprocess import aligned, preprocess
from aetdask.simulate import amorphous_particle, linear

from ._util import needs_seed, raise_if_dask_computes


def ncc(a, b):
    a = np.asarray(a, float) - np.mean(a)
    b = np.asarray(b, float) - np.mean(b)
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


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
    model = linear(read_atoms(seed_dir / "aSi_208atoms_GT.txt"), like=raw).values
    out = aligned(preprocess(raw)).values
    scores = np.array([ncc(out[k], model[k]) for k in range(len(out))])
    raw_scores = np.array([ncc(raw.values[k], model[k]) for k in range(len(out))])
    blur_scores = np.array([ncc(gaussian_filter(raw.values[k].astype(float), 1.5), model[k]) for k in range(len(out))])
    print(f"seed NCC: preprocessed mean {scores.mean():.3f} min {scores.min():.3f}; raw mean {raw_scores.mean():.3f}; "
          f"Gaussian blur mean {blur_scores.mean():.3f}")
    assert scores.mean() >= 0.90 and scores.min() >= 0.85
