"""CUDA kernels of the general projector, for CuPy arrays.

The same maths as the Numba kernels of :mod:`aetdask.kernels.tomography.projector_general`
(sub-sampled voxels, bilinear splatting, the gather with the same weights as its
exact adjoint), written as two raw CUDA kernels:

* ``aet_splat`` — forward projection, one thread per (projection, voxel); each
  thread splats its voxel's sub-samples with ``atomicAdd`` (float64, compute
  capability 6.0 and up).
* ``aet_gather`` — back projection, one thread per voxel; it loops over the
  projections and sub-samples and writes its voxel once (no atomics).

A sub-sample's detector position is summed in the order of the vectorised
reference (``projector_general._xp_splat``): origin, then z, y, the sub-sample
offset and x steps. Both kernels loop with a grid stride, so any launch size
covers the whole problem, and the source compiles as plain C++ too (the tests
run it that way on machines without a GPU).

CuPy is reached only through :func:`aetdask.backend.raw_kernel`.
"""

from __future__ import annotations

import numpy as np

from aetdask.backend import get_array_module, raw_kernel

__all__ = ["SOURCE", "forward", "backward"]

THREADS = 256
MAX_BLOCKS = 65535

SOURCE = r"""
// The footprint of sub-sample k of voxel r in projection p: the flat indices q[c] of the four
// pixels around its detector position and their bilinear weights w[c]; q[c] = -1 off the detector.
// The position is summed as the reference does (origin, z, y, offset, x); then
// (1-fy)(1-fx) -> (i0, j0), (1-fy)fx -> (i0, j0+1), fy(1-fx) -> (i0+1, j0), fy fx -> (i0+1, j0+1).
__device__ inline void aet_footprint(const double* origin, const double* inc, const double* doff,
                                     long long nsub, long long p, long long k, long long r,
                                     long long ny, long long nx, long long dy, long long dx,
                                     long long* q, double* w)
{
    const double* o = origin + 2 * p;
    const double* a = inc + 6 * p;  // a[2*axis + c]: step of detector coordinate c along axis (x, y, z)
    const double* d = doff + 2 * (p * nsub + k);
    double iz = (double)(r / (ny * nx)), iy = (double)((r / nx) % ny), ix = (double)(r % nx);
    double ux = o[0] + iz * a[4] + iy * a[2] + d[0] + ix * a[0];
    double uy = o[1] + iz * a[5] + iy * a[3] + d[1] + ix * a[1];
    double fi = floor(uy), fj = floor(ux);
    double fy = uy - fi, fx = ux - fj;
    long long i0 = (long long)fi, j0 = (long long)fj;
    for (int c = 0; c < 4; ++c) {
        long long i = i0 + (c >> 1), j = j0 + (c & 1);
        w[c] = ((c >> 1) ? fy : 1.0 - fy) * ((c & 1) ? fx : 1.0 - fx);
        q[c] = (i < 0 || i >= dy || j < 0 || j >= dx) ? -1 : i * dx + j;
    }
}

extern "C" __global__ void aet_splat(
    const double* vol, long long nz, long long ny, long long nx,
    const double* origin, const double* inc, const double* doff, long long nsub, double wsub,
    double* out, long long n, long long dy, long long dx)
{
    // out (n, dy, dx) += splat of vol (nz, ny, nx) for every projection; one thread per (p, voxel)
    long long nvox = nz * ny * nx;
    long long total = n * nvox;
    long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += stride) {
        long long p = t / nvox, r = t - p * nvox;
        double v = vol[r] * wsub;
        if (v == 0.0) continue;
        double* det = out + p * dy * dx;
        long long q[4];
        double w[4];
        for (long long k = 0; k < nsub; ++k) {
            aet_footprint(origin, inc, doff, nsub, p, k, r, ny, nx, dy, dx, q, w);
            for (int c = 0; c < 4; ++c)
                if (q[c] >= 0) atomicAdd(det + q[c], v * w[c]);
        }
    }
}

extern "C" __global__ void aet_gather(
    const double* proj, long long n, long long dy, long long dx,
    const double* origin, const double* inc, const double* doff, long long nsub, double wsub,
    double* out, long long nz, long long ny, long long nx)
{
    // out (nz, ny, nx) = transpose of aet_splat applied to proj (n, dy, dx); one thread per voxel
    long long nvox = nz * ny * nx;
    long long stride = (long long)blockDim.x * gridDim.x;
    for (long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x; r < nvox; r += stride) {
        double acc = 0.0;
        long long q[4];
        double w[4];
        for (long long p = 0; p < n; ++p) {
            const double* det = proj + p * dy * dx;
            for (long long k = 0; k < nsub; ++k) {
                aet_footprint(origin, inc, doff, nsub, p, k, r, ny, nx, dy, dx, q, w);
                for (int c = 0; c < 4; ++c)
                    if (q[c] >= 0) acc += w[c] * det[q[c]];
            }
        }
        out[r] = acc * wsub;
    }
}
"""


def _launch(name, total, args):
    """Run kernel ``name`` with enough blocks for ``total`` items (the grid stride covers the rest).

    Scalars go in as NumPy int64 / float64, the types the kernels declare.
    """
    kernel = raw_kernel(SOURCE, name)
    blocks = int(max(1, min(MAX_BLOCKS, -(-total // THREADS))))
    kernel((blocks,), (THREADS,), args)


def _geometry_args(xp, origin, inc, doff):
    return tuple(xp.asarray(np.ascontiguousarray(g, dtype=np.float64)) for g in (origin, inc, doff))


def forward(volume, origin, inc, doff, det_shape):
    """Projections (n, dy, dx) float64 of a CuPy volume, from :func:`projector_general._geometry`'s output."""
    xp = get_array_module(volume)
    vol = xp.ascontiguousarray(volume, dtype=xp.float64)
    nz, ny, nx = vol.shape
    n, nsub = doff.shape[:2]
    dy, dx = det_shape
    o, a, d = _geometry_args(xp, origin, inc, doff)
    out = xp.zeros((n, dy, dx), dtype=xp.float64)
    i64 = np.int64
    _launch("aet_splat", n * nz * ny * nx,
            (vol, i64(nz), i64(ny), i64(nx), o, a, d, i64(nsub), np.float64(1.0 / nsub), out, i64(n), i64(dy), i64(dx)))
    return out


def backward(projections, origin, inc, doff, vol_shape):
    """Back projection (nz, ny, nx) float64 of CuPy projections; the exact adjoint of :func:`forward`."""
    xp = get_array_module(projections)
    proj = xp.ascontiguousarray(projections, dtype=xp.float64)
    n, dy, dx = proj.shape
    nz, ny, nx = vol_shape
    nsub = doff.shape[1]
    o, a, d = _geometry_args(xp, origin, inc, doff)
    out = xp.empty((nz, ny, nx), dtype=xp.float64)
    i64 = np.int64
    _launch("aet_gather", nz * ny * nx,
            (proj, i64(n), i64(dy), i64(dx), o, a, d, i64(nsub), np.float64(1.0 / nsub), out, i64(nz), i64(ny), i64(nx)))
    return out
