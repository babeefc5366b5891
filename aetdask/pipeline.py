"""The end-to-end run: raw counts → preprocessed → volume → candidates → atoms → refined, resumable.

Each stage writes its product into the run store as soon as it finishes and
records a fingerprint of what made it (its parameters and its input's
fingerprint) in ``run.json``. Running the same command again skips every stage
whose product is there with the same fingerprint and redoes the first one that
changed and everything after it, so a killed run resumes where it stopped and a
changed parameter recomputes only what it affects.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import time

import numpy as np

from aetdask import config
from aetdask.errors import InputError
from aetdask.io import RunStore, read_tilt_series
from aetdask.io.store import check_writable
from aetdask.schema import last_record, normalize_species, validate_tilt_series

STAGES = ("raw", "preprocessed", "volume", "candidates", "atoms", "refined")
_CONFIG_OF = {
    "raw": (),
    "preprocessed": ("preprocess.denoiser", "dtype"),
    "volume": ("reconstruct.method", "reconstruct.iterations", "reconstruct.step", "reconstruct.subsamples",
               "reconstruct.plateau", "dtype"),
    "candidates": ("trace.oversample", "trace.window", "trace.sigma", "trace.order", "trace.bond_fraction"),
    "atoms": ("classify.seed", "classify.passes", "classify.noise_classes"),
    "refined": ("refine_atoms.iterations", "refine_atoms.max_displacement", "refine_atoms.select",
                "refine_atoms.angles", "refine_atoms.components"),
}
_SCANNING_KEYS = ("scanning.core", "scanning.overlap")
_PTYCHO_KEYS = ("ptycho.iterations", "ptycho.multislice", "ptycho.slices", "ptycho.probe_after", "ptycho.blur")
MODALITIES = ("adf", "ptycho")
_REFINE_ANGLE_KEYS = ("refine.rounds", "refine.iterations", "refine.angle_step", "refine.angle_points",
                      "refine.shift_upsample", "refine.momentum", "refine.memory")


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


def refine_store(store: RunStore, progress: bool = False):
    """Refine a run store's ``atoms`` against its raw counts (noise model and alignment from
    ``preprocessed``), offering the candidates classification left out to the likelihood test.

    Every projection's angles are refined with the atoms when ``refine_atoms.angles`` says so or,
    unset, when the reconstruction refined them (``--refine-angles``): against the atoms, which
    cannot take up a projection's own error as a voxel volume does, they end closer to the truth.
    """
    from scipy.spatial import cKDTree

    from aetdask.model import refine

    raw, pre = store.read("raw"), store.read("preprocessed")
    if raw.attrs.get("units") == "counts":
        data = raw.load().assign_coords(
            {k: ("tilt", pre.coords[k].values) for k in ("noise_alpha", "noise_sigma", "shift_y", "shift_x")
             if k in pre.coords})
    else:  # no counts to fit: the preprocessed projections, by least squares
        data = pre.load()
    data = data.assign_coords(phi=("tilt", pre.phi.values), theta=("tilt", pre.theta.values),
                              psi=("tilt", pre.psi.values))
    found, cand = store.read("atoms"), store.read("candidates")
    d, _ = cKDTree(found.position.values).query(cand.position.values)
    # unset: the angles are refined against the atoms when the reconstruction refined them
    angles = None
    if config.get("refine_atoms.angles") is None:
        angles = any(r["stage"] == "reconstruct.refine" for r in pre.attrs.get("provenance", []))
    return refine(found, data, candidates=cand.position.values[d > 1e-6], angles=angles, progress=progress)


def _angle_note(store: RunStore, refined) -> str:
    """How far the coordinate refinement moved the angles from the reconstruction's (RMS rotation), if it did,
    and, on counts, the Cramér–Rao bound of each projection's orientation (:mod:`aetdask.model.bound`)."""
    params = last_record(refined, "refine")
    if "theta" not in params:
        return ""
    from aetdask.geometry import projection_matrices

    pre = store.read("preprocessed")
    before = projection_matrices(np.c_[pre.phi.values, pre.theta.values, pre.psi.values])
    after = projection_matrices(np.c_[params["phi"], params["theta"], params["psi"]])
    cos = (np.trace(before @ np.swapaxes(after, 1, 2), axis1=1, axis2=2) - 1) / 2
    turn = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    note = f"; angles refined against the atoms, {np.sqrt(np.mean(turn**2)):.3f}° RMS from the reconstruction's"
    if params.get("likelihood") == "poisson-gaussian":
        from aetdask.model.bound import orientation_bound

        bound = orientation_bound(refined, pre)
        note += f" (the counts bound each projection's orientation to {np.sqrt((bound**2).sum(axis=1).mean()):.3f}° RMS)"
    return note


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
) -> dict:
    """Run the whole pipeline into the run store ``out`` and write its report.

    Parameters
    ----------
    tilts : path or xr.DataArray
        Raw tilt series (counts): a file (:func:`aetdask.io.read_tilt_series`;
        then ``angles`` and ``pixel_size`` are needed) or a tilt-series DataArray.
    out : path
        Run store (created if missing; an existing one is resumed).
    species : str or list of str
        The elements in the sample.
    refine_angles : bool
        Refine angles, shifts and scales while reconstructing
        (:func:`aetdask.reconstruct.refine.refine`).
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

    Returns
    -------
    dict
        ``{"store", "stages": {name: {"seconds", "resumed"}}, "atoms": {species: count}, "report"}``.
    """
    from aetdask.model import classify, trace
    from aetdask.preprocess import preprocess
    from aetdask.reconstruct import reconstruct
    from aetdask.reconstruct.refine import refine as refine_angles_fn
    from aetdask.reconstruct.scanning import extension_exponent, scanning_reconstruct, suggests_scanning
    from aetdask.reconstruct.stage import reconstruction_record

    names = normalize_species(np.atleast_1d(species))
    if len(names) == 0:
        raise InputError("species: give at least one element, e.g. --species Si")
    if modality not in MODALITIES:
        raise InputError(f"modality: {modality!r} is not one of {MODALITIES}")
    ptychographic = modality == "ptycho"
    if ptychographic and (scanning or refine_angles):
        raise InputError("run: --modality ptycho cannot be combined with --scanning or --refine-angles yet")
    if scanning and refine_angles:
        raise InputError("run: --scanning and --refine-angles cannot be combined yet (angle refinement needs the "
                         "whole object in every projection)")
    # every input is checked before the store is opened for writing, so bad input changes nothing
    if ptychographic:
        from aetdask.ptycho.stage import ptycho, validate_patterns

        raw_input = validate_patterns(tilts)
    else:
        raw_input = validate_tilt_series(tilts if not isinstance(tilts, (str, pathlib.Path)) else read_tilt_series(
            tilts, angles=angles, pixel_size=pixel_size))
    store = RunStore(out)
    check_writable(store.path.parent)  # the report goes next to the store
    check_species(names, store)
    record = store.read_json("run.json") or {"stages": {}}
    source = _patterns_fingerprint(raw_input) if ptychographic else _source_fingerprint(tilts, angles, pixel_size)
    upstream = _digest({"source": source, "species": sorted(names.tolist())})
    redo = False
    summary = {"store": str(store.path), "stages": {}}
    t_run = time.perf_counter()

    def stage(name, make, label):
        nonlocal upstream, redo
        keys = _CONFIG_OF[name] + (_REFINE_ANGLE_KEYS if name == "volume" and refine_angles else ())
        keys += _SCANNING_KEYS if name == "volume" and scanning else ()
        keys += _PTYCHO_KEYS if name == "raw" and ptychographic else ()
        params = {k: config.get(k) for k in keys}
        if name == "volume":
            params["refine_angles"] = bool(refine_angles)
        if name in ("preprocessed", "volume") and scanning:
            params["scanning"] = True
        fingerprint = _digest({"upstream": upstream, "params": params})
        done = record["stages"].get(name, {})
        i = STAGES.index(name) + 1
        if not redo and name in store and done.get("fingerprint") == fingerprint:
            echo(f"[{i}/{len(STAGES)}] {label}: done before, kept ({done.get('seconds', 0):.1f} s then)")
            summary["stages"][name] = {"seconds": 0.0, "resumed": True}
        else:
            redo = True
            echo(f"[{i}/{len(STAGES)}] {label}")
            t0 = time.perf_counter()
            note = make()
            seconds = time.perf_counter() - t0
            record["stages"][name] = {"fingerprint": fingerprint, "params": params, "seconds": seconds,
                                      **({"note": note} if note else {})}
            store.write_json("run.json", record)
            echo(f"      {note + '; ' if note else ''}{seconds:.1f} s")
            summary["stages"][name] = {"seconds": seconds, "resumed": False}
        upstream = fingerprint

    def do_raw():
        if ptychographic:
            raw = ptycho(raw_input)
            store.write("raw", raw, progress=progress)
            p = last_record(raw, "ptycho")
            return (f"{raw.shape[0]} phase projections of {raw.shape[1]}×{raw.shape[2]} px at "
                    f"{raw.attrs['pixel_size']:.4f} Å ({'multislice, ' + str(p['slices']) + ' slices' if p['multislice'] else 'single slice'}, "
                    f"{p['iterations']} iterations)")
        raw = raw_input
        store.write("raw", raw)
        return (f"{raw.shape[0]} projections of {raw.shape[1]}×{raw.shape[2]} px at "
                f"{raw.attrs['pixel_size']} Å, units {raw.attrs['units']}")

    def do_pre():
        raw = store.read("raw")
        if scanning:
            pre = preprocess(raw, background=False, alignment="film", extended=True)
        else:
            if raw.attrs.get("units") == "counts" and suggests_scanning(raw):
                echo(f"      note: the projections' totals grow as 1/cos θ^{extension_exponent(raw):.2f}: the sample "
                     f"looks wider than the field of view at high tilt (a film?); `aetdask run --scanning` "
                     f"reconstructs it in local sub-volumes")
            pre = preprocess(raw)
        store.write("preprocessed", pre, progress=progress)
        pre = store.read("preprocessed")
        return (f"noise α ≈ {np.nanmedian(pre.noise_alpha.values):.3g}, σ ≈ {np.nanmedian(pre.noise_sigma.values):.3g}; "
                f"alignment {np.sqrt(np.mean(pre.shift_y.values**2 + pre.shift_x.values**2)):.2f} px RMS")

    def do_volume():
        pre = store.read("preprocessed").compute()
        if scanning:
            volume = scanning_reconstruct(pre, progress=progress)
            p = reconstruction_record(volume)
            store.write("volume", volume.chunk({"z": -1, "y": 64, "x": 64}))
            return (f"scanning AET: {p['regions']} sub-volumes, film z = {p['film_center']:.1f} ± "
                    f"{p['film_half_thickness']:.1f} Å, R = {p['r_final']:.4f} (mean over regions)")
        if refine_angles:
            volume, pre = refine_angles_fn(pre, progress=progress)
            store.write("preprocessed", pre)
        else:
            volume = reconstruct(pre, progress=progress)
        n = volume.shape[0]
        c = min(n, 64)
        store.write("volume", volume.chunk({"z": c, "y": c, "x": c}))
        p = reconstruction_record(volume)
        return f"{p['method']}, {p['iterations_run']} iterations, R = {p['r_final']:.4f}"

    def do_candidates():
        cand = trace(store.read("volume"), names, progress=progress)
        store.write("candidates", cand)
        p = cand.attrs["provenance"][-1]["params"]
        return (f"{p['fitted']} peaks fitted in {p['sub_volumes']} sub-volume(s), {p['candidates']} candidates "
                f"after the {p['merge_distance']:.2f} Å merge")

    def do_atoms():
        at = classify(store.read("candidates"), names)
        store.write("atoms", at)
        counts = at.attrs["provenance"][-1]["params"]["counts"]
        non = at.attrs["provenance"][-1]["params"]["non_atoms"]
        return ", ".join(f"{v} {k}" for k, v in counts.items()) + f"; {non} non-atoms"

    def do_refined():
        refined = refine_store(store, progress=progress)
        store.write("refined", refined)
        p = refined.attrs["provenance"][-1]["params"]
        shift = np.median(refined.displacement.values) * 100
        sel = p.get("selection") or []
        changes = (f"{sum(r['removed'] for r in sel)} atoms dropped, {sum(r['added'] for r in sel)} added by the "
                   f"likelihood test; " if sel else "")
        return (changes + f"{p['likelihood']} fit, misfit {p['misfit_start']:.6g} → {p['misfit_final']:.6g}, median "
                f"displacement {shift:.1f} pm, B = " + ", ".join(f"{s} {' / '.join(f'{v:.1f}' for v in np.ravel(b))} Å²"
                                                          for s, b in zip(p["species"], p["b_factor"]))
                + (" (core / tails)" if p.get("components", 1) > 1 else "") + _angle_note(store, refined))

    stage("raw", do_raw, "ptychography: a phase image per tilt" if ptychographic else "import")
    denoise = "" if str(config.get("preprocess.denoiser")) == "none" else ", VST + denoising"
    stage("preprocessed", do_pre, f"preprocessing: noise{denoise}, background, alignment")
    stage("volume", do_volume, "reconstruction" + (" with angle refinement" if refine_angles else ""))
    stage("candidates", do_candidates, "tracing")
    stage("atoms", do_atoms, "classification")
    if scanning:
        echo(f"[{len(STAGES)}/{len(STAGES)}] coordinate refinement against the counts: not for scanning AET (each "
             f"projection also sees film outside the reconstructed band, which the model does not hold); "
             f"the model is the classified atoms")
        final = store.read("atoms")
    elif ptychographic:
        echo(f"[{len(STAGES)}/{len(STAGES)}] coordinate refinement against the counts: not for phase projections (its "
             f"forward model is ADF-STEM counts); the model is the classified atoms")
        final = store.read("atoms")
    else:
        stage("refined", do_refined, "coordinate refinement against the counts")
        final = store.read("refined")
    summary["atoms"] = {str(s): int(np.sum(final.species.values == s)) for s in names}
    if ptychographic:
        summary["structure"] = _structure(final, store, echo)
    summary["seconds"] = time.perf_counter() - t_run
    from aetdask.report import write_report

    summary["report"] = [str(p) for p in write_report(store)]
    echo(f"model: {final.sizes['atom']} atoms ({', '.join(f'{v} {k}' for k, v in summary['atoms'].items())}); "
         f"report {summary['report'][1]}; {summary['seconds']:.1f} s in all")
    return summary


def _structure(model, store: RunStore, echo) -> dict | None:
    """The structure analysis of a pAET model (rings of its network formers among it), written to
    ``analysis/`` in the store; None with a note when the model is too small to analyse."""
    from aetdask.analyze import analyze
    from aetdask.analyze.plot import structure_figure

    try:
        result = analyze(model)
    except (InputError, ValueError) as exc:
        echo(f"      structure analysis skipped: {exc}")
        return None
    target = store.path / "analysis"
    target.mkdir(exist_ok=True)
    summary = result.attrs["summary"]
    (target / "structure.json").write_text(json.dumps(summary, indent=1))
    structure_figure(result, target / "structure.png")
    rings = summary.get("rings") or {}
    echo(f"      structure: {json.dumps(rings)[:300]} → {target}/structure.png, structure.json")
    return summary
