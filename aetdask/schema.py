"""The data model: tilt series, volumes and atomic models as plain xarray objects.

==============  =====================  =======================  ==================================
product         type                   dims / coords            attrs
==============  =====================  =======================  ==================================
tilt series     ``xr.DataArray``       ``tilt, y, x``;          ``pixel_size`` (Å), ``units``,
                                       ``phi, theta, psi`` (deg) ``dose`` (e⁻/Å², or None),
                                       on ``tilt``; ``y, x`` Å  ``provenance``
volume          ``xr.DataArray``       ``z, y, x`` in Å         ``voxel_size`` (Å), ``provenance``
atoms           ``xr.Dataset``         ``atom``; ``position``   ``frame``, ``provenance``
                                       ``(atom, xyz)`` Å,
                                       ``species``
==============  =====================  =======================  ==================================

Image and volume coordinates put the sample-frame origin at index ``N // 2``
of every axis (see :mod:`aetdask.geometry`). ``provenance`` is a list of
records, one per stage that made or changed the product.

Examples
--------
>>> import numpy as np
>>> ts = tilt_series(np.zeros((2, 4, 4)), angles=[0, 90], pixel_size=0.5)
>>> ts.dims, ts.x.values.tolist()
(('tilt', 'y', 'x'), [-1.0, -0.5, 0.0, 0.5])
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

import numpy as np
import xarray as xr
from ase.data import atomic_numbers, chemical_symbols

from aetdask._version import __version__
from aetdask.errors import InputError

TILT_DIMS = ("tilt", "y", "x")
VOLUME_DIMS = ("z", "y", "x")
ANGLE_NAMES = ("phi", "theta", "psi")
UNITS = ("counts", "a.u.", "rad")  # rad: ptychographic phase projections

#: Units and a one-line description of every per-tilt coordinate and per-atom variable aetdask writes
#: (:func:`describe` attaches them where a product lacks them; a viewer or a reader of the Zarr store
#: sees what each number is). ``preprocessed_*`` coordinates are described as their namesakes.
DESCRIPTIONS = {
    "phi": ("deg", "Euler angle φ of the projection, R = Rz(φ)·Ry(θ)·Rx(ψ) (aetdask.geometry)"),
    "theta": ("deg", "tilt angle θ about the tilt axis (the sample x axis, the detector's x)"),
    "psi": ("deg", "Euler angle ψ of the projection, R = Rz(φ)·Ry(θ)·Rx(ψ) (aetdask.geometry)"),
    "shift_y": ("px", "alignment shift applied to the projection along y"),
    "shift_x": ("px", "alignment shift applied to the projection along x"),
    "scale": ("1", "intensity scale of the projection relative to the series (total-intensity normalisation)"),
    "noise_alpha": ("1", "Poisson gain of the noise model: variance = alpha × signal + sigma²"),
    "noise_sigma": ("counts", "standard deviation of the signal-independent (Gaussian) noise"),
    "edge_cut": ("px", "width of the edge band cut from the projection before alignment"),
    "defocus": ("Å", "probe defocus of the projection"),
    "dose": ("e⁻/Å²", "electron dose of the projection"),
    "position": ("Å", "atom position in the sample frame (x, y, z)"),
    "species": ("", "element symbol"),
    "intensity": ("a.u.", "integrated intensity of the atom in the reconstruction"),
    "peak": ("a.u.", "peak value of the atom in the reconstruction"),
    "flag": ("", "a per-atom flag set by the stage that made the model"),
    "displacement": ("Å", "distance moved by the coordinate refinement from the traced position"),
    "position_sigma": ("Å", "standard deviation of the position per axis (Cramér–Rao, at the fitted model)"),
    "position_covariance": ("Å²", "3×3 covariance of the position (Cramér–Rao, at the fitted model)"),
    "species_probability": ("1", "posterior probability of each class (non-atom and each species)"),
}


def describe(obj):
    """``obj`` (a DataArray or Dataset) with ``units`` and ``description`` attrs on every coordinate and variable
    named in :data:`DESCRIPTIONS` that lacks them (existing attrs are kept).

    >>> import numpy as np
    >>> ts = tilt_series(np.zeros((2, 4, 4)), angles=[0, 90], pixel_size=0.5)
    >>> describe(ts.assign_coords(shift_y=("tilt", [0.0, 1.0]))).shift_y.attrs["units"]
    'px'
    """
    out = obj.copy(deep=False)
    names = list(out.coords) + (list(out.data_vars) if hasattr(out, "data_vars") else [])
    for name in names:
        key = name[len("preprocessed_"):] if name.startswith("preprocessed_") else name
        if key not in DESCRIPTIONS:
            continue
        units, text = DESCRIPTIONS[key]
        attrs = out[name].attrs
        if "units" not in attrs and units:
            attrs["units"] = units
        if "description" not in attrs:
            attrs["description"] = text if key == name else f"{text}, as preprocessing recorded it"
    return out


# ----------------------------------------------------------------------------- helpers
def provenance_record(stage: str, params: dict | None = None, inputs: Sequence[str] = ()) -> dict:
    """One provenance record: the aetdask version, the stage, its parameters and inputs."""
    return {
        "aetdask": __version__,
        "stage": stage,
        "params": jsonable(params or {}),
        "inputs": [str(i) for i in inputs],
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def add_provenance(obj, stage: str, params: dict | None = None, inputs: Sequence[str] = ()):
    """Return ``obj`` (shallow copy) with a provenance record appended."""
    obj = obj.copy(deep=False)
    history = list(obj.attrs.get("provenance", []))
    history.append(provenance_record(stage, params, inputs))
    obj.attrs["provenance"] = history
    return obj


def last_record(obj, stage: str | tuple[str, ...]) -> dict | None:
    """Parameters of the newest provenance record whose stage starts with ``stage`` (or one of them), or None."""
    for record in reversed(obj.attrs.get("provenance", [])):
        if record["stage"].startswith(stage):
            return record["params"]
    return None


def jsonable(value):
    """Convert numpy scalars / arrays (rejected by Zarr attrs) to Python types."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def pixel_coords(n: int, pixel_size: float) -> np.ndarray:
    """Physical coordinates (Å) of ``n`` pixels with the origin at index ``n // 2``."""
    return (np.arange(n) - n // 2) * float(pixel_size)


def as_euler(angles, n: int | None = None, name: str = "angles") -> np.ndarray:
    """Angles as an ``(n, 3)`` float array of (φ, θ, ψ) in degrees.

    Accepts one θ per projection (shape ``(n,)`` or ``(n, 1)``), rows of
    (φ, θ, ψ) (``(n, 3)``) or their transpose (``(3, n)``, as HDF5 MATLAB
    files store them).
    """
    a = np.asarray(angles, dtype=float)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim == 2 and a.shape[0] == 1 and a.shape[1] != 3:
        a = a[0]
    if a.ndim == 1:
        a = np.stack([np.zeros_like(a), a, np.zeros_like(a)], axis=1)
    elif a.ndim == 2 and a.shape[1] != 3 and a.shape[0] == 3:
        a = a.T
    if a.ndim != 2 or a.shape[1] != 3:
        raise InputError(
            f"{name}: expected one θ per projection or (φ, θ, ψ) rows, got an array of shape "
            f"{np.shape(angles)}"
        )
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name}: contains NaN or Inf")
    if n is not None and len(a) != n:
        raise InputError(f"{name}: {len(a)} angles for {n} projections; they must match")
    return a


