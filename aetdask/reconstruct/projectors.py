"""Projectors for a tilt series: the single-axis fast path or general Euler angles."""

from __future__ import annotations

import functools

import numpy as np

from aetdask.backend import get_array_module
from aetdask.geometry import projection_matrices
from aetdask.kernels.tomography import projector_general
from aetdask.kernels.tomography.projector_slices import SliceProjector


def is_single_axis(euler, tolerance: float = 1e-9) -> bool:
    """True if every projection has φ = ψ = 0 (tilt about the sample x axis only)."""
    e = np.asarray(euler, dtype=float)
    return bool(np.all(np.abs(e[:, 0]) <= tolerance) and np.all(np.abs(e[:, 2]) <= tolerance))


@functools.lru_cache(maxsize=8)
def _slice_projector(vol_shape, n_det, theta, subsamples, dtype, device):
    xp = get_array_module(device)
    return SliceProjector(vol_shape, n_det, np.array(theta), subsamples, xp=xp, dtype=np.dtype(dtype))


def slice_projector(vol_shape, n_det, theta, subsamples=2, dtype=np.float32, xp=np):
    """A cached :class:`SliceProjector` (its matrix is built once per worker process and device)."""
    return _slice_projector(tuple(vol_shape), int(n_det), tuple(float(t) for t in theta), int(subsamples),
                            np.dtype(dtype).str, "cpu" if xp is np else "gpu")


class EulerProjector:
    """Projection at arbitrary Euler angles of a (z, y, x) volume or of a z-slab of it.

    Parameters
    ----------
    euler : array (n, 3)
        (φ, θ, ψ) in degrees.
    det_shape : (dy, dx)
    vol_shape : (nz, ny, nx)
        The full volume.
    subsamples : int or (sz, sy, sx)
    z_range : (z0, z1), optional
        Work on the slab ``z0:z1`` of the full volume only.
    xp : array module
    """

    def __init__(self, euler, det_shape, vol_shape, subsamples=2, z_range=None, xp=np):
        self.euler = np.asarray(euler, dtype=float)
        self.matrices = projection_matrices(self.euler)
        self.det_shape = tuple(int(d) for d in det_shape)
        self.full_shape = tuple(int(v) for v in vol_shape)
        self.z_range = (0, self.full_shape[0]) if z_range is None else tuple(int(z) for z in z_range)
        self.subsamples = subsamples
        self.xp = xp
        nz = self.full_shape[0]
        z0, z1 = self.z_range
        # the slab's own centre index (z1 - z0)//2 sits at full-volume z = z0 + (z1 - z0)//2 - nz//2
        self.offset = (0.0, 0.0, float(z0 + (z1 - z0) // 2 - nz // 2))

    @property
    def thickness(self) -> int:
        return max(self.full_shape)

    def volume_shape(self, projections=None) -> tuple[int, int, int]:
        z0, z1 = self.z_range
        return (z1 - z0, *self.full_shape[1:])

    def forward(self, volume):
        return projector_general.forward(volume, self.matrices, self.det_shape, self.subsamples, offset=self.offset)

    def backward(self, projections):
        return projector_general.backward(
            projections, self.matrices, self.volume_shape(), self.subsamples, offset=self.offset
        )
