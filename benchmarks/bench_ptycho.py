"""Ptychographic AET of a small amorphous SiO2 particle, end to end, single slice and multislice.

A grown SiO2 network (``silica_particle``) → 4D-STEM tilt series by multislice (abTEM;
the seed paper's SiO2 settings: 80 kV, 30 mrad, 18 nm defocus, 0–60 mrad detector) with
Poisson noise → a ptychographic phase image per tilt (abTEM r-PIE or MS-PIE, one Dask task
per tilt) → ``aetdask.pipeline.run(modality="ptycho")``: preprocessing, RESIRE, tracing,
Si/O classification, the structure analysis with rings. Reports per stage time, the NCC of
the phase projections with ``simulate.linear`` projections of the truth (after the
preprocessing's alignment), and the strict identification of Si and O (1 Å).

Run: python benchmarks/bench_ptycho.py [--n-si 40] [--tilts 25] [--step 2.0] [--dose 1e6]
     [--phonons 0] [--multislice] [--workers 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import tempfile
import time


def phase_ncc(store, truth) -> list[float]:
    """NCC of each preprocessed (aligned, background-free) phase projection with the linear
    ADF projection of the truth on the same grid."""
    import numpy as np

    from aetdask.preprocess.stage import aligned
    from aetdask.simulate import linear

    pre = aligned(store.read("preprocessed")).compute()
    ref = linear(truth, like=pre, poisson=False).values
    out = []
    for a, b in zip(pre.values.astype(float), ref):
        a, b = a - a.mean(), b - b.mean()
        out.append(float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-si", type=int, default=40)
    parser.add_argument("--tilts", type=int, default=25)
    parser.add_argument("--step", type=float, default=2.0)
    parser.add_argument("--dose", type=float, default=1e6)
    parser.add_argument("--phonons", type=int, default=0)
    parser.add_argument("--slice-thickness", type=float, default=2.0)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--multislice", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None)
    a = parser.parse_args()

    import numpy as np
    from distributed import Client, LocalCluster

    from aetdask import config
    from aetdask.evaluate import evaluate
    from aetdask.io import RunStore
    from aetdask.pipeline import run
    from aetdask.ptycho.simulate import fourdstem
    from aetdask.simulate import silica_particle

    root = pathlib.Path(a.out or tempfile.mkdtemp(prefix="bench-ptycho-"))
    out = root / ("ms" if a.multislice else "ss")
    truth = silica_particle(a.n_si, seed=1)
    theta = np.linspace(-72.0, 72.0, a.tilts)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {a.workers} workers")
    print(f"model: {truth.sizes['atom']} atoms ({int((truth.species == 'Si').sum())} Si), {a.tilts} tilts "
          f"−72°…72°, step {a.step} Å, dose {a.dose:g} e⁻/Å², phonons {a.phonons}")
    with LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True) as cluster, Client(cluster):
        t0 = time.perf_counter()
        data = RunStore(root / "data")
        reused = "patterns" in data and data.read("patterns").sizes["tilt"] == a.tilts
        if reused:
            print("4D-STEM simulation: reused from", data.path)  # an earlier run's (same --out)
        else:
            data.write("truth", truth)
            data.write("patterns", fourdstem(truth, theta, dose=a.dose, seed=1, step=a.step, phonons=a.phonons,
                                             slice_thickness=a.slice_thickness))
        patterns = data.read("patterns")
        store = RunStore(out)
        store.write("truth", truth)
        t_sim = time.perf_counter() - t0
        nt, sy, sx, k, _ = patterns.shape
        if not reused:
            print(f"4D-STEM simulation: {nt} × {sy}×{sx} positions × {k}×{k} px: {t_sim:.1f} s "
                  f"({t_sim * a.workers / nt:.1f} s per tilt on one core)")
        overrides = {"ptycho.multislice": a.multislice}
        if a.iterations:
            overrides["ptycho.iterations"] = a.iterations
        with config.set(overrides):
            summary = run(patterns, out, ["Si", "O"], modality="ptycho", progress=False,
                          echo=lambda *x: None)
    t_ptycho = store.read_json("run.json")["stages"]["raw"]["seconds"]
    print(f"ptychography ({'multislice' if a.multislice else 'single slice'}): {t_ptycho:.1f} s "
          f"({t_ptycho * a.workers / nt:.1f} s per tilt on one core)")
    for name, st in summary["stages"].items():
        print(f"  stage {name}: {st['seconds']:.1f} s")
    ncc = phase_ncc(store, truth)
    print(f"NCC of the aligned phase projections with simulate.linear: median {np.median(ncc):.3f}, "
          f"min {np.min(ncc):.3f}")
    model = store.read("atoms")
    score = evaluate(model, truth, cutoff=1.0)
    strict = score["strict"]
    for sp in ("Si", "O"):
        paper, st = score["species"][sp], strict["species"].get(sp, {})
        print(f"{sp}: paper's rule {paper['identification_pct']:.1f} % ({paper['matched']}/{paper['truth']}, "
              f"{paper['traced']} traced), strict {st}")
    print(f"strict overall: TP {strict['true_positives']}, FP {strict['false_positives']}, "
          f"FN {strict['false_negatives']}, precision {strict['precision_pm']:.1f} pm")
    rings = (summary.get("structure") or {}).get("rings")
    print(f"rings: {rings}")
    print(f"store: {out}")


if __name__ == "__main__":
    main()
