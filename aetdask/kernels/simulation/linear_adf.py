"""Incoherent linear ADF image of point atoms, computed exactly in Fourier space.

The image is ``I = Σ_s h_s ⊛ Σ_{a∈s} δ(r − r_a)``: every atom of species ``s``
contributes its transfer function ``H_s(q)`` times the phase ``exp(−2πi q·r_a)``.
The atom sum is evaluated at sub-pixel positions without any interpolation by
factorising the phase into its row and column parts,

    S(k_y, k_x) = Σ_a e^{−2πi k_y u_a / M_y} · e^{−2πi k_x v_a / M_x} = E_yᵀ · E_x,

a matrix product (cost ∝ atoms × M_y × M_x / 2).
"""

from __future__ import annotations

from aetdask.backend import get_array_module

_CHUNK = 2048  # atoms per matrix product, bounds memory to a few MB per chunk


def structure_factor(positions, shape, weights=None):
    """Σ_a w_a exp(−2πi k·r_a) on the ``rfft2`` grid of ``shape``.

    Parameters
    ----------
    positions : array (n, 2)
        Fractional pixel indices (row, column) of the atoms.
    shape : (int, int)
        Grid size; the result has shape ``(shape[0], shape[1] // 2 + 1)``.
    weights : array (n,), optional

    Examples
    --------
    >>> import numpy as np
    >>> s = structure_factor(np.array([[1.0, 2.0]]), (4, 4))
    >>> np.allclose(np.fft.irfft2(s, s=(4, 4)), np.eye(4)[1][:, None] * np.eye(4)[2])
    True
    """
    xp = get_array_module(positions)
    my, mx = shape
    ky = xp.fft.fftfreq(my)
    kx = xp.fft.rfftfreq(mx)
    out = xp.zeros((my, mx // 2 + 1), dtype=complex)
    for start in range(0, positions.shape[0], _CHUNK):
        p = positions[start : start + _CHUNK]
        ey = xp.exp(-2j * xp.pi * p[:, 0:1] * ky[None, :])
        ex = xp.exp(-2j * xp.pi * p[:, 1:2] * kx[None, :])
        if weights is not None:
            ey = ey * weights[start : start + _CHUNK, None]
        out += ey.T @ ex
    return out


def render(positions, species_index, transfers, shape, crop, pixel_size):
    """Image of atoms: ``irfft2(Σ_s H_s · S_s) / pixel_area``, cropped.

    Parameters
    ----------
    positions : array (n, 2)
        Fractional pixel indices (row, column) in the padded grid ``shape``.
    species_index : int array (n,)
        Index of each atom's species into ``transfers``.
    transfers : array (n_species, shape[0], shape[1] // 2 + 1)
        Transfer functions (Å²) on the ``rfft2`` grid.
    shape : (int, int)
        Padded grid on which the Fourier sums are done (guards against wrap-around).
    crop : (slice, slice)
        The field of view inside the padded grid.
    pixel_size : float
        Å; the image is a density per probe position (dimensionless fraction of
        the beam that reaches the detector).
    """
    xp = get_array_module(positions)
    spectrum = xp.zeros((shape[0], shape[1] // 2 + 1), dtype=complex)
    for s in range(transfers.shape[0]):
        mask = species_index == s
        if bool(mask.any()):
            spectrum += transfers[s] * structure_factor(positions[mask], shape)
    image = xp.fft.irfft2(spectrum, s=shape) / float(pixel_size) ** 2
    return image[crop]