def normalize_species(species, name: str = "species") -> np.ndarray:
    """Element symbols (or atomic numbers) as a numpy array of symbols; unknown ones raise."""
    arr = np.atleast_1d(np.asarray(species))
    if arr.dtype.kind in "iuf":
        z = arr.astype(int)
        if np.any(z != arr) or np.any(z < 1) or np.any(z >= len(chemical_symbols)):
            raise InputError(f"{name}: atomic numbers must be integers from 1 to 118")
        return np.array([chemical_symbols[i] for i in z], dtype="<U2")
    out = []
    for s in arr.tolist():
        sym = str(s).strip().capitalize()
        if sym not in atomic_numbers or sym == "X":
            raise InputError(f"{name}: unknown species {s!r}; expected an element symbol like 'Si'")
        out.append(sym)
    return np.array(out, dtype="<U2")


def atomic_number(species) -> np.ndarray:
    """Atomic numbers of element symbols."""
    return np.array([atomic_numbers[s] for s in normalize_species(species)], dtype=int)


# ----------------------------------------------------------------------------- constructors
def tilt_series(
    data,
    angles,
    pixel_size: float,
    *,
    units: str = "counts",
    dose: float | None = None,
    provenance: list | None = None,
    name: str = "tilt_series",
) -> xr.DataArray:
    """Wrap a ``(tilt, y, x)`` array (NumPy, CuPy or Dask) as a tilt series."""
    if getattr(data, "ndim", None) != 3:
        raise InputError(f"{name}: expected a 3-D (tilt, y, x) array, got shape {np.shape(data)}")
    pixel_size = _positive(pixel_size, "pixel_size")
    euler = as_euler(angles, data.shape[0])
    ny, nx = data.shape[1:]
    da_ = xr.DataArray(
        data,
        dims=TILT_DIMS,
        coords={
            "phi": ("tilt", euler[:, 0], {"units": "deg"}),
            "theta": ("tilt", euler[:, 1], {"units": "deg"}),
            "psi": ("tilt", euler[:, 2], {"units": "deg"}),
            "y": ("y", pixel_coords(ny, pixel_size), {"units": "Å"}),
            "x": ("x", pixel_coords(nx, pixel_size), {"units": "Å"}),
        },
        name=name,
        attrs={
            "pixel_size": pixel_size,
            "units": units,
            "dose": None if dose is None else float(dose),
            "provenance": list(provenance or []),
        },
    )
    return da_


