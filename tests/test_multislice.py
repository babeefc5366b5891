"""Multislice ADF-STEM projections (abTEM): grid plan, geometry, phonons, agreement with the linear model.

Everything here is tiny and coarse (≈ 0.1 Å potential sampling, a 40–80 mrad detector that
such a grid reaches, 2 Å slices), so the whole file runs in well under a minute on two cores.
"""

import math
import warnings

import dask
import numpy as np
import pytest

abtem = pytest.importorskip("abtem")

from aetdask.errors import InputError  # noqa: E402
from aetdask.geometry import detector_coordinates  # noqa: E402
from aetdask.schema import atoms as make_atoms  # noqa: E402
from aetdask.simulate import linear  # noqa: E402
from aetdask.simulate import multislice as ms  # noqa: E402
from aetdask.simulate.amorphous import amorphous_particle  # noqa: E402

from ._util import ncc  # noqa: E402

E = 200e3
# coarse: a ≈ 0.1 Å grid reaches ≈ 83 mrad at 200 kV, so the tests use a 40–80 mrad annulus
FAST = dict(energy=E, semiangle=17.5, detector=(40.0, 80.0), sampling=0.1, pad=3.0, slice_thickness=2.0)


def _abtem_cutoff(plan):
    """abTEM's own maximum simulated angle for the planned grid."""
    from ase import Atoms

    cell = Atoms(cell=[plan["extent"], plan["extent"], 2.0])
    potential = abtem.Potential(cell, gpts=plan["gpts"], slice_thickness=2.0)
    probe = abtem.Probe(semiangle_cutoff=17.5, energy=plan["energy"])
    probe.grid.match(potential)
    assert probe.gpts == (plan["gpts"], plan["gpts"])
    return min(probe.cutoff_angles)


# ----------------------------------------------------------------------------- plan_grid
@pytest.mark.parametrize("extent,energy,outer", [(20.0, 200e3, 190.0), (15.6, 200e3, 80.0), (37.3, 300e3, 150.0),
                                                 (11.0, 80e3, 120.0)])
def test_plan_grid_matches_abtem_cutoff_and_fast_sizes(extent, energy, outer):
    plan = ms.plan_grid(extent, energy=energy, detector_outer=outer)
    assert plan["max_angle"] == pytest.approx(_abtem_cutoff(plan), rel=1e-6)
    assert plan["max_angle"] >= outer and not plan["enlarged"] and plan["message"] is None
    n = plan["gpts"]
    m = n
    for p in (2, 3, 5, 7):
        while m % p == 0:
            m //= p
    assert m == 1, f"{n} is not 7-smooth"
    assert plan["sampling"] == pytest.approx(extent / n)
    # the coarsest: every smaller fast size falls short of the detector
    smaller = [k for k in range(max(2, n - 40), n) if k == ms._fast_size(k)]
    assert all(ms.max_angle(k, extent, energy) < outer for k in smaller)


def test_max_angle_formula_against_abtem_for_many_grids():
    for n in (64, 81, 97, 100, 128, 135, 160, 243, 480, 512):
        plan = {"extent": 17.3, "gpts": n, "energy": 200e3}
        assert ms.max_angle(n, 17.3, 200e3) == pytest.approx(_abtem_cutoff(plan), rel=1e-6)


def test_plan_grid_enlarges_or_refuses_a_coarse_sampling():
    # 20.8 Å / 0.065 Å = 320 points (a fast size): abTEM reaches only ≈ 129 mrad (see NOTES.md)
    reached = _abtem_cutoff({"extent": 20.8, "gpts": 320, "energy": 200e3})
    assert 125 < reached < 135
    plan = ms.plan_grid(20.8, energy=200e3, detector_outer=190.0, sampling=0.065)
    assert plan["enlarged"] and plan["sampling"] < 0.045 and plan["max_angle"] >= 190.0
    assert plan["max_angle"] == pytest.approx(_abtem_cutoff(plan), rel=1e-6)
    assert "190 mrad" in plan["message"] and f"{reached:.1f} mrad" in plan["message"]  # both angles named
    with pytest.raises(InputError, match=rf"190 mrad.*{reached:.1f} mrad"):
        ms.plan_grid(20.8, energy=200e3, detector_outer=190.0, sampling=0.065, strict=True)
    # a detector within reach keeps the (fast-size-refined) sampling
    ok = ms.plan_grid(20.0, energy=200e3, detector_outer=120.0, sampling=0.065, strict=True)
    assert not ok["enlarged"] and ok["message"] is None
    assert ok["sampling"] <= 0.065 and ok["gpts"] == ms._fast_size(math.ceil(20.0 / 0.065))
    assert ok["max_angle"] == pytest.approx(_abtem_cutoff(ok), rel=1e-6)


