"""Multislice simulation campaigns: particles × defocus modes × tilts × phonons × doses, resumable.

A campaign is a YAML file::

    seed: 0
    preset: Si-208              # optional: a column of the seed paper's Extended Data Table 1
    parameters:                 # optional overrides of the preset (see simulate.multislice)
      phonons: 2
      pixel_size: 0.4
      shape: 24
    tilts: {theta: [0, 180, 45]}        # start, stop, step (deg); or {file: angles.mat}; or {angles: [[φ, θ, ψ], ...]}
    doses: [1.0e4, 1.0e5]               # e⁻/Å² per projection
    defocus: [0.0, 3.0]                 # random defocus spread per projection, ±nm (0 = focus at the centre)
    particles:
      - name: pt12
        atoms: pt12.xyz                 # relative to the YAML file
      - name: si-film
        generate: {kind: dense, n: 400, species: [Si], box: [30, 30, 8], seed: 1}
        parameters: {shape: 96}         # per-particle overrides

and the store it writes is::

    STORE/campaign.json                         the resolved campaign
    STORE/<particle>/<mode>/clean.zarr          noise-free tilt series, one chunk per projection
    STORE/<particle>/<mode>/clean/done-<k>.json one marker per finished projection
    STORE/<particle>/<mode>/dose-<d>/           a run store (raw counts + truth) per dose

One Dask graph covers every (particle, mode, tilt, phonon configuration, scan-row chunk);
a projection is averaged over its configurations, blurred, written and marked done as
soon as its tiles are in, so a killed campaign loses at most the projections in flight.
Running the same campaign again skips every projection marked done and every dose store
already written. Seeds are derived from the campaign seed, the particle, the tilt and the
configuration, so the result does not depend on the number of workers or on interruptions.
"""

from __future__ import annotations

import json
import os
import pathlib
import threading
import time

import dask
import numpy as np
import xarray as xr

from aetdask import config
from aetdask.cluster import active_client, compute
from aetdask.errors import InputError
from aetdask.schema import as_euler, jsonable, provenance_record, tilt_series
from aetdask.simulate import multislice as ms
from aetdask.simulate.noise import add_noise

KINDS = ("dense", "rsa")


def _particle_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def mode_name(spread_nm: float) -> str:
    """Folder of a defocus mode: ``focus`` or ``defocus-3nm``.

    >>> mode_name(0.0), mode_name(3.0), mode_name(1.5)
    ('focus', 'defocus-3nm', 'defocus-1.5nm')
    """
    return "focus" if spread_nm == 0 else f"defocus-{spread_nm:g}nm"


def dose_name(dose: float) -> str:
    """Folder of a dose: ``dose-1.6e+04``.

    >>> dose_name(16000.0)
    'dose-1.6e+04'
    """
    return f"dose-{dose:.2g}"


def unsafe_name(name: str) -> str | None:
    """Why ``name`` cannot be a folder of its own inside the campaign's store; None when it can.

    It must be one plain path component that names a new folder: no path separator, not
    absolute, not ``.`` or ``..`` nor any hidden name (the stores' temporaries are hidden),
    no control characters, no surrounding spaces, at most 255 bytes.

    >>> unsafe_name("pt12") is None, unsafe_name("..") is None, unsafe_name("a/../../x") is None
    (True, False, False)
    """
    if not name.strip():
        return "is empty"
    if "/" in name or "\\" in name or pathlib.PureWindowsPath(name).anchor:
        return "contains a path separator or a drive"
    if name.startswith("."):
        return "starts with '.' ('.', '..' and hidden names are not particle folders)"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains a control character"
    if name != name.strip():
        return "starts or ends with a space"
    if len(name.encode("utf-8", "surrogatepass")) > 255:
        return "is longer than a file name may be (255 bytes)"
    return None


