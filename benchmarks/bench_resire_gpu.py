"""RESIRE on a GPU: throughput against the memory-bandwidth floor and against ASTRA's SIRT3D_CUDA.

The problem of the reconstruction issue's GPU check: a 256³ volume, 60 projections
(θ = 0:3:177°), 256² pixels, 200 iterations, float32, noise-free linear-model
projections of a random amorphous particle. aetdask runs RESIRE on one GPU through
its single-axis fast path (one cuSPARSE matrix for all 256 slices) and, with
``--euler``, through the general projector's CUDA kernels (φ, ψ ~ N(0, 0.3°)).

The floor: every iteration reads and writes the volume and the projections a few
times; the issue takes ≈ 12 bytes per voxel-projection per iteration, so the floor
is ``12 · N³ · n · iterations / bandwidth``, the bandwidth from the device's memory
clock and bus width.

ASTRA (``pip install astra-toolbox``; its wheels carry CUDA) runs ``SIRT3D_CUDA`` on
the same projections, in its parallel-beam geometry with the rotation axis along its
detector rows, for the same number of iterations.

Run: python benchmarks/bench_resire_gpu.py [--size 256] [--iterations 200] [--euler]
     (``--device cpu --size 32 --iterations 5`` runs the same code on the CPU, as a check)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from aetdask.backend import asnumpy, get_array_module
from aetdask.kernels.tomography.iterative import r_factor, resire
from aetdask.reconstruct.projectors import EulerProjector, slice_projector
from aetdask.simulate import amorphous_particle, linear

BYTES_PER_UPDATE = 12


def bandwidth(xp):
    """Peak memory bandwidth of the current GPU in bytes/s (double data rate)."""
    props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
    return 2.0 * props["memoryClockRate"] * 1e3 * props["memoryBusWidth"] / 8, props["name"].decode()


def timed(f, sync):
    sync()
    t = time.perf_counter()
    out = f()
    sync()
    return time.perf_counter() - t, out


def astra_sirt3d(b, theta, n, iterations):
    import astra

    vol_geom = astra.create_vol_geom(n, n, n)  # (rows = y, cols = z across the axis, slices = x)
    proj_geom = astra.create_proj_geom("parallel3d", 1.0, 1.0, n, n, np.deg2rad(theta))
    sino = np.ascontiguousarray(np.transpose(b, (2, 0, 1)))  # (detector rows along the axis, angle, cols)
    sid = astra.data3d.create("-sino", proj_geom, sino)
    rid = astra.data3d.create("-vol", vol_geom, 0.0)
    cfg = astra.astra_dict("SIRT3D_CUDA")
    cfg.update(ProjectionDataId=sid, ReconstructionDataId=rid, option={"MinConstraint": 0.0})
    aid = astra.algorithm.create(cfg)
    t = time.perf_counter()
    astra.algorithm.run(aid, iterations)
    seconds = time.perf_counter() - t
    astra.algorithm.delete(aid)
    astra.data3d.delete([sid, rid])
    return seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--projections", type=int, default=60)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--euler", action="store_true", help="also the general projector (φ, ψ ≠ 0)")
    ap.add_argument("--device", choices=["cpu", "gpu"], default="gpu")
    args = ap.parse_args(argv)
    xp = get_array_module(args.device)
    gpu = xp is not np
    sync = (lambda: xp.cuda.Device().synchronize()) if gpu else (lambda: None)

    n, m, it = args.size, args.projections, args.iterations
    theta = np.linspace(0.0, 180.0, m, endpoint=False)
    model = amorphous_particle(int(208 * (n / 128) ** 3), seed=0)
    b_host = linear(model, angles=theta, pixel_size=0.195, shape=n).values.astype(np.float32)
    b = xp.asarray(b_host)
    updates = n**3 * m * it
    if gpu:
        bw, name = bandwidth(xp)
        floor = BYTES_PER_UPDATE * updates / bw
        print(f"{name}: {bw / 1e9:.0f} GB/s; {n}³ × {m} projections × {it} iterations; "
              f"bandwidth floor ({BYTES_PER_UPDATE} B per voxel-projection) {floor:.2f} s")
    else:
        floor = None
        print(f"CPU check: {n}³ × {m} projections × {it} iterations")

    projectors = [("single-axis (sparse)", slice_projector((n, n), n, theta, xp=xp))]
    if args.euler:
        rng = np.random.default_rng(0)
        euler = np.c_[rng.normal(0, 0.3, m), theta, rng.normal(0, 0.3, m)]
        projectors.append(("general (CUDA kernels)" if gpu else "general (Numba)",
                           EulerProjector(euler, (n, n), (n, n, n), xp=xp)))
    for name, proj in projectors:
        resire(b, proj, 1)  # build, compile and warm up outside the timing
        seconds, (vol, _) = timed(lambda: resire(b, proj, it), sync)
        r = r_factor(b_host, asnumpy(proj.forward(vol)))
        line = f"aetdask RESIRE, {name:22s} {seconds:8.2f} s, R = {r:.4f}, {updates / seconds / 1e9:6.2f} G updates/s"
        if floor:
            line += f", {floor / seconds:5.1%} of the bandwidth floor's speed"
        print(line)
    if not gpu:
        return
    try:
        astra_s = astra_sirt3d(b_host, theta, n, it)
    except ImportError:
        print("ASTRA Toolbox not installed: pip install astra-toolbox")
        return
    print(f"ASTRA SIRT3D_CUDA                          {astra_s:8.2f} s, {updates / astra_s / 1e9:6.2f} G updates/s")


if __name__ == "__main__":
    main()
