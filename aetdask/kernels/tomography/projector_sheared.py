"""Shear-warp projector at arbitrary Euler angles: rows of voxels share their weights.

The general projector (:mod:`aetdask.kernels.tomography.projector_general`) splats every
sub-sample of every voxel on its own; no two voxels share weights, and at 280³ × 55 one
RESIRE iteration takes half a minute on two cores. For the tilt series of an experiment
— one main tilt axis near the sample x axis, φ and ψ a few degrees at most — this module
factors each projection into two steps (the shear-warp factorisation of Lacroute and
Levoy, SIGGRAPH 1994, applied to a linear projector):

1. **Shear.** With ``A`` the projection matrix of :mod:`aetdask.geometry` and
   ``(u_x, u_y) = A[:2] · r``, take the detector axis ``a`` onto which the sample x axis
   projects longest (``|A[a, 0]|``; ``b`` the other) and the intermediate coordinates ::

       c' = u_a / A[a, 0]  = x + g(y, z)          (column)
       r' = u_b − (A[b, 0] / A[a, 0]) · u_a = h(y, z)   (row)

   Along a row of voxels (x) the column steps by exactly one pixel and the row not at
   all, so every voxel of the row has the same bilinear weights: the row is added to
   the intermediate image as a whole, shifted by an integer, once per weight — an
   ``axpy`` the CPU vectorises, like the single-axis sparse product
   (:mod:`aetdask.kernels.tomography.projector_slices`). The sub-samples of a voxel
   (offsets ``(k + ½)/s − ½`` along z, y and x, weight ``1/(sz·sy·sx)``) are splatted
   bilinearly as in the general projector and their weights merged per pixel.
2. **Warp.** Detector pixel ``(i, j)`` (``u_y = i − dy//2``, ``u_x = j − dx//2``) takes
   the bilinear interpolation of the intermediate image at its ``(r', c')``.

The back projection applies the transposes in the opposite order (the warp's splat, then
the rows gathered with the same weights), so it is the exact adjoint of the forward
projection: ``⟨forward(x), y⟩ = ⟨x, backward(y)⟩`` to float rounding. For φ = ψ = 0 the
shear is zero, the warp an integer-exact copy, and the projection that of the general
projector with the same sub-samples. Otherwise the warp's interpolation widens each
projection's point response a little in the direction of the shear (at most a quarter
of a pixel² in variance), the price of sharing weights.

The shear needs the sample x axis to project onto a detector axis nearly unshortened
(``|A[a, 0]|`` ≥ :data:`MIN_AXIS_PROJECTION`: φ, ψ within about 8° of a tilt axis along the
image's x or y); :func:`supported` says when it does. NumPy only (a GPU runs the general projector's
CUDA kernels).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from aetdask.kernels.tomography.projector_general import _as_subsamples, _offsets, _out_dtype

__all__ = ["forward", "backward", "supported", "MIN_AXIS_PROJECTION"]

#: Shortest projection of the sample x axis onto its detector axis (``|A[a, 0]|``) for which the shear is
#: used. The warp reads the intermediate image, whose columns are ``1/|A[a, 0]|`` detector pixels apart, at
#: the detector's pixels: two lattices that do not match, so the projection of a flat object ripples by up
#: to ``1/|A[a, 0]| − 1`` across the columns (0.1 % for φ, ψ ≈ 3°, 1 % at this bound, 10 % for a tilt axis
#: turned 25° in the image). The general projector takes over below it.
MIN_AXIS_PROJECTION = 0.99
#: Largest spread (pixels, rows or columns) of one voxel's bilinear footprint the merging grid holds.
_GRID = 8


def supported(matrices) -> bool:
    """True when every projection's sample x axis reaches a detector axis at ≥ :data:`MIN_AXIS_PROJECTION`."""
    a = np.asarray(matrices, dtype=float)
    return bool(np.all(np.maximum(np.abs(a[:, 0, 0]), np.abs(a[:, 1, 0])) >= MIN_AXIS_PROJECTION))


