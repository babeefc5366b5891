"""Ptychographic AET: 4D-STEM simulation, per-tilt phase images, the CLI chain.

One tiny SiO2 cluster and two tilts, simulated once per session (≈ 20 s): a coarse 2 Å
scan of the seed paper's SiO2 probe (80 kV, 30 mrad, 18 nm defocus, 0–60 mrad detector).
The full chain's identification of Si and O is measured by benchmarks/bench_ptycho.py.
"""

from __future__ import annotations

import json

import dask
import numpy as np
import pytest
from click.testing import CliRunner

from aetdask.cli import main
from aetdask.errors import InputError
from aetdask.io import RunStore
from aetdask.ptycho.engine import object_pixel, phase_image, sample_extent
from aetdask.ptycho.simulate import PATTERN_DIMS, fourdstem, resolve_4d
from aetdask.ptycho.stage import ptycho
from aetdask.simulate import linear, silica_particle

DOSE = 1e6
STEP = 2.0
FAST = {"step": STEP, "phonons": 0, "slice_thickness": 2.0}


@pytest.fixture(scope="module")
def cluster_model():
    return silica_particle(12, seed=3)


@pytest.fixture(scope="module")
def patterns(cluster_model):
    with dask.config.set(scheduler="threads"):
        return fourdstem(cluster_model, [0.0, 40.0], dose=DOSE, seed=2, **FAST).load()


