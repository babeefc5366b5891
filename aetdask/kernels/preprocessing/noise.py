"""Mixed Poisson–Gaussian noise of one ADF-STEM projection: estimate it, stabilise it.

The noise model is ``z = α·P + N`` with ``P ~ Poisson(y/α)`` and ``N ~ N(0, σ²)``, ``y``
the clean image in the units of ``z`` (so ``E[z] = y`` and ``Var[z] = α·y + σ²``). These
are the first preprocessing steps of the seed paper's projections:

1. :func:`background_mask` — pixels with no particle;
2. :func:`estimate_noise` — ``(α, σ)`` from the image itself;
3. :func:`anscombe` — the generalized Anscombe transform, after which the noise is close
   to ``N(0, 1)``;
4. :func:`to_unit_range` — map the stabilised image to ``[lo, hi]`` (with the noise std
   in those units) for BM3D, and :func:`from_unit_range` back;
5. :func:`inverse_anscombe` — the exact unbiased inverse (Mäkitalo & Foi), computed here;
6. :func:`least_squares_rescale` / :func:`apply_rescale` — fit the result back onto the
   raw image's scale.

Everything is NumPy/SciPy/scikit-image on one 2-D image (CuPy arrays must be moved to
the host first).

References
----------
.. [1] M. Mäkitalo and A. Foi, "Optimal inversion of the generalized Anscombe
   transformation for Poisson-Gaussian noise", IEEE Trans. Image Process. 22(1),
   91–103 (2013).
.. [2] A. Foi, M. Trimeche, V. Katkovnik, K. Egiazarian, "Practical Poissonian-Gaussian
   noise modeling and fitting for single-image raw-data", IEEE Trans. Image Process.
   17(10), 1737–1754 (2008).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage, optimize, special

__all__ = [
    "background_mask",
    "vacuum_mask",
    "estimate_noise",
    "anscombe",
    "inverse_anscombe",
    "to_unit_range",
    "from_unit_range",
    "least_squares_rescale",
    "apply_rescale",
]


# --------------------------------------------------------------------------------------
# background mask
# --------------------------------------------------------------------------------------

def _noise_std_mad(image):
    """Robust std of the pixel noise: MAD of the diagonal 2×2 Haar details."""
    m = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    b = image[: m[0], : m[1]]
    h = (b[0::2, 0::2] - b[0::2, 1::2] - b[1::2, 0::2] + b[1::2, 1::2]) / 2
    return float(np.median(np.abs(h - np.median(h))) / 0.6744897501960817)


def _remove_small(mask, min_size):
    """Drop 8-connected components of `mask` with fewer than `min_size` pixels."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


#: Parts of the thresholded particle smaller than this fraction of the largest, and not next to it
#: (farther than the mask's dilation), are noise, not sample: at low counts the smoothed noise crosses
#: Otsu's threshold in specks all over the field.
_SPECK_FRACTION = 0.05


