"""Atom tracing kernels: local maxima, polynomial peak fits, minimum-distance merge.

The seed paper's tracing oversamples the volume ×3 with a cubic spline, fits a
4th-order 3-D polynomial with a Gaussian weight in a 7×7×7 window of the
oversampled grid around each local maximum and steps to the polynomial's
maximum, repeating until the window stops moving. Here the oversampled volume
is never built: the spline is evaluated only on the window (that *is* the ×3
oversampled volume there), the window is re-centred on the current estimate
and the least-squares fit is one fixed matrix product, so thousands of
candidates are fitted per second, all at once.

Positions are in voxel index units ``(k, i, j)`` of a ``(z, y, x)`` volume.
"""

from __future__ import annotations

import itertools
import math

import numba
import numpy as np
from scipy import ndimage
from scipy.signal import fftconvolve


def spline_coefficients(volume, order: int = 3) -> np.ndarray:
    """B-spline coefficients of a volume (mirror boundary), for :func:`fit_peaks`."""
    return ndimage.spline_filter(np.asarray(volume, dtype=np.float64), order=order, mode="mirror")


def local_maxima(volume, threshold: float = 0.0) -> np.ndarray:
    """Voxels not smaller than their 6 face neighbours and above ``threshold``, shape (n, 3), int.

    Plateaus give one voxel each (the first in index order).

    >>> v = np.zeros((5, 5, 5)); v[2, 1, 3] = 1.0; v[1, 3, 3] = 0.5
    >>> local_maxima(v).tolist()
    [[1, 3, 3], [2, 1, 3]]
    """
    v = np.asarray(volume)
    footprint = ndimage.generate_binary_structure(3, 1)
    peak = (v >= ndimage.maximum_filter(v, footprint=footprint, mode="constant", cval=-np.inf)) & (v > threshold)
    labels, n = ndimage.label(peak, structure=footprint)
    if n == 0:
        return np.empty((0, 3), dtype=int)
    index = np.flatnonzero(labels)
    first = np.unique(labels.ravel()[index], return_index=True)[1]
    return np.stack(np.unravel_index(index[first], v.shape), axis=1).astype(int)


def _exponents(order: int) -> np.ndarray:
    return np.array([e for e in itertools.product(range(order + 1), repeat=3) if sum(e) <= order], dtype=int)


def fit_operator(window: int = 7, oversample: int = 3, sigma: float = 3.0, order: int = 4):
    """The weighted least-squares polynomial fit on a window, as one matrix.

    Returns
    -------
    offsets : (window³, 3)
        Sample offsets from the window centre, in voxels (steps of 1/oversample).
    operator : (terms, window³)
        Maps the samples to the coefficients of ``Σ c·u^a v^b w^c`` (u, v, w in voxels).
    exponents : (terms, 3)
    """
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window: expected an odd number ≥ 3, got {window!r}")
    h = window // 2
    steps = (np.arange(window) - h) / oversample
    offsets = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), axis=-1).reshape(-1, 3)
    exps = _exponents(order)
    design = np.prod(offsets[:, None, :] ** exps[None, :, :], axis=2)  # (samples, terms)
    w = np.exp(-np.sum((offsets * oversample) ** 2, axis=1) / (2.0 * sigma**2))
    sw = np.sqrt(w)
    operator = np.linalg.pinv(design * sw[:, None]) * sw[None, :]
    return offsets, operator, exps


_DERIVS = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1),
           (2, 0, 0), (1, 1, 0), (1, 0, 1), (0, 2, 0), (0, 1, 1), (0, 0, 2))


def _derivative_operators(exps) -> np.ndarray:
    """(10, terms, terms): coefficients of the polynomial's value, gradient and Hessian entries."""
    where = {tuple(e): k for k, e in enumerate(exps.tolist())}
    out = np.zeros((len(_DERIVS), len(exps), len(exps)))
    for d_i, d in enumerate(_DERIVS):
        for t, e in enumerate(exps.tolist()):
            lowered = tuple(a - b for a, b in zip(e, d))
            if min(lowered) < 0:
                continue
            fac = 1.0
            for a, b in zip(e, d):
                for k in range(b):
                    fac *= a - k
            out[d_i, t, where[lowered]] = fac
    return out


