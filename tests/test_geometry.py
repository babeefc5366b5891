import numpy as np
import pytest

from aetdask.geometry import detector_coordinates, pixel_position, projection_matrices


@pytest.mark.parametrize("angles", [[0, 0, 0], [10, 20, 30], [-2.2, 75, 2.8], [90, -45, 13]])
def test_projection_matrices_are_rotations(angles):
    a = projection_matrices([angles])[0]
    np.testing.assert_allclose(a @ a.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(a) == pytest.approx(1.0)


def test_single_axis_tilt_about_x():
    theta = np.array([0.0, 30.0, 90.0, 177.0])
    r = np.array([[1.0, 2.0, 3.0], [-0.5, 0.7, -1.1]])
    c = detector_coordinates(r, theta)  # (tilt, atom, (y_det, x_det))
    t = np.deg2rad(theta)[:, None]
    np.testing.assert_allclose(c[..., 1], np.broadcast_to(r[:, 0], (4, 2)))  # x_det = x: tilt axis
    np.testing.assert_allclose(c[..., 0], np.cos(t) * r[:, 1] - np.sin(t) * r[:, 2])


def test_resire_rotation_order():
    """A = P (Rz(φ) Ry(θ) Rx(ψ))ᵀ P with P swapping x and y (the RESIRE code's (y, x, z) order)."""

    def rot(axis, deg):
        a = np.deg2rad(deg)
        c, s = np.cos(a), np.sin(a)
        m = np.eye(3)
        i, j = [(1, 2), (2, 0), (0, 1)][axis]
        m[i, i] = m[j, j] = c
        m[i, j], m[j, i] = -s, s
        return m

    phi, theta, psi = 12.0, -33.0, 7.0
    p = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1.0]])
    expected = p @ (rot(2, phi) @ rot(1, theta) @ rot(0, psi)).T @ p
    np.testing.assert_allclose(projection_matrices([[phi, theta, psi]])[0], expected, atol=1e-12)
    # ψ alone turns about the sample y axis (volume dim1): x goes into the beam direction
    a = projection_matrices([[0, 0, 90]])[0]
    np.testing.assert_allclose(a @ [1, 0, 0], [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(a @ [0, 1, 0], [0, 1, 0], atol=1e-12)


def test_pixel_position_origin_at_half():
    assert pixel_position(0.0, 128, 0.195) == 64
    assert pixel_position(0.0, 7, 1.0) == 3
    assert pixel_position(0.39, 128, 0.195) == pytest.approx(66)
