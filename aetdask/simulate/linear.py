"""Fast incoherent linear ADF-STEM projections of an atomic model."""

from __future__ import annotations

import math
import warnings

import dask
import dask.array as da
import numpy as np
import scipy.fft
import xarray as xr

from aetdask import config, physics
from aetdask.errors import InputError
from aetdask.plausibility import check_pixel_size
from aetdask.geometry import detector_coordinates
from aetdask.kernels.simulation.linear_adf import render
from aetdask.schema import as_euler, provenance_record, tilt_series, validate_atoms
from aetdask.simulate.noise import expected_counts, poisson_counts


def linear(
    atoms: xr.Dataset,
    like: xr.DataArray | None = None,
    angles=None,
    pixel_size: float | None = None,
    shape: int | tuple[int, int] | None = None,
    dose: float | None = None,
    background: float | None = None,
    blur: float | None = None,
    energy: float | None = None,
    semiangle: float | None = None,
    detector: tuple[float, float] | None = None,
    seed: int | None = None,
    poisson: bool = True,
    dtype: str | None = None,
) -> xr.DataArray:
    """Simulate an ADF-STEM tilt series with the incoherent linear imaging model.

    Every atom contributes its ADF cross-section (the Lobato scattering factor
    squared, integrated over the annular ``detector``), spread as its projected
    potential and convolved with the intensity of an aberration-free probe
    (``energy``, convergence ``semiangle``) and a Gaussian partial-coherence
    ``blur``. Nothing in the model is fitted to data. The image is the fraction
    of the beam that reaches the detector at each probe position; with a
    ``dose`` (e⁻/Å² per projection) it becomes counts: ``dose · pixel² · image +
    background`` (e⁻/pixel), Poisson-sampled unless ``poisson=False``.

    Lazy: one Dask task per projection; noise is seeded per projection from
    ``(seed, tilt index)``, so the result does not depend on the chunking or
    the number of workers.

    Parameters
    ----------
    atoms : xr.Dataset
        Atomic model (``position`` in Å in the sample frame, ``species``).
    like : xr.DataArray, optional
        A tilt series whose angles, image shape and pixel size are copied.
    angles : array, optional
        One θ per projection or (φ, θ, ψ) rows, degrees.
    pixel_size : float, optional
        Å per pixel.
    shape : int or (int, int), optional
        Image size in pixels.
    dose, background, blur, energy, semiangle, detector
        Imaging parameters; None = ``aetdask.simulate.*`` configuration
        (200 kV, 17.5 mrad, 40–190 mrad, 0.35 Å, 1 e⁻/pixel).
    seed : int, optional
        Seed of the Poisson noise; None draws one and records it in provenance.

    Returns
    -------
    xr.DataArray
        Tilt series ``(tilt, y, x)``, units ``"counts"`` with a dose, else ``"a.u."``.

    Examples
    --------
    >>> from aetdask.schema import atoms as make_atoms
    >>> model = make_atoms([[0.0, 0.0, 0.0]], ["Si"])
    >>> ts = linear(model, angles=[0, 90], pixel_size=0.2, shape=16)
    >>> ts.shape, int(ts[0].values.argmax()) == 8 * 16 + 8
    ((2, 16, 16), True)
    """
    validate_atoms(atoms)
    if like is not None:
        angles = np.stack([like.phi.values, like.theta.values, like.psi.values], axis=1) if angles is None else angles
        pixel_size = like.attrs["pixel_size"] if pixel_size is None else pixel_size
        shape = (like.sizes["y"], like.sizes["x"]) if shape is None else shape
    if angles is None or pixel_size is None or shape is None:
        raise InputError("simulate.linear: give angles, pixel_size and shape, or a tilt series as like=")
    euler = as_euler(angles)
    ny, nx = (int(shape), int(shape)) if np.ndim(shape) == 0 else (int(shape[0]), int(shape[1]))
    p = float(pixel_size)
    check_pixel_size(p, min(ny, nx), source="simulate: pixel_size")
    params = {
        "energy": config.get("simulate.energy", energy),
        "semiangle": config.get("simulate.semiangle", semiangle),
        "detector": list(config.get("simulate.detector", detector)),
        "blur": config.get("simulate.blur", blur),
    }
    background = config.get("simulate.background", background)
    dtype = np.dtype(config.get("dtype", dtype))
    if dose is not None and poisson and seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**63)

    # Padded grid with FFT-friendly sizes against wrap-around of the probe tails.
    margin = math.ceil(config.get("simulate.pad") / p)
    grid = (scipy.fft.next_fast_len(ny + 2 * margin), scipy.fft.next_fast_len(nx + 2 * margin))
    crop = (slice(grid[0] // 2 - ny // 2, grid[0] // 2 - ny // 2 + ny),
            slice(grid[1] // 2 - nx // 2, grid[1] // 2 - nx // 2 + nx))
    qy = np.fft.fftfreq(grid[0], d=p)[:, None]
    qx = np.fft.rfftfreq(grid[1], d=p)[None, :]
    q = np.sqrt(qy**2 + qx**2)
    symbols, species_index = np.unique(atoms.species.values, return_inverse=True)
    transfers = np.stack([physics.adf_transfer(s, q, **params) for s in symbols])

    positions = np.asarray(atoms.position.values, dtype=float)
    _warn_outside(positions, euler, ny, nx, p)
    pos_d, idx_d, tr_d = (dask.delayed(v) for v in (positions, species_index, transfers))
    projections = [
        da.from_delayed(
            dask.delayed(_projection, pure=True)(
                pos_d, idx_d, tr_d, euler[k], grid, crop, p, dose, background, poisson, seed, k, dtype
            ),
            shape=(ny, nx),
            dtype=dtype,
        )
        for k in range(len(euler))
    ]
    data = da.stack(projections) if projections else da.zeros((0, ny, nx), dtype=dtype)
    record = provenance_record(
        "simulate.linear",
        {**params, "dose": dose, "background": background if dose is not None else None,
         "poisson": poisson, "seed": seed, "pixel_size": p, "shape": [ny, nx]},
        inputs=[f"atoms ({atoms.sizes['atom']} atoms: {', '.join(symbols)})"],
    )
    return tilt_series(
        data, euler, p, units="counts" if dose is not None else "a.u.", dose=dose, provenance=[record]
    )


def _projection(positions, species_index, transfers, euler_row, grid, crop, pixel_size, dose, background, poisson, seed, k,
                dtype):
    coords = detector_coordinates(positions, euler_row[None])[0]
    pix = coords / pixel_size + np.array([grid[0] // 2, grid[1] // 2])
    # the Fourier sums are periodic on the padded grid: an atom beyond it (a film wider than the
    # field of view) would wrap around into the image; it is outside the field of view, so it goes
    inside = np.all((pix >= 0) & (pix < np.array(grid)), axis=1)
    if not inside.all():
        pix, species_index = pix[inside], species_index[inside]
    image = render(pix, species_index, transfers, grid, crop, pixel_size)
    if dose is None:
        return image.astype(dtype)
    if not poisson:
        return expected_counts(image, dose, pixel_size, background).astype(dtype)
    return poisson_counts(image, dose, pixel_size, background, seed, k).astype(dtype)


def _warn_outside(positions, euler, ny, nx, pixel_size):
    if len(positions) == 0:
        return
    coords = detector_coordinates(positions, euler) / pixel_size
    lo = np.array([-(ny // 2), -(nx // 2)])
    hi = np.array([ny - ny // 2 - 1, nx - nx // 2 - 1])
    outside = np.any((coords < lo) | (coords > hi), axis=-1)
    if outside.any():
        warnings.warn(
            f"simulate.linear: {int(outside.any(axis=0).sum())} atoms fall outside the "
            f"{ny}×{nx} field of view at some angle; is the model centred on the origin? (For a film "
            f"wider than the field of view this is expected: what lies outside is not imaged.)",
            stacklevel=3,
        )
