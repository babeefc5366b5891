import numpy as np
import pytest

from aetdask import evaluate
from aetdask.errors import InputError
from aetdask.io import RunStore, write_atoms
from aetdask.schema import atoms
from aetdask.simulate import amorphous_particle

from ._util import needs_seed


@pytest.fixture(scope="module")
def truth():
    return amorphous_particle(300, species=["Si", "Ge"], seed=11)


def with_positions(model, pos, species=None):
    return atoms(pos, model.species.values if species is None else species)


def test_known_gaussian_noise_gives_sqrt3_sigma(truth):
    sigma = 0.06
    rng = np.random.default_rng(0)
    noisy = with_positions(truth, truth.position.values + rng.normal(0, sigma, truth.position.shape))
    r = evaluate(noisy, truth, cutoff=0.9)
    assert r["overall"]["identification_pct"] == 100.0
    assert r["overall"]["precision_pm"] == pytest.approx(np.sqrt(3) * sigma * 100, rel=0.03)
    assert r["strict"]["true_positives"] == 300 and r["strict"]["false_positives"] == 0
    assert r["strict"]["precision_pm"] == pytest.approx(np.sqrt(3) * sigma * 100, rel=0.03)
    assert set(r["species"]) == {"Si", "Ge"}


def test_deleted_and_spurious_atoms(truth):
    k, j = 13, 7
    pos, sp = truth.position.values[k:], truth.species.values[k:]
    far = np.column_stack([np.linspace(30, 40, j), np.zeros(j), np.zeros(j)])
    traced = atoms(np.vstack([pos, far]), np.concatenate([sp, ["Si"] * j]))
    r = evaluate(traced, truth, cutoff=0.9, center=False)
    n = truth.sizes["atom"]
    assert r["overall"]["matched"] == n - k
    assert r["overall"]["identification_pct"] == pytest.approx(100 * (n - k) / n)
    assert (r["strict"]["false_positives"], r["strict"]["false_negatives"]) == (j, k)


def test_accepts_files_and_run_stores(tmp_path, truth):
    f = write_atoms(truth, tmp_path / "truth.xyz")
    store = RunStore(tmp_path / "run.zarr")
    store.write("truth", truth)
    r = evaluate(store.path, f, cutoff=0.9)
    assert r["overall"]["precision_pm"] < 1e-3 and r["strict"]["true_positives"] == 300
    with pytest.raises(InputError, match="cutoff"):
        evaluate(truth, truth, cutoff=-1)
    empty = RunStore(tmp_path / "empty.zarr")
    with pytest.raises(InputError, match="no atomic model"):
        evaluate(empty.path, truth, cutoff=0.9)


@needs_seed
def test_seed_ground_truth_scored_against_itself_with_noise(seed_dir):
    from aetdask.io import read_atoms

    gt = read_atoms(seed_dir / "aSi_208atoms_GT.txt")
    rng = np.random.default_rng(1)
    traced = atoms(gt.position.values + rng.normal(0, 0.1, (208, 3)), gt.species.values)
    r = evaluate(traced, gt, cutoff=0.9)
    assert r["species"]["Si"]["truth"] == 208 and r["overall"]["identification_pct"] == 100.0
    assert r["overall"]["precision_pm"] == pytest.approx(np.sqrt(3) * 10, rel=0.1)


def test_a_store_as_truth_means_its_truth_product(tmp_path):
    """`evaluate STORE --truth STORE` (a simulated run) scores the traced model against the store's truth."""
    from aetdask.evaluate import evaluate
    from aetdask.io import RunStore
    from aetdask.schema import atoms as make_atoms

    truth = make_atoms(np.array([[0.0, 0, 0], [3.0, 0, 0], [0, 3.0, 0]]), "Si")
    traced = make_atoms(truth.position.values + [[0.1, 0, 0], [-0.1, 0, 0], [0, 0, 0]], "Si")
    store = RunStore(tmp_path / "run.zarr")
    store.write("truth", truth)
    store.write("refined", traced)
    res = evaluate(store.path, store.path, cutoff=0.9)
    assert res["overall"]["matched"] == 3 and res["overall"]["precision_pm"] > 1.0  # not the model against itself
