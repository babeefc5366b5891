"""Known-answer tests for aetdask.kernels.atoms.metrics (paper rule and strict one-to-one rule)."""

import json
import time

import numpy as np
import pytest

from aetdask.kernels.atoms import metrics
from aetdask.kernels.atoms.metrics import paper_match, strict_match

SIGMA = 0.05      # Å per axis
CUTOFF = 1.0      # Å; below half the 2.2 Å minimum spacing, so no ambiguous matches


def amorphous(n=400, min_distance=2.2, radius=15.0, seed=0):
    """`n` random points in a sphere, no two closer than `min_distance` (rejection sampling)."""
    rng = np.random.default_rng(seed)
    points = np.empty((0, 3))
    while len(points) < n:
        p = rng.uniform(-radius, radius, 3)
        if p @ p <= radius**2 and (len(points) == 0 or
                                   np.min(np.linalg.norm(points - p, axis=1)) >= min_distance):
            points = np.vstack([points, p])
    return points


@pytest.fixture(scope="module")
def truth():
    return amorphous()


@pytest.fixture(scope="module")
def si(truth):
    return np.full(len(truth), "Si")


@pytest.fixture(scope="module")
def two_species(truth):
    return np.random.default_rng(1).choice(["Ge", "Si"], len(truth))


def noisy(truth, sigma=SIGMA, seed=2):
    return truth + np.random.default_rng(seed).normal(0.0, sigma, truth.shape)


def sample_precision_pm(diff):
    return 100 * np.sqrt(np.var(diff, axis=0, ddof=1).sum())


# --------------------------------------------------------------------------- noise only
@pytest.mark.parametrize("species", ["si", "two_species"])
def test_gaussian_noise_gives_sqrt3_sigma(truth, species, request):
    labels = request.getfixturevalue(species)
    traced = noisy(truth)
    n = len(truth)
    expected_pm = np.sqrt(3) * SIGMA * 100        # 8.66 pm

    paper = paper_match(traced, truth, labels, labels, CUTOFF)
    assert paper["overall"]["matched"] == n
    assert paper["overall"]["identification_pct"] == 100.0
    np.testing.assert_array_equal(paper["match_index"], np.arange(n))
    # With every atom matched correctly the residual is minus the noise (shifted by a
    # constant), so the precision is exactly the sample spread of the noise ...
    noise = traced - truth
    assert paper["overall"]["precision_pm"] == pytest.approx(sample_precision_pm(noise), rel=1e-9)
    # ... and the converged shift removes the mean noise.
    np.testing.assert_allclose(paper["shift"], -noise.mean(axis=0), atol=1e-4)
    assert paper["overall"]["precision_pm"] == pytest.approx(expected_pm, rel=0.03)
    for s in np.unique(labels):
        stats = paper["species"][s]
        assert stats["truth"] == stats["traced"] == stats["matched"] == (labels == s).sum()
        assert stats["identification_pct"] == 100.0
        mine = labels == s
        assert stats["precision_pm"] == pytest.approx(
            sample_precision_pm(paper["diff"][mine]), rel=1e-9)

    strict = strict_match(traced, truth, labels, labels, CUTOFF)
    assert strict["overall"]["true_positives"] == n
    assert strict["overall"]["false_positives"] == strict["overall"]["false_negatives"] == 0
    assert strict["overall"]["precision_pm"] == pytest.approx(expected_pm, rel=0.03)
    assert strict["overall"]["precision_pm"] == pytest.approx(
        paper["overall"]["precision_pm"], rel=1e-6)
    # rmsd includes the mean offset, which the converged shift has removed.
    # rmsd² = Σ_axes var(ddof=0): the converged shift has removed the mean offset.
    assert strict["overall"]["rmsd_pm"] == pytest.approx(
        np.sqrt((n - 1) / n) * sample_precision_pm(noise), rel=1e-6)
    pairs = strict["pairs"][np.argsort(strict["pairs"][:, 0])]
    np.testing.assert_array_equal(pairs, np.column_stack([np.arange(n), np.arange(n)]))


def test_results_are_plain_json(truth, two_species):
    traced = noisy(truth)
    for result in (paper_match(traced, truth, two_species, two_species, CUTOFF),
                   strict_match(traced, truth, two_species, two_species, CUTOFF)):
        text = json.dumps({k: result[k] for k in ("species", "overall", "shift", "iterations")})
        assert "Ge" in text and "Si" in text
        for stats in [result["overall"], *result["species"].values()]:
            assert all(type(v) in (int, float) for v in stats.values()), stats


