"""Multislice campaign: seconds per projection, and the campaign's overhead over calling abTEM directly.

    python benchmarks/bench_campaign.py [--atoms 20] [--tilts 4] [--phonons 2] [--shape 24]

The CPU test case: a random amorphous Pt particle (tens of atoms), a few tilts, two frozen-phonon
configurations, coarse sampling. The same work is done three ways:

1. directly: a loop in this process over tilts and configurations calling
   ``multislice.scan_tile`` (abTEM) and averaging — no Dask, no store;
2. ``run_campaign`` on a local cluster of 1 worker process (graph, store writes, the noise
   stage for one dose), once cold (the worker's abTEM import and compilation included) and
   once warm (done beforehand, as for the direct loop);
3. the same on 2 warm worker processes.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--atoms", type=int, default=20)
    ap.add_argument("--tilts", type=int, default=4)
    ap.add_argument("--phonons", type=int, default=2)
    ap.add_argument("--shape", type=int, default=24)
    args = ap.parse_args()

    from aetdask.cluster import cluster
    from aetdask.schema import as_euler
    from aetdask.simulate import multislice as ms
    from aetdask.simulate.campaign import load_campaign, run_campaign

    params = {"pixel_size": 0.4, "shape": args.shape, "phonons": args.phonons, "slice_thickness": 2.0,
              "detector": [40.0, 100.0], "pad": 3.0}
    theta = np.linspace(0, 180, args.tilts, endpoint=False)
    spec = {"seed": 1, "parameters": params, "tilts": {"theta": theta.tolist()}, "doses": [1e5], "defocus": [0.0],
            "particles": [{"name": "pt", "generate": {"kind": "rsa", "n": args.atoms, "species": ["Pt"], "seed": 3}}]}
    campaign = load_campaign(spec)
    atoms = campaign["particles"][0]["atoms"]
    pos = atoms.position.values
    species = atoms.species.values.astype(str)
    settings = ms.resolve(pos, species, params)
    kw = ms.tile_arguments(settings)
    ny = settings["shape"][0]
    euler = as_euler(theta)
    print(f"case: {args.atoms} Pt atoms, {args.tilts} tilts, {args.phonons} phonon configurations, "
          f"{args.shape}² px at 0.4 Å; grid {settings.get('gpts')} ({settings['max_angle']:.0f} mrad)")

    ms.scan_tile(pos, species, euler[0], rows=(0, 1), **kw)  # abTEM import and first compilation
    t0 = time.perf_counter()
    for k in range(len(euler)):
        tiles = [ms.scan_tile(ms.phonon_positions(pos, species, b_factors=settings["b_factors"], config=c, seed=1),
                              species, euler[k], rows=(0, ny), **kw) for c in range(args.phonons)]
        ms.blur(np.mean(tiles, axis=0), settings["blur"], settings["pixel_size"])
    direct = time.perf_counter() - t0
    n = len(euler)
    print(f"direct abTEM loop (1 process): {direct:.1f} s = {direct / n:.2f} s per projection "
          f"({direct / (n * args.phonons * ny * ny) * 1e3:.2f} ms per probe position per configuration)")

    results = {}
    for workers, warm in ((1, False), (1, True), (2, True)):
        out = pathlib.Path(tempfile.mkdtemp(prefix="aetdask-bench-campaign-")) / "c"
        with cluster(n_workers=workers, quiet=True) as client:
            if warm:  # abTEM's import and first compilation in each worker, as for the direct loop
                client.run(ms.scan_tile, pos, species, euler[0], rows=(0, 1), **kw)
            t0 = time.perf_counter()
            summary = run_campaign(load_campaign(spec), out, progress=False, echo=lambda *a: None)
            results[workers, warm] = time.perf_counter() - t0
        print(f"run_campaign on {workers} {'warm' if warm else 'cold'} worker(s): {results[workers, warm]:.1f} s "
              f"(simulation {summary['simulation_seconds']:.1f} s; {results[workers, warm] / n:.2f} s per projection)")
    print(f"campaign overhead over the direct loop, 1 worker: {100 * (results[1, True] / direct - 1):+.1f} % warm, "
          f"{100 * (results[1, False] / direct - 1):+.1f} % with the worker's abTEM start-up; "
          f"speed-up on 2 workers: {results[1, True] / results[2, True]:.2f}×")


if __name__ == "__main__":
    sys.exit(main())
