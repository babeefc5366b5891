"""Calibration of the refined model's per-atom position σ at the seed paper's geometry.

    python benchmarks/bench_uncertainty.py [--atoms 1000] [--dose 8e3 1.6e4 1.6e5] [--seeds 1]
        [--components 2] [--perturb 0] [--blur Å] [--variants] [--json FILE]

A random a-Si particle (``amorphous_particle``, seed 0) is simulated with the linear ADF model at
the seed paper's geometry (0.347 Å pixels, its 60 angles ``Si_Angle.mat`` when ``../shared`` is
there, else θ = 0:3:177°; a field 12 Å wider than the particle), seeded Poisson counts at each dose,
1 e⁻/px background. The coordinate refinement (``aetdask.model.refine``, no atom selection) starts
from the true positions (``--perturb`` Å of Gaussian noise moves them first) and returns each atom's
σ along x, y, z (``position_sigma``: the sandwich covariance ``I⁻¹ M I⁻¹`` of the joint information of
the atoms that share counts, :mod:`aetdask.model.uncertainty`; ``position_sigma_model``: the
Cramér–Rao bound ``I⁻¹`` alone). Per dose the table gives:

* the RMS σ per axis (pm);
* the standard deviation of error / σ per axis (1 when σ is right; the mean error, the offsets'
  gauge, taken out as the evaluation does), with its sampling error ``1/√(2n)``, over all axes,
  and its robust estimate from the median absolute error / σ (which the tails do not move); the same
  over all axes for the Cramér–Rao σ (``bound``), and with ``--variants`` for the sandwich without
  the neighbours' blocks of M (``M diag``), with the observed information as its bread (``observed``) and
  with the scores of whole projections as M's units (``per projection``);
* the precision the σ predict (``predicted_precision_pm`` of the refine record) and the one the
  evaluation measures against the truth (``aetdask.evaluate``, cutoff 1 Å);
* the bound of ``bench_large.information_limit`` at the truth (every other atom known, the true atom
  profile: each atom's own information) and how much the neighbours raise the σ (``coupling``);
* the time of the refinement, and of the σ within it.

Errors beyond the bound come from what it leaves out: the atom profile's misfit (concentric
Gaussians against the simulated atom images; ``--components 1`` at a high dose, e.g. ``--dose 1e6``,
makes it dominate: the mismatch case; ``--blur`` sets the simulation's blur, Å) and the fitted
background, scales and offsets (of order 1/atoms). The sandwich takes the first in.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

from bench_large import PIXEL, SEED_DIR, information_limit


def seed_angles():
    """The seed paper's 60 a-Si angles (φ, θ, ψ), else θ = 0:3:177°."""
    from aetdask.io import read_angles

    if (SEED_DIR / "Si_Angle.mat").exists():
        return np.asarray(read_angles(SEED_DIR / "Si_Angle.mat"), dtype=float).reshape(-1, 3), "Si_Angle.mat"
    return np.c_[np.zeros(60), np.arange(0, 180, 3.0), np.zeros(60)], "θ = 0:3:177°"