# --------------------------------------------------------------------------- translation
TRANSLATION = np.array([0.3, -0.2, 0.1])


def test_translation_is_recovered(truth, si):
    traced = noisy(truth, sigma=0.02) + TRANSLATION
    paper = paper_match(traced, truth, si, si, CUTOFF, center=False)
    np.testing.assert_allclose(paper["shift"], -TRANSLATION, atol=0.01)
    assert 1 < paper["iterations"] < 100
    assert paper["overall"]["identification_pct"] == 100.0
    assert paper["overall"]["precision_pm"] == pytest.approx(np.sqrt(3) * 2, rel=0.1)

    strict = strict_match(traced, truth, si, si, CUTOFF)
    np.testing.assert_allclose(strict["shift"], -TRANSLATION, atol=0.01)
    assert strict["overall"]["true_positives"] == len(truth)
    assert strict["overall"]["rmsd_pm"] == pytest.approx(np.sqrt(3) * 2, rel=0.1)


def test_centring_recovers_translation_beyond_cutoff(truth, si):
    big = np.array([4.0, -3.0, 2.5])                       # |big| = 5.6 Å ≫ cutoff
    traced = noisy(truth) + big
    paper = paper_match(traced, truth, si, si, CUTOFF)   # center=True
    assert paper["overall"]["identification_pct"] == 100.0
    np.testing.assert_allclose(paper["shift"], -big, atol=0.01)
    uncentred = paper_match(traced, truth, si, si, CUTOFF, center=False)
    assert uncentred["overall"]["matched"] < len(truth) // 10


def test_fixed_shift_is_not_reestimated(truth, si):
    traced = noisy(truth, sigma=0.02) + TRANSLATION
    paper = paper_match(traced, truth, si, si, CUTOFF, center=False, max_iterations=0)
    strict = strict_match(traced, truth, si, si, CUTOFF, iterations=0)
    assert paper["shift"] == strict["shift"] == [0.0, 0.0, 0.0]
    # The translation is a mean offset: it leaves precision alone but inflates the rmsd.
    assert strict["overall"]["rmsd_pm"] == pytest.approx(100 * np.linalg.norm(TRANSLATION),
                                                         rel=0.05)
    np.testing.assert_allclose(paper["diff"].mean(axis=0), -TRANSLATION, atol=0.01)


# --------------------------------------------------------------------------- missing / spurious
def test_missing_and_spurious_atoms(truth, si):
    n, k, j = len(truth), 17, 9
    rng = np.random.default_rng(3)
    kept = np.sort(rng.choice(n, n - k, replace=False))
    direction = rng.normal(size=(j, 3))
    spurious = 20.0 * direction / np.linalg.norm(direction, axis=1, keepdims=True)  # sphere r=15
    traced = np.vstack([noisy(truth)[kept], spurious])
    labels = np.full(len(traced), "Si")

    paper = paper_match(traced, truth, labels, si, CUTOFF, center=False)
    assert paper["overall"]["matched"] == n - k
    assert paper["overall"]["traced"] == n - k + j
    assert paper["overall"]["identification_pct"] == 100.0 * (n - k) / n
    np.testing.assert_array_equal(paper["match_index"], np.r_[kept, np.full(j, -1)])
    assert np.isnan(paper["diff"][-j:]).all() and not paper["matched_mask"][-j:].any()

    strict = strict_match(traced, truth, labels, si, CUTOFF)
    assert strict["overall"]["true_positives"] == n - k
    assert strict["overall"]["false_positives"] == j
    assert strict["overall"]["false_negatives"] == k
    assert strict["species"]["Si"] == strict["overall"]


# --------------------------------------------------------------------------- species
def test_species_labels_matter(truth, two_species):
    traced = noisy(truth)
    relabel = np.flatnonzero(two_species == "Si")[:12]
    traced_species = two_species.copy()
    traced_species[relabel] = "Ge"       # right place, wrong element
    n_si, n_ge = (two_species == "Si").sum(), (two_species == "Ge").sum()

    paper = paper_match(traced, truth, traced_species, two_species, CUTOFF)
    assert paper["species"]["Si"]["matched"] == n_si - 12
    assert paper["species"]["Si"]["identification_pct"] == 100.0 * (n_si - 12) / n_si
    assert paper["species"]["Ge"]["matched"] == n_ge
    assert paper["species"]["Ge"]["traced"] == n_ge + 12
    assert not paper["matched_mask"][relabel].any()

    strict = strict_match(traced, truth, traced_species, two_species, CUTOFF)
    assert strict["species"]["Si"]["false_negatives"] == 12
    assert strict["species"]["Ge"]["false_positives"] == 12
    assert strict["overall"]["true_positives"] == len(truth) - 12


