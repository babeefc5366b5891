"""The preprocessing stage: raw counts in, clean projections (with their alignment) out.

Per projection (one Dask task each): noise estimate (α, σ; a projection's estimate far from
the series' others, which share the detector, is replaced by theirs) → generalized
Anscombe VST → rescale to [0.15, 0.85] → denoise (none by default; BM3D or NLM) → exact
unbiased inverse VST → least-squares rescale to the counts → background
subtraction. Then the global steps, small reductions over the series:
centre of mass across the tilt axis, common-line alignment along it,
and equal integrated intensity. The shifts are kept as measured (unbiased) where they
scatter beyond their photon noise about what all projections share (the sinusoid of a
centre of mass off the axis; a constant along it), and shrunk towards "no correction" by
their photon-noise error where they do not, so noise is not mistaken for misalignment;
the scales are shrunk towards their mean by their photon-noise error. The alignment is recorded, not applied: the
product carries ``shift_y``, ``shift_x`` (pixels) and ``scale`` coords on
``tilt`` (applied by :func:`aligned` and by the reconstruction), together with
the noise parameters ``noise_alpha`` and ``noise_sigma``.

A tilt axis that is not the image x axis (``preprocess.tilt_axis``, degrees from x towards +y)
is carried in the geometry, not by resampling the projections: each projection's Euler angles
become those of a detector turned by it (:func:`aetdask.kernels.preprocessing.tilt_axis.turned_angles`), which
every projector handles, and the centre of mass and common lines are measured across and along
the axis (on turned copies of the projections, used for those statistics only); the recorded
shifts are in the image's own ``(y, x)``.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from aetdask import config
from aetdask.errors import InputError
from aetdask.kernels.preprocessing import align as align_k
from aetdask.kernels.preprocessing import background as background_k
from aetdask.kernels.preprocessing import matching as match_k
from aetdask.kernels.preprocessing import noise as noise_k
from aetdask.kernels.preprocessing import tilt_axis as axis_k
from aetdask.kernels.preprocessing.denoise import DENOISERS, denoise
from aetdask.kernels.preprocessing.shift import fourier_shift
from aetdask.kernels.tomography.iterative import resire
from aetdask.geometry import rigid_motion_basis
from aetdask.reconstruct.projectors import slice_projector
from aetdask.schema import add_provenance, validate_tilt_series
from scipy import ndimage


# ------------------------------------------------------------------ per projection (kernels on one image)
def _noise_params(block):
    """(α, σ) per image; NaN where no Poisson noise is found (noise-free or non-count data).

    The moment estimate is refined by the likelihood of the exact Poisson–Gaussian model on
    the background (``lattice=True``): ≈ 0.2–0.5 s per image, a few per cent of BM3D's time,
    for σ estimates within a few per cent where moments alone can be off by 10 % or more."""
    out = np.empty((block.shape[0], 2))
    for k, img in enumerate(block):
        try:
            out[k] = noise_k.estimate_noise(np.asarray(img, dtype=np.float64), lattice=True)
        except ValueError:
            out[k] = np.nan
    return out


#: How many robust standard deviations (the median absolute deviation's, at least
#: :data:`NOISE_SPREAD_FLOOR` of α) a projection's noise estimate may lie from the series' median
#: before it is taken for a failed estimate.
NOISE_OUTLIER = 5.0
#: Least spread of the per-projection α (relative) and σ (in units of α) that the outlier test allows:
#: the estimates' own scatter on pure Poisson counts is a few per mille.
NOISE_SPREAD_FLOOR = (0.01, 0.1)


def _series_noise(params):
    """Per-projection (α, σ) with the outliers replaced by the series' medians.

    The Poisson gain α (signal per detected electron) and the Gaussian read noise σ are the
    detector's, the same for every projection of a series, whereas each projection's estimate
    can fail on its own: where its spectrum has no flat noise-only band (the particle's own
    structure up to the pixel scale at some tilt), the fallback moment estimate takes structure
    for noise. Estimates farther than :data:`NOISE_OUTLIER` robust standard deviations from the
    medians of the others are replaced by them; with fewer than 5 usable estimates nothing is.
    """
    out = np.array(params, dtype=np.float64, copy=True)
    a, s = out[:, 0], out[:, 1]
    ok = np.isfinite(a) & np.isfinite(s)
    if ok.sum() < 5:
        return out
    med_a, med_s = np.median(a[ok]), np.median(s[ok])
    spread_a = max(1.4826 * np.median(np.abs(a[ok] - med_a)), NOISE_SPREAD_FLOOR[0] * med_a)
    spread_s = max(1.4826 * np.median(np.abs(s[ok] - med_s)), NOISE_SPREAD_FLOOR[1] * med_a)
    bad = ok & ((np.abs(a - med_a) > NOISE_OUTLIER * spread_a) | (np.abs(s - med_s) > NOISE_OUTLIER * spread_s))
    good = ok & ~bad
    out[bad] = np.median(a[good]), np.median(s[good])
    return out


def denoise_image(image, alpha, sigma, method):
    """VST → [0.15, 0.85] → denoise → exact unbiased inverse → least-squares rescale to the counts."""
    z = np.asarray(image, dtype=np.float64)
    if method == "none" or not (np.isfinite(alpha) and alpha > 0):
        return z
    level = max(float(np.mean(np.abs(z))), 1e-300)
    if np.sqrt(alpha * level + sigma**2) < 1e-4 * level:  # practically noise-free: nothing to remove
        return z
    d = noise_k.anscombe(z, alpha, sigma)
    scaled, sigma_scaled, mapping = noise_k.to_unit_range(d)
    clean = noise_k.from_unit_range(denoise(scaled, sigma_scaled, method), mapping)
    y = noise_k.inverse_anscombe(clean, alpha, sigma)
    a, b = noise_k.least_squares_rescale(y, z)
    return a * y + b


def _no_vacuum():
    return InputError(
        "preprocess: the sample fills the whole field of view, so there is no vacuum to take the "
        "background from; expected an isolated particle — for a film wider than the field of view "
        "use `aetdask run --scanning` (or preprocess(..., background=False))")


def _soft(support, width=1.0):
    """The support with a soft edge: 0 on and outside its boundary, rising to 1 about 2 px inside."""
    soft = np.clip(2.0 * ndimage.gaussian_filter(support.astype(float), width, mode="nearest") - 1.0, 0.0, 1.0)
    return soft * support


#: Significance (standard errors of the counts) above which the pixels a second vacuum pass would
#: add hold signal: the particle's, not a background that the first pass took for its tails.
MOVED_SIGNAL_Z = 3.0


def _vacuum_and_background(raw, alpha, sigma, fade):
    """The vacuum and the background fitted there, in two passes: the second finds the particle
    above the first pass's background (a background that is not flat would otherwise pass for the
    particle's tails), and is kept only if the pixels it moves into the vacuum hold no significant
    signal above that background: where the first background was too high under the particle's
    faint edge (a local fit next to its tails), the second pass would otherwise eat into it."""
    def fit(vacuum):
        if vacuum is None:
            raise _no_vacuum()
        try:
            return background_k.fit_background(raw, vacuum, ring=2 * fade)[0]
        except background_k.NoVacuumError:
            raise _no_vacuum() from None

    first = noise_k.vacuum_mask(raw, max_reach=fade)
    bg = fit(first)
    second = noise_k.vacuum_mask(raw - bg, max_reach=fade)
    if second is None:
        return first, bg
    moved = second & ~first
    if moved.any():
        a, s = (alpha, sigma) if np.isfinite(alpha) and alpha > 0 else (1.0, 0.0)
        excess = (raw - bg)[moved]
        se = np.sqrt(np.sum(a * np.clip(raw[moved], 0.0, None) + s**2))
        if se > 0 and excess.sum() > MOVED_SIGNAL_Z * se:
            return first, bg
    return second, fit(second)


def _clean(block, params, method, subtract, fade):
    """(n, 2, ny, nx): the product (background removed, zero outside the particle's support) and
    the same without the support mask, whose centre of mass and common line are not cut by it.

    The vacuum is found on the raw counts (:func:`aetdask.kernels.preprocessing.noise.vacuum_mask`: the
    particle grown out to where its tails are no longer detectable, at most a fade length
    ``fade`` px), the background is fitted to the raw counts there
    (:func:`aetdask.kernels.preprocessing.background.fit_background`: the polynomial order the vacuum
    supports), and the vacuum is found again above that background where that moves no
    significant signal into it (:func:`_vacuum_and_background`); the background is
    subtracted from the denoised image."""
    out = np.empty((block.shape[0], 2, *block.shape[1:]), dtype=block.dtype)
    for k, img in enumerate(block):
        alpha, sigma = params[k]
        raw = np.asarray(img, dtype=np.float64)
        den = denoise_image(raw, alpha, sigma, method)
        if subtract:
            vacuum, bg = _vacuum_and_background(raw, alpha, sigma, fade)
            out[k, 1] = den - bg
            out[k, 0] = _soft(~vacuum) * out[k, 1]
        else:
            out[k, 0] = out[k, 1] = den
    return out


# ------------------------------------------------------------------ global steps (small reductions)
#: Length (Å) over which a particle's signal fades into the background (the aberration-free
#: probe's Airy tails carry a few per cent of each atom's signal several Å out): how far the
#: particle's support may reach beyond what its tails show, and how much signal may lie beyond the
#: field's edge.
FADE_LENGTH = 4.0
#: Rows (px) cut from the field's top and bottom to see how the centre of mass depends on them.
EDGE_STRIP = 2
#: Largest edge correction of a centre of mass (px) that is trusted: the signal beyond the edge is
#: extrapolated from the strip inside it, good to about half the correction (measured on particles
#: filling the field), so a correction of 0.1 px leaves about 0.05 px, below what the reconstruction
#: resolves.
EDGE_TOLERANCE = 0.1


def _projection_stats(raw, signal, clean, params):
    """Per projection: [CoM shift (y), its edge correction Δ and Δ's standard error, photon errors of
    the CoM (y, x) and of the relative total].

    Where the particle's signal reaches the field's top or bottom, some of it lies beyond and the
    centre of mass is off by about the change Δ that cutting the outer :data:`EDGE_STRIP` rows makes
    (:func:`aetdask.kernels.preprocessing.align.edge_sensitivity`: the signal beyond taken as dense as the strip's):
    the shift returned is corrected by it where it exceeds 3 of its standard errors. The errors are
    the photon noise's (:func:`aetdask.kernels.preprocessing.align.photon_uncertainty`), the background's (the
    vacuum's noise over its pixel count, spread over the field: ``clean`` is 0 on the vacuum) and the
    correction's."""
    out = np.empty((len(raw), 6))
    for k, (r, w, c, (alpha, sigma)) in enumerate(zip(raw, signal, clean, params)):
        w = np.asarray(w, dtype=np.float64)
        a, s = (alpha, sigma) if np.isfinite(alpha) else (1.0, 0.0)
        variance = a * np.clip(np.asarray(r, dtype=np.float64), 0, None) + s**2
        delta, se = align_k.edge_sensitivity(w, variance, EDGE_STRIP)
        applied = delta if abs(delta) > 3 * se else 0.0  # a correction within its noise is noise
        out[k, 0] = align_k.center_of_mass_shifts(w[None], background=None)[0] - applied
        out[k, 1:3] = delta, se
        errors = align_k.photon_uncertainty(r, w, alpha, sigma)
        # the background, a mean over the vacuum, is uncertain by its noise over √(vacuum pixels):
        # the whole field's total and centre of mass carry that error too
        vacuum = np.asarray(c) == 0
        n_vac, total = int(vacuum.sum()), float(w.sum())
        if n_vac and total > 0:
            bg_se = float(np.sqrt(np.mean(variance[vacuum]) / n_vac))
            rows = np.arange(w.shape[0], dtype=float)
            lever = float(np.sum(w.shape[1] * (rows - np.sum(w.sum(axis=1) * rows) / total)))
            errors = np.sqrt(errors**2 + (bg_se * np.array([lever, 0.0, w.size]) / total) ** 2)
        errors[0] = np.hypot(errors[0], se if applied else 0.0)
        out[k, 3:6] = errors
    return out


ALIGNMENTS = ("center", "neighbours", "film", "none")


def edge_cut(delta, se):
    """Projections whose centre of mass across the tilt axis is cut by the field's edges beyond
    correction: the edge correction Δ beyond both 3 of its standard errors and :data:`EDGE_TOLERANCE`."""
    delta, se = np.asarray(delta, float), np.asarray(se, float)
    return ~(np.abs(delta) <= np.maximum(3 * se, EDGE_TOLERANCE))


def _kept(values, errors, design):
    """The estimates as measured where they scatter about ``design``'s trend beyond their noise
    (:func:`aetdask.kernels.preprocessing.align.beyond_noise`: a χ² test across the series), else shrunk
    towards "no correction" by their photon-noise error (:func:`aetdask.kernels.preprocessing.align.shrink`).

    A series misaligned beyond its noise has its shifts recorded without bias: a pull towards
    "no correction" shrinks real shifts too (by ``e²/(s² + e²)``: a few tenths of a pixel on
    shifts of a few pixels measured to about half a pixel), and would record a shifted series'
    shifts short of what was applied. A series whose shifts are within their noise of what all
    projections share is not moved by that noise."""
    return _kept_real(values, errors, design)[0]


def _kept_real(values, errors, design):
    """:func:`_kept`'s estimates, and whether they scatter beyond their noise."""
    _, real, _, _ = align_k.beyond_noise(values, errors, design)
    return (np.asarray(values, dtype=float) if real else align_k.shrink(values, errors)), bool(real)


def _sinusoid(theta):
    t = np.deg2rad(np.asarray(theta, float))
    return np.c_[np.cos(t), np.sin(t), np.ones(len(t))]


def _across_axis(com_dy, errors, cut, theta):
    """Shifts across the tilt axis: the centres of mass (:func:`_kept`: as measured where they scatter
    beyond their photon noise about the sinusoid ``a·cos θ + b·sin θ + c`` a centre of mass off the
    axis follows, else shrunk); those of projections cut by the field's edges are predicted from the others by
    the sinusoid. With too few uncut projections (fewer than 6 or a quarter) none is shifted."""
    return _across_axis_real(com_dy, errors, cut, theta)[0]


def _across_axis_real(com_dy, errors, cut, theta):
    """:func:`_across_axis`'s shifts, and whether the centres of mass scatter beyond their noise."""
    n = len(com_dy)
    out = np.zeros(n)
    good = ~cut
    if good.sum() < max(6, n / 4):
        return out, False
    design = _sinusoid(theta)
    out[good], real = _kept_real(com_dy[good], errors[good], design[good])
    if cut.any():
        coef = np.linalg.lstsq(design[good], out[good], rcond=None)[0]
        out[cut] = design[cut] @ coef
    return out, real


def _global_steps(stats, alignment, normalize, theta, path=None):
    """From per-projection statistics [CoM shift, edge correction, its error | errors (y, x, total) | common
    line] to (shift_y, shift_x, scale, cut, misaligned) columns: the shifts as measured where they scatter
    beyond their photon noise, else shrunk by it (:func:`_kept`); the scales
    shrunk towards their mean by their photon-noise error (:func:`aetdask.kernels.preprocessing.align.shrink`);
    ``cut`` (1.0 or 0.0) marks a centre of mass cut by the field's edges; ``misaligned`` (1.0 or 0.0,
    the same in every row) says that the shifts across or along the axis scatter beyond their noise.

    ``path`` (n,): the relative path length through the sample at each tilt
    (1/cos θ for a film wider than the field of view; None = 1, an isolated particle):
    the scales equalise total / path."""
    com_dy, errors, lines = stats[:, 0], stats[:, 3:6], stats[:, 6:][:, None, :]
    cut = edge_cut(stats[:, 1], stats[:, 2])
    n = len(stats)
    out = np.zeros((n, 5))
    out[:, 2] = 1.0
    real = False
    if alignment == "center":
        out[:, 0], real = _across_axis_real(com_dy, errors[:, 0], cut, theta)
        out[:, 3] = cut
    if alignment in ("center", "film"):
        out[:, 1], real_x = _kept_real(align_k.common_line_shifts(lines), errors[:, 1], np.ones((n, 1)))
        real = real or real_x
    out[:, 4] = real
    if normalize:
        scales = align_k.common_line_scales(lines if path is None else lines / np.asarray(path)[:, None, None])
        out[:, 2] = align_k.shrink(scales, errors[:, 2] * scales, center=float(np.mean(scales)))
    return out


def _matched(steps, clean, raw, params, theta, settings):
    """Shifts (n, 2) across and along the tilt axis by projection matching, where ``steps``
    (:func:`_global_steps`) says the series is misaligned beyond its noise; else ``steps``' own.

    The object is reconstructed (RESIRE, the single-axis projector) from all folds of the series but
    one, and each projection of that fold is registered to its reprojection
    (:func:`aetdask.kernels.preprocessing.matching.projection_matching`), starting from the centre
    of mass and the common line; images larger than ``size`` px are binned for it. The result is
    kept as measured where it scatters beyond its photon noise about what a rigid translation of
    the object does (the sinusoid across the axis, a constant along it), else that trend alone is
    (:func:`aetdask.kernels.preprocessing.align.beyond_noise`)."""
    out = np.array(steps[:, :2], dtype=np.float64, copy=True)
    if not steps[0, 4] > 0.5:
        return out
    folds, rounds, iterations, tolerance, smooth, size = settings
    stack = np.asarray(clean, dtype=np.float64)
    n, ny, nx = stack.shape
    p = np.asarray(params, dtype=np.float64)
    ok = np.isfinite(p[:, 0]) & np.isfinite(p[:, 1])
    alpha = np.where(ok, p[:, 0], 1.0)[:, None, None]
    sigma = np.where(ok, p[:, 1], 0.0)[:, None, None]
    variance = alpha * np.clip(np.asarray(raw, dtype=np.float64), 0.0, None) + sigma**2
    f = max(1, int(np.ceil(max(ny, nx) / float(size))))
    if f > 1:  # mean over f × f pixels (the field cropped to a multiple of f)
        my, mx = ny // f, nx // f
        stack = stack[:, : my * f, : mx * f].reshape(n, my, f, mx, f).mean(axis=(2, 4))
        variance = variance[:, : my * f, : mx * f].reshape(n, my, f, mx, f).sum(axis=(2, 4)) / f**4
    side = stack.shape[1]
    theta = np.asarray(theta, dtype=float)
    basis = rigid_motion_basis(np.c_[np.zeros(n), theta, np.zeros(n)])[1]

    def reproject(aligned, train, test):
        forward = slice_projector((side, side), side, theta[train], 2)
        volume, _ = resire(np.ascontiguousarray(aligned[train], dtype=np.float32), forward, iterations)
        return slice_projector((side, side), side, theta[test], 2).forward(volume)

    shifts, errors, _ = match_k.projection_matching(stack, variance, basis, reproject, out / f, folds=folds,
                                                    rounds=rounds, tolerance=tolerance / f, smooth=smooth)
    shifts, errors = shifts * f, errors * f
    for axis, design in ((0, _sinusoid(theta)), (1, np.ones((n, 1)))):
        trend, real, _, _ = align_k.beyond_noise(shifts[:, axis], errors[:, axis], design)
        out[:, axis] = shifts[:, axis] if real else trend
    return out


#: A tilt axis found turned from x by more than this many standard errors, and by more than
#: :data:`AXIS_WARN_DEG` degrees, is worth a warning when the series says nothing of it.
AXIS_WARN_SE = 4.0
AXIS_WARN_DEG = 1.0


def _axis_estimate(block):
    """``(angle, se)`` of the tilt axis in a whole raw series (one block): the counts less each image's
    median, their white-noise power read from their own FFT (no noise model needed); NaN where the images
    show no signal above their noise."""
    stack = np.asarray(block, dtype=np.float64)
    stack = stack - np.median(stack, axis=(1, 2), keepdims=True)
    try:
        angle, se = axis_k.estimate_tilt_axis(stack, axis_k.white_noise_power(stack))
    except ValueError:
        angle, se = np.nan, np.nan
    return np.array([angle, se])


def _angle(axis):
    """The tilt axis's direction as a number: given (a float), or found (``(angle, se)``, NaN: along x)."""
    if np.ndim(axis) == 0:
        return float(axis)
    a = float(np.asarray(axis).ravel()[0])
    return a if np.isfinite(a) else 0.0


def _turned_euler(euler, axis):
    return axis_k.turned_angles(euler, _angle(axis))


def axis_warning(pre: xr.DataArray) -> str | None:
    """What a preprocessed series's own images say against the tilt axis it was processed with, or None: where
    that axis is not the images' own estimate and the images' common lines put the axis more than
    :data:`AXIS_WARN_SE` standard errors and :data:`AXIS_WARN_DEG` degrees from it (along x where none was
    given; directions 180° apart are one axis)."""
    if "tilt_axis_found" not in pre.coords:
        return None
    params = next((r.get("params", {}) for r in reversed(pre.attrs.get("provenance", []))
                   if r.get("stage") == "preprocess"), {})
    used = params.get("tilt_axis", 0.0)
    if used == "found":
        return None
    used = float(used or 0.0)
    angle, se = float(pre.coords["tilt_axis_found"]), float(pre.coords["tilt_axis_found_se"])
    off = (angle - used + 90.0) % 180.0 - 90.0
    if not np.isfinite(off) or abs(off) <= max(AXIS_WARN_DEG, AXIS_WARN_SE * (se if np.isfinite(se) else 0.0)):
        return None
    if used == 0.0:
        return (f"the images' common lines put the tilt axis at {angle:+.2f} ± {se:.2f}° from the image x axis, "
                "where the angles assume it along x; give --tilt-axis (preprocess.tilt_axis) if it is turned, or "
                "--tilt-axis auto to use this estimate")
    return (f"the images' common lines put the tilt axis at {angle:+.2f} ± {se:.2f}° from the image x axis, "
            f"where --tilt-axis (preprocess.tilt_axis) gives {used:+.2f}°; check the given direction and its sign, "
            "or give --tilt-axis auto to use this estimate")


MATCHING = ("preprocess.match_folds", "preprocess.match_rounds", "preprocess.match_iterations",
            "preprocess.match_tolerance", "preprocess.match_smooth", "preprocess.match_size")


def _turned(block, angle, mode):
    """The projections turned so that a tilt axis at ``angle`` degrees lies along x (for measuring
    the centre of mass and common lines only; the product is never resampled)."""
    angle = _angle(angle)
    if angle == 0.0:
        return block
    flat = np.asarray(block, dtype=np.float64).reshape(-1, *block.shape[-2:])
    out = axis_k.rotate_to_x(flat, angle, mode=mode)
    return out.reshape(block.shape).astype(block.dtype, copy=False)


def _image_shifts(shifts, angle):
    """Shifts ``(across, along)`` the tilt axis at ``angle`` degrees as image ``(y, x)`` shifts."""
    along, across = axis_k.axis_frame(_angle(angle))
    return shifts[:, :1] * across + shifts[:, 1:2] * along


def _neighbour_shifts(stack, theta):
    """Cross-correlation chain between neighbouring tilts (in θ order), relative to the middle one."""
    order = np.argsort(theta)
    shifts = np.empty((len(stack), 2))
    shifts[order] = align_k.prealign_neighbours(np.asarray(stack, dtype=np.float64)[order])
    return shifts


def preprocess(
    tilts: xr.DataArray,
    denoiser: str | None = None,
    *,
    background: bool = True,
    alignment: str | bool = "center",
    normalize: bool = True,
    extended: bool = False,
    tilt_axis: float | None = None,
    find_tilt_axis: bool | None = None,
) -> xr.DataArray:
    """Preprocess a raw tilt series (lazy; one task per projection).

    Parameters
    ----------
    tilts : xr.DataArray
        Raw tilt series in counts.
    denoiser : {"bm3d", "nlm", "none"}
        None = ``aetdask.preprocess.denoiser`` (none: on a dense particle's
        projections BM3D blurs neighbouring atoms together; bm3d's licence is
        non-commercial, ``nlm`` is the free alternative).
    background : bool
        Subtract the background.
    alignment : {"center", "neighbours", "none"}
        ``"center"``: centre of mass across the tilt axis and common lines along
        it — for an isolated particle, whose projections all share the same
        centre and common line; ``"neighbours"``: cross-correlation of
        neighbouring tilts chained from the middle of the series — for samples
        that fill the field of view, where neither holds; ``"film"``: common lines
        along the tilt axis only — for a film wider than the field of view across
        it, whose centre of mass says nothing (scanning AET). (True = "center".)
    normalize : bool
        Record equal-intensity (common-line total) scales.
    extended : bool
        The sample is wider than the field of view (a film, scanning AET): its
        projections see a path through it that grows as 1/cos θ, so the scales
        equalise total × cos θ rather than the total. Use with
        ``background=False`` (no vacuum to estimate a background from) and
        ``alignment="film"``.
    tilt_axis : float, optional
        Direction of the tilt axis in the raw images (degrees from x towards +y). None =
        ``aetdask.preprocess.tilt_axis`` (null: along x, as the angles say). Carried in the
        product's Euler angles (``phi``, ``theta``, ``psi``); the projections are not resampled.
    find_tilt_axis : bool, optional
        Where no tilt axis is given and the sample is an isolated particle: True = use the direction the
        images' common lines give (:func:`aetdask.kernels.preprocessing.tilt_axis.estimate_tilt_axis`);
        False = along x. For an isolated particle the estimate is a coordinate of the product whatever the
        axis used (``tilt_axis_found``, ``tilt_axis_found_se``; :func:`axis_warning` says when it
        contradicts the axis used, given or not), and the
        provenance's ``tilt_axis`` is ``"found"`` where it was used. None = ``aetdask.preprocess.find_tilt_axis``.

    Returns
    -------
    xr.DataArray
        The preprocessed tilt series (units ``"a.u."``, same geometry) with coords
        ``noise_alpha``, ``noise_sigma``, ``shift_y``, ``shift_x``, ``scale``, ``edge_cut``
        (and ``phi``, ``theta``, ``psi`` of the turned detector where a tilt axis is given).
    """
    tilts = validate_tilt_series(tilts, values=False)
    alignment = {True: "center", False: "none"}.get(alignment, alignment)
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment: {alignment!r} is not one of {ALIGNMENTS}")
    method = config.get("preprocess.denoiser", denoiser)
    if method not in DENOISERS:
        raise ValueError(f"denoiser: {method!r} is not one of {DENOISERS}")
    data = tilts.data if isinstance(tilts.data, da.Array) else da.from_array(tilts.values, chunks=(1, -1, -1))
    data = data.rechunk({0: 1, 1: -1, 2: -1}).astype(np.float32)
    n = data.shape[0]
    params = data.map_blocks(_noise_params, dtype=np.float64, drop_axis=[1, 2], new_axis=[1],
                             chunks=(data.chunks[0], (2,)), meta=np.empty((0, 2)))
    params = params.rechunk({0: -1}).map_blocks(_series_noise, dtype=np.float64).rechunk({0: data.chunks[0]})
    fade = max(2, int(round(FADE_LENGTH / float(tilts.attrs["pixel_size"]))))
    both = da.blockwise(_clean, "tcyx", data, "tyx", params, "tp", method, None, background, None, fade, None,
                        new_axes={"c": 2}, concatenate=True, dtype=np.float32,
                        meta=np.empty((0, 0, 0, 0), np.float32))
    axis = config.get("preprocess.tilt_axis", tilt_axis)
    found = None
    if not extended and alignment != "neighbours":
        # an isolated particle's common lines say where the axis is (one task on the whole series): used where
        # asked and no axis is given, else recorded for a check of the axis used (axis_warning)
        found = data.rechunk({0: -1, 1: -1, 2: -1}).map_blocks(_axis_estimate, drop_axis=[1, 2], chunks=(2,),
                                                               dtype=np.float64, meta=np.empty((0,)))
    use = axis is None and found is not None and bool(config.get("preprocess.find_tilt_axis", find_tilt_axis))
    # the direction: a number, or the estimate (a dask array (angle, se)) passed to the tasks that need it
    axis = found if use else (0.0 if axis is None else float(axis))
    pass_axis = (axis, "a") if use else (axis, None)
    turning = use or axis != 0.0  # the statistics and the geometry follow a turned axis
    clean, unmasked = both[:, 0], both[:, 1]
    measured, raw = unmasked, data
    if turning:  # the statistics across and along the axis, on turned copies
        turned = da.blockwise(_turned, "tcyx", both, "tcyx", *pass_axis, "constant", None, concatenate=True,
                              dtype=both.dtype, meta=np.empty((0, 0, 0, 0), np.float32))
        raw = da.blockwise(_turned, "tyx", data, "tyx", *pass_axis, "nearest", None, concatenate=True,
                           dtype=data.dtype, meta=np.empty((0, 0, 0), np.float32))
        clean_stats, measured = turned[:, 0], turned[:, 1]
    else:
        clean_stats = clean
    # small per-projection statistics, gathered into one block for the global steps; kept as
    # dask arrays (not delayed calls) so the whole product is optimised, and computed, as one graph
    lines = measured.sum(axis=1)  # (n, nx): the common lines
    per = da.blockwise(_projection_stats, "tv", raw, "tyx", measured, "tyx", clean_stats, "tyx", params, "tp",
                       new_axes={"v": 6}, concatenate=True, dtype=np.float64, meta=np.empty((0, 0)))
    stats = da.concatenate([per, lines.astype(np.float64)], axis=1).rechunk(-1)
    path = 1.0 / np.abs(np.cos(np.deg2rad(tilts.theta.values))) if extended else None
    steps = stats.map_blocks(_global_steps, alignment, normalize, tilts.theta.values, path, chunks=(n, 5),
                             dtype=np.float64)
    shifts, scales, cut = steps[:, :2], steps[:, 2], steps[:, 3] > 0.5
    if alignment == "center":  # projection matching, where the shifts are beyond their noise
        settings = tuple(config.get(key) for key in MATCHING)
        whole = {0: -1, 1: -1, 2: -1}
        shifts = da.blockwise(_matched, "ts", steps, "tq", clean_stats.rechunk(whole), "tyx", raw.rechunk(whole),
                              "tyx", params.rechunk({0: -1}), "tr", tilts.theta.values, None, settings, None,
                              new_axes={"s": 2}, concatenate=True, dtype=np.float64, meta=np.empty((0, 0)))
    if turning:
        shifts = da.blockwise(_image_shifts, "ts", shifts, "ts", *pass_axis, concatenate=True, dtype=np.float64,
                              meta=np.empty((0, 0)))
    if alignment == "neighbours":
        theta = tilts.theta.values
        shifts = unmasked.rechunk({0: -1}).map_blocks(_neighbour_shifts, theta, drop_axis=[1, 2], new_axis=[1],
                                                      chunks=(n, 2), dtype=np.float64, meta=np.empty((0, 2)))
    out = xr.DataArray(clean, dims=tilts.dims, coords=tilts.coords, attrs=dict(tilts.attrs), name="tilt_series")
    out = out.assign_coords(
        noise_alpha=("tilt", params[:, 0]), noise_sigma=("tilt", params[:, 1]),
        shift_y=("tilt", shifts[:, 0]), shift_x=("tilt", shifts[:, 1]), scale=("tilt", scales),
        edge_cut=("tilt", cut),
    )
    if turning:
        given = np.c_[tilts.phi.values, tilts.theta.values, tilts.psi.values]
        euler = (da.blockwise(_turned_euler, "te", da.from_array(given, chunks=-1), "te", *pass_axis,
                              concatenate=True, dtype=np.float64, meta=np.empty((0, 0)))
                 if use else axis_k.turned_angles(given, axis))
        out = out.assign_coords(phi=("tilt", euler[:, 0]), theta=("tilt", euler[:, 1]), psi=("tilt", euler[:, 2]))
    if found is not None:
        out = out.assign_coords(
            tilt_axis_found=((), found[0], {"units": "°", "description": "tilt-axis direction the images' common "
                                            "lines give, from x towards +y (estimate_tilt_axis)"}),
            tilt_axis_found_se=((), found[1], {"units": "°", "description": "its standard error"}))
    out.attrs["units"] = "a.u."
    return add_provenance(out, "preprocess", {"denoiser": method, "background": background,
                                              "alignment": alignment, "normalize": normalize,
                                              "extended": extended, "tilt_axis": "found" if use else axis})


def aligned(tilts: xr.DataArray) -> xr.DataArray:
    """The projections with their recorded ``shift_y``, ``shift_x`` and ``scale`` applied (lazy)."""
    n = tilts.sizes["tilt"]
    sy = tilts.coords["shift_y"].data if "shift_y" in tilts.coords else np.zeros(n)
    sx = tilts.coords["shift_x"].data if "shift_x" in tilts.coords else np.zeros(n)
    sc = tilts.coords["scale"].data if "scale" in tilts.coords else np.ones(n)
    data = tilts.data if isinstance(tilts.data, da.Array) else da.from_array(tilts.values, chunks=(1, -1, -1))
    shifts = da.stack([da.asarray(sy), da.asarray(sx)], axis=1).rechunk((data.chunks[0], 2))
    scales = da.asarray(sc).rechunk(data.chunks[0])
    moved = da.blockwise(_apply, "tyx", data, "tyx", shifts, "tp", scales, "t", concatenate=True,
                         dtype=data.dtype, meta=np.empty((0, 0, 0), data.dtype))
    return tilts.copy(data=moved)


def _apply(block, shifts, scales):
    return fourier_shift(np.asarray(block), shifts) * scales[:, None, None].astype(block.dtype)


def _combine(block):
    return np.stack([align_k.drift_correct(np.asarray(frames, dtype=np.float64))[0] for frames in block])


def combine_frames(frames: xr.DataArray) -> xr.DataArray:
    """Drift-correct and average repeated frames: ``(tilt, frame, y, x)`` → a ``(tilt, y, x)`` tilt series.

    Each tilt's frames are registered, a linear drift (including the shear it
    causes along the slow scan axis y) is fitted and undone, and the frames are
    averaged (:func:`aetdask.kernels.preprocessing.align.drift_correct`); one task per tilt.
    The other coords and attrs are kept; the average is in counts per frame.
    """
    if tuple(frames.dims) != ("tilt", "frame", "y", "x"):
        raise ValueError(f"frames: expected dims ('tilt', 'frame', 'y', 'x'), got {tuple(frames.dims)}")
    data = frames.data if isinstance(frames.data, da.Array) else da.from_array(frames.values, chunks=(1, -1, -1, -1))
    data = data.rechunk({0: 1, 1: -1, 2: -1, 3: -1})
    avg = data.map_blocks(_combine, drop_axis=1, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32))
    out = xr.DataArray(avg, dims=("tilt", "y", "x"),
                       coords={k: v for k, v in frames.coords.items() if "frame" not in v.dims},
                       attrs=dict(frames.attrs), name="tilt_series")
    return add_provenance(out, "preprocess.combine_frames", {"frames": int(frames.sizes["frame"])})