def _ncc(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_patterns_layout_and_dose(patterns, cluster_model):
    assert patterns.dims == PATTERN_DIMS
    nt, sy, sx, k, k2 = patterns.shape
    assert nt == 2 and k == k2 and sy == sx
    s = resolve_4d(cluster_model.position.values, cluster_model.species.values, FAST)
    assert (sy, sx) == s["scan"]
    # the scan covers the particle and the probe's reach on each side
    radius = np.sqrt((cluster_model.position.values**2).sum(axis=1)).max()
    assert (sy // 2) * STEP >= radius + s["probe_radius"] - STEP
    # counts: dose · step² electrons per position on average (the detector keeps ≈ all of the beam)
    totals = patterns.values.sum(axis=(-1, -2))
    assert 0.95 * DOSE * STEP**2 < totals.mean() < 1.0 * DOSE * STEP**2 + 5 * np.sqrt(DOSE) * STEP
    # the object pixel this detector reaches: λ / (2 · 60 mrad), the seed paper's ≈ 0.345 Å
    assert object_pixel(80e3, patterns.attrs["angular_sampling"], k) == pytest.approx(0.345, abs=0.01)
    assert patterns.attrs["units"] == "counts" and patterns.attrs["defocus"] == 180.0


def test_patterns_reproducible_and_bad_input(cluster_model, patterns):
    # the chunking of the scan into tasks changes nothing (threads of one process: float32 rounding)
    whole = fourdstem(cluster_model, [40.0], seed=2, **FAST)
    bands = fourdstem(cluster_model, [40.0], seed=2, rows_per_task=5, **FAST)
    with dask.config.set(scheduler="threads"):
        np.testing.assert_allclose(bands.values, whole.values, rtol=1e-5, atol=1e-9)
    # the noise of a row is seeded by (seed, tilt, row): the same counts from the same means
    from aetdask.ptycho.simulate import _band

    mean = whole.values[0, 3:6]
    a = _band([mean], DOSE, STEP, 2, 0, 3)
    b = np.concatenate([_band([mean[:1]], DOSE, STEP, 2, 0, 3), _band([mean[1:]], DOSE, STEP, 2, 0, 4)])
    np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="detector"):
        fourdstem(cluster_model, [0.0], detector=20.0, **FAST)
    with pytest.raises(InputError, match="dose"):
        fourdstem(cluster_model, [0.0], dose=-1.0, **FAST)
    with pytest.raises(InputError, match="rows_per_task"):
        fourdstem(cluster_model, [0.0], rows_per_task=-1, **FAST)
    with pytest.raises(InputError, match="unknown parameter"):
        fourdstem(cluster_model, [0.0], voltage=80e3, **FAST)


@pytest.mark.parametrize("multislice", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["single-slice", "multislice"])
def test_phase_projection_matches_linear(patterns, cluster_model, multislice):
    """The phase image is a projection of the sample: NCC ≥ 0.8 with the linear model's."""
    scores = []
    for t in range(1 if multislice else patterns.sizes["tilt"]):  # multislice: 5 slices, ≈ 4× the time
        image, info = phase_image(patterns[t].values, step=STEP, angular_sampling=patterns.attrs["angular_sampling"],
                                  energy=80e3, semiangle=30.0, defocus=180.0, multislice=multislice, iterations=8)
        ref = linear(cluster_model, angles=[float(patterns.theta[t])], pixel_size=info["pixel_size"],
                     shape=image.shape, poisson=False, blur=0.35).values[0]
        scores.append(_ncc(image, ref))
        assert info["slices"] == (5 if multislice else 1)
    assert min(scores) >= 0.8, scores


def test_sample_extent_is_the_particle(patterns, cluster_model):
    width = sample_extent(patterns[0].values, STEP, 30.0, patterns.attrs["angular_sampling"])
    diameter = 2 * np.sqrt((cluster_model.position.values[:, :2] ** 2).sum(axis=1)).max()
    assert 0.6 * diameter < width < diameter + 2 * 180.0 * 0.03  # blurred by the defocused probe at most


@pytest.mark.slow
def test_same_phase_images_on_one_and_two_workers(patterns):
    from distributed import Client, LocalCluster

    lazy = ptycho(patterns.chunk({"tilt": 1}), iterations=2)
    images = []
    for n in (1, 2):
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as c, Client(c):
            images.append(lazy.compute().values)
    # the same to float32 rounding: a tilt reconstructed second in a worker process can differ from
    # one reconstructed first by 1 ulp (7e-8 rad seen), so bit-for-bit is not asserted
    np.testing.assert_allclose(images[0], images[1], rtol=0, atol=1e-6)
    assert np.abs(images[0]).max() > 0.1  # phase images, not empty ones
    assert lazy.attrs["units"] == "rad" and lazy.sizes["tilt"] == 2


def test_phase_image_bad_input():
    good = dict(step=1.0, angular_sampling=1.0, energy=80e3, semiangle=30.0, defocus=180.0)
    with pytest.raises(InputError, match="expected"):
        phase_image(np.ones((4, 4, 8)), **good)
    with pytest.raises(InputError, match="negative or non-finite"):
        phase_image(np.full((4, 4, 8, 8), np.nan), **good)
    with pytest.raises(InputError, match="iterations"):
        phase_image(np.ones((4, 4, 8, 8)), iterations=0, **good)


@pytest.mark.slow
def test_cli_simulate_ptycho_run(tmp_path, patterns, cluster_model):
    """`simulate --mode 4dstem` writes patterns; `ptycho` writes phase projections; `run --modality
    ptycho` goes on to an atomic model of Si and O (a two-tilt series: only that it runs through)."""
    runner = CliRunner()
    store = tmp_path / "p.zarr"
    res = runner.invoke(main, ["simulate", "--mode", "4dstem", "--species", "Si,O", "--n-atoms", "24", "--angles",
                               str(_angles(tmp_path)), "--step", "2.5", "--phonons", "0", "--dose", "1e6", "--out",
                               str(store)])
    assert res.exit_code == 0, res.output
    rs = RunStore(store, create=False)
    assert "patterns" in rs and "truth" in rs and rs.read("patterns").sizes["tilt"] == 3
    res = runner.invoke(main, ["ptycho", str(store), "--iterations", "2", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output.strip().splitlines()[-1])
    assert info["tilts"] == 3 and info["multislice"] is False
    assert rs.read("raw").attrs["units"] == "rad"
    res = runner.invoke(main, ["run", str(store), "--species", "Si,O", "--modality", "ptycho", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert set(summary["atoms"]) == {"Si", "O"} and sum(summary["atoms"].values()) > 0
    assert "atoms" in rs and "refined" not in rs
    res = runner.invoke(main, ["run", str(tmp_path), "--species", "Si,O", "--modality", "ptycho"])
    assert res.exit_code == 2 and "Traceback" not in res.output


def _angles(tmp_path):
    path = tmp_path / "angles.txt"
    path.write_text("-60\n0\n60\n")
    return path
