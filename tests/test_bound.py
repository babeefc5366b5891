import numpy as np
import pytest

from aetdask.errors import InputError
from aetdask.model.bound import orientation_bound
from aetdask.schema import add_provenance, atoms, tilt_series

PIXEL, N = 0.2, 64


def fitted(positions, height, width, likelihood="poisson-gaussian"):
    """A one-projection model record as `model.refine` writes it: one Gaussian per atom, no background."""
    model = atoms(np.asarray(positions, dtype=float), ["Si"] * len(positions))
    params = {"likelihood": likelihood, "species": ["Si"], "components": 1, "height": [height], "width": [width],
              "background": [1e-9], "scale": [1.0], "offset_y": [0.0], "offset_x": [0.0]}
    tilts = tilt_series(np.ones((1, N, N)), [0.0], PIXEL).assign_coords(
        noise_alpha=("tilt", [1.0]), noise_sigma=("tilt", [0.0]))
    return add_provenance(model, "refine", params), tilts


def test_the_bound_on_a_rotation_about_the_beam_is_the_analytic_one():
    # four atoms in the detector plane at radius r, and one on the beam axis off the plane (which
    # fixes the two tilts without touching the rotation about the beam): a rotation δ about the
    # beam moves each of the four by r δ, and a Gaussian spot of N counts and width s is located
    # to s / √N along any direction, so δ is bound to s / (2 r √N), shifts, scale and background
    # being decoupled by the symmetry
    r, s, height = 3.0, 0.4, 100.0
    model, tilts = fitted([(r, 0, 0), (-r, 0, 0), (0, r, 0), (0, -r, 0), (0, 0, 2.0)], height, s)
    bound = orientation_bound(model, tilts)
    counts = height * 2 * np.pi * (s / PIXEL) ** 2
    expected = np.degrees(s / (2 * r * np.sqrt(counts)))
    assert bound.shape == (1, 3)
    assert bound[0, 2] == pytest.approx(expected, rel=0.03)
    # four times the counts halve every bound
    model4, _ = fitted([(r, 0, 0), (-r, 0, 0), (0, r, 0), (0, -r, 0), (0, 0, 2.0)], 4 * height, s)
    np.testing.assert_allclose(orientation_bound(model4, tilts), bound / 2, rtol=1e-3)


def test_a_model_fitted_by_least_squares_has_no_bound():
    model, tilts = fitted([(1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0)], 10.0, 0.4, likelihood="least-squares")
    with pytest.raises(InputError, match="refined against counts"):
        orientation_bound(model, tilts)
