"""The preprocessing stage: raw counts in, clean projections (with their alignment) out.

Per projection (one Dask task each): noise estimate (α, σ) → generalized
Anscombe VST → rescale to [0.15, 0.85] → denoise (BM3D by default) → exact
unbiased inverse VST → least-squares rescale to the counts → background
subtraction. Then the global steps, small reductions over the series:
centre of mass across the tilt axis, common-line alignment along it, and
equal integrated intensity, each estimate shrunk towards "no correction" by
its photon-noise error (so noise is not mistaken for misalignment). The
alignment is recorded, not applied: the
product carries ``shift_y``, ``shift_x`` (pixels) and ``scale`` coords on
``tilt`` (applied by :func:`aligned` and by the reconstruction), together with
the noise parameters ``noise_alpha`` and ``noise_sigma``.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from aetdask import config
from aetdask.errors import InputError
from aetdask.kernels import align as align_k
from aetdask.kernels import background as background_k
from aetdask.kernels import noise as noise_k
from aetdask.kernels.denoise import DENOISERS, denoise
from aetdask.kernels.shift import fourier_shift
from aetdask.schema import add_provenance, validate_tilt_series


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


#: Length (Å) over which the particle's signal fades into the background: the aberration-free
#: probe's Airy tails carry a few per cent of each atom's signal several Å out (≈ 3 % beyond 5 Å at
#: 17.5 mrad and 200 kV). It sets the particle mask's dilation, converted to pixels. Under the
#: particle the background is a quadratic trend, fitted to a ring around the mask, plus a harmonic
#: fill of the rest.
FADE_LENGTH = 4.0


def _clean(block, params, method, subtract, pixel_size):
    """(n, 2, ny, nx): the product (background removed, zero outside the particle) and the
    same without the particle mask, whose centre of mass and common line are not cut by it."""
    out = np.empty((block.shape[0], 2, *block.shape[1:]), dtype=block.dtype)
    fade = max(2, int(round(FADE_LENGTH / pixel_size)))
    for k, img in enumerate(block):
        alpha, sigma = params[k]
        den = denoise_image(img, alpha, sigma, method)
        if subtract:
            try:
                out[k, 0], bg, _ = background_k.subtract_background(den, dilation=fade, trend=2)
            except background_k.NoVacuumError:
                raise InputError(
                    "preprocess: the sample fills the whole field of view, so there is no vacuum to take the "
                    "background from; expected an isolated particle — for a film wider than the field of view "
                    "use `aetdask run --scanning` (or preprocess(..., background=False))") from None
            out[k, 1] = den - bg
        else:
            out[k, 0] = out[k, 1] = den
    return out


# ------------------------------------------------------------------ global steps (small reductions)
def _uncertainty(raw, signal, params):
    return np.stack([align_k.photon_uncertainty(r, w, *p) for r, w, p in zip(raw, signal, params)])


def _com_dy(block):
    return align_k.center_of_mass_shifts(np.asarray(block, dtype=np.float64))


ALIGNMENTS = ("center", "neighbours", "film", "none")


def _global_steps(stats, alignment, normalize, path=None):
    """From per-projection statistics [CoM shift | errors (y, x, total) | common line] to
    (shift_y, shift_x, scale) columns, each shrunk by its photon-noise error (:func:`shrink`).

    ``path`` (n,): the relative path length through the sample at each tilt
    (1/cos θ for a film wider than the field of view; None = 1, an isolated particle):
    the scales equalise total / path."""
    com_dy, errors, lines = stats[:, 0], stats[:, 1:4], stats[:, 4:][:, None, :]
    n = len(stats)
    out = np.zeros((n, 3))
    out[:, 2] = 1.0
    if alignment == "center":
        out[:, 0] = align_k.shrink(com_dy, errors[:, 0])
    if alignment in ("center", "film"):
        out[:, 1] = align_k.shrink(align_k.common_line_shifts(lines), errors[:, 1])
    if normalize:
        scales = align_k.common_line_scales(lines if path is None else lines / np.asarray(path)[:, None, None])
        out[:, 2] = align_k.shrink(scales, errors[:, 2] * scales, center=float(np.mean(scales)))
    return out


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
) -> xr.DataArray:
    """Preprocess a raw tilt series (lazy; one task per projection).

    Parameters
    ----------
    tilts : xr.DataArray
        Raw tilt series in counts.
    denoiser : {"bm3d", "nlm", "none"}
        None = ``aetdask.preprocess.denoiser`` (bm3d; its licence is
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

    Returns
    -------
    xr.DataArray
        The preprocessed tilt series (units ``"a.u."``, same geometry) with coords
        ``noise_alpha``, ``noise_sigma``, ``shift_y``, ``shift_x``, ``scale``.
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
    both = da.blockwise(_clean, "tcyx", data, "tyx", params, "tp", method, None, background, None,
                        float(tilts.attrs["pixel_size"]), None,
                        new_axes={"c": 2}, concatenate=True, dtype=np.float32,
                        meta=np.empty((0, 0, 0, 0), np.float32))
    clean, unmasked = both[:, 0], both[:, 1]
    # small per-projection statistics, gathered into one block for the global steps; kept as
    # dask arrays (not delayed calls) so the whole product is optimised, and computed, as one graph
    lines = unmasked.sum(axis=1)  # (n, nx): the common lines
    com = unmasked.map_blocks(_com_dy, dtype=np.float64, drop_axis=[1, 2], meta=np.empty((0,)))
    errors = da.blockwise(_uncertainty, "tv", data, "tyx", unmasked, "tyx", params, "tp", new_axes={"v": 3},
                          concatenate=True, dtype=np.float64, meta=np.empty((0, 0)))
    stats = da.concatenate([com[:, None], errors, lines.astype(np.float64)], axis=1).rechunk(-1)
    path = 1.0 / np.abs(np.cos(np.deg2rad(tilts.theta.values))) if extended else None
    steps = stats.map_blocks(_global_steps, alignment, normalize, path, chunks=(n, 3), dtype=np.float64)
    shifts, scales = steps[:, :2], steps[:, 2]
    if alignment == "neighbours":
        theta = tilts.theta.values
        shifts = unmasked.rechunk({0: -1}).map_blocks(_neighbour_shifts, theta, drop_axis=[1, 2], new_axis=[1],
                                                      chunks=(n, 2), dtype=np.float64, meta=np.empty((0, 2)))
    out = xr.DataArray(clean, dims=tilts.dims, coords=tilts.coords, attrs=dict(tilts.attrs), name="tilt_series")
    out = out.assign_coords(
        noise_alpha=("tilt", params[:, 0]), noise_sigma=("tilt", params[:, 1]),
        shift_y=("tilt", shifts[:, 0]), shift_x=("tilt", shifts[:, 1]), scale=("tilt", scales),
    )
    out.attrs["units"] = "a.u."
    return add_provenance(out, "preprocess", {"denoiser": method, "background": background,
                                              "alignment": alignment, "normalize": normalize,
                                              "extended": extended})


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
    averaged (:func:`aetdask.kernels.align.drift_correct`); one task per tilt.
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
