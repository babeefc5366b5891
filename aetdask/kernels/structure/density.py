"""Local mass density of atomic models from their Voronoi cell volumes.

Each atom's mass density is its mass over its Voronoi cell volume
(:func:`aetdask.kernels.structure.voronoi.voronoi_cells`); the per-atom values are
averaged onto a regular grid with a normalised Gaussian weight, giving a
density map of the model (Yuan et al. 2022 [1]_ map the local density of
amorphous particles this way).

Grid axis ``k`` runs along position column ``k`` (x, y, z for the project's
models); voxel ``(i0, i1, i2)`` is centred at ``origin + spacing·(i0, i1, i2)``.

References
----------
.. [1] Y. Yuan et al., "Three-dimensional atomic packing in amorphous solids
   with liquid-like structure", Nature Materials 21, 95-102 (2022).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from aetdask.kernels.structure.neighbors import as_positions

__all__ = ["AMU_PER_A3_IN_G_PER_CM3", "atomic_mass", "local_density"]

#: 1 u/Å³ in g/cm³ (1 u = 1.66053906660e-24 g, 1 Å³ = 1e-24 cm³).
AMU_PER_A3_IN_G_PER_CM3 = 1.66053906660


def atomic_mass(species):
    """Standard atomic mass (u) of element symbols, from ``ase.data``.

    Parameters
    ----------
    species : str or sequence of str
        Element symbols such as ``"Si"`` or ``["Ta", "Pd"]``.

    Returns
    -------
    float or ndarray
        A float for one symbol, else an array of the input's shape.

    Raises
    ------
    ValueError
        An unknown element symbol.

    Examples
    --------
    >>> round(atomic_mass("Si"), 3)
    28.085
    >>> atomic_mass(["Ta", "Cu"]).round(3).tolist()
    [180.948, 63.546]
    """
    from ase.data import atomic_masses, atomic_numbers

    arr = np.asarray(species)
    flat = arr.ravel()
    out = np.empty(flat.shape, dtype=np.float64)
    for k, s in enumerate(flat):
        sym = s.decode() if isinstance(s, bytes) else str(s)
        z = atomic_numbers.get(sym.strip())
        if z is None or z == 0:
            raise ValueError(f"atomic_mass: unknown element symbol {sym!r}")
        out[k] = atomic_masses[z]
    return float(out[0]) if arr.ndim == 0 else out.reshape(arr.shape)


def local_density(
    positions,
    masses,
    volumes,
    *,
    spacing: float,
    sigma: float,
    origin=None,
    shape=None,
    min_weight: float = 1e-3,
):
    """Gaussian-smoothed map of the per-atom mass density ``m_i / V_i`` in g/cm³.

    Both the atoms' densities and unit weights are splatted onto the grid
    (trilinear, cloud-in-cell) and smoothed with the same Gaussian
    (``scipy.ndimage.gaussian_filter``); the map is their ratio
    ``Σ w·ρ_i / Σ w``, i.e. the Gaussian-weighted mean of the atoms'
    densities around each voxel. Atoms with a NaN volume (surface atoms of
    :func:`aetdask.kernels.structure.voronoi.voronoi_cells`) are skipped.

    Parameters
    ----------
    positions : (n, 3) float array
        Atom positions in Å.
    masses : float or (n,) float array
        Atomic masses in u (see :func:`atomic_mass`).
    volumes : (n,) float array
        Voronoi cell volumes in Å³; NaN for atoms to skip.
    spacing : float
        Grid spacing in Å.
    sigma : float
        Standard deviation of the Gaussian in Å.
    origin : (3,) float, optional
        Centre of voxel ``(0, 0, 0)`` in Å. Default: the smallest coordinates
        of the used atoms minus ``3·sigma``.
    shape : (3,) int, optional
        Grid shape. Default: covers the used atoms plus ``3·sigma`` on every side.
    min_weight : float, default 1e-3
        Voxels whose smoothed weight is below this fraction of the largest
        smoothed weight are NaN (too far from any atom).

    Returns
    -------
    grid : (n0, n1, n2) float array
        Density in g/cm³ (1 u/Å³ = 1.66053906660 g/cm³), NaN where undefined.
    origin : (3,) float array
        Centre of voxel ``(0, 0, 0)`` in Å.

    Raises
    ------
    ValueError
        Bad shapes, non-positive ``spacing``/``sigma``/masses/volumes, or no
        atom with a finite volume.

    Examples
    --------
    Two Si atoms of 20 Å³ each: 28.085 u / 20 Å³ = 2.33 g/cm³ everywhere near them.

    >>> pos = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    >>> grid, origin = local_density(pos, atomic_mass("Si"), [20.0, 20.0], spacing=0.5, sigma=1.0)
    >>> grid.shape, origin.tolist()
    ((17, 13, 13), [-3.0, -3.0, -3.0])
    >>> round(float(np.nanmax(grid)), 3), round(float(np.nanmin(grid)), 3)
    (2.332, 2.332)
    """
    pos = as_positions(positions, "local_density", finite=False)
    n = len(pos)
    mass = np.asarray(masses, dtype=np.float64)
    if mass.ndim == 0:
        mass = np.full(n, float(mass))
    vol = np.asarray(volumes, dtype=np.float64)
    if mass.shape != (n,) or vol.shape != (n,):
        raise ValueError(
            f"local_density: masses and volumes must have shape ({n},), got {mass.shape} and {vol.shape}"
        )
    spacing, sigma = float(spacing), float(sigma)
    if not (np.isfinite(spacing) and spacing > 0 and np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"local_density: spacing and sigma must be positive, got {spacing!r}, {sigma!r}")
    use = ~np.isnan(vol)
    if not np.any(use):
        raise ValueError("local_density: no atom has a finite volume")
    pos, mass, vol = pos[use], mass[use], vol[use]
    if not np.all(np.isfinite(pos)):
        raise ValueError("local_density: positions must be finite")
    if np.any(~np.isfinite(vol) | (vol <= 0)) or np.any(~np.isfinite(mass) | (mass <= 0)):
        raise ValueError("local_density: masses and volumes must be positive and finite (volume NaN to skip)")
    rho = AMU_PER_A3_IN_G_PER_CM3 * mass / vol

    pad = 3.0 * sigma
    if origin is None:
        origin = pos.min(axis=0) - pad
    origin = np.asarray(origin, dtype=np.float64).reshape(-1)
    if origin.shape != (3,):
        raise ValueError(f"local_density: origin must have 3 values, got {origin.shape}")
    if shape is None:
        shape = np.floor((pos.max(axis=0) + pad - origin) / spacing + 1e-9).astype(np.int64) + 1
    shape = tuple(int(s) for s in np.asarray(shape).reshape(-1))
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"local_density: shape must be 3 positive integers, got {shape}")

    # trilinear (cloud-in-cell) splatting of unit weights and of densities
    f = (pos - origin) / spacing
    base = np.floor(f).astype(np.int64)
    frac = f - base
    size = int(np.prod(shape))
    weight = np.zeros(size)
    value = np.zeros(size)
    dims = np.array(shape)
    for corner in np.ndindex(2, 2, 2):
        c = np.array(corner)
        idx = base + c
        w = np.prod(np.where(c == 1, frac, 1.0 - frac), axis=1)
        inside = np.all((idx >= 0) & (idx < dims), axis=1) & (w > 0)
        flat = np.ravel_multi_index(tuple(idx[inside].T), shape)
        weight += np.bincount(flat, weights=w[inside], minlength=size)
        value += np.bincount(flat, weights=w[inside] * rho[inside], minlength=size)
    s = sigma / spacing
    weight = ndimage.gaussian_filter(weight.reshape(shape), s, mode="constant")
    value = ndimage.gaussian_filter(value.reshape(shape), s, mode="constant")
    top = weight.max()
    with np.errstate(invalid="ignore", divide="ignore"):
        grid = np.where(weight > min_weight * top, value / np.where(weight > 0, weight, 1.0), np.nan)
    if top <= 0:
        grid[:] = np.nan
    return grid, origin