def volume(data, voxel_size: float, *, provenance: list | None = None) -> xr.DataArray:
    """Wrap a ``(z, y, x)`` array as a volume with coordinates in Å."""
    if getattr(data, "ndim", None) != 3:
        raise InputError(f"volume: expected a 3-D (z, y, x) array, got shape {np.shape(data)}")
    voxel_size = _positive(voxel_size, "voxel_size")
    coords = {d: (d, pixel_coords(n, voxel_size), {"units": "Å"}) for d, n in zip(VOLUME_DIMS, data.shape)}
    return xr.DataArray(
        data,
        dims=VOLUME_DIMS,
        coords=coords,
        name="volume",
        attrs={"voxel_size": voxel_size, "units": "a.u.", "provenance": list(provenance or [])},
    )


def atoms(
    position,
    species,
    *,
    intensity=None,
    flag=None,
    frame: str = "sample",
    provenance: list | None = None,
) -> xr.Dataset:
    """An atomic model: ``position (atom, xyz)`` in Å and element ``species``."""
    pos = np.asarray(position, dtype=float)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise InputError(f"atoms: positions must have shape (n, 3), got {pos.shape}")
    sp = normalize_species(species) if len(np.atleast_1d(species)) else np.array([], dtype="<U2")
    if sp.size == 1 and len(pos) != 1:
        sp = np.repeat(sp, len(pos))
    if len(sp) != len(pos):
        raise InputError(f"atoms: {len(sp)} species for {len(pos)} positions; they must match")
    data_vars = {
        "position": (("atom", "xyz"), pos, {"units": "Å"}),
        "species": ("atom", sp),
    }
    if intensity is not None:
        data_vars["intensity"] = ("atom", np.asarray(intensity, dtype=float))
    if flag is not None:
        data_vars["flag"] = ("atom", np.asarray(flag, dtype=int))
    return xr.Dataset(
        data_vars,
        coords={"xyz": ["x", "y", "z"]},
        attrs={"frame": frame, "provenance": list(provenance or [])},
    )


