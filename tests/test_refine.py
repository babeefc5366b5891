import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from aetdask.geometry import (deformation_directions, projection_matrices, remove_rigid_motion, rigid_motion_basis,
                              strain_basis, strain_matrix)
from aetdask.kernels.preprocessing.shift import fourier_shift
from aetdask.reconstruct.refine import refine_geometry as refine
from aetdask.simulate import amorphous_particle, linear


def test_rigid_motion_basis_predicts_a_rotated_object():
    e = np.c_[np.full(5, 1.0), [0, 30, 60, 120, 150.0], np.full(5, -2.0)]  # away from θ = 90° (gimbal lock)
    rotation, translation = rigid_motion_basis(e)
    w = np.array([0.001, -0.002, 0.0015])
    predicted = e + np.einsum("kij,j->ki", rotation, w)
    g = Rotation.from_rotvec(w).as_matrix()
    np.testing.assert_allclose(projection_matrices(predicted), projection_matrices(e) @ g, atol=1e-5)
    t = np.array([0.3, -0.2, 0.5])
    np.testing.assert_allclose(translation @ t, (projection_matrices(e) @ t)[:, [1, 0]])


@pytest.mark.parametrize("angles", [np.c_[np.zeros(7), np.linspace(-72, 72, 7), np.zeros(7)],
                                    np.random.default_rng(3).uniform(-60, 60, (7, 3))])
def test_strain_basis_is_the_first_order_effect_of_a_deformation(angles):
    # A(e)(I + E) r = (I + D) A(e + δ) r to first order in E: the residual shrinks as E²
    rng = np.random.default_rng(1)
    r = rng.normal(0, 10, (3, 20))
    eps = rng.normal(0, 1, 6)
    angle, mag = strain_basis(angles)
    errors = []
    for size in (1e-3, 1e-4):
        e = size * eps
        lhs = (projection_matrices(angles) @ (np.eye(3) + strain_matrix(e)) @ r)[:, :2]
        d = mag @ e
        dm = np.stack([np.stack([d[:, 0], d[:, 2]], axis=1), np.stack([d[:, 2], d[:, 1]], axis=1)], axis=1)
        rhs = (np.eye(2) + dm) @ (projection_matrices(angles + angle @ e) @ r)[:, :2]
        errors.append(np.abs(lhs - rhs).max())
        assert np.abs(lhs - (projection_matrices(angles) @ r)[:, :2]).max() > 100 * errors[-1]
    assert errors[1] < 0.03 * errors[0]
    # an isotropic strain changes no angle
    np.testing.assert_allclose(angle @ np.array([1, 1, 1, 0, 0, 0.0]), 0, atol=1e-9)


def test_remove_rigid_motion_keeps_only_what_is_observable():
    e = np.c_[np.zeros(12), np.arange(0, 180, 15.0), np.zeros(12)]
    _, translation = rigid_motion_basis(e)
    rng = np.random.default_rng(0)
    local = rng.normal(0, 0.1, (12, 2))
    mixed = local + translation @ np.array([1.0, -2.0, 0.7])
    cleaned = remove_rigid_motion(mixed, translation)
    np.testing.assert_allclose(remove_rigid_motion(cleaned, translation), cleaned, atol=1e-12)
    assert np.abs(remove_rigid_motion(translation @ np.array([1.0, -2.0, 0.7]), translation)).max() < 1e-9
    assert np.sqrt((cleaned**2).mean()) <= np.sqrt((local**2).mean())


def test_deformation_coordinates_ignore_pure_magnifications():
    # a single-axis series whose φ, ψ a refinement has moved by tenths of a degree: stretching
    # along the tilt axis against across it then has a tiny angle pattern, which must not turn
    # angle noise into huge deformation coordinates
    rng = np.random.default_rng(1)
    n = 30
    e = np.c_[np.zeros(n), np.arange(0, 180, 6.0), np.zeros(n)] + rng.normal(0, 0.3, (n, 3))
    collective, directions, to_collective = deformation_directions(e)
    # four strains change the angles of a single-axis series: not the isotropic one, nor the stretch
    # along the tilt axis against across it
    assert directions.shape == (4, 6)
    np.testing.assert_allclose(directions @ directions.T, np.eye(4), atol=1e-12)
    # a real deformation's angle pattern is kept whole
    real = collective @ np.array([0, 0, 0, 2e-3, 1e-3, -1e-3])
    np.testing.assert_allclose(collective @ (to_collective @ real), real, atol=1e-4 * np.abs(real).max())
    # angle noise of the same RMS gets coordinates of about the real pattern's size (here 1.1
    # times); a kept magnification direction would make them over 100 times larger
    noise = rng.normal(0, np.sqrt((real**2).mean()), real.shape)
    assert np.linalg.norm(to_collective @ noise) < 3 * np.linalg.norm(to_collective @ real)