def test_scan_tile_is_eager_without_any_dask_computation():
    from ._util import raise_if_dask_computes

    with raise_if_dask_computes():  # abTEM's lazy=False path builds no graph and schedules nothing
        tile = ms.scan_tile([[0.0, 0.0, 0.0]], [78], [0, 0, 0], pixel_size=0.4, shape=8, rows=(3, 5), **FAST)
    assert isinstance(tile, np.ndarray) and tile.shape == (2, 8) and tile.dtype == np.float64
    assert tile[1, 4] == tile.max()  # row 4 of the image is the centre row


def test_scan_tile_refuses_a_grid_that_clips_the_detector():
    with pytest.raises(InputError, match=r"190 mrad.*mrad"):
        ms.scan_tile([[0.0, 0.0, 0.0]], ["Si"], [0, 0, 0], pixel_size=0.4, shape=4, rows=(0, 1),
                     **{**FAST, "detector": (40.0, 190.0)})


# ----------------------------------------------------------------------------- geometry
def _peak(image):
    return np.array(np.unravel_index(int(np.argmax(image)), image.shape))


@pytest.mark.parametrize("position,euler", [
    ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
    ([1.2, 0.0, 0.0], [0.0, 0.0, 0.0]),     # sample +x
    ([0.0, 1.6, 0.0], [0.0, 0.0, 0.0]),     # sample +y
    ([1.2, 0.0, 0.8], [0.0, 90.0, 0.0]),    # θ = 90°: z shows up along −y_det
    ([1.2, 0.8, 0.4], [30.0, 40.0, 20.0]),  # general Euler angles
])
def test_single_atom_lands_where_the_geometry_says(position, euler):
    n, p = 16, 0.4
    image = ms.scan_tile([position], ["Pt"], euler, pixel_size=p, shape=n, rows=(0, n), **FAST)
    assert image.shape == (n, n) and image.dtype == np.float64
    expected = detector_coordinates(np.array([position]), [euler])[0, 0] / p + n // 2
    assert np.all(np.abs(_peak(image) - expected) <= 1.0), (_peak(image), expected)
    if not any(position):
        assert tuple(_peak(image)) == (n // 2, n // 2)
    # the fraction of the beam on the detector is a small positive number
    assert 1e-3 < image.max() < 0.2 and image.min() >= 0


def test_abtem_defocus_is_the_crossover_depth_below_the_entrance():
    """abTEM's Probe(defocus=D) equals a focused probe propagated D Å: our sign convention."""
    from ase import Atoms

    kw = dict(semiangle_cutoff=17.5, energy=E, extent=12.0, gpts=96)
    vacuum = abtem.Potential(Atoms(cell=[12.0, 12.0, 40.0]), gpts=96, slice_thickness=4.0)
    focused = abtem.Probe(defocus=0.0, **kw).build((6.0, 6.0), lazy=False)
    defocused = abtem.Probe(defocus=40.0, **kw).build((6.0, 6.0), lazy=False)
    after = defocused.multislice(vacuum)
    peak = (np.abs(focused.array) ** 2).max()
    np.testing.assert_allclose(np.abs(after.array) ** 2, np.abs(focused.array) ** 2, rtol=0, atol=1e-4 * peak)
    assert (np.abs(defocused.array) ** 2).max() < 0.9 * (np.abs(focused.array) ** 2).max()


def test_defocus_is_measured_from_the_particle_centre_along_the_beam():
    # a Si atom at the centre and a Pt atom 40 Å deeper along the beam (θ = 0: depth = z)
    positions = [[0.0, 0.0, 0.0], [2.0, 0.0, 40.0]]
    kw = dict(pixel_size=0.4, shape=16, rows=(8, 9), euler_row=[0, 0, 0], extent=12.0, **FAST)
    peak = {d: ms.scan_tile(positions, ["Si", "Pt"], defocus=d, **kw)[0, 13] for d in (-40.0, 0.0, 40.0)}
    assert peak[40.0] > 1.2 * peak[0.0] > 1.2 * peak[-40.0]  # sharpest with the crossover on the Pt atom
    si = {d: ms.scan_tile(positions, ["Si", "Pt"], defocus=d, **kw)[0, 8] for d in (-40.0, 0.0)}
    assert si[0.0] > si[-40.0]  # focus 0 = the centre plane, where the Si atom sits


# ----------------------------------------------------------------------------- against the linear model
def test_multislice_correlates_with_the_linear_model():
    model = amorphous_particle(12, species=["Pt"], seed=1)
    angles = [0.0, 45.0, 90.0, 135.0]
    n, p = 24, 0.4
    blur = 0.35
    ts = ms.multislice(model, angles, pixel_size=p, shape=n, phonons=2, seed=3, blur=blur, **FAST)
    lin = linear(model, angles=angles, pixel_size=p, shape=n, energy=E, semiangle=17.5,
                 detector=FAST["detector"], blur=blur, dtype="float64")
    a, b = ts.values, lin.values
    nccs = [ncc(a[k], b[k]) for k in range(len(angles))]
    ratios = [float(a[k].sum() / b[k].sum()) for k in range(len(angles))]
    print("NCC multislice vs linear:", [round(c, 4) for c in nccs], "flux ratio:", [round(r, 3) for r in ratios])
    assert min(nccs) >= 0.9, nccs
    assert ts.attrs["units"] == "fraction" and ts.dtype == np.float64
    record = ts.attrs["provenance"][-1]
    assert record["stage"] == "simulate.multislice" and record["params"]["grid"]["gpts"] > 0


# ----------------------------------------------------------------------------- phonons
def test_phonon_configurations_are_seeded_and_have_the_right_width():
    n = 20000
    pos = np.zeros((n, 3))
    species = np.array(["Si", "Pt"] * (n // 2))
    a = ms.phonon_positions(pos, species, config=2, seed=5)
    np.testing.assert_array_equal(a, ms.phonon_positions(pos, species, config=2, seed=5))
    assert not np.allclose(a, ms.phonon_positions(pos, species, config=3, seed=5))
    assert not np.allclose(a, ms.phonon_positions(pos, species, config=2, seed=6))
    assert np.all(ms.phonon_positions(pos, species, config=0, seed=5) != 0)  # config 0 is displaced too
    for s in ("Si", "Pt"):
        sigma = math.sqrt(ms.DEBYE_WALLER_B[s] / (8 * math.pi**2))
        d = a[species == s]
        np.testing.assert_allclose(d.std(axis=0), sigma, rtol=0.03)
        np.testing.assert_allclose(d.mean(axis=0), 0.0, atol=4 * sigma / math.sqrt(len(d)))
    custom = ms.phonon_positions(pos[:10000], ["Si"] * 10000, b_factors={"Si": 2.0}, config=0, seed=1)
    assert custom.std() == pytest.approx(math.sqrt(2.0 / (8 * math.pi**2)), rel=0.03)
    with pytest.warns(UserWarning, match="Xe"):
        ms.phonon_positions(np.zeros((2, 3)), ["Xe", "Xe"], config=0, seed=0)


def test_debye_waller_defaults_and_presets():
    for s in ("Si", "O", "Ge", "Sn", "Co", "Pd", "Pt", "Ta"):
        assert 0.1 < ms.DEBYE_WALLER_B[s] < 1.5
    assert set(ms.PRESETS) >= {"Si-208", "Si-19993", "SiGeSn", "CoPdPt", "SiO2"}
    assert ms.PRESETS["Si-208"]["pixel_size"] == 0.195 and ms.PRESETS["Si-208"]["shape"] == 128
    assert ms.PRESETS["Si-19993"]["shape"] == 290 and ms.PRESETS["SiO2"]["pixel_size"] == 0.34517
    assert ms.PRESETS["CoPdPt-defocus"]["defocus_spread"] == 3.0
    assert ms.preset_angles("SiO2")[:, 1].tolist() == list(np.arange(-72.0, 73.0, 3.0))
    for preset in ms.PRESETS.values():
        assert preset["phonons"] == 8 and preset["detector"] == [40.0, 190.0] and preset["energy"] == 200e3


# ----------------------------------------------------------------------------- Dask
def _small_series(**kw):
    model = make_atoms([[0.0, 0.0, 0.0], [1.5, -1.0, 1.0], [-1.2, 0.8, -0.9]], ["Pt", "Si", "Pt"])
    return ms.multislice(model, [0.0, 60.0], pixel_size=0.4, shape=12, phonons=2, seed=4, defocus_spread=3.0,
                         **FAST, **kw)


def test_multislice_is_lazy_and_independent_of_scheduler_and_chunking():
    from ._util import raise_if_dask_computes

    with raise_if_dask_computes():
        whole = _small_series()
        chunked = _small_series(rows_per_task=5)
    assert whole.chunks is not None and whole.shape == (2, 12, 12)
    np.testing.assert_array_equal(whole.defocus.values, chunked.defocus.values)
    assert np.all(np.abs(whole.defocus.values) <= 30.0) and np.any(whole.defocus.values != 0)
    sync = whole.compute(scheduler="synchronous").values
    with dask.config.set(scheduler="threads", num_workers=2):
        threaded = whole.compute().values
        chunked_values = chunked.compute().values
    # threads sharing one process may get differently aligned FFT buffers: float32 rounding
    # (worker processes with one thread each agree bit for bit: tests/test_campaign.py)
    np.testing.assert_allclose(threaded, sync, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(chunked_values, sync, rtol=1e-5, atol=1e-12)
    assert np.all(np.isfinite(sync)) and sync.max() > 0


def test_multislice_warns_and_records_an_enlarged_grid():
    model = make_atoms([[0.0, 0.0, 0.0]], ["Si"])
    with pytest.warns(UserWarning, match=r"100 mrad.*mrad"):
        ts = ms.multislice(model, [0.0], pixel_size=0.4, shape=4, phonons=1,
                           **{**FAST, "detector": (40.0, 100.0), "sampling": 0.12})
    grid = ts.attrs["provenance"][-1]["params"]["grid"]
    assert grid["enlarged"] and grid["max_angle"] >= 100.0 and "refined" in grid["message"]
    with pytest.raises(InputError, match="100 mrad"):
        ms.multislice(model, [0.0], pixel_size=0.4, shape=4, phonons=1, strict=True,
                      **{**FAST, "detector": (40.0, 100.0), "sampling": 0.12})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ms.multislice(model, [0.0], pixel_size=0.4, shape=4, phonons=1, **FAST)  # within reach: silent


def test_resolve_and_tile_arguments_for_campaigns():
    settings = ms.resolve(np.zeros((1, 3)), ["Si"], {**ms.PRESETS["Si-208"], "phonons": 2, "shape": 24})
    assert settings["shape"] == (24, 24) and settings["phonons"] == 2 and settings["max_angle"] >= 190.0
    assert set(ms.tile_arguments(settings)) <= set(ms.scan_tile.__kwdefaults__) | {"pixel_size", "shape"}
    with pytest.raises(InputError, match="unknown parameter"):
        ms.resolve(np.zeros((1, 3)), ["Si"], {"pixel_size": 0.4, "shape": 8, "energie": 1})


@pytest.mark.skipif(not __import__("aetdask.backend", fromlist=["x"]).cupy_available(), reason="no GPU / CuPy")
def test_gpu_scan_tile_matches_cpu():
    model = amorphous_particle(6, species=["Pt"], seed=4)
    pos, sp = model.position.values, model.species.values.astype(str)
    s = ms.resolve(pos, sp, {"pixel_size": 0.4, "shape": 16, "detector": [40.0, 100.0], "slice_thickness": 2.0})
    kw = ms.tile_arguments(s)
    cpu = ms.scan_tile(pos, sp, [0.0, 30.0, 0.0], rows=(0, 16), **{**kw, "device": "cpu"})
    gpu = ms.scan_tile(pos, sp, [0.0, 30.0, 0.0], rows=(0, 16), **{**kw, "device": "gpu"})
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-7 * cpu.max())
