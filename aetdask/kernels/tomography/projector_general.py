"""Forward and exact-adjoint back projection of a volume at arbitrary Euler angles.

This is the Radon-type projector of RESIRE (Pham et al., Sci. Rep. 2023): every
voxel is cut into ``sz · sy · sx`` sub-samples, each sub-sample is rotated onto
the detector with the projection matrix ``A`` of :mod:`aetdask.geometry` and
splatted bilinearly onto the four nearest pixels. :func:`backward` gathers with
the very same weights, so it is the exact adjoint (transpose) of
:func:`forward`: ``⟨forward(x), y⟩ = ⟨x, backward(y)⟩`` up to float rounding.

Geometry (voxel units; a detector pixel equals a voxel):

* voxel ``(iz, iy, ix)`` of a ``(nz, ny, nx)`` volume has its centre at
  ``r = (ix − nx//2, iy − ny//2, iz − nz//2)`` as ``(x, y, z)``;
* an axis with ``s`` sub-samples uses the offsets ``(k + 0.5)/s − 0.5``,
  ``k = 0 … s−1`` (``s = 2`` → ±0.25, ``s = 1`` → 0); each sub-sample carries
  ``1/(sz·sy·sx)`` of the voxel value;
* a sub-sample at ``r'`` lands at the fractional pixel indices
  ``u_x = A[0]·r' + dx//2`` (column) and ``u_y = A[1]·r' + dy//2`` (row).

Bilinear splatting rule (used by both directions)::

    i0 = floor(u_y), j0 = floor(u_x), fy = u_y − i0, fx = u_x − j0
    (i0,   j0  ) ← (1 − fy)(1 − fx)      (i0,   j0+1) ← (1 − fy) fx
    (i0+1, j0  ) ←      fy (1 − fx)      (i0+1, j0+1) ←      fy  fx

Contributions to pixels outside the ``(dy, dx)`` detector are dropped.

Two compiled implementations of the same maths:

* NumPy input → Numba kernels (all arithmetic and accumulation in float64, the
  result cast back to the input dtype). Along a row of voxels (x) the pixel
  index and fraction are stepped from voxel to voxel rather than floored anew,
  in the same sequence in both directions. The forward projection runs one
  projection per thread when there are at least as many projections as Numba
  threads, otherwise every thread projects a slab of z planes into its own
  detector buffer and the buffers are summed (no races either way). The back
  projection (a gather) runs one z plane per thread.
* CuPy input → the raw CUDA kernels of :mod:`aetdask.kernels.tomography.projector_cuda`
  (one thread per voxel; ``atomicAdd`` splats forward, a plain gather back),
  float64 inside, the result cast to the input dtype.

A third, vectorised ``xp`` implementation (:func:`_forward_xp`,
:func:`_backward_xp`; scatter-add with ``xp.bincount``, gather by fancy
indexing, chunked over z planes) is the reference that both compiled back ends
are tested against; it runs on NumPy and CuPy alike.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from aetdask.backend import asnumpy, get_array_module
from aetdask.kernels.tomography import projector_cuda

__all__ = ["forward", "backward"]

# Elements (corners × sub-samples × voxels) handled per step of the xp path: bounds the
# temporaries to ~ 2**22 × (8 B index + 8 B weight + a few float64 scratch) ≈ 150 MB.
_XP_CHUNK_ELEMENTS = 2**22


# --------------------------------------------------------------------------- validation


def _as_subsamples(subsamples) -> tuple[int, int, int]:
    s = np.atleast_1d(np.asarray(subsamples))
    if s.shape == (1,):
        s = np.repeat(s, 3)
    if s.shape != (3,) or not np.issubdtype(s.dtype, np.integer) or np.any(s < 1):
        raise ValueError(
            f"subsamples: expected a positive int or three positive ints (sz, sy, sx), got {subsamples!r}"
        )
    return int(s[0]), int(s[1]), int(s[2])


def _as_shape(shape, n: int, name: str) -> tuple[int, ...]:
    try:
        t = tuple(int(v) for v in shape)
        ok = len(t) == n and all(v == w for v, w in zip(t, shape))
    except (TypeError, ValueError):
        ok = False
    if not ok or any(v < 1 for v in t):
        raise ValueError(f"{name}: expected {n} positive ints, got {shape!r}")
    return t


def _as_matrices(matrices) -> np.ndarray:
    a = np.asarray(asnumpy(matrices), dtype=np.float64)
    if a.ndim != 3 or a.shape[1:] != (3, 3):
        raise ValueError(f"matrices: expected shape (n, 3, 3), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("matrices: contains NaN or Inf")
    return a


def _check_array(x, ndim: int, name: str):
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != ndim or any(v < 1 for v in shape):
        raise ValueError(f"{name}: expected a non-empty {ndim}-d array, got shape {shape}")
    if x.dtype.kind == "c":
        raise ValueError(f"{name}: complex arrays are not supported (dtype {x.dtype})")


def _out_dtype(dtype):
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)


def _offsets(subsamples) -> np.ndarray:
    """Sub-sample offsets (S, 3) as (x, y, z), S = sz·sy·sx, z slowest."""
    sz, sy, sx = subsamples
    oz, oy, ox = ((np.arange(s) + 0.5) / s - 0.5 for s in (sz, sy, sx))
    z, y, x = np.meshgrid(oz, oy, ox, indexing="ij")
    return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)


def _geometry(matrices, vol_shape, det_shape, subsamples, offset=(0.0, 0.0, 0.0)):
    """Per projection: pixel indices of voxel (0, 0, 0)'s centre, increments, sub-sample offsets.

    Returns ``origin`` (n, 2), ``inc`` (n, 3, 2) for steps along (x, y, z) and ``doff``
    (n, S, 2), the last axis always ``(u_x, u_y)``.
    """
    nz, ny, nx = vol_shape
    dy, dx = det_shape
    a2 = matrices[:, :2, :]  # rows x_det, y_det
    r0 = np.array([-(nx // 2), -(ny // 2), -(nz // 2)], dtype=np.float64) + np.asarray(offset, dtype=np.float64)
    origin = a2 @ r0 + np.array([dx // 2, dy // 2], dtype=np.float64)
    inc = np.ascontiguousarray(np.swapaxes(a2, 1, 2))  # inc[p, axis] = A[:2] · e_axis
    doff = np.ascontiguousarray(np.einsum("pij,sj->psi", a2, _offsets(subsamples)))
    return origin, inc, doff


# --------------------------------------------------------------------------- Numba kernels


@numba.njit(inline="always")
def _row_start(u):  # pragma: no cover - jitted
    """Pixel index and fraction of the first sub-sample of a row: ``floor(u)``, ``u − floor(u)``."""
    f = math.floor(u)
    return int(f), u - f


@numba.njit(inline="always")
def _row_step(i, f, a):  # pragma: no cover - jitted
    """Advance a (pixel index, fraction) pair by ``a`` (|a| ≤ 1): the fraction stays in [0, 1).

    Both directions walk every row with this same sequence, so they use identical weights.
    """
    f += a
    while f >= 1.0:
        f -= 1.0
        i += 1
    while f < 0.0:
        f += 1.0
        i -= 1
    return i, f


@numba.njit(fastmath=False, cache=True)
def _project_planes(vol, z0, z1, ox, oy, inc, doff, wsub, det):  # pragma: no cover - jitted
    """Splat the z planes [z0, z1) of ``vol`` onto ``det`` (dy, dx) for one projection."""
    ny, nx = vol.shape[1], vol.shape[2]
    dy, dx = det.shape
    axx, axy = inc[0, 0], inc[0, 1]
    ayx, ayy = inc[1, 0], inc[1, 1]
    azx, azy = inc[2, 0], inc[2, 1]
    for iz in range(z0, z1):
        for iy in range(ny):
            row = vol[iz, iy]
            bx = ox + iy * ayx + iz * azx
            by = oy + iy * ayy + iz * azy
            for k in range(doff.shape[0]):
                j0, fx = _row_start(bx + doff[k, 0])
                i0, fy = _row_start(by + doff[k, 1])
                for ix in range(nx):
                    v = row[ix] * wsub
                    # bilinear splat: (1-fy)(1-fx) → (i0, j0), (1-fy)fx → (i0, j0+1),
                    # fy(1-fx) → (i0+1, j0), fy·fx → (i0+1, j0+1); outside pixels dropped
                    w1 = v * fy
                    w0 = v - w1
                    w01 = w0 * fx
                    w11 = w1 * fx
                    if i0 >= 0 and i0 + 1 < dy and j0 >= 0 and j0 + 1 < dx:
                        det[i0, j0] += w0 - w01
                        det[i0, j0 + 1] += w01
                        det[i0 + 1, j0] += w1 - w11
                        det[i0 + 1, j0 + 1] += w11
                    else:
                        if 0 <= i0 < dy:
                            if 0 <= j0 < dx:
                                det[i0, j0] += w0 - w01
                            if 0 <= j0 + 1 < dx:
                                det[i0, j0 + 1] += w01
                        if 0 <= i0 + 1 < dy:
                            if 0 <= j0 < dx:
                                det[i0 + 1, j0] += w1 - w11
                            if 0 <= j0 + 1 < dx:
                                det[i0 + 1, j0 + 1] += w11
                    j0, fx = _row_step(j0, fx, axx)
                    i0, fy = _row_step(i0, fy, axy)


@numba.njit(parallel=True, fastmath=False, cache=True)
def _forward_by_projection(vol, origin, inc, doff, wsub, out):  # pragma: no cover - jitted
    """One projection per thread: out (n, dy, dx) float64, zero on entry."""
    nz = vol.shape[0]
    for p in numba.prange(out.shape[0]):
        _project_planes(vol, 0, nz, origin[p, 0], origin[p, 1], inc[p], doff[p], wsub, out[p])


@numba.njit(parallel=True, fastmath=False, cache=True)
def _forward_by_slab(vol, origin, inc, doff, wsub, buffers):  # pragma: no cover - jitted
    """One slab of z planes per thread, each into its own buffers[c] (n, dy, dx), zero on entry."""
    nz = vol.shape[0]
    nc = buffers.shape[0]
    for c in numba.prange(nc):
        z0 = (c * nz) // nc
        z1 = ((c + 1) * nz) // nc
        for p in range(buffers.shape[1]):
            _project_planes(vol, z0, z1, origin[p, 0], origin[p, 1], inc[p], doff[p], wsub, buffers[c, p])


@numba.njit(parallel=True, fastmath=False, cache=True)
def _backward_kernel(proj, origin, inc, doff, wsub, out):  # pragma: no cover - jitted
    """Gather (the transpose of the splat), one z plane per thread: out (nz, ny, nx) float64."""
    nz, ny, nx = out.shape
    n, dy, dx = proj.shape
    for iz in numba.prange(nz):
        acc = np.zeros((ny, nx))
        for p in range(n):
            axx, axy = inc[p, 0, 0], inc[p, 0, 1]
            ayx, ayy = inc[p, 1, 0], inc[p, 1, 1]
            azx, azy = inc[p, 2, 0], inc[p, 2, 1]
            det = proj[p]
            for iy in range(ny):
                bx = origin[p, 0] + iy * ayx + iz * azx
                by = origin[p, 1] + iy * ayy + iz * azy
                for k in range(doff.shape[1]):
                    j0, fx = _row_start(bx + doff[p, k, 0])
                    i0, fy = _row_start(by + doff[p, k, 1])
                    for ix in range(nx):
                        # same weights as the splat in _project_planes
                        if i0 >= 0 and i0 + 1 < dy and j0 >= 0 and j0 + 1 < dx:
                            top = det[i0, j0] + fx * (det[i0, j0 + 1] - det[i0, j0])
                            bot = det[i0 + 1, j0] + fx * (det[i0 + 1, j0 + 1] - det[i0 + 1, j0])
                            acc[iy, ix] += top + fy * (bot - top)
                        else:
                            g = 0.0
                            if 0 <= i0 < dy:
                                if 0 <= j0 < dx:
                                    g += (1.0 - fy) * (1.0 - fx) * det[i0, j0]
                                if 0 <= j0 + 1 < dx:
                                    g += (1.0 - fy) * fx * det[i0, j0 + 1]
                            if 0 <= i0 + 1 < dy:
                                if 0 <= j0 < dx:
                                    g += fy * (1.0 - fx) * det[i0 + 1, j0]
                                if 0 <= j0 + 1 < dx:
                                    g += fy * fx * det[i0 + 1, j0 + 1]
                            acc[iy, ix] += g
                        j0, fx = _row_step(j0, fx, axx)
                        i0, fy = _row_step(i0, fy, axy)
        for iy in range(ny):
            for ix in range(nx):
                out[iz, iy, ix] = acc[iy, ix] * wsub


def _forward_numba(volume, matrices, det_shape, subsamples, scheme=None, offset=(0.0, 0.0, 0.0)):
    """Numba forward projection of a NumPy volume (float64 inside); ``scheme`` forces
    ``"projection"`` or ``"slab"`` parallelisation (default: by projection if n ≥ threads)."""
    vol = np.ascontiguousarray(volume, dtype=np.float64)
    origin, inc, doff = _geometry(matrices, vol.shape, det_shape, subsamples, offset)
    wsub = 1.0 / doff.shape[1]
    n = matrices.shape[0]
    threads = numba.get_num_threads()
    if scheme is None:
        scheme = "projection" if n >= threads else "slab"
    if scheme == "projection":
        out = np.zeros((n,) + tuple(det_shape))
        _forward_by_projection(vol, origin, inc, doff, wsub, out)
    elif scheme == "slab":
        buffers = np.zeros((max(1, min(threads, vol.shape[0])), n) + tuple(det_shape))
        _forward_by_slab(vol, origin, inc, doff, wsub, buffers)
        out = buffers.sum(axis=0)
    else:
        raise ValueError(f"scheme: expected 'projection' or 'slab', got {scheme!r}")
    return out


def _backward_numba(projections, matrices, vol_shape, subsamples, offset=(0.0, 0.0, 0.0)):
    """Numba back projection of NumPy projections (float64 inside)."""
    proj = np.ascontiguousarray(projections, dtype=np.float64)
    origin, inc, doff = _geometry(matrices, vol_shape, proj.shape[1:], subsamples, offset)
    out = np.empty(tuple(vol_shape))
    _backward_kernel(proj, origin, inc, doff, 1.0 / doff.shape[1], out)
    return out


# --------------------------------------------------------------------------- xp (CuPy or NumPy)


def _xp_chunks(vol_shape, n_sub):
    nz, ny, nx = vol_shape
    cz = max(1, _XP_CHUNK_ELEMENTS // (4 * n_sub * ny * nx))
    return [(z0, min(nz, z0 + cz)) for z0 in range(0, nz, cz)]


def _xp_splat(xp, origin, inc, doff, z0, z1, ny, nx, dy, dx):
    """Flat pixel indices and bilinear weights, both (4, S, z1−z0, ny, nx), for one projection.

    Dropped contributions point at the dump bin ``dy·dx`` (weight kept; the bin is discarded).
    """
    x = xp.arange(nx, dtype=xp.float64)[None, None, None, :]
    y = xp.arange(ny, dtype=xp.float64)[None, None, :, None]
    z = xp.arange(z0, z1, dtype=xp.float64)[None, :, None, None]
    d = xp.asarray(doff)
    ux, uy = (
        float(origin[c]) + z * float(inc[2, c]) + y * float(inc[1, c])
        + d[:, c, None, None, None] + x * float(inc[0, c])
        for c in (0, 1)
    )
    fi = xp.floor(uy)
    fj = xp.floor(ux)
    fy = uy - fi
    fx = ux - fj
    i0 = fi.astype(xp.int64)
    j0 = fj.astype(xp.int64)
    # bilinear splat: (1-fy)(1-fx) → (i0, j0), (1-fy)fx → (i0, j0+1),
    # fy(1-fx) → (i0+1, j0), fy·fx → (i0+1, j0+1); outside pixels → dump bin dy·dx
    index = xp.empty((4,) + ux.shape, dtype=xp.int64)
    weight = xp.empty((4,) + ux.shape, dtype=xp.float64)
    for c, (di, dj) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        ii = i0 + di
        jj = j0 + dj
        inside = (ii >= 0) & (ii < dy) & (jj >= 0) & (jj < dx)
        index[c] = xp.where(inside, ii * dx + jj, dy * dx)
        weight[c] = (fy if di else 1.0 - fy) * (fx if dj else 1.0 - fx)
    return index, weight


def _forward_xp(volume, matrices, det_shape, subsamples, offset=(0.0, 0.0, 0.0)):
    """Vectorised forward projection (NumPy or CuPy), float64 inside, chunked over z."""
    xp = get_array_module(volume)
    nz, ny, nx = volume.shape
    dy, dx = det_shape
    origin, inc, doff = _geometry(matrices, volume.shape, det_shape, subsamples, offset)
    wsub = 1.0 / doff.shape[1]
    out = xp.zeros((matrices.shape[0], dy * dx), dtype=xp.float64)
    for z0, z1 in _xp_chunks(volume.shape, doff.shape[1]):
        v = volume[z0:z1].astype(xp.float64) * wsub
        for p in range(matrices.shape[0]):
            index, weight = _xp_splat(xp, origin[p], inc[p], doff[p], z0, z1, ny, nx, dy, dx)
            weight *= v[None, None]
            out[p] += xp.bincount(index.ravel(), weight.ravel(), minlength=dy * dx + 1)[: dy * dx]
    return out.reshape(-1, dy, dx)


def _backward_xp(projections, matrices, vol_shape, subsamples, offset=(0.0, 0.0, 0.0)):
    """Vectorised back projection (NumPy or CuPy), float64 inside, chunked over z."""
    xp = get_array_module(projections)
    nz, ny, nx = vol_shape
    n, dy, dx = projections.shape
    origin, inc, doff = _geometry(matrices, vol_shape, (dy, dx), subsamples, offset)
    wsub = 1.0 / doff.shape[1]
    padded = xp.zeros((n, dy * dx + 1), dtype=xp.float64)  # last column: the dump bin, always 0
    padded[:, : dy * dx] = projections.reshape(n, dy * dx)
    out = xp.empty((nz, ny, nx), dtype=xp.float64)
    for z0, z1 in _xp_chunks(vol_shape, doff.shape[1]):
        acc = xp.zeros((z1 - z0, ny, nx), dtype=xp.float64)
        for p in range(n):
            index, weight = _xp_splat(xp, origin[p], inc[p], doff[p], z0, z1, ny, nx, dy, dx)
            acc += (padded[p][index] * weight).sum(axis=(0, 1))
        out[z0:z1] = acc * wsub
    return out


# --------------------------------------------------------------------------- public API


def forward(volume, matrices, det_shape, subsamples=(2, 2, 2), offset=(0.0, 0.0, 0.0)):
    """Project a volume at arbitrary Euler angles (sub-sampled, bilinear splatting).

    Parameters
    ----------
    volume : array (nz, ny, nx)
        NumPy or CuPy, float32 or float64 (other real dtypes are read as float64).
        Voxel ``(iz, iy, ix)`` sits at ``(ix − nx//2, iy − ny//2, iz − nz//2)``.
    matrices : array (n, 3, 3)
        Projection matrices from :func:`aetdask.geometry.projection_matrices`; rows
        give ``(x_det, y_det, depth)`` from ``(x, y, z)``.
    det_shape : (int, int)
        Detector ``(dy, dx)``; its pixel equals the voxel, origin at ``(dy//2, dx//2)``.
    subsamples : int or (int, int, int), optional
        Sub-samples per voxel along ``(z, y, x)``.
    offset : (float, float, float), optional
        Position ``(x, y, z)`` (voxels) of this volume's centre voxel in the
        sample frame: a z-slab of a larger volume projects with its own offset.

    Returns
    -------
    array (n, dy, dx)
        Projections, same array module and dtype (float32/float64) as ``volume``.
        Computed in float64 (both back ends) and cast.

    Examples
    --------
    >>> import numpy as np
    >>> from aetdask.geometry import projection_matrices
    >>> vol = np.zeros((3, 3, 3)); vol[1, 1, 2] = 1.0
    >>> forward(vol, projection_matrices([0.0]), (3, 3), subsamples=1)[0].tolist()
    [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    >>> float(forward(vol, projection_matrices([90.0]), (3, 3), subsamples=1)[0, 1, 2])
    1.0
    """
    _check_array(volume, 3, "volume")
    a = _as_matrices(matrices)
    det = _as_shape(det_shape, 2, "det_shape")
    sub = _as_subsamples(subsamples)
    xp = get_array_module(volume)
    dtype = _out_dtype(volume.dtype)
    if xp is np:
        out = _forward_numba(np.asarray(volume), a, det, sub, offset=offset)
    else:
        origin, inc, doff = _geometry(a, volume.shape, det, sub, offset)
        out = projector_cuda.forward(volume, origin, inc, doff, det)
    return out.astype(dtype, copy=False)


def backward(projections, matrices, vol_shape, subsamples=(2, 2, 2), offset=(0.0, 0.0, 0.0)):
    """Back-project: the exact adjoint (transpose) of :func:`forward`.

    Parameters
    ----------
    projections : array (n, dy, dx)
        NumPy or CuPy, float32 or float64 (other real dtypes are read as float64).
    matrices : array (n, 3, 3)
        The projection matrices used by :func:`forward`.
    vol_shape : (int, int, int)
        ``(nz, ny, nx)`` of the volume.
    subsamples : int or (int, int, int), optional
        Sub-samples per voxel along ``(z, y, x)``, as in :func:`forward`.
    offset : (float, float, float), optional
        As in :func:`forward`.

    Returns
    -------
    array (nz, ny, nx)
        Same array module and dtype as ``projections``; computed in float64 and cast.

    Examples
    --------
    >>> import numpy as np
    >>> from aetdask.geometry import projection_matrices
    >>> proj = np.zeros((1, 3, 3)); proj[0, 1, 2] = 1.0
    >>> vol = backward(proj, projection_matrices([0.0]), (3, 3, 3), subsamples=1)
    >>> vol[:, 1, 2].tolist(), float(vol.sum())
    ([1.0, 1.0, 1.0], 3.0)
    """
    _check_array(projections, 3, "projections")
    a = _as_matrices(matrices)
    if a.shape[0] != projections.shape[0]:
        raise ValueError(
            f"matrices: {a.shape[0]} matrices for {projections.shape[0]} projections; they must match"
        )
    shape = _as_shape(vol_shape, 3, "vol_shape")
    sub = _as_subsamples(subsamples)
    xp = get_array_module(projections)
    dtype = _out_dtype(projections.dtype)
    if xp is np:
        out = _backward_numba(np.asarray(projections), a, shape, sub, offset)
    else:
        origin, inc, doff = _geometry(a, shape, projections.shape[1:], sub, offset)
        out = projector_cuda.backward(projections, origin, inc, doff, shape)
    return out.astype(dtype, copy=False)