def load_campaign(source) -> dict:
    """Read and validate a campaign (a YAML path or a dict); paths resolved, particles built."""
    base = pathlib.Path.cwd()
    if isinstance(source, (str, pathlib.Path)):
        path = pathlib.Path(source)
        if not path.exists():
            raise InputError(f"{path}: no such campaign file")
        spec = config.read_yaml(path, "campaign file", InputError)
        base = path.resolve().parent
    else:
        spec = dict(source)
    if not isinstance(spec, dict):
        raise InputError("campaign: expected a mapping at the top level")
    known = {"seed", "preset", "parameters", "tilts", "doses", "defocus", "particles", "rows_per_task"}
    unknown = set(spec) - known
    if unknown:
        raise InputError(f"campaign: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    for key in ("tilts", "doses", "particles"):
        if key not in spec:
            raise InputError(f"campaign: the '{key}' entry is missing")
    preset = spec.get("preset")
    if preset is not None and preset not in ms.PRESETS:
        raise InputError(f"campaign: unknown preset {preset!r}; presets: {sorted(ms.PRESETS)}")
    doses = [float(d) for d in np.atleast_1d(spec["doses"])]
    if not doses or any(not (np.isfinite(d) and d > 0) for d in doses):
        raise InputError(f"campaign: doses must be positive numbers of e⁻/Å², got {spec['doses']}")
    modes = [float(d) for d in np.atleast_1d(spec.get("defocus", [0.0]))]
    if any(d < 0 for d in modes):
        raise InputError(f"campaign: defocus spreads must be ≥ 0 nm, got {modes}")
    euler = _tilts(spec["tilts"], base)
    particles = []
    names = set()
    for i, entry in enumerate(spec["particles"] or []):
        if not isinstance(entry, dict) or "name" not in entry:
            raise InputError(f"campaign: particle {i} needs a name")
        name = str(entry["name"])
        problem = unsafe_name(name)
        if problem:
            raise InputError(f"campaign: particle name {name!r} {problem}; expected a plain folder name such as "
                             "'pt12', as each particle becomes a folder inside --out")
        if name.casefold() in names:  # one folder on a case-insensitive file system
            raise InputError(f"campaign: particle name {name!r} is repeated; expected one name per particle")
        names.add(name.casefold())
        particles.append({"name": name, "atoms": _particle_atoms(entry, base),
                          "parameters": dict(entry.get("parameters") or {})})
    if not particles:
        raise InputError("campaign: no particles")
    return {
        "seed": int(spec.get("seed", 0)),
        "preset": preset,
        "parameters": dict(spec.get("parameters") or {}),
        "euler": euler,
        "doses": doses,
        "modes": modes,
        "particles": particles,
        "rows_per_task": spec.get("rows_per_task"),
    }


def _tilts(spec, base) -> np.ndarray:
    from aetdask.io import read_angles

    if not isinstance(spec, dict) or len(spec) != 1:
        raise InputError("campaign: tilts must be one of {theta: [start, stop, step]}, {theta: [...]}, "
                         "{file: PATH} or {angles: [[φ, θ, ψ], ...]}")
    (kind, value), = spec.items()
    if kind == "file":
        return as_euler(read_angles(base / value))
    if kind == "angles":
        return as_euler(np.asarray(value, dtype=float))
    if kind == "theta":
        v = np.asarray(value, dtype=float)
        if v.shape == (3,) and v[2] > 0 and v[1] > v[0]:
            return as_euler(np.arange(v[0], v[1], v[2]))
        return as_euler(v)
    raise InputError(f"campaign: unknown tilt scheme {kind!r}")


def _particle_atoms(entry, base):
    from aetdask.io import read_atoms
    from aetdask.simulate.amorphous import amorphous_particle, dense_particle

    if "atoms" in entry:
        return read_atoms(base / entry["atoms"], species=entry.get("species"))
    gen = dict(entry.get("generate") or {})
    if not gen:
        raise InputError(f"campaign: particle {entry['name']!r} needs 'atoms' (a file) or 'generate'")
    kind = gen.pop("kind", "dense")
    if kind not in KINDS:
        raise InputError(f"campaign: generate.kind must be one of {KINDS}, got {kind!r}")
    n = int(gen.pop("n", 0))
    if n < 1:
        raise InputError(f"campaign: particle {entry['name']!r}: generate.n must be a positive number of atoms")
    make = dense_particle if kind == "dense" else amorphous_particle
    try:
        return make(n, **gen)
    except TypeError as exc:
        raise InputError(f"campaign: particle {entry['name']!r}: {exc}") from None


def _parameters(campaign, particle) -> tuple[dict, dict]:
    """The campaign's preset, and the settings it gives itself (the particle's over the campaign's): these win
    over the user's configuration, which wins over the preset (:func:`aetdask.simulate.multislice.resolve`)."""
    preset = dict(ms.PRESETS[campaign["preset"]]) if campaign["preset"] else {}
    return preset, {**campaign["parameters"], **particle["parameters"]}


def _finish_projection(tiles, n_configs, n_chunks, blur, pixel_size, path, k, started):
    """Average a projection's tiles over configurations, blur, write it and mark it done."""
    import zarr

    rows = [np.mean([tiles[c * n_chunks + r] for c in range(n_configs)], axis=0) for r in range(n_chunks)]
    image = ms.blur(np.concatenate(rows, axis=0), blur, pixel_size)
    arr = zarr.open_array(str(path / "clean.zarr"), mode="r+")
    arr[k] = image
    marker = path / "clean" / f"done-{k}.json"
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"tilt": int(k), "seconds": round(time.time() - started, 3)}))
    tmp.rename(marker)
    return k


