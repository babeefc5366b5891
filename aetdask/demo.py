"""The end-to-end demo on the embedded default: a local Dask cluster and a run store on disk.

A random ~200-atom amorphous particle → linear ADF-STEM tilt series at a
realistic dose (Poisson counts on a background) → ``aetdask run`` (preprocess,
RESIRE, trace, classify, refine against the counts) → evaluation against the
particle it came from → the report.

The demo starts its run store ``OUT/run.zarr`` afresh, but replaces only a store it can
prove the demo made: one holding the demo's marker (:data:`MARKER`, written through the
store), the products whose records the marker lists, and nothing else (no notes, no
analysis). Anything else at that place (a user's run store, a file, a folder) is refused
unless ``overwrite`` is given.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import time
import uuid

import numpy as np

from aetdask import config
from aetdask._version import __version__
from aetdask.errors import StoreError
from aetdask.io import RunStore
from aetdask.io.store import BESIDE, LOCK_NAME, PRODUCTS
from aetdask.pipeline import run
from aetdask.simulate import amorphous_particle, linear

MARKER = "demo.json"  # the demo's mark on its run store: {"made_by": "aetdask demo", "records": {...}}
MADE_BY = "aetdask demo"
STORE_NAME = "run.zarr"
# what the demo (its store, the pipeline, the report) leaves at the top of its run store
_OWN_ENTRIES = {*PRODUCTS, ".zgroup", ".zattrs", ".zmetadata", "zarr.json", LOCK_NAME, "run.json", "metrics.json",
                MARKER, BESIDE}
_TEMPORARY = (".aetdask-write-check-",)  # a probe file check_writable leaves only when killed


def _temporary(name: str) -> bool:
    """A writer's leftover the store clears itself (``.NAME.tmp-*``, ``.NAME.old-*``) or a write-check probe."""
    return name.startswith(".") and (".tmp-" in name or ".old-" in name or name.startswith(_TEMPORARY))


def _reports(path: pathlib.Path) -> list[pathlib.Path]:
    return [path.parent / f"{path.name}-report.png", path.parent / f"{path.name}-report.html"]


def not_the_demos(path) -> str | None:
    """Why the run store at ``path`` cannot be proven to be one the demo made; None when it can."""
    path = pathlib.Path(path)
    if path.is_symlink() or not path.is_dir():
        return "exists and is not a run store made by `aetdask demo`"
    try:
        store = RunStore(path, create=False, writable=False)
        marker = store.read_json(MARKER)
    except StoreError:
        return "exists and is not a run store made by `aetdask demo`"
    if not isinstance(marker, dict) or marker.get("made_by") != MADE_BY:
        return f"a run store that `aetdask demo` did not make (it has no demo marker {MARKER})"
    foreign = sorted(e.name for e in path.iterdir() if e.name not in _OWN_ENTRIES and not _temporary(e.name))
    if foreign:
        return f"holds what the demo did not write ({', '.join(foreign)})"
    records = marker.get("records")
    if isinstance(records, dict):  # a finished demo: its products are exactly those it recorded
        changed = [p for p in store.products() if p not in records or store.record(p) != records[p]]
        if changed:
            return f"its products changed since the demo made them ({', '.join(changed)})"
    return None


def claim(path, overwrite: bool = False) -> None:
    """Check, before any work, that the demo may (re)write its run store at ``path`` and the report next to it.

    Raises
    ------
    StoreError
        When something is there that the demo cannot prove it made, and ``overwrite`` is not given.
    """
    path = pathlib.Path(path)
    if overwrite:
        return
    hint = "choose another --out, or pass --overwrite to replace it"
    if path.exists() or path.is_symlink():
        reason = not_the_demos(path)
        if reason is not None:
            raise StoreError(f"{path}: {reason}; {hint}")
        odd = [r for r in _reports(path) if r.is_symlink() or r.exists() and not r.is_file()]
        if odd:  # the report is written where the name points: never through a link
            raise StoreError(f"{odd[0]}: not a report file the demo wrote (a link or a folder); {hint}")
        return
    reports = [r for r in _reports(path) if r.exists() or r.is_symlink()]
    if reports:  # a report without the demo's store: not provably the demo's
        raise StoreError(f"{reports[0]}: exists, but not next to a run store made by `aetdask demo`; {hint}")


