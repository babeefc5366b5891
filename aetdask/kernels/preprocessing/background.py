"""Background subtraction of one projection by harmonic (Laplace) interpolation.

The seed paper removes the smooth background under a nanoparticle projection by
masking the particle and filling the background inside the mask from its
surroundings. :func:`subtract_background` does this in five steps:

1. **Threshold.** Otsu's threshold (times ``otsu_factor``) of the image blurred by
   a Gaussian of σ = ``dilation / 2`` px, so that the atoms merge into one blob.
2. **Mask.** Holes are filled, specks smaller than 5 % of the largest object are
   dropped (the other objects are kept) and the mask is dilated by ``dilation``
   px (default 3 % of the image side, at least 2 px) so that it holds the atoms'
   tails too.
3. **Soft edge.** The binary mask is blurred by a Gaussian of σ = ``smoothing``
   px and remapped as ``w = clip(2·blur − 1, 0, 1)``: 0 on and outside the mask
   edge, rising to 1 about 2σ inside it. The edge is smooth but never leaves the
   binary mask, so the output outside the mask is exactly 0.
4. **Background.** Outside the mask the background is the image itself. Inside,
   it is the harmonic function (∇²B = 0, 5-point Laplacian) that equals the
   surrounding background on the mask boundary (Dirichlet); where the mask
   touches the image border the border is reflecting (Neumann). The fill is
   a weighted average of the boundary values, so boundary noise mostly
   averages out; optionally (``denoise`` > 0) the outside values are first
   smoothed by a normalised Gaussian convolution of the outside pixels only
   (this lowers noise but biases the boundary values of a curved background
   towards their outward neighbours, so it is off by default). One sparse solve
   (:func:`scipy.sparse.linalg.spsolve`) over the masked pixels: well under a second for 256².
5. **Subtract.** ``corrected = w · (image − background)``.

Steps 1–4 run ``iterations`` times (default 2); later passes threshold
``image − background`` so that a steep background cannot pull background into
the mask.

A harmonic fill reproduces any linear background (a constant, a tilted plane)
exactly. A curved background is underestimated under a hump and overestimated
in a dip, by about ``|∇²B| · R² / 4`` at the centre of a mask of radius R (for a
Gaussian hump of amplitude A and width σ: ``A R² / (2σ²)``); ``trend=2`` removes
a quadratic fitted around the mask first and is then exact for quadratic
backgrounds. No fill can see background structure smaller than the mask.

This is a CPU kernel (SciPy sparse solver, scikit-image Otsu): CuPy input is
copied to the host and the results come back as NumPy arrays.

References
----------
Liao et al., Nature (2026), doi:10.1038/s41586-025-09857-4 (methods: background
subtraction by Laplacian interpolation inside an Otsu mask).
"""

from __future__ import annotations

import numpy as np

from aetdask.backend import asnumpy
import scipy.sparse
import scipy.sparse.linalg
from scipy import ndimage

__all__ = ["subtract_background", "fit_background", "particle_mask", "harmonic_fill", "NoVacuumError"]


class NoVacuumError(ValueError):
    """The sample covers the whole image: there is no background left to interpolate from."""


def particle_mask(image, *, otsu_factor=1.0, dilation=None):
    """Binary particle mask: Otsu threshold of the blurred image, holes filled, dilated.

    Parameters
    ----------
    image : (ny, nx) array
    otsu_factor : float
        Multiplies Otsu's threshold (< 1 grows the mask, > 1 shrinks it).
    dilation : int, optional
        Dilation radius in pixels (disk); default ``max(2, round(0.03 · max(ny, nx)))``.
        The image is blurred by σ = ``dilation / 2`` before thresholding.

    Returns
    -------
    (ny, nx) bool array

    Examples
    --------
    >>> yy, xx = np.mgrid[:32, :32]
    >>> img = np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 20.0)
    >>> m = particle_mask(img, dilation=2)
    >>> bool(m[16, 16]), bool(m[0, 0])
    (True, False)
    """
    from skimage.filters import threshold_otsu

    img = np.asarray(asnumpy(image), dtype=float)
    if img.ndim != 2:
        raise ValueError(f"particle_mask: need one 2-D image, got shape {img.shape}")
    if dilation is None:
        dilation = max(2, int(round(0.03 * max(img.shape))))
    dilation = int(dilation)
    blurred = ndimage.gaussian_filter(img, max(dilation / 2.0, 0.5), mode="nearest")
    if np.ptp(blurred) == 0:
        return np.zeros(img.shape, bool)
    mask = blurred > otsu_factor * threshold_otsu(blurred)
    mask = ndimage.binary_fill_holes(mask)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
        keep = np.concatenate([[False], sizes >= 0.05 * sizes.max()])
        mask = keep[labels]
    if dilation > 0:
        r = np.arange(-dilation, dilation + 1)
        disk = r[:, None] ** 2 + r[None, :] ** 2 <= dilation**2
        mask = ndimage.binary_dilation(mask, structure=disk)
        mask = ndimage.binary_fill_holes(mask)
    return mask


