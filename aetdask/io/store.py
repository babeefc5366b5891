"""The run store: one Zarr store per run, one group per data product.

Layout::

    STORE/
      raw/ preprocessed/      tilt series  (variable ``tilt_series``)
      volume/                 volume       (variable ``volume``)
      candidates/ atoms/ refined/ truth/   atomic models (``position``, ``species``)
      metrics.json run.json   side files (:meth:`RunStore.write_json`)
      beside.json             the files aetdask wrote next to the store (``STORE-report.png``, ...) and their digests
      .aetdask.lock           present while a process writes (:meth:`RunStore.lock`)

Every group is readable with ``xarray.open_zarr(STORE, group=NAME)``.

*Atomic products.* A group is written under a hidden temporary name
(``.NAME.tmp-*``) and renamed into place only when it is complete, so a crash
never leaves a half product that looks finished; an existing product is moved
aside (``.NAME.old-*``) only after its successor is complete.

*Records.* ``write(name, product, record={...})`` stores a JSON record (what made
the product: a fingerprint, parameters, ...) in the product group's own
attributes, under ``"aetdask_record"``, before the rename: product and record
appear in one step, so a product is never paired with another product's record.
:meth:`RunStore.record` reads it back.

*One writer.* A process writes only while it holds ``.aetdask.lock``, created
atomically and naming its holder (host, pid, command, start time). A second
writer fails with :class:`~aetdask.errors.StoreError` naming the holder; a lock
whose holder died on this host is taken over. Whoever takes the lock first
clears what a killed writer left (temporary groups are removed, a product moved
aside and not replaced is restored). Opening and reading never change the disk.

*Files beside the store.* Reports and figures go next to the store (``STORE-report.png``); :meth:`RunStore.write_beside`
replaces such a file only when ``beside.json`` proves aetdask wrote it (its SHA-256 is the one recorded), and refuses
anything else there unless told to overwrite it.

*New input.* New input data make everything a store holds stale (a model of other data would be scored against the
new truth): :meth:`RunStore.clear_for_new_input` refuses a store that holds products or results unless told to
overwrite them, and then removes them all.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import os
import pathlib
import shutil
import socket
import sys
import tempfile
import threading
import uuid
import warnings

import xarray as xr
import zarr

from aetdask._version import __version__
from aetdask.cluster import compute
from aetdask.errors import StoreError
from aetdask.schema import describe

STORE_VERSION = 1
TILT_PRODUCTS = ("raw", "preprocessed")
VOLUME_PRODUCTS = ("volume",)
ATOM_PRODUCTS = ("candidates", "atoms", "refined", "truth")
PATTERN_PRODUCTS = ("patterns",)  # 4D-STEM: (tilt, scan_y, scan_x, ky, kx)
PRODUCTS = TILT_PRODUCTS + VOLUME_PRODUCTS + ATOM_PRODUCTS + PATTERN_PRODUCTS
_VARIABLE = {**{p: "tilt_series" for p in TILT_PRODUCTS}, **{p: "volume" for p in VOLUME_PRODUCTS},
             **{p: "patterns" for p in PATTERN_PRODUCTS}}
#: The Zarr format of everything aetdask stores itself (run stores, structure analyses): v2, whose spec covers
#: the species' strings and consolidated metadata (v3 has no stable string type and no consolidated metadata yet).
#: Only OME-Zarr volumes (`aetdask export --volume`) are v3, as NGFF 0.5 requires.
ZARR_FORMAT = 2
LOCK_NAME = ".aetdask.lock"
RECORD_KEY = "aetdask_record"  # the product group's attribute that holds its record
BESIDE = "beside.json"  # files written next to the store: {"files": {suffix: sha256}}
#: What a run store holds besides its products that new input data make stale: the pipeline's log, the scores, the
#: structure analysis, the demo's marker (then no longer the demo's).
DERIVED_ENTRIES = ("run.json", "metrics.json", "analysis", "demo.json")

# The store locks this process holds: real path of the lock file → {"pid", "token", "depth"}.
# Keyed by path, not by RunStore object, so two RunStore objects on one store share the lock.
_HELD: dict[str, dict] = {}
_HELD_GUARD = threading.Lock()


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

    A whole run holds the lock; each product carries the record of what made it:

    >>> with store.lock("aetdask run"):
    ...     store.write("raw", tilt_series(np.zeros((2, 4, 4)), [0, 90], 0.5), record={"fingerprint": "1f2e"})
    >>> store.record("raw")
    {'fingerprint': '1f2e'}
    """

    def __init__(self, path, create: bool = True, *, writable: bool | None = None):
        """Open the run store at ``path``; ``create`` makes it if missing. ``writable`` (default:
        ``create``) checks up front that it can be written and that no other process is writing
        it, so a run fails before any work. Opening an existing store (without ``writable``, whose check
        creates and removes a probe file) changes nothing on disk."""
        self.path = pathlib.Path(path)
        writable = create if writable is None else writable
        try:
            exists = (self.path / ".zgroup").exists() or (self.path / "zarr.json").exists()
        except OSError as exc:  # a name too long, a file on the way, ...: about the path itself, so named as such
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None
        if exists:
            self._check_version()
            if writable:
                check_writable(self.path)
                holder = self.holder()
                if holder is not None and not self._holds_lock():
                    raise StoreError(self._held_message(holder))
                self._check_metadata()
        elif create:
            if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
                raise StoreError(f"{self.path}: exists and is not an aetdask run store")
            check_writable(self.path)
            root = zarr.open_group(str(self.path), mode="w", zarr_format=ZARR_FORMAT)
            root.attrs["aetdask"] = {"store_version": STORE_VERSION, "version": __version__}
        else:
            raise StoreError(f"{self.path}: no aetdask run store here")

    def _check_metadata(self) -> None:
        """Before writing: the Zarr metadata of the root and of every product must be readable, as every write
        consolidates it all — a damaged file is named now, not after the work (and not as a JSON traceback)."""
        for name in ["", *self.products()]:
            where = self.path / name
            try:
                group = zarr.open_group(str(where), mode="r", use_consolidated=False)
                group.attrs.asdict()
                if name:
                    group.members(max_depth=None, use_consolidated_for_children=False)
            except Exception as exc:  # noqa: BLE001 - whatever a damaged .zgroup/.zarray/.zattrs raises
                what, fix = (f"product {name!r}", "remove the product to recompute it") if name else \
                    ("the store", "copy the store again")
                raise StoreError(f"{where}: the Zarr metadata of {what} cannot be read ({_reason(exc)}); every write "
                                 "to the store rewrites its index from it. Expected the files aetdask wrote (a damaged "
                                 f"or hand-edited store?): {fix}. Nothing was changed") from None

    def _check_version(self):
        try:
            attrs = zarr.open_group(str(self.path), mode="r").attrs.asdict().get("aetdask")
        except Exception as exc:  # noqa: BLE001 - whatever a damaged .zgroup/.zattrs/.zmetadata raises
            raise StoreError(f"{self.path}: its Zarr metadata cannot be read ({_reason(exc)}); expected the run "
                             "store aetdask wrote (a damaged or hand-edited store?)") from None
        if not isinstance(attrs, dict) or "store_version" not in attrs:
            raise StoreError(f"{self.path}: a Zarr store, but not an aetdask run store")
        if attrs["store_version"] > STORE_VERSION:
            raise StoreError(
                f"{self.path}: written by aetdask {attrs.get('version')} (store format "
                f"{attrs['store_version']}); this aetdask {__version__} reads format ≤ {STORE_VERSION}. "
                "Upgrade aetdask."
            )

    # ------------------------------------------------------------------ the writer's lock
    @contextlib.contextmanager
    def lock(self, command: str = ""):
        """Hold the store's writer lock for the ``with`` block.

        Creates ``STORE/.aetdask.lock`` atomically, naming this process (host, pid, start
        time and ``command``, by default the command line), and removes it on exit if it is
        still this process's. Re-entrant within one process, across ``RunStore`` objects on
        the same store; the outermost block acquires and releases. Just after acquiring, it
        clears what a killed writer left: temporary groups and files (``.NAME.tmp-*``) are
        removed, a product moved aside (``.NAME.old-*``) whose replacement never arrived is
        restored. :meth:`write` and :meth:`write_json` take the lock for their own duration
        when the caller does not hold it.

        Parameters
        ----------
        command : str
            What holds the lock, shown to anyone who finds the store locked.

        Raises
        ------
        StoreError
            When another live process holds the lock (or one on another host, which cannot be
            checked). A lock left by a process that is gone from this host is taken over, with
            a warning that names it.
        """
        key = os.path.realpath(self.path / LOCK_NAME)
        with _HELD_GUARD:
            held = _HELD.get(key)
            fresh = held is None or held["pid"] != os.getpid()  # a forked child does not inherit a lock
            if fresh:
                held = _HELD[key] = {"pid": os.getpid(), "token": self._acquire(command), "depth": 0}
            held["depth"] += 1
        try:
            if fresh:
                self._recover()
            yield self
        finally:
            with _HELD_GUARD:
                held["depth"] -= 1
                if held["depth"] == 0:
                    if _HELD.get(key) is held:
                        del _HELD[key]
                    self._release(held["token"])

    def holder(self) -> dict | None:
        """The live process holding the lock (``host``, ``pid``, ``command``, ``started``, ...),
        this one included; None when the store is not locked or its holder is gone."""
        holder = self._read_lock()
        if holder is None or not (self._holds_lock() or _alive(holder)):
            return None
        return holder

    def _holds_lock(self) -> bool:
        held = _HELD.get(os.path.realpath(self.path / LOCK_NAME))
        return held is not None and held["pid"] == os.getpid()

    def _acquire(self, command: str) -> str:
        """Create the lock file (taking over a dead holder's); return its token."""
        lock = self.path / LOCK_NAME
        me = {"host": socket.gethostname(), "pid": os.getpid(), "command": command or _command_line(),
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "token": uuid.uuid4().hex, "boot_id": _boot_id(), "process_start": _process_start(os.getpid())}
        with _serialised(self.path):  # two processes never take over the same stale lock
            for _ in range(3):
                try:
                    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    holder = self._read_lock()
                    if holder is None:  # released in the meantime
                        continue
                    if _alive(holder):
                        raise StoreError(self._held_message(holder)) from None
                    warnings.warn(f"{self.path}: taking over the lock of a process that is gone (pid "
                                  f"{holder['pid']} on {holder['host']}, `{holder.get('command')}` since "
                                  f"{holder.get('started')}); clearing what it left", stacklevel=4)
                    lock.unlink(missing_ok=True)
                    continue
                except OSError as exc:
                    raise StoreError(f"{lock}: cannot create the writer's lock ({exc.strerror or exc}); "
                                     "expected a store this user can write to. Nothing was changed") from None
                try:
                    with os.fdopen(fd, "w") as f:
                        json.dump(me, f)
                except OSError as exc:
                    lock.unlink(missing_ok=True)
                    raise StoreError(f"{lock}: cannot write the writer's lock ({exc.strerror or exc}). "
                                     "Nothing was changed") from None
                return me["token"]
        raise StoreError(f"{lock}: could not take the writer's lock (it kept changing); try again")

    def _release(self, token: str) -> None:
        with contextlib.suppress(StoreError, OSError):
            holder = self._read_lock()
            if holder is not None and holder.get("token") == token:  # still ours: nobody removed it
                (self.path / LOCK_NAME).unlink()

    def _read_lock(self) -> dict | None:
        """The lock file's contents; None when there is none."""
        lock = self.path / LOCK_NAME
        try:
            holder = json.loads(lock.read_text())
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            holder = None
        if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int) or "host" not in holder:
            raise StoreError(f"{lock}: not a lock aetdask wrote (expected JSON with host and pid); "
                             "remove it if no aetdask process is writing this store")
        return holder

    def _held_message(self, holder: dict) -> str:
        where = "" if holder["host"] == socket.gethostname() else " (another host: cannot check it is running)"
        return (f"{self.path}: in use by another aetdask process (pid {holder['pid']} on {holder['host']}{where}, "
                f"`{holder.get('command')}` since {holder.get('started')}); wait for it to finish, "
                f"or remove {self.path / LOCK_NAME} if that process is gone")

    def _recover(self) -> None:
        """Clear what a killed writer left; only ever called by the process that just took the lock."""
        changed = False
        for tmp in sorted(self.path.glob(".*.tmp-*")):
            _remove(tmp)
            changed = True
        for old in sorted(self.path.glob(".*.old-*")):
            final = self.path / old.name[1:].split(".old-")[0]
            if not final.exists() and (old / ".zgroup").exists():  # moved aside, successor never arrived
                os.replace(old, final)
                changed = True
            elif final.exists():
                _remove(old)
                changed = True
        if changed:
            _consolidate(self.path)

    # ------------------------------------------------------------------ listing
    def products(self) -> list[str]:
        """Finished products, in pipeline order."""
        return [p for p in PRODUCTS if (self.path / p / ".zgroup").exists()]

    def __contains__(self, name: str) -> bool:
        return name in self.products()

    # ------------------------------------------------------------------ writing
    def write(self, name: str, obj, *, progress: bool = False, record: dict | None = None) -> None:
        """Write a product (computing it if lazy) and publish it atomically, with its record.

        Parameters
        ----------
        name : str
            One of :data:`PRODUCTS`.
        obj : xarray.DataArray or xarray.Dataset
            A DataArray for tilt series, volumes and patterns, a Dataset for atomic models.
        progress : bool
            Show a progress bar while computing.
        record : dict, optional
            JSON-able description of what made the product (fingerprint, parameters, ...),
            published in the same rename as the product; :meth:`record` returns it. Without
            it the product has no record (a record the input carried is never copied).
        """
        ds = describe(_as_dataset(name, obj))
        record = _checked_record(name, record)
        ds = ds.drop_encoding()  # chunking follows the data as it is now, not the store it was read from
        ds.attrs = {**{k: v for k, v in ds.attrs.items() if k != RECORD_KEY},
                    **({RECORD_KEY: record} if record is not None else {})}
        with self.lock(f"{_command_line()} (writing {name})"):
            tmp = self.path / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
            try:
                job = ds.to_zarr(str(tmp), mode="w-", consolidated=True, zarr_format=ZARR_FORMAT, compute=False)
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

    def remove(self, names) -> None:
        """Remove products and side files (``run.json``, ``analysis``, …) ``names`` from the store, under its lock.

        Each is first renamed to one of the store's temporary names (``.NAME.tmp-*``), so it leaves the store
        in one step, and what a killed process leaves is cleared by the store's next writer.
        """
        with self.lock(f"{_command_line()} (removing {', '.join(map(str, names))})"):
            names = [n for n in names if os.path.lexists(self.path / n)]
            if not names:
                return
            (self.path / ".zmetadata").unlink(missing_ok=True)  # stale once the tree changes; absent is safe
            for name in names:
                if "/" in str(name) or str(name).startswith("."):
                    raise StoreError(f"{self.path}: {name!r} is not a product or side file of the store")
                tmp = self.path / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
                os.replace(self.path / name, tmp)
                _remove(tmp)
            _consolidate(self.path)

    def write_json(self, name: str, data: dict) -> pathlib.Path:
        """Write ``name`` (e.g. ``metrics.json``) atomically, holding the lock while it does."""
        if name in PRODUCTS or name.startswith(".") or "/" in name or os.sep in name:
            raise StoreError(f"{name!r}: not a name for a side file; expected a plain file name such as "
                             "'metrics.json' that is not a product")
        final = self.path / name
        with self.lock(f"{_command_line()} (writing {name})"):
            tmp = self.path / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
            try:
                tmp.write_text(json.dumps(data, indent=2, allow_nan=True))
                os.replace(tmp, final)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise StoreError(f"{final}: cannot write ({exc.strerror or exc}); "
                                 "the store keeps what it had") from exc
        return final

    def held(self) -> list[str]:
        """Products and results (:data:`DERIVED_ENTRIES`) the store holds: what new input data would make stale."""
        return self.products() + [n for n in DERIVED_ENTRIES if os.path.lexists(self.path / n)]

    def clear_for_new_input(self, keep=(), overwrite: bool = False) -> None:
        """Make the store ready for new input data: refuse (:class:`StoreError`) when it holds products or results,
        unless ``overwrite``, which removes them all but ``keep`` (products the caller replaces next, atomically)."""
        with self.lock(f"{_command_line()} (new input)"):
            held = self.held()
            if held and not overwrite:
                raise StoreError(f"{self.path}: already holds {', '.join(held)}; new input data would be mixed with "
                                 "results of other data. Choose a new --out, or pass --overwrite to replace them all")
            if held:
                self.remove([n for n in held if n not in keep])

    # ------------------------------------------------------------------ files beside the store
    def beside(self, suffix: str) -> pathlib.Path:
        """The path of a file next to the store: ``STORE`` + ``suffix`` (e.g. ``-report.png``)."""
        if "/" in suffix or os.sep in suffix or not suffix.strip():
            raise StoreError(f"{suffix!r}: not a suffix for a file next to the store; expected e.g. '-report.png'")
        return self.path.parent / f"{self.path.name}{suffix}"

    def _beside_ledger(self) -> dict:
        ledger = self.read_json(BESIDE) or {}
        files = ledger.get("files") if isinstance(ledger, dict) else None
        return dict(files) if isinstance(files, dict) else {}

    def foreign_beside(self, suffixes) -> list[pathlib.Path]:
        """Those of the files ``STORE + suffix`` that exist and that aetdask cannot prove it wrote (not recorded
        in ``beside.json``, changed since, a link or a folder)."""
        ledger = self._beside_ledger()
        out = []
        for suffix in suffixes:
            path = self.beside(suffix)
            if os.path.lexists(path) and (ledger.get(suffix) is None or ledger.get(suffix) != file_digest(path)):
                out.append(path)
        return out

    def check_beside(self, suffixes, overwrite: bool = False, command: str = "aetdask") -> None:
        """Refuse (:class:`StoreError`), unless ``overwrite``, files next to the store that aetdask would replace
        and cannot prove it wrote (see :meth:`foreign_beside`); run it before long work."""
        foreign = [] if overwrite else self.foreign_beside(suffixes)
        if foreign:
            also = f" (also {', '.join(p.name for p in foreign[1:])})" if foreign[1:] else ""
            raise StoreError(f"{foreign[0]}: exists, and {command} did not write it for {self.path.name} (or it "
                             f"changed since){also}; move it away, or pass --overwrite to replace it")

    def write_beside(self, suffix: str, writer, overwrite: bool = False, command: str = "aetdask") -> pathlib.Path:
        """Write the file ``STORE + suffix`` with ``writer(path)`` (to a temporary name in the same folder, renamed
        into place when complete) and record its digest; a file there that aetdask did not write is refused
        unless ``overwrite`` (:meth:`check_beside`). Returns the path."""
        final = self.beside(suffix)
        with self.lock(f"{_command_line()} (writing {final.name})"):
            self.check_beside([suffix], overwrite, command)
            if final.is_dir() and not final.is_symlink():
                raise StoreError(f"{final}: a folder; expected a file aetdask writes there (move the folder away)")
            tmp = final.parent / f".{final.stem}.tmp-{uuid.uuid4().hex[:8]}{final.suffix}"
            try:
                writer(tmp)
                digest = file_digest(tmp)
                os.replace(tmp, final)
            except OSError as exc:
                raise StoreError(f"{final}: cannot write ({exc.strerror or exc})") from exc
            finally:
                tmp.unlink(missing_ok=True)
            ledger = self._beside_ledger()
            ledger[suffix] = digest
            self.write_json(BESIDE, {"kind": "files aetdask wrote next to this store", "files": ledger})
        return final

    # ------------------------------------------------------------------ reading
    def read(self, name: str):
        """Open a product lazily: a DataArray for tilt series and volumes, a Dataset for atoms."""
        if name not in PRODUCTS:
            raise StoreError(f"unknown product {name!r}; products are {PRODUCTS}")
        if name not in self:
            raise StoreError(f"{self.path}: product {name!r} is not in this store (it has {self.products()})")
        where = self.path / name
        try:
            ds = xr.open_zarr(str(where), consolidated=True,
                              from_array_kwargs={"getitem": functools.partial(_read_chunk, str(where))})
            if name in _VARIABLE:
                return ds[_VARIABLE[name]]
        except Exception as exc:  # noqa: BLE001 - whatever damaged metadata raises (JSON, KeyError, shapes, ...)
            raise StoreError(f"{where}: product {name!r} cannot be opened ({_reason(exc)}); expected the product "
                             "aetdask wrote (a damaged or hand-edited store? Remove the product to recompute "
                             "it)") from None
        ds.attrs.pop(RECORD_KEY, None)  # the store's bookkeeping, not the model's
        return ds.load()

    def record(self, name: str) -> dict | None:
        """The record published with product ``name`` (see :meth:`write`); None when the
        product is absent or was written without one."""
        if name not in PRODUCTS:
            raise StoreError(f"unknown product {name!r}; products are {PRODUCTS}")
        if name not in self:
            return None
        try:
            record = zarr.open_group(str(self.path / name), mode="r").attrs.get(RECORD_KEY)
        except Exception as exc:  # noqa: BLE001 - whatever a damaged .zattrs raises
            raise StoreError(f"{self.path / name}: the record of product {name!r} cannot be read ({_reason(exc)}); "
                             "expected the product aetdask wrote (remove it to recompute it)") from None
        return record if isinstance(record, dict) else None

    def read_json(self, name: str) -> dict | None:
        path = self.path / name
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(f"{path}: not valid JSON ({exc}); expected the file aetdask wrote there. "
                             "Remove it to recompute what it described") from None
        except OSError as exc:
            raise StoreError(f"{path}: cannot read ({exc.strerror or exc}); expected a file this user can "
                             "read") from None


