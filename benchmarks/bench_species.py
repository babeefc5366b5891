"""Species with confidence: K-means against the mixture's posteriors on a simulated Co/Pd/Pt particle.

    python benchmarks/bench_species.py [--seed-dir DIR] [--radius 15] [--dose 1.7e4] [--refine]

A spherical cut (``--radius`` Å, about the centre) of the seed paper's CoPdPt metallic-glass model
(``MG_final_atom_coord_inA.mat``, ``MG_final_atom_types.mat``) is simulated with the linear ADF model
(seeded) at the paper's true angles (``CoPdPt_Angle_Dose1p7e4.mat``, 55 projections), 0.347 Å pixels
and ``--dose`` e⁻/Å², and run through the pipeline up to the traced candidates (with ``--refine`` to the
refined model, the classification being ``classify.method``'s). The candidates are then classified
both ways (``classify.method`` kmeans — the paper's scheme, one and two passes — and mixture) and
scored against the truth: every truth atom is matched one-to-one (Hungarian, ≤ ``--cutoff`` Å) to a
candidate, the unmatched candidates are non-atoms. Printed per method: per-species identification
(truth atoms found with the right species), false atoms, the paper's metric on the classified atoms,
and for the mixture the reliability of its posteriors — atoms binned by the probability of the class
they are given, against the fraction of them that is right — and the same over every (candidate,
class) pair.
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

import numpy as np


def truth_classes(cand_pos, truth_pos, truth_species, names, cutoff):
    """Class index (0 non-atom, 1… ``names``) of every candidate: that of the truth atom it is matched to."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial import cKDTree

    n, m = len(cand_pos), len(truth_pos)
    d = np.full((n, m), 1e6)
    tree = cKDTree(truth_pos)
    pairs = tree.query_ball_point(cand_pos, cutoff)
    for i, js in enumerate(pairs):
        for j in js:
            d[i, j] = np.linalg.norm(cand_pos[i] - truth_pos[j])
    rows, cols = linear_sum_assignment(d)
    ok = d[rows, cols] <= cutoff
    cls = np.zeros(n, dtype=int)
    index = {s: k + 1 for k, s in enumerate(names)}
    cls[rows[ok]] = [index[s] for s in np.asarray(truth_species)[cols[ok]]]
    return cls


