import numpy as np
import pytest

from aetdask import backend
from aetdask.geometry import detector_coordinates, projection_matrices
from aetdask.kernels.tomography import projector_general as pg
from aetdask.kernels.tomography.projector_general import backward, forward

VOL = (9, 12, 10)
DET = (14, 13)
SUBSAMPLES = [1, 2, (2, 2, 1), (3, 1, 2)]


def _random_matrices(n, seed=0):
    rng = np.random.default_rng(seed)
    return projection_matrices(rng.uniform(-180.0, 180.0, (n, 3)))


def _rel(a, b):
    return abs(a - b) / max(abs(a), abs(b))


def _one_voxel(shape, index):
    v = np.zeros(shape)
    v[index] = 1.0
    return v


@pytest.mark.parametrize("subsamples", SUBSAMPLES)
def test_adjoint_float64(subsamples):
    rng = np.random.default_rng(1)
    a = _random_matrices(5)
    x = rng.standard_normal(VOL)
    y = rng.standard_normal((5,) + DET)
    lhs = np.vdot(forward(x, a, DET, subsamples), y)
    rhs = np.vdot(x, backward(y, a, VOL, subsamples))
    assert _rel(lhs, rhs) < 1e-5


@pytest.mark.parametrize("subsamples", [1, (2, 2, 1)])
def test_adjoint_float32(subsamples):
    rng = np.random.default_rng(2)
    a = _random_matrices(4, seed=3)
    x = rng.standard_normal(VOL).astype(np.float32)
    y = rng.standard_normal((4,) + DET).astype(np.float32)
    ax = forward(x, a, DET, subsamples)
    aty = backward(y, a, VOL, subsamples)
    assert ax.dtype == np.float32 and aty.dtype == np.float32
    lhs = np.vdot(ax.astype(np.float64), y)
    rhs = np.vdot(x.astype(np.float64), aty)
    assert _rel(lhs, rhs) < 1e-4


@pytest.mark.parametrize("subsamples", SUBSAMPLES)
def test_numba_matches_xp_path(subsamples):
    rng = np.random.default_rng(4)
    a = _random_matrices(3, seed=5)
    x = rng.standard_normal(VOL)
    y = rng.standard_normal((3,) + DET)
    sub = pg._as_subsamples(subsamples)
    f_numba = forward(x, a, DET, subsamples)
    f_xp = pg._forward_xp(x, a, DET, sub)
    np.testing.assert_allclose(f_numba, f_xp, rtol=0, atol=1e-6 * np.abs(f_xp).max())
    b_numba = backward(y, a, VOL, subsamples)
    b_xp = pg._backward_xp(y, a, VOL, sub)
    np.testing.assert_allclose(b_numba, b_xp, rtol=0, atol=1e-6 * np.abs(b_xp).max())


def test_xp_path_chunked_over_z(monkeypatch):
    """Several z chunks give the same answer as one."""
    rng = np.random.default_rng(6)
    a = _random_matrices(2, seed=7)
    x = rng.standard_normal(VOL)
    y = rng.standard_normal((2,) + DET)
    whole_f = pg._forward_xp(x, a, DET, (2, 2, 2))
    whole_b = pg._backward_xp(y, a, VOL, (2, 2, 2))
    monkeypatch.setattr(pg, "_XP_CHUNK_ELEMENTS", 4 * 8 * 12 * 10 * 2)  # 2 planes per chunk
    assert len(pg._xp_chunks(VOL, 8)) == 5
    np.testing.assert_allclose(pg._forward_xp(x, a, DET, (2, 2, 2)), whole_f, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pg._backward_xp(y, a, VOL, (2, 2, 2)), whole_b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [1, 3])
def test_forward_parallel_schemes_agree(n):
    x = np.random.default_rng(8).standard_normal(VOL)
    a = _random_matrices(n, seed=9)
    by_projection = pg._forward_numba(x, a, DET, (2, 1, 2), scheme="projection")
    by_slab = pg._forward_numba(x, a, DET, (2, 1, 2), scheme="slab")
    np.testing.assert_allclose(by_projection, by_slab, rtol=0, atol=1e-12)


def test_dtypes_and_array_module():
    a = _random_matrices(2)
    for dtype in (np.float32, np.float64):
        p = forward(np.ones(VOL, dtype=dtype), a, DET, 1)
        assert type(p) is np.ndarray and p.dtype == dtype and p.shape == (2,) + DET
        v = backward(np.ones((2,) + DET, dtype=dtype), a, VOL, 1)
        assert type(v) is np.ndarray and v.dtype == dtype and v.shape == VOL
    assert forward(np.ones(VOL, dtype=np.int32), a, DET, 1).dtype == np.float64