def run(truth, angles, shape, dose, seed, components, perturb, work, blur=None, variants=False):
    """Simulate, refine from the truth, and score one noise draw: a dict of the figures."""
    import importlib

    from aetdask.evaluate import evaluate
    from aetdask.simulate import linear

    refine_module = importlib.import_module("aetdask.model.refine")
    ts = linear(truth, angles=angles, pixel_size=PIXEL, shape=shape, dose=dose, seed=seed, blur=blur).compute()
    start = truth.copy(deep=True)
    if perturb > 0:
        start["position"] = start.position + np.random.default_rng(100 + seed).normal(0, perturb, (truth.sizes["atom"], 3))
    spent, other = [], {}
    covariance = refine_module.position_covariance

    def timed(*args, **kwargs):
        t = time.perf_counter()
        out = covariance(*args, **kwargs)
        spent.append(time.perf_counter() - t)
        if variants:
            other["M diag"] = covariance(*args, score_coupling=False, **kwargs).sigma
            other["expected information"] = covariance(*args, curvature="expected", **kwargs).sigma
            other["per projection"] = covariance(*args, units="projection", **kwargs).sigma
            other["per projection, M diag"] = covariance(*args, units="projection", score_coupling=False, **kwargs).sigma
        return out

    refine_module.position_covariance = timed  # time the σ within the refinement
    try:
        t0 = time.perf_counter()
        out = refine_module.refine_atoms(start, ts, None, select=False, components=components)
        wall = time.perf_counter() - t0
    finally:
        refine_module.position_covariance = covariance
    p = out.attrs["provenance"][-1]["params"]
    d = out.position.values - truth.position.values
    d -= d.mean(axis=0)
    sigma = out.position_sigma.values
    z = d / sigma
    zb = d / out.position_sigma_model.values
    zv = {k: float((d / v).std()) for k, v in other.items()}
    measured = evaluate(out, truth, 1.0)["overall"]["precision_pm"]
    tilts, angle_file = work / f"tilts_{dose:.1e}_{seed}.npy", work / "angles.txt"
    np.save(tilts, ts.values.astype(np.float32))
    np.savetxt(angle_file, angles, header="phi theta psi (degrees)")
    bound = information_limit(truth, tilts, angle_file, dose, shape)[2]
    return {"dose": dose, "seed": seed, "atoms": int(truth.sizes["atom"]),
            "sigma_pm": (100 * np.sqrt(np.mean(sigma**2, axis=0))).tolist(),
            "z_std": z.std(axis=0).tolist(), "z_std_all": float(z.std()), "z_values": int(z.size),
            "z_robust": float(1.4826 * np.median(np.abs(z - np.median(z)))),
            "z_kurtosis": float(np.mean(z**4) / np.mean(z**2) ** 2),
            "z_std_bound": float(zb.std()), "z_std_bound_axes": zb.std(axis=0).tolist(), "z_std_variants": zv,
            "estimator": p.get("position_sigma_estimator"), "predicted_bound_pm": p.get("predicted_precision_model_pm"),
            "inflation": p.get("position_sigma_inflation"),
            "predicted_pm": p["predicted_precision_pm"], "measured_pm": measured,
            "independent_bound_pm": float(100 * np.sqrt(np.mean(bound**2))),
            "coupling": p["position_sigma_coupling"], "radius": p["position_sigma_radius"],
            "refine_s": wall, "sigma_s": float(sum(spent))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--atoms", type=int, default=1000, help="atoms in the simulated a-Si particle")
    ap.add_argument("--dose", type=float, nargs="+", default=[8e3, 1.6e4, 1.6e5], help="e⁻/Å² per projection")
    ap.add_argument("--seeds", type=int, default=1, help="noise draws per dose")
    ap.add_argument("--components", type=int, default=2, help="Gaussians per atom profile in the refinement")
    ap.add_argument("--perturb", type=float, default=0.0, help="Å of Gaussian noise on the starting positions")
    ap.add_argument("--blur", type=float, default=None, help="the simulation's blur (Å; default its configuration's)")
    ap.add_argument("--variants", action="store_true",
                    help="also the sandwich without the neighbours' blocks of M and with the expected information")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()
    from aetdask.simulate import amorphous_particle

    truth = amorphous_particle(args.atoms, species=["Si"], seed=0)
    angles, source = seed_angles()
    extent = float(np.linalg.norm(truth.position.values, axis=1).max())
    shape = int(np.ceil(2 * (extent + 6.0) / PIXEL))
    print(f"{args.atoms} Si atoms (random particle, radius {extent:.1f} Å), {len(angles)} projections ({source}), "
          f"{shape}² px at {PIXEL} Å; refinement from the truth{f' + {args.perturb} Å' if args.perturb else ''}, "
          f"{args.components} Gaussian(s) per atom{f', blur {args.blur} Å' if args.blur is not None else ''}")
    head = (f"{'dose':>8} {'seed':>4} | {'σ_x':>6} {'σ_y':>6} {'σ_z':>6} pm | {'std(err/σ) x':>12} {'y':>6} {'z':>6}"
            f" {'all':>6} {'robust':>6} {'bound':>6} | {'predicted':>9} {'bound':>6} {'measured':>8} {'indep.':>7} pm"
            f" | {'coupling':>8} | "
            f"{'refine':>7} {'σ':>5}")
    print(head)
    print("-" * len(head))
    rows = []
    with tempfile.TemporaryDirectory(prefix="aetdask-sigma-") as tmp:
        for dose in args.dose:
            for seed in range(1, args.seeds + 1):
                r = run(truth, angles, shape, dose, seed, args.components, args.perturb, pathlib.Path(tmp), args.blur,
                        args.variants)
                rows.append(r)
                sx, sy, sz = r["sigma_pm"]
                zx, zy, zz = r["z_std"]
                print(f"{dose:8.2g} {seed:4d} | {sx:6.2f} {sy:6.2f} {sz:6.2f}    | {zx:12.3f} {zy:6.3f} {zz:6.3f}"
                      f" {r['z_std_all']:6.3f} {r['z_robust']:6.3f} {r['z_std_bound']:6.3f} | {r['predicted_pm']:9.2f}"
                      f" {r['predicted_bound_pm']:6.2f} {r['measured_pm']:8.2f} "
                      f"{r['independent_bound_pm']:7.2f}    | {r['coupling']:8.3f} | {r['refine_s']:6.0f}s {r['sigma_s']:4.0f}s",
                      flush=True)
                if r["z_std_variants"]:
                    variants = ", ".join(f"{k} {v:.3f}" for k, v in r["z_std_variants"].items())
                    print("         variants, std(err/σ) all: " + variants,
                          flush=True)
    n = rows[0]["z_values"] // 3
    print(f"std(err/σ) is 1 for a calibrated σ, ± {1 / np.sqrt(2 * n):.3f} (one axis) from sampling alone; 'robust': "
          "1.4826 × the median |err/σ| over all axes (the tails left out); 'bound': the same with the "
          "expected information's σ (the Cramér–Rao bound, position_sigma_model) and its predicted precision; "
          "'indep.': each atom's own information at the truth (bench_large's information limit), every other "
          f"atom known; coupling: the neighbours' rise of the 3-D RMS σ (joint within {rows[0]['radius']:.1f} Å)")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"atoms": args.atoms, "components": args.components,
                                                       "blur": args.blur,
                                                       "perturb": args.perturb, "rows": rows}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
