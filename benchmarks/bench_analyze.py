"""Structure analysis of a 100,000-atom amorphous model: time, memory, chunked = whole.

    python benchmarks/bench_analyze.py [--atoms 100000] [--workers 2] [--no-whole]

Builds a dense random packing of Pd atoms (``simulate.dense_particle``, seeded; not timed),
writes it to an extended-XYZ file and runs ``aetdask analyze MODEL --json`` on a local Dask
cluster in a subprocess (wall time and the peak memory of the command and its workers).
Then the same analysis in this process as one whole-model block and in the default blocks,
compared item by item.
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
    ap.add_argument("--atoms", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-whole", action="store_true", help="skip the in-process whole vs chunked comparison")
    args = ap.parse_args()

    from aetdask.io import write_atoms
    from aetdask.simulate.amorphous import dense_particle

    work = pathlib.Path(tempfile.mkdtemp(prefix="aetdask-bench-analyze-"))
    t0 = time.perf_counter()
    model = dense_particle(args.atoms, species=("Pd",), seed=0)
    print(f"model: {args.atoms} Pd atoms, dense random packing, built in {time.perf_counter() - t0:.1f} s")
    path = write_atoms(model, work / "pd.xyz")

    cmd = [sys.executable, "-m", "aetdask.cli", "analyze", str(path), "--json"]
    env_note = f"{args.workers} local workers"

    t0 = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    s = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"aetdask analyze ({env_note}): {wall:.1f} s wall, analysis {s['seconds']:.1f} s, "
          f"peak RSS of one process {peak:.0f} MiB")
    m = s["motifs"]
    print(f"  cutoff {s['cutoff']:.3f} Å, first peak {s['rdf']['total']['first_peak']:.3f} Å, "
          f"coordination {s['coordination']['Pd']['all']:.2f}, density {s['density']['mean_interior']:.2f} g/cm³")
    print(f"  Voronoi: {s['voronoi']['interior_atoms']} interior atoms, top "
          + ", ".join(f"{t['index']} {100 * t['fraction']:.1f}%" for t in s["voronoi"]["top_indices"][:3]))
    print(f"  motifs: {m['tetrahedra']} tetrahedra; atoms in PBs {100 * m['motif_fractions']['pentagonal']:.1f}%; "
          f"{m['pentagonal_bipyramids']} PBs in {m['pb_networks']} networks (largest {m['largest_network']}); "
          f"{m['full_icosahedra']} full icosahedra")
    print(f"  bond order: crystal-like {100 * s['bond_order']['crystalline_fraction']:.2f}%; "
          f"rings {s['rings']['rings']}")
    if args.no_whole:
        return

    from aetdask.analyze import analyze
    from aetdask.cluster import cluster

    with cluster(n_workers=args.workers, quiet=True):
        t0 = time.perf_counter()
        chunked = analyze(model)
        t_chunked = time.perf_counter() - t0
        t0 = time.perf_counter()
        whole = analyze(model, block=1e6)
        t_whole = time.perf_counter() - t0
    print(f"in-process on {env_note}: default blocks {t_chunked:.1f} s, one whole-model block {t_whole:.1f} s")
    worst = 0.0
    differ = []
    for name in chunked.data_vars:
        if name in ("position", "species"):
            continue
        a, b = chunked[name].values, whole[name].values
        if a.shape != b.shape:
            differ.append(name)
        elif a.dtype.kind == "f":
            if a.size:
                worst = max(worst, float(np.nanmax(np.abs(a - b))))
            if not np.allclose(a, b, rtol=0, atol=1e-9, equal_nan=True):
                differ.append(name)
        elif not np.array_equal(a, b):
            differ.append(name)
    print(f"chunked == whole for all {len(chunked.data_vars) - 2} results: {not differ} "
          f"(differing: {differ or 'none'}; largest float difference: {worst:.1e})")

if __name__ == "__main__":
    sys.exit(main())
