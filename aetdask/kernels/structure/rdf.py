"""Radial distribution functions of finite particles (not periodic boxes).

A nanoparticle's pair-distance histogram falls off at large r simply because the
particle ends. Dividing by ``4πr²ρ dr`` (the periodic-box normalisation) would
read that fall-off as structure. Here the reference is the pair-distance
distribution of an *ideal gas in the same shape*, ``P_S(r)``: the probability
that two independent uniform points of the shape ``S`` lie ``r`` apart,

.. math::

    P_S(r)\\,dr = \\frac{4\\pi r^2 \\bar\\gamma(r)}{V^2}\\,dr, \\qquad
    \\gamma(\\mathbf v) = \\int 1_S(\\mathbf x)\\,1_S(\\mathbf x + \\mathbf v)\\,d^3x,

where ``γ̄`` is the spherical average of the set covariogram ``γ`` (computed by
FFT on a voxel mask of the shape). Then

.. math::

    g_{ab}(r) = \\frac{H_{ab}(r)}{N_{ab}\\,P_S(r)\\,\\Delta r},

with ``H_ab`` the pairs of species a, b in the shell and ``N_ab`` the number of such
pairs in the model (``N_a(N_a-1)/2`` or ``N_a N_b``). An ideal gas in any shape gives
``g = 1`` at every r; a periodic-box RDF is recovered for a large shape at small r.

The shape defaults to the convex hull of the atoms pushed out by half the median
nearest-neighbour distance (an atom's share of space reaches about half a bond
beyond its centre); a boolean mask can be given instead.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, cKDTree


def shell_edges(r_max: float, dr: float = 0.1) -> np.ndarray:
    """Shell edges ``0, dr, 2dr, ... ≤ r_max`` (Å).

    >>> shell_edges(0.5, 0.1).round(1).tolist()
    [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    """
    n = int(np.floor(r_max / dr + 1e-9))
    if n < 1:
        raise ValueError(f"r_max ({r_max}) must be at least one shell ({dr})")
    return np.arange(n + 1) * dr


def pair_counts(positions_a, positions_b, edges, *, same: bool) -> np.ndarray:
    """Pairs with distance in each shell ``[edges[k], edges[k+1])``.

    With ``same=True`` (``positions_b`` is ``positions_a``) unordered pairs of distinct
    atoms are counted; otherwise every (a, b) combination. ``positions_a`` may be a
    subset of query atoms (a spatial block's core) and ``positions_b`` that block with
    its halo: each pair is then counted from both ends (``same=False``).

    >>> p = np.array([[0.0, 0, 0], [1.05, 0, 0], [0, 2.05, 0]])
    >>> pair_counts(p, p, shell_edges(3.0, 1.0), same=True).tolist()
    [0, 1, 2]
    """
    a = np.asarray(positions_a, dtype=np.float64).reshape(-1, 3)
    b = np.asarray(positions_b, dtype=np.float64).reshape(-1, 3)
    edges = np.asarray(edges, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(edges) - 1, dtype=np.int64)
    # count_neighbors counts pairs with d <= r; shells are half-open [r_k, r_k+1)
    radii = np.nextafter(edges, -np.inf)
    cumulative = np.zeros(len(edges), dtype=np.int64)
    positive = radii >= 0  # count_neighbors is not meant for negative radii
    cumulative[positive] = cKDTree(a).count_neighbors(cKDTree(b), radii[positive])
    counts = np.diff(cumulative)
    if same:
        counts[0] -= len(a)  # an atom and itself, at d = 0
        counts //= 2
    return counts


def median_neighbor_distance(positions) -> float:
    """Median distance from each atom to its nearest neighbour (Å)."""
    pos = np.asarray(positions, dtype=np.float64)
    if len(pos) < 2:
        raise ValueError("need at least two atoms")
    d, _ = cKDTree(pos).query(pos, k=2)
    return float(np.median(d[:, 1]))


def hull_mask(positions, spacing: float, pad: float | None = None, margin: float = 0.0):
    """Voxel mask of the atoms' convex hull pushed out by ``pad`` Å: ``mask, origin``.

    ``origin`` is the corner of voxel (0, 0, 0); its centre is half a voxel further.

    ``pad`` defaults to half the median nearest-neighbour distance. ``margin`` adds
    empty voxels around the mask.
    """
    pos = np.asarray(positions, dtype=np.float64)
    if len(pos) < 5:
        raise ValueError("a convex-hull shape needs at least 5 atoms")
    if pad is None:
        pad = 0.5 * median_neighbor_distance(pos)
    try:
        hull = ConvexHull(pos)
    except Exception as exc:  # flat or degenerate point sets
        raise ValueError(f"the atoms span no volume ({type(exc).__name__}); give a shape mask") from None
    lo = pos.min(axis=0) - pad - margin
    hi = pos.max(axis=0) + pad + margin
    shape = tuple(int(v) for v in np.maximum(np.ceil((hi - lo) / spacing).astype(int), 1))
    # voxel k spans [lo + k·h, lo + (k+1)·h): sampling at its centre counts a box-shaped
    # hull exactly (corner sampling would add half a voxel on every face)
    axes = [lo[k] + spacing * (np.arange(shape[k]) + 0.5) for k in range(3)]
    normals, offsets = hull.equations[:, :3], hull.equations[:, 3]
    mask = np.empty(shape, dtype=bool)
    yy, xx = np.meshgrid(axes[1], axes[2], indexing="ij")
    plane = np.stack([np.zeros(yy.size), yy.ravel(), xx.ravel()], axis=1)
    base = plane[:, 1:] @ normals[:, 1:].T + offsets  # one plane's facet distances, less z
    for k, z in enumerate(axes[0]):  # one plane at a time keeps memory flat
        mask[k] = (np.max(base + z * normals[:, 0], axis=1) <= pad).reshape(yy.shape)
    return mask, lo


def shape_distance_distribution(mask, spacing: float, edges) -> tuple[np.ndarray, float]:
    """Probability of each shell for two uniform points of a voxel shape, and its volume.

    Returns ``p`` with ``p[k] = P(edges[k] ≤ |x1 − x2| < edges[k+1])`` and the volume
    ``V`` (Å³). The covariogram is computed by one zero-padded FFT autocorrelation,
    averaged over spheres in shells one voxel wide and interpolated to the shells.

    >>> m = np.ones((40, 40, 40), bool)  # a 20 Å cube at 0.5 Å
    >>> p, v = shape_distance_distribution(m, 0.5, shell_edges(40.0, 0.5))
    >>> round(v), round(float(p.sum()), 2)
    (8000, 1.0)
    """
    mask = np.asarray(mask, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    volume = float(mask.sum()) * spacing**3
    if volume <= 0:
        raise ValueError("the shape mask is empty")
    padded = [_fft_size(2 * s) for s in mask.shape]
    axes = (0, 1, 2)
    f = np.fft.rfftn(mask, s=padded, axes=axes)
    gamma = np.fft.irfftn(f * np.conj(f), s=padded, axes=axes) * spacing**3  # Å³, γ(0) = V
    freq = [np.fft.fftfreq(n, 1.0 / n) * spacing for n in padded]  # signed displacement (Å)
    r = np.sqrt(freq[0][:, None, None] ** 2 + freq[1][None, :, None] ** 2 + freq[2][None, None, : padded[2]] ** 2)
    r, gamma = r.ravel(), gamma.ravel()
    keep = r <= edges[-1] + 2 * spacing
    r, gamma = r[keep], gamma[keep]
    width = spacing
    bins = np.floor(r / width + 0.5).astype(int)  # shells centred on multiples of the spacing
    total = np.bincount(bins, weights=gamma)
    # the mean over a shell divides by *all* its lattice points, also those beyond the
    # padded grid (where γ = 0): count them, not the grid's
    count = _lattice_shell_counts(len(total))
    centres = np.arange(len(total)) * width
    gbar = np.interp(0.5 * (edges[:-1] + edges[1:]), centres, total / count)
    gbar = np.clip(gbar, 0.0, None)
    shell = 4.0 * np.pi / 3.0 * (edges[1:] ** 3 - edges[:-1] ** 3)
    return gbar * shell / volume**2, volume


def rdf(counts, n_pairs: float, p_shape) -> np.ndarray:
    """``g(r) = H(r) / (N_pairs · P_S(r))`` (NaN where the shape has no pair at that r)."""
    counts = np.asarray(counts, dtype=np.float64)
    expected = n_pairs * np.asarray(p_shape, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(expected > 0, counts / expected, np.nan)


def first_peak_and_valley(r, g, smooth: float = 0.15) -> tuple[float, float]:
    """Positions (Å) of the first peak of ``g`` and of the first minimum after it.

    ``g`` is lightly smoothed (Gaussian, ``smooth`` Å) so single-shell noise does not
    count as a peak. The first peak is the first local maximum above 1 and the valley
    the first minimum after it, each placed between shells by the parabola through its
    three samples.

    >>> r = np.arange(0.0, 8, 0.1)
    >>> g = 1 + 2 * np.exp(-((r - 2.5) / 0.2) ** 2) - 0.8 * np.exp(-((r - 3.5) / 0.3) ** 2)
    >>> g[r < 2] = 0
    >>> [round(v, 1) for v in first_peak_and_valley(r, g)]
    [2.5, 3.5]
    """
    r = np.asarray(r, dtype=np.float64)
    g = np.nan_to_num(np.asarray(g, dtype=np.float64))
    step = float(np.median(np.diff(r)))
    sigma = max(smooth / step, 1e-6)
    k = np.arange(-int(4 * sigma) - 1, int(4 * sigma) + 2)
    kernel = np.exp(-0.5 * (k / sigma) ** 2)
    kernel /= kernel.sum()
    gs = np.convolve(np.pad(g, len(k) // 2, mode="edge"), kernel, mode="valid")
    above = np.flatnonzero(gs > 1.0)
    if len(above) == 0:
        raise ValueError("g(r) never exceeds 1: no first peak (is r_max large enough?)")
    i = above[0]
    while i + 1 < len(gs) and gs[i + 1] >= gs[i]:
        i += 1
    peak = i
    j = peak
    while j + 1 < len(gs) and gs[j + 1] <= gs[j]:
        j += 1
    if j + 1 >= len(gs):
        raise ValueError("g(r) has no minimum after its first peak within r_max")
    return _vertex(r, gs, peak), _vertex(r, gs, j)


def _vertex(r, g, k: int) -> float:
    """Sub-shell position of the extremum at sample ``k``: vertex of the parabola through k−1, k, k+1."""
    if k == 0 or k + 1 >= len(g):
        return float(r[k])
    curvature = g[k - 1] - 2 * g[k] + g[k + 1]
    if curvature == 0:
        return float(r[k])
    offset = 0.5 * (g[k - 1] - g[k + 1]) / curvature
    return float(r[k] + np.clip(offset, -0.5, 0.5) * (r[k + 1] - r[k]))


def _lattice_shell_counts(n_shells: int) -> np.ndarray:
    """Integer points ``k`` of Z³ with ``s − ½ ≤ |k| < s + ½``, for ``s = 0 … n_shells−1``.

    >>> _lattice_shell_counts(3).tolist()
    [1, 18, 62]
    """
    k = np.arange(-n_shells, n_shells + 1, dtype=np.float64)
    kk = (k[:, None] ** 2 + k[None, :] ** 2).ravel()
    inside = np.empty(n_shells + 1, dtype=np.int64)  # points with |k| < s + ½ (no ties)
    inside[0] = 0
    for s in range(n_shells):
        rest = (s + 0.5) ** 2 - kk
        rest = rest[rest > 0]
        inside[s + 1] = int(np.sum(2 * np.floor(np.sqrt(rest)) + 1))
    return np.diff(inside)


def _fft_size(n: int) -> int:
    """Smallest 2^a·3^b·5^c ≥ n (fast FFT sizes)."""
    best = 1 << (int(n) - 1).bit_length()
    a = 1
    while a < 2 * n:
        b = a
        while b < 2 * n:
            c = b
            while c < 2 * n:
                if n <= c < best:
                    best = c
                c *= 5
            b *= 3
        a *= 2
    return best