def _read_chunk(where: str, array, index, asarray=True, lock=None):
    """Dask's ``getter`` for the chunks of a product: a chunk that cannot be read or decoded (a damaged
    store) raises :class:`StoreError` naming the product, also inside a Dask task."""
    from dask.array.core import getter

    try:
        return getter(array, index, asarray=asarray, lock=lock)
    except Exception as exc:  # noqa: BLE001 - whatever the codec or the file system raises for a damaged chunk
        raise StoreError(f"{where}: a chunk cannot be read ({_reason(exc)}); the store is damaged. Remove the "
                         "product to recompute it (or copy the store again)") from None


def _reason(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an exception, on one line and at most ``limit`` characters."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def file_digest(path) -> str | None:
    """SHA-256 of a file, or of a folder's files (relative names and bytes, in order); None for a link or anything
    else (never proof that aetdask wrote it)."""
    path = pathlib.Path(path)
    if path.is_symlink():
        return None
    h = hashlib.sha256()
    if path.is_file():
        files = [("", path)]  # the bytes only: a file is recorded under its temporary name
    elif path.is_dir():
        files = sorted((str(f.relative_to(path)), f) for f in path.rglob("*") if not f.is_dir() or f.is_symlink())
        if any(f.is_symlink() or not f.is_file() for _, f in files):
            return None
    else:
        return None
    for name, f in files:
        h.update(name.encode() + b"\0")
        with open(f, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


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
    """Consolidate the root metadata; the side files (run.json, metrics.json, .aetdask.lock) are not Zarr nodes."""
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


def _checked_record(name: str, record) -> dict | None:
    """``record`` as it will read back (JSON round trip: tuples become lists), checked before any work."""
    if record is None:
        return None
    if not isinstance(record, dict):
        raise StoreError(f"record of {name!r} must be a dict, got {type(record).__name__}")
    try:
        return json.loads(json.dumps(record, allow_nan=True))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"record of {name!r} must be JSON-able (str, number, bool, None, list, dict): {exc}") from None


def _remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _serialised(directory):
    """Let one process at a time (on this host) inspect and take the lock: a kernel lock on the
    directory, released by the kernel even if the process dies. Without ``fcntl`` (or where the
    file system refuses it) only the lock file's atomic creation protects."""
    try:
        import fcntl

        fd = os.open(directory, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def _alive(holder: dict) -> bool:
    """Whether the process a lock names may still run: false only when provably gone."""
    if holder["host"] != socket.gethostname() or os.name == "nt":  # on Windows os.kill would end it
        return True
    pid = holder["pid"]
    if pid == os.getpid():  # our pid but not our lock: an earlier process had this pid (a restarted container)
        return False
    boot = _boot_id()
    if holder.get("boot_id") and boot and holder["boot_id"] != boot:  # the machine restarted since
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it runs, as another user
        pass
    start = _process_start(pid)
    return holder.get("process_start") is None or start is None or start == holder["process_start"]


def _boot_id() -> str | None:
    try:
        return pathlib.Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), telling a reused pid apart."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])  # field 22; fields after ")" start at 3
    except (OSError, ValueError, IndexError):
        return None


def _command_line() -> str:
    return " ".join([pathlib.Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"
