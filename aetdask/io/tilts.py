"""Tilt-series and tilt-angle readers."""

from __future__ import annotations

import pathlib

import numpy as np
import xarray as xr

from aetdask.errors import InputError
from aetdask.io._mat import pick, read_mat
from aetdask.io.microscope import MICROSCOPE_SUFFIXES, compare_angles, read_microscope, resolve_pixel_size
from aetdask.plausibility import check_tilt_series
from aetdask.schema import as_euler, provenance_record, tilt_series, validate_tilt_series

TILT_SUFFIXES = (".mat", ".npy", *MICROSCOPE_SUFFIXES)


def read_tilt_series(path, angles=None, pixel_size=None, var=None, *, units="counts", dose=None) -> xr.DataArray:
    """Read a tilt series into a ``(tilt, y, x)`` DataArray.

    Parameters
    ----------
    path : str or Path
        ``.mat`` (MATLAB v5 or v7.3; stored as MATLAB ``(dim1, dim2, angle)``, read
        as ``y = dim1``, ``x = dim2``), ``.npy`` (already ``(tilt, y, x)``), or a
        microscope file read with its metadata (:mod:`aetdask.io.microscope`):
        DigitalMicrograph ``.dm3``/``.dm4``, EMD (Velox or Berkeley) ``.emd``, an MRC
        stack ``.mrc``/``.mrcs``/``.st``/``.ali``, or a multi-page TIFF (one page per
        tilt); a microscope file's stack may hold several frames per tilt
        ``(tilt, frame, y, x)``, summed after drift correction
        (:func:`aetdask.io.microscope.sum_frames`).
    angles : str, Path or array, optional
        A file (see :func:`read_angles`; IMOD ``.tlt``/``.rawtlt`` among them) or an
        array of one θ per projection or (φ, θ, ψ) rows, in degrees. Needed unless a
        microscope file's metadata hold the angles; given, it wins over them (with a
        :class:`~aetdask.io.microscope.MetadataWarning` where they differ).
    pixel_size : float, optional
        Å per pixel. Needed unless a microscope file's metadata hold it; given, it wins
        (with a :class:`~aetdask.io.microscope.MetadataWarning` where the file's differs
        by more than 1 %).
    var : str, optional
        Variable name inside a ``.mat`` holding several 3-D arrays, or the title of the
        image to read from an EMD holding several (default: the HAADF one).
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
    angle_file = isinstance(angles, (str, pathlib.Path))
    microscope = path.suffix.lower() in MICROSCOPE_SUFFIXES
    if not microscope:
        if angles is None:
            raise InputError(f"{path}: the tilt angles are needed (angles=FILE or an array)")
        if pixel_size is None:
            raise InputError(f"{path}: the pixel size in Å is needed (pixel_size=...)")
        data, metadata = _read_stack(path, var), None
    else:
        metadata = read_microscope(path, var)
        data = metadata.data
        pixel_size, pixel_from = resolve_pixel_size(metadata, pixel_size, path)
    if data.size == 0:
        raise InputError(f"{path}: empty tilt series (shape {data.shape} as (tilt, y, x)); expected at least "
                         "one projection with pixels in it")
    if angles is None and metadata is not None:
        if metadata.theta is None:
            raise InputError(f"{path}: the tilt angles are needed and this file's metadata do not hold them; expected "
                             "--angles FILE (angles=... in Python): one θ per projection in degrees (IMOD .tlt or "
                             ".rawtlt, text, .npy or .mat)")
        euler = as_euler(metadata.theta, name=str(path))
        angle_source = metadata.angle_file or str(path)
    else:
        euler = read_angles(angles) if angle_file else as_euler(angles, name="angles")
        angle_source = str(angles) if angle_file else None
    if len(euler) != data.shape[0]:
        raise InputError(
            f"{path}: {data.shape[0]} projections but {len(euler)} angles"
            + (f" in {angles}" if angle_file else "")
            + "; expected one θ (or one φ, θ, ψ row) per projection"
        )
    params = {"pixel_size": pixel_size, "var": var, "units": units, "dose": dose}
    if metadata is not None:
        if angles is not None:
            compare_angles(metadata, euler, str(angles) if angle_file else "the angles given", path)
        params.update(reader=metadata.reader, pixel_size_from=pixel_from,
                      angles_from=metadata.angles_from if angles is None else
                      "given" + (f" (the file: {metadata.angles_from})" if metadata.angles_from else ""),
                      frames=metadata.frames)
    record = provenance_record(
        "io.read_tilt_series",
        params,
        inputs=[str(path)] + ([angle_source] if angle_source and angle_source != str(path) else []),
    )
    if data.dtype.kind in "biu":
        data = data.astype(np.float32)
    try:
        ts = tilt_series(data, euler, pixel_size, units=units, dose=dose, provenance=[record])
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    validate_tilt_series(ts, source=str(path), plausible=False)
    check_tilt_series(ts, source=str(path), angle_source=angle_source)
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
    file (whitespace or comma separated; ``#`` and ``%`` start comments; IMOD's
    ``.tlt`` and ``.rawtlt``, one θ per line, among them), each holding one θ per
    projection or rows of (φ, θ, ψ).
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