def _positive(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected a positive number, got {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise InputError(f"{name}: expected a positive number, got {value!r}")
    return v


# ----------------------------------------------------------------------------- validation
def validate_tilt_series(ts: xr.DataArray, *, source: str = "tilt series", values: bool = True,
                         plausible: bool = True) -> xr.DataArray:
    """Check a tilt series; raise :class:`InputError` naming the field and the expectation.

    With ``values=True`` the pixel values are checked too (NaN/Inf, negative
    counts); that computes a lazy array, so stages pass ``values=False``.

    With ``plausible=True`` (the default) the series must also be physically
    possible (:func:`aetdask.plausibility.check_tilt_series`): projections from
    at least 2 distinct directions spanning ≥ 20° (angles in radians are refused
    with that hint), a pixel size of 0.01–5 Å, a field of view ≥ 3 Å, and values
    that stay finite in float32; weak but usable series are warned about.
    ``plausible=False`` checks the form only (a bare data-model check).
    """
    if not isinstance(ts, xr.DataArray):
        raise InputError(f"{source}: expected an xarray.DataArray, got {type(ts).__name__}")
    if tuple(ts.dims) != TILT_DIMS:
        raise InputError(f"{source}: dims must be {TILT_DIMS}, got {tuple(ts.dims)}")
    nt, ny, nx = ts.shape
    if nt == 0 or ny == 0 or nx == 0:
        raise InputError(f"{source}: empty tilt series (shape {ts.shape})")
    if ny != nx:
        raise InputError(f"{source}: images must be square, got {ny}×{nx} pixels")
    for a in ANGLE_NAMES:
        if a not in ts.coords or ts.coords[a].dims != ("tilt",):
            raise InputError(f"{source}: coordinate {a!r} on 'tilt' is missing")
        if not np.all(np.isfinite(ts.coords[a].values)):
            raise InputError(f"{source}: angle {a!r} contains NaN or Inf")
    _positive(ts.attrs.get("pixel_size"), f"{source}: attribute 'pixel_size'")
    units = ts.attrs.get("units", "counts")
    if units not in UNITS:
        raise InputError(f"{source}: attribute 'units' = {units!r}; expected one of {UNITS}")
    if values:
        arr = np.asarray(ts.values)
        if arr.dtype.kind not in "biuf":
            raise InputError(f"{source}: expected numeric pixel values, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            k = int(np.argwhere(~np.isfinite(arr))[0][0])
            raise InputError(f"{source}: pixel values contain NaN or Inf (first at tilt {k}); expected finite numbers")
        if units == "counts" and arr.min() < 0:
            k = int(np.argwhere(arr < 0)[0][0])
            raise InputError(
                f"{source}: negative values in count data (tilt {k}, min {arr.min():g}); expected counts ≥ 0. "
                "If these are not raw counts, give units='a.u.' (aetdask import --units a.u.)"
            )
        if not np.any(arr):
            raise InputError(f"{source}: every pixel is zero; expected projections of the sample")
    if plausible:
        from aetdask.plausibility import check_tilt_series

        check_tilt_series(ts, source=source, values=values)
    return ts


def validate_volume(vol: xr.DataArray, *, source: str = "volume") -> xr.DataArray:
    """Check a volume's dims, voxel size and values."""
    if not isinstance(vol, xr.DataArray) or tuple(vol.dims) != VOLUME_DIMS:
        raise InputError(f"{source}: expected a DataArray with dims {VOLUME_DIMS}")
    if 0 in vol.shape:
        raise InputError(f"{source}: empty volume (shape {vol.shape})")
    _positive(vol.attrs.get("voxel_size"), f"{source}: attribute 'voxel_size'")
    return vol


def validate_atoms(ds: xr.Dataset, *, source: str = "atoms", plausible: bool = False) -> xr.Dataset:
    """Check an atomic model: positions finite, species known, lengths agree.

    With ``plausible=True`` no two atoms may be closer than 0.5 Å (a duplicated
    atom; :func:`aetdask.plausibility.check_atom_distances`): atom files read for
    the user are checked so (:func:`aetdask.io.read_atoms`); models aetdask made
    itself are not refused for it after the work is done.
    """
    if not isinstance(ds, xr.Dataset):
        raise InputError(f"{source}: expected an xarray.Dataset, got {type(ds).__name__}")
    for var in ("position", "species"):
        if var not in ds:
            raise InputError(f"{source}: variable {var!r} is missing")
    if ds.position.dims != ("atom", "xyz") or ds.sizes.get("xyz") != 3:
        raise InputError(f"{source}: 'position' must have dims ('atom', 'xyz') with 3 columns")
    pos = np.asarray(ds.position.values, dtype=float)
    if not np.all(np.isfinite(pos)):
        raise InputError(f"{source}: positions contain NaN or Inf")
    normalize_species(ds.species.values, name=f"{source}: species")
    if plausible:
        from aetdask.plausibility import check_atom_distances

        check_atom_distances(pos, source=source)
    return ds
