"""Projectors for a tilt series: the single-axis fast path or general Euler angles.

At general Euler angles two projectors compute the same kind of model (sub-sampled voxels,
bilinear splatting, exact adjoints): the general one
(:mod:`aetdask.kernels.tomography.projector_general`, every sub-sample on its own; NumPy and
CuPy) and the shear-warp one (:mod:`aetdask.kernels.tomography.projector_sheared`, rows of
voxels sharing their weights; NumPy, 5–10 times faster, a little more blur across the tilt
axis). ``reconstruct.projector`` chooses; ``auto`` takes the shear-warp projector on the CPU
wherever it is accurate: a tilt axis within about 8° of the image's x or y axis, φ and ψ
that small (:data:`~aetdask.kernels.tomography.projector_sheared.MIN_AXIS_PROJECTION`).
"""

from __future__ import annotations

import functools

import numpy as np

from aetdask.backend import get_array_module
from aetdask.geometry import projection_matrices
from aetdask.kernels.tomography import projector_general, projector_sheared
from aetdask.kernels.tomography.projector_slices import SliceProjector


def is_single_axis(euler, tolerance: float = 1e-9) -> bool:
    """True if every projection has φ = ψ = 0 (tilt about the sample x axis only)."""
    e = np.asarray(euler, dtype=float)
    return bool(np.all(np.abs(e[:, 0]) <= tolerance) and np.all(np.abs(e[:, 2]) <= tolerance))


def turned_axis(euler, tolerance: float = 1e-6) -> float | None:
    """The in-plane direction (degrees, from x towards +y) of the tilt axis of a single-axis series taken on a
    turned detector (:func:`aetdask.kernels.preprocessing.tilt_axis.turned_angles` of φ = ψ = 0 angles), or
    None where the series is not one: the sample's x axis must land on one and the same detector direction in
    every projection, and the angles turned back by it must be single-axis.

    >>> from aetdask.kernels.preprocessing.tilt_axis import turned_angles
    >>> e = turned_angles(np.c_[np.zeros(5), np.linspace(-60, 60, 5), np.zeros(5)], 30.0)
    >>> round(turned_axis(e), 6), turned_axis([[10.0, 20.0, 30.0], [0.0, 40.0, 0.0]]) is None
    (30.0, True)
    """
    from aetdask.kernels.preprocessing.tilt_axis import turned_angles

    e = np.asarray(euler, dtype=float).reshape(-1, 3)
    tilt = projection_matrices(e)[:, :, 0]  # where the sample's x lands: (x_det, y_det, along the beam)
    if np.abs(tilt[:, 2]).max() > tolerance or np.abs(tilt[:, :2] - tilt[:1, :2]).max() > tolerance:
        return None
    angle = float(np.degrees(np.arctan2(tilt[0, 1], tilt[0, 0])))
    return angle if is_single_axis(turned_angles(e, -angle), tolerance=1e-6) else None


@functools.lru_cache(maxsize=8)
def _slice_projector(vol_shape, n_det, theta, subsamples, dtype, device):
    xp = get_array_module(device)
    return SliceProjector(vol_shape, n_det, np.array(theta), subsamples, xp=xp, dtype=np.dtype(dtype))


def slice_projector(vol_shape, n_det, theta, subsamples=2, dtype=np.float32, xp=np):
    """A cached :class:`SliceProjector` (its matrix is built once per worker process and device)."""
    return _slice_projector(tuple(vol_shape), int(n_det), tuple(float(t) for t in theta), int(subsamples),
                            np.dtype(dtype).str, "cpu" if xp is np else "gpu")


#: Values of ``reconstruct.projector``.
PROJECTORS = ("auto", "shear-warp", "general")


def euler_method(matrices, method: str = "auto", xp=np) -> str:
    """The projector ``method`` means for these projection matrices and array module.

    ``auto``: ``"shear-warp"`` on NumPy when the geometry allows it
    (:func:`~aetdask.kernels.tomography.projector_sheared.supported`), else ``"general"``.
    ``shear-warp`` asked for where it cannot run is an error naming the reason.
    """
    if method not in PROJECTORS:
        raise ValueError(f"reconstruct.projector: expected one of {', '.join(PROJECTORS)}, got {method!r}")
    possible = xp is np and projector_sheared.supported(matrices)
    if method == "auto":
        return "shear-warp" if possible else "general"
    if method == "shear-warp" and not possible:
        why = ("it runs on the CPU only" if xp is not np else
               f"the sample x axis projects shorter than {projector_sheared.MIN_AXIS_PROJECTION} onto the detector's "
               "axes in some projection: a tilt axis turned more than about 8° from the image's x or y")
        raise ValueError(f"reconstruct.projector: shear-warp cannot project this series ({why}); use general or auto")
    return method


@functools.lru_cache(maxsize=16)
def _sheared_plan(matrices_bytes, n, vol_shape, det_shape, subsamples, offset):
    matrices = np.frombuffer(matrices_bytes, dtype=np.float64).reshape(n, 3, 3)
    return projector_sheared.plan(matrices, vol_shape, det_shape, subsamples, offset)


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
        An int ``s``: ``(s, s, s)`` for the general projector, ``(s, s, 1)`` for the shear-warp one
        (along x its columns step exactly one pixel, as the single-axis path's do).
    z_range : (z0, z1), optional
        Work on the slab ``z0:z1`` of the full volume only.
    xp : array module
    method : str
        ``auto``, ``shear-warp`` or ``general`` (:func:`euler_method`).
    """

    def __init__(self, euler, det_shape, vol_shape, subsamples=2, z_range=None, xp=np, method="auto"):
        self.euler = np.asarray(euler, dtype=float)
        self.matrices = projection_matrices(self.euler)
        self.det_shape = tuple(int(d) for d in det_shape)
        self.full_shape = tuple(int(v) for v in vol_shape)
        self.z_range = (0, self.full_shape[0]) if z_range is None else tuple(int(z) for z in z_range)
        self.xp = xp
        nz = self.full_shape[0]
        z0, z1 = self.z_range
        # the slab's own centre index (z1 - z0)//2 sits at full-volume z = z0 + (z1 - z0)//2 - nz//2
        self.offset = (0.0, 0.0, float(z0 + (z1 - z0) // 2 - nz // 2))
        self.method = euler_method(self.matrices, method, xp)
        if np.ndim(subsamples) == 0:
            s = int(subsamples)
            subsamples = (s, s, 1) if self.method == "shear-warp" else (s, s, s)
        self.subsamples = tuple(int(v) for v in subsamples)

    @property
    def thickness(self) -> int:
        return max(self.full_shape)

    def volume_shape(self, projections=None) -> tuple[int, int, int]:
        z0, z1 = self.z_range
        return (z1 - z0, *self.full_shape[1:])

    def _plan(self):
        m = np.ascontiguousarray(self.matrices, dtype=np.float64)
        return _sheared_plan(m.tobytes(), m.shape[0], self.volume_shape(), self.det_shape, self.subsamples,
                             self.offset)

    def forward(self, volume):
        if self.method == "shear-warp":
            return projector_sheared.forward(volume, self.matrices, self.det_shape, self.subsamples,
                                             self.offset, geometry=self._plan())
        return projector_general.forward(volume, self.matrices, self.det_shape, self.subsamples, offset=self.offset)

    def backward(self, projections):
        if self.method == "shear-warp":
            return projector_sheared.backward(projections, self.matrices, self.volume_shape(), self.subsamples,
                                              self.offset, geometry=self._plan())
        return projector_general.backward(
            projections, self.matrices, self.volume_shape(), self.subsamples, offset=self.offset
        )