def harmonic_fill(values, mask):
    """Replace ``values`` inside ``mask`` by the harmonic interpolant of the values around it.

    Solves the 5-point Laplace equation on the masked pixels with the unmasked
    4-neighbours as Dirichlet data; image borders are reflecting (Neumann).

    Examples
    --------
    >>> yy, xx = np.mgrid[:16, :16].astype(float)
    >>> plane = 2.0 + 0.5 * yy - 0.25 * xx
    >>> m = np.zeros((16, 16), bool); m[4:12, 3:10] = True
    >>> bool(np.allclose(harmonic_fill(np.where(m, 99.0, plane), m), plane))
    True
    """
    v = np.array(asnumpy(values), dtype=float)
    m = np.asarray(asnumpy(mask), dtype=bool)
    if not m.any():
        return v
    if m.all():
        raise NoVacuumError("harmonic_fill: the mask covers the whole image; no background left to interpolate")
    ny, nx = m.shape
    index = np.full(m.shape, -1, dtype=np.int64)
    iy, ix = np.nonzero(m)
    n = len(iy)
    index[iy, ix] = np.arange(n)
    rows, cols, rhs = [], [], np.zeros(n)
    degree = np.zeros(n)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        jy, jx = iy + dy, ix + dx
        inside = (jy >= 0) & (jy < ny) & (jx >= 0) & (jx < nx)  # off-image neighbours: Neumann
        degree += inside
        k = np.nonzero(inside)[0]
        nb = index[jy[k], jx[k]]
        unknown = nb >= 0
        rows.append(k[unknown])
        cols.append(nb[unknown])
        known = k[~unknown]
        np.add.at(rhs, known, v[jy[known], jx[known]])
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    a = scipy.sparse.csc_matrix(
        (np.concatenate([degree, -np.ones(len(r))]), (np.concatenate([np.arange(n), r]), np.concatenate([np.arange(n), c]))),
        shape=(n, n),
    )
    v[iy, ix] = scipy.sparse.linalg.spsolve(a, rhs)
    return v


