"""Denoisers for variance-stabilised images (noise standard deviation known).

The default is BM3D (the ``bm3d`` package of Tampere University — **its licence
permits non-commercial use only**); non-local means from scikit-image is the
freely licensed alternative. Both take an image scaled to about [0, 1] and the
noise standard deviation in the same units.
"""

from __future__ import annotations

import numpy as np

DENOISERS = ("bm3d", "nlm", "none")


def bm3d_denoise(image, sigma: float) -> np.ndarray:
    """BM3D (Dabov et al., IEEE TIP 2007), one thread (Dask runs one image per worker thread)."""
    import bm3d

    profile = bm3d.BM3DProfile()
    profile.num_threads = 1
    out = bm3d.bm3d(np.asarray(image, dtype=np.float64), sigma_psd=float(sigma), profile=profile)
    return np.asarray(out, dtype=image.dtype)


def nlm_denoise(image, sigma: float) -> np.ndarray:
    """Non-local means (Buades et al. 2005) with the fast scikit-image implementation."""
    from skimage.restoration import denoise_nl_means

    out = denoise_nl_means(np.asarray(image, dtype=np.float64), h=0.8 * float(sigma), sigma=float(sigma),
                           patch_size=5, patch_distance=6, fast_mode=True)
    return np.asarray(out, dtype=image.dtype)


def denoise(image, sigma: float, method: str = "bm3d") -> np.ndarray:
    """Denoise with ``method`` in :data:`DENOISERS` (``"none"`` returns the image).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> clean = np.full((32, 32), 0.5)
    >>> noisy = clean + rng.normal(0, 0.1, clean.shape)
    >>> bool(np.std(denoise(noisy, 0.1, "nlm") - clean) < 0.5 * np.std(noisy - clean))
    True
    """
    if method == "bm3d":
        return bm3d_denoise(image, sigma)
    if method == "nlm":
        return nlm_denoise(image, sigma)
    if method == "none":
        return image
    raise ValueError(f"denoiser: {method!r} is not one of {DENOISERS}")
