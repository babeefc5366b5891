"""Classification with posteriors: the mixture of candidate intensities tied to the ADF cross-sections."""

import numpy as np
import pytest

from aetdask import physics
from aetdask.errors import ConfigError
from aetdask.kernels.atoms import mixture
from aetdask.model import classify
from aetdask.model.classify import class_probabilities
from aetdask.schema import atoms

NAMES = ["Co", "Pd", "Pt"]


def _candidates(n_atoms, width, n_noise, seed, scale=3.0):
    """Intensities drawn from the model itself: species at scale × their relative cross-sections, log-normal noise."""
    rng = np.random.default_rng(seed)
    sigma = np.array([physics.adf_cross_section(s, 200e3) for s in NAMES])
    means = scale * sigma / sigma[0]
    x = np.concatenate([rng.normal(m, width * m, k) for m, k in zip(means, n_atoms)]
                       + [rng.lognormal(np.log(0.4), 0.6, n_noise)])
    truth = np.concatenate([np.full(k, i + 1) for i, k in enumerate(n_atoms)] + [np.zeros(n_noise, int)])
    order = rng.permutation(len(x))
    cand = atoms(rng.uniform(-30, 30, (len(x), 3)), ["Co"] * len(x), intensity=x[order])
    return cand, truth[order]


def test_three_well_separated_species_and_noise_are_labelled_with_posteriors():
    cand, truth = _candidates([150, 120, 60], 0.06, 600, seed=1)
    out = classify(cand, ["Pt", "Co", "Pd"], method="mixture", seed=3)
    prob = out.species_probability
    assert prob.dims == ("atom", "class") and prob.coords["class"].values.tolist() == ["non-atom"] + NAMES
    assert prob.attrs["units"] and prob.attrs["description"]
    np.testing.assert_allclose(prob.values.sum(axis=1), 1.0, atol=1e-12)
    full = class_probabilities(cand, NAMES, method="mixture", seed=3).values  # every candidate's
    np.testing.assert_allclose(full.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(full.argmax(1), truth)  # labels right
    assert out.sizes["atom"] == np.sum(truth > 0)  # the non-atoms dropped
    assert np.all(out.species.values == np.array(["non-atom"] + NAMES)[prob.values.argmax(1)])
    p = out.attrs["provenance"][-1]["params"]
    assert p["method"] == "mixture" and p["counts"] == {"Co": 150, "Pd": 120, "Pt": 60}
    assert p["scale"] == pytest.approx(3.0, rel=0.03)  # the one fitted scale of the physics ratios
    again = classify(cand, NAMES, method="mixture", seed=3)  # reproducible: same seed, same result
    np.testing.assert_array_equal(again.species_probability.values, prob.values)
    hard = classify(cand, NAMES, method="kmeans")
    assert set(np.unique(hard.species_probability.values)) <= {0.0, 1.0}


def test_posteriors_are_calibrated_where_species_overlap():
    cand, truth = _candidates([400, 400, 200], 0.2, 1500, seed=2)
    full = class_probabilities(cand, NAMES, method="mixture").values
    given, p = full.argmax(1), full.max(1)
    right = given == truth
    errors = np.sum(~right)
    assert errors > 20  # the case is not trivial …
    assert abs(np.sum(1 - p) - errors) < 0.25 * errors  # … and the posteriors predict how many are wrong
    band = (p > 0.6) & (p < 0.95)
    assert band.sum() > 30 and abs(right[band].mean() - p[band].mean()) < 0.1


def test_mixture_kernel_and_bad_method():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.lognormal(-1, 0.5, 400), rng.normal(5, 0.4, 80), rng.normal(10, 0.7, 80)])
    fitted, _, starts = mixture.fit_best(x, [1.0, 2.0], [0.3, 5.0, 10.0], 1)
    post, ll = mixture.posteriors(x, fitted)
    assert starts == 3 and np.isfinite(ll) and fitted["scale"] == pytest.approx(5.0, rel=0.05)
    assert np.array_equal(post.argmax(1), np.r_[np.zeros(400), np.ones(80), np.full(80, 2)])
    with pytest.raises(ConfigError):
        classify(atoms(np.zeros((5, 3)) + np.arange(5)[:, None], ["Si"] * 5, intensity=np.arange(5.0)), ["Si"],
                 method="bayes")