def subtract_background(image, *, otsu_factor=1.0, smoothing=1.0, dilation=None, denoise=0.0, iterations=2, trend=0):
    """Remove the smooth background under a particle in one 2-D projection.

    See the module docstring for the method (Otsu mask → soft edge → harmonic
    fill of the background inside the mask → subtraction).

    Parameters
    ----------
    image : (ny, nx) array
        One projection (particle bright on a smooth background).
    otsu_factor : float
        Multiplies Otsu's threshold.
    smoothing : float
        Width σ (px) of the Gaussian that softens the mask edge; 0 gives a hard edge.
    dilation : int, optional
        Mask dilation in px; default 3 % of the larger side, at least 2.
    denoise : float
        σ (px) of the normalised Gaussian smoothing of the outside background
        before it is used as boundary values; 0 (default) uses the raw pixels.
    iterations : int
        Mask-and-fill passes. The first thresholds the image itself; each
        later one thresholds ``image − background`` of the pass before, so a
        strong background slope cannot pull part of the background into the mask.
    trend : {0, 1, 2}
        0 (default, the seed paper's method): plain harmonic fill. 2: first fit
        a quadratic polynomial to a ring of background around the mask (width
        ``max(4, 2 · dilation)`` px), fill only the remainder harmonically and
        add the polynomial back; this is exact for quadratic backgrounds and
        removes most of the error a curved background (a hump narrower than a
        few particle sizes) leaves under a plain harmonic fill. 1 fits a plane
        (only differs from 0 where the mask touches the image border).

    Returns
    -------
    corrected : (ny, nx) float array
        ``mask · (image − background)``; exactly 0 outside the particle mask.
    background : (ny, nx) float array
        The image outside the mask, the harmonic fill inside.
    mask : (ny, nx) float array
        Soft particle weight in [0, 1]; ``mask > 0`` lies inside the binary mask.

    Examples
    --------
    A blob on a tilted plane: the plane is found under the blob and removed.

    >>> yy, xx = np.mgrid[:48, :48]
    >>> blob = 5 * np.exp(-((yy - 24) ** 2 + (xx - 22) ** 2) / 8.0)
    >>> plane = 3.0 + 0.02 * xx - 0.01 * yy
    >>> corrected, background, mask = subtract_background(blob + plane, dilation=3)
    >>> float(abs(background - plane).max()) < 0.05, bool(np.all(corrected[mask == 0] == 0))
    (True, True)
    """
    img = np.asarray(asnumpy(image), dtype=float)
    if trend not in (0, 1, 2):
        raise ValueError(f"subtract_background: trend must be 0, 1 or 2, got {trend!r}")
    if dilation is None:
        dilation = max(2, int(round(0.03 * max(img.shape))))
    background = np.zeros_like(img)
    for _ in range(max(1, int(iterations))):
        hard = particle_mask(img - background, otsu_factor=otsu_factor, dilation=dilation)
        background = _fill_background(img, hard, denoise, trend, max(4, 2 * int(dilation)))
    if smoothing > 0:
        soft = np.clip(2.0 * ndimage.gaussian_filter(hard.astype(float), smoothing, mode="nearest") - 1.0, 0.0, 1.0)
        soft *= hard
    else:
        soft = hard.astype(float)
    corrected = soft * (img - background)
    return corrected, background, soft


def _fill_background(img, hard, denoise, trend, ring_width):
    """The image outside ``hard``; inside, the harmonic fill from the (smoothed) outside values."""
    outside = ~hard
    if not hard.any():
        return img.copy()
    boundary = img
    if denoise > 0 and outside.any():
        num = ndimage.gaussian_filter(np.where(outside, img, 0.0), denoise, mode="nearest")
        den = ndimage.gaussian_filter(outside.astype(float), denoise, mode="nearest")
        boundary = np.where(outside, num / np.where(den > 1e-12, den, 1.0), img)
    poly = 0.0
    if trend > 0:
        ring = ndimage.binary_dilation(hard, iterations=ring_width) & outside
        yy, xx = np.indices(img.shape, dtype=float)
        yy = (yy - yy[hard].mean()) / img.shape[0]
        xx = (xx - xx[hard].mean()) / img.shape[1]
        terms = [np.ones_like(yy), yy, xx] + ([yy * yy, xx * xx, yy * xx] if trend == 2 else [])
        basis = np.stack(terms, axis=-1)
        if ring.sum() >= 2 * len(terms):
            coef = np.linalg.lstsq(basis[ring], boundary[ring], rcond=None)[0]
            poly = basis @ coef
    return np.where(hard, harmonic_fill(boundary - poly, hard) + poly, img)


#: Largest polynomial order :func:`fit_background` considers.
MAX_ORDER = 2


def _poly_basis(shape, order, centre):
    yy, xx = np.indices(shape, dtype=float)
    yy = (yy - centre[0]) / shape[0]
    xx = (xx - centre[1]) / shape[1]
    terms = [np.ones_like(yy)]
    if order >= 1:
        terms += [yy, xx]
    if order >= 2:
        terms += [yy * yy, xx * xx, yy * xx]
    return np.stack(terms, axis=-1)


def _structure_test(residual, vacuum, block):
    """p-value of "the residual on the vacuum is noise": its means over blocks of ``block``² px
    (≥ 16 vacuum pixels each) against their standard errors, as one χ² over the blocks."""
    from scipy import stats

    ny, nx = residual.shape
    by, bx = np.arange(ny) // block, np.arange(nx) // block
    label = (by[:, None] * (bx.max() + 1) + bx[None, :])[vacuum]
    values = residual[vacuum]
    n = np.bincount(label)
    ok = n >= 16
    if ok.sum() < 4:
        return 1.0
    mean = np.bincount(label, values)[ok] / n[ok]
    var = float(np.var(values))
    chi2 = float(np.sum(mean**2 * n[ok]) / max(var, 1e-300))
    return float(stats.chi2.sf(chi2, int(ok.sum())))