def _plan(campaign, out: pathlib.Path) -> tuple[list, list]:
    """Delayed projection tasks still to do, and the (particle, mode) series they fill."""
    import zarr

    tasks, series = [], []
    euler = campaign["euler"]
    started = time.time()
    for pi, particle in enumerate(campaign["particles"]):
        preset, p = _parameters(campaign, particle)
        atoms = particle["atoms"]
        positions = np.asarray(atoms.position.values, dtype=float)
        species = atoms.species.values.astype(str)
        pseed = _particle_seed(campaign["seed"], pi)
        settings = ms.resolve(positions, species, p, preset)
        ny, nx = settings["shape"]
        chunk = int(campaign["rows_per_task"] or settings.get("rows_per_task") or ny)
        bounds = [(r, min(r + chunk, ny)) for r in range(0, ny, chunk)]
        pos_d = dask.delayed(positions, traverse=False)
        problem = unsafe_name(str(particle["name"]))
        if problem:  # a campaign resolved elsewhere than load_campaign: checked here too
            raise InputError(f"campaign: particle name {particle['name']!r} {problem}; expected a plain folder name "
                             "such as 'pt12', as each particle becomes a folder inside --out")
        for spread in campaign["modes"]:
            path = out / particle["name"] / mode_name(spread)
            (path / "clean").mkdir(parents=True, exist_ok=True)
            defocus = ms.defocus_values(len(euler), spread, pseed)
            meta = {"particle": particle["name"], "spread_nm": spread, "defocus": defocus.tolist(),
                    "euler": euler.tolist(), "seed": pseed, "settings": jsonable(settings)}
            old = path / "clean.json"
            if old.exists() and json.loads(old.read_text()) != meta:
                raise InputError(f"{path}: this folder holds a different simulation (parameters, angles or seed "
                                 "changed); use a new --out or remove it")
            if not (path / "clean.zarr").exists():
                zarr.open_array(str(path / "clean.zarr"), mode="w", shape=(len(euler), ny, nx), chunks=(1, ny, nx),
                                dtype="f8", fill_value=np.nan)
            old.write_text(json.dumps(meta))
            series.append({"particle": particle, "path": path, "settings": settings, "spread": spread,
                           "defocus": defocus, "pseed": pseed})
            first = len(tasks)
            for k in range(len(euler)):
                if (path / "clean" / f"done-{k}.json").exists():
                    continue
                tiles = []
                configs = max(int(settings["phonons"]), 1)  # 0 phonons: the static model, once
                for c in range(configs):
                    displaced = pos_d if settings["phonons"] == 0 else dask.delayed(ms.phonon_positions, pure=True)(
                        pos_d, species, b_factors=settings["b_factors"], config=c, seed=pseed)
                    for rows in bounds:
                        tiles.append(dask.delayed(ms.scan_tile, pure=True)(
                            displaced, species, euler[k], rows=rows, defocus=float(defocus[k]),
                            **ms.tile_arguments(settings)))
                tasks.append(dask.delayed(_finish_projection, pure=False)(
                    tiles, configs, len(bounds), settings["blur"], settings["pixel_size"], path, k, started))
            series[-1]["keys"] = [t.key for t in tasks[first:]]
    return tasks, series


def _clean_series(entry, euler) -> xr.DataArray:
    import zarr

    data = np.asarray(zarr.open_array(str(entry["path"] / "clean.zarr"), mode="r")[:])
    s = entry["settings"]
    record = provenance_record("simulate.multislice", {**jsonable(s), "defocus_spread_nm": entry["spread"],
                                                       "seed": entry["pseed"]})
    ts = tilt_series(data, euler, s["pixel_size"], units="fraction", provenance=[record])
    return ts.assign_coords(defocus=("tilt", entry["defocus"], {"units": "Å"}))


