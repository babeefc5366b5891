"""Coordinate refinement on Dask workers: the blocks' engine against the single-process reference."""

import numpy as np
import pytest

from aetdask import config
from aetdask.geometry import projection_matrices
from aetdask.model import blocks
from aetdask.model import refine as refine_module
from aetdask.schema import atoms
from aetdask.simulate import amorphous_particle, linear


@pytest.fixture(scope="module")
def series():
    """Two species, 24 atoms, 10 counted projections of 36² px, and a start 0.1–0.2 Å off."""
    rng = np.random.default_rng(3)
    pos = rng.uniform(-3.5, 3.5, (24, 3))
    species = ["Pt"] * 8 + ["Si"] * 16
    truth = atoms(pos, species)
    ts = linear(truth, angles=np.linspace(-60, 60, 10), pixel_size=0.3, shape=36, dose=2e5, seed=1).compute()
    start = truth.copy(deep=True)
    start["position"] = start.position + rng.normal(0.0, 0.12, pos.shape)
    return truth, ts, start


@pytest.fixture(scope="module")
def particle():
    """A 16-atom Pt particle, 8 counted projections of 32² px, and a start up to 0.4 Å off."""
    truth = amorphous_particle(16, species=["Pt"], seed=2)
    ts = linear(truth, angles=np.linspace(-60, 60, 8), pixel_size=0.35, shape=32, dose=1e5, seed=1).compute()
    start = truth.copy(deep=True)
    start["position"] = start.position + np.random.default_rng(3).normal(0.0, 0.12, (16, 3))
    return truth, ts, start


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=4, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as cl, \
            Client(cl) as c:
        yield c


def _problem(ts, start, angles, components):
    b = np.asarray(ts.values, dtype=float)
    euler = np.c_[np.zeros(len(ts)), ts.theta.values, np.zeros(len(ts))]
    species = start.species.values.astype(str)
    kinds = np.unique(species)
    kind_of = np.searchsorted(kinds, species)
    problem = refine_module._Problem(b, euler, 0.3, kind_of, len(kinds), True, np.ones(len(ts)), np.zeros(len(ts)),
                                     angles=angles, radius=3.0, components=components)
    rng = np.random.default_rng(0)
    n_t = len(ts)
    h = np.tile([40.0, 8.0][:components], len(kinds)) * np.repeat([3.0, 1.0], components)
    s = np.tile([0.4, 0.9][:components], len(kinds))
    x = problem.pack(start.position.values, h, s, np.full(n_t, 1.0), 1 + 0.05 * rng.standard_normal(n_t),
                     0.3 * rng.standard_normal((n_t, 2)), 0.2 * rng.standard_normal((n_t, 3)))
    return problem, x


def _engine(client, problem, positions, workers, n_blocks):
    return blocks.DistributedEngine(client, blocks.partition(positions, problem.matrices(np.zeros((problem.n_t, 3))),
                                                             n_blocks), workers=workers)


@pytest.mark.parametrize("angles,components", [(False, 1), (True, 2)])
def test_blocks_match_the_reference(series, client, angles, components):
    _, ts, start = series
    problem, x = _problem(ts, start, angles, components)
    value, grad = problem(x)
    info = refine_module._position_information(problem, x)
    pos, h, s, bg, c, o, e = problem.unpack(x)
    m = problem.model(x)[0]
    mp = np.maximum((m + problem.offset) / problem.alpha, 1e-12)
    weight = c / problem.alpha[:, 0, 0]
    frame = problem.frame(h, s, o, e)
    cost = problem.engine.likelihood_change(frame, pos, problem.kind_of, problem.zp, mp, weight, -1.0)
    points = pos[:7] + 1.3
    gain = problem.engine.likelihood_change(frame, points, np.ones(7, int), problem.zp, mp, weight, 1.0, model=False)
    assert np.abs(grad[problem._slice("pos")]).max() > 1e-3 and np.abs(info).max() > 0  # not trivially equal
    if angles:
        assert np.abs(grad[problem._slice("e")]).max() > 1e-6
    for workers, n_blocks in ((1, 3), (2, 4), (4, 4), (4, 7)):
        problem.engine = _engine(client, problem, pos, workers, n_blocks)
        assert problem.engine.blocks == n_blocks
        v2, g2 = problem(x)
        assert abs(v2 - value) <= 1e-12 * abs(value)
        np.testing.assert_allclose(g2, grad, rtol=1e-10, atol=1e-10 * np.abs(grad).max())
        np.testing.assert_allclose(refine_module._position_information(problem, x), info, rtol=1e-10,
                                   atol=1e-10 * np.abs(info).max())
        np.testing.assert_allclose(problem.engine.likelihood_change(frame, pos, problem.kind_of, problem.zp, mp,
                                                                    weight, -1.0), cost, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(problem.engine.likelihood_change(frame, points, np.ones(7, int), problem.zp, mp,
                                                                    weight, 1.0, model=False), gain, rtol=1e-10,
                                   atol=1e-9)
    problem.engine = blocks.LocalEngine()


@pytest.mark.parametrize("components", [1, 2])
def test_windows_hold_every_pixel_an_atom_reaches(series, components):
    """A block renders into its window what the whole detector would hold of it, and nothing is cut."""
    _, ts, start = series
    problem, x = _problem(ts, start, False, components)
    pos, h, s, bg, c, o, e = problem.unpack(x)
    frame = problem.frame(h, s, o, e)
    parts = blocks.partition(pos, frame.matrices, 4)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(pos)))
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    for part in parts:
        full = blocks.LocalEngine().render(frame, pos[part], problem.kind_of[part])
        win = blocks.window(frame, pos[part], problem.kind_of[part])
        r0, r1, c0, c1 = win
        if components == 1:  # narrow atoms: a slab's band, not the detector
            assert (r1 - r0) * (c1 - c0) < 0.75 * problem.n_px**2
        inside = np.zeros_like(full)
        inside[:, r0:r1, c0:c1] = blocks.render_block(frame, pos[part], problem.kind_of[part], win)
        np.testing.assert_allclose(inside, full, rtol=1e-12, atol=1e-12 * full.max())


