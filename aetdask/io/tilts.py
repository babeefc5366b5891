"""Tilt-series and tilt-angle readers."""

from __future__ import annotations

import pathlib

import numpy as np
import xarray as xr

from aetdask.errors import InputError
from aetdask.io._mat import pick, read_mat
from aetdask.plausibility import check_tilt_series
from aetdask.schema import as_euler, provenance_record, tilt_series, validate_tilt_series

TILT_SUFFIXES = (".mat", ".npy", ".tif", ".tiff")


def read_tilt_series(path, angles=None, pixel_size=None, var=None, *, units="counts", dose=None) -> xr.DataArray:
    """Read a tilt series into a ``(tilt, y, x)`` DataArray.

    Parameters
    ----------
    path : str or Path
        ``.mat`` (MATLAB v5 or v7.3; stored as MATLAB ``(dim1, dim2, angle)``, read
        as ``y = dim1``, ``x = dim2``), ``.npy`` (already ``(tilt, y, x)``) or a
        multi-page TIFF (one page per tilt).
    angles : str, Path or array
        A file (see :func:`read_angles`) or an array of one θ per projection or
        (φ, θ, ψ) rows, in degrees.
    pixel_size : float
        Å per pixel.
    var : str, optional
        Variable name inside a ``.mat`` holding several 3-D arrays.
    units : {"counts", "a.u."}
        ``"counts"`` (raw detector counts, must be ≥ 0) or ``"a.u."``.
    dose : float, optional
        Dose per projection (e⁻/Å²), if known.

    Raises
    ------
    InputError
        For a malformed file or series (:func:`aetdask.schema.validate_tilt_series`)
        and for one that cannot be a tilt series of atoms
        (:func:`aetdask.plausibility.check_tilt_series`): fewer than 2 distinct
        directions, directions spanning < 20° (angles in radians), a pixel size
        outside 0.01–5 Å or a field under 3 Å, values that over- or underflow
        float32. Messages about the angles name the angle file.
    """
    path = pathlib.Path(path)
    if angles is None:
        raise InputError(f"{path}: the tilt angles are needed (angles=FILE or an array)")
    if pixel_size is None:
        raise InputError(f"{path}: the pixel size in Å is needed (pixel_size=...)")
    data = _read_stack(path, var)
    if data.size == 0:
        raise InputError(f"{path}: empty tilt series (shape {data.shape} as (tilt, y, x)); expected at least "
                         "one projection with pixels in it")
    euler = read_angles(angles) if isinstance(angles, (str, pathlib.Path)) else as_euler(angles, name="angles")
    if len(euler) != data.shape[0]:
        raise InputError(
            f"{path}: {data.shape[0]} projections but {len(euler)} angles"
            + (f" in {angles}" if isinstance(angles, (str, pathlib.Path)) else "")
            + "; expected one θ (or one φ, θ, ψ row) per projection"
        )
    record = provenance_record(
        "io.read_tilt_series",
        {"pixel_size": pixel_size, "var": var, "units": units, "dose": dose},
        inputs=[str(path)] + ([str(angles)] if isinstance(angles, (str, pathlib.Path)) else []),
    )
    if data.dtype.kind in "biu":
        data = data.astype(np.float32)
    try:
        ts = tilt_series(data, euler, pixel_size, units=units, dose=dose, provenance=[record])
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    validate_tilt_series(ts, source=str(path), plausible=False)
    check_tilt_series(ts, source=str(path), angle_source=str(angles) if isinstance(angles, (str, pathlib.Path))
                      else None)
    return ts


def _read_stack(path: pathlib.Path, var) -> np.ndarray:
    suffix = path.suffix.lower()
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if suffix == ".mat":
        arr = pick(read_mat(path), path, var, (3,), "3-D")
        if arr.ndim != 3:
            raise InputError(f"{path}: variable {var!r} is not 3-D (shape {arr.shape})")
        return np.ascontiguousarray(np.moveaxis(arr, 2, 0))  # (dim1, dim2, angle) -> (tilt, y, x)
    if suffix == ".npy":
        arr = _load_npy(path)
    elif suffix in (".tif", ".tiff"):
        import tifffile

        try:
            arr = tifffile.imread(path)
        except Exception as exc:
            raise InputError(f"{path}: cannot read this TIFF file; is it truncated? ({exc})") from None
    else:
        raise InputError(f"{path}: unknown tilt-series format {suffix!r}; expected one of {TILT_SUFFIXES}")
    if arr.ndim != 3:
        raise InputError(f"{path}: expected a 3-D (tilt, y, x) stack, got shape {arr.shape}")
    return arr


def _load_npy(path: pathlib.Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        if "allow_pickle" in str(exc):
            raise InputError(f"{path}: holds pickled Python objects, which aetdask never loads; expected a "
                             "numeric array") from None
        raise InputError(f"{path}: cannot read this .npy file; is it truncated? ({exc})") from None


def read_angles(path, var=None) -> np.ndarray:
    """Tilt angles as an ``(n, 3)`` array of (φ, θ, ψ) in degrees.

    ``.mat`` (v5 or v7.3: the variable ``var``, else the single (φ, θ, ψ) table
    or the single numeric array inside), ``.npy``, or a text
    file (whitespace or comma separated; ``#`` and ``%`` start comments), each
    holding one θ per projection or rows of (φ, θ, ψ).
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        arrays = read_mat(path)
        tables = [k for k, v in arrays.items() if v.ndim == 2 and 3 in v.shape and v.size > 3]
        if var is None and len(tables) == 1:  # e.g. Angle_OPT beside R_OPT in a refinement output
            var = tables[0]
        arr = pick(arrays, path, var, (1, 2), "angle")
    elif suffix == ".npy":
        arr = _load_npy(path)
        if arr.dtype.kind not in "biuf":
            raise InputError(f"{path}: angles of dtype {arr.dtype}; expected numbers (degrees), one θ per projection "
                             "or (φ, θ, ψ) rows")
    else:
        try:
            text = path.read_text()
            rows = [
                line.split("#")[0].split("%")[0].replace(",", " ").split()
                for line in text.splitlines()
            ]
            rows = [r for r in rows if r]
            arr = np.array([[float(v) for v in r] for r in rows])
        except (UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"{path}: cannot read angles as text numbers ({exc})") from None
        if arr.size == 0:
            raise InputError(f"{path}: no angles found")
    return as_euler(arr, name=str(path))
