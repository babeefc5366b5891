"""Projection geometry: one Euler-angle convention for the whole project.

The sample frame has axes ``x, y, z`` in Å; atomic models are stored in it and
volumes are sampled on it (dims ``z, y, x``). A projection with Euler angles
(φ, θ, ψ) in degrees maps a sample point ``r = (x, y, z)`` to detector
coordinates ``(x_det, y_det)`` and a depth along the beam::

    (x_det, y_det, depth) = A(φ, θ, ψ) · r,        A = P · Rᵀ · P

where ``R = Rz(φ) · Ry(θ) · Rx(ψ)`` is the rotation of the seed paper's RESIRE
code acting on vectors ordered ``(y, x, z)`` (the MATLAB volume's dim1, dim2,
dim3), ``Rz, Ry, Rx`` are right-handed rotations about those axes, and ``P``
swaps the first two components (``(x, y, z) ↔ (y, x, z)``). For a single-axis
series (φ = ψ = 0) this is simply::

    x_det = x                       (the tilt axis is the sample x axis)
    y_det = y cos θ − z sin θ
    depth = y sin θ + z cos θ

so θ = 0 projects along z onto the (x, y) plane. Image pixels
put the origin at index ``N // 2`` of each axis: pixel ``(i, j)`` of an image
``(y, x)`` sits at ``y_det = (i − N//2)·pixel_size``, ``x_det = (j − N//2)·pixel_size``.

This is exactly the convention of the seed tilt series (the MATLAB array
``P(dim1, dim2, angle)`` is read as ``(tilt, y, x)``): projecting its ground-truth
atoms reproduces it without any axis swap. See ``docs/geometry.md`` for a figure.

Examples
--------
>>> import numpy as np
>>> r = np.array([[1.0, 2.0, 3.0]])
>>> detector_coordinates(r, [[0.0, 90.0, 0.0]]).round(6).tolist()
[[[-3.0, 1.0]]]
"""

from __future__ import annotations

import numpy as np

from aetdask.schema import as_euler

_SWAP = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def _rot(axis: int, angle_deg: np.ndarray) -> np.ndarray:
    """Right-handed rotations about ``axis`` (0, 1, 2) by angles in degrees, shape (n, 3, 3)."""
    a = np.deg2rad(np.asarray(angle_deg, dtype=float))
    c, s = np.cos(a), np.sin(a)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.zeros(a.shape + (3, 3))
    r[..., axis, axis] = 1.0
    r[..., i, i] = c
    r[..., j, j] = c
    r[..., i, j] = -s
    r[..., j, i] = s
    return r


def projection_matrices(angles) -> np.ndarray:
    """Matrices ``A`` (n, 3, 3) mapping sample ``(x, y, z)`` to ``(x_det, y_det, depth)``.

    ``angles`` is anything :func:`aetdask.schema.as_euler` accepts: one θ per
    projection or (φ, θ, ψ) rows, in degrees.
    """
    e = as_euler(angles)
    rot = _rot(2, e[:, 0]) @ _rot(1, e[:, 1]) @ _rot(0, e[:, 2])  # Rz(φ) Ry(θ) Rx(ψ), (y, x, z) order
    return _SWAP @ np.swapaxes(rot, -1, -2) @ _SWAP


def detector_coordinates(positions, angles) -> np.ndarray:
    """Detector coordinates ``(y_det, x_det)`` in Å of atoms at every angle, shape (n_tilt, n_atoms, 2).

    The order ``(y, x)`` matches the image axes ``(y, x)`` of a tilt series.
    """
    r = np.asarray(positions, dtype=float)
    a = projection_matrices(angles)
    xyz = np.einsum("tij,nj->tni", a, r, optimize=True)
    return xyz[..., [1, 0]]


def pixel_position(coords, n: int, pixel_size: float):
    """Convert physical detector coordinates (Å) to fractional pixel indices (origin at ``n // 2``)."""
    return np.asarray(coords, dtype=float) / float(pixel_size) + n // 2


def _cross_matrix(w) -> np.ndarray:
    x, y, z = w
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def rigid_motion_basis(angles) -> tuple[np.ndarray, np.ndarray]:
    """How a rigid motion of the whole object shows up in each projection's geometry.

    A global rotation or translation of the object cannot be told from the
    data: it changes every projection's angles and image shift in a fixed,
    correlated way. Refinement holds these directions fixed.

    Returns
    -------
    rotation : (n, 3, 3)
        ``rotation[k] @ ω`` is the change of projection k's (φ, θ, ψ), degrees,
        when the object turns by the small rotation vector ω (radians, sample frame).
    translation : (n, 2, 3)
        ``translation[k] @ t`` is the change of projection k's image position
        (y, x) when the object moves by t = (x, y, z) (same length unit).
    """
    e = as_euler(angles)
    a = projection_matrices(e)
    h = 1e-5
    rotation = np.empty((len(e), 3, 3))
    for k in range(len(e)):
        deriv = []
        for c in range(3):
            ep, em = e[k].copy(), e[k].copy()
            ep[c] += h
            em[c] -= h
            deriv.append(((projection_matrices(ep[None])[0] - projection_matrices(em[None])[0]) / (2 * h)).ravel())
        d = np.stack(deriv, axis=1)  # (9, 3): d vec(A) / d angle (per degree)
        targets = np.stack([(a[k] @ _cross_matrix(np.eye(3)[i])).ravel() for i in range(3)], axis=1)
        rotation[k] = np.linalg.lstsq(d, targets, rcond=None)[0]
    translation = a[:, [1, 0], :]
    return rotation, translation


