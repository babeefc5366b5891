"""The run store: one Zarr store per run, one group per data product.

Layout::

    STORE/
      raw/ preprocessed/      tilt series  (variable ``tilt_series``)
      volume/                 volume       (variable ``volume``)
      candidates/ atoms/ refined/ truth/   atomic models (``position``, ``species``)
      metrics.json            evaluation results

Every group is readable with ``xarray.open_zarr(STORE, group=NAME)``. A group is
written under a hidden temporary name and renamed into place only when it is
complete, so a crash never leaves a half product that looks finished; an
existing product is replaced only after its successor is complete.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
import uuid
import warnings

import xarray as xr
import zarr

from aetdask._version import __version__
from aetdask.cluster import compute
from aetdask.errors import StoreError

STORE_VERSION = 1
TILT_PRODUCTS = ("raw", "preprocessed")
VOLUME_PRODUCTS = ("volume",)
ATOM_PRODUCTS = ("candidates", "atoms", "refined", "truth")
PATTERN_PRODUCTS = ("patterns",)  # 4D-STEM: (tilt, scan_y, scan_x, ky, kx)
PRODUCTS = TILT_PRODUCTS + VOLUME_PRODUCTS + ATOM_PRODUCTS + PATTERN_PRODUCTS
_VARIABLE = {**{p: "tilt_series" for p in TILT_PRODUCTS}, **{p: "volume" for p in VOLUME_PRODUCTS},
             **{p: "patterns" for p in PATTERN_PRODUCTS}}
_ZARR_FORMAT = 2  # widest compatibility; consolidated metadata is part of its spec


class RunStore:
    """A run's Zarr store on disk.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from aetdask.schema import tilt_series
    >>> store = RunStore(tempfile.mkdtemp() + "/run.zarr")
    >>> store.write("raw", tilt_series(np.ones((2, 4, 4)), [0, 90], 0.5))
    >>> store.products(), store.read("raw").shape
    (['raw'], (2, 4, 4))
    """

    def __init__(self, path, create: bool = True, *, writable: bool | None = None):
        """Open the run store at ``path``; ``create`` makes it if missing. ``writable`` (default:
        ``create``) checks up front that it can be written, so a run fails before any work."""
        self.path = pathlib.Path(path)
        writable = create if writable is None else writable
        if (self.path / ".zgroup").exists() or (self.path / "zarr.json").exists():
            self._check_version()
            if writable:
                check_writable(self.path)
            self._recover()
        elif create:
            if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
                raise StoreError(f"{self.path}: exists and is not an aetdask run store")
            check_writable(self.path)
            root = zarr.open_group(str(self.path), mode="w", zarr_format=_ZARR_FORMAT)
            root.attrs["aetdask"] = {"store_version": STORE_VERSION, "version": __version__}
        else:
            raise StoreError(f"{self.path}: no aetdask run store here")

    def _check_version(self):
        attrs = zarr.open_group(str(self.path), mode="r").attrs.asdict().get("aetdask")
        if not isinstance(attrs, dict) or "store_version" not in attrs:
            raise StoreError(f"{self.path}: a Zarr store, but not an aetdask run store")
        if attrs["store_version"] > STORE_VERSION:
            raise StoreError(
                f"{self.path}: written by aetdask {attrs.get('version')} (store format "
                f"{attrs['store_version']}); this aetdask {__version__} reads format ≤ {STORE_VERSION}. "
                "Upgrade aetdask."
            )

    def _recover(self):
        """Finish an interrupted replacement: a product moved aside but not yet replaced comes back."""
        for old in self.path.glob(".*.old-*"):
            final = self.path / old.name[1:].split(".old-")[0]
            if not final.exists() and (old / ".zgroup").exists():
                os.replace(old, final)
                _consolidate(self.path)
            elif final.exists():
                shutil.rmtree(old, ignore_errors=True)

    # ------------------------------------------------------------------ listing
    def products(self) -> list[str]:
        """Finished products, in pipeline order."""
        return [p for p in PRODUCTS if (self.path / p / ".zgroup").exists()]

    def __contains__(self, name: str) -> bool:
        return name in self.products()

    # ------------------------------------------------------------------ writing
    def write(self, name: str, obj, *, progress: bool = False) -> None:
        """Write a product (computing it if lazy) and publish it atomically."""
        ds = _as_dataset(name, obj)
        tmp = self.path / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        ds = ds.drop_encoding()  # chunking follows the data as it is now, not the store it was read from
        try:
            job = ds.to_zarr(str(tmp), mode="w-", consolidated=True, zarr_format=_ZARR_FORMAT, compute=False)
            compute([job], progress, f"writing {name}")
            self._publish(tmp, self.path / name)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot write product {name!r} ({exc.strerror or exc}); "
                             "the store keeps what it had") from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _publish(self, tmp: pathlib.Path, final: pathlib.Path) -> None:
        root_meta = self.path / ".zmetadata"
        if root_meta.exists():  # stale once the tree changes; absent is safe (slower open)
            root_meta.unlink()
        old = None
        if final.exists():
            old = self.path / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        _consolidate(self.path)

    def write_json(self, name: str, data: dict) -> pathlib.Path:
        """Write ``name`` (e.g. ``metrics.json``) atomically."""
        final = self.path / name
        tmp = self.path / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            tmp.write_text(json.dumps(data, indent=2, allow_nan=True))
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{final}: cannot write ({exc.strerror or exc}); the store keeps what it had") from exc
        return final

    # ------------------------------------------------------------------ reading
    def read(self, name: str):
        """Open a product lazily: a DataArray for tilt series and volumes, a Dataset for atoms."""
        if name not in PRODUCTS:
            raise StoreError(f"unknown product {name!r}; products are {PRODUCTS}")
        if name not in self:
            raise StoreError(f"{self.path}: product {name!r} is not in this store (it has {self.products()})")
        ds = xr.open_zarr(str(self.path / name), consolidated=True)
        if name in _VARIABLE:
            return ds[_VARIABLE[name]]
        return ds.load()

    def read_json(self, name: str) -> dict | None:
        path = self.path / name
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(f"{path}: not valid JSON ({exc}); expected the file aetdask wrote there. "
                             "Remove it to recompute what it described") from None


def check_writable(path) -> None:
    """Raise :class:`StoreError` unless files can be created in the directory ``path``
    (or, while it does not exist, in its nearest existing parent, where it would be made).

    The check creates and removes a hidden empty file, which is what a write needs (mode
    bits, ACLs, read-only file systems and all), so a command fails before doing any work.
    """
    path = pathlib.Path(path)
    where = next(p for p in (path, *path.parents) if p.exists() or p == p.parent)
    try:
        fd, probe = tempfile.mkstemp(dir=where, prefix=".aetdask-write-check-")
    except OSError as exc:
        place = "" if where == path else f" in {where}"
        raise StoreError(f"{path}: cannot write here ({exc.strerror}{place}); expected a directory this user "
                         "can write to. Nothing was changed") from None
    os.close(fd)
    os.unlink(probe)


def _consolidate(path) -> None:
    """Consolidate the root metadata; the JSON side files (run.json, metrics.json) are not Zarr nodes."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        zarr.consolidate_metadata(str(path))


def _as_dataset(name: str, obj) -> xr.Dataset:
    if name not in PRODUCTS:
        raise StoreError(f"unknown product {name!r}; products are {PRODUCTS}")
    if name in _VARIABLE:
        if not isinstance(obj, xr.DataArray):
            raise StoreError(f"product {name!r} must be a DataArray, got {type(obj).__name__}")
        var = _VARIABLE[name]
        ds = obj.rename(var).to_dataset()
        if ds[var].chunks is not None:  # Zarr needs uniform chunks
            ds = ds.chunk({d: ds[var].chunks[i][0] for i, d in enumerate(ds[var].dims)})
        return ds
    if not isinstance(obj, xr.Dataset):
        raise StoreError(f"product {name!r} must be a Dataset, got {type(obj).__name__}")
    return obj
