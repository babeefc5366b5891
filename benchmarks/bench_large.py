"""Accuracy at the realistic size: a 20,000-atom a-Si particle that fills a 290² field, at low dose.

    python benchmarks/bench_large.py [--dose 8e3 1.6e4] [--shifts 3] [--model FILE|copdpt] [--work DIR]
        [--config FILE.yaml] [--score-only] [--preprocess-only] [--until reconstruct|trace|classify]

Simulates the tilt series with the linear ADF model (seeded Poisson counts, 1 e⁻/px background):
the seed paper's 19,993-atom a-Si ground truth (``aSi9nm_model_GT.txt``) when ``../shared`` is
there, else a 20,000-atom random particle of the same radius (45 Å); 290 × 290 px at 0.347 Å,
the seed's 60 angles (θ = 0:3:177°). The model is centred on its ADF-weighted centroid, so an
aligned series has zero shifts. ``--shifts S`` moves every projection by a random whole number of
pixels in [−S, S] along each axis (seeded; simulated on a field 2S wider and cropped, so no signal
wraps round), so alignment has work to do.

``--model copdpt`` takes the seed paper's 18,356-atom CoPdPt model instead (Co, Pd and Pt, as
stored), its 55 true angles (φ and ψ not zero) and a 280² field: a heavier particle filling the
field, for the alignment and the noise estimate (``--preprocess-only --dose 1.7e4``).

Then runs ``aetdask run`` with no tuning (a subprocess: local Dask cluster, run store on disk) and
prints, stage by stage, what each stage got right against the truth:

* preprocessing — recorded shifts against the true ones (RMS per axis; what a translation of the
  whole object would explain is only a translation of the reconstruction and is not counted), the noise model (α, σ) against
  the truth (1, 0), the scales;
* tracing — candidates within 0.5 Å of a true atom, and true atoms with a candidate that close;
* classification — atoms kept, how many of them are real, how many true atoms they cover;
* coordinate refinement — atoms dropped and added by the likelihood test, and how many of each
  were real;
* the final model — the paper's identification and precision (cutoff 1.0 Å, the paper's for this
  particle) and the strict one-to-one match;
* the information limit — for every true atom, the likelihood gain it brings given every other atom
  exactly (noise-free mean of the others, its own image fitted by two concentric Gaussians): the
  share above the refinement's selection threshold is what a per-atom test at that false-alarm
  level identifies even knowing everything else, so it says whether a goal is within what the counts
  carry; and each true atom's Cramér–Rao bound, the least 3-D RMS error of its position that an
  unbiased fit of these counts can have even given everything else (so the precision goal's limit).

With ``--work DIR`` the tilt series and run store are kept there and a second call resumes the run
(``--score-only`` scores what the store holds without running). Times per stage come from the
store's ``run.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import time

import numpy as np

SEED_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference" / "seed-paper"
PIXEL, SHAPE, N_ATOMS, RADIUS, CUTOFF, NEAR = 0.347, 290, 20_000, 45.0, 1.0, 0.5


def truth_model(path):
    """The ground truth, centred on its ADF-weighted centroid (where every projection's centre of mass is)."""
    from aetdask import config, physics
    from aetdask.schema import atoms as make_atoms

    if path == "copdpt":  # the seed paper's CoPdPt model (ref. 25's metallic glass, 3 types), as stored
        import scipy.io

        pos = scipy.io.loadmat(SEED_DIR / "MG_final_atom_coord_inA.mat")["final_atom_coord_inAngstrom"].T
        types = scipy.io.loadmat(SEED_DIR / "MG_final_atom_types.mat")["final_atom_types"].ravel()
        model = make_atoms(pos.astype(float), np.array(["Co", "Pd", "Pt"])[types - 1])
        source = "MG_final_atom_coord_inA.mat"
    elif path is not None and pathlib.Path(path).exists():
        if pathlib.Path(path).suffix == ".txt":  # the seed paper's layout: Z x y z c5 c6
            pos = np.loadtxt(path)[:, 1:4]
            model = make_atoms(pos, ["Si"] * len(pos))
        else:
            from aetdask.io import read_atoms

            model = read_atoms(path)
        source = pathlib.Path(path).name
    else:
        from aetdask.simulate import amorphous_particle

        model = amorphous_particle(N_ATOMS, species=["Si"], radius=RADIUS, seed=0)
        source = f"random particle ({N_ATOMS} Si, radius {RADIUS} Å, seed 0)"
    params = {k: config.get(f"simulate.{k}") for k in ("energy", "semiangle", "detector", "blur")}
    weight = {s: float(physics.adf_transfer(s, np.zeros(1), **params)[0]) for s in np.unique(model.species.values)}
    w = np.array([weight[s] for s in model.species.values])
    pos = model.position.values
    model["position"] = (("atom", "xyz"), pos - (w[:, None] * pos).sum(axis=0) / w.sum())
    return model, source


def simulate(model, dose, shifts, work, copdpt=False):
    """Raw counts (seeded) and the shifts applied (what the alignment should record: their negative)."""
    from aetdask.io import read_angles
    from aetdask.simulate import linear

    if copdpt:  # the true angles of the paper's CoPdPt series (55, φ and ψ not zero)
        angles = read_angles(SEED_DIR / "CoPdPt_Angle_Dose1p7e4.mat")
    elif (SEED_DIR / "Si_Angle.mat").exists():
        angles = read_angles(SEED_DIR / "Si_Angle.mat")
    else:
        angles = np.c_[np.zeros(60), np.arange(0, 180, 3.0), np.zeros(60)]
    shape = 280 if copdpt else SHAPE
    tilts = work / f"tilts_{'copdpt_' if copdpt else ''}{dose:.1e}_shift{shifts}.npy"
    applied = np.zeros((len(angles), 2), dtype=int)
    if shifts:
        applied = np.random.default_rng(7).integers(-shifts, shifts + 1, size=(len(angles), 2))
    if not tilts.exists():
        # a wider field, cropped where each projection's shift puts it: no signal wraps round the edges
        wide = shape + 2 * shifts
        counts = linear(model, angles=angles, pixel_size=PIXEL, shape=wide, dose=dose, seed=1).compute().values
        counts = np.stack([c[shifts - sy:shifts - sy + shape, shifts - sx:shifts - sx + shape]
                           for c, (sy, sx) in zip(counts, applied)])
        np.save(tilts, counts.astype(np.float32))
    np.savetxt(work / f"angles{'_copdpt' if copdpt else ''}.txt", angles, header="phi theta psi (degrees)")
    return tilts, work / f"angles{'_copdpt' if copdpt else ''}.txt", applied, shape


def atom_profile(species, dose, components=2):
    """One atom's image in the simulation (angle 0, no noise, no background) as concentric Gaussians:
    heights (counts) and widths (px), fitted by least squares."""
    from scipy.optimize import least_squares

    from aetdask.schema import atoms as make_atoms
    from aetdask.simulate import linear

    n = 41
    img = linear(make_atoms([[0.0, 0.0, 0.0]], [species]), angles=[0.0], pixel_size=PIXEL, shape=n, dose=dose,
                 poisson=False, background=0.0).compute().values[0].astype(float)
    yy, xx = np.mgrid[:n, :n] - n // 2
    r2 = (yy**2 + xx**2).ravel()

    def resid(p):
        h, s = p[:components], p[components:]
        return (h[None, :] * np.exp(-r2[:, None] / (2 * s[None, :] ** 2))).sum(axis=1) - img.ravel()

    p0 = np.r_[np.full(components, img.max() / components), 1.5 * 2.0 ** np.arange(components)]
    fit = least_squares(resid, p0, bounds=(np.r_[np.zeros(components), np.full(components, 0.3)], np.inf))
    return fit.x[:components], fit.x[components:], float(img.sum())


def information_limit(model, tilts, angles, dose, shape):
    """What the counts can support: for every true atom, the likelihood gain it brings given every other
    atom exactly (its image from :func:`atom_profile`, the noise-free mean of all the others), in
    these counts and in expectation; the share above the coordinate refinement's selection threshold is
    the identification a per-atom test at that level reaches even knowing everything else. Also each
    true atom's Cramér–Rao bound: the 3-D RMS error (Å) no unbiased estimate of its position can beat
    in these counts, even given every other atom and parameter exactly (the information of its own
    image against the noise-free mean, :func:`~aetdask.kernels.atoms.gaussian_atoms.fisher_blocks`)."""
    from aetdask.geometry import projection_matrices
    from aetdask.io import read_angles
    from aetdask.kernels.atoms.gaussian_atoms import fisher_blocks, likelihood_change
    from aetdask.model.refine import selection_threshold
    from aetdask.simulate import linear

    euler = np.asarray(read_angles(angles), dtype=float).reshape(-1, 3)
    z = np.load(tilts).astype(np.float64)
    mean = linear(model, angles=euler, pixel_size=PIXEL, shape=shape, dose=dose, poisson=False).compute().values
    mean = np.maximum(mean.astype(np.float64), 1e-12)
    pos = model.position.values
    species = model.species.values.astype(str)
    matrices = projection_matrices(euler)
    det = np.einsum("tij,nj->tni", matrices, pos)[..., [1, 0]] / PIXEL + shape // 2
    jac = matrices[:, [1, 0], :] / PIXEL  # detector pixels (row, column) per Å
    gain, expected, bound = np.zeros(len(pos)), np.zeros(len(pos)), np.zeros(len(pos))
    for s in np.unique(species):
        sel = species == s
        h, w, _ = atom_profile(s, dose)
        args = (det[:, sel], -np.repeat(h[None], sel.sum(), 0), np.repeat(w[None], sel.sum(), 0), np.ones(len(z)))
        gain[sel] = likelihood_change(z, mean, *args)
        expected[sel] = likelihood_change(mean, mean, *args)
        info = np.einsum("tai,tnab,tbj->nij", jac, fisher_blocks(mean, det[:, sel], *args[1:]), jac)
        bound[sel] = np.sqrt(np.trace(np.linalg.inv(info), axis1=1, axis2=2))
    return gain, expected, bound, selection_threshold()


def near_counts(product, truth, shift):
    """(product atoms within NEAR of a true atom, true atoms within NEAR of a product atom)."""
    from scipy.spatial import cKDTree

    p = product.position.values + shift
    t = truth.position.values
    d_p, _ = cKDTree(t).query(p)
    d_t, _ = cKDTree(p).query(t)
    return int((d_p <= NEAR).sum()), int((d_t <= NEAR).sum())


def rms(v):
    return float(np.sqrt(np.mean(np.square(v))))


def score(store_path, truth, applied, out):
    from aetdask.evaluate import evaluate
    from aetdask.io import RunStore
    from aetdask.schema import last_record

    store = RunStore(store_path, create=False)
    stages = (store.read_json("run.json") or {}).get("stages", {})  # none after import + preprocess
    n_true = truth.sizes["atom"]
    report = {"stages_s": {k: round(v.get("seconds", 0.0), 1) for k, v in stages.items()}}
    if "preprocessed" in store:
        pre = store.read("preprocessed")
        from aetdask.geometry import remove_rigid_motion, rigid_motion_basis

        err = np.c_[pre.shift_y.values, pre.shift_x.values] + applied
        # a translation of the whole object is not observable (it only moves the reconstruction)
        err = remove_rigid_motion(err, rigid_motion_basis(np.c_[pre.phi, pre.theta, pre.psi])[1])
        a, s = pre.noise_alpha.values, pre.noise_sigma.values
        cut = int(pre.edge_cut.values.sum()) if "edge_cut" in pre.coords else 0
        out(f"  preprocessing: shift error {rms(err[:, 0]):.3f} px RMS across the tilt axis (y), "
            f"{rms(err[:, 1]):.3f} px along it (x), largest {np.abs(err).max():.2f} px; "
            f"α {np.median(a):.3f} ({a.min():.3f}–{a.max():.3f}, truth 1), σ {np.median(s):.3f} "
            f"({s.min():.3f}–{s.max():.3f}, truth 0); scales {pre.scale.values.min():.3f}–{pre.scale.values.max():.3f}; "
            f"{cut} projections cut by the field's edge")
        report["preprocessing"] = {"shift_error_px_rms": [rms(err[:, 0]), rms(err[:, 1])],
                                   "alpha": [float(np.median(a)), float(a.min()), float(a.max())],
                                   "sigma": [float(np.median(s)), float(s.min()), float(s.max())], "edge_cut": cut}
    if "volume" in store:
        rec = last_record(store.read("volume"), ("reconstruct",)) or {}
        out(f"  reconstruction: {rec.get('method')}, {rec.get('iterations_run')} iterations, "
            f"R = {rec.get('r_final', float('nan')):.4f}")
    shift = None
    final = next((p for p in ("refined", "atoms", "candidates") if p in store), None)
    if final is not None:
        result = evaluate(store.read(final), truth, CUTOFF)
        shift = np.asarray(result["shift"])
    if "candidates" in store:
        cand = store.read("candidates")
        good, covered = near_counts(cand, truth, shift)
        out(f"  tracing: {cand.sizes['atom']} candidates, {good} within {NEAR} Å of a true atom; "
            f"{covered} of {n_true} true atoms ({100 * covered / n_true:.1f} %) have one that close")
        report["tracing"] = {"candidates": cand.sizes["atom"], "near_true": good, "true_covered": covered}
    if "atoms" in store:
        atoms = store.read("atoms")
        good, covered = near_counts(atoms, truth, shift)
        out(f"  classification: {atoms.sizes['atom']} atoms kept ({atoms.sizes['atom'] / n_true:.2f} × the truth's "
            f"count), {good} of them within {NEAR} Å of a true atom; they cover {100 * covered / n_true:.1f} % of the truth")
        report["classification"] = {"atoms": atoms.sizes["atom"], "near_true": good, "true_covered": covered}
    if "refined" in store:
        ref = store.read("refined")
        rec = last_record(ref, ("refine",)) or {}
        sel = rec.get("selection") or []
        good, covered = near_counts(ref, truth, shift)
        added = ref.isel(atom=np.flatnonzero(ref.flag.values == 1))
        good_added = near_counts(added, truth, shift)[0] if added.sizes["atom"] else 0
        dropped = sum(r["removed"] for r in sel)
        thresholds = ", ".join(f"{r['threshold']:.1f}" for r in sel)
        tests = ", ".join(str(r["tested"]) for r in sel)
        out(f"  coordinate refinement: likelihood test dropped {dropped} atoms and added {sum(r['added'] for r in sel)} "
            f"(thresholds {thresholds} over {tests} tests); {added.sizes['atom']} added atoms kept, {good_added} of them real; "
            f"{ref.sizes['atom']} atoms, {good} within {NEAR} Å of a true atom")
        report["refinement"] = {"dropped": dropped, "added": int(added.sizes["atom"]), "added_real": good_added,
                                "atoms": ref.sizes["atom"], "near_true": good}
    if final is not None:
        o, s = result["overall"], result["strict"]
        out(f"  final model ({final}): paper metric {o['identification_pct']:.1f} % ({o['matched']}/{o['truth']}) "
            f"at {o['precision_pm']:.1f} pm; strict TP {s['true_positives']} FP {s['false_positives']} "
            f"FN {s['false_negatives']}, {s['precision_pm']:.1f} pm")
        report["final"] = {"product": final, "identification_pct": o["identification_pct"],
                           "precision_pm": o["precision_pm"], "matched": o["matched"],
                           "strict": {k: s[k] for k in ("true_positives", "false_positives", "false_negatives")}}
    out("  stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in report["stages_s"].items()))
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dose", type=float, nargs="+", default=[8.0e3, 1.6e4], help="e⁻/Å² per projection")
    ap.add_argument("--shifts", type=int, default=0, help="random whole-pixel shifts in [−S, S] per axis")
    ap.add_argument("--model", default=str(SEED_DIR / "aSi9nm_model_GT.txt"),
                    help="ground-truth atoms (default: the seed paper's 19,993-atom a-Si; a random particle if absent), "
                         "or 'copdpt': the seed paper's 18,356-atom CoPdPt model, its 55 true angles, 280² px")
    ap.add_argument("--work", help="keep the tilt series and run stores here (a second call resumes)")
    ap.add_argument("--config", metavar="FILE", help="YAML file of aetdask parameters, passed to the command")
    ap.add_argument("--score-only", action="store_true", help="score the stores in --work without running")
    ap.add_argument("--preprocess-only", action="store_true",
                    help="import and preprocess only (alignment and noise estimate; with --shifts, minutes not hours)")
    ap.add_argument("--until", choices=["reconstruct", "trace", "classify"],
                    help="run the stages one command each up to this one and stop before the coordinate refinement "
                         "(tracing and classification can then be re-run and scored in minutes)")
    args = ap.parse_args()
    import tempfile

    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="aetdask-large-"))
    work.mkdir(parents=True, exist_ok=True)
    model, source = truth_model(args.model)
    reports = {}
    for dose in args.dose:
        copdpt = args.model == "copdpt"
        tilts, angles, applied, shape = simulate(model, dose, args.shifts, work, copdpt)
        store = work / f"run_{'copdpt_' if copdpt else ''}{dose:.1e}_shift{args.shifts}.zarr"
        species = ",".join(np.unique(model.species.values.astype(str)))
        print(f"{model.sizes['atom']} {species} atoms ({source}), {shape}² px at {PIXEL} Å, {len(applied)} projections, "
              f"{dose:.2g} e⁻/Å²"
              + (f", shifts of up to ±{args.shifts} px" if args.shifts else ", aligned"))
        if not args.score_only:
            aet = [sys.executable, "-m", "aetdask.cli"]
            config = ["--config", str(args.config)] if args.config else []
            if args.preprocess_only or args.until:  # stage by stage, stopping early
                cmds = [] if store.exists() else [aet + ["import", str(tilts), "--angles", str(angles), "--pixel-size",
                                                        str(PIXEL), "--out", str(store)]]
                cmds.append(aet + ["preprocess", str(store)] + config)
                if not args.preprocess_only:
                    stages = ["reconstruct", "trace", "classify"]
                    for stage in stages[:stages.index(args.until) + 1]:
                        cmds.append(aet + [stage, str(store)] + (["--species", species] if stage == "trace" else [])
                                    + config)
            else:
                cmds = [aet + ["run", str(tilts), "--angles", str(angles), "--pixel-size", str(PIXEL), "--species", species,
                               "--out", str(store)] + config]
            t0 = time.perf_counter()
            for cmd in cmds:
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"aetdask {cmd[3]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            wall = time.perf_counter() - t0
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            print(f"  wall {wall:.0f} s (command, cluster start included); peak RSS of one process {peak:.0f} MiB")
        reports[f"{dose:.2g}"] = score(store, model, applied, print)
        if not (args.preprocess_only or args.until):
            gain, expected, bound, threshold = information_limit(model, tilts, angles, dose, shape)
            share = float(np.mean(gain > threshold))
            print(f"  information limit: given every other atom exactly, {100 * share:.1f} % of the true atoms gain more "
                  f"than the selection threshold ({threshold:.2f}) in these counts; expected gain median "
                  f"{np.median(expected):.1f}, 5th percentile {np.percentile(expected, 5):.1f}; Cramér–Rao bound of "
                  f"the precision {100 * rms(bound):.1f} pm RMS (3-D; {100 * np.percentile(bound, 5):.1f}–"
                  f"{100 * np.percentile(bound, 95):.1f} pm, 5th–95th percentile)")
            reports[f"{dose:.2g}"]["information_limit"] = {
                "share_above_threshold": share, "threshold": threshold,
                "expected_gain_median": float(np.median(expected)), "expected_gain_p5": float(np.percentile(expected, 5)),
                "precision_bound_pm": 100 * rms(bound)}
    print(json.dumps(reports))


if __name__ == "__main__":
    main()
