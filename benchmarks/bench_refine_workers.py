"""Coordinate refinement on Dask workers: 1 worker against 2 (``aetdask.model.blocks``).

An amorphous Si particle (``simulate.amorphous_particle``) → counted ``simulate.linear`` projections → its
positions displaced by 0.15 Å (per axis, Gaussian) → ``refine_atoms`` with a fixed number of L-BFGS
iterations, no model selection, on a ``LocalCluster`` of 1 worker × 1 thread and then 2 workers × 1
thread (worker processes). The atom blocks (``refine_atoms.blocks``, default 8) are the same in both
runs, so both give the same model; the script prints for each the time per evaluation of the misfit and
its gradient, the total time, the peak resident memory of every worker process, then the speedup and
the largest position difference between the two models.

Times are wall-clock on whatever else the machine is running: on a machine whose cores are shared
with other jobs they are upper bounds, and the speedup a lower bound.

Run: python benchmarks/bench_refine_workers.py [--atoms 3000] [--projections 30] [--pixel 0.4]
     [--iterations 15] [--dose 2e4] [--workers 1,2] [--blocks 8]

``--workers 0,1,2`` adds the single-process path (no cluster, all Numba threads) as the baseline.
"""

from __future__ import annotations

import argparse
import os
import platform
import time


def _memory_mib():
    """This process's peak and present resident memory (MiB)."""
    import resource

    import psutil

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, psutil.Process().memory_info().rss / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--atoms", type=int, default=3000)
    parser.add_argument("--projections", type=int, default=30)
    parser.add_argument("--pixel", type=float, default=0.4)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--dose", type=float, default=2e4, help="e⁻/Å² per projection")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, the first the baseline")
    parser.add_argument("--blocks", type=int, default=None, help="atom blocks (default: refine_atoms.blocks)")
    args = parser.parse_args()

    import numpy as np
    from distributed import Client, LocalCluster

    from aetdask import config
    from aetdask.model.refine import refine_atoms
    from aetdask.simulate import amorphous_particle, linear

    model = amorphous_particle(args.atoms, species=["Si"], seed=0)
    pos = model.position.values
    extent = 2 * float(np.abs(pos).max()) + 6.0
    shape = int(np.ceil(extent / args.pixel))
    angles = np.linspace(-70, 70, args.projections)
    print(f"{platform.node()}: {os.cpu_count()} cores; {args.atoms} Si atoms, {args.projections} projections of "
          f"{shape}² px at {args.pixel} Å, dose {args.dose:g} e⁻/Å², {args.iterations} L-BFGS iterations", flush=True)
    t0 = time.perf_counter()
    tilts = linear(model, angles=angles, pixel_size=args.pixel, shape=shape, dose=args.dose, seed=1).compute()
    start = model.copy(deep=True)
    start["position"] = start.position + np.random.default_rng(2).normal(0.0, 0.15, pos.shape)
    print(f"simulated in {time.perf_counter() - t0:.1f} s", flush=True)

    settings = {"refine_atoms.blocks": args.blocks} if args.blocks else {}
    results = {}
    for n in [int(v) for v in args.workers.split(",")]:
        if n == 0:  # the reference: every kernel in this process, on all its Numba threads
            _warm()
            with config.set(settings):
                t0 = time.perf_counter()
                out = refine_atoms(start, tilts, args.iterations, select=False, workers=0)
                total = time.perf_counter() - t0
            memory = {"this process": _memory_mib()}
        else:
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                              dashboard_address="127.0.0.1:0", silence_logs=40) as cluster, Client(cluster) as client, \
                    config.set(settings):
                client.run(_warm)  # compile (or load) the kernels in every worker before timing
                t0 = time.perf_counter()
                out = refine_atoms(start, tilts, args.iterations, select=False, workers=n)
                total = time.perf_counter() - t0
                memory = client.run(_memory_mib)
        params = out.attrs["provenance"][-1]["params"]
        per = params["seconds"] / max(params["evaluations"], 1)
        results[n] = (out, total, per)
        peaks = ", ".join(f"{peak:.0f} (now {now:.0f})" for peak, now in memory.values())
        who = "this process (all threads)" if n == 0 else f"{n} worker(s)"
        print(f"{who}: {params['evaluations']} evaluations, {per:.3f} s per evaluation (fit included), "
              f"total {total:.1f} s; peak memory per worker (MiB): {peaks}", flush=True)
    base, *others = list(results)
    for n in others:
        diff = np.abs(results[n][0].position.values - results[base][0].position.values).max()
        print(f"speedup {base} → {n} workers: {results[base][1] / results[n][1]:.2f}× total, "
              f"{results[base][2] / results[n][2]:.2f}× per evaluation; largest position difference {diff:.2e} Å")


def _warm():
    """Compile the Gaussian-atom kernels in this process (Numba caches them on disk; this loads them)."""
    import numpy as np

    from aetdask.kernels.atoms import gaussian_atoms

    pos = np.full((1, 1, 2), 4.0)
    img = gaussian_atoms.render(pos, np.ones(1), np.ones(1), (9, 9))
    gaussian_atoms.gradients(img, pos, np.ones(1), np.ones(1))
    gaussian_atoms.fisher_blocks(img + 1, pos, np.ones(1), np.ones(1), np.ones(1))
    return True


if __name__ == "__main__":
    main()
