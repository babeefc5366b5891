"""Time simulate.linear per projection for a small and a large particle.

Run: python benchmarks/bench_linear.py [--large]
"""

import argparse
import platform
import time

import dask
import numpy as np

from aetdask.simulate import amorphous_particle, linear


def bench(n_atoms, shape, pixel_size, n_tilts=8):
    model = amorphous_particle(n_atoms, seed=0)
    angles = np.linspace(0, 177, n_tilts)
    ts = linear(model, angles=angles, pixel_size=pixel_size, shape=shape, dose=1.6e4, seed=0)
    with dask.config.set(scheduler="synchronous"):
        t = time.perf_counter()
        ts.values
        dt = (time.perf_counter() - t) / n_tilts
    radius = float(np.abs(model.position.values).max())
    print(f"{n_atoms:6d} atoms (radius {radius:.1f} Å), {shape}² px: {dt * 1e3:8.1f} ms per projection (1 core)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--large", action="store_true", help="also a 20,000-atom particle on 290² pixels")
    args = ap.parse_args()
    print(platform.processor() or platform.machine(), f"{__import__('os').cpu_count()} cores")
    bench(208, 128, 0.195)
    bench(2000, 128, 0.347)
    if args.large:
        bench(20000, 290, 0.347, n_tilts=2)