@pytest.fixture(scope="module")
def perturbed():
    rng = np.random.default_rng(0)
    model = amorphous_particle(40, species=["Pt", "Si"], seed=5)
    n = 30
    truth = np.c_[np.zeros(n), np.arange(0, 180, 6.0), np.zeros(n)]
    ts = linear(model, angles=truth, pixel_size=0.4, shape=40).compute()
    shifts = rng.uniform(-1.5, 1.5, (n, 2))
    ts = ts.copy(data=fourier_shift(ts.values, shifts))
    given = truth + np.c_[rng.normal(0, 0.3, n), rng.normal(0, 0.5, n), rng.normal(0, 0.3, n)]
    return ts, truth, given, shifts


def test_refine_rejects_a_momentum_out_of_range(perturbed):
    with pytest.raises(ValueError, match="momentum"):
        refine(perturbed[0], rounds=1, momentum=1.0)
    with pytest.raises(ValueError, match="memory"):
        refine(perturbed[0], rounds=1, memory=-1)


def test_shift_refinement_recovers_known_shifts(perturbed):
    ts, truth, _, shifts = perturbed
    seen = []
    _, out = refine(ts, rounds=5, iterations=40, angles=False, on_round=lambda rec, t: seen.append((rec, t)))
    err = remove_rigid_motion(np.c_[out.shift_y, out.shift_x] + shifts, rigid_motion_basis(truth)[1])
    assert np.sqrt((err**2).mean(axis=0)).max() < 0.1  # pixels, up to a global translation
    np.testing.assert_allclose(np.asarray(out.scale).mean(), 1.0)
    # on_round: once per round, with that round's record and the geometry found so far
    assert [rec["round"] for rec, _ in seen] == [1, 2, 3, 4, 5]
    assert [rec["round"] for rec in out.attrs["provenance"][-1]["params"]["history"]] == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(seen[-1][1].shift_y, out.shift_y)
    assert not np.array_equal(seen[0][1].shift_y, seen[-1][1].shift_y)


@pytest.mark.slow
def test_angle_and_shift_refinement(perturbed):
    ts, truth, given, shifts = perturbed
    ts = ts.assign_coords(phi=("tilt", given[:, 0]), theta=("tilt", given[:, 1]), psi=("tilt", given[:, 2]))
    vol, out = refine(ts, rounds=10, iterations=40)
    rotation, translation = rigid_motion_basis(truth)
    before = np.sqrt((remove_rigid_motion(given - truth, rotation) ** 2).mean(axis=0))
    est = np.c_[out.phi, out.theta, out.psi]
    after = np.sqrt((remove_rigid_motion(est - truth, rotation) ** 2).mean(axis=0))
    assert np.all(after < 0.2) and np.all(after < 0.6 * before), (before, after)
    # θ: its slow, deformation-like part (a cos 2θ + b sin 2θ) is corrected too, with momentum
    assert after[1] < 0.1, after
    # as rotations, with the common rotation taken out (φ and ψ alone magnify a rotation
    # about the beam by 1/|cos θ| and |tan θ| in this convention)
    true_m = projection_matrices(truth)
    omega = Rotation.from_matrix(np.transpose(true_m, (0, 2, 1)) @ projection_matrices(est)).as_rotvec()
    omega_given = Rotation.from_matrix(np.transpose(true_m, (0, 2, 1)) @ projection_matrices(given)).as_rotvec()
    rms = [np.degrees(np.sqrt(((w - w.mean(axis=0)) ** 2).sum(axis=1).mean())) for w in (omega_given, omega)]
    assert rms[1] < 0.15 and rms[1] < 0.25 * rms[0], rms
    err = remove_rigid_motion(np.c_[out.shift_y, out.shift_x] + shifts, translation)
    assert np.sqrt((err**2).mean(axis=0)).max() < 0.1
    hist = out.attrs["provenance"][-1]["params"]["history"]
    assert hist[-1]["r_factor"] < 0.2 * hist[0]["r_factor"]
    assert vol.attrs["provenance"][-1]["stage"] == "reconstruct.refine"
