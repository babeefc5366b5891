"""The end-to-end run: raw counts → preprocessed → volume → candidates → atoms → refined, resumable.

The run is a loop over a chain of declared stages (:mod:`aetdask.stages`). Each
stage writes its product into the run store together with a record of what
made it — its fingerprint: the values of the parameters it declares, the
fingerprint before it, its code version and aetdask's version — in one
commit. Running the same command again keeps every stage whose product carries
the fingerprint it would have now and redoes the first one that changed and
everything after it, so a killed run resumes where it stopped and a changed
parameter recomputes only what it affects. One run holds the store's lock: a
second writer is refused. ``run.json`` is a log of the stages' times and notes
for people; it decides nothing.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import time

import numpy as np

from aetdask import config
from aetdask._version import __version__
from aetdask.errors import InputError
from aetdask.dashboard import RunMonitor
from aetdask.io import RunStore, read_tilt_series
from aetdask.io.store import check_writable
from aetdask.schema import normalize_species, validate_tilt_series
from aetdask.stages import angle_note, refine_store  # noqa: F401  (the CLI's refine command)

#: The products of the ADF chain, in order (:func:`aetdask.stages.chain`).
STAGES = ("raw", "preprocessed", "volume", "candidates", "atoms", "refined")
MODALITIES = ("adf", "ptycho")


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _source_fingerprint(tilts, angles, pixel_size) -> dict:
    if isinstance(tilts, (str, pathlib.Path)):
        p = pathlib.Path(tilts)
        src = {"file": p.name, "bytes": p.stat().st_size, "sha256": _file_digest(p)}
    else:
        src = {"array": hashlib.sha256(np.ascontiguousarray(tilts.values).tobytes()).hexdigest()[:16],
               "shape": list(tilts.shape)}
    if isinstance(angles, (str, pathlib.Path)):
        ang = {"file": pathlib.Path(angles).name, "sha256": _file_digest(pathlib.Path(angles))}
    else:
        ang = None if angles is None else np.asarray(angles, float).round(6).tolist()
    return {"tilts": src, "angles": ang, "pixel_size": pixel_size}


def _patterns_fingerprint(patterns) -> dict:
    """Shape, the experiment's settings, the angles and every tilt's total and first pattern:
    enough to tell two 4D-STEM data sets apart without hashing gigabytes."""
    import dask

    data = patterns.data
    totals, first = dask.compute(data.sum(axis=(1, 2, 3, 4), dtype=np.float64), data[:, 0, 0])
    attrs = {k: v for k, v in patterns.attrs.items() if k != "provenance"}
    angles = np.column_stack([patterns[c].values for c in ("phi", "theta", "psi")]).round(6).tolist()
    return {"patterns": list(patterns.shape), "attrs": attrs, "angles": angles,
            "totals": hashlib.sha256(np.asarray(totals).tobytes()).hexdigest()[:16],
            "first": hashlib.sha256(np.ascontiguousarray(first).tobytes()).hexdigest()[:16]}


def _file_digest(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def check_species(species, store: RunStore) -> None:
    """Raise :class:`InputError` when a store's ground truth shares no element with ``species``
    (a run or a trace told about the wrong sample)."""
    if "truth" not in store or len(species) == 0:
        return
    given = normalize_species(species).tolist()
    truth = sorted(set(store.read("truth").species.values.astype(str).tolist()))
    if truth and not set(truth) & set(given):
        raise InputError(f"species: {', '.join(given)} given, but the truth model of {store.path} holds "
                         f"{', '.join(truth)}; expected the sample's elements, e.g. --species {','.join(truth)}")


def _holds_input(store: RunStore, raw, fingerprint: str) -> bool:
    """Whether ``store`` is empty of input or already holds ``raw`` (the import stage's product with
    ``fingerprint``, or a raw tilt series of the same values, angles and pixel size, e.g. one a simulation
    wrote): False when the store holds a raw tilt series of other data."""
    if "raw" not in store:
        return True
    record = store.record("raw")
    if record is not None and record.get("fingerprint") == fingerprint:
        return True
    held = store.read("raw")
    if held.shape != raw.shape or held.attrs.get("pixel_size") != raw.attrs.get("pixel_size"):
        return False
    same_angles = all(np.allclose(held[c].values, raw[c].values, atol=1e-6) for c in ("phi", "theta", "psi")
                      if c in held.coords and c in raw.coords)
    return same_angles and bool(np.array_equal(np.asarray(held.values, np.float64), np.asarray(raw.values, np.float64)))


def run(
    tilts,
    out,
    species,
    *,
    angles=None,
    pixel_size: float | None = None,
    refine_angles: bool = False,
    scanning: bool = False,
    modality: str = "adf",
    progress: bool = True,
    echo=print,
    overwrite: bool = False,
) -> dict:
    """Run the whole pipeline into the run store ``out`` and write its report.

    Parameters
    ----------
    tilts : path or xr.DataArray
        Raw tilt series (counts): a file (:func:`aetdask.io.read_tilt_series`;
        then ``angles`` and ``pixel_size`` are needed) or a tilt-series DataArray.
    out : path
        Run store (created if missing; an existing one is resumed). One run
        holds the store's lock from start to end: a second writer is refused.
    species : str or list of str
        The elements in the sample.
    refine_angles : bool
        Refine angles, shifts and scales while reconstructing
        (:func:`aetdask.reconstruct.refine.refine_geometry`).
    scanning : bool
        Scanning AET for a film wider than the field of view
        (:func:`aetdask.reconstruct.scanning.scanning_reconstruct`): film
        preprocessing (no background, alignment along the tilt axis, scales for
        a path growing as 1/cos θ), local sub-volumes stitched; the model is the
        classified atoms of the stitched band (no refinement against the
        counts, which also see film outside the band). Suggested when the data
        look like a film.
    modality : {"adf", "ptycho"}
        ``"ptycho"``: ptychographic AET. ``tilts`` is then a 4D-STEM tilt
        series (``(tilt, scan_y, scan_x, ky, kx)``, e.g. a store's ``patterns``):
        the first stage reconstructs one phase image per tilt
        (:func:`aetdask.ptycho.stage.ptycho`, written as ``raw``), then the chain
        runs on the phase projections; no refinement against counts (the
        model of that stage is ADF), and the model gets the structure
        analysis, rings included (``analysis/`` in the store).
    overwrite : bool
        ``tilts`` are other data than the raw tilt series ``out`` holds: replace everything the store holds
        (else refused, as the old results and ground truth would be mixed with the new data); and replace
        report files next to the store that aetdask did not write.

    The chain of stages is :func:`aetdask.stages.chain`'s. A stage is kept when its
    product's record carries the fingerprint it would have now (:func:`fingerprint`);
    the first that differs is run, and every stage after it.

    Returns
    -------
    dict
        ``{"store", "stages": {product: {"seconds", "resumed", "stage", "note", "values"}},
        "atoms": {species: count}, "report"}``.
    """
    from aetdask.stages import Context, chain

    names = normalize_species(np.atleast_1d(species))
    if len(names) == 0:
        raise InputError("species: give at least one element, e.g. --species Si")
    stages = chain(modality, refine_angles=refine_angles, scanning=scanning)
    # every input is checked before the store is opened for writing, so bad input changes nothing
    if modality == "ptycho":
        from aetdask.ptycho.stage import validate_patterns

        raw_input = validate_patterns(tilts)
        source = _patterns_fingerprint(raw_input)
    else:
        from_file = isinstance(tilts, (str, pathlib.Path))  # read_tilt_series checks it, naming the file
        raw_input = validate_tilt_series(read_tilt_series(tilts, angles=angles, pixel_size=pixel_size) if from_file
                                         else tilts, plausible=not from_file)
        source = _source_fingerprint(tilts, angles, pixel_size)
    store = RunStore(out)
    check_writable(store.path.parent)  # the report goes next to the store
    from aetdask.report import REPORT_FILES

    store.check_beside(REPORT_FILES, overwrite, "aetdask run")
    if modality == "ptycho":  # its model's structure analysis goes to STORE/analysis
        from aetdask.analyze.outputs import check_outputs

        check_outputs(store.path / "analysis", overwrite)
    upstream = _digest({"source": source})
    planned = plan(stages, upstream, names)
    new_input = modality != "ptycho" and not _holds_input(store, raw_input, planned[0][1])
    if new_input and not overwrite:
        store.clear_for_new_input(overwrite=False)  # refused when the store holds anything
    if not new_input:
        check_species(names, store)  # the truth stays: it must be of these elements
    ctx = Context(store, names, raw_input, progress, echo)
    summary = {"store": str(store.path), "stages": {}}
    log = store.read_json("run.json") or {}
    log = {"stages": {}} if not isinstance(log.get("stages"), dict) else log
    t_run = time.perf_counter()
    with store.lock("aetdask run"), RunMonitor(store.path, [st.label for st in stages]) as monitor:
        if new_input:  # everything the store holds is of other data
            store.clear_for_new_input(keep=("raw",), overwrite=overwrite)
            log = {"stages": {}}
        redo = False
        for i, (st, (params, fp)) in enumerate(zip(stages, planned), 1):
            done = store.record(st.product) if st.product in store else None
            step = f"[{i}/{len(stages)}] {st.label}"
            if not redo and done is not None and done.get("fingerprint") == fp:
                echo(f"{step}: done before, kept ({done.get('seconds', 0):.1f} s then)")
                monitor.stage(i - 1, "kept")
                summary["stages"][st.product] = {"stage": st.name, "seconds": 0.0, "resumed": True,
                                                 "note": done.get("note", ""), "values": done.get("values", {})}
            else:
                redo = True
                echo(step)
                monitor.stage(i - 1, "running")
                t0 = time.perf_counter()
                result = _run_stage(st, ctx, params, fp, log, upstream if i == 1 else planned[i - 2][1])
                seconds = time.perf_counter() - t0
                monitor.stage(i - 1, "done", seconds)
                echo(f"      {result.note + '; ' if result.note else ''}{seconds:.1f} s")
                summary["stages"][st.product] = {"stage": st.name, "seconds": seconds, "resumed": False,
                                                 "note": result.note, "values": result.values}
        final = store.read(stages[-1].product)
        summary["atoms"] = {str(s): int(np.sum(final.species.values == s)) for s in names}
        if modality == "ptycho":
            summary["structure"] = _structure(final, store, echo, overwrite)
        summary["seconds"] = time.perf_counter() - t_run
        from aetdask.report import write_report

        summary["report"] = [str(p) for p in write_report(store, overwrite=overwrite)]
        if "truth" in store:  # the report scored the model against the store's truth
            scores = store.read_json("metrics.json") or {}
            o = scores.get("overall", {})
            summary["metrics"] = {"identification_pct": o.get("identification_pct"),
                                  "precision_pm": o.get("precision_pm"), "cutoff": scores.get("cutoff")}
    if stages[-1].product != "refined":
        why = ("phase projections (its forward model is ADF-STEM counts)" if modality == "ptycho" else
               "scanning AET (each projection also sees film outside the reconstructed band, which the model does "
               "not hold)")
        echo(f"      coordinate refinement against the counts: not for {why}; the model is the classified atoms")
    scored = summary.get("metrics")
    score = "" if not scored or scored["identification_pct"] is None else (
        f"; against the store's truth: {scored['identification_pct']:.1f} % identified at "
        f"{scored['precision_pm'] if scored['precision_pm'] is not None else float('nan'):.1f} pm (within {scored['cutoff']} Å)")
    echo(f"model: {final.sizes['atom']} atoms ({', '.join(f'{v} {k}' for k, v in summary['atoms'].items())}){score}; "
         f"report {summary['report'][1]}; {summary['seconds']:.1f} s in all")
    return summary


def _run_stage(st, ctx, params: dict, fp: str, log: dict, upstream: str):
    """Run one stage with its record; log its time and note in ``run.json``. The record holds the fingerprint
    it was made from (``upstream``: the input's digest, or the record of the product before it in the chain),
    so that :func:`aetdask.stages.is_current` can tell a product made from what the store holds now."""
    t0 = time.perf_counter()
    record = {"stage": st.name, "fingerprint": fp, "upstream": upstream, "params": params, "version": __version__,
              "stage_version": st.version}
    # the stage writes its product with this record in one commit; its time and summary follow in run.json
    # (a log for people: what decides a resume is the record inside the product)
    with config.declared(st.name, st.params):
        result = st.run(ctx, record)
    log["stages"][st.product] = {**record, "seconds": time.perf_counter() - t0, "note": result.note}
    ctx.store.write_json("run.json", log)
    return result


def run_stage(store, name: str, species=(), *, progress: bool = True, echo=print):
    """Run one stage of the chain (:data:`aetdask.stages.BY_NAME`) on a run store, as ``aetdask run`` would
    at that point: the same record, so a later ``aetdask run`` keeps it when nothing changed. Returns its
    :class:`~aetdask.stages.Summary`."""
    from aetdask.errors import StoreError
    from aetdask.stages import BY_NAME, Context

    st = BY_NAME[name]
    names = normalize_species(np.atleast_1d(species)) if len(np.atleast_1d(species)) else np.array([], dtype=str)
    if st.species and len(names) == 0:
        raise InputError("species: give at least one element, e.g. --species Si")
    rs = store if isinstance(store, RunStore) else RunStore(store, create=False, writable=True)
    with rs.lock(f"aetdask {name}"):
        missing = [p for p in st.reads if p not in rs]
        if missing:
            raise StoreError(f"{rs.path}: {st.label} needs {', '.join(missing)} (it has {rs.products()})")
        if len(names):
            check_species(names, rs)
        # the record of the product before it in the chain: the upstream of its fingerprint
        upstream = (rs.record(st.reads[-1]) or {}).get("fingerprint", f"unrecorded {st.reads[-1]}")
        params = st.values(names)
        log = rs.read_json("run.json") or {}
        log = {"stages": {}} if not isinstance(log.get("stages"), dict) else log
        with RunMonitor(rs.path, [st.label]) as monitor:
            monitor.stage(0, "running")
            t0 = time.perf_counter()
            result = _run_stage(st, Context(rs, names, None, progress, echo), params, fingerprint(st, params, upstream),
                                log, upstream)
            monitor.stage(0, "done", time.perf_counter() - t0)
        return result


def plan(stages, upstream: str, species=()) -> list[tuple[dict, str]]:
    """Each stage's parameter values and fingerprint, in chain order, from the input's digest ``upstream``."""
    out = []
    for st in stages:
        params = st.values(species)
        upstream = fingerprint(st, params, upstream)
        out.append((params, upstream))
    return out


def fingerprint(stage, params: dict, upstream: str) -> str:
    """A stage's fingerprint: its declared parameters' values, the fingerprint of what came before it (the
    input's digest at the start), its code version and aetdask's version. Equal fingerprints: the same
    product."""
    return _digest({"upstream": upstream, "stage": stage.name, "params": params, "stage_version": stage.version,
                    "aetdask": __version__})


def _structure(model, store: RunStore, echo, overwrite: bool = False) -> dict | None:
    """The structure analysis of a pAET model (rings of its network formers among it), written to
    ``analysis/`` in the store; None with a note when the model is too small to analyse."""
    from aetdask.analyze import analyze
    from aetdask.analyze.outputs import write_outputs

    try:
        result = analyze(model)
    except (InputError, ValueError) as exc:
        echo(f"      structure analysis skipped: {exc}")
        return None
    target = store.path / "analysis"
    summary = result.attrs["summary"]
    write_outputs(target, result, overwrite)  # only files the analysis wrote are replaced (its ledger)
    rings = summary.get("rings") or {}
    echo(f"      structure: {json.dumps(rings)[:300]} → {target}/structure.png, structure.json, structure.zarr")
    return summary