def test_centre_voxel_at_zero_tilt_hits_one_pixel():
    shape, det = (7, 8, 9), (11, 12)
    vol = _one_voxel(shape, (7 // 2, 8 // 2, 9 // 2))
    p = forward(vol, projection_matrices([0.0]), det, subsamples=1)[0]
    expected = np.zeros(det)
    expected[11 // 2, 12 // 2] = 1.0
    np.testing.assert_array_equal(p, expected)


def test_tilt_axis_is_x():
    shape, det = (7, 8, 9), (11, 12)
    vol = _one_voxel(shape, (7 // 2 + 1, 8 // 2 - 2, 9 // 2 + 3))
    thetas = [-70.0, -33.0, 0.0, 12.5, 45.0, 90.0, 135.0]
    p = forward(vol, projection_matrices(thetas), det, subsamples=1)
    for proj in p:
        np.testing.assert_allclose(proj[:, 12 // 2 + 3].sum(), 1.0, atol=1e-12)
        np.testing.assert_allclose(np.delete(proj, 12 // 2 + 3, axis=1), 0.0, atol=1e-12)


def test_tilt_of_90_degrees_maps_z_to_minus_y():
    shape, det = (7, 8, 9), (11, 12)
    vol = _one_voxel(shape, (7 // 2 + 2, 8 // 2, 9 // 2))
    p = forward(vol, projection_matrices([90.0]), det, subsamples=1)[0]
    assert np.unravel_index(np.argmax(p), det) == (11 // 2 - 2, 12 // 2)
    assert p[11 // 2 - 2, 12 // 2] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("subsamples", [1, 2, (3, 1, 2)])
def test_mass_is_conserved_inside_the_detector(subsamples):
    rng = np.random.default_rng(10)
    vol = rng.random((6, 7, 8))
    p = forward(vol, _random_matrices(4, seed=11), (16, 15), subsamples)
    np.testing.assert_allclose(p.sum(axis=(1, 2)), vol.sum(), rtol=1e-12)


def test_centroid_matches_detector_coordinates():
    shape, det = (6, 7, 8), (16, 15)
    angles = np.random.default_rng(12).uniform(-180.0, 180.0, (3, 3))
    rows, cols = np.indices(det)
    for index in [(0, 0, 0), (5, 6, 7), (2, 5, 1), (3, 3, 4)]:
        iz, iy, ix = index
        r = np.array([[ix - shape[2] // 2, iy - shape[1] // 2, iz - shape[0] // 2]], dtype=float)
        expected = detector_coordinates(r, angles)[:, 0, :] / 1.0 + np.array(det) // 2
        p = forward(_one_voxel(shape, index), projection_matrices(angles), det, subsamples=1)
        mass = p.sum(axis=(1, 2))
        centroid = np.stack([(p * rows).sum(axis=(1, 2)), (p * cols).sum(axis=(1, 2))], axis=1) / mass[:, None]
        np.testing.assert_allclose(mass, 1.0, atol=1e-12)
        np.testing.assert_allclose(centroid, expected, rtol=0, atol=1e-9)


def test_contributions_outside_the_detector_are_dropped():
    # a detector smaller than the footprint: forward still equals the xp path, adjoint holds
    rng = np.random.default_rng(13)
    a = _random_matrices(3, seed=14)
    x = rng.standard_normal(VOL)
    y = rng.standard_normal((3, 5, 4))
    px = forward(x, a, (5, 4), 2)
    np.testing.assert_allclose(px, pg._forward_xp(x, a, (5, 4), (2, 2, 2)), rtol=0, atol=1e-12)
    assert _rel(np.vdot(px, y), np.vdot(x, backward(y, a, VOL, 2))) < 1e-10


def test_validation_errors_name_the_argument():
    a = _random_matrices(2)
    vol = np.zeros(VOL)
    proj = np.zeros((2,) + DET)
    with pytest.raises(ValueError, match="volume"):
        forward(np.zeros((3, 3)), a, DET)
    with pytest.raises(ValueError, match="matrices"):
        forward(vol, np.zeros((2, 3)), DET)
    with pytest.raises(ValueError, match="matrices"):
        forward(vol, np.zeros((2, 2, 3)), DET)
    with pytest.raises(ValueError, match="det_shape"):
        forward(vol, a, (4, 4, 4))
    with pytest.raises(ValueError, match="det_shape"):
        forward(vol, a, (4, 0))
    with pytest.raises(ValueError, match="subsamples"):
        forward(vol, a, DET, subsamples=(2, 2))
    with pytest.raises(ValueError, match="subsamples"):
        forward(vol, a, DET, subsamples=0)
    with pytest.raises(ValueError, match="subsamples"):
        forward(vol, a, DET, subsamples=1.5)
    with pytest.raises(ValueError, match="projections"):
        backward(np.zeros(DET), a, VOL)
    with pytest.raises(ValueError, match="matrices"):
        backward(proj, a[:1], VOL)
    with pytest.raises(ValueError, match="vol_shape"):
        backward(proj, a, (3, 3))


@pytest.mark.skipif(not backend.cupy_available(), reason="needs CuPy and a GPU")
def test_cupy_matches_numpy():
    cp = backend.get_array_module("gpu")
    rng = np.random.default_rng(15)
    a = _random_matrices(4, seed=16)
    x = rng.standard_normal(VOL).astype(np.float32)
    y = rng.standard_normal((4,) + DET).astype(np.float32)
    for subsamples in (1, (2, 2, 1)):
        f_gpu = forward(cp.asarray(x), a, DET, subsamples)
        b_gpu = backward(cp.asarray(y), a, VOL, subsamples)
        assert isinstance(f_gpu, cp.ndarray) and f_gpu.dtype == np.float32
        assert isinstance(b_gpu, cp.ndarray) and b_gpu.dtype == np.float32
        f_cpu = forward(x, a, DET, subsamples)
        b_cpu = backward(y, a, VOL, subsamples)
        np.testing.assert_allclose(cp.asnumpy(f_gpu), f_cpu, rtol=0, atol=1e-5 * np.abs(f_cpu).max())
        np.testing.assert_allclose(cp.asnumpy(b_gpu), b_cpu, rtol=0, atol=1e-5 * np.abs(b_cpu).max())
    # the CUDA kernels' adjoint, in float64
    x64, y64 = cp.asarray(x, dtype=cp.float64), cp.asarray(y, dtype=cp.float64)
    lhs = float(cp.vdot(forward(x64, a, DET, 2), y64))
    rhs = float(cp.vdot(x64, backward(y64, a, VOL, 2)))
    assert _rel(lhs, rhs) < 1e-10
