"""Atomic-model readers and writers.

Formats
-------
* Extended XYZ and anything else ASE reads (``.xyz``, ``.extxyz``, ``.cif``, ...); a
  refined model's standard errors are the per-atom array ``position_sigma`` (x, y, z).
* CSV written by :func:`write_atoms` (header ``species,x,y,z[,intensity,flag][,sigma_x,sigma_y,sigma_z]``).
* The seed paper's layouts (Liao et al., Nature 2026):

  - text with ``%`` header lines and rows ``type x y z`` (type codes 1, 2, ...
    index ``species``, default ``("Si",)`` as in the paper's a-Si files);
  - tab-separated text without header, rows ``Z x y z ...`` (atomic numbers);
  - ``.mat`` with an ``(n, 3)`` position array and a type-code array
    (``si_40radius_3Atoms_*``: 1 = Si, 2 = Ge, 3 = Sn) or ``atomic_number``;
  - ``.mat`` with ``final_atom_coord_inAngstrom`` (3 × n) and the type codes
    ``final_atom_types`` (1 = Co, 2 = Pd, 3 = Pt) in a sibling ``*types*.mat``.
    These coordinates are stored in the reconstruction's volume-index order
    (dim1, dim2, dim3) = (y, x, z) and are read into the sample frame (x, y, z).

Positions are in Å and kept in the file's own frame (not re-centred).
"""

from __future__ import annotations

import pathlib

import numpy as np
import xarray as xr

from aetdask.errors import InputError
from aetdask.io._mat import read_mat
from aetdask.io.store import check_writable
from aetdask.schema import atoms as make_atoms
from aetdask.schema import normalize_species, provenance_record, validate_atoms

#: Type-code tables of the seed paper's layouts, keyed by the variable that holds the codes.
TYPE_TABLES = {
    "si_40radius_3Atoms_type": ("Si", "Ge", "Sn"),
    "final_atom_types": ("Co", "Pd", "Pt"),
    "%-text": ("Si",),
}


