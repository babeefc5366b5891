"""Noise-free ADF-STEM projections by multislice (abTEM), as pure functions for Dask.

The expensive simulations of a campaign are cut into independent tasks, one per
(tilt, frozen-phonon configuration, chunk of scan rows)::

    settings = resolve(positions, species, params)          # grid plan, B factors, defaults
    displaced = phonon_positions(positions, species, b_factors=..., config=c, seed=s)
    tile = scan_tile(displaced, species, euler_row, rows=(r0, r1), defocus=...,
                     **tile_arguments(settings))             # (r1 - r0, nx) fractions
    image = blur(mean over configurations of the stacked tiles, sigma, pixel_size)

:func:`multislice` builds that graph for one particle and returns a lazy tilt series.

Conventions
-----------
* **Geometry** is the project's (:mod:`aetdask.geometry`): a sample point ``r`` goes to
  ``(x_det, y_det, depth) = A(φ, θ, ψ) · r``; image pixel ``(i, j)`` of an ``(ny, nx)``
  image is the probe position ``y_det = (i − ny//2)·pixel_size``,
  ``x_det = (j − nx//2)·pixel_size``, so a tile overlays :func:`aetdask.simulate.linear`.
  ``(x_det, y_det, depth)`` is a right-handed frame (det A = +1); it is abTEM's
  ``(x, y, z)`` shifted into the cell, so the **beam travels along +depth**, the third row
  of ``A``: it enters the cell at the atom with the smallest depth.
* **Cell**: a square of side ``extent`` (default: twice the larger of the model's largest
  distance from the origin and the scan field's half-width, plus ``pad`` on each side),
  the sample origin at its centre; its thickness is the model's depth range plus ``pad``
  (half above, half below). The potential is periodic, so ``pad`` keeps probe tails and
  atoms from wrapping round.
* **Defocus** (Å): the probe crossover lies ``defocus`` Å along the beam from the particle's
  centre plane (depth 0, the sample origin); 0 focuses at the centre, > 0 focuses deeper
  (towards the exit surface; under-focus). In abTEM's terms ``Probe(defocus=D)`` with
  ``D = (depth of the centre plane below the entrance plane) + defocus`` (abTEM's defocus
  is ``−C10``: a probe with defocus ``D`` comes to a crossover ``D`` Å after the entrance
  plane, checked numerically in the tests).
* **Units**: energy eV, angles mrad, lengths Å, B factors Å², defocus spreads of presets and
  campaigns in nm (±, uniform). Images are the fraction of the incident beam that reaches
  the annular detector (float64).

abTEM clips the annular detector silently at the simulation's largest scattering angle
(the 2/3 antialiasing aperture, :func:`plan_grid`); :func:`plan_grid` chooses a potential
sampling that reaches the detector's outer angle, and :func:`scan_tile` refuses one that
does not.

Reproducibility: phonon displacements and defocus draws are seeded per task, and a row is
always simulated in the same batch. abTEM's default FFTW plans are chosen by timing
(``FFTW_MEASURE``), so two processes could pick different plans and agree to ≈ 1e-6
relative only; :func:`scan_tile` plans by estimate (``FFTW_ESTIMATE``), so worker
processes with one thread each — the layout of :func:`aetdask.cluster.cluster` — give the
same result bit for bit, whatever their number. Several threads in one process may get
differently aligned FFT buffers and then agree to float32 rounding (≈ 1e-6 relative).

References
----------
L.-M. Peng, G. Ren, S. L. Dudarev and M. J. Whelan, Acta Cryst. A 52, 456 (1996).
J. Madsen and T. Susi, Open Research Europe 1, 24 (2021) (abTEM).
"""

from __future__ import annotations

import math
import warnings

import dask
import dask.array as da
import numpy as np
import scipy.ndimage

from aetdask import config, physics
from aetdask.errors import InputError
from aetdask.geometry import projection_matrices
from aetdask.schema import (as_euler, atomic_number, jsonable, normalize_species, provenance_record, tilt_series,
                            validate_atoms)

__all__ = [
    "DEBYE_WALLER_B",
    "PRESETS",
    "plan_grid",
    "scan_tile",
    "phonon_positions",
    "blur",
    "multislice",
    "resolve",
    "tile_arguments",
    "defocus_values",
    "preset_angles",
    "cell_extent",
    "max_angle",
    "b_factors_for",
]

#: Default slice thickness (Å): this module's choice, not a value from the seed paper.
SLICE_THICKNESS = 1.0
#: Default number of frozen-phonon configurations (module default; see PRESETS).
PHONONS = 8
#: B (Å²) used for a species missing from :data:`DEBYE_WALLER_B`, with a warning.
FALLBACK_B = 0.5
#: Memory (bytes) of the wave functions abTEM holds per call of :func:`scan_tile`'s inner loop.
BATCH_BYTES = 128 * 2**20

