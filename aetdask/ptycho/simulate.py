"""4D-STEM tilt series by multislice (abTEM): a diffraction pattern at every probe position.

The tasks are cut like the ADF simulation's (:mod:`aetdask.simulate.multislice`), one per
(tilt, frozen-phonon configuration, band of scan rows)::

    settings = resolve_4d(positions, species, params)
    tile = pattern_tile(displaced, species, euler_row, rows=(r0, r1), **pattern_arguments(settings))
    # (r1 − r0, nx, K, K): the fraction of the beam in each detector pixel

The patterns of a band are averaged over the configurations (frozen phonons add
intensities) and, with a dose, drawn as Poisson counts seeded per (tilt, scan row), so the
result depends on neither the chunking nor the workers.

Conventions
-----------
* **Scan**: probe position ``(i, j)`` of an ``(ny, nx)`` scan lies at ``y_det = (i − ny//2)
  · step``, ``x_det = (j − nx//2) · step`` (Å) of the project's detector frame
  (:mod:`aetdask.geometry`), so the scan overlays :func:`aetdask.simulate.linear` images of
  pixel ``step``.
* **Patterns**: axes ``(ky, kx)``, the scattering angle along ``y_det`` and ``x_det``, zero in
  the centre pixel (``K//2``); ``angular_sampling`` mrad per pixel; square, reaching the
  detector's outer angle (``detector``, mrad) along both axes. The object pixel a
  ptychographic reconstruction reaches is ``λ / (K · angular_sampling)`` ≈ λ / (2 · detector).
* **Defocus** as in the ADF simulation: the crossover lies ``defocus`` Å along the beam from
  the particle's centre plane (> 0: deeper, the probe at the sample is the converging cone).
* **Units**: ``fraction`` (noise-free, each pattern sums to the fraction of the beam inside
  the detector) or ``counts`` (``dose · step²`` electrons per probe position on average).
"""

from __future__ import annotations

import math
import warnings

import dask
import dask.array as da
import numpy as np
import xarray as xr

from aetdask import config, physics
from aetdask.errors import InputError
from aetdask.geometry import projection_matrices
from aetdask.schema import as_euler, atomic_number, jsonable, provenance_record, validate_atoms
from aetdask.simulate.multislice import (PHONONS, SLICE_THICKNESS, _static_positions, _to_numpy, b_factors_for,
                                         cell_extent, phonon_positions, plan_grid, preset_parameters, row_bands)

__all__ = ["PRESETS", "pattern_tile", "resolve_4d", "pattern_arguments", "fourdstem", "probe_radius",
           "PATTERN_DIMS"]

PATTERN_DIMS = ("tilt", "scan_y", "scan_x", "ky", "kx")

#: Memory (bytes) of the wave functions abTEM holds per call inside :func:`pattern_tile`.
BATCH_BYTES = 128 * 2**20

# Extended Data Table 1 of the seed paper (Liao et al., Nature 2026), its SiO2 (pAET) column:
# 80 kV, 30 mrad convergence semi-angle, 18 nm defocus, a pixelated detector to 60 mrad, a 0.5 Å
# scan step, 49 tilts from −72° to +72° (3° apart), 5 slices of 2 nm for multislice
# ptychography; the doses of its Extended Data Table 2. Phonons and slice thickness are the
# simulation module's defaults; the scan size follows from the model (None).
PRESETS = {
    "SiO2": {"description": "a-SiO2 pAET (Extended Data Table 1)", "energy": 80e3, "semiangle": 30.0,
             "defocus": 180.0, "detector": 60.0, "step": 0.5, "angles": {"theta": [-72.0, 75.0, 3.0]},
             "phonons": PHONONS, "slice_thickness": SLICE_THICKNESS, "slices": 5, "slice_length": 20.0,
             "doses": [1.6e3, 1.6e4], "scan": None},
}
_META_KEYS = {"description", "angles", "doses", "slices", "slice_length"}
_SIM_KEYS = {"energy", "semiangle", "defocus", "detector", "step", "phonons", "slice_thickness", "scan",
             "pad", "b_factors", "device", "rows_per_task", "sampling"}


def probe_radius(defocus: float, semiangle: float, depth: float = 0.0) -> float:
    """Geometric radius (Å) of a defocused probe anywhere within ``depth``/2 of the centre plane:
    ``(|defocus| + depth/2) · α`` (α the convergence semi-angle in rad).

    >>> round(probe_radius(180.0, 30.0), 2)
    5.4
    """
    return (abs(float(defocus)) + float(depth) / 2) * float(semiangle) * 1e-3


