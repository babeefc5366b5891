"""The structure analysis's files in a folder: ``structure.json``, ``structure.png``, ``structure.zarr``.

aetdask replaces only what it can prove it wrote: a ledger in the folder (:data:`ANALYSIS_LEDGER`) lists each file
it wrote with its SHA-256; anything else of those names is refused unless ``overwrite``. Each file is written under
a temporary name and renamed into place; nothing temporary is left behind. Used by ``aetdask analyze`` and by the
pipeline's analysis of a ptychographic model (``STORE/analysis``, under the store's lock).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import uuid

from aetdask._version import __version__
from aetdask.errors import StoreError
from aetdask.io.store import ZARR_FORMAT, file_digest


ANALYSIS_OUTPUTS = ("structure.json", "structure.png", "structure.zarr")
ANALYSIS_LEDGER = ".aetdask-analysis.json"  # what `aetdask analyze` wrote in a folder: name → SHA-256 of it
_LEDGER_KIND = "aetdask analyze outputs"


def _read_ledger(folder: pathlib.Path) -> dict | None:
    """The analysis ledger of ``folder``: {} when there is none, None when a file of its name is not one."""
    path = folder / ANALYSIS_LEDGER
    if not os.path.lexists(path):
        return {}
    try:
        ledger = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if path.is_symlink() or not isinstance(ledger, dict) or ledger.get("kind") != _LEDGER_KIND or \
            not isinstance(ledger.get("files"), dict):
        return None
    return ledger["files"]


def check_outputs(folder, overwrite: bool = False) -> None:
    """Refuse (:class:`StoreError`, unless ``overwrite``) analysis outputs in ``folder`` that the ledger does not
    prove it wrote."""
    folder = pathlib.Path(folder)
    if overwrite:
        return
    ledger = _read_ledger(folder)
    if ledger is None:
        raise StoreError(f"{folder / ANALYSIS_LEDGER}: exists and is not the ledger aetdask analyze writes; choose "
                         "another --out, or pass --overwrite to replace it")
    foreign = [n for n in ANALYSIS_OUTPUTS if os.path.lexists(folder / n) and (
        ledger.get(n) is None or ledger.get(n) != file_digest(folder / n))]
    if foreign:
        raise StoreError(f"{folder / foreign[0]}: exists, and aetdask analyze did not write it (or it changed since)"
                         f"{' (also ' + ', '.join(foreign[1:]) + ')' if foreign[1:] else ''}; choose another --out, "
                         "or pass --overwrite to replace it")


def _write_files(folder: pathlib.Path, overwrite: bool, writers: dict) -> None:
    """Write each output ``name`` by ``writers[name](path)`` under a temporary name in ``folder``, then move them
    into place, each in one step, and record what was written in the ledger. Nothing temporary is left behind."""
    folder.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    new, leftovers = {}, []
    try:
        for name, write in writers.items():
            stem, dot, suffix = name.partition(".")
            new[name] = folder / f".{stem}.tmp-{tag}{dot}{suffix}"  # the same suffix: the same format
            leftovers.append(new[name])
            write(new[name])
        check_outputs(folder, overwrite)  # nothing foreign appeared meanwhile
        ledger = _read_ledger(folder) or {}
        for name, tmp in new.items():
            digest = file_digest(tmp)
            final = folder / name
            if os.path.lexists(final) and not (final.is_file() and not final.is_symlink() and tmp.is_file()):
                old = folder / f".{name}.old-{tag}"  # only a file replaces a file by a rename: the rest moves aside
                leftovers.append(old)
                os.replace(final, old)
            os.replace(tmp, final)
            ledger[name] = digest
        _write_ledger(folder, ledger)
    finally:
        for path in leftovers:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                path.unlink()


def _write_ledger(folder: pathlib.Path, files: dict) -> None:
    tmp = folder / f"{ANALYSIS_LEDGER}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps({"kind": _LEDGER_KIND, "version": __version__, "files": files}, indent=1))
    os.replace(tmp, folder / ANALYSIS_LEDGER)


def _write_zarr(ds, path) -> None:
    """Write an analysis Dataset (summary as JSON text in attrs) as a new Zarr store at ``path``."""
    import warnings

    out = ds.copy().drop_encoding()  # the codecs of the store a model was read from are not this store's business
    out.attrs = {"summary": json.dumps(ds.attrs["summary"]), "provenance": json.dumps(ds.attrs.get("provenance", []))}
    for name in out.variables:
        out[name].attrs = {k: v for k, v in out[name].attrs.items() if isinstance(v, (str, int, float))}
    # the run store's format (aetdask.io.store): Zarr v2, whose spec covers the species' and labels' strings and
    # consolidated metadata (v3 has neither yet); only OME-Zarr volumes are v3, as NGFF 0.5 requires
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        out.to_zarr(path, mode="w-", consolidated=True, zarr_format=ZARR_FORMAT)


def write_outputs(folder, result, overwrite: bool = False) -> pathlib.Path:
    """Write the analysis ``result`` (:func:`aetdask.analyze.analyze`'s Dataset) into ``folder`` as
    ``structure.json``, ``structure.png`` and ``structure.zarr``, refusing files there it did not write unless
    ``overwrite`` (see :func:`check_outputs`); returns the folder."""
    from aetdask.analyze.plot import structure_figure

    folder = pathlib.Path(folder)
    summary = result.attrs["summary"]
    _write_files(folder, overwrite, {
        "structure.json": lambda tmp: tmp.write_text(json.dumps(summary, indent=1)),
        "structure.png": lambda tmp: structure_figure(result, tmp),
        "structure.zarr": lambda tmp: _write_zarr(result, tmp),
    })
    return folder