# Isotropic Debye–Waller factors B = 8π²<u_x²> (Å²) near room temperature, rounded to two
# decimals from Table 1 of Peng, Ren, Dudarev & Whelan, Acta Cryst. A52, 456 (1996)
# (its highest tabulated temperature; cross-checked against a public transcription of that
# table). Co and O are not in that table: Co is interpolated between its neighbours Fe
# (0.31) and Ni (0.34); O is a typical room-temperature value for oxygen in α-quartz
# refinements (≈ 0.6–0.9 Å²). Sn is the table's (diamond-structure) tin.
DEBYE_WALLER_B = {
    "C": 0.14,
    "O": 0.70,  # not in Peng et al.; quartz-like oxygen, see above
    "Al": 0.75,
    "Si": 0.46,
    "Ti": 0.49,
    "Fe": 0.31,
    "Co": 0.33,  # not in Peng et al.; between Fe and Ni
    "Ni": 0.34,
    "Cu": 0.53,
    "Ge": 0.57,
    "Zr": 0.54,
    "Nb": 0.43,
    "Mo": 0.21,
    "Pd": 0.43,
    "Ag": 0.70,
    "Sn": 1.08,
    "Ta": 0.31,
    "W": 0.15,
    "Pt": 0.36,
    "Au": 0.59,
    "Pb": 2.03,
}

# Named parameter sets after the columns of the seed paper's Extended Data Table 1
# (Liao et al., Nature 2026; /work/shared/reference/seed-paper/README.md).
# From the paper / its data: pixel_size, shape (Si: 128 px; 19,993-atom Si: 290 px),
# the angle files or rule, the doses and the CoPdPt ±3 nm random-defocus variant.
# Image sizes of SiGeSn, CoPdPt and SiO2 are not in the data snapshot: taken from the
# sizes of the paper's reconstruction masks (260³, 280³, 200³) — an assumption.
# energy, semiangle, detector, blur and background are the project's simulation defaults
# (aetdask.parameters: 200 kV, 17.5 mrad, 40–190 mrad, 0.35 Å, 1 e⁻/pixel), phonons (8) and
# slice_thickness (1 Å) are this module's defaults; the potential sampling is left to
# plan_grid (None). SiO2 in the paper is phase-contrast ptychographic AET; its preset here
# simulates ADF projections of the same geometry. "angles" uses the campaign tilt syntax:
# {"file": name in the seed-paper folder} or {"theta": [start, stop, step]} (stop excluded).
_COMMON = {
    "energy": 200e3,
    "semiangle": 17.5,
    "detector": [40.0, 190.0],
    "blur": 0.35,
    "background": 1.0,
    "phonons": PHONONS,
    "slice_thickness": SLICE_THICKNESS,
    "sampling": None,
    "defocus_spread": 0.0,
}
PRESETS = {
    "Si-208": {**_COMMON, "description": "a-Si, 208 atoms, 2 nm", "pixel_size": 0.195, "shape": 128,
               "angles": {"file": "Si_Angle.mat"}, "doses": [8.0e3, 1.6e4, 1.6e5]},
    "Si-19993": {**_COMMON, "description": "a-Si, 19,993 atoms, 9 nm", "pixel_size": 0.347, "shape": 290,
                 "angles": {"file": "Si_Angle.mat"}, "doses": [8.0e3, 1.6e4, 1.6e5]},
    "SiGeSn": {**_COMMON, "description": "a-SiGeSn, 13,982 atoms, 8 nm", "pixel_size": 0.347, "shape": 260,
               "angles": {"file": "SiGeSn_Angle.mat"}, "doses": [1.6e4, 1.6e5]},
    "CoPdPt": {**_COMMON, "description": "CoPdPt metallic glass, 18,356 atoms, 9 nm, focus at the centre",
               "pixel_size": 0.347, "shape": 280, "angles": {"file": "CoPdPt_Angle_Dose1p7e4.mat"},
               "doses": [1.7e4]},
    "CoPdPt-defocus": {**_COMMON, "description": "CoPdPt, ±3 nm uniform random defocus per projection",
                       "pixel_size": 0.347, "shape": 280, "angles": {"file": "CoPdPt_Angle_Dose1p7e4.mat"},
                       "doses": [1.7e4], "defocus_spread": 3.0},
    "SiO2": {**_COMMON, "description": "a-SiO2, 7,704 atoms, 6 nm (the paper: ptychographic phase AET)",
             "pixel_size": 0.34517, "shape": 200, "angles": {"theta": [-72.0, 75.0, 3.0]},
             "doses": [1.6e3, 1.6e4]},
}

# Keys of a preset that describe a data set rather than a simulation task.
_META_KEYS = {"description", "angles", "doses", "defocus_spread"}
_SIM_KEYS = {"energy", "semiangle", "detector", "blur", "background", "pixel_size", "shape", "phonons",
             "slice_thickness", "sampling", "pad", "b_factors", "device", "strict", "rows_per_task", "defocus"}