def plan(matrices, vol_shape, det_shape, subsamples, offset=(0.0, 0.0, 0.0)):
    """Per projection: the shear (volume → intermediate image) and the warp (intermediate → detector).

    Returns a dict of arrays:

    * ``shear`` (n, 6): ``r'`` and ``c'`` (intermediate row and column, from the image's
      corner) of voxel (0, 0, 0)'s centre, and their steps along y and z: ``(r0, ry, rz,
      c0, cy, cz)``; along x ``c'`` steps by one and ``r'`` by zero;
    * ``sub`` (n, S, 2): each sub-sample's ``(r', c')`` offset;
    * ``warp`` (n, 7): ``r'`` and ``c'`` of detector pixel (0, 0), their steps per
      detector row and column, and the interpolation's scale (the inverse of the area of
      an intermediate pixel on the detector): ``(r0, r_i, r_j, c0, c_i, c_j, scale)``;
    * ``size`` (R, C): the intermediate image, the bounding box of what the detector reads.
    """
    a = np.asarray(matrices, dtype=np.float64)
    n = a.shape[0]
    nz, ny, nx = vol_shape
    dy, dx = det_shape
    if not supported(a):
        raise ValueError(f"matrices: the sample x axis projects shorter than {MIN_AXIS_PROJECTION} onto the "
                         "detector's axes in some projection; use the general projector")
    col = np.where(np.abs(a[:, 0, 0]) >= np.abs(a[:, 1, 0]), 0, 1)  # detector axis a (0 = u_x, 1 = u_y)
    idx = np.arange(n)
    ra, rb = a[idx, col], a[idx, 1 - col]  # rows A[a], A[b]
    lead = ra[:, 0]
    shear = rb[:, 0] / lead
    # intermediate coordinates as linear maps of the sample point: c' = ca · r, r' = cb · r
    ca = ra / lead[:, None]
    cb = rb - shear[:, None] * ra
    r_corner = np.array([-(nx // 2), -(ny // 2), -(nz // 2)], dtype=np.float64) + np.asarray(offset, np.float64)
    # the detector's pixels in intermediate coordinates: u = (u_x, u_y) = (j − dx//2, i − dy//2)
    ua_i = np.where(col == 0, 0.0, 1.0)  # d u_a / d i
    ua_j = np.where(col == 0, 1.0, 0.0)
    ub_i, ub_j = 1.0 - ua_i, 1.0 - ua_j
    ua0 = np.where(col == 0, -(dx // 2), -(dy // 2)).astype(np.float64)
    ub0 = np.where(col == 0, -(dy // 2), -(dx // 2)).astype(np.float64)
    wc = np.stack([ua0 / lead, ua_i / lead, ua_j / lead], axis=1)
    wr = np.stack([ub0 - shear * ua0, ub_i - shear * ua_i, ub_j - shear * ua_j], axis=1)
    corners_i = np.array([0.0, 0.0, dy - 1.0, dy - 1.0])
    corners_j = np.array([0.0, dx - 1.0, 0.0, dx - 1.0])
    rr = wr[:, :1] + wr[:, 1:2] * corners_i + wr[:, 2:3] * corners_j
    cc = wc[:, :1] + wc[:, 1:2] * corners_i + wc[:, 2:3] * corners_j
    row0 = np.floor(rr.min(axis=1)) - 1.0
    col0 = np.floor(cc.min(axis=1)) - 1.0
    size = (int(np.max(np.floor(rr.max(axis=1)) - row0)) + 3, int(np.max(np.floor(cc.max(axis=1)) - col0)) + 3)
    # an intermediate pixel covers |A[a, 0]| detector pixels: interpolating it at the detector's pixels keeps
    # the projection's total only when scaled by the inverse of that area (the general projector's splat
    # keeps it exactly)
    warp = np.stack([wr[:, 0] - row0, wr[:, 1], wr[:, 2], wc[:, 0] - col0, wc[:, 1], wc[:, 2], 1.0 / np.abs(lead)],
                    axis=1)
    shear_geo = np.stack([cb @ r_corner - row0, cb[:, 1], cb[:, 2], ca @ r_corner - col0, ca[:, 1], ca[:, 2]], axis=1)
    off = _offsets(subsamples)
    sub = np.stack([off @ cb.T, off @ ca.T], axis=2).transpose(1, 0, 2)  # (n, S, 2)
    spread = np.ptp(sub, axis=1).max() if sub.shape[1] > 1 else 0.0
    if spread + 3 > _GRID:
        raise ValueError("subsamples: a voxel's footprint is too wide for the shear-warp projector")
    return {"shear": np.ascontiguousarray(shear_geo), "sub": np.ascontiguousarray(sub),
            "warp": np.ascontiguousarray(warp), "size": size}


# --------------------------------------------------------------------------- Numba kernels


@numba.njit(inline="always")
def _footprint(grid, br, bc, sub):  # pragma: no cover - jitted
    """Merge the bilinear weights of one voxel's sub-samples into ``grid``; return its first row and column
    and the rows and columns it spans.

    Sub-sample k sits at ``(br + sub[k, 0], bc + sub[k, 1])``; grid cell (a, b) is pixel
    (row0 + a, col0 + b). Both directions call this with the same numbers, so they use the same weights.
    """
    row0 = 1 << 30
    col0 = 1 << 30
    row1 = -(1 << 30)
    col1 = -(1 << 30)
    for k in range(sub.shape[0]):
        fi = int(math.floor(br + sub[k, 0]))
        fj = int(math.floor(bc + sub[k, 1]))
        row0 = min(row0, fi)
        col0 = min(col0, fj)
        row1 = max(row1, fi)
        col1 = max(col1, fj)
    for k in range(sub.shape[0]):
        r = br + sub[k, 0]
        c = bc + sub[k, 1]
        fi = math.floor(r)
        fj = math.floor(c)
        fy = r - fi
        fx = c - fj
        a = int(fi) - row0
        b = int(fj) - col0
        grid[a, b] += (1.0 - fy) * (1.0 - fx)
        grid[a, b + 1] += (1.0 - fy) * fx
        grid[a + 1, b] += fy * (1.0 - fx)
        grid[a + 1, b + 1] += fy * fx
    return row0, col0, row1 - row0 + 2, col1 - col0 + 2


@numba.njit(inline="always")
def _taps(grid, row0, col0, na, nb, nr, nc, nx, taps, weights):  # pragma: no cover - jitted
    """The non-zero cells of ``grid`` (a footprint of :func:`_footprint`) as rows of ``taps``
    ``(row, column of x = 0, first x, end x)`` and their ``weights``, each row cut to the part that
    falls on the ``(nr, nc)`` intermediate image; the grid is left zero. Returns how many rows."""
    k = 0
    for a in range(na):
        i = row0 + a
        for b in range(nb):
            w = grid[a, b]
            if w == 0.0:
                continue
            grid[a, b] = 0.0
            j = col0 + b
            x0 = max(0, -j)
            x1 = min(nx, nc - j)
            if i < 0 or i >= nr or x1 <= x0:
                continue
            taps[k, 0] = i
            taps[k, 1] = j
            taps[k, 2] = x0
            taps[k, 3] = x1
            weights[k] = w
            k += 1
    return k


@numba.njit(fastmath=True, cache=True)
def _shear_one(vol, geo, sub, wsub, img):  # pragma: no cover - jitted
    """Add every voxel row of ``vol`` to the intermediate image ``img`` (R, C) of one projection."""
    nz, ny, nx = vol.shape
    nr, nc = img.shape
    r0, ry, rz, c0, cy, cz = geo[0], geo[1], geo[2], geo[3], geo[4], geo[5]
    grid = np.zeros((_GRID, _GRID))
    taps = np.empty((_GRID * _GRID, 4), dtype=np.int64)
    weights = np.empty(_GRID * _GRID)
    for iz in range(nz):
        for iy in range(ny):
            row0, col0, na, nb = _footprint(grid, r0 + ry * iy + rz * iz, c0 + cy * iy + cz * iz, sub)
            row = vol[iz, iy]
            for t in range(_taps(grid, row0, col0, na, nb, nr, nc, nx, taps, weights)):
                i, j, x0, x1 = taps[t, 0], taps[t, 1], taps[t, 2], taps[t, 3]
                wt = row.dtype.type(weights[t] * wsub)
                # slices, not j + x: an index that might be negative is wrapped and the loop not vectorised
                dst = img[i, j + x0:j + x1]
                src = row[x0:x1]
                for x in range(src.shape[0]):
                    dst[x] += wt * src[x]


@numba.njit(parallel=True, cache=True)
def _shear_forward(vol, geo, sub, wsub, out):  # pragma: no cover - jitted
    for p in numba.prange(out.shape[0]):
        _shear_one(vol, geo[p], sub[p], wsub, out[p])


@numba.njit(parallel=True, fastmath=True, cache=True)
def _shear_backward(img, geo, sub, wsub, vol):  # pragma: no cover - jitted
    """Gather every voxel row from the intermediate images (the transpose of :func:`_shear_one`)."""
    nz, ny, nx = vol.shape
    n, nr, nc = img.shape
    for iz in numba.prange(nz):
        grid = np.zeros((_GRID, _GRID))
        taps = np.empty((_GRID * _GRID, 4), dtype=np.int64)
        weights = np.empty(_GRID * _GRID)
        acc = np.zeros((ny, nx), dtype=vol.dtype)
        for p in range(n):
            r0, ry, rz = geo[p, 0], geo[p, 1], geo[p, 2]
            c0, cy, cz = geo[p, 3], geo[p, 4], geo[p, 5]
            for iy in range(ny):
                row0, col0, na, nb = _footprint(grid, r0 + ry * iy + rz * iz, c0 + cy * iy + cz * iz, sub[p])
                line = acc[iy]
                for t in range(_taps(grid, row0, col0, na, nb, nr, nc, nx, taps, weights)):
                    i, j, x0, x1 = taps[t, 0], taps[t, 1], taps[t, 2], taps[t, 3]
                    wt = line.dtype.type(weights[t] * wsub)
                    dst = line[x0:x1]
                    src = img[p, i, j + x0:j + x1]
                    for x in range(dst.shape[0]):
                        dst[x] += wt * src[x]
        vol[iz] = acc


@numba.njit(inline="always")
def _bilinear(r, c):  # pragma: no cover - jitted
    fi = math.floor(r)
    fj = math.floor(c)
    return int(fi), int(fj), r - fi, c - fj


@numba.njit(parallel=True, cache=True)
def _warp_gather(img, warp, out):  # pragma: no cover - jitted
    """Detector pixel (i, j) of projection p ← bilinear interpolation of img[p] at its (r', c')."""
    n, dy, dx = out.shape
    nr, nc = img.shape[1], img.shape[2]
    for p in numba.prange(n):
        w = warp[p]
        for i in range(dy):
            for j in range(dx):
                i0, j0, fy, fx = _bilinear(w[0] + w[1] * i + w[2] * j, w[3] + w[4] * i + w[5] * j)
                if i0 < 0 or j0 < 0 or i0 + 1 >= nr or j0 + 1 >= nc:
                    out[p, i, j] = 0.0  # cannot happen: the image covers the detector's reach
                    continue
                top = img[p, i0, j0] + fx * (img[p, i0, j0 + 1] - img[p, i0, j0])
                bot = img[p, i0 + 1, j0] + fx * (img[p, i0 + 1, j0 + 1] - img[p, i0 + 1, j0])
                out[p, i, j] = w[6] * (top + fy * (bot - top))


@numba.njit(parallel=True, cache=True)
def _warp_splat(proj, warp, img):  # pragma: no cover - jitted
    """The transpose of :func:`_warp_gather`: each detector pixel splats onto img[p] with the same weights."""
    n, dy, dx = proj.shape
    nr, nc = img.shape[1], img.shape[2]
    for p in numba.prange(n):
        w = warp[p]
        for i in range(dy):
            for j in range(dx):
                i0, j0, fy, fx = _bilinear(w[0] + w[1] * i + w[2] * j, w[3] + w[4] * i + w[5] * j)
                if i0 < 0 or j0 < 0 or i0 + 1 >= nr or j0 + 1 >= nc:
                    continue
                v = w[6] * proj[p, i, j]
                lo = v * (1.0 - fy)
                hi = v * fy
                img[p, i0, j0] += lo * (1.0 - fx)
                img[p, i0, j0 + 1] += lo * fx
                img[p, i0 + 1, j0] += hi * (1.0 - fx)
                img[p, i0 + 1, j0 + 1] += hi * fx


# --------------------------------------------------------------------------- public API


def forward(volume, matrices, det_shape, subsamples=(2, 2, 2), offset=(0.0, 0.0, 0.0), geometry=None):
    """Project a NumPy volume ``(nz, ny, nx)`` at the projection matrices ``(n, 3, 3)``: ``(n, dy, dx)``.

    Same geometry, arguments and dtype rules as :func:`aetdask.kernels.tomography.projector_general.forward`
    (the intermediate image and the sums in the volume's dtype, float32 or float64). ``geometry``:
    a :func:`plan` made for these arguments, to skip making it again.

    Examples
    --------
    >>> import numpy as np
    >>> from aetdask.geometry import projection_matrices
    >>> vol = np.zeros((3, 3, 3)); vol[1, 1, 2] = 1.0
    >>> forward(vol, projection_matrices([0.0]), (3, 3), subsamples=1)[0].tolist()
    [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    """
    sub = _as_subsamples(subsamples)
    dtype = _out_dtype(volume.dtype)
    vol = np.ascontiguousarray(volume, dtype=dtype)
    det = tuple(int(d) for d in det_shape)
    g = plan(matrices, vol.shape, det, sub, offset) if geometry is None else geometry
    img = np.zeros((g["shear"].shape[0],) + g["size"], dtype=dtype)
    _shear_forward(vol, g["shear"], g["sub"], 1.0 / g["sub"].shape[1], img)
    out = np.empty((img.shape[0],) + det, dtype=dtype)
    _warp_gather(img, g["warp"], out)
    return out


def backward(projections, matrices, vol_shape, subsamples=(2, 2, 2), offset=(0.0, 0.0, 0.0), geometry=None):
    """Back-project NumPy projections ``(n, dy, dx)``: the exact adjoint of :func:`forward`.

    Examples
    --------
    >>> import numpy as np
    >>> from aetdask.geometry import projection_matrices
    >>> proj = np.zeros((1, 3, 3)); proj[0, 1, 2] = 1.0
    >>> vol = backward(proj, projection_matrices([0.0]), (3, 3, 3), subsamples=1)
    >>> vol[:, 1, 2].tolist(), float(vol.sum())
    ([1.0, 1.0, 1.0], 3.0)
    """
    sub = _as_subsamples(subsamples)
    dtype = _out_dtype(projections.dtype)
    proj = np.ascontiguousarray(projections, dtype=dtype)
    shape = tuple(int(v) for v in vol_shape)
    g = plan(matrices, shape, proj.shape[1:], sub, offset) if geometry is None else geometry
    img = np.zeros((proj.shape[0],) + g["size"], dtype=dtype)
    _warp_splat(proj, g["warp"], img)
    out = np.empty(shape, dtype=dtype)
    _shear_backward(img, g["shear"], g["sub"], 1.0 / g["sub"].shape[1], out)
    return out
