"""Scale: `aetdask run` on a 20,000-atom a-Si particle on 1 and 2 Dask workers — time, memory, accuracy.

    python benchmarks/bench_scale.py [--atoms N] [--workers 1 2] [--dose 8e3] [--work DIR] [--json FILE]

Simulates the tilt series with the linear ADF model (seeded Poisson counts): the seed paper's
19,993-atom a-Si ground truth (``aSi9nm_model_GT.txt``, a 20,000-atom random particle of the same
radius where ``../shared`` is absent; :func:`bench_large.truth_model`), 290 × 290 px at 0.347 Å, the
seed's 60 angles, 8.0e3 e⁻/Å². ``--atoms N`` keeps the N atoms nearest the centre (a smaller particle
of the same structure) on a field scaled to it: 2 × (its radius + 6 Å) wide, 290 px at most.

For each worker count it starts a ``LocalCluster`` of that many single-threaded worker processes (in
this process, with the settings ``aetdask run`` gives its own) and runs ``aetdask run --scheduler``
against it in a subprocess — the code path of a deployed cluster. It prints per-stage time (the run
store's ``run.json``), the peak memory of every process (each worker's own peak RSS, read in the
worker at the end; the command's, from the operating system when it exits; this process's, which
holds the scheduler), the identification and precision against the truth (cutoff 1.0 Å, as
:func:`bench_large.score` reports them), and writes everything to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import sys
import tempfile
import time

import numpy as np

import bench_large

PIXEL, FULL_SHAPE, MARGIN = 0.347, 290, 6.0


def particle(n_atoms):
    """The truth (centred) and its source; with ``n_atoms``, the ``n_atoms`` atoms nearest the centre."""
    model, source = bench_large.truth_model(str(bench_large.SEED_DIR / "aSi9nm_model_GT.txt"))
    if n_atoms and n_atoms < model.sizes["atom"]:
        r = np.linalg.norm(model.position.values, axis=1)
        model = model.isel(atom=np.sort(np.argsort(r)[:n_atoms]))
        pos = model.position.values
        model["position"] = (("atom", "xyz"), pos - pos.mean(axis=0))
        source += f", the {n_atoms} atoms nearest its centre"
    return model, source


def field(model):
    """Pixels per side: the particle and a margin, even, at most the seed's 290."""
    radius = float(np.linalg.norm(model.position.values, axis=1).max())
    n = int(np.ceil(2 * (radius + MARGIN) / PIXEL))
    return min(FULL_SHAPE, n + n % 2)


def simulate(model, dose, shape, work):
    from aetdask.simulate import linear

    if (bench_large.SEED_DIR / "Si_Angle.mat").exists():
        from aetdask.io import read_angles

        angles = read_angles(bench_large.SEED_DIR / "Si_Angle.mat")
    else:
        angles = np.c_[np.zeros(60), np.arange(0, 180, 3.0), np.zeros(60)]
    tilts = work / f"tilts_{model.sizes['atom']}_{shape}_{dose:.1e}.npy"
    if not tilts.exists():
        counts = linear(model, angles=angles, pixel_size=PIXEL, shape=shape, dose=dose, seed=1).compute().values
        np.save(tilts, counts.astype(np.float32))
    np.savetxt(work / "angles.txt", angles, header="phi theta psi (degrees)")
    return tilts, work / "angles.txt", len(angles)


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_on(workers, tilts, angles, species, store, log):
    """``aetdask run`` against a fresh LocalCluster of ``workers`` processes: wall time and peak memory."""
    import subprocess

    import dask
    from distributed import Client, LocalCluster

    from aetdask.cluster import LOOPBACK, scheduler_settings

    with dask.config.set(scheduler_settings()):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host=LOOPBACK,
                               dashboard_address=None, silence_logs=40)
    client = Client(cluster)
    try:
        cmd = [sys.executable, "-m", "aetdask.cli", "run", str(tilts), "--angles", str(angles), "--pixel-size",
               str(PIXEL), "--species", species, "--out", str(store), "--scheduler", cluster.scheduler_address]
        t = time.perf_counter()
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        if proc.returncode:
            sys.exit(f"aetdask run failed on {workers} worker(s) ({proc.returncode}):\n{pathlib.Path(log).read_text()[-3000:]}")
        peaks = client.run(_peak_rss_mib)
    finally:
        client.close()
        cluster.close()
    return {"wall_s": wall, "peak_rss_mib": {"command": usage.ru_maxrss / 1024,
                                             "workers": sorted(peaks.values(), reverse=True),
                                             "scheduler_process": _peak_rss_mib()}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--atoms", type=int, default=None, help="a smaller particle: the N atoms nearest the centre")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts, one run each")
    ap.add_argument("--dose", type=float, default=8.0e3, help="e⁻/Å² per projection")
    ap.add_argument("--work", help="keep the tilt series, run stores and logs here (default: a new temporary folder)")
    ap.add_argument("--json", dest="json_path", help="write the results here (default: WORK/bench_scale.json)")
    args = ap.parse_args(argv)
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="aetdask-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    model, source = particle(args.atoms)
    shape = field(model)
    t = time.perf_counter()
    tilts, angles, n_angles = simulate(model, args.dose, shape, work)
    n = model.sizes["atom"]
    print(f"{n} Si atoms ({source}), {shape}² px at {PIXEL} Å, {n_angles} projections, {args.dose:.2g} e⁻/Å² "
          f"(simulated in {time.perf_counter() - t:.0f} s); {os.cpu_count()} cores")
    results = {"atoms": n, "source": source, "shape": shape, "pixel_size": PIXEL, "projections": n_angles,
               "dose": args.dose, "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "runs": {}}
    for workers in args.workers:
        store = work / f"run_{n}_{workers}w.zarr"
        if store.exists():
            import shutil

            shutil.rmtree(store)
        print(f"\n{workers} worker(s):")
        rec = run_on(workers, tilts, angles, "Si", store, work / f"run_{n}_{workers}w.log")
        rec.update(bench_large.score(store, model, np.zeros((n_angles, 2), dtype=int), print))
        mem = rec["peak_rss_mib"]
        print(f"  wall {rec['wall_s']:.0f} s; peak RSS: command {mem['command']:.0f} MiB, workers "
              + ", ".join(f"{m:.0f}" for m in mem["workers"]) + f" MiB, scheduler process {mem['scheduler_process']:.0f} MiB")
        results["runs"][str(workers)] = rec
    runs = results["runs"]
    if len(runs) > 1:
        first, last = runs[str(args.workers[0])], runs[str(args.workers[-1])]
        results["speedup"] = {k: first["stages_s"][k] / v for k, v in last["stages_s"].items()
                              if v and first["stages_s"].get(k)}
        print(f"\nspeed-up, {args.workers[-1]} workers over {args.workers[0]}: "
              + ", ".join(f"{k} {v:.2f}×" for k, v in results["speedup"].items()))
    path = pathlib.Path(args.json_path or work / "bench_scale.json")
    path.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
