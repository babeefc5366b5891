"""Volumes out in the formats viewers read: OME-Zarr (NGFF 0.5) and MRC (MRC2014).

Both writers take a ``(z, y, x)`` volume (:func:`aetdask.schema.volume`: voxel size in Å in
``attrs["voxel_size"]``, coordinates in Å with the origin at voxel ``n // 2``) and a path.

* :func:`write_ome_zarr` — a Zarr v3 group whose ``ome`` attributes hold NGFF 0.5
  ``multiscales``: axes ``z``, ``y``, ``x`` of type ``space`` in ``angstrom``; level 0 the
  volume itself, each further level the 2 × 2 × 2 block means of the one before (an odd last
  plane dropped), as long as the level before is at least :data:`MIN_LEVEL_SIDE` voxels on its
  shortest side; each level's ``scale`` is its voxel size and its ``translation`` the position
  of its first voxel's centre, so every level overlays the volume in napari and other NGFF
  readers.
* :func:`write_mrc` — one MRC2014 file, mode 2 (float32), little-endian: ``NX, NY, NZ`` =
  ``x, y, z``, the cell ``NX × voxel`` Å (so the voxel size reads back as the header's), the
  origin (Å) at the first voxel, so that atoms exported with ``aetdask export --atoms`` overlay
  it in ChimeraX.

Neither checks where it writes: ``aetdask export --volume`` does (never over an existing file
without ``--overwrite``, never inside a run store, written under a private name and moved
into place).
"""

from __future__ import annotations

import pathlib

import numpy as np

from aetdask.errors import InputError

#: A level is halved again while its shortest side is at least this many voxels.
MIN_LEVEL_SIDE = 64
#: Suffixes :func:`write_volume` knows.
VOLUME_SUFFIXES = (".ome.zarr", ".mrc")
NGFF_VERSION = "0.5"


def volume_format(path) -> str:
    """``"ome-zarr"`` or ``"mrc"`` by the name's ending.

    Raises
    ------
    InputError
        For any other ending.

    Examples
    --------
    >>> volume_format("particle.ome.zarr"), volume_format("particle.MRC")
    ('ome-zarr', 'mrc')
    """
    name = pathlib.Path(path).name.lower()
    if name.endswith(".ome.zarr"):
        return "ome-zarr"
    if name.endswith(".mrc"):
        return "mrc"
    suffix = pathlib.Path(path).suffix or "(none)"
    raise InputError(f"{path}: unknown volume format {suffix!r}; expected a name ending in .ome.zarr (OME-Zarr, NGFF "
                     f"{NGFF_VERSION}, for napari and other NGFF viewers) or .mrc (MRC2014, for ChimeraX and IMOD)")


def write_volume(volume, path) -> pathlib.Path:
    """Write ``volume`` to ``path`` in the format its name says (:func:`volume_format`)."""
    return write_ome_zarr(volume, path) if volume_format(path) == "ome-zarr" else write_mrc(volume, path)


def _voxel_and_origin(volume) -> tuple[float, np.ndarray]:
    voxel = float(volume.attrs["voxel_size"])
    origin = np.array([float(volume[d].values[0]) if d in volume.coords else 0.0 for d in ("z", "y", "x")])
    return voxel, origin


def _checked(volume) -> np.ndarray:
    if tuple(volume.dims) != ("z", "y", "x"):
        raise InputError(f"volume: dimensions {tuple(volume.dims)}; expected (z, y, x)")
    if "voxel_size" not in volume.attrs:
        raise InputError("volume: no voxel_size attribute; expected a volume of aetdask.schema.volume")
    return np.asarray(volume.values, dtype=np.float32)


def block_means(data: np.ndarray) -> np.ndarray:
    """Means of 2 × 2 × 2 blocks (a trailing odd plane dropped).

    Examples
    --------
    >>> block_means(np.arange(27, dtype=np.float32).reshape(3, 3, 3)).tolist()
    [[[6.5]]]
    """
    nz, ny, nx = (s // 2 * 2 for s in data.shape)
    d = np.asarray(data[:nz, :ny, :nx], dtype=np.float64)
    return d.reshape(nz // 2, 2, ny // 2, 2, nx // 2, 2).mean(axis=(1, 3, 5)).astype(np.float32)


def multiscale_levels(data: np.ndarray) -> list[np.ndarray]:
    """The volume and its block means, halving while the last level's shortest side is ≥ :data:`MIN_LEVEL_SIDE`.

    Examples
    --------
    >>> [lv.shape for lv in multiscale_levels(np.zeros((64, 70, 130), np.float32))]
    [(64, 70, 130), (32, 35, 65)]
    >>> [lv.shape for lv in multiscale_levels(np.zeros((40, 40, 40), np.float32))]
    [(40, 40, 40)]
    """
    levels = [data]
    while min(levels[-1].shape) >= MIN_LEVEL_SIDE:
        levels.append(block_means(levels[-1]))
    return levels


def write_ome_zarr(volume, path) -> pathlib.Path:
    """Write a volume as OME-Zarr (NGFF 0.5 on Zarr v3) with its multiscale levels.

    Parameters
    ----------
    volume : xarray.DataArray
        ``(z, y, x)`` with ``attrs["voxel_size"]`` in Å.
    path : str or Path
        A new folder (conventionally ``NAME.ome.zarr``).

    Returns
    -------
    Path
    """
    import zarr

    from aetdask._version import __version__

    data = _checked(volume)
    voxel, origin = _voxel_and_origin(volume)
    path = pathlib.Path(path)
    levels = multiscale_levels(data)
    root = zarr.open_group(str(path), mode="w-", zarr_format=3)
    datasets = []
    scale, translation = voxel, origin.copy()
    for k, level in enumerate(levels):
        if k:  # a block's centre is half the finer voxel past the finer level's first centre
            translation = translation + scale / 2.0
            scale = scale * 2.0
        chunks = tuple(min(s, 64) for s in level.shape)
        array = root.create_array(str(k), shape=level.shape, dtype="float32", chunks=chunks,
                                  dimension_names=("z", "y", "x"), fill_value=0.0)
        array[...] = level
        datasets.append({"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": [scale] * 3},
            {"type": "translation", "translation": [float(t) for t in translation]},
        ]})
    root.attrs["ome"] = {
        "version": NGFF_VERSION,
        "multiscales": [{
            "name": str(volume.name or "volume"),
            "axes": [{"name": d, "type": "space", "unit": "angstrom"} for d in ("z", "y", "x")],
            "datasets": datasets,
            "type": "mean",
            "metadata": {"description": "2×2×2 block means (a trailing odd plane dropped)", "method": "numpy mean",
                         "written_by": f"aetdask {__version__}"},
        }],
    }
    root.attrs["aetdask"] = {"voxel_size": voxel, "units": volume.attrs.get("units", "a.u."),
                             "origin_angstrom": [float(o) for o in origin]}
    return path


