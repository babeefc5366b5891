"""The in-plane direction of the tilt axis of a single-axis tilt series, and the rotation that puts it along x.

A tilt about an axis in the image plane moves every point of the object perpendicular to that
axis only, so the projection of every image onto the axis — its *common line* — is the same at
every tilt, up to a shift along the axis. Projected onto any other direction the images mix in
the part of the object that moves with the tilt, and their lines disagree.
:func:`estimate_tilt_axis` finds the direction whose lines agree best:

1. Each background-free image is blurred (Gaussian, ``blur`` px: the lines' sampling then smooths
   every direction alike) and projected onto the trial direction by Gaussian splatting of its
   pixels onto a line of 1-px bins (:func:`axis_lines`); each line is scaled to unit total.
2. The lines are aligned along the axis (integer cross-correlation to their mean, refined by
   :func:`aetdask.kernels.align.register_1d` at the coarse optimum), high-passed (less a Gaussian
   of ``highpass`` px: the particle's envelope agrees at every direction, its atoms do not).
3. The agreement is the cross-product of the lines of *different* projections relative to their own
   power, ``(|Σ_k L_k|² − Σ_k |L_k|²) / ((n − 1) Σ_k |L_k|²)`` (their mean correlation): the photon
   noise of one projection is independent of the others', so the numerator holds none of it; the
   denominator makes a direction along which the lines merely carry more structure no better.
4. A grid over ±90° (``step``), then a bounded scalar search around the best grid point; the
   standard error from the spread of the same search on four interleaved quarters of the series.

Angles are in degrees, measured from the image x axis (columns) towards +y (rows), about the
pixel ``(ny // 2, nx // 2)``; :func:`rotate_to_x` turns images so that an axis at that angle lies
along x, the projector's tilt axis (:mod:`aetdask.geometry`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, optimize

from aetdask.backend import asnumpy
from aetdask.kernels.align import register_1d, shift_1d

__all__ = ["axis_lines", "estimate_tilt_axis", "rotate_to_x", "rotate_from_x"]

#: Width (bins) of the Gaussian that splats each pixel onto the line.
SPLAT = 0.7


def _stack(stack):
    s = np.asarray(asnumpy(stack), dtype=np.float64)
    if s.ndim != 3:
        raise ValueError(f"tilt axis: need a stack (n, ny, nx), got shape {s.shape}")
    return s


def axis_lines(stack, angle):
    """The images' projections (n, nx + 8) onto the direction ``angle`` (degrees from x towards +y).

    Pixel ``(y, x)`` lands at ``u = (x − nx//2) cos a + (y − ny//2) sin a + nx//2 + 4`` and is
    spread over the four nearest bins by a Gaussian of :data:`SPLAT` bins (normalised weights).

    >>> img = np.zeros((1, 9, 9)); img[0, 4, 6] = 1.0
    >>> int(axis_lines(img, 0.0)[0].argmax()) - 4, int(axis_lines(img, 90.0)[0].argmax()) - 4
    (6, 4)
    """
    s = _stack(stack)
    n, ny, nx = s.shape
    a = np.deg2rad(float(angle))
    yy, xx = np.mgrid[:ny, :nx].astype(float)
    u = (xx - nx // 2) * np.cos(a) + (yy - ny // 2) * np.sin(a) + nx // 2 + 4
    size = nx + 8
    i0 = np.floor(u).astype(int)
    offsets = np.arange(-1, 3)
    bins = np.clip(i0[..., None] + offsets, 0, size - 1)
    w = np.exp(-0.5 * ((u[..., None] - bins) / SPLAT) ** 2)
    w /= w.sum(axis=-1, keepdims=True)
    bins, w = bins.reshape(-1, 4), w.reshape(-1, 4)
    out = np.zeros((n, size))
    for k, img in enumerate(s):
        out[k] = np.bincount(bins.ravel(), (w * img.reshape(-1, 1)).ravel(), size)
    return out


def _integer_shifts(lines):
    """Whole-bin shifts that move each line onto the mean (circular cross-correlation), twice."""
    d = np.zeros(len(lines))
    f = np.fft.rfft(lines, axis=1)
    n = lines.shape[1]
    for _ in range(2):
        mean = shift_1d(lines, d).mean(axis=0)
        cc = np.fft.irfft(np.fft.rfft(mean)[None] * np.conj(f), n=n, axis=1)
        peak = cc.argmax(axis=1)
        d = np.where(peak > n // 2, peak - n, peak).astype(float)
    return d


def _prepared(lines, shifts, highpass):
    a = shift_1d(lines, shifts)
    return a - ndimage.gaussian_filter1d(a, highpass, axis=1)


def _agreement(lines):
    s = lines.sum(axis=0)
    n = len(lines)
    own = float(np.sum(lines * lines))
    return float((s @ s - own) / ((n - 1) * own)) if own > 0 else 0.0


def _normalised_lines(stack, angle):
    lines = axis_lines(stack, angle)
    totals = lines.sum(axis=1, keepdims=True)
    return lines / np.where(np.abs(totals) > 0, totals, 1.0)


def estimate_tilt_axis(stack, *, step=3.0, blur=1.5, highpass=8.0):
    """The tilt axis's direction (degrees, in [−90, 90)) and its standard error, from the images alone.

    Parameters
    ----------
    stack : (n, ny, nx) array
        Background-free projections (vacuum ≈ 0), any shifts, at least 8 of them.
    step : float
        Grid step (degrees) of the coarse search over ±90°.
    blur : float
        Gaussian blur (px) of the images before they are projected.
    highpass : float
        The lines less their Gaussian smoothing of this width (bins) are compared.

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
    >>> round(estimate_tilt_axis(stack)[0], 1)
    0.0
    """
    s = ndimage.gaussian_filter(_stack(stack), (0, blur, blur))
    n = len(s)
    if n < 2:
        raise ValueError("estimate_tilt_axis: need at least 2 projections")
    grid = np.arange(-90.0, 90.0, float(step))
    scores = []
    for g in grid:
        lines = _normalised_lines(s, g)
        scores.append(_agreement(_prepared(lines, _integer_shifts(lines), highpass)))
    g0 = float(grid[int(np.argmax(scores))])

    def sub_pixel(angle):
        lines = _normalised_lines(s, angle)
        mean = shift_1d(lines, _integer_shifts(lines)).mean(axis=0)
        return np.array([register_1d(mean, line) for line in lines])

    def best(idx, centre, half):
        def cost(angle):
            return -_agreement(_prepared(_normalised_lines(s[idx], angle), shifts[idx], highpass))
        res = optimize.minimize_scalar(cost, bounds=(centre - half, centre + half), method="bounded",
                                       options={"xatol": 1e-3})
        return float(res.x)

    shifts = sub_pixel(g0)
    angle = best(np.arange(n), g0, step)
    shifts = sub_pixel(angle)  # the lines' shifts where they agree best, then the search again
    g0 = angle
    angle = best(np.arange(n), g0, 1.0)
    se = float("nan")
    if n >= 8:
        quarters = [best(np.arange(q, n, 4), g0, 1.0) for q in range(4)]
        se = float(np.std(quarters, ddof=1) / 2.0)
    angle = (angle + 90.0) % 180.0 - 90.0
    return angle, se


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
    >>> bool(np.abs(rotate_to_x(tilted, 30.0) - img).max() < 0.2)
    True
    """
    return _rotate(stack, -float(angle), mode, cval)