def _clear(path: pathlib.Path, overwrite: bool) -> None:
    """Remove what is at ``path`` (after :func:`claim`): a run store under its lock (never one another process is
    writing), checked again there; moved aside in one step, then deleted."""
    if not (path.exists() or path.is_symlink()):
        _clear_reports(path)  # claimed (only with overwrite, without the demo's store)
        return
    hint = "choose another --out, or pass --overwrite to replace it"
    aside = path.with_name(f".{path.name}.demo-old-{uuid.uuid4().hex[:8]}")
    if path.is_dir() and not path.is_symlink() and _is_store(path):
        store = RunStore(path, create=False, writable=True)
        with store.lock("aetdask demo (replacing its run store)"):
            reason = None if overwrite else not_the_demos(path)
            if reason is not None:  # changed since the check
                raise StoreError(f"{path}: {reason}; {hint}")
            os.replace(path, aside)
    elif overwrite:
        os.replace(path, aside)
    else:
        raise StoreError(f"{path}: {not_the_demos(path)}; {hint}")
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)
    _clear_reports(path)


def _clear_reports(path: pathlib.Path) -> None:
    """Remove the report files next to ``path`` (claimed by :func:`claim` with the store, whose record of them
    goes with it); links and folders were refused there, and are left alone."""
    for report in _reports(path):
        if report.is_file() and not report.is_symlink():
            report.unlink()


def _is_store(path: pathlib.Path) -> bool:
    try:
        RunStore(path, create=False, writable=False)
    except StoreError:
        return False
    return True


def _clear_leftovers(out: pathlib.Path) -> None:
    """Stores a killed demo moved aside and did not finish deleting (named by the demo only)."""
    for old in out.glob(f".{STORE_NAME}.demo-old-*"):
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)


def run_demo(out="aetdask-demo", *, overwrite: bool = False, echo=print) -> dict:
    """Run the demo into directory ``out``; return the evaluation.

    Its run store ``out/run.zarr`` is started afresh when it is one the demo made (see
    :func:`not_the_demos`); anything else there is refused with :class:`StoreError`,
    unless ``overwrite``.
    """
    out = pathlib.Path(out)
    path = out / STORE_NAME
    claim(path, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    species = list(config.get("demo.species"))
    n_atoms, seed = config.get("demo.atoms"), config.get("demo.seed")
    truth = amorphous_particle(n_atoms, species=species, seed=seed)
    angles = np.arange(0.0, 180.0, 3.0)  # the seed paper's single-axis scheme
    tilts = linear(truth, angles=angles, pixel_size=config.get("demo.pixel_size"), shape=config.get("demo.shape"),
                   dose=config.get("demo.dose"), seed=seed).compute()
    echo(f"simulated: {n_atoms}-atom amorphous {'/'.join(species)} particle (seed {seed}), linear ADF-STEM, "
         f"{tilts.shape[0]} projections of {tilts.shape[1]}² px at {tilts.attrs['pixel_size']} Å, "
         f"{tilts.attrs['dose']:.3g} e⁻/Å² per projection")
    _clear(path, overwrite)
    _clear_leftovers(out)
    store = RunStore(path)
    mark = {"made_by": MADE_BY, "version": __version__}
    store.write_json(MARKER, mark)  # first: a demo killed from here on can be started afresh
    store.write("truth", truth)
    # the run's report scores its model against the store's truth (written above) and writes metrics.json
    run(tilts, path, species, echo=echo)
    cutoff = config.get("evaluate.cutoff")
    store.write_json(MARKER, {**mark, "records": {p: store.record(p) for p in store.products()}})
    result = store.read_json("metrics.json")  # strict JSON: a figure that could not be computed is None
    nan = float("nan")
    o, s = result["overall"], result["strict"]
    echo(f"evaluation against the truth (cutoff {cutoff} Å): {o['identification_pct']:.1f}% identified "
         f"({o['matched']}/{o['truth']}), precision {o['precision_pm'] or nan:.1f} pm; strict one-to-one: "
         f"TP {s['true_positives']}, FP {s['false_positives']}, FN {s['false_negatives']}")
    for sym, r in result["species"].items():
        if len(result["species"]) > 1:
            echo(f"  {sym}: {r['identification_pct']:.1f}% ({r['matched']}/{r['truth']}), {r['precision_pm'] or nan:.1f} pm")
    echo(f"report: {path.parent / 'run.zarr-report.html'}; done in {time.perf_counter() - t0:.1f} s")
    return result
