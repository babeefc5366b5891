"""Alignment of a single-axis tilt series: registration, centre of mass, common line, drift.

All functions take NumPy stacks ``(n, ny, nx)`` (tilt, y, x) whose tilt axis is
the image x axis (axis 2, see :mod:`aetdask.geometry`) and return shifts in the
convention of :func:`aetdask.kernels.preprocessing.shift.fourier_shift`: a shift ``(dy, dx)``
is what to *apply* to an image (``fourier_shift(image, (dy, dx))``, positive =
content moves towards higher indices) to align it.

* :func:`register` — sub-pixel shift between two images (phase correlation,
  upsampled-DFT refinement; scikit-image).
* :func:`prealign_neighbours` — chain of registrations between tilt neighbours,
  relative to the central projection (coarse alignment of a raw series).
* :func:`center_of_mass_shifts` — y (perpendicular to the tilt axis): put
  every projection's centre of mass on the row ``ny // 2``. A rotation about x
  keeps the object's centre of mass at the same height, so after this step all
  projections agree in y.
* :func:`common_line_shifts` — x (along the tilt axis): every projection
  summed over y is the same line, the projection of the object onto the tilt
  axis; aligning those lines to their mean fixes x up to one common offset.
* :func:`common_line_scales` — the same line also has the same total, which
  fixes per-projection intensity errors (dose, detector gain).
* :func:`drift_correct` — average repeated frames of one tilt with a linear
  sample drift, including the shear that drift causes in a raster scan.

Everything here is cheap (a few FFTs per projection) and runs on the CPU:
CuPy input is copied to the host and results are NumPy arrays.

References
----------
M. Guizar-Sicairos, S. T. Thurman and J. R. Fienup, "Efficient subpixel image
registration algorithms", Opt. Lett. 33, 156 (2008).
Liao et al., Nature (2026), doi:10.1038/s41586-025-09857-4 (methods: alignment by
centre of mass and common line).
"""

from __future__ import annotations

import numpy as np

from aetdask.backend import asnumpy
from scipy import ndimage

__all__ = [
    "register",
    "prealign_neighbours",
    "center_of_mass_shifts",
    "common_line_shifts",
    "common_line_scales",
    "drift_correct",
    "edge_sensitivity",
    "register_1d",
    "shift_1d",
    "shrink",
    "beyond_noise",
]


def _to_numpy(x, dtype=float):
    return np.asarray(asnumpy(x), dtype=dtype)


def _stack(stack, name):
    s = _to_numpy(stack)
    if s.ndim != 3:
        raise ValueError(f"{name}: need a stack (n, ny, nx), got shape {s.shape}")
    return s


def register(reference, image, upsample=20):
    """Sub-pixel shift ``(dy, dx)`` that moves ``image`` onto ``reference``.

    Cross-correlation peak (``skimage.registration.phase_cross_correlation``
    with ``normalization=None``, i.e. plain cross-correlation), refined on a grid
    of ``1 / upsample`` px by a local upsampled DFT, then between grid points by
    a parabola through the peak and its neighbours along y and along x. Applying
    ``fourier_shift(image[None], [(dy, dx)])`` aligns it with ``reference``.

    Examples
    --------
    >>> from aetdask.kernels.preprocessing.shift import fourier_shift
    >>> yy, xx = np.mgrid[:32, :32]
    >>> ref = np.exp(-((yy - 15) ** 2 + (xx - 17) ** 2) / 6.0)
    >>> moved = fourier_shift(ref[None], np.array([[1.3, -2.4]]))[0]
    >>> [round(float(v), 2) for v in register(ref, moved)]
    [-1.3, 2.4]
    """
    from skimage.registration import phase_cross_correlation

    ref, img = _to_numpy(reference), _to_numpy(image)
    upsample = max(int(upsample), 1)
    shift = phase_cross_correlation(ref, img, upsample_factor=upsample, normalization=None)[0]
    # Parabolic refinement between the upsampled grid points: without it every
    # shift is rounded to the grid, and a chain of small, similar shifts (slow
    # drift between neighbours) accumulates the same rounding error.
    step = 1.0 / upsample
    cross = np.fft.fft2(ref) * np.conj(np.fft.fft2(img))
    offsets = np.array([-step, 0.0, step])
    c = _correlation_at(cross, shift[0] + offsets, shift[1] + offsets)
    return (
        float(shift[0] + step * _parabola_vertex(c[:, 1])),
        float(shift[1] + step * _parabola_vertex(c[1, :])),
    )