def _poly_derivatives(dcoef, exps, u):
    """Value, gradient (n, 3) and Hessian (n, 3, 3) at local points u (n, 3); ``dcoef`` (n, 10, terms)."""
    top = int(exps.max())
    pw = np.ones((len(u), 3, top + 1))
    for p in range(1, top + 1):
        pw[:, :, p] = pw[:, :, p - 1] * u
    mono = pw[:, 0, exps[:, 0]] * pw[:, 1, exps[:, 1]] * pw[:, 2, exps[:, 2]]  # (n, terms)
    d = np.matmul(dcoef, mono[:, :, None])[:, :, 0]
    hess = d[:, [[4, 5, 6], [5, 7, 8], [6, 8, 9]]]
    return d[:, 0], d[:, 1:4], hess


@numba.njit(inline="always", cache=True)
def _bspline3_at(t):
    a = abs(t)
    if a < 1.0:
        return 2.0 / 3.0 - a * a + 0.5 * a * a * a
    if a < 2.0:
        return (2.0 - a) ** 3 / 6.0
    return 0.0


@numba.njit(inline="always", cache=True)
def _mirror_at(index, n):
    if n == 1:
        return 0
    period = 2 * n - 2
    index = abs(index) % period
    return period - index if index >= n else index


@numba.njit(parallel=True, cache=True)
def _window_samples(c, centers, steps, first, k):
    n, m = centers.shape[0], steps.shape[0]
    out = np.empty((n, m, m, m))
    for q in numba.prange(n):
        w = np.empty((3, m, k))
        idx = np.empty((3, k), dtype=np.int64)
        for ax in range(3):
            base = math.floor(centers[q, ax])
            frac = centers[q, ax] - base
            for s in range(k):
                idx[ax, s] = _mirror_at(int(base) + first + s, c.shape[ax])
                for a in range(m):
                    w[ax, a, s] = _bspline3_at(frac + steps[a] - (first + s))
        # separable: one axis at a time
        one = np.zeros((m, k, k))
        for i in range(k):
            for j in range(k):
                for l in range(k):
                    v = c[idx[0, i], idx[1, j], idx[2, l]]
                    for a in range(m):
                        one[a, j, l] += w[0, a, i] * v
        two = np.zeros((m, m, k))
        for a in range(m):
            for j in range(k):
                for b in range(m):
                    wb = w[1, b, j]
                    for l in range(k):
                        two[a, b, l] += wb * one[a, j, l]
        for a in range(m):
            for b in range(m):
                for cc in range(m):
                    acc = 0.0
                    for l in range(k):
                        acc += w[2, cc, l] * two[a, b, l]
                    out[q, a, b, cc] = acc
    return out


def window_samples(coefficients, centers, steps):
    """The cubic spline at the grid ``center + steps ⊗ steps ⊗ steps`` around each centre, (n, m, m, m).

    Separable: for every centre, one block of coefficients and one weight
    matrix per axis, the same numbers as ``map_coordinates(order=3,
    mode="mirror", prefilter=False)`` at those points.
    """
    c = np.ascontiguousarray(coefficients, dtype=np.float64)
    centers = np.ascontiguousarray(np.asarray(centers, dtype=np.float64).reshape(-1, 3))
    steps = np.ascontiguousarray(steps, dtype=np.float64)
    first = int(np.floor(steps.min())) - 1  # the coefficient offsets that can contribute: first … first + k − 1
    k = int(np.ceil(steps.max())) + 3 - first
    return _window_samples(c, centers, steps, first, k)