class _Progress:
    """A campaign on the aetdask page (:mod:`aetdask.dashboard`, topic ``campaign``).

    Per particle and defocus mode: projections done (their markers), failed (their
    task raised), the keys of those still to finish (the scheduler counts the running
    ones), and the dose stores written. Updated as tasks finish, at most once a second.
    """

    def __init__(self, out, series, n_tilts, doses):
        from aetdask.dashboard import Throttle

        self.out, self.series, self.n_tilts, self.doses = out, series, n_tilts, doses
        self.finished, self.failed, self.written = set(), set(), set()
        self.lock = threading.Lock()
        self.throttle = Throttle("campaign")

    def task_done(self, future) -> None:
        with self.lock:
            self.finished.add(future.key)
            if future.status == "error":
                self.failed.add(future.key)
        self.publish()

    def dose_written(self, index, dose) -> None:
        self.written.add((index, dose))
        self.publish()

    def publish(self, final: bool = False, error: str | None = None) -> None:
        self.throttle(lambda: self.state(final, error), force=final)

    def state(self, final=False, error=None) -> dict:
        with self.lock:
            finished, failed = set(self.finished), set(self.failed)
        rows = [{"particle": e["particle"]["name"], "mode": mode_name(e["spread"]), "total": self.n_tilts,
                 "done": len(list((e["path"] / "clean").glob("done-*.json"))),
                 "failed": sum(k in failed for k in e["keys"]),
                 "keys": [] if final else [k for k in e["keys"] if k not in finished],
                 "doses": {dose_name(d): (i, d) in self.written for d in self.doses}}
                for i, e in enumerate(self.series)]
        return {"store": str(self.out), "doses": [dose_name(d) for d in self.doses], "rows": rows,
                "finished": final, "error": error, "updated": time.time()}


def run_campaign(campaign, out, *, progress: bool = True, echo=print) -> dict:
    """Run (or resume) a campaign into the folder ``out``; returns a summary.

    Parameters
    ----------
    campaign : dict or path
        A campaign (see the module docstring) or its YAML file.
    out : path
        The campaign store; created if missing, resumed if it exists.
    """
    from aetdask.io import RunStore

    campaign = load_campaign(campaign) if not isinstance(campaign, dict) or "euler" not in campaign else campaign
    out = pathlib.Path(out)
    _check_record(out / "campaign.json")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tasks, series = _plan(campaign, out)
    total = len(series) * len(campaign["euler"])
    echo(f"campaign: {len(campaign['particles'])} particle(s) × {len(campaign['modes'])} defocus mode(s) × "
         f"{len(campaign['euler'])} tilts = {total} projections; {total - len(tasks)} already done")
    for entry in series:
        note = entry["settings"].get("grid_note")
        if note:
            echo(f"  {entry['particle']['name']}: {note}")
    live = _Progress(out, series, len(campaign["euler"]), campaign["doses"]) if active_client() is not None else None
    if live is not None:
        live.publish()
    try:
        if tasks:
            compute(tasks, progress, "simulating projections (multislice)", on_done=live.task_done if live else None)
        simulated = time.perf_counter() - t0
        written = 0
        for i, entry in enumerate(series):
            clean = _clean_series(entry, campaign["euler"])
            for dose in campaign["doses"]:
                store = RunStore(entry["path"] / dose_name(dose))
                if "raw" not in store:
                    seed = int(np.random.SeedSequence([entry["pseed"], int(round(dose))]).generate_state(1)[0])
                    raw = add_noise(clean, dose, background=entry["settings"]["background"], seed=seed)
                    store.write("truth", entry["particle"]["atoms"])
                    store.write("raw", raw)
                    written += 1
                if live is not None:
                    live.dose_written(i, dose)
    except Exception as exc:
        if live is not None:
            live.publish(final=True, error=f"{type(exc).__name__}: {exc}")
        raise
    if live is not None:
        live.publish(final=True)
    summary = {
        "projections": total,
        "simulated_now": len(tasks),
        "dose_stores_written": written,
        "seconds": round(time.perf_counter() - t0, 3),
        "simulation_seconds": round(simulated, 3),
    }
    resolved = {k: v for k, v in campaign.items() if k not in ("particles", "euler")}
    resolved["euler"] = campaign["euler"].tolist()
    resolved["particles"] = [{"name": p["name"], "atoms": int(p["atoms"].sizes["atom"]),
                              "parameters": p["parameters"]} for p in campaign["particles"]]
    tmp = out / f".campaign.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(resolved, indent=1, default=str))
    os.replace(tmp, out / "campaign.json")
    return summary


def _check_record(path: pathlib.Path) -> None:
    """Refuse a campaign folder whose ``campaign.json`` is not the record a campaign wrote (it is rewritten)."""
    if not (path.exists() or path.is_symlink()):
        return
    try:
        old = None if path.is_symlink() else json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        old = None
    if not (isinstance(old, dict) and {"euler", "doses", "particles"} <= set(old)):
        raise InputError(f"{path}: exists and is not the record of a campaign aetdask wrote; expected --out to be a "
                         "new folder or a campaign's own")
