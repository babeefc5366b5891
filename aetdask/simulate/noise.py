"""Electron counts from a noise-free simulation: dose, background and Poisson noise.

A noise-free ADF image is the fraction ``f`` of the beam that reaches the detector at each
probe position. With ``dose`` electrons per Å² per projection and square pixels of side
``p``, each probe position receives ``dose · p²`` electrons, so the expected count is

.. math::  \\lambda = \\mathrm{dose}\\, p^2 f + b,

with ``b`` the background in e⁻/pixel; the recorded count is Poisson(λ). One noise-free
simulation (the expensive part: multislice with frozen phonons) thus serves every dose.
Noise is seeded per projection from ``(seed, tilt index)``, so it does not depend on the
chunking or on which worker draws it.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from aetdask import config
from aetdask.errors import InputError
from aetdask.schema import provenance_record


def expected_counts(image, dose: float, pixel_size: float, background: float) -> np.ndarray:
    """``dose · pixel² · image + background``, the mean count of each pixel.

    >>> expected_counts(np.array([0.0, 0.01]), dose=1e4, pixel_size=0.5, background=1.0).tolist()
    [1.0, 26.0]
    """
    return np.clip(float(dose) * float(pixel_size) ** 2 * np.asarray(image, dtype=np.float64), 0, None) + float(background)


def poisson_counts(image, dose: float, pixel_size: float, background: float, seed: int, k: int) -> np.ndarray:
    """Poisson counts of projection ``k``, drawn from ``default_rng([seed, k])``."""
    rng = np.random.default_rng([int(seed), int(k)])
    return rng.poisson(expected_counts(image, dose, pixel_size, background)).astype(np.float64)


def _block(block, dose, pixel_size, background, seed, poisson, dtype, block_info=None):
    start = block_info[0]["array-location"][0][0]
    out = np.empty(block.shape, dtype=dtype)
    for i in range(block.shape[0]):
        if poisson:
            out[i] = poisson_counts(block[i], dose, pixel_size, background, seed, start + i)
        else:
            out[i] = expected_counts(block[i], dose, pixel_size, background)
    return out


def add_noise(tilt_series: xr.DataArray, dose: float, *, background: float | None = None, seed: int | None = None,
              poisson: bool = True) -> xr.DataArray:
    """Counts at ``dose`` (e⁻/Å² per projection) from a noise-free tilt series (lazy).

    Parameters
    ----------
    tilt_series : DataArray
        Noise-free ``(tilt, y, x)`` image: the detected fraction of the beam.
    dose : float
        Electrons per Å² per projection.
    background : float, optional
        e⁻/pixel added before the noise (default ``aetdask.simulate.background``).
    seed : int, optional
        Seed of the Poisson noise; None draws one and records it in the provenance.
    poisson : bool
        False returns the expected counts.

    Examples
    --------
    >>> from aetdask.schema import tilt_series
    >>> clean = tilt_series(np.full((2, 8, 8), 0.01), [0, 90], 0.5, units="fraction")
    >>> counts = add_noise(clean, 1e4, background=1.0, seed=3)
    >>> counts.attrs["units"], counts.attrs["dose"], float(counts.mean()) > 20
    ('counts', 10000.0, True)
    """
    if not (np.isfinite(dose) and dose > 0):
        raise InputError(f"add_noise: dose must be a positive number of e⁻/Å², got {dose}")
    background = float(config.get("simulate.background", background))
    if background < 0:
        raise InputError(f"add_noise: background must be ≥ 0 e⁻/pixel, got {background}")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**63)
    units = tilt_series.attrs.get("units")
    if units not in ("fraction", "a.u."):
        raise InputError(f"add_noise: expected a noise-free tilt series (units 'fraction'), got units {units!r}")
    pixel_size = float(tilt_series.attrs["pixel_size"])
    data = tilt_series.data
    dtype = np.dtype(config.get("dtype"))
    if hasattr(data, "map_blocks"):
        data = data.rechunk({1: -1, 2: -1})
        counts = data.map_blocks(_block, dose, pixel_size, background, seed, poisson, dtype, dtype=dtype)
    else:
        counts = _block(np.asarray(data), dose, pixel_size, background, seed, poisson, dtype,
                        block_info={0: {"array-location": [(0, data.shape[0])]}})
    out = tilt_series.copy(data=counts)
    record = provenance_record("simulate.add_noise", {"dose": float(dose), "background": background, "seed": seed,
                                                      "poisson": poisson})
    out.attrs = {**tilt_series.attrs, "units": "counts", "dose": float(dose),
                 "provenance": list(tilt_series.attrs.get("provenance", [])) + [record]}
    return out