def fit_peaks(
    coefficients,
    start,
    *,
    window: int = 7,
    oversample: int = 3,
    sigma: float = 3.0,
    order: int = 4,
    max_iterations: int = 50,
    tolerance: float = 1e-3,
    max_shift: float = 3.0,
):
    """Sub-voxel peak positions by iterated polynomial fits on the spline-oversampled volume.

    Parameters
    ----------
    coefficients : (nz, ny, nx)
        Spline coefficients (:func:`spline_coefficients`).
    start : (n, 3)
        Starting positions (voxel indices, e.g. :func:`local_maxima`).
    window, oversample, sigma, order
        Fit window (oversampled voxels per side), oversampling factor, Gaussian
        weight (oversampled voxels) and polynomial order: the seed paper's
        7, 3, 3 and 4.
    max_shift : float
        A candidate whose estimate leaves this many voxels from its start is
        not a peak of its own and is dropped.

    Returns
    -------
    positions : (n, 3) float, voxel units
    peak : (n,) the fitted polynomial's value at the position
    ok : (n,) bool, converged, stayed within ``max_shift`` and inside the volume
    """
    c = np.asarray(coefficients, dtype=np.float64)
    start = np.asarray(start, dtype=np.float64).reshape(-1, 3)
    offsets, op, exps = fit_operator(window, oversample, sigma, order)
    steps = (np.arange(window) - window // 2) / oversample
    dops = _derivative_operators(exps)
    flat_dops = dops.transpose(1, 0, 2).reshape(len(exps), -1)  # (terms, 10 · terms)
    half = (window // 2) / oversample
    pos = start.copy()
    peak = np.zeros(len(pos))
    ok = np.ones(len(pos), dtype=bool)
    active = np.ones(len(pos), dtype=bool)
    damping = np.ones(len(pos))  # halved whenever a candidate's step reverses (window re-centring can oscillate)
    previous = np.zeros_like(pos)
    upper = np.array(c.shape, dtype=float) - 1.0
    for _ in range(max_iterations):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        coef = window_samples(c, pos[idx], steps).reshape(len(idx), -1) @ op.T
        coef = (coef @ flat_dops).reshape(len(idx), len(dops), -1)  # (n, 10, terms): one matrix product
        step = np.zeros((len(idx), 3))
        moving = np.ones(len(idx), dtype=bool)
        for _newton in range(8):  # maximise each fitted polynomial inside its window
            m = np.flatnonzero(moving)
            if m.size == 0:
                break
            _, g, h = _poly_derivatives(coef[m], exps, step[m])
            concave = np.linalg.eigvalsh(h)[:, -1] < 0
            delta = np.zeros((m.size, 3))
            if concave.any():
                delta[concave] = -np.linalg.solve(h[concave], g[concave][..., None])[..., 0]
            if (~concave).any():  # not a maximum here: climb the gradient by a bounded step
                gn = g[~concave]
                delta[~concave] = 0.5 * half * gn / np.maximum(np.linalg.norm(gn, axis=1, keepdims=True), 1e-300)
            step[m] = np.clip(step[m] + delta, -half, half)
            moving[m[np.all(np.abs(delta) < tolerance, axis=1)]] = False
        value = _poly_derivatives(coef, exps, step)[0]
        reverse = np.sum(step * previous[idx], axis=1) < 0
        damping[idx[reverse]] *= 0.5
        step = step * damping[idx, None]
        previous[idx] = step
        pos[idx] += step
        peak[idx] = value
        moved = np.max(np.abs(step), axis=1)
        gone = (np.max(np.abs(pos[idx] - start[idx]), axis=1) > max_shift) | np.any(
            (pos[idx] < 0) | (pos[idx] > upper), axis=1)
        ok[idx[gone]] = False
        active[idx[(moved < tolerance) | gone]] = False
    ok &= ~active  # never converged
    return pos, peak, ok


def merge(positions, strength, min_distance: float) -> np.ndarray:
    """Greedy minimum-distance merge: keep candidates in descending ``strength``, dropping any
    within ``min_distance`` of one already kept. Returns the kept indices (descending strength).

    >>> merge(np.array([[0, 0, 0], [0, 0, 1.0], [0, 0, 3.0]]), np.array([1.0, 2.0, 0.5]), 1.5).tolist()
    [1, 2]
    """
    pos = np.ascontiguousarray(np.asarray(positions, dtype=np.float64).reshape(-1, 3))
    order = np.lexsort((np.arange(len(pos)), -np.asarray(strength, dtype=float)))  # ties: lower index first
    if len(pos) == 0:
        return np.empty(0, dtype=int)
    d = float(min_distance)
    if not d > 0:  # only candidates at the very same place merge
        _, first = np.unique(pos[order], axis=0, return_index=True)
        return order[np.sort(first)]
    if not np.all(np.isfinite(pos)):
        raise ValueError("merge: positions must be finite")
    kept = _greedy_keep(pos, order.astype(np.int64), d)
    return order[kept[order]]


@numba.njit(cache=True)
def _greedy_keep(pos, order, d):
    """In ``order``, keep each candidate with no kept one within ``d``: the kept ones are filed in cells of
    side ``d`` (a hash of cell → last kept, chained), so each test looks at the 27 cells around it."""
    n = len(pos)
    kept = np.zeros(n, dtype=np.bool_)
    chain = np.full(n, -1, dtype=np.int64)
    heads = numba.typed.Dict.empty(key_type=numba.types.int64, value_type=numba.types.int64)
    lo = np.empty(3)
    for a in range(3):
        lo[a] = pos[:, a].min()
    d2 = d * d
    for r in range(len(order)):
        i = order[r]
        cx = int(math.floor((pos[i, 0] - lo[0]) / d)) + 1
        cy = int(math.floor((pos[i, 1] - lo[1]) / d)) + 1
        cz = int(math.floor((pos[i, 2] - lo[2]) / d)) + 1
        free = True
        for ax in range(cx - 1, cx + 2):
            for ay in range(cy - 1, cy + 2):
                for az in range(cz - 1, cz + 2):
                    key = (ax * 2097152 + ay) * 2097152 + az
                    j = heads[key] if key in heads else -1
                    while j >= 0:
                        dd = ((pos[i, 0] - pos[j, 0]) ** 2 + (pos[i, 1] - pos[j, 1]) ** 2
                              + (pos[i, 2] - pos[j, 2]) ** 2)
                        if dd <= d2:
                            free = False
                            break
                        j = chain[j]
                    if not free:
                        break
                if not free:
                    break
            if not free:
                break
        if free:
            kept[i] = True
            key = (cx * 2097152 + cy) * 2097152 + cz
            chain[i] = heads[key] if key in heads else -1
            heads[key] = i
    return kept


@numba.njit(cache=True)
def _nearest_squared(idx, shape, r2, reach):
    out = np.full((shape[0], shape[1], shape[2]), r2 + 1, dtype=np.int64)
    for a in range(idx.shape[0]):
        k0, i0, j0 = idx[a, 0], idx[a, 1], idx[a, 2]
        for k in range(max(0, k0 - reach), min(shape[0], k0 + reach + 1)):
            dk = (k - k0) * (k - k0)
            for i in range(max(0, i0 - reach), min(shape[1], i0 + reach + 1)):
                dki = dk + (i - i0) * (i - i0)
                if dki > r2:
                    continue
                for j in range(max(0, j0 - reach), min(shape[2], j0 + reach + 1)):
                    d = dki + (j - j0) * (j - j0)
                    if d < out[k, i, j]:
                        out[k, i, j] = d
    return out


def nearest_distance(indices, shape, reach: float, spacing: float = 1.0) -> np.ndarray:
    """Distance from every point of a grid of ``shape`` to the nearest of the grid points ``indices``
    (n, 3), times ``spacing``, where it is at most ``reach`` (same unit); ``inf`` beyond.

    The Euclidean distance transform of the grid with the points as its zeros, but only as far as
    ``reach``: each point paints the ball around it, so the work is the points' balls, not the grid.

    >>> d = nearest_distance(np.array([[0, 0, 0]]), (1, 1, 4), 2.5, spacing=0.5)
    >>> d.tolist()
    [[[0.0, 0.5, 1.0, 1.5]]]
    >>> bool(np.isinf(nearest_distance(np.array([[0, 0, 0]]), (1, 1, 4), 1.0)[0, 0, 3]))
    True
    """
    shape = tuple(int(v) for v in shape)
    r2 = int(math.floor((reach / spacing) ** 2 + 1e-9))  # the largest squared grid distance within reach
    squared = _nearest_squared(np.ascontiguousarray(indices, dtype=np.int64).reshape(-1, 3),
                               np.array(shape, dtype=np.int64), r2, math.isqrt(r2))
    out = spacing * np.sqrt(squared.astype(np.float64))
    out[squared > r2] = np.inf
    return out


def ball_sums(volume, positions, radius: float) -> np.ndarray:
    """Integrated intensity in a ball of ``radius`` voxels around each position.

    The volume is convolved once with the ball (voxel centres within
    ``radius``) and the result interpolated (trilinear) at the positions.

    >>> v = np.zeros((9, 9, 9)); v[4, 4, 4] = 2.0; v[4, 4, 5] = 1.0
    >>> ball_sums(v, [[4, 4, 4], [4, 4, 7]], 1.0).round(9).tolist()
    [3.0, 0.0]
    """
    v = np.asarray(volume, dtype=np.float64)
    r = int(np.floor(radius))
    g = np.arange(-r, r + 1)
    ball = (g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2 <= radius**2).astype(float)
    summed = fftconvolve(v, ball, mode="same")
    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    return ndimage.map_coordinates(summed, pos.T, order=1, mode="nearest")


def matched_filter(volume, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Correlate a volume with the atom's profile in it, a 3-D Gaussian of ``sigma`` voxels (0: unchanged).

    The textbook detector of a blob of known shape in noise: each voxel becomes
    the least-squares amplitude of an atom centred there, so a noise fluctuation
    narrower than an atom is averaged away while an atom keeps its peak (now
    √2 × wider). ``mode="mirror"`` as :func:`spline_coefficients`; the result at
    a voxel depends on the volume within ``truncate × sigma`` of it.

    >>> v = np.zeros((13, 13, 13)); v[6, 6, 6] = 1.0
    >>> f = matched_filter(v, 1.0); round(float(f.sum()), 6), [int(i) for i in np.unravel_index(f.argmax(), f.shape)]
    (1.0, [6, 6, 6])
    """
    v = np.asarray(volume, dtype=np.float64)
    if sigma <= 0:
        return v
    return ndimage.gaussian_filter(v, float(sigma), mode="mirror", truncate=truncate)


def _two_means(values, iterations: int = 100):
    """Threshold splitting 1-D ``values`` into two K-means classes (Lloyd, started at the median)."""
    x = np.asarray(values, dtype=float)
    t = float(np.median(x))
    for _ in range(iterations):
        lo, hi = x[x <= t], x[x > t]
        if len(lo) == 0 or len(hi) == 0:
            break
        new = 0.5 * (lo.mean() + hi.mean())
        if new == t:
            break
        t = new
    return t


def radial_profile(volume, positions, radius: float, bin_width: float = 0.25):
    """Mean of the volume against the distance from the given sub-voxel positions, out to ``radius`` voxels.

    Returns the bin centres (voxels) and the mean value in each bin (NaN where empty).
    """
    v = np.asarray(volume, dtype=np.float64)
    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    r = int(np.ceil(radius)) + 1
    g = np.arange(-r, r + 1)
    offs = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
    base = np.rint(pos).astype(int)
    inside = np.all((base - r >= 0) & (base + r < np.array(v.shape)), axis=1)
    base, pos = base[inside], pos[inside]
    edges = np.arange(0.0, radius + bin_width, bin_width)
    total, count = np.zeros(len(edges) - 1), np.zeros(len(edges) - 1)
    for start in range(0, len(base), 4096):  # bounded memory
        b, p = base[start:start + 4096], pos[start:start + 4096]
        idx = b[:, None, :] + offs[None]
        dist = np.linalg.norm(idx - p[:, None, :], axis=2).ravel()
        vals = v[idx[..., 0], idx[..., 1], idx[..., 2]].ravel()
        sel = dist < edges[-1]
        k = np.digitize(dist[sel], edges) - 1
        total += np.bincount(k, vals[sel], len(total))
        count += np.bincount(k, None, len(total))
    with np.errstate(invalid="ignore"):
        return 0.5 * (edges[1:] + edges[:-1]), total / count


def gaussian_width(r, profile) -> float:
    """Standard deviation of ``a·exp(−r²/2s²) + c`` fitted to a radial profile (least squares over s, a, c)."""
    r, y = np.asarray(r, float), np.asarray(profile, float)
    ok = np.isfinite(y)
    r, y = r[ok], y[ok]
    best, width = np.inf, float("nan")
    for s in np.geomspace(0.2, max(r.max(), 0.4), 400):
        a = np.column_stack([np.exp(-r**2 / (2 * s**2)), np.ones_like(r)])
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        cost = float(np.sum((a @ coef - y) ** 2))
        if coef[0] > 0 and cost < best:
            best, width = cost, float(s)
    return width
