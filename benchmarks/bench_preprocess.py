"""Preprocessing speed: 60 projections of 256² on a LocalCluster with 1 and with 2 workers.

Run: python benchmarks/bench_preprocess.py [--denoiser bm3d|nlm]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
from distributed import Client, LocalCluster

from aetdask.io import RunStore
from aetdask.preprocess import preprocess
from aetdask.simulate import amorphous_particle, linear


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--denoiser", default="bm3d")
    ap.add_argument("--tilts", type=int, default=60)
    args = ap.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} cores; denoiser {args.denoiser}")
    model = amorphous_particle(800, seed=0)
    raw = linear(model, angles=np.linspace(0, 177, args.tilts), pixel_size=0.25, shape=256, dose=1.6e4, seed=0)
    raw = raw.compute()
    times = {}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as c, Client(c):
            store = RunStore(tempfile.mkdtemp() + "/bench.zarr")
            t = time.perf_counter()
            store.write("preprocessed", preprocess(raw, args.denoiser))
            times[workers] = time.perf_counter() - t
        print(f"{workers} worker(s): {times[workers]:6.1f} s, {times[workers] / args.tilts:.2f} s per projection")
    print(f"speed-up 2 vs 1 workers: {times[1] / times[2]:.2f}× (goal ≥ 1.7×)")


if __name__ == "__main__":
    main()
