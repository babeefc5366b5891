"""The shear-warp projector: exact adjoint, the general projector's geometry, slabs, and when it applies."""

import numpy as np
import pytest

from aetdask.geometry import detector_coordinates, projection_matrices
from aetdask.kernels.preprocessing.tilt_axis import turned_angles
from aetdask.kernels.tomography import projector_general, projector_sheared
from aetdask.reconstruct.projectors import EulerProjector, euler_method

RNG = np.random.default_rng(7)
#: an experiment's geometry: one main axis, φ and ψ of a few degrees
EULER = np.array([[RNG.normal(0, 2.0), t, RNG.normal(0, 2.0)] for t in range(-70, 71, 14)])


def blobs(n, centres, width=1.6):
    """A volume of Gaussian blobs (voxel units, centred convention of the projectors)."""
    z, y, x = np.meshgrid(*[np.arange(n) - n // 2] * 3, indexing="ij")
    vol = np.zeros((n, n, n))
    for cx, cy, cz in centres:
        vol += np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * width**2))
    return vol


@pytest.mark.parametrize("subsamples", [1, (2, 2, 1), (2, 2, 2)])
@pytest.mark.parametrize("euler", [EULER, turned_angles(EULER, 90.0)], ids=["x-axis", "turned-90"])
def test_back_projection_is_the_exact_adjoint(subsamples, euler):
    vol = RNG.random((12, 14, 16))
    a = projection_matrices(euler)
    p = projector_sheared.forward(vol, a, (15, 17), subsamples)
    y = RNG.random(p.shape)
    b = projector_sheared.backward(y, a, vol.shape, subsamples)
    assert np.isclose(np.vdot(p, y), np.vdot(vol, b), rtol=1e-12)


@pytest.mark.parametrize("subsamples", [1, (2, 2, 1), (2, 2, 2)])
def test_single_axis_is_the_general_projector(subsamples):
    vol = RNG.random((16, 16, 16))
    a = projection_matrices(np.arange(-60.0, 61.0, 15.0))
    np.testing.assert_allclose(projector_sheared.forward(vol, a, (16, 16), subsamples),
                               projector_general.forward(vol, a, (16, 16), subsamples), atol=1e-12)
    y = RNG.random((len(a), 16, 16))
    np.testing.assert_allclose(projector_sheared.backward(y, a, vol.shape, subsamples),
                               projector_general.backward(y, a, vol.shape, subsamples), atol=1e-12)


@pytest.mark.parametrize("turn", [0.0, 90.0, -4.0])
def test_atoms_land_where_the_geometry_puts_them(turn):
    """A blob's projection is centred where :func:`detector_coordinates` puts its centre, and the image
    agrees with the general projector's to within the warp's small extra blur."""
    n = 40
    euler = turned_angles(EULER, turn)  # the tilt axis turned in the image
    a = projection_matrices(euler)
    ii, jj = np.meshgrid(np.arange(n) - n // 2, np.arange(n) - n // 2, indexing="ij")
    for centre in ([9.3, -6.2, 4.1], [-8.4, 7.7, -9.6]):
        vol = blobs(n, [centre])
        sheared = projector_sheared.forward(vol, a, (n, n), (2, 2, 1))
        general = projector_general.forward(vol, a, (n, n), (2, 2, 2))
        assert np.sqrt(np.mean((sheared - general) ** 2)) < 0.05 * general.std()
        np.testing.assert_allclose(sheared.sum(axis=(1, 2)), vol.sum(), rtol=5e-3)  # the warp's ripple, no more
        det = detector_coordinates([centre], euler)[:, 0]  # (n_proj, (y_det, x_det)) in voxels
        cy = (sheared * ii).sum(axis=(1, 2)) / sheared.sum(axis=(1, 2))
        cx = (sheared * jj).sum(axis=(1, 2)) / sheared.sum(axis=(1, 2))
        np.testing.assert_allclose(cy, det[:, 0], atol=0.02)
        np.testing.assert_allclose(cx, det[:, 1], atol=0.02)


def test_z_slabs_sum_to_the_whole_volume():
    vol = RNG.random((18, 12, 12))
    a = projection_matrices(EULER)
    whole = projector_sheared.forward(vol, a, (13, 13), 2)
    parts = []
    for z0, z1 in ((0, 7), (7, 18)):
        proj = EulerProjector(EULER, (13, 13), vol.shape, (2, 2, 2), z_range=(z0, z1))
        assert proj.method == "shear-warp"
        parts.append(proj.forward(vol[z0:z1]))
    np.testing.assert_allclose(parts[0] + parts[1], whole, atol=1e-12)


def test_the_method_follows_the_geometry():
    a = projection_matrices(EULER)
    assert euler_method(a) == "shear-warp"
    assert euler_method(a, "general") == "general"
    along_beam = projection_matrices(np.array([[0.0, 0.0, 90.0], [0.0, 30.0, 90.0]]))  # the x axis along the beam
    assert not projector_sheared.supported(along_beam)
    assert not projector_sheared.supported(projection_matrices(turned_angles(EULER, 25.0)))  # the warp would ripple
    assert euler_method(along_beam) == "general"
    with pytest.raises(ValueError, match="reconstruct.projector: shear-warp cannot project"):
        euler_method(along_beam, "shear-warp")
    gpu = object()  # any array module but NumPy: the CUDA kernels are the general projector's
    assert euler_method(a, "auto", gpu) == "general"
    with pytest.raises(ValueError, match="CPU only"):
        euler_method(a, "shear-warp", gpu)
    with pytest.raises(ValueError, match="reconstruct.projector: expected one of"):
        euler_method(a, "fast")
    with pytest.raises(ValueError, match="general projector"):
        projector_sheared.forward(np.ones((4, 4, 4)), along_beam, (4, 4))
    # an int sub-sample count: (s, s, 1) sheared (columns step exactly), (s, s, s) general
    assert EulerProjector(EULER, (8, 8), (8, 8, 8), 2).subsamples == (2, 2, 1)
    assert EulerProjector(EULER, (8, 8), (8, 8, 8), 2, method="general").subsamples == (2, 2, 2)


def test_float32_in_float32_out():
    vol = RNG.random((10, 10, 10)).astype(np.float32)
    a = projection_matrices(EULER)
    p = projector_sheared.forward(vol, a, (10, 10), 2)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, projector_sheared.forward(vol.astype(float), a, (10, 10), 2), rtol=1e-4, atol=1e-4)