def test_species_absent_from_truth(truth, si):
    traced_species = si.copy()
    traced_species[:5] = "O"
    paper = paper_match(truth, truth, traced_species, si, CUTOFF)
    oxygen = paper["species"]["O"]
    assert (oxygen["truth"], oxygen["traced"], oxygen["matched"]) == (0, 5, 0)
    assert np.isnan(oxygen["identification_pct"]) and np.isnan(oxygen["precision_pm"])
    assert paper["species"]["Si"]["matched"] == len(truth) - 5
    strict = strict_match(truth, truth, traced_species, si, CUTOFF)
    assert strict["species"]["O"]["false_positives"] == 5
    assert strict["species"]["Si"]["false_negatives"] == 5
    assert strict["species"]["Si"]["rmsd_pm"] == 0.0


# --------------------------------------------------------------------------- one-to-one
def test_paper_rule_is_not_one_to_one(truth, si):
    n = len(truth)
    traced = np.vstack([noisy(truth), truth[7] + [0.3, 0.0, 0.0]])   # a second atom at truth 7
    labels = np.full(n + 1, "Si")

    paper = paper_match(traced, truth, labels, si, CUTOFF)
    assert paper["overall"]["matched"] == n + 1
    assert paper["overall"]["identification_pct"] == 100.0 * (n + 1) / n
    assert paper["match_index"][7] == paper["match_index"][n] == 7

    strict = strict_match(traced, truth, labels, si, CUTOFF)
    assert strict["overall"]["true_positives"] == n
    assert strict["overall"]["false_positives"] == 1
    assert strict["overall"]["false_negatives"] == 0
    assert [7, 7] in strict["pairs"].tolist() and n not in strict["pairs"][:, 0]


def test_two_traced_one_truth():
    truth = np.zeros((1, 3))
    traced = np.array([[0.2, 0, 0], [-0.5, 0, 0]])
    paper = paper_match(traced, truth, ["Si"] * 2, ["Si"], CUTOFF, center=False, max_iterations=0)
    assert paper["overall"]["matched"] == 2 and paper["overall"]["identification_pct"] == 200.0
    strict = strict_match(traced, truth, ["Si"] * 2, ["Si"], CUTOFF, iterations=0)
    assert strict["overall"]["true_positives"] == 1
    assert strict["overall"]["false_positives"] == 1
    assert strict["pairs"].tolist() == [[0, 0]]
    assert strict["overall"]["rmsd_pm"] == pytest.approx(20.0)


def test_strict_maximises_pairs_before_distance():
    # p is nearest to A, but sending p to B lets q take A: two pairs beat one shorter pair.
    truth = np.array([[0.0, 0, 0], [1.8, 0, 0]])          # A, B
    traced = np.array([[0.85, 0, 0], [-0.95, 0, 0]])      # p, q
    strict = strict_match(traced, truth, ["Si"] * 2, ["Si"] * 2, CUTOFF, iterations=0)
    assert sorted(strict["pairs"].tolist()) == [[0, 1], [1, 0]]
    assert strict["overall"]["false_positives"] == strict["overall"]["false_negatives"] == 0


def test_strict_minimises_total_distance():
    # Both pairings have two pairs; the straight one (0.5 + 0.5) beats the crossed one (1 + 1).
    truth = np.array([[0.0, 0, 0], [1.5, 0, 0]])
    traced = np.array([[0.5, 0, 0], [1.0, 0, 0]])
    strict = strict_match(traced, truth, ["Si"] * 2, ["Si"] * 2, cutoff=1.2, iterations=0)
    assert sorted(strict["pairs"].tolist()) == [[0, 0], [1, 1]]
    assert strict["overall"]["rmsd_pm"] == pytest.approx(50.0)


