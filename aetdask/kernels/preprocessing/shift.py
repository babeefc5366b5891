"""Sub-pixel image shifts by a Fourier phase ramp."""

from __future__ import annotations

from aetdask.backend import get_array_module


def fourier_shift(images, shifts):
    """Shift each image of a stack by (dy, dx) pixels (positive = towards higher indices).

    ``images`` (n, ny, nx), ``shifts`` (n, 2). The shift is circular, exact for
    band-limited images: I'(k) = I(k) · exp(−2πi (k_y dy + k_x dx)).

    >>> import numpy as np
    >>> img = np.zeros((1, 8, 8)); img[0, 2, 3] = 1
    >>> out = fourier_shift(img, np.array([[1.0, 2.0]]))
    >>> [int(v) for v in np.unravel_index(out[0].argmax(), (8, 8))]
    [3, 5]
    """
    xp = get_array_module(images)
    n, ny, nx = images.shape
    ky = xp.fft.fftfreq(ny)[None, :, None]
    kx = xp.fft.rfftfreq(nx)[None, None, :]
    s = xp.asarray(shifts, dtype=float)
    ramp = xp.exp(-2j * xp.pi * (ky * s[:, 0, None, None] + kx * s[:, 1, None, None]))
    out = xp.fft.irfft2(xp.fft.rfft2(images) * ramp, s=(ny, nx))
    return out.astype(images.dtype, copy=False)