# MRC2014 header: (word offset, count, dtype) by name; words are 4 bytes
_MRC_FIELDS = {
    "nx": (0, 1, "<i4"), "ny": (1, 1, "<i4"), "nz": (2, 1, "<i4"), "mode": (3, 1, "<i4"),
    "nstart": (4, 3, "<i4"), "mxyz": (7, 3, "<i4"), "cella": (10, 3, "<f4"), "cellb": (13, 3, "<f4"),
    "mapcrs": (16, 3, "<i4"), "dmin": (19, 1, "<f4"), "dmax": (20, 1, "<f4"), "dmean": (21, 1, "<f4"),
    "ispg": (22, 1, "<i4"), "nsymbt": (23, 1, "<i4"), "exttyp": (26, 1, "S4"), "nversion": (27, 1, "<i4"),
    "origin": (49, 3, "<f4"), "map": (52, 1, "S4"), "machst": (53, 1, "u1"), "rms": (54, 1, "<f4"),
    "nlabl": (55, 1, "<i4"),
}


def mrc_header(shape, voxel: float, origin, data: np.ndarray, label: str = "") -> bytes:
    """The 1024-byte MRC2014 header of a float32 ``(z, y, x)`` volume (mode 2, little-endian, no extended
    header, space group 1: a single volume)."""
    nz, ny, nx = (int(s) for s in shape)
    header = bytearray(1024)

    def put(name, values):
        word, count, dtype = _MRC_FIELDS[name]
        raw = np.asarray(values, dtype=dtype).reshape(-1)[:count].tobytes()
        header[4 * word: 4 * word + len(raw)] = raw

    d = np.asarray(data, dtype=np.float64)
    put("nx", nx), put("ny", ny), put("nz", nz), put("mode", 2)
    put("nstart", [0, 0, 0]), put("mxyz", [nx, ny, nz])
    put("cella", [nx * voxel, ny * voxel, nz * voxel]), put("cellb", [90.0, 90.0, 90.0])
    put("mapcrs", [1, 2, 3])
    put("dmin", d.min() if d.size else 0.0), put("dmax", d.max() if d.size else 0.0)
    put("dmean", d.mean() if d.size else 0.0), put("rms", d.std() if d.size else 0.0)
    put("ispg", 1), put("nsymbt", 0), put("exttyp", b"\0\0\0\0"), put("nversion", 20140)
    oz, oy, ox = (float(o) for o in origin)
    put("origin", [ox, oy, oz])
    put("map", b"MAP ")
    header[4 * 53: 4 * 53 + 4] = bytes([0x44, 0x44, 0x00, 0x00])  # little-endian machine stamp
    text = label.encode("ascii", "replace")[:80]
    put("nlabl", 1 if text else 0)
    header[224: 224 + len(text)] = text
    return bytes(header)


def write_mrc(volume, path) -> pathlib.Path:
    """Write a volume as one MRC2014 file: mode 2 (float32), voxel size and origin in the header.

    Parameters
    ----------
    volume : xarray.DataArray
        ``(z, y, x)`` with ``attrs["voxel_size"]`` in Å.
    path : str or Path
        A new file (conventionally ``NAME.mrc``).

    Returns
    -------
    Path
    """
    from aetdask._version import __version__

    data = np.ascontiguousarray(_checked(volume), dtype="<f4")
    voxel, origin = _voxel_and_origin(volume)
    path = pathlib.Path(path)
    label = f"aetdask {__version__}: {volume.name or 'volume'}, voxel {voxel:g} A"
    with open(path, "xb") as f:
        f.write(mrc_header(data.shape, voxel, origin, data, label))
        f.write(data.tobytes())
    return path