def read_atoms(path, species=None, types=None) -> xr.Dataset:
    """Read an atomic model into a Dataset with ``position (atom, xyz)`` in Å and ``species``.

    Parameters
    ----------
    path : str or Path
    species : sequence of str, optional
        Element of type code 1, 2, ... for files that store type codes (overrides
        the layout's own table).
    types : str or Path, optional
        A separate ``.mat`` with the type codes (the ``final_atom_types`` layout);
        found next to ``path`` when omitted.

    Raises
    ------
    InputError
        For an unreadable or malformed file, and for a model that cannot be a
        sample: two atoms closer than 0.5 Å (one atom written twice; the shortest
        bond there is, H₂'s, is 0.74 Å — :func:`aetdask.plausibility.check_atom_distances`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "m.txt"
    >>> _ = f.write_text("% 2\\n% Properties=species:S:1:pos:R:3\\n1 0 0 0\\n1 2.3 0 0\\n")
    >>> read_atoms(f).species.values.tolist()
    ['Si', 'Si']
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    extra = {}
    try:
        if suffix == ".mat":
            pos, sp = _read_mat_atoms(path, species, types)
        elif suffix == ".csv":
            pos, sp, extra = _read_csv(path)
        elif suffix in (".txt", ".dat"):
            pos, sp = _read_text(path, species)
        else:
            pos, sp, extra = _read_ase(path)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: cannot read atoms ({type(exc).__name__}: {exc})") from None
    if len(pos) == 0:
        raise InputError(f"{path}: no atoms found")
    _check_coordinates(pos, path)
    sigma = extra.pop("position_sigma", None)
    ds = make_atoms(pos, sp, frame="sample", provenance=[provenance_record("io.read_atoms", {}, [str(path)])], **extra)
    if sigma is not None:
        ds["position_sigma"] = (("atom", "xyz"), _checked_sigma(sigma, len(pos), path), {"units": "Å"})
    return validate_atoms(ds, source=str(path), plausible=True)


#: Largest coordinate (Å) of an atom: 0.1 m, wider than any sample holder of an electron microscope. Far
#: below the float64 range, so distances and their squares can be computed for any model within it.
MAX_COORDINATE = 1e9


def _check_coordinates(pos, path) -> None:
    """Refuse positions that are not numbers, or beyond :data:`MAX_COORDINATE` (NaN and Inf are refused by
    :func:`aetdask.schema.validate_atoms` with the other checks)."""
    try:
        xyz = np.asarray(pos, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: positions must be numbers ({exc})") from None
    with np.errstate(invalid="ignore"):
        finite = np.abs(xyz[np.isfinite(xyz)])
    if finite.size and finite.max() > MAX_COORDINATE:
        size = np.where(np.isfinite(xyz), np.abs(xyz), 0).reshape(len(xyz), -1).max(axis=1)
        k = int(np.argmax(size))
        raise InputError(f"{path}: atom {k + 1} (counting from 1) has a coordinate of {size[k]:.3g} Å; expected "
                         f"positions in Å within ±{MAX_COORDINATE:.0e} Å (0.1 m: no sample is larger)")


def _codes_to_species(codes, table, path, where) -> np.ndarray:
    codes = np.asarray(codes).ravel()
    if codes.dtype.kind == "f":
        if np.any(codes != np.round(codes)):
            raise InputError(f"{path}: {where} type codes must be integers")
        codes = codes.astype(int)
    table = normalize_species(table, name=f"{path}: species")
    if codes.min() < 1 or codes.max() > len(table):
        raise InputError(
            f"{path}: {where} type codes run from {codes.min()} to {codes.max()} but the species table "
            f"{table.tolist()} has {len(table)} entries; pass species=[...] for codes 1, 2, ..."
        )
    return table[codes - 1]


def _read_text(path, species):
    lines = path.read_text().splitlines()
    header = [line for line in lines if line.lstrip().startswith("%")]
    rows = [line.split() for line in lines if line.strip() and not line.lstrip().startswith(("%", "#"))]
    if not rows:
        raise InputError(f"{path}: no atom rows found")
    ncols = {len(r) for r in rows}
    if len(ncols) != 1 or min(ncols) < 4:
        raise InputError(f"{path}: expected rows of 'type x y z' with the same number of columns; "
                         f"found rows with {sorted(ncols)} columns (truncated file?)")
    first = [r[0] for r in rows]
    try:
        xyz = np.array([[float(v) for v in r[1:4]] for r in rows])
    except ValueError as exc:
        raise InputError(f"{path}: positions must be numbers ({exc})") from None
    if all(_is_number(v) for v in first):
        codes = np.array([float(v) for v in first])
        if header or species is not None:  # the paper's "%"-header layout: type codes
            return xyz, _codes_to_species(codes, TYPE_TABLES["%-text"] if species is None else species, path, "column 1")
        return xyz, normalize_species(codes, name=f"{path}: atomic numbers in column 1")
    return xyz, normalize_species(first, name=f"{path}: species in column 1")


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


#: Columns of a CSV atom file that hold each atom's standard error along x, y and z (Å).
SIGMA_COLUMNS = ("sigma_x", "sigma_y", "sigma_z")


def _checked_sigma(sigma, n, path) -> np.ndarray:
    """Standard errors ``(n, 3)`` read from an atom file: numbers, not negative (infinite: not determined)."""
    try:
        s = np.asarray(sigma, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: position_sigma must be numbers ({exc})") from None
    if s.shape != (n, 3) or np.any(np.isnan(s)) or np.any(s < 0):
        raise InputError(f"{path}: position_sigma must be {n} rows of three standard errors (Å, not negative), "
                         f"got shape {s.shape}")
    return s


def _read_csv(path):
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{path}: empty file")
    head = [h.strip() for h in lines[0].split(",")]
    for col in ("species", "x", "y", "z"):
        if col not in head:
            raise InputError(f"{path}: CSV header must name columns species, x, y, z; got {head}")
    rows = [line.split(",") for line in lines[1:]]
    if any(len(r) != len(head) for r in rows):
        raise InputError(f"{path}: every CSV row needs {len(head)} fields (truncated file?)")
    col = {h: i for i, h in enumerate(head)}
    xyz = np.array([[float(r[col[c]]) for c in "xyz"] for r in rows])
    extra = {k: np.array([float(r[col[k]]) for r in rows]) for k in ("intensity", "flag") if k in col}
    if all(c in col for c in SIGMA_COLUMNS):
        extra["position_sigma"] = np.array([[float(r[col[c]]) for c in SIGMA_COLUMNS] for r in rows])
    return xyz, normalize_species([r[col["species"]].strip() for r in rows], name=f"{path}: species"), extra


def _read_ase(path):
    import ase.io

    atoms = ase.io.read(path)
    extra = {"position_sigma": atoms.arrays["position_sigma"]} if "position_sigma" in atoms.arrays else {}
    return atoms.get_positions(), np.array(atoms.get_chemical_symbols()), extra


def _read_mat_atoms(path, species, types):
    arrays = read_mat(path)
    if "final_atom_coord_inAngstrom" in arrays:
        coord = arrays["final_atom_coord_inAngstrom"]
        coord = coord if coord.shape[0] == 3 else coord.T
        xyz = np.stack([coord[1], coord[0], coord[2]], axis=1)  # (dim1, dim2, dim3) = (y, x, z)
        codes = _find_types_file(path, types, len(xyz))
        table = TYPE_TABLES["final_atom_types"] if species is None else species
        return xyz, _codes_to_species(codes, table, path, "final_atom_types")
    pos = [k for k, v in arrays.items() if v.ndim == 2 and 3 in v.shape and v.dtype.kind == "f" and max(v.shape) > 3]
    if len(pos) != 1:
        raise InputError(f"{path}: expected one (n, 3) position array, found {pos or 'none'} in {sorted(arrays)}")
    xyz = arrays[pos[0]]
    xyz = xyz if xyz.shape[1] == 3 else xyz.T
    n = len(xyz)
    if "atomic_number" in arrays:
        return xyz, normalize_species(arrays["atomic_number"].ravel(), name=f"{path}: atomic_number")
    typed = [k for k, v in arrays.items() if k != pos[0] and v.size == n and "type" in k.lower()]
    if len(typed) != 1:
        raise InputError(f"{path}: expected one array of {n} type codes or 'atomic_number', found {typed or 'none'}")
    table = TYPE_TABLES.get(typed[0]) if species is None else species
    if table is None:
        raise InputError(f"{path}: type codes in {typed[0]!r}; pass species=[...] naming codes 1, 2, ...")
    return xyz, _codes_to_species(arrays[typed[0]], table, path, typed[0])


def _find_types_file(path, types, n):
    candidates = [pathlib.Path(types)] if types is not None else sorted(path.parent.glob("*type*.mat"))
    for c in candidates:
        arrays = read_mat(c)
        codes = arrays.get("final_atom_types")
        if codes is not None and codes.size == n:
            return codes.ravel()
    raise InputError(
        f"{path}: the type codes (final_atom_types, {n} values) were not found"
        + (f" in {types}" if types is not None else " in a *types*.mat beside it; pass types=FILE")
    )


def write_atoms(atoms: xr.Dataset, path, format: str | None = None) -> pathlib.Path:
    """Write an atomic model to extended XYZ, CSV, or any format ASE writes.

    ``intensity`` and ``flag``, when present, are written as extra columns, and a refined model's
    standard errors ``position_sigma`` (Å, along x, y, z): the CSV columns ``sigma_x, sigma_y,
    sigma_z``, and in extended XYZ the per-atom array ``position_sigma`` (three columns,
    ``Properties=...:position_sigma:R:3``, which ASE reads as ``atoms.arrays["position_sigma"]``).
    :func:`read_atoms` reads them back.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from aetdask.schema import atoms
    >>> m = atoms([[0.0, 0.0, 0.0], [2.3, 0.0, 0.0]], ["Si", "Si"])
    >>> m["position_sigma"] = (("atom", "xyz"), [[0.05, 0.06, 0.07], [0.05, 0.05, 0.09]])
    >>> f = write_atoms(m, pathlib.Path(tempfile.mkdtemp()) / "m.csv")
    >>> f.read_text().splitlines()[0]
    'species,x,y,z,sigma_x,sigma_y,sigma_z'
    >>> read_atoms(f).position_sigma.values[1].tolist()
    [0.05, 0.05, 0.09]
    """
    validate_atoms(atoms)
    path = pathlib.Path(path)
    pos = np.asarray(atoms.position.values, dtype=float)
    species = atoms.species.values.astype(str)
    extra = {k: np.asarray(atoms[k].values) for k in ("intensity", "flag") if k in atoms}
    sigma = _sigma_xyz(atoms)
    fmt = format or ("csv" if path.suffix.lower() == ".csv" else None)
    if fmt is None and path.suffix.lower() not in (".xyz", ".extxyz"):
        _check_ase_format(path)
    check_writable(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        header = ",".join(["species", "x", "y", "z", *extra, *(SIGMA_COLUMNS if sigma is not None else ())])
        with open(path, "w") as f:
            f.write(header + "\n")
            for i in range(len(pos)):
                fields = [species[i], *(f"{v:.6f}" for v in pos[i]), *(f"{extra[k][i]:.6g}" for k in extra),
                          *((f"{v:.6g}" for v in sigma[i]) if sigma is not None else ())]
                f.write(",".join(fields) + "\n")
        return path
    import ase
    import ase.io

    a = ase.Atoms(symbols=list(species), positions=pos)
    for k, v in extra.items():
        a.new_array(k, v)
    if sigma is not None:
        a.new_array("position_sigma", sigma)
    ase.io.write(path, a, format=fmt or ("extxyz" if path.suffix.lower() in (".xyz", ".extxyz") else None))
    return path


def _sigma_xyz(atoms: xr.Dataset):
    """The model's ``position_sigma`` as ``(n, 3)`` along x, y, z (the file's column order), else None."""
    if "position_sigma" not in atoms:
        return None
    sigma = atoms["position_sigma"]
    if "xyz" in sigma.dims and "xyz" in sigma.coords:
        sigma = sigma.sel(xyz=["x", "y", "z"])
    return np.asarray(sigma.transpose("atom", ...).values, dtype=float).reshape(-1, 3)


def _check_ase_format(path: pathlib.Path) -> None:
    """Raise :class:`InputError` unless ASE knows how to write a file named ``path``."""
    from ase.io.formats import UnknownFileTypeError, filetype, get_ioformat

    try:
        fmt = get_ioformat(filetype(path, read=False))
    except (UnknownFileTypeError, ValueError):
        fmt = None
    if fmt is None or not fmt.can_write:
        raise InputError(f"{path}: unknown atom-file format {path.suffix!r}; expected .xyz (extended XYZ), "
                         ".csv, or a format ASE writes (.cif, .pdb, .vasp, ...)")