# ----------------------------------------------------------------------------- grid
def _fast_size(n: int) -> int:
    """Smallest 2^a·3^b·5^c·7^d ≥ n."""
    n = max(int(n), 1)
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def max_angle(gpts: int, extent: float, energy: float) -> float:
    """Largest scattering angle (mrad) abTEM simulates on a square grid: its ``cutoff_angles``.

    abTEM 1.0.11 band-limits the waves to 2/3 of the Nyquist frequency: with
    ``n = gpts`` and ``s = extent / n``, ``m = ⌊(2/3)/s · extent⌋`` points (made the
    parity of ``n``) lie inside the cutoff, and the angle is ``(m // 2) · λ / extent``.
    Intensity beyond it is zero, so an annular detector reaching further is clipped there.
    (The aperture's last ~3 % are a cosine taper, abTEM's ``antialias.taper``.)

    >>> round(max_angle(480, 20.0, 200e3), 1)
    200.6
    """
    n = int(gpts)
    extent = float(extent)
    kcut = 2.0 / 3.0 / (extent / n)
    m = int(np.floor(np.round(kcut * extent, 7)))
    if (m % 2 == 0) != (n % 2 == 0):
        m += 1
    return (m // 2) * physics.wavelength(energy) / extent * 1e3


def plan_grid(extent: float, *, energy: float | None = None, detector_outer: float | None = None,
              sampling: float | None = None, strict: bool = False) -> dict:
    """Potential and wave grid of a square cell of side ``extent`` Å that reaches the detector.

    Parameters
    ----------
    extent : float
        Side of the (square) cell, Å.
    energy : float, optional
        Beam energy (eV); None = ``aetdask.simulate.energy``.
    detector_outer : float, optional
        Outer angle of the annular detector (mrad); None = ``aetdask.simulate.detector[1]``.
    sampling : float, optional
        Wanted potential sampling (Å); the grid is at least this fine. None = the coarsest
        sampling whose maximum angle (:func:`max_angle`) reaches ``detector_outer``.
    strict : bool
        With a ``sampling`` too coarse for the detector: raise :class:`InputError` instead
        of refining it.

    Returns
    -------
    dict
        ``extent``, ``gpts`` (2^a·3^b·5^c·7^d points per side), ``sampling`` (= extent /
        gpts, Å), ``max_angle`` (mrad), ``detector_outer``, ``energy``,
        ``requested_sampling``, ``enlarged`` (True when a given sampling was refined to
        reach the detector) and ``message`` (what was changed and why, else None).

    Examples
    --------
    >>> plan = plan_grid(20.0, energy=200e3, detector_outer=190.0)
    >>> plan["gpts"], round(plan["sampling"], 4), plan["max_angle"] >= 190.0
    (480, 0.0417, True)
    >>> coarse = plan_grid(20.0, energy=200e3, detector_outer=190.0, sampling=0.1)
    >>> coarse["enlarged"], coarse["gpts"]
    (True, 480)
    """
    extent = float(extent)
    if not (np.isfinite(extent) and extent > 0):
        raise InputError(f"plan_grid: extent must be a positive length in Å, got {extent}")
    energy = float(config.get("simulate.energy", energy))
    if detector_outer is None:
        detector_outer = config.get("simulate.detector")[1]
    outer = float(detector_outer)
    if not (np.isfinite(outer) and outer > 0):
        raise InputError(f"plan_grid: detector_outer must be a positive angle in mrad, got {detector_outer}")
    tol = 1e-9 * outer
    result = {"extent": extent, "detector_outer": outer, "energy": energy,
              "requested_sampling": None if sampling is None else float(sampling), "enlarged": False,
              "message": None}
    if sampling is not None:
        sampling = float(sampling)
        if not (np.isfinite(sampling) and sampling > 0):
            raise InputError(f"plan_grid: sampling must be a positive length in Å, got {sampling}")
        n = _fast_size(math.ceil(extent / sampling - 1e-6))
        angle = max_angle(n, extent, energy)
        if angle >= outer - tol:
            return {**result, "gpts": n, "sampling": extent / n, "max_angle": angle}
    # the coarsest fast grid whose cutoff reaches the detector
    lam = physics.wavelength(energy)
    n = _fast_size(max(2, int(3 * outer * 1e-3 * extent / lam) - 8))
    while max_angle(n, extent, energy) < outer - tol:
        n = _fast_size(n + 1)
    planned = {**result, "gpts": n, "sampling": extent / n, "max_angle": max_angle(n, extent, energy)}
    if sampling is None:
        return planned
    text = (f"the detector's outer angle ({outer:g} mrad) is beyond the simulation's maximum scattering "
            f"angle ({angle:.1f} mrad) at a potential sampling of {sampling:g} Å, where abTEM would clip "
            f"the detector silently")
    if strict:
        raise InputError(f"{text}; use a sampling of at most {extent / n:.4f} Å or a smaller outer angle")
    planned["enlarged"] = True
    planned["message"] = (f"{text}: sampling refined to {extent / n:.4f} Å ({n}×{n} points, maximum "
                          f"angle {planned['max_angle']:.1f} mrad)")
    return planned


def cell_extent(positions, pixel_size: float, shape, pad: float, margin: float = 0.0) -> float:
    """Side (Å) of a square cell that holds the model at any tilt and the scan field, plus ``pad``.

    ``2 · (max(largest |r| of the atoms + margin, scan half-width) + pad)``: the same
    for every projection of a model, so all its tasks share one grid.

    >>> cell_extent([[3.0, 4.0, 0.0]], 0.5, 8, pad=2.0)
    14.0
    """
    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    ny, nx = _shape(shape)
    radius = float(np.sqrt((pos**2).sum(axis=1)).max()) + float(margin) if len(pos) else 0.0
    field = max(ny // 2, nx // 2) * float(pixel_size)
    return 2.0 * (max(radius, field) + float(pad))


def _shape(shape) -> tuple[int, int]:
    if np.ndim(shape) == 0:
        return int(shape), int(shape)
    ny, nx = (int(s) for s in shape)
    return ny, nx


# ----------------------------------------------------------------------------- one task
def scan_tile(
    positions,
    numbers,
    euler_row,
    *,
    pixel_size: float,
    shape,
    rows,
    energy: float | None = None,
    semiangle: float | None = None,
    detector=None,
    defocus: float = 0.0,
    slice_thickness: float = SLICE_THICKNESS,
    sampling: float | None = None,
    pad: float | None = None,
    device: str = "cpu",
    extent: float | None = None,
) -> np.ndarray:
    """ADF signal of one frozen configuration, one projection, image rows ``rows`` (multislice).

    Parameters
    ----------
    positions : (n, 3) array
        Atom positions (Å) in the sample frame, already displaced by the caller.
    numbers : (n,) array
        Atomic numbers or element symbols.
    euler_row : (3,) array
        (φ, θ, ψ) of the projection, degrees (:mod:`aetdask.geometry`).
    pixel_size : float
        Scan step (Å).
    shape : int or (int, int)
        ``(ny, nx)`` of the whole image; the image centre ``(ny//2, nx//2)`` is the sample origin.
    rows : (int, int)
        ``(start, stop)`` image rows of this tile; all ``nx`` columns are scanned.
    energy, semiangle, detector
        eV, mrad, (inner, outer) mrad; None = ``aetdask.simulate.*``.
    defocus : float
        Probe crossover position along the beam relative to the centre plane (Å, > 0 deeper).
    slice_thickness : float
        Multislice slice thickness (Å).
    sampling : float, optional
        Potential sampling (Å), e.g. ``plan_grid(...)["sampling"]``; refined to a fast grid
        size, never coarsened. None = the coarsest that reaches the detector. A sampling whose
        maximum angle falls short of the detector's outer angle raises :class:`InputError`.
    pad : float, optional
        Vacuum (Å) around the model and the scan field; None = ``aetdask.simulate.pad``.
    device : str
        ``"cpu"`` or ``"gpu"`` (abTEM's device).
    extent : float, optional
        Side of the square cell (Å); None = :func:`cell_extent`. Pass one value for every task
        of a simulation so that all share one grid.

    Returns
    -------
    np.ndarray
        float64 ``(stop − start, nx)``: the fraction of the incident beam reaching the detector
        at each probe position. No blur.

    Notes
    -----
    Lobato parametrisation, infinite projection, abTEM's default precision (float32). The
    computation is eager and uses neither abTEM's nor Dask's scheduler: it runs in the
    calling thread, so it can be a task of a distributed worker. Probe positions are
    simulated one image row at a time (split only to bound memory), so the result of a row
    does not depend on how the rows are chunked into tasks.

    Examples
    --------
    The first call imports abTEM and compiles its kernels (≈ 4 s):

    >>> tile = scan_tile([[0.0, 0.0, 0.0]], [14], [0, 0, 0], pixel_size=0.5, shape=4, rows=(2, 3),
    ...                  detector=(30, 50), sampling=0.15, pad=3.0, slice_thickness=2.0)  # doctest: +SKIP
    >>> tile.shape, int(tile.argmax()), bool(0 < tile.max() < 0.05)  # doctest: +SKIP
    ((1, 4), 2, True)
    """
    import abtem
    from ase import Atoms

    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    z = atomic_number(numbers) if len(pos) else np.zeros(0, dtype=int)
    if len(z) != len(pos):
        raise InputError(f"scan_tile: {len(z)} atomic numbers for {len(pos)} positions")
    ny, nx = _shape(shape)
    r0, r1 = (int(r) for r in rows)
    if not 0 <= r0 < r1 <= ny:
        raise InputError(f"scan_tile: rows must be (start, stop) with 0 ≤ start < stop ≤ {ny}, got {rows}")
    p = float(pixel_size)
    energy = float(config.get("simulate.energy", energy))
    semiangle = float(config.get("simulate.semiangle", semiangle))
    inner, outer = (float(d) for d in config.get("simulate.detector", detector))
    pad = float(config.get("simulate.pad", pad))
    euler_row = np.asarray(euler_row, dtype=float)
    if euler_row.size != 3 or not np.all(np.isfinite(euler_row)):
        raise InputError(f"scan_tile: euler_row must be one finite (φ, θ, ψ) triple in degrees, got {euler_row.tolist()}")
    a = projection_matrices(euler_row.reshape(1, 3))[0]
    xyz = pos @ a.T  # (x_det, y_det, depth)
    if extent is None:
        extent = cell_extent(pos, p, (ny, nx), pad)
    extent = float(extent)
    half = extent / 2
    if len(pos) and np.abs(xyz[:, :2]).max() >= half:
        raise InputError(f"scan_tile: the model reaches {np.abs(xyz[:, :2]).max():.2f} Å from the axis, "
                         f"outside the {extent:.2f} Å cell; give a larger extent")
    plan = plan_grid(extent, energy=energy, detector_outer=outer, sampling=sampling, strict=True)
    gpts = plan["gpts"]

    dmin, dmax = (float(xyz[:, 2].min()), float(xyz[:, 2].max())) if len(pos) else (0.0, 0.0)
    top = pad / 2
    cell_z = dmax - dmin + pad
    atoms = Atoms(numbers=z, positions=np.column_stack([xyz[:, 0] + half, xyz[:, 1] + half, xyz[:, 2] - dmin + top]),
                  cell=[extent, extent, cell_z])
    focal = top - dmin + float(defocus)  # crossover depth below the entrance plane = abTEM's defocus

    # Everything eager (lazy=False never builds a Dask graph); the synchronous scheduler is a
    # guard should a code path of abTEM compute something anyway. FFTW plans chosen by
    # estimate, not by timing, are the same in every process: identical results on any worker.
    with dask.config.set(scheduler="synchronous"), abtem.config.set({"fftw.planning_effort": "FFTW_ESTIMATE"}):
        potential = abtem.Potential(atoms, gpts=gpts, slice_thickness=float(slice_thickness),
                                    parametrization="lobato", projection="infinite", device=device)
        potential = potential.build(lazy=False)
        probe = abtem.Probe(semiangle_cutoff=semiangle, energy=energy, defocus=focal, device=device)
        probe.grid.match(potential)
        detector_ = abtem.AnnularDetector(inner=inner, outer=outer)
        per_batch = max(1, int(BATCH_BYTES // (gpts * gpts * 8 * 4)))
        xs = (np.arange(nx) - nx // 2) * p + half
        out = np.empty((r1 - r0, nx), dtype=np.float64)
        for i, row in enumerate(range(r0, r1)):
            y = (row - ny // 2) * p + half
            for c0 in range(0, nx, per_batch):
                c1 = min(c0 + per_batch, nx)
                scan = abtem.CustomScan(np.column_stack([xs[c0:c1], np.full(c1 - c0, y)]))
                measured = probe.scan(potential, scan=scan, detectors=detector_, lazy=False)
                out[i, c0:c1] = np.asarray(_to_numpy(measured.array), dtype=np.float64).reshape(-1)
    return out


def _to_numpy(array):
    if hasattr(array, "get"):  # CuPy
        return array.get()
    return array


# ----------------------------------------------------------------------------- phonons, blur
def row_bands(ny: int, rows_per_task: int | None, what: str) -> tuple[int, list[tuple[int, int]]]:
    """Rows per task (None or 0 = all ``ny``) and the ``(start, stop)`` band of each task.

    >>> row_bands(5, 2, "x")
    (2, [(0, 2), (2, 4), (4, 5)])
    """
    chunk = int(rows_per_task or ny)
    if chunk < 1:
        raise InputError(f"{what}: rows_per_task must be ≥ 1, got {chunk}")
    return chunk, [(r, min(r + chunk, ny)) for r in range(0, ny, chunk)]


def b_factors_for(species, b_factors: dict | None = None) -> dict:
    """B (Å²) of each species present: ``b_factors`` first, then :data:`DEBYE_WALLER_B`.

    A species in neither gets :data:`FALLBACK_B` and a warning.

    >>> b_factors_for(["Si", "Pt", "Si"], {"Pt": 0.3})
    {'Pt': 0.3, 'Si': 0.46}
    """
    symbols = sorted(set(normalize_species(species).tolist())) if len(np.atleast_1d(species)) else []
    given = {normalize_species([k])[0]: float(v) for k, v in (b_factors or {}).items()}
    out, missing = {}, []
    for s in symbols:
        if s in given:
            out[s] = given[s]
        elif s in DEBYE_WALLER_B:
            out[s] = DEBYE_WALLER_B[s]
        else:
            out[s] = FALLBACK_B
            missing.append(s)
    if missing:
        warnings.warn(f"no Debye–Waller factor known for {', '.join(missing)}: using B = {FALLBACK_B} Å²; "
                      "pass b_factors={...} to set it", stacklevel=2)
    for s, b in out.items():
        if not (np.isfinite(b) and b >= 0):
            raise InputError(f"b_factors: B of {s} must be ≥ 0 Å², got {b}")
    return out


def phonon_positions(positions, species, *, b_factors: dict | None = None, config: int, seed: int) -> np.ndarray:
    """Positions of frozen-phonon configuration ``config``: independent Gaussian displacements.

    Each atom moves along each axis by N(0, σ²) with ``σ = sqrt(B / 8π²)``, ``B`` (Å²) of its
    species (``b_factors``, else :data:`DEBYE_WALLER_B`). The draws come from
    ``np.random.default_rng([seed, config])``, so a configuration is the same wherever it is
    computed; configuration 0 is displaced too (every configuration is a sample).

    >>> p = phonon_positions(np.zeros((3, 3)), ["Si"] * 3, config=0, seed=1)
    >>> p.shape, bool(np.all(p != 0)), bool(np.all(p == phonon_positions(np.zeros((3, 3)), ["Si"] * 3, config=0, seed=1)))
    ((3, 3), True, True)
    """
    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    symbols = normalize_species(species) if len(pos) else np.array([], dtype="<U2")
    if len(symbols) != len(pos):
        raise InputError(f"phonon_positions: {len(symbols)} species for {len(pos)} positions")
    table = b_factors_for(symbols, b_factors)
    sigma = np.array([math.sqrt(table[s] / (8 * math.pi**2)) for s in symbols.tolist()])
    rng = np.random.default_rng([int(seed), int(config)])
    return pos + rng.standard_normal(pos.shape) * sigma[:, None]


def blur(image, sigma: float, pixel_size: float) -> np.ndarray:
    """The partial-coherence Gaussian (σ in Å) over a projection (or the last two axes of a stack).

    >>> img = np.zeros((21, 21)); img[10, 10] = 1.0
    >>> out = blur(img, 0.5, 0.25)
    >>> round(float(out.sum()), 6), bool(out[10, 10] < 0.1)
    (1.0, True)
    """
    arr = np.asarray(image, dtype=np.float64)
    s = float(sigma) / float(pixel_size)
    if s <= 0:
        return arr.copy()
    sig = (0.0,) * (arr.ndim - 2) + (s, s)
    return scipy.ndimage.gaussian_filter(arr, sig, mode="nearest")


# ----------------------------------------------------------------------------- settings
def resolve(positions, species, params: dict | None = None, preset: dict | None = None) -> dict:
    """Complete simulation settings for one model: defaults, B factors and the grid plan.

    ``params`` may hold ``energy, semiangle, detector, blur, background, pixel_size,
    shape, phonons, slice_thickness, sampling, pad, b_factors, device, strict,
    rows_per_task, defocus`` (a focus offset, Å) and the data-set keys of a preset
    (``description, angles, doses, defocus_spread``, ignored here); ``preset`` the same
    keys from a preset (:data:`PRESETS`). A setting given in ``params`` wins; then, for
    the ``aetdask.simulate.*`` keys, a value the user set in the configuration
    (:func:`aetdask.config.explicit`); then the preset's; then the defaults.
    ``pixel_size`` and ``shape`` are required (given or from the preset).

    The cell (:func:`cell_extent`, with a margin of 6 σ of the largest phonon
    displacement) is planned once for the model with :func:`plan_grid`; ``grid_note`` is
    the plan's message when a given sampling had to be refined.

    Examples
    --------
    >>> s = resolve([[0.0, 0.0, 0.0]], ["Si"], {"pixel_size": 0.5, "shape": 8, "detector": [40, 80]})
    >>> s["shape"], s["phonons"], s["b_factors"], s["max_angle"] >= 80, s["grid_note"]
    ((8, 8), 8, {'Si': 0.46}, True, None)
    """
    p = {k: v for k, v in dict(params or {}).items() if v is not None}
    unknown = (set(p) | set(preset or {})) - _SIM_KEYS - _META_KEYS
    if unknown:
        raise InputError(f"multislice: unknown parameter(s) {sorted(unknown)}; known: {sorted(_SIM_KEYS)}")
    pre_given = dict(preset or {})
    if p.get("pixel_size", pre_given.get("pixel_size")) is None or p.get("shape", pre_given.get("shape")) is None:
        raise InputError("multislice: give pixel_size (Å) and shape (pixels), or a preset")
    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    pre = dict(preset or {})

    def given(name, default=None):  # a setting that is not a configuration key: given, else preset, else default
        v = p.get(name)
        return pre.get(name, default) if v is None else v

    def cfg(name):  # a configuration key: given, else set by the user, else preset, else the default
        return config.get(f"simulate.{name}", p.get(name), preset=pre.get(name))

    detector = [float(d) for d in cfg("detector")]
    if not 0 <= detector[0] < detector[1]:
        raise InputError(f"multislice: detector must be (inner, outer) mrad with 0 ≤ inner < outer, got {detector}")
    rows = given("rows_per_task")
    settings = {
        "energy": float(cfg("energy")),
        "semiangle": float(cfg("semiangle")),
        "detector": detector,
        "blur": float(cfg("blur")),
        "background": float(cfg("background")),
        "pixel_size": float(given("pixel_size")),
        "shape": _shape(given("shape")),
        "phonons": int(given("phonons", PHONONS)),
        "slice_thickness": float(given("slice_thickness", SLICE_THICKNESS)),
        "pad": float(cfg("pad")),
        "device": str(given("device") or config.get("device")),  # abTEM's "cpu" | "gpu"
        "defocus": float(given("defocus") or 0.0),
        "rows_per_task": None if rows is None else int(rows),
    }
    if settings["phonons"] < 0:
        raise InputError(f"multislice: phonons must be ≥ 0 configurations, got {settings['phonons']}")
    if not settings["pixel_size"] > 0 or min(settings["shape"]) < 1:
        raise InputError("multislice: pixel_size must be > 0 Å and shape ≥ 1 pixel")
    if not settings["slice_thickness"] > 0:
        raise InputError(f"multislice: slice_thickness must be > 0 Å, got {settings['slice_thickness']}")
    settings["b_factors"] = b_factors_for(species, given("b_factors"))
    sigma_max = max((math.sqrt(b / (8 * math.pi**2)) for b in settings["b_factors"].values()), default=0.0)
    margin = 6 * sigma_max if settings["phonons"] > 0 else 0.0
    extent = cell_extent(pos, settings["pixel_size"], settings["shape"], settings["pad"], margin=margin)
    plan = plan_grid(extent, energy=settings["energy"], detector_outer=detector[1], sampling=given("sampling"),
                     strict=bool(given("strict", False)))
    settings.update({
        "extent": plan["extent"],
        "gpts": plan["gpts"],
        "sampling": plan["sampling"],
        "max_angle": plan["max_angle"],
        "requested_sampling": plan["requested_sampling"],
        "grid_note": plan["message"],
    })
    return settings


def tile_arguments(settings: dict) -> dict:
    """The keyword arguments of :func:`scan_tile` in ``settings`` (from :func:`resolve`)."""
    keys = ("pixel_size", "shape", "energy", "semiangle", "detector", "slice_thickness", "sampling", "pad",
            "device", "extent")
    return {k: settings[k] for k in keys}


def defocus_values(n: int, spread: float, seed: int, focus: float = 0.0) -> np.ndarray:
    """Defocus (Å) of ``n`` projections: ``focus`` plus a uniform draw in ±``spread`` nm.

    Projection ``k`` draws from ``np.random.default_rng([seed, k, 7])``, so its value does
    not depend on which worker computes it or on the number of projections.

    >>> defocus_values(3, 0.0, 1).tolist()
    [0.0, 0.0, 0.0]
    >>> d = defocus_values(100, 3.0, 1)
    >>> bool(np.all(np.abs(d) <= 30.0)), bool(d.std() > 10), bool(d[5] == defocus_values(6, 3.0, 1)[5])
    (True, True, True)
    """
    spread = float(spread)
    if not (np.isfinite(spread) and spread >= 0):
        raise InputError(f"defocus spread must be ≥ 0 nm, got {spread}")
    if spread == 0:
        return np.full(int(n), float(focus))
    return np.array([float(focus) + 10.0 * np.random.default_rng([int(seed), k, 7]).uniform(-spread, spread)
                     for k in range(int(n))])


def preset_angles(preset, directory=None) -> np.ndarray:
    """Euler angles (n, 3) of a preset (name or dict); ``directory`` holds its angle file.

    >>> preset_angles("SiO2").shape
    (49, 3)
    """
    import pathlib

    p = PRESETS[preset] if isinstance(preset, str) else preset
    spec = p["angles"]
    if "theta" in spec:
        start, stop, step = (float(v) for v in spec["theta"])
        return as_euler(np.arange(start, stop, step))
    from aetdask.io import read_angles

    if directory is None:
        raise InputError(f"preset angles come from the file {spec['file']!r}: give the folder that holds it")
    return as_euler(read_angles(pathlib.Path(directory) / spec["file"]))


# ----------------------------------------------------------------------------- convenience
def _projection(tiles, n_configs: int, n_chunks: int, sigma: float, pixel_size: float) -> np.ndarray:
    rows = [np.mean([tiles[c * n_chunks + r] for c in range(n_configs)], axis=0) for r in range(n_chunks)]
    return blur(np.concatenate(rows, axis=0), sigma, pixel_size)


def preset_parameters(preset, presets: dict, what: str) -> dict:
    """A copy of ``presets[preset]`` (a name), of a given dict, or {} for None.

    >>> preset_parameters("SiO2", PRESETS, "multislice")["shape"]
    200
    """
    if isinstance(preset, str):
        if preset not in presets:
            raise InputError(f"{what}: unknown preset {preset!r}; presets: {sorted(presets)}")
        return dict(presets[preset])
    return dict(preset or {})


def _static_positions(positions, species, *, b_factors=None, config=0, seed=0):
    return np.asarray(positions, dtype=float)


def multislice(
    atoms,
    angles,
    *,
    pixel_size: float | None = None,
    shape=None,
    phonons: int | None = None,
    seed: int = 0,
    defocus_spread: float | None = None,
    preset=None,
    rows_per_task: int | None = None,
    **params,
):
    """A lazy, noise-free ADF-STEM tilt series by multislice with frozen phonons.

    One ``dask.delayed`` task per (tilt, phonon configuration, chunk of ``rows_per_task``
    image rows) runs :func:`scan_tile`; each projection is the mean over the
    configurations, blurred by the partial-coherence Gaussian (:func:`blur`). Every random
    draw is seeded from ``seed`` and the task's indices, so the result does not depend on
    the scheduler, the number of workers or the row chunking.

    Parameters
    ----------
    atoms : xr.Dataset
        Atomic model (``position`` in Å in the sample frame, centred on the origin).
    angles : array
        One θ per projection or (φ, θ, ψ) rows, degrees.
    pixel_size, shape
        Scan step (Å) and image size (pixels); None = the preset's.
    phonons : int, optional
        Frozen-phonon configurations (0 = the static model); None = the preset's, else 8.
    seed : int
        Seed of the phonon displacements (``[seed, config]``) and of the random defocus
        (``[seed, tilt, 7]``).
    defocus_spread : float, optional
        Defocus of each projection drawn uniformly in ±spread **nm** around focus at the
        particle centre; None = the preset's, else 0.
    preset : str or dict, optional
        A :data:`PRESETS` entry supplying defaults.
    rows_per_task : int, optional
        Image rows per task; None = the whole image.
    **params
        ``energy, semiangle, detector, blur, slice_thickness, sampling, pad, b_factors,
        device, strict, defocus`` (see :func:`resolve` and :func:`scan_tile`).

    Returns
    -------
    xr.DataArray
        Tilt series ``(tilt, y, x)``, units ``"fraction"``, float64, with a ``defocus``
        coordinate (Å) on ``tilt``; the provenance records the settings and the grid plan.

    Examples
    --------
    >>> from aetdask.schema import atoms as make_atoms
    >>> model = make_atoms([[0.0, 0.0, 0.0]], ["Si"])
    >>> ts = multislice(model, [0, 90], pixel_size=0.5, shape=6, phonons=1, detector=(30, 50),
    ...                 sampling=0.15, pad=3.0, slice_thickness=2.0)
    >>> ts.dims, ts.shape, ts.attrs["units"]
    (('tilt', 'y', 'x'), (2, 6, 6), 'fraction')
    >>> int(ts[0].values.argmax()) == 3 * 6 + 3  # doctest: +SKIP
    True
    """
    validate_atoms(atoms)
    euler = as_euler(angles)
    pre = preset_parameters(preset, PRESETS, "multislice")
    p = dict(params)
    for key, value in (("pixel_size", pixel_size), ("shape", shape), ("phonons", phonons),
                       ("rows_per_task", rows_per_task)):
        if value is not None:
            p[key] = value
    if defocus_spread is None:
        spread = float(p.get("defocus_spread", pre.get("defocus_spread")) or 0.0)
    else:
        spread = float(defocus_spread)
    positions = np.asarray(atoms.position.values, dtype=float)
    species = atoms.species.values.astype(str)
    settings = resolve(positions, species, p, pre)
    if settings["grid_note"]:
        warnings.warn(f"simulate.multislice: {settings['grid_note']}", stacklevel=2)
    ny, nx = settings["shape"]
    chunk, bounds = row_bands(ny, settings["rows_per_task"], "multislice")
    defocus = defocus_values(len(euler), spread, seed, focus=settings["defocus"])
    n_configs = max(settings["phonons"], 1)
    displace = phonon_positions if settings["phonons"] > 0 else _static_positions
    pos_d = dask.delayed(positions, traverse=False)
    configs = [dask.delayed(displace, pure=True)(pos_d, species, b_factors=settings["b_factors"], config=c, seed=seed)
               for c in range(n_configs)]
    kwargs = tile_arguments(settings)
    projections = []
    for k in range(len(euler)):
        tiles = [dask.delayed(scan_tile, pure=True)(configs[c], species, euler[k], rows=b, defocus=float(defocus[k]),
                                                    **kwargs)
                 for c in range(n_configs) for b in bounds]
        image = dask.delayed(_projection, pure=True)(tiles, n_configs, len(bounds), settings["blur"],
                                                      settings["pixel_size"])
        projections.append(da.from_delayed(image, shape=(ny, nx), dtype=np.float64))
    data = da.stack(projections) if projections else da.zeros((0, ny, nx), dtype=np.float64)
    symbols = sorted(set(species.tolist()))
    record = provenance_record(
        "simulate.multislice",
        {**jsonable(settings), "seed": int(seed), "defocus_spread_nm": spread, "defocus": defocus.tolist(),
         "rows_per_task": chunk,
         "grid": {"extent": settings["extent"], "gpts": settings["gpts"], "sampling": settings["sampling"],
                  "max_angle": settings["max_angle"], "requested_sampling": settings["requested_sampling"],
                  "enlarged": settings["grid_note"] is not None, "message": settings["grid_note"]}},
        inputs=[f"atoms ({len(positions)} atoms: {', '.join(symbols)})"],
    )
    ts = tilt_series(data, euler, settings["pixel_size"], units="fraction", provenance=[record])
    return ts.assign_coords(defocus=("tilt", defocus, {"units": "Å"}))