def _correlation_at(cross, ys, xs):
    """Circular cross-correlation ``Re IDFT(cross)`` at arbitrary (fractional) shifts ``ys × xs``."""
    ny, nx = cross.shape
    ky = np.fft.fftfreq(ny)
    kx = np.fft.fftfreq(nx)
    ey = np.exp(2j * np.pi * np.outer(np.asarray(ys, float), ky))
    ex = np.exp(2j * np.pi * np.outer(kx, np.asarray(xs, float)))
    return (ey @ cross @ ex).real


def _parabola_vertex(values):
    """Offset (in grid steps, within ±0.5) of the vertex of the parabola through three values (along the first
    axis: several parabolas at once); 0 where it has no maximum."""
    y0, y1, y2 = np.asarray(values, dtype=float)
    denom = y0 - 2 * y1 + y2
    return np.where(denom < 0, np.clip(0.5 * (y0 - y2) / np.where(denom < 0, denom, -1.0), -0.5, 0.5), 0.0)


def prealign_neighbours(stack, upsample=20):
    """Shifts (n, 2) from registering every projection to its neighbour, relative to the centre.

    The images must be sorted by tilt angle. Starting from the central
    projection ``c = n // 2`` (shift 0), projection ``k > c`` is registered to
    ``k − 1`` and ``k < c`` to ``k + 1``, and the shifts are accumulated
    outwards, so each row aligns its projection with the central one. Errors
    add up like a random walk along the chain; use it as a coarse first step.

    Examples
    --------
    >>> from aetdask.kernels.preprocessing.shift import fourier_shift
    >>> yy, xx = np.mgrid[:32, :32]
    >>> img = np.exp(-((yy - 16) ** 2 + (xx - 15) ** 2) / 8.0)
    >>> drift = np.array([[-1.0, 0.5], [0.0, 0.0], [1.0, 0.75]])
    >>> stack = fourier_shift(np.repeat(img[None], 3, axis=0), drift)
    >>> prealign_neighbours(stack).round(2).tolist()
    [[1.0, -0.5], [0.0, 0.0], [-1.0, -0.75]]
    """
    s = _stack(stack, "prealign_neighbours")
    n = len(s)
    shifts = np.zeros((n, 2))
    c = n // 2
    for k in range(c + 1, n):
        shifts[k] = shifts[k - 1] + register(s[k - 1], s[k], upsample)
    for k in range(c - 1, -1, -1):
        shifts[k] = shifts[k + 1] + register(s[k + 1], s[k], upsample)
    return shifts


