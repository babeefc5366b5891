"""Evaluation of a traced atomic model against the ground truth."""

from __future__ import annotations

import math
import pathlib
import warnings

import numpy as np
import xarray as xr

from aetdask import config
from aetdask.errors import InputError
from aetdask.kernels.atoms.metrics import paper_match, strict_match
from aetdask.plausibility import PlausibilityWarning, check_atom_distances
from aetdask.schema import validate_atoms

def load_model(model, products=None) -> xr.Dataset:
    """An atomic model from a Dataset, an atom file, or a run store: by default the store's result
    (:func:`aetdask.stages.result_model`: its most refined current model), else its truth; with ``products``
    the first of them it holds (``("truth",)`` for the ground truth it was simulated from)."""
    if isinstance(model, xr.Dataset):
        return model
    from aetdask.io import RunStore, read_atoms

    path = pathlib.Path(model)
    if path.is_dir():
        from aetdask.stages import result_model

        store = RunStore(path, create=False)
        if products is None:
            name = result_model(store) or ("truth" if "truth" in store else None)
        else:
            name = next((p for p in products if p in store), None)
        if name is None:
            raise InputError(f"{path}: the run store holds no atomic model yet (it has {store.products()})")
        return store.read(name)
    return read_atoms(path)


def scanned_region(store) -> tuple[np.ndarray, np.ndarray] | None:
    """(lower, upper) corners (x, y, z) in Å of a run store's scanning-AET volume, else None.

    A film is larger than what scanning AET reconstructs (a band of the field
    of view): only atoms inside that volume can be scored.
    """
    from aetdask.io import RunStore
    from aetdask.schema import last_record

    store = store if isinstance(store, RunStore) else RunStore(store, create=False)
    if "volume" not in store:
        return None
    volume = store.read("volume")
    if not last_record(volume, "reconstruct.scanning"):
        return None
    c = [volume[d].values for d in ("x", "y", "z")]
    return np.array([v.min() for v in c]), np.array([v.max() for v in c])


def _inside(model: xr.Dataset, region) -> xr.Dataset:
    lo, hi = (np.asarray(v, dtype=float) for v in region)
    q = model.position.values
    return model.isel(atom=np.flatnonzero(np.all((q >= lo) & (q <= hi), axis=1)))


def evaluate(traced, truth, cutoff: float, *, center: bool = True, region=None) -> dict:
    """Score a traced model against the truth: the seed paper's rule and a strict one-to-one match.

    Parameters
    ----------
    traced, truth : xr.Dataset, atom file or run store
        Atomic models in the same (sample) frame, positions in Å.
    cutoff : float
        Matching distance (Å); the paper uses 0.9 Å for its 208-atom Si
        particle, 1.0 Å for larger Si and SiO₂, 1.5 Å for SiGeSn and CoPdPt.
    center : bool
        Start from coinciding centroids, as the paper's script does.
    region : (lower, upper), optional
        Corners (x, y, z) in Å: only atoms inside are scored, in both models —
        for a film reconstructed over part of its extent (:func:`scanned_region`);
        the models are then compared where they are (no centring).

    Returns
    -------
    dict
        ``{"species": {sym: {"truth", "traced", "matched", "identification_pct",
        "precision_pm"}}, "overall": {...}, "strict": {"true_positives",
        "false_positives", "false_negatives", "precision_pm", "rmsd_pm",
        "species": {...}}, "shift": [dx, dy, dz], "cutoff": cutoff,
        "errors_pm": [distance of every matched atom to its truth atom]}``

        ``species``/``overall`` follow the paper (nearest truth atom of the same
        species within the cutoff, not one-to-one, translation re-estimated until
        stable; precision = √(Σ var(diff)) in pm), except that a truth atom counts
        once however many traced atoms match it: ``matched`` is the number of
        truth atoms found and identification = matched / truth, never above
        100 % (the paper's count of matched traced atoms, which a duplicated model
        doubles, is ``traced_matched``; the two agree whenever no two traced atoms
        share a truth atom). ``strict`` pairs atoms one-to-one (Hungarian
        assignment) and counts false positives (traced atoms left over) and false
        negatives.

    Raises
    ------
    InputError
        A truth model with two atoms closer than 0.5 Å (an atom written twice);
        atom files are refused for it when read (:func:`aetdask.io.read_atoms`).
        A traced model given as a Dataset or run store is only warned about.

    Examples
    --------
    >>> from aetdask.schema import atoms
    >>> truth = atoms([[0, 0, 0], [3, 0, 0]], ["Si", "Si"])
    >>> evaluate(truth, truth, 0.9)["overall"]["identification_pct"]
    100.0
    """
    if not (isinstance(cutoff, (int, float)) and math.isfinite(cutoff) and cutoff > 0):
        raise InputError(f"cutoff: expected a positive distance in Å, got {cutoff!r}")
    traced, truth = load_model(traced), load_model(truth, products=("truth",))
    validate_atoms(traced, source="traced model")
    validate_atoms(truth, source="truth model", plausible=True)
    check_atom_distances(traced.position.values, source="traced model", warn=True)
    if region is not None:
        traced, truth, center = _inside(traced, region), _inside(truth, region), False
    args = (
        traced.position.values, truth.position.values,
        traced.species.values.astype(str), truth.species.values.astype(str), float(cutoff),
    )
    paper = paper_match(
        *args, center=center,
        tolerance=config.get("evaluate.tolerance"), max_iterations=config.get("evaluate.max_iterations"),
    )
    strict = strict_match(*args, shift=np.asarray(paper["shift"]))
    overall = _count_truth_once(paper["overall"])
    if overall["traced_matched"] > overall["matched"]:
        warnings.warn(
            f"traced model: {overall['traced_matched'] - overall['matched']} of its atoms match a truth atom that "
            "another traced atom matches too; each truth atom counts once in the identification (the strict "
            "match counts the extra ones as false positives)", PlausibilityWarning, stacklevel=2)
    return {
        "species": {s: _count_truth_once(v) for s, v in paper["species"].items()},
        "overall": overall,
        "strict": {**strict["overall"], "species": strict["species"]},
        "shift": [float(v) for v in paper["shift"]],
        "cutoff": float(cutoff),
        "errors_pm": [round(float(e), 3) for e in 100 * np.linalg.norm(paper["diff"][paper["matched_mask"]], axis=1)],
    }


def _count_truth_once(stats: dict) -> dict:
    """The paper's statistics with ``matched`` = truth atoms found (≤ truth) and the paper's count kept
    as ``traced_matched``, so the identification cannot exceed 100 %."""
    n_truth, found = stats["truth"], stats["truth_matched"]
    return {"truth": n_truth, "traced": stats["traced"], "matched": found, "traced_matched": stats["matched"],
            "identification_pct": 100.0 * found / n_truth if n_truth else float("nan"),
            "precision_pm": stats["precision_pm"]}


def to_json(result: dict):
    """Replace NaN with None so the result is strict JSON."""
    if isinstance(result, dict):
        return {k: to_json(v) for k, v in result.items()}
    if isinstance(result, list):
        return [to_json(v) for v in result]
    if isinstance(result, float) and not math.isfinite(result):
        return None
    return result