def reliability(p_given, right, edges=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0001)):
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (p_given >= lo) & (p_given < hi)
        if sel.any():
            rows.append((lo, min(hi, 1.0), int(sel.sum()), float(p_given[sel].mean()), float(right[sel].mean())))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed-dir", default=str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference"
                                              / "seed-paper"))
    ap.add_argument("--radius", type=float, default=15.0, help="Å, radius of the spherical cut of the model")
    ap.add_argument("--dose", type=float, default=1.7e4)
    ap.add_argument("--seed", type=int, default=0, help="seed of the Poisson noise")
    ap.add_argument("--cutoff", type=float, default=1.0, help="Å, one-to-one match of candidates to truth atoms")
    ap.add_argument("--refine", action="store_true", help="run the coordinate refinement too")
    ap.add_argument("--out", default=None, help="run store (default: a temporary folder)")
    args = ap.parse_args()

    from aetdask import config
    from aetdask import pipeline
    from aetdask.evaluate import evaluate
    from aetdask.io import RunStore, read_angles, read_atoms
    from aetdask.model import classify
    from aetdask.model.classify import class_probabilities
    from aetdask.schema import atoms
    from aetdask.simulate import linear

    seed = pathlib.Path(args.seed_dir)
    names = ["Co", "Pd", "Pt"]
    model = read_atoms(seed / "MG_final_atom_coord_inA.mat", species=names, types=seed / "MG_final_atom_types.mat")
    pos = model.position.values
    inside = np.linalg.norm(pos - pos.mean(0), axis=1) <= args.radius
    truth = atoms(pos[inside] - pos[inside].mean(0), model.species.values[inside])
    counts = {s: int(np.sum(truth.species.values == s)) for s in names}
    angles = read_angles(seed / "CoPdPt_Angle_Dose1p7e4.mat")
    pixel = 0.347
    shape = int(2 * np.ceil((2 * args.radius + 12) / pixel / 2 / 8) * 8)
    print(f"truth: spherical cut r = {args.radius:g} Å of the CoPdPt model: {truth.sizes['atom']} atoms {counts}; "
          f"{len(angles)} projections, {shape}² px of {pixel} Å, {args.dose:g} e⁻/Å², noise seed {args.seed}")
    ts = linear(truth, angles=angles, pixel_size=pixel, shape=shape, dose=args.dose, seed=args.seed).compute()
    out = pathlib.Path(args.out) if args.out else pathlib.Path(tempfile.mkdtemp(prefix="aetdask-species-")) / "r.zarr"
    t0 = time.perf_counter()
    if args.refine:
        pipeline.run(ts, out, names, progress=False, echo=lambda *a: None)
    else:
        with config.set({"refine_atoms.iterations": 1}):  # the chain to the candidates; refinement barely runs
            pipeline.run(ts, out, names, progress=False, echo=lambda *a: None)
    print(f"pipeline: {time.perf_counter() - t0:.1f} s ({'with' if args.refine else 'without'} refinement)")
    store = RunStore(out, create=False)
    cand = store.read("candidates").load()
    cls = truth_classes(cand.position.values, truth.position.values, truth.species.values, names, args.cutoff)
    print(f"candidates: {cand.sizes['atom']}, of them {int(np.sum(cls > 0))} matched to truth atoms "
          f"(≤ {args.cutoff} Å; {truth.sizes['atom'] - int(np.sum(cls > 0))} truth atoms without a candidate)")
    if args.refine:
        r = evaluate(store.read("refined"), truth, 1.5)
        print("refined (" + str(config.get("classify.method")) + "), paper metric 1.5 Å: " + ", ".join(
            f"{s} {v['identification_pct']:.1f} % {v['precision_pm']:.1f} pm" for s, v in r["species"].items())
            + f"; strict FP {r['strict']['false_positives']} FN {r['strict']['false_negatives']}")

    for label, kw in [("kmeans, 1 pass", {"method": "kmeans", "passes": 1}),
                      ("kmeans, 2 passes", {"method": "kmeans", "passes": 2}),
                      ("mixture (log-normal non-atoms)", {"method": "mixture", "noise_model": "lognormal"}),
                      ("mixture (Gaussian non-atoms)", {"method": "mixture", "noise_model": "gaussian"})]:
        t = time.perf_counter()
        at = classify(cand, names, **kw)
        dt = time.perf_counter() - t
        prob = class_probabilities(cand, names, **kw).values  # every candidate's, the non-atoms too
        given = prob.argmax(1)
        print(f"\n== {label} ({dt:.2f} s)")
        parts = []
        for k, s in enumerate(names, start=1):
            parts.append(f"{s} {np.sum((cls == k) & (given == k))}/{counts[s]} "
                         f"({100 * np.sum((cls == k) & (given == k)) / counts[s]:.1f} %)")
        false = int(np.sum((cls == 0) & (given > 0)))
        missed = int(np.sum((cls > 0) & (given == 0)))
        wrong = int(np.sum((cls > 0) & (given > 0) & (cls != given)))
        print("  identified with the right species: " + ", ".join(parts)
              + f"; wrong species {wrong}, atoms called non-atom {missed}, non-atoms called atoms {false}")
        r = evaluate(at, truth, 1.5)
        print("  paper metric (classified atoms, 1.5 Å): " + ", ".join(
            f"{s} {v['identification_pct']:.1f} %" for s, v in r["species"].items())
            + f"; strict FP {r['strict']['false_positives']} FN {r['strict']['false_negatives']}")
        if kw["method"] == "mixture":
            p_given = prob.max(1)
            right = given == cls
            print("  reliability of the class given (all candidates): p bin | n | mean p | fraction right")
            for lo, hi, n, mp, fr in reliability(p_given, right):
                print(f"    [{lo:.2f}, {hi:.2f})  {n:5d}  {mp:.3f}  {fr:.3f}")
            amb = p_given < 0.99
            print(f"  {int(amb.sum())} candidates with p < 0.99: expected errors Σ(1 − p) = {np.sum(1 - p_given):.1f},"
                  f" actual errors {int(np.sum(~right))}")
            flat_p, flat_y = prob.ravel(), (np.eye(len(names) + 1)[cls]).ravel()
            print("  every (candidate, class) pair: p bin | n | mean p | fraction true")
            for lo, hi, n, mp, fr in reliability(flat_p, flat_y.astype(bool),
                                                 edges=(0.0, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0001)):
                print(f"    [{lo:.2f}, {hi:.2f})  {n:5d}  {mp:.3f}  {fr:.3f}")
            print(f"  Brier score {np.mean(np.sum((prob - np.eye(len(names) + 1)[cls]) ** 2, axis=1)):.4f}")


if __name__ == "__main__":
    main()
