"""Reading MATLAB files: v5 (scipy) and v7.3 (HDF5, h5py), returned with MATLAB's shapes."""

from __future__ import annotations

import pathlib

import h5py
import numpy as np
import scipy.io

from aetdask.errors import InputError


def read_mat(path) -> dict[str, np.ndarray]:
    """All numeric arrays of a ``.mat`` file, keyed by variable name, in MATLAB's shape.

    v7.3 files are HDF5; h5py returns arrays with reversed axes, which are
    transposed back here so both versions give the same shapes.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if h5py.is_hdf5(path):
        try:
            with h5py.File(path, "r") as f:
                out = {}
                for name, obj in f.items():
                    if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "biuf" and not name.startswith("#"):
                        out[name] = np.asarray(obj[()]).T
                return out
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"{path}: cannot read this MATLAB v7.3 (HDF5) file ({exc})") from None
    try:
        data = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises many kinds for damaged files
        raise InputError(f"{path}: cannot read this MATLAB file; is it truncated or not a .mat? ({exc})") from None
    return {k: v for k, v in data.items() if not k.startswith("__") and isinstance(v, np.ndarray) and v.dtype.kind in "biuf"}


def pick(arrays: dict[str, np.ndarray], path, var: str | None, ndim: tuple[int, ...], what: str) -> np.ndarray:
    """The variable ``var``, or the single array with a dimension in ``ndim`` when ``var`` is None."""
    if var is not None:
        if var not in arrays:
            raise InputError(f"{path}: no numeric variable {var!r}; the file holds {sorted(arrays)}")
        return arrays[var]
    candidates = {k: v for k, v in arrays.items() if v.ndim in ndim and v.size > 1}
    if len(candidates) != 1:
        raise InputError(
            f"{path}: expected exactly one {what} array, found {sorted(candidates) or 'none'}; "
            "name the variable with var="
        )
    return next(iter(candidates.values()))
