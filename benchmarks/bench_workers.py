"""Reconstruction on 1, 2 and 4 local worker processes: the same volume, and the speed-up.

Two problems, both run through the ``reconstruct`` stage on a ``LocalCluster``
(processes, one thread each; Numba kernels limited to one thread per worker so
that one worker really is one core):

* single axis — 128³, 60 projections, 100 RESIRE iterations (slabs along the
  tilt axis, no communication);
* general Euler angles — 64³, 60 projections with φ, ψ ≠ 0, 30 RESIRE
  iterations (z-slabs, the forward projections summed on a worker every
  iteration).

The slab partition is fixed by the volume, so every worker count must give
the same volume bit for bit; the script checks it and prints the wall times.

Run: python benchmarks/bench_workers.py [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def problem(euler: bool):
    from aetdask.simulate import amorphous_particle, linear

    rng = np.random.default_rng(0)
    theta = np.arange(0.0, 180.0, 3.0)
    if euler:
        angles = np.c_[rng.normal(0, 3, 60), theta, rng.normal(0, 3, 60)]
        return linear(amorphous_particle(60, seed=0), angles=angles, pixel_size=0.35, shape=64).compute(), 30
    return linear(amorphous_particle(208, seed=0), angles=theta, pixel_size=0.195, shape=128).compute(), 100


def run(ts, iterations, workers):
    from distributed import Client, LocalCluster

    from aetdask.cluster import worker_environment
    from aetdask.reconstruct import resire

    env = {**worker_environment(), "NUMBA_NUM_THREADS": "1"}
    import dask

    with dask.config.set({"distributed.nanny.pre-spawn-environ": env}), \
            LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster):
        resire(ts, iterations=2)  # compile and build the projectors on the workers
        t = time.perf_counter()
        vol = resire(ts, iterations=iterations)
        return time.perf_counter() - t, vol.values


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4")
    counts = [int(w) for w in parser.parse_args().workers.split(",")]
    print(f"# {platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    for euler in (False, True):
        ts, iterations = problem(euler)
        name = "euler 64³×60" if euler else "single-axis 128³×60"
        results = {w: run(ts, iterations, w) for w in counts}
        base = results[counts[0]]
        for w, (seconds, vol) in results.items():
            same = "identical" if np.array_equal(vol, base[1]) else f"max diff {np.abs(vol - base[1]).max():.2e}"
            print(f"{name}, {iterations} iterations, {w} worker(s): {seconds:6.1f} s, speed-up "
                  f"{base[0] / seconds:4.2f}×, volume {same}")


if __name__ == "__main__":
    main()
