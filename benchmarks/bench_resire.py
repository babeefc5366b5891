"""RESIRE speed: aetdask's single-axis engine side by side with the ASTRA Toolbox's CPU SIRT.

The problem is the seed paper's: a 128³ volume, 60 projections (θ = 0:3:177°),
128² pixels, 100 iterations, noise-free linear-model projections of the
208-atom a-Si particle (its ground truth from ../shared when present, else a
random particle of the same size). ASTRA runs its CPU 2-D SIRT slice by slice
(128 slices), the way a 2-D CPU code has to; aetdask runs all slices at once
through one shared sparse system matrix.

Run: python benchmarks/bench_resire.py    (needs `pip install astra-toolbox` for the comparison)
"""

from __future__ import annotations

import os
import pathlib
import platform
import time

import numba
import numpy as np

from aetdask.kernels.tomography.iterative import r_factor, resire
from aetdask.kernels.tomography.projector_slices import SliceProjector
from aetdask.simulate import amorphous_particle, linear

N, ITERATIONS = 128, 100
THETA = np.arange(0.0, 180.0, 3.0)
SEED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference" / "seed-paper" / "aSi_208atoms_GT.txt"


def data():
    if SEED.exists():
        from aetdask.io import read_atoms

        model = read_atoms(SEED)
    else:
        model = amorphous_particle(208, seed=0)
    return linear(model, angles=THETA, pixel_size=0.195, shape=N).values.astype(np.float32)


def bench_aetdask(b):
    proj = SliceProjector((N, N), N, THETA)
    resire(b, proj, 2)  # compile
    t = time.perf_counter()
    vol, hist = resire(b, proj, ITERATIONS)
    seconds = time.perf_counter() - t
    return seconds, r_factor(b, proj.forward(vol)), proj.nnz


def bench_stage_on_cluster(b):
    """The same through the reconstruct stage: two slabs on a LocalCluster of two worker processes."""
    from distributed import Client, LocalCluster

    from aetdask.reconstruct import resire as resire_stage
    from aetdask.schema import tilt_series

    ts = tilt_series(b, THETA, 0.195, units="a.u.")
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster):
        resire_stage(ts, iterations=2)  # compile on the workers
        t = time.perf_counter()
        vol = resire_stage(ts, iterations=ITERATIONS)
        return time.perf_counter() - t, vol.attrs["provenance"][-1]["params"]["r_final"]


def bench_astra(b):
    import astra

    vol_geom = astra.create_vol_geom(N, N)
    proj_geom = astra.create_proj_geom("parallel", 1.0, N, np.deg2rad(THETA))
    pid = astra.create_projector("linear", proj_geom, vol_geom)
    t = time.perf_counter()
    for ix in range(N):
        sino = np.ascontiguousarray(b[:, :, ix])
        sid = astra.data2d.create("-sino", proj_geom, sino)
        rid = astra.data2d.create("-vol", vol_geom, 0.0)
        cfg = astra.astra_dict("SIRT")
        cfg.update(ProjectorId=pid, ProjectionDataId=sid, ReconstructionDataId=rid,
                   option={"MinConstraint": 0.0})
        aid = astra.algorithm.create(cfg)
        astra.algorithm.run(aid, ITERATIONS)
        astra.algorithm.delete(aid)
        astra.data2d.delete([sid, rid])
    seconds = time.perf_counter() - t
    astra.projector.delete(pid)
    return seconds


def main():
    print(f"{platform.machine()}, {os.cpu_count()} cores, numba threads {numba.get_num_threads()}")
    b = data()
    seconds, r, nnz = bench_aetdask(b)
    updates = N**3 * len(THETA) * ITERATIONS
    print(f"aetdask RESIRE  {N}³ × {len(THETA)} angles × {ITERATIONS} it: {seconds:6.2f} s, R = {r:.4f}, "
          f"{updates / seconds / 1e9:.2f} G voxel-projection updates/s (forward + back), matrix nnz {nnz:,}")
    stage_s, stage_r = bench_stage_on_cluster(b)
    print(f"aetdask stage, 2 slabs on 2 worker processes:    {stage_s:6.2f} s, R = {stage_r:.4f}")
    try:
        astra_s = bench_astra(b)
    except ImportError:
        print("ASTRA Toolbox not installed: pip install astra-toolbox")
        return
    print(f"ASTRA CPU SIRT  {N} slices × {ITERATIONS} it:      {astra_s:6.2f} s")
    print(f"ratio aetdask / ASTRA = {seconds / astra_s:.3f}  (goal ≤ 0.05)")


if __name__ == "__main__":
    main()
