"""End-to-end accuracy and time of `aetdask run` on the seed paper's 208-atom Si tilt series.

    python benchmarks/bench_pipeline.py [--seed-dir DIR] [--thin 0.5] [--config FILE.yaml]

Runs the real command (local Dask cluster, run store on disk) in a subprocess, then scores the
refined model with the paper's metric (cutoff 0.9 Å) and the strict one-to-one match. ``--thin f``
first keeps each detected electron with probability f (binomial thinning: exactly Poisson counts
at f × the dose) and tops the background back up to its measured level — a lower-dose series of
the same particle, for a dose the paper reports but the seed data do not include.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed-dir", default=str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference"
                                              / "seed-paper"))
    ap.add_argument("--thin", type=float, default=None)
    ap.add_argument("--config", metavar="FILE", help="YAML file of aetdask parameters, passed to the command")
    args = ap.parse_args()
    seed = pathlib.Path(args.seed_dir)
    tilts = seed / "aSi_2nmFosCetr_Dose1p6e4_cov35pm_ForBM3D.mat"
    work = pathlib.Path(tempfile.mkdtemp(prefix="aetdask-bench-"))
    label = "1.6e4 e/Å² (as published)"
    if args.thin:
        from aetdask.io import read_tilt_series

        raw = read_tilt_series(tilts, angles=seed / "Si_Angle.mat", pixel_size=0.195)
        counts = raw.values.astype(np.int64)
        rng = np.random.default_rng(0)
        background = float(np.mean(counts[:, :8, :8]))
        thinned = rng.binomial(counts, args.thin) + rng.poisson((1 - args.thin) * background, counts.shape)
        tilts = work / "thinned.npy"
        np.save(tilts, thinned.astype(np.float32))
        label = f"{args.thin:g} × 1.6e4 e/Å² (binomial thinning, background restored)"
    angles = seed / "Si_Angle.mat"
    if args.thin:
        from aetdask.io import read_angles

        np.savetxt(work / "angles.txt", read_angles(angles))
        angles = work / "angles.txt"
    store = work / "np1.zarr"
    cmd = [sys.executable, "-m", "aetdask.cli", "run", str(tilts), "--angles", str(angles), "--pixel-size", "0.195",
           "--species", "Si", "--out", str(store), "--json"] + (["--config", str(args.config)] if args.config else [])
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    from aetdask.evaluate import evaluate
    from aetdask.io import RunStore

    result = evaluate(store, seed / "aSi_208atoms_GT.txt", 0.9)
    stages = RunStore(store, create=False).read_json("run.json")["stages"]
    o, s = result["overall"], result["strict"]
    print(f"seed 208-atom Si, {label}")
    print(f"  paper metric: {o['identification_pct']:.1f}% ({o['matched']}/{o['truth']}), {o['precision_pm']:.1f} pm")
    print(f"  strict: TP {s['true_positives']} FP {s['false_positives']} FN {s['false_negatives']}, "
          f"{s['precision_pm']:.1f} pm")
    print(f"  wall {wall:.1f} s (command, cluster start included); peak RSS of one process {peak:.0f} MiB")
    print("  stages: " + ", ".join(f"{k} {v['seconds']:.1f} s" for k, v in stages.items()))
    print(json.dumps({"wall_s": wall, "overall": o, "strict": {k: s[k] for k in ("true_positives", "false_positives",
                                                                                     "false_negatives")}}))


if __name__ == "__main__":
    main()
