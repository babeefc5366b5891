"""Single-axis projector: every slice across the tilt axis is the same 2-D problem.

For φ = ψ = 0 the tilt axis is the sample x axis (see :mod:`aetdask.geometry`):
a voxel at (x, y, z) lands in detector column x exactly and at detector row
``y_det = y cos θ − z sin θ``. So one sparse system matrix ``A`` — rows
(angle, detector row), columns the (z, y) voxels of a slice — serves all slices
at once: with the volume viewed as a matrix ``V[(z, y), x]``,

    projections[(θ, i), x] = (A · V)[(θ, i), x],     back projection = Aᵀ · P.

Each voxel is split into ``s × s`` sub-samples in the (y, z) plane (offsets
(k + ½)/s − ½ voxel, weight 1/s²), each splatted linearly onto the two nearest
detector rows. Along the tilt axis a voxel projects exactly onto one column, so
no sub-sampling is needed there; the general projector with sub-samples
``(s, s, 1)`` gives the same numbers.

The product is a sparse-times-dense matrix product (CSR, the slices contiguous
in memory): a Numba kernel on the CPU, cuSPARSE through CuPy on a GPU.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse

from aetdask.backend import sparse_module


def subsample_offsets(s: int) -> np.ndarray:
    """Sub-sample offsets (voxel units) along one axis: (k + ½)/s − ½.

    >>> subsample_offsets(2).tolist()
    [-0.25, 0.25]
    """
    if int(s) < 1:
        raise ValueError(f"subsamples: expected a positive integer, got {s!r}")
    return (np.arange(int(s)) + 0.5) / int(s) - 0.5


def system_matrix(n_vol: tuple[int, int], n_det: int, theta_deg, subsamples: int = 2, dtype=np.float32,
                  det_offset=None):
    """Sparse matrix (CSR) of the single-axis projection of one (z, y) slice.

    Parameters
    ----------
    n_vol : (nz, ny)
        Slice size; column ``iz * ny + iy`` is voxel (iz, iy), at
        ``y = iy − ny//2``, ``z = iz − nz//2`` (voxel units).
    n_det : int
        Detector rows; row ``k * n_det + i`` is detector row ``i`` at angle ``k``,
        at ``y_det = i − n_det//2``.
    theta_deg : array (n,)
        Tilt angles in degrees.
    det_offset : array (n,), optional
        Per-angle detector offset (rows): the point that projects to
        ``y_det`` lands on row ``y_det + n_det//2 + det_offset[k]`` — for
        projections cropped at a fractional position (scanning AET).

    Examples
    --------
    >>> a = system_matrix((3, 3), 3, [0.0, 90.0], subsamples=1)
    >>> a.shape, float(a[0 * 3 + 1, 1 * 3 + 2]), float(a[1 * 3 + 0, 2 * 3 + 1])  # θ=0: y=+1 → row 2; 90°: z=+1 → row 0
    ((6, 9), 0.0, 1.0)
    """
    nz, ny = n_vol
    theta = np.deg2rad(np.asarray(theta_deg, dtype=float))
    off = subsample_offsets(subsamples)
    weight = 1.0 / len(off) ** 2
    iz, iy = np.meshgrid(np.arange(nz), np.arange(ny), indexing="ij")
    col = (iz * ny + iy).ravel()
    y = (iy - ny // 2).ravel().astype(float)
    z = (iz - nz // 2).ravel().astype(float)
    shift = np.zeros(len(theta)) if det_offset is None else np.asarray(det_offset, dtype=float).reshape(-1)
    if shift.shape != theta.shape:
        raise ValueError(f"det_offset: expected {theta.size} values (one per angle), got {shift.size}")
    blocks = []
    for c, s, d in zip(np.cos(theta), np.sin(theta), shift):
        rows, cols, vals = [], [], []
        for dz in off:
            for dy in off:
                u = c * (y + dy) - s * (z + dz) + n_det // 2 + d
                i0 = np.floor(u).astype(np.int64)
                f = u - i0
                for di, w in ((0, 1.0 - f), (1, f)):
                    i = i0 + di
                    ok = (i >= 0) & (i < n_det) & (w > 0)
                    rows.append(i[ok])
                    cols.append(col[ok])
                    vals.append(w[ok] * weight)
        blocks.append(
            scipy.sparse.csr_matrix(
                (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_det, nz * ny)
            )
        )
    out = scipy.sparse.vstack(blocks, format="csr").astype(dtype)
    out.sum_duplicates()
    return out


@numba.njit(parallel=True, cache=True)
def _csr_matmat(indptr, indices, data, x, out):  # pragma: no cover - compiled
    """out = A · x for CSR A and C-contiguous x (rows × slices); rows in parallel."""
    m = x.shape[1]
    for r in numba.prange(indptr.shape[0] - 1):
        for j in range(m):
            out[r, j] = 0
        for k in range(indptr[r], indptr[r + 1]):
            c = indices[k]
            v = data[k]
            for j in range(m):
                out[r, j] += v * x[c, j]


class SliceProjector:
    """Forward and back projection of a single-axis tilt series, all slices at once.

    Parameters
    ----------
    vol_shape : (nz, ny)
        Size of a slice across the tilt axis (the x extent is free).
    n_det : int
        Detector rows (the image's ``y`` size).
    theta_deg : array (n,)
    subsamples : int
    xp : module
        ``numpy`` or ``cupy``: where the matrices live.
    dtype : numpy dtype
    det_offset : array (n,), optional
        Per-angle detector offset in rows (see :func:`system_matrix`).
    thickness : float or "ray", optional
        Voxels along the beam for RESIRE's step (default: the larger side;
        ``"ray"``: ``ray_length``, for slices far wider than thick).

    ``ray_length`` is the longest ray through the slice in voxels (the largest
    row sum of the matrix): the tightest thickness for RESIRE's step.

    Examples
    --------
    >>> import numpy as np
    >>> proj = SliceProjector((8, 8), 8, [0.0, 45.0, 90.0])
    >>> vol = np.zeros((8, 8, 5), np.float32)   # (z, y, x)
    >>> vol[2:6, 2:6] = np.random.default_rng(0).random((4, 4, 5))
    >>> p = proj.forward(vol)
    >>> p.shape, bool(np.isclose(p[1].sum(), vol.sum()))
    ((3, 8, 5), True)
    """

    def __init__(self, vol_shape, n_det, theta_deg, subsamples=2, xp=np, dtype=np.float32, det_offset=None,
                 thickness=None):
        self.vol_shape = tuple(int(v) for v in vol_shape)
        self.n_det = int(n_det)
        self.n_angles = len(np.atleast_1d(theta_deg))
        self.dtype = np.dtype(dtype)
        self.xp = xp
        a = system_matrix(self.vol_shape, self.n_det, theta_deg, subsamples, self.dtype, det_offset)
        self.ray_length = float(np.asarray(a.sum(axis=1)).max()) if a.nnz else 0.0
        self._thickness = self.ray_length if thickness == "ray" else thickness
        at = a.T.tocsr()
        if xp is np:
            self._a, self._at = a, at
        else:
            sp = sparse_module(xp)
            self._a, self._at = sp.csr_matrix(a), sp.csr_matrix(at)

    @property
    def thickness(self) -> float:
        """Voxels along the beam: the slice's larger side, unless given."""
        return max(self.vol_shape) if self._thickness is None else float(self._thickness)

    def volume_shape(self, projections) -> tuple[int, int, int]:
        """Shape of the volume that matches ``projections`` (n_angles, n_det, nx)."""
        return (*self.vol_shape, projections.shape[2])

    @property
    def nnz(self) -> int:
        return int(self._a.nnz)

    def _apply(self, mat, x2d):
        if self.xp is np:
            x2d = np.ascontiguousarray(x2d, dtype=self.dtype)
            out = np.empty((mat.shape[0], x2d.shape[1]), dtype=self.dtype)
            _csr_matmat(mat.indptr, mat.indices, mat.data, x2d, out)
            return out
        return mat @ x2d

    def forward(self, volume):
        """(nz, ny, nx) volume → (n_angles, n_det, nx) projections."""
        nz, ny = self.vol_shape
        if volume.shape[:2] != (nz, ny):
            raise ValueError(f"volume: expected shape ({nz}, {ny}, nx), got {volume.shape}")
        nx = volume.shape[2]
        return self._apply(self._a, volume.reshape(nz * ny, nx)).reshape(self.n_angles, self.n_det, nx)

    def backward(self, projections):
        """(n_angles, n_det, nx) projections → (nz, ny, nx) volume: the exact adjoint."""
        if projections.shape[:2] != (self.n_angles, self.n_det):
            raise ValueError(
                f"projections: expected shape ({self.n_angles}, {self.n_det}, nx), got {projections.shape}"
            )
        nx = projections.shape[2]
        out = self._apply(self._at, projections.reshape(self.n_angles * self.n_det, nx))
        return out.reshape(*self.vol_shape, nx)
