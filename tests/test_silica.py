"""silica_particle: a grown network of corner-sharing SiO4 tetrahedra with the short-range order of a-SiO2."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist, pdist

from aetdask.errors import InputError
from aetdask.simulate import silica_particle

TOL = 1e-9


def _split(model):
    pos, sp = model.position.values, model.species.values
    assert set(sp) == {"Si", "O"}
    return pos[sp == "Si"], pos[sp == "O"]


@pytest.fixture(scope="module")
def model():
    return silica_particle(80, seed=1)


def test_closest_approach_of_every_species_pair(model):
    si, o = _split(model)
    si_o = cdist(si, o)
    assert pdist(si).min() >= 2.95 - TOL  # a-SiO2: 3.08–3.12 Å
    assert pdist(o).min() >= 2.3 - TOL  # a-SiO2: 2.63 Å along a tetrahedron's edge
    own = si_o.min(axis=0)  # each O to its (nearest) Si
    assert own.min() >= 1.61 - TOL and own.max() <= 1.7 + TOL
    assert si_o[si_o > 1.9].min() >= 2.6 - TOL  # no O near a Si it is not bonded to


def test_every_si_sits_in_a_tetrahedron_and_tetrahedra_share_corners_only(model):
    si, o = _split(model)
    bonded = cdist(si, o) < 1.9
    assert np.all(bonded.sum(axis=1) == 4)  # Si–O coordination exactly 4
    assert set(np.unique(bonded.sum(axis=0))) == {1, 2}  # non-bridging and bridging O
    shared = bonded.astype(int) @ bonded.T.astype(int)
    np.fill_diagonal(shared, 0)
    assert shared.max() == 1  # no edge-sharing tetrahedra
    u = o[None] - si[:, None]
    u /= np.linalg.norm(u, axis=2, keepdims=True)
    angles = np.concatenate([np.degrees(np.arccos(np.clip(np.triu(v @ v.T, 1)[np.triu_indices(4, 1)], -1, 1)))
                             for v in (u[i][bonded[i]] for i in range(len(si)))])
    assert np.mean(angles) == pytest.approx(109.47, abs=1.0)  # O–Si–O of a tetrahedron
    assert np.std(angles) < 6.0


def test_roughly_sio2_with_non_bridging_o_mostly_at_the_surface(model):
    si, o = _split(model)
    ratio = len(o) / len(si)
    assert 2.0 < ratio < 2.9  # SiO2 plus surface (silanol-like) O; ~2.7 for 80 Si
    bridging = (cdist(si, o) < 1.9).sum(axis=0) == 2
    r = np.linalg.norm(o, axis=1)
    inner = r < 0.6 * r.max()
    assert bridging[inner].mean() > 0.65 and bridging[~inner].mean() < 0.45  # ~0.8 inside, ~0.35 outside


def test_centred_sized_by_density_and_recorded(model):
    assert np.abs(model.position.values.mean(axis=0)).max() < TOL
    si, _ = _split(model)
    record = model.attrs["provenance"][-1]
    assert record["stage"] == "simulate.silica_particle"
    assert record["params"]["n_si"] == len(si) == 80 and record["params"]["seed"] == 1
    # 80 Si at 2.2 g/cm³ (0.0221 Si/Å³) fill a sphere of 9.53 Å; the network may enlarge it a little
    assert 9.5 < record["params"]["radius"] < 11.0
    assert np.linalg.norm(si - si.mean(axis=0), axis=1).max() < record["params"]["radius"] + 2.0


def test_radius_gives_the_si_that_fit_at_the_density():
    model = silica_particle(radius=7.0, seed=3)
    si, _ = _split(model)
    assert 0.7 * 32 <= len(si) <= 32  # 4/3 π 7³ × 0.0221 = 31.7
    assert model.attrs["provenance"][-1]["params"]["radius"] == 7.0
    assert silica_particle(radius=2.0).sizes["atom"] == 5  # one SiO4 tetrahedron


def test_deterministic_for_a_seed_different_for_another():
    a, b, c = silica_particle(30, seed=5), silica_particle(30, seed=5), silica_particle(30, seed=6)
    np.testing.assert_array_equal(a.position.values, b.position.values)
    np.testing.assert_array_equal(a.species.values, b.species.values)
    assert a.sizes["atom"] != c.sizes["atom"] or not np.allclose(a.position.values, c.position.values)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((), {}, "exactly one of n_si"),
        ((10,), {"radius": 5.0}, "exactly one of n_si"),
        ((0,), {}, "positive integer"),
        ((-3,), {}, "positive integer"),
        ((2.5,), {}, "positive integer"),
        ((True,), {}, "positive integer"),
        ((), {"radius": 0.0}, "positive length"),
        ((), {"radius": -4.0}, "positive length"),
        ((), {"radius": float("nan")}, "positive length"),
        ((), {"radius": "5"}, "length in Å"),
        ((), {"radius": 1.0}, "holds no Si"),
        ((10,), {"density": 0.0}, "density must be"),
        ((10,), {"density": -2.2}, "density must be"),
        ((10,), {"density": float("nan")}, "density must be"),
        ((10,), {"density": 5.0}, "density must be"),
        ((10,), {"density": "2.2"}, "density must be"),
    ],
)
def test_bad_input_raises_a_clear_input_error(args, kwargs, match):
    with pytest.raises(InputError, match=match):
        silica_particle(*args, **kwargs)


def test_analysis_sees_silica_short_range_order():
    from aetdask.analyze import analyze

    summary = analyze(silica_particle(150, seed=2)).attrs["summary"]
    assert summary["rdf"]["O-Si"]["first_peak"] == pytest.approx(1.62, abs=0.05)
    assert summary["coordination"]["Si"]["O"] == pytest.approx(4.0, abs=0.05)
    assert summary["coordination"]["Si"]["Si"] == 0.0
    assert summary["rings"]["bonds"] == ["O-Si"] and summary["rings"]["alternating_fraction"] == 1.0
