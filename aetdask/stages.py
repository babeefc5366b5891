"""The pipeline's stages as declared objects, and the chains of stages each modality runs.

A :class:`Stage` names the product it writes, the products it reads, its kind
of work and its label; the parameters it depends on are the registry's
(:func:`aetdask.parameters.read_by`), never a list kept here. The runner
(:func:`aetdask.pipeline.run`) derives each stage's fingerprint from those
parameters' values, the upstream fingerprint, the stage's code version and
aetdask's version, and runs the stage inside :func:`aetdask.config.declared`,
so reading an undeclared parameter is caught.

A modality is a chain (:func:`chain`): ADF (the paper's workflow), ADF with
angle refinement, scanning AET of films, ptychographic AET.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from aetdask import config
from aetdask.errors import InputError
from aetdask.io import RunStore
from aetdask.parameters import read_by
from aetdask.schema import last_record


@dataclass
class Summary:
    """What a stage did: one line for people (``note``) and the figures behind it (``values``)."""

    note: str = ""
    values: dict = field(default_factory=dict)


@dataclass
class Context:
    """What a stage works with: the run store, the sample's elements, the raw input (for the first
    stage), whether to draw progress, and where to say things."""

    store: object
    species: np.ndarray
    raw_input: object = None
    progress: bool = False
    echo: Callable = print


@dataclass(frozen=True)
class Stage:
    """One step of a chain.

    ``name`` is how the parameter registry refers to it; ``product`` what it
    writes into the run store (with its record, in one commit); ``reads`` the
    products it needs; ``work``: ``"graph"`` (a lazy Dask graph, computed
    while the store writes it), ``"iterative"`` (iterations whose every step is
    a Dask computation on the workers) or ``"client"`` (runs in this process);
    ``version`` is bumped when the stage's code changes its results, so stores
    made by the old code are recomputed; ``species``: the sample's elements
    are one of its parameters.
    """

    name: str
    product: str
    reads: tuple
    label: str
    work: str
    run: Callable[[Context, dict], Summary]
    version: int = 1
    species: bool = False  # the sample's elements are one of its parameters

    @property
    def params(self) -> tuple[str, ...]:
        """The parameters this stage declares it reads (from the registry)."""
        return read_by(self.name)

    def values(self, species=()) -> dict:
        """The values of its parameters now (and the elements, for a stage that takes them): what its
        fingerprint is made of."""
        out = {k: config.get(k) for k in self.params}
        if self.species:
            out["species"] = sorted(str(s) for s in np.atleast_1d(species))
        return out


# ---------------------------------------------------------------------------------------------- the stages
def refine_store(store: RunStore, progress: bool = False):
    """Refine a run store's ``atoms`` against its raw counts (noise model and alignment from
    ``preprocessed``), offering the candidates classification left out to the likelihood test.

    Every projection's angles are refined with the atoms when ``refine_atoms.angles`` says so or,
    unset, when the reconstruction refined them (``--refine-angles``): against the atoms, which
    cannot take up a projection's own error as a voxel volume does, they end closer to the truth.
    """
    from scipy.spatial import cKDTree

    from aetdask.model import refine_atoms

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
    return refine_atoms(found, data, candidates=cand.position.values[d > 1e-6], angles=angles, progress=progress)


def angle_note(store: RunStore, refined) -> str:
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


def _import(ctx: Context, record: dict) -> Summary:
    raw = ctx.raw_input
    ctx.store.write("raw", raw, record=record)
    return Summary(f"{raw.shape[0]} projections of {raw.shape[1]}×{raw.shape[2]} px at {raw.attrs['pixel_size']} Å, "
                   f"units {raw.attrs['units']}", {"projections": int(raw.shape[0])})


def _ptycho(ctx: Context, record: dict) -> Summary:
    from aetdask.ptycho.stage import ptycho

    raw = ptycho(ctx.raw_input)
    p = last_record(raw, "ptycho")
    ctx.store.write("raw", raw, progress=ctx.progress, record=record)
    how = f"multislice, {p['slices']} slices" if p["multislice"] else "single slice"
    return Summary(f"{raw.shape[0]} phase projections of {raw.shape[1]}×{raw.shape[2]} px at "
                   f"{raw.attrs['pixel_size']:.4f} Å ({how}, {p['iterations']} iterations)",
                   {"projections": int(raw.shape[0])})


def _preprocess_note(pre) -> Summary:
    alpha, sigma = float(np.nanmedian(pre.noise_alpha.values)), float(np.nanmedian(pre.noise_sigma.values))
    shift = float(np.sqrt(np.mean(pre.shift_y.values**2 + pre.shift_x.values**2)))
    figures = {"alpha": alpha, "sigma": sigma, "shift_rms_px": shift}
    axis = ""
    if "tilt_axis_found" in pre.coords:
        found, se = float(pre.coords["tilt_axis_found"]), float(pre.coords["tilt_axis_found_se"])
        figures.update(tilt_axis_found=found, tilt_axis_found_se=se)
        axis = f"; tilt axis from the images {found:+.2f} ± {se:.2f}°"
    return Summary(f"noise α ≈ {alpha:.3g}, σ ≈ {sigma:.3g}; alignment {shift:.2f} px RMS{axis}", figures)


def _preprocess(ctx: Context, record: dict) -> Summary:
    import warnings

    from aetdask.plausibility import PlausibilityWarning
    from aetdask.preprocess import axis_warning, preprocess
    from aetdask.reconstruct.scanning import extension_exponent, suggests_scanning

    raw = ctx.store.read("raw")
    if raw.attrs.get("units") == "counts" and suggests_scanning(raw):
        ctx.echo(f"      note: the projections' totals grow as 1/cos θ^{extension_exponent(raw):.2f}: the sample "
                 f"looks wider than the field of view at high tilt (a film?); `aetdask run --scanning` "
                 f"reconstructs it in local sub-volumes")
    ctx.store.write("preprocessed", preprocess(raw), progress=ctx.progress, record=record)
    pre = ctx.store.read("preprocessed")
    said = axis_warning(pre)
    if said:
        warnings.warn(f"{ctx.store.path.name}/preprocessed: {said}", PlausibilityWarning, stacklevel=2)
    return _preprocess_note(pre)


def _preprocess_film(ctx: Context, record: dict) -> Summary:
    from aetdask.preprocess import preprocess

    pre = preprocess(ctx.store.read("raw"), background=False, alignment="film", extended=True)
    ctx.store.write("preprocessed", pre, progress=ctx.progress, record=record)
    return _preprocess_note(ctx.store.read("preprocessed"))


def _volume_chunks(volume):
    c = min(volume.shape[0], 64)
    return volume.chunk({"z": c, "y": c, "x": c})


def _reconstruct(ctx: Context, record: dict) -> Summary:
    from aetdask.reconstruct import reconstruct
    from aetdask.reconstruct.stage import reconstruction_record

    volume = reconstruct(ctx.store.read("preprocessed").compute(), progress=ctx.progress)
    ctx.store.write("volume", _volume_chunks(volume), record=record)
    p = reconstruction_record(volume)
    return Summary(f"{p['method']}, {p['iterations_run']} iterations, R = {p['r_final']:.4f}",
                   {"method": p["method"], "iterations": p["iterations_run"], "r_final": p["r_final"]})


#: The geometry angle refinement changes on the preprocessed series; what preprocessing gave is kept beside it.
_GEOMETRY = {"phi": 0.0, "theta": 0.0, "psi": 0.0, "shift_y": 0.0, "shift_x": 0.0, "scale": 1.0}


def _as_preprocessed(pre):
    """The series with the geometry preprocessing gave it, whatever an earlier angle refinement wrote: a run
    killed after the refined series was written but before its volume redoes the stage from the same start."""
    kept = [c for c in _GEOMETRY if f"preprocessed_{c}" in pre.coords]
    if not kept:
        return pre
    out = pre.assign_coords({c: ("tilt", pre.coords[f"preprocessed_{c}"].values) for c in kept})
    out = out.drop_vars([f"preprocessed_{c}" for c in kept])
    out.attrs = {**out.attrs, "provenance": [r for r in out.attrs.get("provenance", [])
                                             if r.get("stage") != "reconstruct.refine"]}
    return out


def _reconstruct_angles(ctx: Context, record: dict) -> Summary:
    from aetdask.reconstruct.refine import refine_geometry
    from aetdask.reconstruct.stage import reconstruction_record

    pre = _as_preprocessed(ctx.store.read("preprocessed").compute())
    volume, refined = refine_geometry(pre, progress=ctx.progress)
    # the refined geometry replaces the preprocessed series' angles, shifts and scales, with what preprocessing
    # gave kept beside it; the preprocessing's own record stays with it (what made the projections is the same)
    n = pre.sizes["tilt"]
    refined = refined.assign_coords({f"preprocessed_{c}": ("tilt", pre.coords[c].values if c in pre.coords
                                                           else np.full(n, v)) for c, v in _GEOMETRY.items()})
    ctx.store.write("preprocessed", refined, record=ctx.store.record("preprocessed"))
    ctx.store.write("volume", _volume_chunks(volume), record=record)
    p = reconstruction_record(volume)
    return Summary(f"{p['method']}, {p['iterations_run']} iterations, R = {p['r_final']:.4f}",
                   {"method": p["method"], "iterations": p["iterations_run"], "r_final": p["r_final"]})


def _reconstruct_scanning(ctx: Context, record: dict) -> Summary:
    from aetdask.reconstruct.scanning import scanning_reconstruct
    from aetdask.reconstruct.stage import reconstruction_record

    volume = scanning_reconstruct(ctx.store.read("preprocessed").compute(), progress=ctx.progress)
    p = reconstruction_record(volume)
    ctx.store.write("volume", volume.chunk({"z": -1, "y": 64, "x": 64}), record=record)
    return Summary(f"scanning AET: {p['regions']} sub-volumes, film z = {p['film_center']:.1f} ± "
                   f"{p['film_half_thickness']:.1f} Å, R = {p['r_final']:.4f} (mean over regions)",
                   {"regions": p["regions"], "r_final": p["r_final"]})


def _trace(ctx: Context, record: dict) -> Summary:
    from aetdask.model import trace

    cand = trace(ctx.store.read("volume"), ctx.species, progress=ctx.progress)
    ctx.store.write("candidates", cand, record=record)
    p = last_record(cand, "trace")
    return Summary(f"{p['fitted']} peaks fitted in {p['sub_volumes']} sub-volume(s), {p['candidates']} candidates "
                   f"after the {p['merge_distance']:.2f} Å merge", {"candidates": p["candidates"]})


def _classify(ctx: Context, record: dict) -> Summary:
    from aetdask.model import classify

    at = classify(ctx.store.read("candidates"), ctx.species)
    ctx.store.write("atoms", at, record=record)
    p = last_record(at, "classify")
    text = ", ".join(f"{v} {k}" for k, v in p["counts"].items()) + f"; {p['non_atoms']} non-atoms"
    figures = {"counts": p["counts"], "non_atoms": p["non_atoms"]}
    if p.get("method") == "mixture":  # its posteriors say how sure the labels are
        text += f"; {p['uncertain']} atoms with p < 0.9, about {p['expected_errors']:.0f} wrong labels expected"
        figures.update(uncertain=p["uncertain"], expected_errors=p["expected_errors"])
    return Summary(text, figures)


def _refine(ctx: Context, record: dict) -> Summary:
    refined = refine_store(ctx.store, progress=ctx.progress)
    ctx.store.write("refined", refined, record=record)
    p = last_record(refined, "refine")
    shift = np.median(refined.displacement.values) * 100
    sel = p.get("selection") or []
    dropped, added = sum(r["removed"] for r in sel), sum(r["added"] for r in sel)
    changes = f"{dropped} atoms dropped, {added} added by the likelihood test; " if sel else ""
    b = ", ".join(f"{s} {' / '.join(f'{v:.1f}' for v in np.ravel(bf))} Å²" for s, bf in zip(p["species"], p["b_factor"]))
    note = (changes + f"{p['likelihood']} fit, misfit {p['misfit_start']:.6g} → {p['misfit_final']:.6g}, median "
            f"displacement {shift:.1f} pm, B = {b}" + (" (core / tails)" if p.get("components", 1) > 1 else "")
            + angle_note(ctx.store, refined))
    return Summary(note, {"atoms": int(refined.sizes["atom"]), "dropped": dropped, "added": added,
                          "misfit": [p["misfit_start"], p["misfit_final"]]})


IMPORT = Stage("import", "raw", (), "import", "client", _import)
PTYCHO = Stage("ptycho", "raw", (), "ptychography: a phase image per tilt", "iterative", _ptycho)
PREPROCESS = Stage("preprocess", "preprocessed", ("raw",), "preprocessing: noise, background, alignment", "graph",
                   _preprocess)
PREPROCESS_FILM = Stage("preprocess-film", "preprocessed", ("raw",),
                        "preprocessing of a film: noise, alignment along the tilt axis, scales", "graph",
                        _preprocess_film)
RECONSTRUCT = Stage("reconstruct", "volume", ("preprocessed",), "reconstruction", "iterative", _reconstruct)
RECONSTRUCT_ANGLES = Stage("reconstruct-angles", "volume", ("preprocessed",), "reconstruction with angle refinement",
                           "iterative", _reconstruct_angles)
RECONSTRUCT_SCANNING = Stage("reconstruct-scanning", "volume", ("preprocessed",),
                             "scanning AET: local sub-volumes, stitched", "iterative", _reconstruct_scanning)
TRACE = Stage("trace", "candidates", ("volume",), "tracing", "graph", _trace, species=True)
CLASSIFY = Stage("classify", "atoms", ("candidates",), "classification", "client", _classify, species=True)
# the products it reads, the one before it in the chain last (its record is the stage's upstream)
REFINE = Stage("refine", "refined", ("raw", "preprocessed", "candidates", "atoms"),
               "coordinate refinement against the counts", "client", _refine)

STAGES = (IMPORT, PTYCHO, PREPROCESS, PREPROCESS_FILM, RECONSTRUCT, RECONSTRUCT_ANGLES, RECONSTRUCT_SCANNING, TRACE,
          CLASSIFY, REFINE)
MODALITIES = ("adf", "ptycho")
#: ``name → Stage``
BY_NAME = {st.name: st for st in STAGES}

#: Products that hold an atomic model made by the chain, the most refined first.
MODEL_PRODUCTS = ("refined", "atoms", "candidates")


def is_current(store: RunStore, product: str) -> bool:
    """Whether ``product`` was made from what ``store`` holds now: the fingerprint its record was made from
    (``upstream``) is that of the product its stage read last, and so on up the chain.

    A product run alone (``aetdask classify``) leaves the products after it in the chain stale: e.g. a
    ``refined`` model of the atoms before they were classified again. A product without a record (written
    by a simulation or by hand) or with a record from before ``upstream`` was recorded counts as current.
    """
    seen = set()
    while product not in seen:
        seen.add(product)
        record = store.record(product) if product in store else None
        stage = BY_NAME.get((record or {}).get("stage"))
        if record is None or stage is None or not stage.reads or "upstream" not in record:
            return True
        before = stage.reads[-1]
        if before not in store:
            return False
        if (store.record(before) or {}).get("fingerprint", f"unrecorded {before}") != record["upstream"]:
            return False
        product = before
    return True


def result_model(store: RunStore, products=MODEL_PRODUCTS) -> str | None:
    """The product that is the store's result: the first of ``products`` (by default the most refined model)
    that the store holds and that is current (:func:`is_current`); None when there is none."""
    return next((p for p in products if p in store and is_current(store, p)), None)


def chain(modality: str = "adf", *, refine_angles: bool = False, scanning: bool = False) -> tuple[Stage, ...]:
    """The stages a modality runs, in order; :class:`~aetdask.errors.InputError` for a combination that has none.

    >>> [s.name for s in chain()]
    ['import', 'preprocess', 'reconstruct', 'trace', 'classify', 'refine']
    >>> [s.product for s in chain(scanning=True)]
    ['raw', 'preprocessed', 'volume', 'candidates', 'atoms']
    """
    if modality not in MODALITIES:
        raise InputError(f"modality: {modality!r} is not one of {MODALITIES}")
    if modality == "ptycho":
        if scanning or refine_angles:
            raise InputError("run: --modality ptycho cannot be combined with --scanning or --refine-angles: phase "
                             "projections are reconstructed and traced whole, with the angles given")
        # no refinement against counts: its forward model is ADF-STEM counts
        return (PTYCHO, PREPROCESS, RECONSTRUCT, TRACE, CLASSIFY)
    if scanning:
        if refine_angles:
            raise InputError("run: --scanning and --refine-angles cannot be combined (angle refinement needs the "
                             "whole object in every projection)")
        # no refinement against counts: each projection also sees film outside the reconstructed band
        return (IMPORT, PREPROCESS_FILM, RECONSTRUCT_SCANNING, TRACE, CLASSIFY)
    return (IMPORT, PREPROCESS, RECONSTRUCT_ANGLES if refine_angles else RECONSTRUCT, TRACE, CLASSIFY, REFINE)