def test_strict_crowded_component():
    # q, s see only A; r sees A, B and C. At most two pairs exist (A with one of q/r/s, and
    # r with B or C), so one traced and one truth atom stay unpaired.
    truth = np.array([[0.0, 0, 0], [1.6, 0, 0], [0, 1.6, 0]])      # A, B, C
    traced = np.array([[-0.5, 0, 0], [0.6, 0.6, 0], [0, 0, -0.5]])  # q, r, s
    strict = strict_match(traced, truth, ["Si"] * 3, ["Si"] * 3, cutoff=1.2, iterations=0)
    overall = strict["overall"]
    assert (overall["true_positives"], overall["false_positives"],
            overall["false_negatives"]) == (2, 1, 1)
    pairs = strict["pairs"].tolist()
    assert len(pairs) == 2 and [1, 0] not in pairs          # r must take B or C, not A
    # The least total distance: q or s takes A (0.5) and r takes B or C (1.166).
    assert overall["rmsd_pm"] == pytest.approx(100 * np.sqrt((0.25 + 0.36 + 1.0) / 2))


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("function", [paper_match, strict_match])
@pytest.mark.parametrize("change, word", [
    ({"traced": np.zeros((4, 2))}, "traced"),
    ({"truth": np.zeros(3)}, "truth"),
    ({"traced": np.full((4, 3), np.nan)}, "traced"),
    ({"traced_species": ["Si"] * 3}, "traced_species"),
    ({"truth_species": ["Si"] * 5}, "truth_species"),
    ({"cutoff": 0.0}, "cutoff"),
    ({"cutoff": -1.0}, "cutoff"),
    ({"cutoff": np.nan}, "cutoff"),
    ({"cutoff": None}, "cutoff"),
])
def test_bad_input_raises(function, change, word):
    args = {"traced": np.zeros((4, 3)), "truth": np.ones((4, 3)),
            "traced_species": ["Si"] * 4, "truth_species": ["Si"] * 4, "cutoff": 1.0} | change
    with pytest.raises(ValueError, match=word):
        function(**args)


def test_bad_options_raise():
    x, s = np.zeros((2, 3)), ["Si", "Si"]
    with pytest.raises(ValueError, match="shift"):
        strict_match(x, x, s, s, 1.0, shift=[0.0, 0.0])
    with pytest.raises(ValueError, match="iterations"):
        strict_match(x, x, s, s, 1.0, iterations=-1)
    with pytest.raises(ValueError, match="max_iterations"):
        paper_match(x, x, s, s, 1.0, max_iterations=-1)


def test_empty_models():
    empty, x = np.empty((0, 3)), np.zeros((2, 3))
    paper = paper_match(empty, x, [], ["Si", "Si"], 1.0)
    assert paper["overall"]["matched"] == 0 and paper["overall"]["identification_pct"] == 0.0
    strict = strict_match(x, empty, ["Si", "Si"], [], 1.0)
    assert strict["overall"]["false_positives"] == 2 and strict["pairs"].shape == (0, 2)


# --------------------------------------------------------------------------- scale
def test_strict_match_scales_without_dense_matrix(monkeypatch):
    # 28³ = 21,952 atoms on a jittered 3 Å lattice (nearest neighbours ≥ 2.4 Å apart).
    rng = np.random.default_rng(4)
    grid = 3.0 * np.stack(np.meshgrid(*[np.arange(28)] * 3, indexing="ij"), -1).reshape(-1, 3)
    truth = grid + rng.uniform(-0.3, 0.3, grid.shape)
    n = len(truth)
    labels = rng.choice(["Co", "Pd", "Pt"], n)
    traced = truth + rng.normal(0, SIGMA, truth.shape)
    doubles = rng.choice(n, 200, replace=False)           # extra atoms near truth atoms
    traced = np.vstack([traced[100:], truth[doubles] + [0.4, 0.0, 0.0]])
    traced_labels = np.r_[labels[100:], labels[doubles]]

    largest = []
    solve = metrics.linear_sum_assignment

    def spy(cost):
        largest.append(cost.size)
        return solve(cost)

    monkeypatch.setattr(metrics, "linear_sum_assignment", spy)
    start = time.perf_counter()
    strict = strict_match(traced, truth, traced_labels, labels, CUTOFF)
    elapsed = time.perf_counter() - start

    missing_doubles = np.isin(doubles, np.arange(100)).sum()   # doubles of deleted atoms
    assert strict["overall"]["true_positives"] == n - 100 + missing_doubles
    assert strict["overall"]["false_negatives"] == 100 - missing_doubles
    assert strict["overall"]["false_positives"] == 200 - missing_doubles
    assert strict["overall"]["precision_pm"] == pytest.approx(np.sqrt(3) * SIGMA * 100, rel=0.03)
    assert max(largest) == 2        # only {traced, double} × {truth} components reach the solver
    assert elapsed < 5.0
