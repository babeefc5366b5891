"""Physical plausibility of the inputs: what a tilt series and an atomic model must satisfy to mean anything.

The checks of :mod:`aetdask.schema` make sure an input is well formed; these make sure it can be
what it claims to be. Every rule follows from the physics of ADF-STEM tomography, the data
themselves and the facts the user states (pixel size, angles), never from limits fitted to one
data set. What makes a result impossible is refused (:class:`~aetdask.errors.InputError`, one
line naming the file or field and what was expected); what makes it unreliable is warned
(:class:`PlausibilityWarning`, one line).

==========================  ==================================================================  ======
input                       rule (why)                                                          action
==========================  ==================================================================  ======
tilt angles                 within −360…360° (a tilt holder turns less than a full turn;         refuse
                            larger numbers are another unit, e.g. mrad)
tilt angles                 at least 2 distinct projection directions: two directions count as   refuse
                            one when rotating one into the other moves no point of the
                            n-pixel field by a pixel (< 2/n rad); one direction has no depth
                            information at all
tilt angles                 the directions span ≥ :data:`MIN_COVERAGE` (≈ 20°): with a tilt      refuse
                            range ±α the missing wedge stretches the point-spread function
                            along the beam by e(α) = √((α + sin α cos α)/(α − sin α cos α))
                            (Radermacher 1988); below 20° e > 10, so atoms 1 Å wide smear over
                            > 10 Å in depth — no 3-D reconstruction. Angles in radians always
                            land here (|θ| ≤ π gives a span of at most π "degrees"), and the
                            message says so when, read as radians, they would be a tilt range
tilt angles                 span ≥ :data:`WARN_COVERAGE` (≈ 65°, e ≤ 3)                          warn
tilt angles                 at least :data:`CROWTHER_DIRECTIONS` = ⌈2π⌉ = 7 distinct directions: warn
                            Crowther's N ≈ πD/d views resolve d over a diameter D; the smallest
                            particle with an inside (D ≈ two bond lengths) needs 2π views to
                            resolve its bonds (d ≈ one bond). Atomicity lets AET do better than
                            Crowther, so fewer is a warning, not a refusal
pixel size                  :data:`MIN_PIXEL` (0.01 Å) ≤ p ≤ :data:`MAX_PIXEL` (5 Å): an atom's  refuse
                            ADF image is ≥ 0.5 Å wide (probe, thermal motion), so a finer step
                            samples nothing new and the field n·p shrinks below an atom; a
                            pixel wider than the largest nearest-neighbour distance of solids
                            (≈ 5 Å) holds several atoms, so none can be located. The message
                            names the unit the number would be right in (m, nm, µm, pm)
pixel size                  p ≤ :data:`NYQUIST_PIXEL` (1 Å): neighbouring atoms ≈ 2 Å apart      warn
                            need 2 pixels between them (Nyquist)
field of view               n·p ≥ :data:`MIN_FIELD` (3 Å, two of the shortest interatomic         refuse
                            distances): a narrower field cannot hold a particle
pixel values                finite in float32, aetdask's working precision, *including* sums of  refuse
                            squares (norms, R-factors): the largest magnitude ≤ √(max32 / size),
                            and each projection's largest magnitude, if not 0, ≥ √(tiny32)
                            (smaller ones are denormal or 0 once squared)
atomic model (atom files)   no two atoms closer than :data:`MIN_ATOM_DISTANCE` (0.5 Å; the        refuse
                            shortest bond of all, H₂'s, is 0.74 Å): a duplicated atom
reconstruction memory       the volume (and its gathered copy) fits this machine's memory        refuse
==========================  ==================================================================  ======

Examples
--------
>>> import numpy as np
>>> round(MIN_COVERAGE, 1), round(WARN_COVERAGE, 1)
(19.8, 64.8)
>>> distinct_directions(np.arange(0.0, 180.0, 3.0), 128), distinct_directions([0.0] * 12, 128)
(60, 1)
>>> check_angles(np.linspace(-1.2, 1.2, 60), 64, source="angles.txt")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
aetdask.errors.InputError: angles.txt: the 60 projection directions span only 2.4° ... these look like radians: ... 137.5°, ...

References
----------
.. [1] R. A. Crowther, D. J. DeRosier, A. Klug, Proc. R. Soc. Lond. A 317, 319 (1970).
.. [2] M. Radermacher, J. Electron Microsc. Tech. 9, 359 (1988): the elongation factor.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

from aetdask.errors import InputError

__all__ = [
    "PlausibilityWarning", "elongation", "beam_directions", "distinct_directions", "coverage",
    "check_angles", "check_pixel_size", "check_values", "check_tilt_series", "check_atom_distances",
    "volume_bytes", "reconstruction_bytes", "memory_limit", "available_memory", "check_memory",
    "check_reconstruction_memory",
]


class PlausibilityWarning(UserWarning):
    """An input that can be computed with but whose result will be unreliable."""


# ----------------------------------------------------------------------------- the limits and why
#: Largest elongation of the point-spread function along the beam (missing wedge) that still
#: counts as a 3-D reconstruction; a larger one is refused.
MAX_ELONGATION = 10.0
#: Elongation above which the depth resolution is poor enough to warn.
WARN_ELONGATION = 3.0
#: Fewest distinct projection directions: one direction has no depth information.
MIN_DIRECTIONS = 2
#: Distinct directions below which Crowther's criterion cannot resolve even the smallest particle.
CROWTHER_DIRECTIONS = math.ceil(2 * math.pi)
#: Largest magnitude of an angle in degrees (a tilt holder turns less than a full turn).
MAX_ANGLE = 360.0
#: Finest and coarsest pixel (Å) an ADF-STEM image of atoms can have.
MIN_PIXEL, MAX_PIXEL = 0.01, 5.0
#: Coarsest pixel (Å) at which atoms ≈ 2 Å apart are Nyquist sampled.
NYQUIST_PIXEL = 1.0
#: Narrowest field of view (Å) that can hold a particle: two of the shortest interatomic distances.
MIN_FIELD = 3.0
#: Closest two atoms can be (Å): below the shortest bond there is (H₂, 0.74 Å).
MIN_ATOM_DISTANCE = 0.5

_F32 = np.finfo(np.float32)
#: Smallest non-zero peak magnitude of a projection whose square is a normal float32.
MIN_PEAK = float(np.sqrt(_F32.tiny))


def elongation(coverage_deg) -> float:
    """Radermacher's elongation factor of a single-axis tilt range spanning ``coverage_deg`` degrees.

    ``e = √((α + sin α cos α) / (α − sin α cos α))`` with half-range α; 1 for a full half-turn
    (α = 90°), infinite for α = 0.

    >>> round(elongation(140.0), 2), round(elongation(20.0), 1)
    (1.31, 9.9)
    """
    a = np.radians(min(float(coverage_deg), 180.0)) / 2
    sc = np.sin(a) * np.cos(a)
    return float("inf") if a - sc <= 0 else float(np.sqrt((a + sc) / (a - sc)))


def _coverage_for(e_max: float) -> float:
    """The span (degrees) at which :func:`elongation` equals ``e_max`` (bisection)."""
    lo, hi = 1e-6, 180.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if elongation(mid) > e_max else (lo, mid)
    return hi


#: Smallest span (degrees) of the projection directions that is refused below (≈ 19.8°).
MIN_COVERAGE = _coverage_for(MAX_ELONGATION)
#: Span (degrees) below which a warning is given (≈ 64.8°).
WARN_COVERAGE = _coverage_for(WARN_ELONGATION)


# ----------------------------------------------------------------------------- angles
def beam_directions(angles) -> np.ndarray:
    """Unit vectors (n, 3) in the sample frame along which each projection looks (the depth axis).

    >>> beam_directions([0.0, 90.0]).round(6).tolist()
    [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    """
    from aetdask.geometry import projection_matrices

    return projection_matrices(angles)[:, 2, :]


def coverage(angles) -> float:
    """The range of projection directions (degrees, 0…180): 180° minus the widest gap between them.

    A direction and its opposite give the same projection (mirrored), so directions are angles
    modulo 180° around the plane they lie in (the plane of the two largest principal axes of
    ``Σ d dᵀ``; for a single-axis series, the plane normal to the tilt axis, where this is
    θ_max − θ_min for any range within 180°). The missing wedge is 180° minus the coverage.

    >>> coverage([-60.0, 0.0, 60.0]), coverage([0.0, 10.0, 180.0]), coverage(np.arange(0.0, 180.0, 3.0))
    (120.0, 10.0, 177.0)
    """
    d = beam_directions(angles)
    if len(d) < 2:
        return 0.0
    _, axes = np.linalg.eigh(d.T @ d)
    phi = np.sort(np.degrees(np.arctan2(d @ axes[:, 1], d @ axes[:, 2])) % 180.0)
    gaps = np.diff(np.concatenate([phi, [phi[0] + 180.0]]))
    return float(np.round(180.0 - gaps.max(), 9))


def _tolerance(n_pixels: int) -> float:
    """Smallest angle (radians) between two directions whose images of an n-pixel field differ.

    Rotating by δ moves a point at the edge of the field (n/2 pixels from the axis) by δ·n/2
    pixels; directions closer than 2/n rad give the same image to within a pixel.
    """
    return 2.0 / max(int(n_pixels), 1)


def distinct_directions(angles, n_pixels: int, limit: int | None = None) -> int:
    """How many projection directions differ by at least 2/n rad (see :func:`_tolerance`).

    Directions are gathered greedily: each joins the first kept one within the tolerance
    (a direction and its opposite are the same projection, mirrored). Counting stops at
    ``limit`` when given.
    """
    d = beam_directions(angles)
    cos_tol = math.cos(_tolerance(n_pixels))
    kept = []
    for v in d:
        if not kept or np.abs(np.asarray(kept) @ v).max() < cos_tol:
            kept.append(v)
            if limit is not None and len(kept) >= limit:
                break
    return len(kept)


def _theta_range(euler: np.ndarray) -> str:
    lo, hi = euler[:, 1].min(), euler[:, 1].max()
    return f"θ = {lo:g}°" if lo == hi else f"θ {lo:g}…{hi:g}°"


def _radian_hint(euler: np.ndarray) -> str:
    """A hint when angles read as radians would be a plausible tilt range, else ''."""
    if np.abs(euler).max() > math.pi or len(euler) < MIN_DIRECTIONS:
        return ""
    as_degrees = np.degrees(euler)
    if coverage(as_degrees) < MIN_COVERAGE:
        return ""
    return (f"; these look like radians: read as radians they span {coverage(as_degrees):.1f}°, "
            "so give the angles in degrees (× 180/π)")


def check_angles(angles, n_pixels: int, *, source: str = "angles") -> None:
    """Refuse tilt angles that cannot give a 3-D reconstruction; warn about weak ones.

    Parameters
    ----------
    angles : array
        One θ per projection or (φ, θ, ψ) rows, degrees (:func:`aetdask.schema.as_euler`).
    n_pixels : int
        Image width in pixels (sets when two directions are distinct, :func:`distinct_directions`).
    source : str
        The file or field named in the message.

    Raises
    ------
    InputError
        Angles beyond ±360°, fewer than 2 distinct directions, or a span under
        :data:`MIN_COVERAGE` (with a hint when the angles look like radians).
    """
    from aetdask.schema import ANGLE_NAMES, as_euler

    euler = as_euler(angles, name=source)
    n = len(euler)
    if n == 0:
        return
    big = np.argwhere(np.abs(euler) > MAX_ANGLE)
    if len(big):
        k, c = (int(v) for v in big[0])
        raise InputError(
            f"{source}: {ANGLE_NAMES[c]} = {euler[k, c]:g}° at projection {k} is beyond ±{MAX_ANGLE:g}°; expected "
            "tilt angles in degrees (a tilt holder turns less than a full turn: milliradians or another unit?)")
    distinct = distinct_directions(euler, n_pixels, limit=CROWTHER_DIRECTIONS)
    if distinct < MIN_DIRECTIONS:
        where = (f"one projection ({_theta_range(euler)})" if n == 1 else
                 f"all {n} projections look along one direction ({_theta_range(euler)}; directions closer than "
                 f"{np.degrees(_tolerance(n_pixels)):.2g}° give the same {n_pixels}-pixel image to within a pixel)")
        raise InputError(
            f"{source}: {where}, which holds no depth information; a 3-D reconstruction needs projections from at "
            f"least {MIN_DIRECTIONS} directions spanning at least {MIN_COVERAGE:.0f}° (a tilt series)"
            + _radian_hint(euler))
    cov = coverage(euler)
    if cov < MIN_COVERAGE:
        raise InputError(
            f"{source}: the {n} projection directions span only {cov:.3g}° ({_theta_range(euler)}); a 3-D "
            f"reconstruction needs them to span at least {MIN_COVERAGE:.0f}° (over a narrower tilt range the missing "
            f"wedge stretches every atom more than {MAX_ELONGATION:g}× along the beam)" + _radian_hint(euler))
    if cov < WARN_COVERAGE:
        warnings.warn(
            f"{source}: the projection directions span only {cov:.3g}°, so the missing wedge stretches every atom "
            f"{elongation(cov):.1f}× along the beam; expect atoms to merge in depth (a tilt range of ±60° or more is "
            "usual)", PlausibilityWarning, stacklevel=3)
    if distinct < CROWTHER_DIRECTIONS:
        warnings.warn(
            f"{source}: only {distinct} distinct projection directions; by Crowther's criterion (N ≈ πD/d) even a "
            f"particle two bonds across needs {CROWTHER_DIRECTIONS} to resolve its atoms; expect a poor model",
            PlausibilityWarning, stacklevel=3)


# ----------------------------------------------------------------------------- pixel size and field
_UNITS = (("metres", 1e10), ("µm", 1e4), ("nm", 10.0), ("pm", 0.01))
_TYPICAL_PIXEL = (0.05, 2.0)  # Å: where a number in another unit is worth pointing out


def check_pixel_size(pixel_size: float, n_pixels: int, *, source: str = "pixel_size") -> None:
    """Refuse a pixel size no ADF-STEM image of atoms can have, or a field narrower than a particle.

    Raises
    ------
    InputError
        ``pixel_size`` outside :data:`MIN_PIXEL`…:data:`MAX_PIXEL` Å (naming the unit the number
        would fit in), or a field of view ``n_pixels × pixel_size`` under :data:`MIN_FIELD` Å.

    Examples
    --------
    >>> check_pixel_size(1e-6, 64, source="tilts.npy")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    aetdask.errors.InputError: tilts.npy: pixel_size = 1e-06 Å is not the pixel of an ADF-STEM image of atoms; ...
    """
    p = float(pixel_size)
    if not MIN_PIXEL <= p <= MAX_PIXEL:
        hint = next((f"; in {unit}? that would be {p * f:g} Å" for unit, f in _UNITS
                     if _TYPICAL_PIXEL[0] <= p * f <= _TYPICAL_PIXEL[1]), "")
        raise InputError(
            f"{source}: pixel_size = {p:g} Å is not the pixel of an ADF-STEM image of atoms; expected {MIN_PIXEL:g} to "
            f"{MAX_PIXEL:g} Å per pixel (an atom's image is 0.5–1 Å wide, a few pixels across; atoms are 1.4–5 Å "
            f"apart){hint}")
    field = int(n_pixels) * p
    if field < MIN_FIELD:
        raise InputError(
            f"{source}: the field of view is {int(n_pixels)} px × {p:g} Å = {field:.3g} Å, narrower than "
            f"{MIN_FIELD:g} Å (two interatomic distances); expected images that hold the whole particle "
            "(is pixel_size in Å?)")
    if p > NYQUIST_PIXEL:
        warnings.warn(
            f"{source}: pixel_size = {p:g} Å leaves fewer than 2 pixels between atoms ≈ 2 Å apart (Nyquist); "
            f"expect neighbouring atoms to merge (AET images are sampled at ≤ {NYQUIST_PIXEL:g} Å, usually 0.2–0.4 Å)",
            PlausibilityWarning, stacklevel=3)


# ----------------------------------------------------------------------------- pixel values
def check_values(values, *, source: str = "tilt series") -> None:
    """Refuse pixel values that overflow or underflow float32, the precision aetdask computes in.

    Reconstruction and refinement form sums of squares of all pixel values (norms, R-factors)
    in float32, so the largest magnitude must stay ≤ √(max32 / size) (about 1.8e19 / √size), and
    a projection whose largest magnitude is below √(tiny32) ≈ 1.1e-19 loses everything to
    denormals or 0 once squared. Zeros are fine, and so are tiny values beside normal ones (they
    are below float32's resolution of the projection anyway).

    ``values`` is a ``(tilt, y, x)`` array (computed here if lazy).
    """
    arr = np.asarray(values)
    if arr.size == 0 or arr.dtype.kind not in "biuf":
        return
    hi = arr.max(axis=(1, 2)).astype(float)
    lo = arr.min(axis=(1, 2)).astype(float)
    peak = np.maximum(hi, -lo)
    ceiling = float(np.sqrt(_F32.max / arr.size))
    if peak.max() > ceiling:
        k = int(np.argmax(peak))
        raise InputError(
            f"{source}: pixel values reach {peak[k]:.3g} (tilt {k}); aetdask computes in float32, where sums of "
            f"squares of {arr.size} values that large overflow (largest usable {ceiling:.2g}); expected detector "
            "counts or intensities: divide the data by a constant (units 'a.u.')")
    small = np.flatnonzero((peak > 0) & (peak < MIN_PEAK))
    if len(small):
        k = int(small[0])
        raise InputError(
            f"{source}: the largest pixel value of tilt {k} is {peak[k]:.3g}, so small that its square underflows "
            f"to 0 in float32, the precision aetdask computes in (smallest usable {MIN_PEAK:.2g}); expected "
            "detector counts or intensities: multiply the data by a constant (units 'a.u.')")


def check_tilt_series(ts, *, source: str = "tilt series", angle_source: str | None = None,
                      values: bool = True) -> None:
    """All the plausibility checks of a ``(tilt, y, x)`` tilt series (angles, pixel size, field, values).

    ``angle_source`` names the angle file in messages about angles (default ``source``);
    ``values=False`` skips the pixel values (they would be computed).
    """
    nx = int(ts.sizes["x"])
    euler = np.stack([ts.coords[a].values for a in ("phi", "theta", "psi")], axis=1).astype(float)
    check_angles(euler, nx, source=angle_source or source)
    check_pixel_size(ts.attrs["pixel_size"], nx, source=source)
    if values:
        check_values(ts.values, source=source)


# ----------------------------------------------------------------------------- atoms
def check_atom_distances(positions, *, source: str = "atoms", min_distance: float = MIN_ATOM_DISTANCE,
                         warn: bool = False) -> int:
    """Refuse (or, with ``warn``, warn about) atoms closer than ``min_distance`` Å; return how many pairs.

    No two atoms are closer than the shortest bond there is (H₂, 0.74 Å), so a pair closer than
    0.5 Å is one atom written twice: it would be counted twice by every measure of the model.

    >>> check_atom_distances([[0, 0, 0], [2.3, 0, 0], [2.3, 0, 0.1]], source="m.xyz")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    aetdask.errors.InputError: m.xyz: atoms 2 and 3 (counting from 1) are 0.1 Å apart (1 pair closer than 0.5 Å); ...
    """
    from scipy.spatial import cKDTree

    pos = np.asarray(positions, dtype=float)
    if len(pos) < 2:
        return 0
    pairs = cKDTree(pos).query_pairs(min_distance, output_type="ndarray")
    pairs = pairs[np.linalg.norm(pos[pairs[:, 0]] - pos[pairs[:, 1]], axis=1) < min_distance]
    if not len(pairs):
        return 0
    dist = np.linalg.norm(pos[pairs[:, 0]] - pos[pairs[:, 1]], axis=1)
    i, j = sorted(int(v) for v in pairs[int(np.argmin(dist))])
    message = (f"{source}: atoms {i + 1} and {j + 1} (counting from 1) are {dist.min():.3g} Å apart ({len(pairs)} "
               f"pair{'s' if len(pairs) > 1 else ''} closer than {min_distance:g} Å); expected each atom once: no two "
               "atoms are closer than the shortest bond, H₂'s 0.74 Å (a duplicated model?)")
    if warn:
        warnings.warn(message, PlausibilityWarning, stacklevel=2)
        return len(pairs)
    raise InputError(message)


# ----------------------------------------------------------------------------- memory
def volume_bytes(shape, dtype="float32") -> int:
    """Bytes of an array of ``shape`` and ``dtype``.

    >>> volume_bytes((512, 512, 512))
    536870912
    """
    return int(np.prod([int(s) for s in shape], dtype=object)) * np.dtype(dtype).itemsize


def reconstruction_bytes(tilt_shape, dtype="float32") -> int:
    """A lower bound of the memory a reconstruction of a ``(tilt, y, x)`` series takes, in bytes.

    The volume ``(y, y, x)`` on the workers and its gathered copy in the calling process, and
    the measured and computed projections: 2 volumes + 2 tilt series. Working arrays of the
    iterations (gradient, support) come on top.

    >>> reconstruction_bytes((60, 256, 256)) / 2**20
    158.0
    """
    nt, ny, nx = (int(s) for s in tilt_shape)
    return 2 * volume_bytes((ny, ny, nx), dtype) + 2 * volume_bytes((nt, ny, nx), dtype)


def memory_limit() -> int | None:
    """Bytes of memory this process may use at most: physical memory, or a smaller cgroup limit."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            limits.append(int(text))
    return min(limits) if limits else None


def available_memory() -> int | None:
    """Bytes of memory free now (psutil, else /proc/meminfo, else free pages), or None."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1024
    return f"{nbytes:.3g} PiB"  # pragma: no cover


def check_memory(nbytes: int, what: str, *, source: str, limit: int | None = None,
                 available: int | None = None) -> None:
    """Refuse ``what`` (needing ``nbytes``) when it cannot fit this machine's memory; warn when it does not fit now.

    ``limit``/``available`` default to :func:`memory_limit` and :func:`available_memory`.

    >>> check_memory(2**50, "the volume", source="reconstruct", limit=2**37)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    aetdask.errors.InputError: reconstruct: the volume needs at least 1 PiB of memory, more than the 128 GiB this ...
    """
    limit = memory_limit() if limit is None else limit
    if limit is not None and nbytes > limit:
        raise InputError(
            f"{source}: {what} needs at least {_size(nbytes)} of memory, more than the {_size(limit)} this machine "
            "has; expected smaller images: bin or crop the tilt series (or check its pixel size)")
    available = available_memory() if available is None else available
    if available is not None and nbytes > available:
        warnings.warn(f"{source}: {what} needs at least {_size(nbytes)} of memory and {_size(available)} is free now; "
                      "expect swapping or a killed worker", PlausibilityWarning, stacklevel=2)


def check_reconstruction_memory(tilt_shape, dtype="float32", *, source: str = "reconstruct") -> None:
    """Refuse a reconstruction whose volume cannot fit this machine's memory, before anything is allocated.

    >>> check_reconstruction_memory((60, 256, 256))  # 158 MiB: fine
    """
    nt, ny, nx = (int(s) for s in tilt_shape)
    check_memory(reconstruction_bytes(tilt_shape, dtype),
                 f"the reconstruction of {nt} projections of {ny}×{nx} px (a {ny}×{ny}×{nx} {np.dtype(dtype).name} "
                 "volume)", source=source)