def fit_background(image, vacuum, *, max_order=MAX_ORDER, block=None, ring=None, p_structure=1e-3):
    """The background under a particle, from the pixels known to be vacuum.

    A polynomial of order 0 (a constant), 1 (a plane) or 2, whichever the vacuum pixels
    support by the Bayesian information criterion: a flat background gets a constant, whose
    error is the vacuum's mean noise, not a curved surface extrapolated from the corners of
    the field. Only if what that polynomial leaves on the vacuum is still structured (block
    means of ``block``² px inconsistent with the noise at ``p_structure``) is the background
    taken to vary on the particle's own scale: a quadratic is then fitted to the vacuum in a
    ``ring`` px wide around the particle and the rest filled in harmonically under it
    (:func:`harmonic_fill`, the seed paper's method, exact for quadratic backgrounds).

    Parameters
    ----------
    image : (ny, nx) array
        The projection, with independent pixel noise (raw counts, not a denoised image).
    vacuum : (ny, nx) bool array
        Pixels with no signal of the particle (e.g. :func:`aetdask.kernels.preprocessing.noise.vacuum_mask`).
    max_order : {0, 1, 2}
    block : int, optional
        Block size of the structure test; default 1/16 of the larger side, at least 4 px.
    ring : int, optional
        Width of the ring of the local fit; default 1/16 of the larger side, at least 4 px.

    Returns
    -------
    background : (ny, nx) float array
    info : dict
        ``order`` (the polynomial's), ``harmonic`` (whether the local fit and harmonic fill
        were needed) and ``vacuum_fraction``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> yy, xx = np.mgrid[:64, :64]
    >>> blob = 20 * np.exp(-((yy - 32) ** 2 + (xx - 30) ** 2) / 100.0)
    >>> vacuum = (yy - 32) ** 2 + (xx - 30) ** 2 > 30**2
    >>> bg, info = fit_background(rng.poisson(blob + 1.0).astype(float), vacuum)
    >>> info["order"], info["harmonic"], bool(abs(bg.mean() - 1.0) < 0.05)
    (0, False, True)
    """
    img = np.asarray(asnumpy(image), dtype=float)
    vac = np.asarray(asnumpy(vacuum), dtype=bool)
    if vac.shape != img.shape:
        raise ValueError(f"fit_background: mask shape {vac.shape} is not the image's {img.shape}")
    n = int(vac.sum())
    if n < 16:
        raise NoVacuumError("fit_background: fewer than 16 vacuum pixels; no background to fit")
    support = ~vac
    centre = np.argwhere(support).mean(axis=0) if support.any() else np.array(img.shape) / 2.0
    values = img[vac]
    best = None
    for order in range(int(max_order) + 1):
        basis = _poly_basis(img.shape, order, centre)
        k = basis.shape[-1]
        if n < 4 * k:
            break
        coef = np.linalg.lstsq(basis[vac], values, rcond=None)[0]
        rss = float(np.sum((values - basis[vac] @ coef) ** 2))
        bic = n * np.log(max(rss, 1e-300) / n) + k * np.log(n)
        if best is None or bic < best[0]:
            best = (bic, order, basis @ coef)
    _, order, poly = best
    side = max(img.shape)
    block = max(4, int(round(side / 16))) if block is None else int(block)
    structured = bool(support.any()) and _structure_test(img - poly, vac, block) < p_structure
    if structured:
        ring = max(4, int(round(side / 16))) if ring is None else int(ring)
        near = ndimage.binary_dilation(support, iterations=ring) & vac
        basis = _poly_basis(img.shape, 2, centre)
        if near.sum() >= 4 * basis.shape[-1]:
            poly = basis @ np.linalg.lstsq(basis[near], img[near], rcond=None)[0]
        background = np.where(vac, img, harmonic_fill(img - poly, support) + poly)
    else:
        background = poly
    return background, {"order": int(order), "harmonic": structured, "vacuum_fraction": n / img.size}