def test_slabs_follow_the_tilt_axis():
    """A single-axis series about x: slabs are cut along x, whatever the atoms' spread in y and z."""
    rng = np.random.default_rng(1)
    pos = rng.normal(0.0, [1.0, 5.0, 5.0], (60, 3))
    parts = blocks.partition(pos, projection_matrices(np.linspace(-70, 70, 15)), 3)
    x_ranges = [(pos[p, 0].min(), pos[p, 0].max()) for p in parts]
    assert x_ranges[0][1] <= x_ranges[1][0] and x_ranges[1][1] <= x_ranges[2][0]


def test_refinement_on_workers_matches_this_process(particle, client, monkeypatch):
    truth, ts, start = particle
    with config.set({"refine_atoms.blocks": 4}):
        reference = refine_module.refine_atoms(start, ts, 30, workers=0, select=False)
        runs = {n: refine_module.refine_atoms(start, ts, 30, workers=n, select=False) for n in (1, 2, 4)}
        # the same four blocks, windows and sums, run one after another in this process
        monkeypatch.setattr(refine_module, "block_engine", lambda pos, mats, workers, n: blocks.DistributedEngine(
            None, blocks.partition(pos, mats, 4)))
        here = refine_module.refine_atoms(start, ts, 30, workers=0, select=False)
    assert reference.sizes["atom"] == truth.sizes["atom"]
    start_error = np.abs(start.position.values - truth.position.values).max()
    assert np.abs(reference.position.values - truth.position.values).max() < 0.3 * start_error  # a real fit
    for n, out in runs.items():
        assert out.sizes["atom"] == reference.sizes["atom"], n
        # the workers compute what the blocks compute here, to float tolerance
        np.testing.assert_allclose(out.position.values, here.position.values, rtol=0, atol=1e-6)
        # against the one-block reference: the sums' order changes the last bits of every evaluation, and the
        # optimiser (30 iterations, then scoring that stops at a gain of about a step of σ/20) ends elsewhere
        # within its own tolerance: a small fraction of the atoms' standard errors
        sigma = reference.position_sigma.values
        assert np.abs(out.position.values - reference.position.values).max() < 0.25 * sigma.min()
    # the blocks follow the atoms, not the workers: every worker count gives the same model exactly
    np.testing.assert_array_equal(runs[1].position.values, runs[4].position.values)
    np.testing.assert_array_equal(runs[2].position.values, runs[4].position.values)


def test_engine_choice(client, monkeypatch):
    pos = np.zeros((10, 3))
    mats = projection_matrices([0.0, 30.0])
    assert isinstance(blocks.engine(pos, mats), blocks.LocalEngine)  # small: not worth the transfers
    assert isinstance(blocks.engine(pos, mats, workers=0), blocks.LocalEngine)
    chosen = blocks.engine(pos, mats, workers=2)
    assert isinstance(chosen, blocks.DistributedEngine) and len(chosen.names) == 2 and chosen.blocks == blocks.BLOCKS
    large = np.zeros((blocks.MIN_ATOMS, 3))
    monkeypatch.setattr(blocks.numba, "get_num_threads", lambda: 1)  # the workers (4 threads) have more cores
    assert blocks.engine(large, mats).blocks == blocks.BLOCKS
    monkeypatch.setattr(blocks.numba, "get_num_threads", lambda: 4)  # as many here: only the transfers to gain
    assert isinstance(blocks.engine(large, mats), blocks.LocalEngine)


def test_workers_without_a_client_is_a_clear_error(monkeypatch):
    import aetdask.cluster
    from aetdask.errors import InputError

    monkeypatch.setattr(aetdask.cluster, "active_client", lambda: None)  # as in a process that started none

    with pytest.raises(InputError, match="no Dask client"):
        blocks.engine(np.zeros((3, 3)), projection_matrices([0.0]), workers=2)
