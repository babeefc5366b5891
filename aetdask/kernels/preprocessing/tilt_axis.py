"""The in-plane direction of the tilt axis of a single-axis tilt series, and the projection geometry that carries it.

A tilt about an axis in the image plane moves every point of the object perpendicular to that
axis only, so the projection of every image onto the axis — its *common line* — is the same at
every tilt, up to a shift along the axis. By the projection-slice theorem the common line's
Fourier transform is the central line of the image's 2-D transform along the axis's direction,
and its *magnitude* does not depend on the shift at all. :func:`estimate_tilt_axis` finds the
direction along which these magnitudes agree across the series:

1. For a trial direction ``a`` the transform of every image is evaluated on the central line
   ``(u cos a, u sin a)`` by an exact (non-uniform) discrete Fourier sum — no interpolation or
   binning, whose pixel grid would favour some directions (:func:`line_spectra`); each line's
   magnitude is divided by the image's scale, its total freed of photon noise (:func:`image_scales`;
   per-projection dose does not matter).
2. The disagreement is the spread of the magnitudes across the series, summed over frequency
   (:func:`line_disagreement`). Photon noise adds a spread too, but white noise is isotropic:
   the same at every direction, so it does not move the minimum.
3. A grid over ±90° (``step``), then a bounded scalar search around the best grid point; the
   standard error from the spread of the same search on four interleaved quarters of the series.

Angles are in degrees, measured from the image x axis (columns) towards +y (rows), about the
pixel ``(ny // 2, nx // 2)``. The images are never resampled: :func:`turned_angles` gives the
Euler angles (φ, θ, ψ) of each projection whose detector is turned by the axis's direction
(:mod:`aetdask.geometry`), which every projector handles; :func:`rotate_from_x` and
:func:`rotate_to_x` turn images (for simulating a turned series, and for figures).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, optimize

from aetdask.backend import asnumpy

__all__ = ["line_spectra", "line_disagreement", "image_scales", "estimate_tilt_axis", "turned_angles", "axis_frame",
           "rotate_to_x", "rotate_from_x"]


def _stack(stack):
    s = np.asarray(asnumpy(stack), dtype=np.float64)
    if s.ndim != 3:
        raise ValueError(f"tilt axis: need a stack (n, ny, nx), got shape {s.shape}")
    return s


def _frequencies(shape, highest):
    """Frequencies (cycles per pixel) sampled on the central line: 1/n … ``highest`` of Nyquist, n = max(ny, nx)."""
    n = max(shape)
    return np.arange(1, int(highest * n / 2) + 1) / n


def line_spectra(stack, angle, freqs):
    """Fourier transforms (n, len(freqs)) of the images on the central line at ``angle`` (degrees,
    x towards +y), about the pixel ``(ny//2, nx//2)``: ``F(u) = Σ I(y, x) exp(−2πi u (x cos a + y sin a))``.

    >>> img = np.zeros((1, 9, 9)); img[0, 4, 6] = 1.0
    >>> f = line_spectra(img, 0.0, np.array([0.25]))
    >>> bool(np.allclose(f, np.exp(-2j * np.pi * 0.25 * 2)))
    True
    """
    s = _stack(stack)
    _, ny, nx = s.shape
    a = np.deg2rad(float(angle))
    u = np.asarray(freqs, dtype=float)
    ex = np.exp(-2j * np.pi * np.outer(np.arange(nx) - nx // 2, u) * np.cos(a))  # (nx, nu)
    ey = np.exp(-2j * np.pi * np.outer(np.arange(ny) - ny // 2, u) * np.sin(a))  # (ny, nu)
    g = s @ ex  # (n, ny, nu)
    return np.einsum("kyu,yu->ku", g, ey)


def line_disagreement(stack, angle, freqs, totals=None, noise_power=None):
    """How much the images' central-line power spectra at ``angle`` differ across the series: the sum
    over frequency of the variance across projections of ``|S_k(u)|²/T_k²`` (``S`` the noise-free
    transform, ``T`` the image's total), estimated without bias from the noise.

    With white noise of power ``N_k = Σ var`` (``noise_power``, per projection) on each image,
    ``|F|² − N`` is an unbiased estimate of ``|S|²``, ``|F|⁴ − 4|F|²N + 2N²`` of ``|S|⁴``, and a
    product of two different projections' ``|F|² − N`` of the product of their ``|S|²``: the
    variance is built from these, so the noise, whatever its level relative to the signal at a
    given direction, adds nothing to it on average (a plain variance of ``|F|`` has a noise part
    that depends on the signal there, and would pull the minimum).
    """
    s = _stack(stack)
    n = len(s)
    t = s.sum(axis=(1, 2)) if totals is None else np.asarray(totals, dtype=float)
    t = np.where(np.abs(t) > 0, t, 1.0)
    noise = np.zeros(n) if noise_power is None else np.asarray(noise_power, dtype=float)
    f2 = np.abs(line_spectra(s, angle, freqs)) ** 2 / t[:, None] ** 2
    nn = (noise / t**2)[:, None]
    p = f2 - nn  # unbiased |S|²
    q = f2**2 - 4.0 * f2 * nn + 2.0 * nn**2  # unbiased |S|⁴
    if n < 2:
        return 0.0
    cross = (p.sum(axis=0) ** 2 - (p**2).sum(axis=0)) / (n * (n - 1))
    return float(np.sum(q.mean(axis=0) - cross))


def image_scales(stack, noise_power=None):
    """Each image's scale (its total, the dose times the object's scattering), freed of its photon noise.

    A projection's total is the same at every tilt (the object scatters the same fraction of the
    beam whatever its orientation), so the totals differ only by the dose and by their noise,
    ``noise_power`` (the summed pixel variance: for counts, the sum of the counts, background
    included). Divided by its noisy total, an image's central line carries that noise at every
    frequency in proportion to its power: at the lowest frequencies, where the particle's envelope
    puts nearly all the power and its width differs between directions, this noise is larger in
    some directions than in others and pulls the minimum of the comparison towards them. The totals
    are therefore shrunk towards their mean by the fraction of their spread that is noise (the best
    linear predictor of the noise-free totals): noise alone gives the mean, a real dose drift well
    above the noise is kept.

    Parameters
    ----------
    stack : (n, ny, nx) array
        Background-free projections.
    noise_power : (n,) array, optional
        Each image's summed pixel noise variance; None = noise-free (the totals as they are).

    Returns
    -------
    (n,) array
        The scales, the mean total where the totals scatter no more than their noise.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> counts = rng.poisson(2.0, (30, 16, 16)).astype(float)
    >>> totals = counts.sum(axis=(1, 2))
    >>> bool(np.ptp(image_scales(counts, totals)) < 0.5 * np.ptp(totals))  # mostly noise: shrunk
    True
    >>> drift = counts * np.linspace(1.0, 3.0, 30)[:, None, None]  # a dose drift well above the noise
    >>> bool(np.ptp(image_scales(drift, drift.sum(axis=(1, 2)))) > 0.95 * np.ptp(drift.sum(axis=(1, 2))))
    True
    """
    s = _stack(stack)
    t = s.sum(axis=(1, 2))
    if noise_power is None or len(t) < 3:
        return t
    noise = np.clip(np.asarray(noise_power, dtype=float), 0.0, None)
    real = max(0.0, float(np.var(t, ddof=1) - noise.mean()))
    keep = real / (real + noise) if real > 0 else np.zeros_like(t)
    return t.mean() + keep * (t - t.mean())


def estimate_tilt_axis(stack, noise_power=None, *, step=2.0, highest=0.5, blur=0.0):
    """The tilt axis's direction (degrees, in [−90, 90)) and its standard error, from the images alone.

    Parameters
    ----------
    stack : (n, ny, nx) array
        Background-free projections (vacuum ≈ 0), any shifts, at least 2 of them.
    noise_power : (n,) array, optional
        Each image's summed pixel noise variance (for counts: the sum of the counts), so that the
        noise adds nothing to the comparison (:func:`line_disagreement`); None = noise-free.
    step : float
        Grid step (degrees) of the coarse search over ±90°.
    highest : float
        Highest frequency compared, as a fraction of Nyquist.
    blur : float
        Optional Gaussian blur (px) of the images first.

    Returns
    -------
    angle, se : float
        Direction of the axis from x towards +y (degrees) and its standard error from four
        interleaved quarters of the series (NaN with fewer than 8 projections).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> pts = rng.normal(0, 6, (40, 3))
    >>> yy, xx = np.mgrid[:48, :48]
    >>> def proj(t):
    ...     c, s = np.cos(np.deg2rad(t)), np.sin(np.deg2rad(t))
    ...     y = c * pts[:, 1] - s * pts[:, 2]
    ...     return sum(np.exp(-((yy - 24 - py) ** 2 + (xx - 24 - px) ** 2) / 4.0) for py, px in zip(y, pts[:, 0]))
    >>> stack = np.stack([proj(t) for t in range(0, 180, 6)])
    >>> round(abs(estimate_tilt_axis(stack)[0]), 1)
    0.0
    """
    s = _stack(stack)
    if blur:
        s = ndimage.gaussian_filter(s, (0, blur, blur))
    n = len(s)
    if n < 2:
        raise ValueError("estimate_tilt_axis: need at least 2 projections")
    noise = np.zeros(n) if noise_power is None else np.asarray(noise_power, dtype=float)
    totals = image_scales(s, noise)
    freqs = _frequencies(s.shape[1:], highest)
    coarse = freqs[: max(4, len(freqs) // 2)]
    grid = np.arange(-90.0, 90.0, float(step))
    scores = [line_disagreement(s, g, coarse, totals, noise) for g in grid]
    g0 = float(grid[int(np.argmin(scores))])

    def best(idx, centre, half):
        res = optimize.minimize_scalar(lambda a: line_disagreement(s[idx], a, freqs, totals[idx], noise[idx]),
                                       bounds=(centre - half, centre + half), method="bounded",
                                       options={"xatol": 1e-3})
        return float(res.x)

    angle = best(np.arange(n), g0, step)
    se = float("nan")
    if n >= 8:
        quarters = [best(np.arange(q, n, 4), angle, max(float(step), 5.0)) for q in range(4)]
        se = float(np.std(quarters, ddof=1) / 2.0)
    angle = (angle + 90.0) % 180.0 - 90.0
    return angle, se


def axis_frame(angle):
    """Unit vectors ``(along, across)`` of a tilt axis at ``angle`` degrees, each as image ``(y, x)``
    components: ``along`` points along the axis, ``across`` along the detector's y of the turned geometry.

    >>> [v.round(3).tolist() for v in axis_frame(90.0)]
    [[1.0, 0.0], [0.0, -1.0]]
    """
    a = np.deg2rad(float(angle))
    return np.array([np.sin(a), np.cos(a)]), np.array([np.cos(a), -np.sin(a)])


def _rot(axis, a):
    c, s = np.cos(a), np.sin(a)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(3)
    r[i, i] = r[j, j] = c
    r[i, j], r[j, i] = -s, s
    return r


def turned_angles(angles, angle):
    """Euler angles (n, 3) (φ, θ, ψ), degrees, of projections whose detector is turned so that the
    tilt axis (the sample's x, :mod:`aetdask.geometry`) lies at ``angle`` degrees in the image.

    A point at detector ``(x_det, y_det)`` of the given geometry then lands at image
    ``(x, y) = (x_det cos a − y_det sin a, x_det sin a + y_det cos a)``. Of the two Euler triples
    of each rotation the one whose θ is nearest the given θ is returned (θ keeps its meaning).

    >>> from aetdask.geometry import detector_coordinates
    >>> e = turned_angles([[0.0, 40.0, 0.0]], 30.0)
    >>> yx = detector_coordinates([[1.0, 0.0, 0.0]], e)[0, 0]  # a point on the tilt axis
    >>> np.degrees(np.arctan2(yx[0], yx[1])).round(6)
    np.float64(30.0)
    """
    from aetdask.geometry import projection_matrices

    e = np.asarray(angles, dtype=float).reshape(-1, 3)  # (φ, θ, ψ) rows, degrees
    a = np.deg2rad(float(angle))
    q = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    swap = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    out = np.empty_like(e)
    for k, m in enumerate(q @ projection_matrices(e)):
        r = (swap @ m @ swap).T  # A = P Rᵀ P  →  R = (P A P)ᵀ, R = Rz(φ) Ry(θ) Rx(ψ)
        t0 = np.arcsin(np.clip(-r[2, 0], -1.0, 1.0))
        best = None
        for t in (t0, np.pi - t0):
            c = np.cos(t)
            if abs(c) < 1e-12:
                phi, psi = np.arctan2(-r[0, 1], r[1, 1]), 0.0
            else:
                phi, psi = np.arctan2(r[1, 0] / c, r[0, 0] / c), np.arctan2(r[2, 1] / c, r[2, 2] / c)
            cand = np.rad2deg([phi, t, psi])
            cand[1] = e[k, 1] + ((cand[1] - e[k, 1] + 180.0) % 360.0 - 180.0)
            if best is None or abs(cand[1] - e[k, 1]) < abs(best[1] - e[k, 1]):
                best = cand
        out[k] = best
    return out


def _rotate(stack, angle, mode, cval):
    s = _stack(stack)
    n, ny, nx = s.shape
    a = np.deg2rad(float(angle))
    c, si = np.cos(a), np.sin(a)
    yy, xx = np.mgrid[:ny, :nx].astype(float)
    dy, dx = yy - ny // 2, xx - nx // 2
    src = [-si * dx + c * dy + ny // 2, c * dx + si * dy + nx // 2]
    return np.stack([ndimage.map_coordinates(img, src, order=3, mode=mode, cval=cval) for img in s])


def rotate_from_x(stack, angle, *, mode="constant", cval=0.0):
    """Rotate images by ``angle`` degrees (x towards +y) about ``(ny//2, nx//2)``: a line along x
    ends at ``angle`` (cubic spline; outside the field ``mode``/``cval`` as in
    :func:`scipy.ndimage.map_coordinates`)."""
    return _rotate(stack, angle, mode, cval)


def rotate_to_x(stack, angle, *, mode="constant", cval=0.0):
    """Rotate images so that a tilt axis at ``angle`` degrees (x towards +y) lies along x.

    >>> img = np.zeros((1, 17, 17)); img[0, 8, 8:14] = 1.0  # a line along x
    >>> tilted = rotate_from_x(img, 30.0)
    >>> bool(np.abs(rotate_to_x(tilted, 30.0) - img).max() < 0.35)
    True
    """
    return _rotate(stack, -float(angle), mode, cval)