def _keep_large(mask, fraction, near):
    """Keep the 8-connected components of `mask` of at least `fraction` of the largest one's size, or
    within `near` px of it (pieces of the particle itself: its faint edge breaks up at low counts)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest = labels == int(np.argmax(sizes))
    distance = ndimage.distance_transform_edt(~largest)
    closest = ndimage.minimum(distance, labels, index=np.arange(n + 1))
    keep = (sizes >= fraction * sizes.max()) | (np.asarray(closest) <= near)
    keep[0] = False
    return keep[labels]


def _fill_small_holes(mask, min_size):
    """Fill 4-connected holes of `mask` (not touching the border) smaller than `min_size`."""
    labels, n = ndimage.label(~mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    fill = sizes < min_size
    fill[0] = False
    fill[border] = False
    return mask | fill[labels]


#: Tails weaker than this fraction of the particle's mean signal are left to the background.
_TAIL_FLOOR = 1e-2


def _grow_into_tails(image, particle, z_crit=2.5, window=5):
    """Distance (px) out to which the particle's tails are detectable around `particle`.

    Pixels outside `particle` are binned in 1-px shells of distance to it. The far
    background level is the mean of the outer half of those pixels (by distance). Going
    outwards, the mean over `window` consecutive shells (centred) is compared with that
    level; the first one within `z_crit` standard errors of it (or within
    :data:`_TAIL_FLOOR` of the particle's own mean signal above it, which ends the growth
    on noise-free images) ends the particle, whose extent is that shell plus the half window
    its average reached beyond.
    """
    outside = ~particle
    d_out = ndimage.distance_transform_edt(outside)[outside]
    if d_out.size < 16:
        return 0.0
    values = image[outside]
    level = values[d_out >= np.median(d_out)].mean()
    shell = np.ceil(d_out).astype(int)
    kernel = np.ones(window)

    def windowed(weights=None):
        return np.convolve(np.bincount(shell, weights=weights), kernel, mode="same")

    n = np.maximum(windowed(), 1)
    mean = windowed(values) / n
    mean_sq = windowed(values**2) / n
    se = np.sqrt(np.maximum(mean_sq - mean**2, 0) / n)
    floor = _TAIL_FLOOR * max(float(image[particle].mean()) - level, 0.0)
    quiet = (mean - level <= np.maximum(z_crit * se, floor)) | (n < 8)
    quiet[0] = False
    first = int(np.argmax(quiet)) if quiet.any() else quiet.size
    return float(first + window // 2)


def background_mask(image, *, otsu_factor=0.9, smoothing=2.0, min_size=None, dilation=None, max_reach=None):
    """Boolean mask, True where a pixel is background (no particle).

    1. The image is normalised to ``[0, 1]`` (0.1 and 99.9 percentiles, clipped) and
       smoothed with the edge-preserving total-variation filter
       :func:`skimage.restoration.denoise_tv_chambolle`, weight = `smoothing` × the
       robust noise std of the normalised image (MAD of the diagonal 2×2 Haar details).
    2. Particle: smoothed > `otsu_factor` × Otsu's threshold of the smoothed image;
       components smaller than `min_size` pixels, or than 5 % of the largest and farther
       from it than `dilation`, are removed (specks of noise) and holes smaller than
       `min_size` filled (default: 0.1 % of the pixels, at least 16).
    3. Tails: the particle is grown in 1-px shells of distance while the raw image
       averaged over 5 shells is more than 2.5 standard errors above the far background
       (the outer half of the remaining pixels), plus 2 px for the half window.
       Averaging over whole shells detects tails far below the per-pixel noise: on a
       128² Gaussian blob (peak 18 over 2, std 8 or 12 px, the noise of the tests) no
       background pixel came closer than 3.04 blob σ in 360 noisy realisations.
       At most `max_reach` px (None: no limit): tails are the probe's and fade within a
       few Å, whereas a background that varies on the particle's own scale (a hump of the
       support film) would otherwise be taken for tails without end.
    4. The particle is dilated by `dilation` more pixels (default 2 % of the larger
       image side, at least 2). Background = not particle.

    If that leaves fewer than 5 % of the pixels, the tails reach the field's edges: the
    background is the tenth of the field farthest from the particle found in 2, if that
    particle stays inside the field (on at most 5 % of its border pixels) and that tenth
    lies at least `dilation` px from it; otherwise (the sample fills the field) the mask
    falls back to the darkest 10 % of the smoothed image.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((64, 64)); img[24:40, 24:40] = 10
    >>> bg = background_mask(img + np.random.default_rng(0).normal(0, 1, img.shape))
    >>> bool(bg[0, 0]), bool(bg[32, 32]), bool(bg[22, 32])
    (True, False, False)
    """
    return _background_mask(image, otsu_factor=otsu_factor, smoothing=smoothing, min_size=min_size,
                             dilation=dilation, max_reach=max_reach)[0]


def _background_mask(image, *, otsu_factor=0.9, smoothing=2.0, min_size=None, dilation=None, max_reach=None):
    """:func:`background_mask` and whether it fell back to the darkest decile."""
    image = np.asarray(image, dtype=float)
    if image.ndim != 2:
        raise ValueError(f"background_mask expects a 2-D image, got shape {image.shape}")
    from skimage.filters import threshold_otsu
    from skimage.restoration import denoise_tv_chambolle

    if min_size is None:
        min_size = max(16, int(round(1e-3 * image.size)))
    if dilation is None:
        dilation = max(2.0, 0.02 * max(image.shape))

    lo, hi = np.percentile(image, [0.1, 99.9])
    if not hi > lo:
        return np.ones(image.shape, dtype=bool), False
    norm = np.clip((image - lo) / (hi - lo), 0.0, 1.0)
    weight = smoothing * max(_noise_std_mad(norm), 1e-3)
    smooth = denoise_tv_chambolle(norm, weight=weight)

    particle = smooth > otsu_factor * threshold_otsu(smooth)
    particle = _remove_small(particle, min_size)
    particle = _keep_large(particle, _SPECK_FRACTION, dilation)
    particle = _fill_small_holes(particle, min_size)
    core = particle
    if particle.any():
        reach = _grow_into_tails(image, particle)
        if max_reach is not None:
            reach = min(reach, float(max_reach))
        reach += dilation
        particle = ndimage.distance_transform_edt(~particle) <= reach
    background = ~particle
    if background.mean() < 0.05:
        farthest = _farthest_from(core, dilation)
        if farthest is not None:
            return farthest, False
        return smooth <= np.percentile(smooth, 10), True
    return background, False


#: Largest share of the field's border pixels an isolated particle's core may cover (a film or a
#: sample wider than the field covers a large part of it: 24–43 % on the tests' film).
_BORDER_SHARE = 0.05


def _farthest_from(core, distance):
    """The tenth of the field farthest from the particle's `core`, where the core stays inside the
    field (on at most :data:`_BORDER_SHARE` of its border pixels) and that tenth lies at least
    `distance` px from it: a particle whose tails reach the field's edges, the background taken
    where they are weakest. None otherwise (the sample fills the field)."""
    if not core.any() or core.all():
        return None
    border = np.concatenate([core[0], core[-1], core[1:-1, 0], core[1:-1, -1]])
    if border.mean() > _BORDER_SHARE:
        return None
    d = ndimage.distance_transform_edt(~core)
    cut = np.percentile(d, 90)
    if cut < distance:
        return None
    return d >= cut


def vacuum_mask(image, **kwargs):
    """:func:`background_mask` where it finds a background, None where it falls back (the
    sample covers more than 95 % of the field: no pixel is known to hold no signal).

    >>> img = np.full((64, 64), 10.0); img[:6, :6] = 0.0
    >>> print(vacuum_mask(img))
    None
    """
    mask, fallback = _background_mask(image, **kwargs)
    return None if fallback else mask


# --------------------------------------------------------------------------------------
# noise estimation
# --------------------------------------------------------------------------------------

_RING = np.ones((3, 3)) / 8.0
_RING[1, 1] = 0.0


def _bin_statistics(image):
    """Per 2×2 bin: own mean, own variance (gradient-corrected), mean of the 8 neighbours.

    The ddof=1 variance of the 4 pixels of a bin equals the mean square of its three Haar
    details (vertical, horizontal, diagonal). A linear gradient leaks into the vertical
    and horizontal details; it is estimated from the neighbouring bins (independent of the
    bin's own noise) and subtracted. The estimate's noise adds ``v/96`` to each of those
    two squared details, i.e. a factor ``1 + 1/144`` on the variance, removed here.
    """
    ny, nx = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    b = image[:ny, :nx]
    a, bb, c, d = b[0::2, 0::2], b[0::2, 1::2], b[1::2, 0::2], b[1::2, 1::2]
    m = (a + bb + c + d) / 4
    h_rows = (a + bb - c - d) / 2
    h_cols = (a - bb + c - d) / 2
    h_diag = (a - bb - c + d) / 2
    k = np.array([[-1.0, -1.0, -1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]) / 12.0
    g_rows = ndimage.correlate(m, k, mode="nearest")      # per pixel along axis 0
    g_cols = ndimage.correlate(m, k.T, mode="nearest")    # per pixel along axis 1
    v = ((h_rows + g_rows) ** 2 + (h_cols + g_cols) ** 2 + h_diag**2) / 3 / (1 + 1 / 144)
    s = ndimage.correlate(m, _RING, mode="nearest")
    inner = np.zeros(m.shape, dtype=bool)
    inner[1:-1, 1:-1] = True
    return m, v, s, inner


def _group_fit(m, v, s, n_groups):
    """Weighted LS fit of ``mean(v) = α·mean(m) + c`` over groups of bins sorted by `s`.

    Grouping by the neighbour mean `s` (not by the bin's own mean) keeps the selection
    independent of the bin's own noise; the group means of `m` are precise, so the
    regression has no errors-in-variables attenuation. Returns (α, c, standard error of α).
    """
    order = np.argsort(s, kind="stable")
    groups = np.array_split(order, n_groups)
    mean_m = np.array([m[g].mean() for g in groups])
    mean_v = np.array([v[g].mean() for g in groups])
    var_v = np.array([max(v[g].var(ddof=1), 1e-300) / len(g) for g in groups])
    w = 1.0 / var_v
    design = np.c_[mean_m, np.ones(n_groups)]
    normal = design.T @ (design * w[:, None])
    coef = np.linalg.solve(normal, design.T @ (w * mean_v))
    resid = mean_v - design @ coef
    chi2 = float(np.sum(w * resid**2)) / max(n_groups - 2, 1)
    cov = np.linalg.inv(normal) * max(chi2, 1.0)
    return float(coef[0]), float(coef[1]), float(np.sqrt(cov[0, 0]))


#: Border (px) left out of the high-pass statistics: within it the mirror image of the noise
#: reaches the filter's support.
_HIGHPASS_BORDER = 8
#: Fewest frequencies of the noise-only band, as a fraction of all, for it to be used.
_HIGHPASS_MIN_FRACTION = 0.05


def noise_band(image, annuli=48, z_crit=3.0):
    """The spatial frequencies of ``image`` that carry only noise: ``(r_c, floor)`` or None.

    An ADF-STEM image is the object convolved with the probe's intensity (and the source's
    partial-coherence blur): its signal is band-limited, at most to ``2α/λ`` of the probe's
    aperture, and in practice fades well before it, whereas Poisson and Gaussian noise are
    white. The periodogram (Hann window, normalised so that white noise of variance V gives V,
    the window-weighted mean variance) is averaged in ``annuli`` rings of radius
    ``r = |q| / q_Nyquist``; the noise floor is the mean of the outermost rings (``r > 1``, the
    spectrum's corners), and their scatter about it measures how much more than ``1/√n`` the
    rings scatter (correlated neighbours, non-stationary noise). The band is the set of rings
    from ``r_c`` outwards, ``r_c`` the innermost ring beyond which no ring lies more than
    ``z_crit`` of those standard errors above the floor, plus one ring of margin. None when the
    corners themselves are not flat (a straight line through them falls outwards by more than 3
    standard errors: signal up to the pixel scale) or the band holds fewer than 5 % of the frequencies.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> yy, xx = np.mgrid[:128, :128] - 64
    >>> smooth = 10 + 20 * np.exp(-(xx**2 + yy**2) / (2 * 15.0**2))
    >>> r_c, floor = noise_band(rng.poisson(smooth).astype(float))
    >>> bool(r_c < 0.5)
    True
    >>> atoms = np.zeros((128, 128)); atoms[tuple(rng.integers(0, 128, (2, 600)))] = 40.0
    >>> sharp = 2 + ndimage.gaussian_filter(atoms, 0.5)  # atoms of 0.5 px: signal up to the pixel scale
    >>> print(noise_band(rng.poisson(sharp).astype(float)))
    None
    """
    img = np.asarray(image, dtype=float)
    ny, nx = img.shape
    win = np.outer(np.hanning(ny), np.hanning(nx))
    power = np.abs(np.fft.fft2((img - img.mean()) * win)) ** 2 / float(np.sum(win**2))
    r = np.hypot(*np.meshgrid(2 * np.fft.fftfreq(ny), 2 * np.fft.fftfreq(nx), indexing="ij"))
    edges = np.linspace(0.0, np.sqrt(2.0), annuli + 1)
    ring = np.clip(np.digitize(r.ravel(), edges) - 1, 0, annuli - 1)
    n = np.bincount(ring, minlength=annuli)
    mean = np.bincount(ring, power.ravel(), minlength=annuli) / np.maximum(n, 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    corner = (centres > 1.0) & (n > 0)
    if corner.sum() < 4:
        return None
    floor = float(np.sum(mean[corner] * n[corner]) / n[corner].sum())
    if not floor > 0:
        return None
    # periodogram values of neighbouring frequencies are correlated (the window, the noise's own
    # variations) and the rings scatter more than 1/√n says: their dispersion is measured on the
    # corner rings about a straight line in r, whose slope tests that the corners are flat
    rc, nc, mc = centres[corner], n[corner], mean[corner]
    x = rc - np.sum(nc * rc) / nc.sum()
    slope = float(np.sum(nc * x * mc) / np.sum(nc * x**2))
    resid = mc - floor - slope * x
    dispersion = max(1.0, float(np.sum(nc * resid**2)) / floor**2 / max(len(rc) - 2, 1))
    slope_se = floor * np.sqrt(dispersion / float(np.sum(nc * x**2)))
    if -slope > 3 * slope_se:
        return None
    z = (mean - floor) / (floor * np.sqrt(dispersion / np.maximum(n, 1)))
    loud = np.nonzero((z > z_crit) & (n > 0) & ~corner)[0]
    first = (loud.max() + 2) if loud.size else 1  # one ring of margin
    if first >= annuli:
        return None
    r_c = float(edges[first])
    if np.mean(r >= r_c) < _HIGHPASS_MIN_FRACTION:
        return None
    return r_c, floor


def _highpass_statistics(image, r_c):
    """Per pixel: the squared high-pass ``h²`` (frequencies ``r ≥ r_c`` only) and the local mean
    ``k * z`` it measures the variance of, with the passed fraction ``f`` of the frequencies.

    For white noise of slowly varying variance ``V``, ``E[h(x)²] = Σ_y p(x−y)² V(y)`` with ``p``
    the filter's impulse response (``Σ p² = f``), so with ``k = p² / f``,
    ``E[h²] = f · (α · (k * y) + σ²)``: the local mean ``k * z`` is its exact regressor. The
    image is mirrored to twice its size first, so its borders do not jump.
    """
    z = np.asarray(image, dtype=float)
    ny, nx = z.shape
    ext = np.concatenate([z, z[::-1]], axis=0)
    ext = np.concatenate([ext, ext[:, ::-1]], axis=1)
    r = np.hypot(*np.meshgrid(2 * np.fft.fftfreq(2 * ny), 2 * np.fft.fftfreq(2 * nx), indexing="ij"))
    band = (r >= r_c).astype(float)
    f = float(band.mean())
    h = np.fft.ifft2(np.fft.fft2(ext) * band).real[:ny, :nx]
    p = np.fft.ifft2(band).real
    k = p**2 / np.sum(p**2)
    local = np.fft.ifft2(np.fft.fft2(ext) * np.fft.fft2(k)).real[:ny, :nx]
    return h**2 / f, local, f


def _highpass_fit(image, r_c):
    """``(α, c, se(α), v, m)`` from the high-pass variance against the local mean (see
    :func:`_highpass_statistics`): ``v = α·m + c`` over groups of pixels sorted by a smooth
    level that leaves each pixel's own value out; ``v`` and ``m`` per pixel are returned for
    the σ estimate on the background (``c = σ²`` in expectation)."""
    v, m, _ = _highpass_statistics(image, r_c)
    b = _HIGHPASS_BORDER
    centre = np.zeros((9, 9))
    centre[4, 4] = 1.0
    w0 = float(ndimage.gaussian_filter(centre, 2.0, mode="constant")[4, 4])
    s = (ndimage.gaussian_filter(np.asarray(image, float), 2.0, mode="nearest") - w0 * image) / (1 - w0)
    inner = np.zeros(v.shape, bool)
    inner[b:-b, b:-b] = True
    n_used = int(inner.sum())
    alpha, c, se = _group_fit(m[inner], v[inner], s[inner], int(np.clip(n_used // 800, 4, 64)))
    return alpha, c, se, v, m


_LATTICE_MAX_COUNTS = 1000.0


def _lattice_refine(image, mask, alpha0, alpha_se, sigma0, smoothing=4.0, per_group=5000):
    """Maximum likelihood (α, σ) on background pixels under the exact model.

    ``p(z) = Σ_k Poisson(k; λ) · N(z; α k, σ²)``. The background need not be flat: its
    pixels are sorted by a local level (Gaussian smoothing of width `smoothing` px with
    the pixel's own weight removed, so the sorting is independent of the pixel's noise)
    into groups of about `per_group` pixels, and each group gets ``λ_g = mean_g / α``.
    Each group is histogrammed finely and the binned likelihood (CDF differences, exact
    for binned data) is maximised over (α, σ), with a Gaussian penalty tying α to the
    moment estimate ``alpha0 ± alpha_se``.
    """
    centre = np.zeros((9, 9))
    centre[4, 4] = 1.0
    w0 = float(ndimage.gaussian_filter(centre, smoothing, mode="constant")[4, 4])
    local = (ndimage.gaussian_filter(image, smoothing, mode="nearest") - w0 * image) / (1 - w0)
    values, level = image[mask], local[mask]
    ok = np.isfinite(values) & np.isfinite(level)
    values, level = values[ok], level[ok]
    n_groups = int(np.clip(values.size // per_group, 1, 16))
    order = np.argsort(level, kind="stable")
    groups = np.array_split(order, n_groups)
    means = np.array([values[g].mean() for g in groups])

    width = min(max(sigma0, 0.02 * alpha0), alpha0) / 8
    span = values.max() - values.min()
    n_bins = int(np.clip(span / width, 64, 4000))
    edges = np.histogram_bin_edges(values, bins=n_bins)
    counts = np.stack([np.histogram(values[g], bins=edges)[0] for g in groups], axis=1)
    edges[0], edges[-1] = -np.inf, np.inf
    lam_lo = max(means.min() / alpha0, 0.0) * 0.8
    lam_hi = max(means.max() / alpha0, 1e-3) * 1.25
    k_lo = max(0, int(np.floor(lam_lo - 12 * np.sqrt(lam_lo) - 12)))
    k_hi = int(np.ceil(lam_hi + 12 * np.sqrt(lam_hi) + 12))
    ks = np.arange(k_lo, k_hi + 1, dtype=float)
    log_k_factorial = special.gammaln(ks + 1)[:, None]
    # only the bins that hold a pixel enter the likelihood, and only their two edges: near-integer counts
    # (σ ≪ α) fill a few dozen of the thousands of fine bins, so the CDF is evaluated at those edges alone
    # (the same sums; 80 % of a 290² series' preprocessing time went into the empty bins)
    bins = np.flatnonzero((counts > 0).any(axis=1))
    need = np.unique(np.concatenate([bins, bins + 1]))
    lower, upper = np.searchsorted(need, bins), np.searchsorted(need, bins + 1)
    edges, counts = edges[need], counts[bins]
    used = counts > 0
    scale = np.array([alpha0, max(sigma0, 0.05 * alpha0)])

    def nll(theta):
        alpha, sigma = scale * np.exp(theta)
        lam = np.maximum(means / alpha, 1e-9)
        pmf = np.exp(ks[:, None] * np.log(lam)[None, :] - lam[None, :] - log_k_factorial)  # Poisson, (K, G)
        cdf = special.ndtr((edges[:, None] - alpha * ks[None, :]) / sigma) @ pmf
        p = (cdf[upper] - cdf[lower])[used]
        penalty = 0.5 * ((alpha - alpha0) / alpha_se) ** 2
        return -float(np.sum(counts[used] * np.log(np.maximum(p, 1e-300)))) + penalty

    # σ below the finest bin the histogram may have (α/400) changes none of its probabilities much: the binned
    # likelihood is flat there, and a search on log σ would walk towards σ = 0 for hundreds of steps (pure
    # Poisson counts). The floor is not the bin width itself: that follows the moments' σ, which may be far too high
    floor = np.log(0.02 * alpha0 / 8 / scale[1])
    # start from a peak width of at least α/5, where the likelihood is smooth in α, with
    # a simplex spanning ±2 % in α and a factor 1.5 in σ; and, where the moments put σ above
    # that, from α/5 as well: a moment σ made too large by a small or structured background
    # lies where the peaks have merged and the likelihood is flat in σ, so a search started
    # there stays there. The better of the two ends is kept.
    def walled(theta):  # a smooth wall at the floor: the simplex settles against it instead of being clipped
        below = max(floor - theta[1], 0.0)
        return nll((theta[0], theta[1] + below)) + 1e3 * below**2

    best = None
    for s0 in sorted({max(sigma0, 0.2 * alpha0), 0.2 * alpha0}):
        start = np.array([0.0, np.log(s0 / scale[1])])
        simplex = start + np.array([[0.0, 0.0], [0.02, 0.0], [0.0, -0.4]])
        res = optimize.minimize(walled, start, method="Nelder-Mead",
                                options={"xatol": 1e-5, "fatol": 1e-3, "maxiter": 1000,
                                         "initial_simplex": simplex})
        if best is None or res.fun < best.fun:
            best = res
    alpha, sigma = scale * np.exp(np.maximum(best.x, (-np.inf, floor)))
    return float(alpha), float(sigma)


def estimate_noise(image, mask=None, *, fit_mask=None, lattice=False):
    """Poisson gain α and Gaussian std σ of ``z = α·Poisson(y/α) + N(0, σ²)`` from one image.

    Moment estimator on non-overlapping 2×2 bins (after Foi et al. [2]_):

    * each bin gives its mean ``m`` and its ddof=1 variance ``v``, the latter computed
      from the bin's three Haar details with the local linear gradient (estimated from
      the 8 neighbouring bins) removed, so smooth structure does not inflate ``v``;
    * ``E[v] = α·E[m] + σ²`` for every bin. A fit through the origin
      (``α = Σ v m / Σ m²``) would absorb ``σ²`` into α (+127 % for α = 0.5, σ = 2 on a
      background of 2), so the affine model is fitted instead: the bins are sorted by the
      mean of their 8 neighbours (independent of their own noise) into up to 64 groups,
      and ``mean(v) = α·mean(m) + c`` is fitted to the group means by weighted least
      squares (weights: inverse variance of each group's ``mean(v)``). Regressing ``v``
      on a bin's own, noisy mean instead is biased twice: errors in variables, and the
      Poisson skewness makes a bin's mean and variance covary (``cov(m, v) = α²y/4``);
    * only interior bins whose neighbour mean is > 0 enter the fit, and only those with
      all 4 pixels inside `fit_mask` when one is given (default: the whole image);
    * ``σ² = mean(v) − α·mean(m)`` over the bins lying wholly in the background `mask`
      (default :func:`background_mask`), floored at 0: ``var(bg) − α·mean(bg)`` made
      insensitive to a slowly varying background. Where fewer than 16 bins lie wholly in
      it (a particle filling a small field), the background pixels' own mean and variance
      are used, and α is cut to ``var / mean`` (σ = 0) where it alone would exceed their
      variance: the object's pixel-scale structure, taken for noise, is what makes it so.

    No bins are rejected as outliers. Bins straddling a sharp edge are too few to matter
    (a disc with a 0.7 px blurred rim: α within 1.3 %), whereas structure at the pixel
    scale (atomic columns of ≲ 2 px std) adds a variance that is below the noise in each
    bin, so no per-bin test finds it, but biases α upwards in total (+6 … +29 % for 1.5 px
    columns, ≤ 1.4 % for 2.5 px). For such images restrict the fit with `fit_mask`.

    The moments carry little information about σ when ``σ² ≪ α·y_bg`` (α = 2.5, σ = 0.5
    on a background of 2: σ² is 5 % of the variance, and for the 512² test particle the
    Cramér–Rao bound of σ from second moments is 7.5 %). ``lattice=True`` refines (α, σ)
    by maximum likelihood of the exact Poisson–Gaussian law on the background pixels,
    which uses the discreteness of ``α·P`` (peaks at multiples of α); see
    :func:`_lattice_refine`. It is skipped when the moment σ is ≥ 2α, where the peaks
    have merged, or when there are fewer than 256 background pixels. Use it only for data that
    obey the model (no interpolation, no spread in the gain per electron).

    Parameters
    ----------
    image : array_like (ny, nx)
        Raw image, in units proportional to counts.
    mask : bool array (ny, nx), optional
        Background pixels for σ; default ``background_mask(image)``.
    fit_mask : bool array (ny, nx), optional
        Pixels usable for the α fit; default all.
    lattice : bool
        Refine by the exact likelihood on the background (see above).

    Returns
    -------
    alpha, sigma : float

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> yy, xx = np.mgrid[:256, :256] - 127.5
    >>> clean = 2 + 18 * np.exp(-(xx**2 + yy**2) / (2 * 40.0**2))
    >>> z = 1.0 * rng.poisson(clean / 1.0) + rng.normal(0, 2.0, clean.shape)
    >>> alpha, sigma = estimate_noise(z)
    >>> bool(abs(alpha - 1) < 0.1 and abs(sigma - 2) < 0.1)
    True
    """
    image = np.asarray(image, dtype=float)
    if image.ndim != 2 or min(image.shape) < 8:
        raise ValueError(f"estimate_noise expects a 2-D image of at least 8×8, got {image.shape}")
    if mask is None:
        mask = background_mask(image)
    mask = np.asarray(mask, dtype=bool)
    band = noise_band(image) if fit_mask is None and min(image.shape) >= 4 * _HIGHPASS_BORDER else None
    if band is not None:
        alpha, sigma2, alpha_se = _spectral_estimate(image, mask, band[0])
    else:
        alpha, sigma2, alpha_se = _bin_estimate(image, mask, fit_mask)
    sigma = float(np.sqrt(max(sigma2, 0.0)))
    # the photon-count lattice is resolvable (and the likelihood affordable) only at low counts
    # per pixel: beyond ~1000 photons the Poisson sum is huge and the moments are accurate anyway
    low_counts = np.isfinite(alpha) and alpha > 0 and float(np.max(image[mask])) / alpha <= _LATTICE_MAX_COUNTS
    if lattice and sigma < 2 * alpha and mask.sum() >= 256 and low_counts:
        alpha, sigma = _lattice_refine(image, mask, alpha, alpha_se, sigma)
    return float(alpha), sigma


def _spectral_estimate(image, mask, r_c):
    """(α, σ², se(α)) from the noise-only frequencies: α from the whole image's high-pass
    variance against its local mean, σ² from the background pixels' (the fit's intercept where
    fewer than 64 of them lie away from the border)."""
    alpha, intercept, alpha_se, v, m = _highpass_fit(image, r_c)
    if not alpha > 0:
        raise ValueError(f"estimated Poisson gain is not positive ({alpha:.3g}); "
                         "is the image in raw (count-proportional) units?")
    b = _HIGHPASS_BORDER
    bg = np.zeros(mask.shape, bool)
    bg[b:-b, b:-b] = mask[b:-b, b:-b]
    sigma2 = float(np.mean(v[bg]) - alpha * np.mean(m[bg])) if bg.sum() >= 64 else float(intercept)
    return alpha, sigma2, alpha_se


def _bin_estimate(image, mask, fit_mask):
    """(α, σ², se(α)) from the 2×2 bins' moments (see :func:`estimate_noise`)."""
    m, v, s, inner = _bin_statistics(image)

    def bins_inside(pixels):
        p = pixels[: m.shape[0] * 2, : m.shape[1] * 2]
        return p[0::2, 0::2] & p[0::2, 1::2] & p[1::2, 0::2] & p[1::2, 1::2]

    usable = inner & np.isfinite(v) & np.isfinite(s) & (s > 0)
    if fit_mask is not None:
        usable &= bins_inside(np.asarray(fit_mask, dtype=bool))
    n_usable = int(usable.sum())
    if n_usable < 16:
        raise ValueError("too few usable 2×2 bins to estimate the noise")
    alpha, _, alpha_se = _group_fit(m[usable], v[usable], s[usable],
                                    int(np.clip(n_usable // 200, 4, 64)))
    if not alpha > 0:
        raise ValueError(f"estimated Poisson gain is not positive ({alpha:.3g}); "
                         "is the image in raw (count-proportional) units?")

    bg = inner & np.isfinite(v) & bins_inside(mask)
    if bg.sum() >= 16:
        sigma2 = float(np.mean(v[bg]) - alpha * np.mean(m[bg]))
    elif mask.sum() >= 16 and np.mean(image[mask]) > 0:
        # A background too ragged for whole bins: a particle that fills a small field. Its atoms
        # then sit everywhere else, and at the pixel scale (≲ 2 px std) their variance passes for
        # noise: α comes out too large, and σ from every bin would be the structure's (α 2, σ 26
        # on a pure Poisson series of Pt at 0.35 Å, 40² px). The background pixels have no
        # structure: their variance bounds α·mean + σ², and where α alone exceeds it, α is cut to
        # it with σ = 0.
        m_bg, v_bg = float(np.mean(image[mask])), float(np.var(image[mask], ddof=1))
        sigma2 = v_bg - alpha * m_bg
        if sigma2 < 0:
            alpha, sigma2 = v_bg / m_bg, 0.0
    else:
        bg = inner & np.isfinite(v)
        sigma2 = float(np.mean(v[bg]) - alpha * np.mean(m[bg]))
    return alpha, sigma2, alpha_se


# --------------------------------------------------------------------------------------
# generalized Anscombe transform and its exact unbiased inverse
# --------------------------------------------------------------------------------------

def anscombe(z, alpha, sigma):
    """Generalized Anscombe transform ``f(z) = (2/α)·√max(0, α z + 3α²/8 + σ²)``.

    Examples
    --------
    >>> import numpy as np
    >>> anscombe(np.array([0.0, 10.0]), 1.0, 0.0).round(4).tolist()
    [1.2247, 6.442]
    """
    z = np.asarray(z, dtype=float)
    return (2.0 / alpha) * np.sqrt(np.maximum(alpha * z + 0.375 * alpha**2 + sigma**2, 0.0))


_LAMBDA_MAX = 2000.0   # grid end in units of y/α; beyond it the asymptotic inverse is < 1e-7 off


def _gaussian_sqrt_expectation(c, tau, n_nodes=96):
    """``E[√max(0, X)]`` for ``X ~ N(c, τ²)``, element-wise over `c`.

    With ``x = w²`` the integral is ``∫_0^∞ 2 w² φ((w² − c)/τ)/τ dw``, smooth in ``w``
    (no kink at ``x = 0``), integrated by Gauss–Legendre over ``c ± 13τ``.
    """
    c = np.asarray(c, dtype=float)
    if tau == 0:
        return np.sqrt(np.maximum(c, 0.0))
    nodes, weights = np.polynomial.legendre.leggauss(n_nodes)
    w_lo = np.sqrt(np.maximum(c - 13 * tau, 0.0))
    w_hi = np.sqrt(np.maximum(c + 13 * tau, 0.0))
    half = (w_hi - w_lo)[:, None] / 2
    w = w_lo[:, None] + half * (nodes[None, :] + 1)
    density = np.exp(-0.5 * ((w**2 - c[:, None]) / tau) ** 2) / (tau * np.sqrt(2 * np.pi))
    integrand = 2 * w**2 * density
    return np.sum(integrand * weights[None, :], axis=1) * half[:, 0]


@functools.lru_cache(maxsize=64)
def _forward_table(s):
    """``λ ↦ E[f₁(z) | λ]`` for unit gain and Gaussian std ``s`` (= σ/α), on a λ grid.

    ``z = P + N``, ``P ~ Poisson(λ)``, ``N ~ N(0, s²)``, ``f₁(z) = 2√max(0, z + 3/8 + s²)``.
    For each Poisson term ``k`` the Gaussian expectation ``g_k = E[f₁(k + N)]`` is an
    exact 1-D integral (:func:`_gaussian_sqrt_expectation`); then
    ``E[f₁ | λ] = Σ_k Poisson(k; λ)·g_k``.
    """
    lam = np.unique(np.concatenate([
        np.linspace(0.0, 0.05, 51),
        np.geomspace(0.05, _LAMBDA_MAX, 3000),
    ]))
    k = np.arange(0, int(_LAMBDA_MAX + 14 * np.sqrt(_LAMBDA_MAX) + 20), dtype=float)
    g = 2 * _gaussian_sqrt_expectation(k + 0.375 + s**2, s)
    ef = np.empty_like(lam)
    for start in range(0, lam.size, 256):
        chunk = lam[start : start + 256]
        top = chunk[-1]
        kk = k[: int(top + 14 * np.sqrt(top) + 20)]      # pmf beyond is < 1e-40
        log_pmf = (special.xlogy(kk[None, :], chunk[:, None]) - chunk[:, None]
                   - special.gammaln(kk + 1))
        ef[start : start + 256] = np.exp(log_pmf) @ g[: kk.size]
    return lam, ef


def _asymptotic_lambda(d, s):
    """Unbiased inverse for large ``d`` in units of ``λ = y/α`` (unit gain, std ``s``).

    With ``A = λ + 3/8 + s²``, a cumulant expansion of ``E[2√(z + 3/8 + s²)]`` gives
    ``E[f₁] = 2√A − 1/(4√A) − 1/(64 A^{3/2}) + O(A^{-5/2})``; dropping the last term and
    solving for ``√A`` gives ``√A = (d + √(d² + 2))/4``, i.e.
    ``λ = ((d + √(d² + 2))/4)² − 3/8 − s² = d²/4 − 1/8 − s² + O(d⁻²)``.
    In the units of ``y`` this is ``y ≈ (α/4) d² − α/8 − σ²/α`` (the algebraic inverse
    has ``−3α/8`` instead of ``−α/8``).
    """
    return ((d + np.sqrt(d**2 + 2)) / 4) ** 2 - 0.375 - s**2


def inverse_anscombe(d, alpha, sigma):
    """Exact unbiased inverse of :func:`anscombe` (Mäkitalo & Foi [1]_), computed.

    ``y`` is returned such that ``E[anscombe(z) | y] = d``: the map ``y ↦ E[f(z) | y]``
    is tabulated numerically (the Poisson sum of exact Gaussian integrals, see
    :func:`_forward_table`), it is strictly increasing, and it is inverted by linear
    interpolation. Since ``f(z; α, σ) = f(z/α; 1, σ/α)``, one table per ``σ/α`` (rounded
    to 6 significant digits and cached) serves every α. Values below ``E[f | y = 0]``
    give 0. Beyond the table (``y > 2000 α``) the asymptotic inverse
    ``α·[((d + √(d² + 2))/4)² − 3/8 − σ²/α²] ≈ (α/4) d² − α/8 − σ²/α`` is used,
    matched to the table at its end.

    Examples
    --------
    >>> import numpy as np
    >>> y = inverse_anscombe(anscombe(np.array([100.0]), 1.0, 0.0), 1.0, 0.0)
    >>> float(np.round(y[0], 2))  # f(100) ≈ E[f | y ≈ 100.25]
    100.25
    """
    d = np.asarray(d, dtype=float)
    s = float(f"{float(sigma) / float(alpha):.6g}")
    lam, ef = _forward_table(s)
    out = np.interp(d, ef, lam)
    out = np.where(d <= ef[0], 0.0, out)
    far = d > ef[-1]
    if np.any(far):
        shift = lam[-1] - _asymptotic_lambda(ef[-1], s)
        out = np.where(far, _asymptotic_lambda(d, s) + shift, out)
    out = np.where(np.isnan(d), np.nan, out)
    return alpha * out


# --------------------------------------------------------------------------------------
# affine maps around the denoiser
# --------------------------------------------------------------------------------------

def to_unit_range(d, lo=0.15, hi=0.85):
    """Map an image affinely onto ``[lo, hi]``: ``(scaled, sigma_scaled, (offset, scale))``.

    ``scaled = d·scale + offset`` with ``scale = (hi − lo)/(max − min)``. After the
    Anscombe transform the noise std is 1, so in the scaled units it is ``scale`` — the
    ``sigma_psd`` to give BM3D. A constant image gets ``scale = 1`` and sits at
    ``(lo + hi)/2``.

    Examples
    --------
    >>> import numpy as np
    >>> scaled, sd, params = to_unit_range(np.array([2.0, 4.0, 12.0]))
    >>> scaled.round(3).tolist(), round(sd, 3)
    ([0.15, 0.29, 0.85], 0.07)
    >>> from_unit_range(scaled, params).round(6).tolist()
    [2.0, 4.0, 12.0]
    """
    d = np.asarray(d, dtype=float)
    dmin, dmax = float(np.nanmin(d)), float(np.nanmax(d))
    if dmax > dmin:
        scale = (hi - lo) / (dmax - dmin)
        offset = lo - dmin * scale
    else:
        scale = 1.0
        offset = 0.5 * (lo + hi) - dmin
    return d * scale + offset, scale, (offset, scale)


def from_unit_range(scaled, params):
    """Inverse of :func:`to_unit_range`: ``(scaled − offset)/scale``."""
    offset, scale = params
    return (np.asarray(scaled, dtype=float) - offset) / scale


def least_squares_rescale(estimate, reference, mask=None):
    """``(a, b)`` minimising ``Σ (a·estimate + b − reference)²`` (over `mask` if given).

    The last preprocessing step: the denoised, back-transformed image is put onto the
    scale of the raw image.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(5.0)
    >>> a, b = least_squares_rescale(x, 3 * x - 1)
    >>> round(a, 6), round(b, 6)
    (3.0, -1.0)
    """
    e = np.asarray(estimate, dtype=float)
    r = np.asarray(reference, dtype=float)
    sel = np.isfinite(e) & np.isfinite(r)
    if mask is not None:
        sel &= np.asarray(mask, dtype=bool)
    e, r = e[sel], r[sel]
    design = np.c_[e, np.ones(e.size)]
    (a, b), *_ = np.linalg.lstsq(design, r, rcond=None)
    return float(a), float(b)


def apply_rescale(estimate, coefficients):
    """``a·estimate + b`` for ``coefficients = (a, b)`` from :func:`least_squares_rescale`.

    >>> apply_rescale([1.0, 2.0], (2.0, 0.5)).tolist()
    [2.5, 4.5]
    """
    a, b = coefficients
    return a * np.asarray(estimate, dtype=float) + b
