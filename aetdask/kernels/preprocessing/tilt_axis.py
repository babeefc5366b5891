"""The in-plane direction of the tilt axis of a single-axis tilt series, and the projection geometry that carries it.

A tilt about an axis in the image plane moves every point of the object perpendicular to that
axis only, so the projection of every image onto the axis — its *common line* — is the same at
every tilt, up to a shift along the axis (the projection's misalignment). By the projection-slice
theorem the common line's Fourier transform is the central line of the image's 2-D transform along
the axis's direction. :func:`estimate_tilt_axis` finds the direction along which these lines agree:

1. For a trial direction ``a`` the transform of every image is evaluated on the central line
   ``(u cos a, u sin a)`` by an exact (non-uniform) discrete Fourier sum — no interpolation, whose
   pixel grid would favour some directions (:func:`line_spectra`) — and divided by the image's
   scale, its total freed of photon noise (:func:`image_scales`; per-projection dose does not matter).
2. The lines are compared with their phases, not only their magnitudes: each projection's shift
   along the axis is fitted (to the mean line of the *other* projections, so that its own noise does
   not align it to itself), and the misfit is the weighted sum of squares of the aligned lines about
   their mean (:func:`common_line_misfit`). A comparison of magnitudes alone throws away what the
   phases say and squares the noise: on the seed paper's 1.6×10⁴ e⁻/Å² series it missed a turned
   axis by 3–20°, the phases by under a degree.
3. Each frequency is weighted by its share of signal in the images' power (Wiener,
   :func:`signal_weights`): at frequencies the atoms' blur leaves to the noise, the lines of two
   directions are different draws of noise, and their misfit would only add scatter.
4. A grid over ±90° (``step``) on lines read from the zero-padded FFT, a finer grid on exact lines
   about its best point (±3 steps by a quarter step), then a bounded scalar search about that one;
   the standard error from the spread of the same search on four interleaved quarters of the series.

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

__all__ = ["line_spectra", "signal_weights", "white_noise_power", "common_line_misfit", "image_scales",
           "estimate_tilt_axis", "turned_angles", "axis_frame", "rotate_to_x", "rotate_from_x"]


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


def signal_weights(stack, freqs, totals=None, noise_power=None):
    """Each frequency's share of signal in the images' power: ``P / (P + N)`` (a Wiener weight), ``P`` the
    power of the noise-free images at that spatial frequency (the series' mean power on a ring of the
    2-D FFT, less the noise), ``N`` the noise's (white, ``noise_power`` per image), both after dividing
    each image by its total. No noise: 1 wherever there is power.

    >>> yy, xx = np.mgrid[:32, :32]
    >>> blob = np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 8.0)[None]
    >>> w = signal_weights(blob * 100, np.arange(1, 9) / 32, noise_power=np.array([1e5]))
    >>> bool(w[0] > 0.9 and w[-1] < 0.1 and np.all(np.diff(w) <= 0))
    True
    """
    s = _stack(stack)
    n, ny, nx = s.shape
    t = s.sum(axis=(1, 2)) if totals is None else np.asarray(totals, dtype=float)
    t = np.where(np.abs(t) > 0, np.abs(t), 1.0)
    power = (np.abs(np.fft.fft2(s)) ** 2 / t[:, None, None] ** 2).mean(axis=0)
    radius = np.hypot(np.fft.fftfreq(ny)[:, None], np.fft.fftfreq(nx)[None, :])
    freqs = np.asarray(freqs, dtype=float)
    edges = np.concatenate([[0.0], 0.5 * (freqs[1:] + freqs[:-1]), [1.5 * freqs[-1] - 0.5 * freqs[-2]]]) \
        if len(freqs) > 1 else np.array([0.5 * freqs[0], 1.5 * freqs[0]])
    ring = np.digitize(radius.ravel(), edges) - 1
    inside = (ring >= 0) & (ring < len(freqs))
    mean = np.bincount(ring[inside], power.ravel()[inside], len(freqs)) / np.maximum(
        np.bincount(ring[inside], minlength=len(freqs)), 1)
    noise = 0.0 if noise_power is None else float(np.mean(np.asarray(noise_power, dtype=float) / t**2))
    signal = np.clip(mean - noise, 0.0, None)
    return signal / np.maximum(signal + noise, 1e-300)


def white_noise_power(stack, beyond=0.9):
    """Each image's white-noise power (its summed pixel variance), read from its FFT where no object
    reaches: the mean ``|F(u)|²`` at spatial frequencies beyond ``beyond`` of Nyquist (the corners of
    the 2-D transform), which for white noise equals the summed variance at every frequency. Needs no
    noise model and no units: for Poisson counts it is their sum.

    >>> counts = np.random.default_rng(0).poisson(5.0, (3, 64, 64)).astype(float)
    >>> bool(np.allclose(white_noise_power(counts - 5.0) / counts.sum(axis=(1, 2)), 1.0, atol=0.1))
    True
    """
    s = _stack(stack)
    _, ny, nx = s.shape
    radius = np.hypot(np.fft.fftfreq(ny)[:, None], np.fft.fftfreq(nx)[None, :])
    corner = radius >= 0.5 * float(beyond)
    power = np.abs(np.fft.fft2(s)) ** 2
    return power[:, corner].mean(axis=1)


def _best_shifts(lines, mean_of_others, weights, freqs, grid, phase):
    """Each line's shift (px, along the axis) that best aligns it to ``mean_of_others``: the maximum of
    their weighted cross-correlation on ``grid`` (``phase``: ``exp(2πi grid ⊗ freqs)``), refined by a
    parabola through its neighbours and then by Newton steps on the exact correlation."""
    product = lines * np.conj(mean_of_others) * weights
    corr = (product @ phase.T).real  # (n, nd)
    rows = np.arange(len(lines))
    j = np.clip(corr.argmax(axis=1), 1, len(grid) - 2)
    y0, y1, y2 = corr[rows, j - 1], corr[rows, j], corr[rows, j + 1]
    curve = y0 - 2.0 * y1 + y2
    step = np.where(curve < 0, 0.5 * (y0 - y2) / np.where(curve < 0, curve, -1.0), 0.0)
    d = grid[j] + np.clip(step, -1.0, 1.0) * (grid[1] - grid[0])
    # Newton steps on the exact correlation, each held within the grid's spacing
    ramp = 2j * np.pi * freqs
    for _ in range(3):
        terms = product * np.exp(np.outer(d, ramp))
        first, second = (terms * ramp).sum(axis=1).real, (terms * ramp**2).sum(axis=1).real
        d = d - np.where(second < 0, np.clip(first / np.where(second < 0, second, -1.0), -0.5, 0.5), 0.0)
    return d


def common_line_misfit(lines, freqs, variance, weights, *, reach=None, rounds=30):
    """How far a series' common lines are from one line shifted along the axis: ``(misfit, shifts)``.

    ``lines`` (n, len(freqs)): the images' transforms on one central line, each divided by its
    scale; ``variance`` (n,): each transform's noise variance per frequency (the image's noise
    power over its scale squared); ``weights`` (len(freqs),): :func:`signal_weights`. Each line's shift
    along the axis is fitted to the variance-weighted mean of the others (rounds until no shift moves
    by 0.001 px; ``reach``: the largest shift searched, px, default a quarter of the line's period),
    and the misfit is ``Σ_u w(u) [Σ_k |G_k(u)|²/v_k − |Σ_k G_k(u)/v_k|² / Σ_k 1/v_k]`` of the aligned
    lines ``G``: the noise-weighted sum of squares about their mean, which is zero for lines that are
    one line shifted, and whose noise part does not depend on the direction on average.

    >>> freqs = np.arange(1, 9) / 32
    >>> one = np.exp(-2 * (np.pi * 3 * freqs) ** 2)  # a blob's line
    >>> moved = one[None] * np.exp(-2j * np.pi * np.outer([0.0, 1.5, -2.0], freqs))
    >>> misfit, shifts = common_line_misfit(moved, freqs, np.ones(3), np.ones(8))
    >>> round(misfit, 6), [round(float(d - shifts[0]), 2) for d in shifts]
    (0.0, [0.0, 1.5, -2.0])
    """
    lines = np.asarray(lines, dtype=complex)
    freqs = np.asarray(freqs, dtype=float)
    n = len(lines)
    inv = 1.0 / np.asarray(variance, dtype=float)
    w = np.asarray(weights, dtype=float)
    reach = 0.25 / freqs[0] if reach is None else float(reach)
    grid = np.arange(-np.ceil(reach), np.ceil(reach) + 0.25, 0.5)
    phase = np.exp(2j * np.pi * np.outer(grid, freqs))  # (nd, nu), the same every round
    d = np.zeros(n)
    if n > 1:
        for _ in range(rounds):
            aligned = lines * np.exp(2j * np.pi * np.outer(d, freqs))
            total = (aligned * inv[:, None]).sum(axis=0)
            others = (total[None] - aligned * inv[:, None]) / (inv.sum() - inv)[:, None]
            new = _best_shifts(lines, others, w, freqs, grid, phase)
            new -= np.median(new)
            moved = np.max(np.abs(new - d))
            d = new
            if moved < 1e-3:
                break
    aligned = lines * np.exp(2j * np.pi * np.outer(d, freqs))
    total = (aligned * inv[:, None]).sum(axis=0)
    spread = (np.abs(aligned) ** 2 * inv[:, None]).sum(axis=0) - np.abs(total) ** 2 / inv.sum()
    return float(np.sum(w * spread)), d


def _padded_lines(s, angles, freqs):
    """Central lines at many ``angles`` at once, read (bilinear) from the 2×-zero-padded FFT: (len(angles), n, nu).
    For the coarse grid only: the pixel grid of the FFT favours some directions by a little."""
    n, ny, nx = s.shape
    py, px = 2 * ny, 2 * nx
    f = np.fft.fftshift(np.fft.fft2(s, s=(py, px)), axes=(1, 2))
    # the transform about the pixel (ny//2, nx//2), as line_spectra: a phase ramp
    ky = np.fft.fftshift(np.fft.fftfreq(py))[:, None]
    kx = np.fft.fftshift(np.fft.fftfreq(px))[None, :]
    f *= np.exp(2j * np.pi * (ky * (ny // 2) + kx * (nx // 2)))
    a = np.deg2rad(np.asarray(angles, dtype=float))
    rows = py // 2 + np.outer(np.sin(a), freqs) * py  # (na, nu)
    cols = px // 2 + np.outer(np.cos(a), freqs) * px
    coords = np.stack([rows.ravel(), cols.ravel()])
    out = np.empty((len(a), n, len(freqs)), dtype=complex)
    for k in range(n):
        re = ndimage.map_coordinates(f[k].real, coords, order=1)
        im = ndimage.map_coordinates(f[k].imag, coords, order=1)
        out[:, k] = (re + 1j * im).reshape(len(a), len(freqs))
    return out


def estimate_tilt_axis(stack, noise_power=None, *, step=1.0, highest=0.5, blur=0.0):
    """The tilt axis's direction (degrees, in [−90, 90)) and its standard error, from the images alone.

    Parameters
    ----------
    stack : (n, ny, nx) array
        Background-free projections (vacuum ≈ 0), any shifts, at least 2 of them.
    noise_power : (n,) array, optional
        Each image's summed pixel noise variance (for counts: the sum of the counts, background
        included): it weighs the projections and the frequencies (:func:`signal_weights`); None = noise-free.
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
    noise = None if noise_power is None else np.clip(np.asarray(noise_power, dtype=float), 0.0, None)
    totals = image_scales(s, noise)
    totals = np.where(np.abs(totals) > 0, np.abs(totals), 1.0)
    freqs = _frequencies(s.shape[1:], highest)
    weights = signal_weights(s, freqs, totals, noise)
    used = np.flatnonzero(weights > 0.02)
    if len(used) == 0:
        raise ValueError("estimate_tilt_axis: the images show no signal above their noise")
    last = max(int(used.max()) + 1, 2)
    freqs, weights = freqs[:last], weights[:last]
    # each line's noise variance (no noise given: all alike); a noiseless image weighs as the noisiest one
    variance = np.ones(n) if noise is None or not noise.max() > 0 else noise / totals**2
    variance = np.where(variance > 0, variance, variance.max())

    grid = np.arange(-90.0, 90.0, float(step))
    coarse = _padded_lines(s, grid, freqs) / totals[None, :, None]
    scores = [common_line_misfit(c, freqs, variance, weights)[0] for c in coarse]
    g0 = float(grid[int(np.argmin(scores))])

    def misfit(idx, a):
        lines = line_spectra(s[idx], a, freqs) / totals[idx, None]
        return common_line_misfit(lines, freqs, variance[idx], weights)[0]

    def best(idx, centre, half):
        res = optimize.minimize_scalar(lambda a: misfit(idx, a), bounds=(centre - half, centre + half),
                                       method="bounded", options={"xatol": 1e-3})
        return float(res.x)

    # the FFT's lines are a little off (bilinear on a 2× grid): the grid's neighbourhood again, on exact lines
    near = g0 + np.arange(-3.0, 3.0 + 1e-9, 0.25) * float(step)
    g1 = float(near[int(np.argmin([misfit(np.arange(n), a) for a in near]))])
    angle = best(np.arange(n), g1, 0.25 * float(step))
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
