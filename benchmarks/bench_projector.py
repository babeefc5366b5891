"""Speed of the general (Euler-angle) projector against the single-axis fast path.

The problem is the seed paper's: a 128³ volume, 60 projections (θ = 0:3:177°), 128²
pixels, 2×2×2 sub-samples, float32. The Euler angles add φ, ψ ~ N(0, 0.3°), the size of
the errors an angle refinement corrects, so every projection needs the general projector.
The volume is a RESIRE reconstruction of noise-free linear-model projections of the
208-atom a-Si particle (its ground truth from ../shared when present, else a random
particle of the same size).

Printed: the best of ``--repeat`` runs of one forward projection, one back projection and
one RESIRE iteration (both plus the update), and the throughput in voxel-projections per
second (one voxel seen by one projection, its sub-samples included).

With ``--device gpu`` (CuPy and a GPU) both projectors run there: the general one through
its CUDA kernels, the single-axis one through CuPy's sparse matrix product.

Run: python benchmarks/bench_projector.py [--size 128] [--projections 60] [--repeat 3] [--device gpu]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import time

import numba
import numpy as np

from aetdask.backend import get_array_module
from aetdask.kernels.tomography.iterative import resire
from aetdask.reconstruct.projectors import EulerProjector, slice_projector
from aetdask.simulate import amorphous_particle, linear

SEED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference" / "seed-paper" / "aSi_208atoms_GT.txt"


def best(f, repeat, sync=lambda: None):
    times = []
    for _ in range(repeat):
        sync()
        t = time.perf_counter()
        f()
        sync()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128, help="volume edge and detector edge (pixels)")
    ap.add_argument("--projections", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    args = ap.parse_args(argv)
    xp = get_array_module(args.device)
    sync = (lambda: xp.cuda.Device().synchronize()) if xp is not np else (lambda: None)

    n, m = args.size, args.projections
    theta = np.linspace(0.0, 180.0, m, endpoint=False)
    rng = np.random.default_rng(0)
    euler = np.c_[rng.normal(0, 0.3, m), theta, rng.normal(0, 0.3, m)]
    if SEED.exists():
        from aetdask.io import read_atoms

        model = read_atoms(SEED)
    else:
        model = amorphous_particle(208, seed=0)
    pixel = 0.195 * 128 / n
    single = slice_projector((n, n), n, theta, xp=xp)
    measured = xp.asarray(linear(model, angles=theta, pixel_size=pixel, shape=n).values.astype(np.float32))
    volume = resire(measured, single, 20)[0]
    general = EulerProjector(euler, (n, n), (n, n, n), xp=xp, method="general")
    engines = [("general (φ, ψ ≠ 0)", general)]
    if xp is np:  # the shear-warp projector runs on the CPU only
        engines.append(("shear-warp (φ, ψ ≠ 0)", EulerProjector(euler, (n, n), (n, n, n), method="shear-warp")))
    for _, proj in engines:
        proj.backward(proj.forward(volume[:2]))  # compile outside the timing

    where = "GPU (CuPy)" if xp is not np else f"numba {numba.__version__} ({numba.get_num_threads()} threads)"
    print(f"{platform.machine()}, {os.cpu_count()} cores, {where}; {n}³ volume, {m} projections, {n}² px, 2×2×2 sub-samples")
    updates = n**3 * m
    rows = []
    for name, proj in engines + [("single-axis fast path", single)]:
        projections = proj.forward(volume)
        tf = best(lambda: proj.forward(volume), args.repeat, sync)
        tb = best(lambda: proj.backward(projections), args.repeat, sync)
        ti = best(lambda: resire(measured, proj, 1, initial=volume), args.repeat, sync)
        rows.append((name, tf, tb, ti))
        print(f"{name:24s} forward {tf:6.3f} s  back {tb:6.3f} s  RESIRE iteration {ti:6.3f} s  "
              f"{updates / ti / 1e6:8.1f} M voxel-projection updates/s")
    for name, *_, ti in rows[:-1]:
        print(f"{name} / single-axis, per iteration: {ti / rows[-1][3]:.1f}×")


if __name__ == "__main__":
    main()