def _scan_shape(scan) -> tuple[int, int]:
    if np.ndim(scan) == 0:
        return int(scan), int(scan)
    ny, nx = (int(s) for s in scan)
    return ny, nx


def resolve_4d(positions, species, params: dict | None = None) -> dict:
    """Complete 4D-STEM settings for one model: defaults, scan, cell and grid plan.

    ``params`` keys: ``energy`` (eV), ``semiangle`` (mrad), ``defocus`` (Å), ``detector``
    (outer angle, mrad), ``step`` (Å), ``scan`` (positions per side; None = the model's
    largest radius plus the probe radius, each side), ``phonons``, ``slice_thickness`` (Å),
    ``pad`` (Å; None = ``aetdask.simulate.pad`` plus the probe radius through the model),
    ``b_factors``, ``device``, ``rows_per_task``, ``sampling`` (potential sampling, Å) and a
    preset's data-set keys (ignored). Missing = the ``SiO2`` preset.

    >>> s = resolve_4d([[0.0, 0.0, 5.0], [0.0, 0.0, -5.0]], ["Si", "O"], {"step": 1.0})
    >>> s["scan"], s["max_angle"] >= 60.0, round(s["probe_radius"], 2)
    ((22, 22), True, 5.55)
    """
    p = {k: v for k, v in PRESETS["SiO2"].items() if k in _SIM_KEYS}
    given = dict(params or {})
    unknown = set(given) - _SIM_KEYS - _META_KEYS
    if unknown:
        raise InputError(f"4D-STEM simulation: unknown parameter(s) {sorted(unknown)}; known: {sorted(_SIM_KEYS)}")
    p.update({k: v for k, v in given.items() if v is not None and k in _SIM_KEYS})
    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    if len(pos) == 0:
        raise InputError("4D-STEM simulation: the model has no atoms")
    for key in ("energy", "semiangle", "detector", "step", "slice_thickness"):
        value = float(p[key])
        if not (np.isfinite(value) and value > 0):
            raise InputError(f"4D-STEM simulation: {key} must be > 0, got {p[key]}")
    if float(p["detector"]) <= float(p["semiangle"]):
        raise InputError(f"4D-STEM simulation: the detector ({p['detector']} mrad) must reach beyond the bright "
                         f"field ({p['semiangle']} mrad) for ptychography")
    phonons = int(p["phonons"])
    if phonons < 0:
        raise InputError(f"4D-STEM simulation: phonons must be ≥ 0, got {phonons}")
    radius = float(np.sqrt((pos**2).sum(axis=1)).max())
    b = b_factors_for(species, p.get("b_factors"))
    margin = 6 * max(math.sqrt(v / (8 * math.pi**2)) for v in b.values()) if phonons else 0.0
    r_probe = probe_radius(p["defocus"], p["semiangle"], depth=2 * radius)
    step = float(p["step"])
    scan = p.get("scan")
    if scan is None:
        n = 2 * math.ceil((radius + r_probe) / step)
        scan = (n, n)
    scan = _scan_shape(scan)
    if min(scan) < 2:
        raise InputError(f"4D-STEM simulation: the scan needs ≥ 2 positions per side, got {scan}")
    pad = float(config.get("simulate.pad")) + r_probe if p.get("pad") is None else float(p["pad"])
    extent = cell_extent(pos, step, scan, pad, margin=margin)
    plan = plan_grid(extent, energy=float(p["energy"]), detector_outer=float(p["detector"]),
                     sampling=p.get("sampling"))
    return {
        "energy": float(p["energy"]), "semiangle": float(p["semiangle"]), "defocus": float(p["defocus"]),
        "detector": float(p["detector"]), "step": step, "scan": scan, "phonons": phonons,
        "slice_thickness": float(p["slice_thickness"]), "pad": pad, "b_factors": b,
        "device": str(p.get("device") or config.get("device")),
        "rows_per_task": None if p.get("rows_per_task") is None else int(p["rows_per_task"]),
        "extent": plan["extent"], "gpts": plan["gpts"], "sampling": plan["sampling"],
        "max_angle": plan["max_angle"], "probe_radius": r_probe, "grid_note": plan["message"],
    }


def pattern_arguments(settings: dict) -> dict:
    """The keyword arguments of :func:`pattern_tile` in ``settings`` (from :func:`resolve_4d`)."""
    keys = ("step", "scan", "energy", "semiangle", "defocus", "detector", "slice_thickness", "sampling", "device",
            "extent")
    return {k: settings[k] for k in keys}


