"""The CUDA kernels of the general projector, run as plain C++ on the CPU.

The kernels' source compiles as C++ once CUDA's few names are given meaning
(a one-block, one-thread launch; ``atomicAdd`` as a plain add), so their maths is
checked here against the vectorised NumPy reference on every machine with a C++
compiler. On a GPU, ``test_projector_general.test_cupy_matches_numpy`` runs them
through CuPy.
"""

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from aetdask.kernels.tomography import projector_cuda
from aetdask.kernels.tomography import projector_general as pg

from .test_projector_general import _random_matrices

CXX = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")

PRELUDE = r"""
#include <cmath>
#define __global__
#define __device__
struct aet_dim3 { unsigned int x; };
static aet_dim3 blockIdx = {0}, threadIdx = {0}, blockDim = {1}, gridDim = {1};
static inline double atomicAdd(double* a, double v) { double old = *a; *a += v; return old; }
"""


@pytest.fixture(scope="module")
def cuda_as_cpp(tmp_path_factory):
    if CXX is None:
        pytest.skip("needs a C++ compiler")
    d = tmp_path_factory.mktemp("cuda_as_cpp")
    src = d / "kernels.cpp"
    src.write_text(PRELUDE + projector_cuda.SOURCE)
    lib = d / "kernels.so"
    subprocess.run([CXX, "-O1", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, capture_output=True)
    so = ctypes.CDLL(str(lib))
    ll, dbl, ptr = ctypes.c_longlong, ctypes.c_double, ctypes.c_void_p
    so.aet_splat.argtypes = [ptr, ll, ll, ll, ptr, ptr, ptr, ll, dbl, ptr, ll, ll, ll]
    so.aet_gather.argtypes = [ptr, ll, ll, ll, ptr, ptr, ptr, ll, dbl, ptr, ll, ll, ll]
    return so


def _c(a):
    a = np.ascontiguousarray(a, dtype=np.float64)
    return a, a.ctypes.data


def _run_forward(so, vol, matrices, det, sub, offset=(0.0, 0.0, 0.0)):
    origin, inc, doff = pg._geometry(matrices, vol.shape, det, sub, offset)
    # the arrays (_v, ...) stay bound while the kernel reads their pointers
    (_v, vp), (_o, op), (_i, ip), (_d, dp) = _c(vol), _c(origin), _c(inc), _c(doff)
    out = np.zeros((len(matrices),) + det)
    so.aet_splat(vp, *vol.shape, op, ip, dp, doff.shape[1], 1.0 / doff.shape[1], out.ctypes.data, len(matrices), *det)
    return out


def _run_backward(so, proj, matrices, vol_shape, sub, offset=(0.0, 0.0, 0.0)):
    origin, inc, doff = pg._geometry(matrices, vol_shape, proj.shape[1:], sub, offset)
    (_p, pp), (_o, op), (_i, ip), (_d, dp) = _c(proj), _c(origin), _c(inc), _c(doff)
    out = np.empty(vol_shape)
    so.aet_gather(pp, *proj.shape, op, ip, dp, doff.shape[1], 1.0 / doff.shape[1], out.ctypes.data, *vol_shape)
    return out


@pytest.mark.parametrize("subsamples", [1, 2, (3, 1, 2)])
@pytest.mark.parametrize("det", [(14, 13), (5, 4)])  # the second is smaller than the footprint
def test_cuda_kernels_match_the_reference_and_are_adjoint(cuda_as_cpp, subsamples, det):
    rng = np.random.default_rng(21)
    vol_shape = (9, 12, 10)
    a = _random_matrices(4, seed=22)
    sub = pg._as_subsamples(subsamples)
    x = rng.standard_normal(vol_shape)
    x[x < -0.5] = 0.0  # zero voxels are skipped by the splat
    y = rng.standard_normal((4,) + det)
    offset = (0.0, 0.0, 1.0)  # a z-slab's own offset
    fx = _run_forward(cuda_as_cpp, x, a, det, sub, offset)
    by = _run_backward(cuda_as_cpp, y, a, vol_shape, sub, offset)
    np.testing.assert_allclose(fx, pg._forward_xp(x, a, det, sub, offset), rtol=0, atol=1e-12 * np.abs(fx).max())
    np.testing.assert_allclose(by, pg._backward_xp(y, a, vol_shape, sub, offset), rtol=0,
                               atol=1e-12 * np.abs(by).max())
    lhs, rhs = np.vdot(fx, y), np.vdot(x, by)
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)


def test_cuda_kernels_on_a_single_axis_series_equal_the_numba_projector(cuda_as_cpp):
    from aetdask.geometry import projection_matrices

    rng = np.random.default_rng(23)
    a = projection_matrices(np.c_[np.zeros(7), np.linspace(-60, 60, 7), np.zeros(7)])
    x = rng.random((16, 16, 16))
    y = rng.random((7, 16, 16))
    np.testing.assert_allclose(_run_forward(cuda_as_cpp, x, a, (16, 16), (2, 2, 2)), pg.forward(x, a, (16, 16)),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_run_backward(cuda_as_cpp, y, a, (16, 16, 16), (2, 2, 2)),
                               pg.backward(y, a, (16, 16, 16)), rtol=1e-12, atol=1e-12)