def center_of_mass_shifts(stack, background="median"):
    """Shift along y (n,) that puts each projection's centre of mass on row ``ny // 2``.

    With ``background="median"`` the centre of mass is that of the positive part of
    ``image − median(image)`` (the median removes a flat background; it must be a
    background value, i.e. the object should cover less than half of the image); with
    ``background=None`` the images are background-free already and are used as they are
    (noise below zero included, so it averages out). Only y is used: the
    tilt axis is x, and a rotation about x keeps the object's centre of mass at
    the same height in every projection.

    Examples
    --------
    >>> img = np.zeros((1, 9, 9)); img[0, 2, 4] = 1.0; img[0, 3, 4] = 1.0
    >>> center_of_mass_shifts(img).tolist()  # centre of mass at row 2.5, centre row 4
    [1.5]
    """
    s = _stack(stack, "center_of_mass_shifts")
    n, ny, nx = s.shape
    if background == "median":
        med = np.median(s.reshape(n, -1), axis=1)
        w = np.clip(s - med[:, None, None], 0.0, None).sum(axis=2)  # (n, ny) row weights
    elif background is None:
        w = s.sum(axis=2)
    else:
        raise ValueError(f"center_of_mass_shifts: background must be 'median' or None, got {background!r}")
    total = w.sum(axis=1)
    if np.any(total <= 0):
        raise ValueError("center_of_mass_shifts: a projection has no intensity above its median")
    cy = (w * np.arange(ny)).sum(axis=1) / total
    return (ny // 2) - cy


def shift_1d(lines, shifts):
    """Shift 1-D signals (..., n) by ``shifts`` (...) px with a Fourier phase ramp (circular).

    >>> line = np.zeros(8); line[2] = 1.0
    >>> int(shift_1d(line, 3.0).argmax())
    5
    """
    lines = _to_numpy(lines)
    n = lines.shape[-1]
    k = np.fft.rfftfreq(n)
    ramp = np.exp(-2j * np.pi * k * np.asarray(shifts, dtype=float)[..., None])
    return np.fft.irfft(np.fft.rfft(lines, axis=-1) * ramp, n=n, axis=-1)


def register_1d(reference, line, upsample=20):
    """Sub-pixel shift that moves the 1-D ``line`` onto ``reference`` (plain cross-correlation).

    The integer peak of the circular cross-correlation is refined by
    evaluating the correlation (an inverse DFT of the cross-power spectrum) on
    a grid of ``1 / upsample`` px within ±1.5 px of the peak, then by a parabola
    through the best grid point and its two neighbours. Rows of 2-D ``reference``
    and ``line`` are registered pair by pair, all at once (an array of shifts).

    Examples
    --------
    >>> x = np.arange(64)
    >>> ref = np.exp(-((x - 30.0) ** 2) / 10.0)
    >>> round(register_1d(ref, shift_1d(ref, 2.37)), 3)
    -2.37
    >>> register_1d(np.stack([ref, ref]), np.stack([shift_1d(ref, 2.37), shift_1d(ref, -0.5)])).round(3).tolist()
    [-2.37, 0.5]
    """
    a = np.asarray(_to_numpy(reference), dtype=np.float64)
    b = np.asarray(_to_numpy(line), dtype=np.float64)
    single = a.ndim == 1
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    n = a.shape[-1]
    cross = np.fft.fft(a - a.mean(axis=-1, keepdims=True)) * np.conj(np.fft.fft(b - b.mean(axis=-1, keepdims=True)))
    peak = np.argmax(np.fft.ifft(cross).real, axis=-1)
    peak = np.where(peak > n // 2, peak - n, peak)
    step = 1.0 / max(int(upsample), 1)
    offsets = np.arange(-1.5, 1.5 + step / 2, step)
    freqs = np.fft.fftfreq(n) * n
    # the correlation at peak + offset: the peak's phase ramp on each row, the offsets' ramps shared by all rows
    values = ((cross * np.exp(2j * np.pi * np.outer(peak, freqs) / n)) @ np.exp(2j * np.pi * np.outer(offsets, freqs) / n).T).real
    rows = np.arange(len(values))
    i = np.argmax(values, axis=-1)
    inner = np.clip(i, 1, len(offsets) - 2)
    vertex = _parabola_vertex([values[rows, inner - 1], values[rows, inner], values[rows, inner + 1]])
    best = peak + offsets[i] + np.where((i > 0) & (i < len(offsets) - 1), step * vertex, 0.0)
    return float(best[0]) if single else best


def common_line_shifts(stack, upsample=20, iterations=3):
    """Shifts along x (n,) that align every projection's common line; mean shift removed.

    The common line of a projection is its sum over y: for a tilt about x it is
    the same for every projection, so differences are shifts along x. Every
    line is first registered (:func:`register_1d`) to every other one and the
    shifts are their least-squares solution (each line's shift is the mean of
    the others' registrations onto it); then, ``iterations`` times, each line is
    registered to the mean of the *other* lines as currently aligned. No step
    starts from, or compares a line with, a template that contains it: a line
    registered to a mean that holds its own noise is pulled towards where it
    already is, and a mean built from the lines as given (misaligned) is a
    blurred template whose optimum depends on where the lines happen to start;
    here the result moves exactly with the data (a whole-pixel shift of a line
    changes its shift by exactly that much). The mean of the shifts (a shift of
    the whole series, which the common line cannot see) is removed.
    Per-projection scale differences do not matter.

    Examples
    --------
    >>> x = np.arange(32)
    >>> img = np.exp(-((x[None, :] - 15.0) ** 2 + (x[:, None] - 16.0) ** 2) / 8.0)
    >>> from aetdask.kernels.preprocessing.shift import fourier_shift
    >>> stack = fourier_shift(np.repeat(img[None], 3, axis=0), np.array([[0, -1.0], [2.0, 0.0], [0, 1.0]]))
    >>> (common_line_shifts(stack).round(2) + 0.0).tolist()
    [1.0, 0.0, -1.0]
    """
    s = _stack(stack, "common_line_shifts")
    lines = s.sum(axis=1)
    n = len(lines)
    if n < 2:
        return np.zeros(n)
    pair = np.zeros((n, n))  # pair[i, j]: the shift that moves line j onto line i (= d_j − d_i)
    i, j = np.triu_indices(n, 1)
    pair[i, j] = register_1d(lines[i], lines[j], upsample)
    pair[j, i] = -pair[i, j]
    dx = pair.mean(axis=0)
    dx -= dx.mean()
    for _ in range(max(0, int(iterations))):
        moved = shift_1d(lines, dx)
        total = moved.sum(axis=0)
        dx = register_1d((total[None] - moved) / (n - 1), moved, upsample) + dx
        dx -= dx.mean()
    return dx


def common_line_scales(stack):
    """Factors (n,) that give every projection the series' mean total intensity.

    The total of a projection (its common line's sum) is the integral of the
    object and the same at every tilt; ``scales = mean(totals) / totals``
    multiplies the images. Subtract the background first.

    Examples
    --------
    >>> stack = np.ones((3, 4, 4)) * np.array([1.0, 2.0, 4.0])[:, None, None]
    >>> (common_line_scales(stack) * np.array([1.0, 2.0, 4.0])).round(6).tolist()
    [2.333333, 2.333333, 2.333333]
    """
    s = _stack(stack, "common_line_scales")
    totals = s.sum(axis=(1, 2))
    if np.any(totals <= 0):
        raise ValueError("common_line_scales: every projection needs a positive total")
    return totals.mean() / totals


def drift_correct(frames, upsample=20):
    """Average repeated raster-scan frames of one tilt, undoing a linear drift.

    Model: the sample drifts at a constant velocity ``v = (vy, vx)`` px per
    frame. A frame is scanned row by row (y is the slow axis) in one frame
    time with no dead time, so row ``r`` of frame ``f`` is recorded at time
    ``t = f + r / ny`` and shows the sample displaced by ``v · t``::

        frame_f(r, x) = I(r − vy (f + r/ny), x − vx (f + r/ny))

    Within a frame, the x drift shears the image (row r moved by ``vx r/ny``)
    and the y drift stretches it by ``1 − vy/ny``; from frame to frame it is a
    translation. Steps:

    1. Register every frame to frame 0 (:func:`register`, after removing each
       frame's mean and tapering it with a Hann window, so that content drifting
       in at the edges does not bias the shifts); the measured shifts are
       ``m f`` with ``m = −v / (1 − vy/ny)`` (the stretch scales them).
    2. Fit ``m`` by least squares through the origin and invert the relation:
       ``vy = −my / (1 − my/ny)``, ``vx = −mx (1 − vy/ny)``.
    3. Unshear each frame: shift row r along x by ``−vx r/ny`` (1-D Fourier
       shift), then resample along y (cubic spline) at ``r / (1 − vy/ny)``.
       Each frame is now the sample displaced by ``v f``.
    4. Shift each frame by ``−v f`` (:func:`~aetdask.kernels.preprocessing.shift.fourier_shift`)
       and average.

    The result is the sample as it was at the start of frame 0 (row 0).
    Shifts are circular, so content that drifted in from outside the field of
    view is wrong within ``|v| · n_frames`` px of the edges.

    Parameters
    ----------
    frames : (n_frames, ny, nx) array
    upsample : int
        Registration precision, 1 / upsample px.

    Returns
    -------
    average : (ny, nx) float array
    shifts : (n_frames, 2) float array
        The translation applied to each unsheared frame, ``−v · f``; the fitted
        drift velocity is ``v = −shifts[1]`` (px per frame, (y, x)).

    Examples
    --------
    >>> yy, xx = np.mgrid[:32, :32]
    >>> img = np.exp(-((yy - 16) ** 2 + (xx - 15) ** 2) / 8.0)
    >>> average, shifts = drift_correct(np.repeat(img[None], 4, axis=0))
    >>> bool(np.allclose(average, img)), shifts[3].tolist()
    (True, [0.0, 0.0])
    """
    from aetdask.kernels.preprocessing.shift import fourier_shift

    s = _stack(frames, "drift_correct")
    n, ny, nx = s.shape
    win = np.outer(np.hanning(ny), np.hanning(nx))  # edges change as content drifts in: weight them down
    tapered = (s - s.mean(axis=(1, 2), keepdims=True)) * win
    measured = np.array([register(tapered[0], tapered[f], upsample) for f in range(n)])
    f = np.arange(n, dtype=float)
    m = (f @ measured) / (f @ f) if n > 1 else np.zeros(2)
    vy = -m[0] / (1.0 - m[0] / ny)
    vx = -m[1] * (1.0 - vy / ny)
    velocity = np.array([vy, vx])
    rows = np.arange(ny, dtype=float)
    unsheared = shift_1d(s, -vx * rows[None, :] / ny * np.ones((n, 1)))  # row r by −vx r/ny along x
    if vy != 0.0:
        src = rows / (1.0 - vy / ny)
        coords = np.stack(np.broadcast_arrays(src[:, None], np.arange(nx, dtype=float)[None, :]))
        unsheared = np.stack([ndimage.map_coordinates(u, coords, order=3, mode="nearest") for u in unsheared])
    shifts = -f[:, None] * velocity[None, :]
    aligned = fourier_shift(unsheared, shifts)
    return aligned.mean(axis=0), shifts


def photon_uncertainty(counts, signal, alpha, sigma):
    """Standard errors of a projection's centre of mass (y, x; pixels) and relative total, from its noise.

    ``counts`` is the raw image, whose pixels have variance ``α·counts + σ²``
    (the mixed Poisson–Gaussian model); ``signal`` the clean, background-free
    image the centre of mass and total are computed from. To first order the
    centre of mass ``c = Σ u·w / Σ w`` has variance ``Σ (u − c)² var / (Σ w)²``
    and the total a relative variance ``Σ var / (Σ w)²``.

    >>> img = np.zeros((5, 5)); img[2, 2] = 100.0
    >>> photon_uncertainty(img, img, 1.0, 0.0).round(3).tolist()
    [0.0, 0.0, 0.1]
    """
    z = np.asarray(counts, dtype=np.float64)
    w = np.asarray(signal, dtype=np.float64)
    var = float(alpha) * np.clip(z, 0, None) + float(sigma) ** 2
    total = float(w.sum())
    if total <= 0:
        return np.array([np.inf, np.inf, np.inf])
    ny, nx = w.shape
    y, x = np.arange(ny, dtype=float), np.arange(nx, dtype=float)
    cy, cx = float(w.sum(axis=1) @ y) / total, float(w.sum(axis=0) @ x) / total
    vy = float(var.sum(axis=1) @ (y - cy) ** 2) / total**2
    vx = float(var.sum(axis=0) @ (x - cx) ** 2) / total**2
    return np.sqrt([vy, vx, float(var.sum()) / total**2])


def edge_sensitivity(signal, variance, margin):
    """How much a projection's centre of mass across the tilt axis depends on the field's edges.

    ``Δ = c − c_m``, the centre of mass (row, px) of the background-free ``signal`` minus that
    of the same image with ``margin`` rows cut from its top and bottom, and the standard error
    of Δ from the pixel ``variance``. Where the particle's signal reaches the top or bottom of
    the field, part of it lies beyond, and the centre of mass moves with the cut: a Δ beyond
    its noise says the measured centre of mass is not the particle's (it is cut off by the
    field of view, by about Δ). Algebraically ``Δ = Σ_cut (y − c_m)·w / Σ w``.

    >>> img = np.zeros((32, 32)); img[8:24, 8:24] = 1.0
    >>> [round(float(v), 6) for v in edge_sensitivity(img, img, 4)]  # Poisson: variance = signal
    [0.0, 0.0]
    >>> img[0:2, 8:24] = 1.0  # signal at the top edge
    >>> bool(edge_sensitivity(img, img, 4)[0] < -1)
    True
    """
    w = _to_numpy(signal).sum(axis=1)
    v = _to_numpy(variance).sum(axis=1)
    ny = len(w)
    m = int(margin)
    if not 0 < m < ny // 2:
        raise ValueError(f"edge_sensitivity: margin must be between 1 and {ny // 2 - 1} rows, got {margin}")
    y = np.arange(ny, dtype=float)
    total = float(w.sum())
    inner = float(w[m:-m].sum())
    if total <= 0 or inner <= 0:
        return float("inf"), 0.0
    c_m = float(w[m:-m] @ y[m:-m]) / inner
    cut = np.r_[0:m, ny - m:ny]
    delta = float(w[cut] @ (y[cut] - c_m)) / total
    se = float(np.sqrt(v[cut] @ (y[cut] - c_m) ** 2)) / total
    return delta, se


def shrink(values, errors, center: float = 0.0):
    """Empirical-Bayes shrinkage of noisy per-projection estimates towards ``center``.

    The spread of the true values is what the estimates scatter beyond their
    own errors: ``s² = max(0, mean((v − center)²) − mean(errors²))``; each
    estimate is pulled in by ``s² / (s² + error²)``. Shifts measured from
    photon-starved images, whose scatter is all noise, shrink to nothing;
    real misalignments, far above the noise, stay. Estimates without a known
    error (NaN: the noise could not be estimated) take the median error of the
    others; with no known error at all the estimates are returned as they are.

    >>> shrink([2.0, -2.0, 4.0, -4.0], [0.1] * 4).round(3).tolist()
    [1.998, -1.998, 3.996, -3.996]
    >>> shrink([0.1, -0.1, 0.1], [0.5] * 3).tolist()
    [0.0, 0.0, 0.0]
    """
    v = np.asarray(values, dtype=float) - center
    e2 = np.asarray(errors, dtype=float) ** 2
    finite = np.isfinite(e2)
    if not finite.any():
        return center + v
    e2 = np.where(finite, e2, np.median(e2[finite]))
    s2 = max(0.0, float(np.mean(v**2)) - float(np.mean(e2)))
    return center + v * (s2 / np.maximum(s2 + e2, 1e-300))


#: False-alarm probability of :func:`beyond_noise`: how rarely photon noise alone is taken for misalignment.
FALSE_ALARM = 1e-3


def beyond_noise(values, errors, design, p_false=FALSE_ALARM):
    """Whether per-projection estimates scatter about a smooth trend by more than their noise.

    The estimates are fitted (weighted least squares, weights ``1/errors²``) by the columns of
    ``design`` (n, m) — what every projection shares: a constant, or the sinusoid a centre of mass
    off the tilt axis follows — and the residuals' ``χ² = Σ (r / error)²`` is compared with its
    ``1 − p_false`` quantile on ``n − m`` degrees of freedom. Errors that are NaN take the median
    of the others; with none known the scatter counts as real.

    Returns
    -------
    trend : (n,) array
        The fitted trend ``design @ coef``.
    real : bool
        The residuals are beyond the noise: the estimates are kept as they are (unbiased), else
        the trend alone is (the residuals are noise).
    chi2, dof : float, int

    >>> t = np.arange(30.0)
    >>> noise = np.random.default_rng(0).normal(0, 0.3, 30)
    >>> beyond_noise(noise, np.full(30, 0.3), np.ones((30, 1)))[1]
    False
    >>> beyond_noise(noise + np.where(t % 2, 2.0, -2.0), np.full(30, 0.3), np.ones((30, 1)))[1]
    True
    """
    from scipy import stats

    v = np.asarray(values, dtype=float)
    e = np.asarray(errors, dtype=float)
    a = np.asarray(design, dtype=float).reshape(len(v), -1)
    finite = np.isfinite(e) & (e > 0)
    if not finite.any():
        coef = np.linalg.lstsq(a, v, rcond=None)[0]
        return a @ coef, True, float("nan"), len(v) - a.shape[1]
    e = np.where(finite, e, np.median(e[finite]))
    coef = np.linalg.lstsq(a / e[:, None], v / e, rcond=None)[0]
    trend = a @ coef
    dof = len(v) - np.linalg.matrix_rank(a)
    chi2 = float(np.sum(((v - trend) / e) ** 2))
    real = dof > 0 and chi2 > float(stats.chi2.ppf(1.0 - p_false, dof))
    return trend, bool(real), chi2, int(dof)