def remove_rigid_motion(delta, basis) -> np.ndarray:
    """``delta`` (n, m) less its least-squares component along ``basis`` (n, m, p)."""
    d = np.asarray(delta, dtype=float)
    b = np.asarray(basis, dtype=float)
    coef = np.linalg.lstsq(b.reshape(-1, b.shape[-1]), d.reshape(-1), rcond=None)[0]
    return d - b @ coef


STRAIN_COMPONENTS = ("xx", "yy", "zz", "yz", "xz", "xy")


def strain_matrix(components) -> np.ndarray:
    """The symmetric 3×3 strain ``E`` (sample frame, ``x, y, z``) from its six components
    ``(xx, yy, zz, yz, xz, xy)`` (:data:`STRAIN_COMPONENTS`)."""
    xx, yy, zz, yz, xz, xy = np.asarray(components, dtype=float)
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


#: Strains whose angle pattern is weaker than this fraction of the strongest one's are magnifications,
#: not angle changes (:func:`deformation_directions`). For a single-axis series, stretching along the
#: tilt axis against across it changes no angle at all; the tenths of a degree of φ and ψ that a
#: refinement puts in give it an angle pattern of about 1 % (sin of the tilt of the axis), and a
#: pseudo-inverse that keeps it turns rounding into coordinates hundreds of times the real ones.
ANGLE_STRAIN_RCOND = 0.05


def deformation_directions(angles, rcond: float = ANGLE_STRAIN_RCOND):
    """The strains that change the angles, and the map from angle changes to their coordinates.

    Parameters
    ----------
    angles : (n, 3) array_like
        Euler angles (φ, θ, ψ) in degrees.
    rcond : float
        Strains whose angle pattern (singular value of the strain-to-angle map
        of :func:`strain_basis`) is below this fraction of the strongest are
        left out: they magnify the projections but change no angle.

    Returns
    -------
    pattern : (n·3, 6)
        The angle changes (degrees, flattened per projection as φ, θ, ψ) per
        unit of each strain component (:data:`STRAIN_COMPONENTS`).
    directions : (m, 6)
        Orthonormal strain directions that change the angles, strongest first.
    coordinates : (6, n·3)
        The least-squares strain (within ``directions``) whose pattern best
        matches a flattened angle change: ``coordinates @ delta.ravel()``.
    """
    pattern = strain_basis(angles)[0].reshape(-1, 6)
    u, sv, vt = np.linalg.svd(pattern, full_matrices=False)
    keep = sv > rcond * sv[0]
    return pattern, vt[keep], vt[keep].T @ (u[:, keep] / sv[keep]).T


def strain_basis(angles) -> tuple[np.ndarray, np.ndarray]:
    """How a small linear deformation of the whole object shows up in each projection.

    Deform the object by ``r → (I + E) r`` with ``E`` a small symmetric strain
    (sample frame). Its projection at the old angles is, to first order in
    ``E``, the projection of the undeformed object at changed angles, magnified
    on the detector (and scaled in intensity)::

        detector position of an atom:  A(e) (I + E) r  =  (I + D) A(e + δ) r

    with ``δ`` the change of (φ, θ, ψ) and ``D`` a symmetric 2×2 magnification
    of ``(x_det, y_det)``. So angle errors along ``δ`` look much like a deformed
    object: only the magnification (and terms of higher order) tells them apart,
    and a reconstruction made with them deforms to follow. These are the slowest
    directions of angle refinement (:func:`aetdask.reconstruct.refine.refine_geometry`).
    Isotropic strain changes no angle.

    Returns
    -------
    angle : (n, 3, 6)
        ``angle[k] @ ε`` is ``δ`` (degrees) of projection k for the strain with
        components ``ε`` (:data:`STRAIN_COMPONENTS`).
    magnification : (n, 3, 6)
        ``magnification[k] @ ε`` is ``(D_xx, D_yy, D_xy)`` of projection k.
    """
    e = as_euler(angles)
    a = projection_matrices(e)
    rotation, _ = rigid_motion_basis(e)
    angle = np.empty((len(e), 3, 6))
    magnification = np.empty((len(e), 3, 6))
    for m in range(6):
        g = a @ strain_matrix(np.eye(6)[m]) @ np.swapaxes(a, 1, 2)  # the strain in the detector frame
        # A(I + E) = (I + G) A with G = A E Aᵀ; to first order I + G = (I + D̃)(I + Ω), Ω
        # antisymmetric (a turn of the projection direction: the angles' change) and D̃
        # mapping (x_det, y_det) without depth (G's symmetric in-plane block, the
        # magnification). Ω = A[ω]×Aᵀ, ω the object rotation that the angles' change equals.
        omega_det = np.stack([-g[:, 1, 2], g[:, 0, 2], np.zeros(len(e))], axis=1)
        omega = np.einsum("kji,kj->ki", a, omega_det)
        angle[:, :, m] = np.einsum("kij,kj->ki", rotation, omega)
        magnification[:, :, m] = np.stack([g[:, 0, 0], g[:, 1, 1], g[:, 0, 1]], axis=1)
    return angle, magnification
