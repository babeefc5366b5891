"""Scanning AET geometry: local sub-volumes of a laterally extended film, their crops, and blending.

A film wider than the field of view at high tilt cannot be reconstructed as the
usual cube: at tilt θ a detector row sees material from y up to ``u / cos θ``
and the rays cross ``thickness / cos θ`` of film. Scanning AET cuts the film
into overlapping local regions and reconstructs each one from the rows of
every projection that see it (single-axis tilt about x, pixel units, the
detector row of a point being ``u = y cos θ − z sin θ``):

* a region has centre ``(yc, xc)`` and half-size ``h`` (core and overlap);
  the film occupies ``z ∈ zc ± Zh``;
* at tilt θ its rows are centred on ``uc = yc cos θ − zc sin θ``, and
  ``H = max_θ (h |cos θ| + Zh |sin θ|) + pad`` rows each side hold all of it;
* those rows also see film outside the region: the local volume extends to
  ``y = yc ± max_θ (H + Zh |sin θ|) / |cos θ|`` so that everything its rows
  see is inside it (the data are then consistent); only its centre is kept;
* the crop starts on a whole row; the fractional rest becomes the
  projector's per-angle detector offset, so the data are never interpolated.

The local volumes are blended with weights that ramp linearly across each
overlap and sum to one (a partition of unity), so seams carry no hard cuts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Region:
    """One local sub-volume (pixel units; 0 = the image centre, ``NY//2``, ``NX//2``).

    ``yc``: centre across the tilt axis; ``x0:x1``: image columns (along the
    tilt axis); ``half``: half-size across the tilt axis (core + overlap).
    """

    index: tuple[int, int]
    yc: int
    half: int
    x0: int
    x1: int

    @property
    def y_window(self) -> tuple[int, int]:
        """Volume rows ``[y0, y1)`` (from the centre) the region contributes."""
        return self.yc - self.half, self.yc + self.half + 1


@dataclass(frozen=True)
class Plan:
    """Where the local sub-volumes lie and how big their problems are."""

    regions: tuple[Region, ...]
    shape: tuple[int, int]          # images (NY, NX)
    theta: tuple[float, ...]        # degrees
    zc: int                         # film centre (voxels from the volume centre)
    z_half: int                     # film half-thickness with margin (voxels)
    rows_half: int                  # H: crop half-height (rows)
    volume_half: int                # local volume half-extent across the tilt axis (voxels)
    band: tuple[int, int]           # volume rows [y0, y1) covered by the regions (from the centre)

    @property
    def local_shape(self) -> tuple[int, int]:
        """(nz, ny) of every local slice."""
        return (2 * self.z_half + 1, 2 * self.volume_half + 1)


def _axis_windows(n: int, core: int, overlap: int) -> list[tuple[int, int]]:
    """Windows of ``core + overlap`` covering ``range(n)``, evenly spaced, ends on the edges."""
    width = min(n, core + overlap)
    count = 1 if width >= n else math.ceil((n - width) / core) + 1
    starts = np.linspace(0, n - width, count).round().astype(int)
    return [(int(a), int(a) + width) for a in starts]


def plan(shape, theta_deg, z_half: float, zc: float = 0.0, core: int = 64, overlap: int = 16,
         pad: int = 3) -> Plan:
    """Cut the field of view of a film into overlapping regions.

    Parameters
    ----------
    shape : (NY, NX)
        Image size (rows across the tilt axis, columns along it).
    theta_deg : array
        Tilt angles (single axis, about x), |θ| < 85°.
    z_half, zc : float
        The film lies in ``z ∈ zc ± z_half`` voxels.
    core, overlap : int
        Region size and overlap (voxels), across and along the tilt axis.
    pad : int
        Extra rows each side of a crop.

    Examples
    --------
    >>> p = plan((96, 96), np.arange(-60, 61, 10.0), z_half=8, core=40, overlap=12)
    >>> len(p.regions), p.band[0] < -40 + 12 and p.band[1] > 40 - 12, p.local_shape[0]
    (6, True, 17)
    """
    ny, nx = (int(s) for s in shape)
    theta = np.asarray(theta_deg, dtype=float).reshape(-1)
    if theta.size == 0:
        raise ValueError("theta: no projections")
    if np.max(np.abs(theta)) >= 85.0:
        raise ValueError(f"theta: scanning AET needs |θ| < 85° (a film edge-on has no local rows), got "
                         f"{np.max(np.abs(theta)):.1f}°")
    core, overlap, pad = int(core), int(overlap), int(pad)
    if core < 4 or overlap < 0:
        raise ValueError(f"core, overlap: expected core ≥ 4 and overlap ≥ 0 voxels, got {core}, {overlap}")
    c, s = np.abs(np.cos(np.deg2rad(theta))), np.abs(np.sin(np.deg2rad(theta)))
    zh = int(math.ceil(z_half))
    zc = int(round(zc))
    half = (core + overlap) // 2
    rows_half = int(math.ceil(np.max(half * c + zh * s))) + pad
    volume_half = int(math.ceil(np.max((rows_half + zh * s) / c))) + 1
    # the outermost centres whose rows stay inside the image at every tilt
    limit = ny // 2 - 1 - rows_half
    uz = zc * np.sin(np.deg2rad(theta))
    y_hi = float(np.min((limit + uz) / c))
    y_lo = float(np.max((-limit + uz) / c))
    if y_hi < y_lo:
        raise ValueError(
            f"shape: images of {ny} rows are too small for regions of {core}+{overlap} voxels across a film "
            f"{2 * zh} voxels thick at up to {np.max(np.abs(theta)):.0f}°; use a smaller core or overlap")
    lo, hi = math.ceil(y_lo), math.floor(y_hi)
    if hi < lo:
        lo = hi = int(round(0.5 * (y_lo + y_hi)))
    count = max(1, math.ceil((hi - lo) / core) + 1)
    centres = np.linspace(lo, hi, count).round().astype(int)
    regions = []
    for i, yc in enumerate(centres):
        for j, (x0, x1) in enumerate(_axis_windows(nx, core, overlap)):
            regions.append(Region((i, j), int(yc), half, x0 - nx // 2, x1 - nx // 2))
    band = (int(centres[0]) - half, int(centres[-1]) + half + 1)
    return Plan(tuple(regions), (ny, nx), tuple(theta.tolist()), zc, zh, rows_half, volume_half, band)


def crop_rows(p: Plan, region: Region) -> tuple[np.ndarray, np.ndarray]:
    """First image row of each tilt's crop (int, into ``0..NY-1``) and the detector offset left over.

    With ``start`` rows and ``offset`` as the projector's ``det_offset``, a
    local voxel at (y', z') (from the region centre ``(yc, zc)``) lands on
    crop row ``y' cos θ − z' sin θ + H + offset``.
    """
    ny = p.shape[0]
    t = np.deg2rad(np.asarray(p.theta))
    uc = region.yc * np.cos(t) - p.zc * np.sin(t)
    first = ny // 2 + uc - p.rows_half
    start = np.round(first).astype(int)
    return start, first - start


def ramp(n: int, lo_overlap: float, hi_overlap: float) -> np.ndarray:
    """Weights along one axis of a window of ``n`` voxels: 0 → 1 across the low overlap, 1 → 0 across the high.

    >>> ramp(6, 0, 4).round(2).tolist()
    [1.0, 1.0, 0.8, 0.6, 0.4, 0.2]
    """
    i = np.arange(n, dtype=float)
    w = np.ones(n)
    if lo_overlap > 0:
        w = np.minimum(w, (i + 1) / (lo_overlap + 1))
    if hi_overlap > 0:
        w = np.minimum(w, (n - i) / (hi_overlap + 1))
    return w


def blend_weights(p: Plan) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per region, (weights over its y window, weights over its x window) before normalisation.

    Each ramp spans the overlap with the neighbouring region, so the weights
    fall towards zero where the neighbour's window ends: no hard cut.
    """
    ys = sorted({r.yc for r in p.regions})
    xs = sorted({(r.x0, r.x1) for r in p.regions})
    by_y = {r.yc: r.y_window for r in p.regions}
    out = []
    for r in p.regions:
        y0, y1 = r.y_window
        i = ys.index(r.yc)
        lo = by_y[ys[i - 1]][1] - y0 if i > 0 else 0
        hi = y1 - by_y[ys[i + 1]][0] if i + 1 < len(ys) else 0
        k = xs.index((r.x0, r.x1))
        xlo = xs[k - 1][1] - r.x0 if k > 0 else 0
        xhi = r.x1 - xs[k + 1][0] if k + 1 < len(xs) else 0
        out.append((ramp(y1 - y0, max(lo, 0), max(hi, 0)), ramp(r.x1 - r.x0, max(xlo, 0), max(xhi, 0))))
    return out