def pattern_tile(positions, numbers, euler_row, *, step: float, scan, rows, energy: float, semiangle: float,
                 defocus: float, detector: float, slice_thickness: float, sampling: float, extent: float,
                 device: str = "cpu") -> np.ndarray:
    """Diffraction patterns of one frozen configuration, one projection, scan rows ``rows``.

    Returns
    -------
    np.ndarray
        float32 ``(stop − start, nx, K, K)``, axes (scan y, scan x, k_y, k_x): the fraction of
        the incident beam in each detector pixel (no noise); ``λ / extent`` mrad per pixel.

    Eager, in the calling thread (a task of any worker); FFTW plans by estimate, so worker
    processes give identical patterns. Lobato potentials, infinite projection.
    """
    import abtem
    from ase import Atoms

    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    z = atomic_number(numbers)
    ny, nx = _scan_shape(scan)
    r0, r1 = (int(r) for r in rows)
    if not 0 <= r0 < r1 <= ny:
        raise InputError(f"pattern_tile: rows must be (start, stop) with 0 ≤ start < stop ≤ {ny}, got {rows}")
    a = projection_matrices(np.asarray(euler_row, dtype=float).reshape(1, 3))[0]
    xyz = pos @ a.T
    half = float(extent) / 2
    if np.abs(xyz[:, :2]).max() >= half:
        raise InputError(f"pattern_tile: the model reaches {np.abs(xyz[:, :2]).max():.2f} Å from the axis, outside "
                         f"the {extent:.2f} Å cell")
    dmin, dmax = float(xyz[:, 2].min()), float(xyz[:, 2].max())
    top = 2.0
    atoms = Atoms(numbers=z, positions=np.column_stack([xyz[:, 0] + half, xyz[:, 1] + half, xyz[:, 2] - dmin + top]),
                  cell=[extent, extent, dmax - dmin + 2 * top])
    focal = top - dmin + float(defocus)  # crossover below the entrance plane = abTEM's defocus
    gpts = int(round(float(extent) / float(sampling)))
    with dask.config.set(scheduler="synchronous"), abtem.config.set({"fftw.planning_effort": "FFTW_ESTIMATE"}):
        potential = abtem.Potential(atoms, gpts=gpts, slice_thickness=float(slice_thickness), parametrization="lobato",
                                    projection="infinite", device=device).build(lazy=False)
        probe = abtem.Probe(semiangle_cutoff=float(semiangle), energy=float(energy), defocus=focal, device=device)
        probe.grid.match(potential)
        det = abtem.PixelatedDetector(max_angle=float(detector))
        per_batch = max(1, int(BATCH_BYTES // (gpts * gpts * 8 * 4)))
        xs = (np.arange(nx) - nx // 2) * float(step) + half
        out = None
        for i, row in enumerate(range(r0, r1)):
            y = (row - ny // 2) * float(step) + half
            for c0 in range(0, nx, per_batch):
                c1 = min(c0 + per_batch, nx)
                measured = probe.scan(potential, scan=abtem.CustomScan(np.column_stack([xs[c0:c1], np.full(c1 - c0, y)])),
                                      detectors=det, lazy=False)
                block = np.asarray(_to_numpy(measured.array), dtype=np.float32)  # (positions, kx, ky)
                if out is None:
                    out = np.empty((r1 - r0, nx, block.shape[-1], block.shape[-2]), dtype=np.float32)
                out[i, c0:c1] = np.swapaxes(block, -1, -2)  # → (k_y, k_x)
    return out


def _band(tiles, dose, step: float, seed: int, tilt: int, r0: int) -> np.ndarray:
    """Mean over configurations of one band's patterns; Poisson counts per scan row with a dose."""
    mean = np.mean(tiles, axis=0, dtype=np.float64)
    if dose is None:
        return mean.astype(np.float32)
    out = np.empty(mean.shape, dtype=np.float32)
    per_position = float(dose) * step**2
    for i in range(mean.shape[0]):
        rng = np.random.default_rng([int(seed), int(tilt), int(r0 + i), 11])
        out[i] = rng.poisson(np.clip(mean[i], 0, None) * per_position)
    return out


def fourdstem(atoms: xr.Dataset, angles=None, *, preset: str | dict | None = "SiO2", dose: float | None = None,
              seed: int = 0, **params) -> xr.DataArray:
    """A lazy 4D-STEM tilt series of ``atoms``: one diffraction pattern per probe position and tilt.

    Parameters
    ----------
    atoms : xr.Dataset
        Atomic model (Å, sample frame, centred on the origin).
    angles : array, optional
        One θ per tilt or (φ, θ, ψ) rows (degrees); None = the preset's (SiO2: −72°…72° in 3°).
    preset : str or dict
        :data:`PRESETS` entry supplying the defaults (Extended Data Table 1, SiO2).
    dose : float, optional
        e⁻/Å² per tilt: Poisson counts (``dose · step²`` electrons per position); None = the
        noise-free fraction of the beam.
    seed : int
        Seeds the phonon displacements (``[seed, config]``) and the noise (``[seed, tilt, row]``).
    **params
        See :func:`resolve_4d` (``step``, ``scan``, ``phonons``, ``energy``, …).

    Returns
    -------
    xr.DataArray
        ``(tilt, scan_y, scan_x, ky, kx)`` float32, lazy; one chunk per (tilt, band of rows).
        Coordinates ``phi``, ``theta``, ``psi`` (deg) on ``tilt``; attributes ``step`` (Å),
        ``energy`` (eV), ``semiangle`` (mrad), ``defocus`` (Å), ``detector`` (mrad),
        ``angular_sampling`` (mrad per pixel), ``units``, ``dose`` and the provenance.
    """
    validate_atoms(atoms)
    p = preset_parameters(preset, PRESETS, "4D-STEM simulation")
    p.update(params)
    if angles is None:
        start, stop, step_ = (float(v) for v in p["angles"]["theta"])
        angles = np.arange(start, stop, step_)
    euler = as_euler(angles)
    if dose is not None and not (np.isfinite(dose) and dose > 0):
        raise InputError(f"4D-STEM simulation: dose must be > 0 e⁻/Å², got {dose}")
    positions = np.asarray(atoms.position.values, dtype=float)
    species = atoms.species.values.astype(str)
    s = resolve_4d(positions, species, p)
    if s["grid_note"]:
        warnings.warn(f"4D-STEM simulation: {s['grid_note']}", stacklevel=2)
    ny, nx = s["scan"]
    chunk, bounds = row_bands(ny, s["rows_per_task"], "4D-STEM simulation")
    n_configs = max(s["phonons"], 1)
    displace = phonon_positions if s["phonons"] > 0 else _static_positions
    pos_d = dask.delayed(positions, traverse=False)
    configs = [dask.delayed(displace, pure=True)(pos_d, species, b_factors=s["b_factors"], config=c, seed=seed)
               for c in range(n_configs)]
    kwargs = pattern_arguments(s)
    k = _pattern_size(s)
    tilts = []
    for t in range(len(euler)):
        bands = []
        for r0, r1 in bounds:
            tiles = [dask.delayed(pattern_tile, pure=True)(configs[c], species, euler[t], rows=(r0, r1), **kwargs)
                     for c in range(n_configs)]
            band = dask.delayed(_band, pure=True)(tiles, dose, s["step"], seed, t, r0)
            bands.append(da.from_delayed(band, shape=(r1 - r0, nx, k, k), dtype=np.float32))
        tilts.append(da.concatenate(bands, axis=0))
    data = da.stack(tilts)
    record = provenance_record("simulate.fourdstem", {**jsonable(s), "seed": int(seed), "dose": dose,
                                                      "rows_per_task": chunk},
                               inputs=[f"atoms ({len(positions)} atoms: {', '.join(sorted(set(species.tolist())))})"])
    return xr.DataArray(
        data, dims=PATTERN_DIMS, name="patterns",
        coords={"phi": ("tilt", euler[:, 0], {"units": "deg"}), "theta": ("tilt", euler[:, 1], {"units": "deg"}),
                "psi": ("tilt", euler[:, 2], {"units": "deg"})},
        attrs={"step": s["step"], "energy": s["energy"], "semiangle": s["semiangle"], "defocus": s["defocus"],
               "detector": s["detector"], "angular_sampling": _angular_sampling(s),
               "units": "fraction" if dose is None else "counts", "dose": None if dose is None else float(dose),
               "provenance": [record]},
    )


def _pattern_size(s: dict) -> int:
    """Pixels per side of abTEM's pixelated detector cropped at ``detector`` mrad on this cell."""
    import abtem

    probe = abtem.Probe(semiangle_cutoff=s["semiangle"], energy=s["energy"], gpts=s["gpts"], extent=s["extent"])
    shape = abtem.PixelatedDetector(max_angle=s["detector"])._out_base_shape(probe)[0]
    if shape[0] != shape[1]:
        raise InputError(f"4D-STEM simulation: expected square patterns on a square cell, got {shape}")
    return int(shape[-1])


def _angular_sampling(s: dict) -> float:
    """mrad per detector pixel: λ / extent."""
    return physics.wavelength(s["energy"]) / s["extent"] * 1e3
