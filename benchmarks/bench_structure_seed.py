"""Structure analysis of the seed paper's ground-truth models, one table row each.

    python benchmarks/bench_structure_seed.py [--seed-dir DIR] [--workers 2]

Runs :func:`aetdask.analyze.analyze` with the defaults (cutoff from each model's own RDF) on a
local Dask cluster and prints what each model is known for: RDF peaks and coordination, ring
statistics of the silica, polytetrahedral motifs of the metallic glass, density.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

MODELS = {
    "a-Si 208": ("aSi_208atoms_GT.txt", None),
    "a-Si 19,993": ("aSi9nm_model_GT.txt", None),
    "SiGeSn 13,982": ("aSiGeSn_8nm_GT.mat", None),
    "CoPdPt 18,356": ("MG_final_atom_coord_inA.mat", None),
    "SiO2 7,704": ("model_GT.mat", None),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed-dir", default=str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference"
                                              / "seed-paper"))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from aetdask.analyze import analyze
    from aetdask.cluster import cluster
    from aetdask.io import read_atoms

    seed = pathlib.Path(args.seed_dir)
    with cluster(n_workers=args.workers, quiet=True):
        for name, (fname, species) in MODELS.items():
            model = read_atoms(seed / fname, species=species)
            t0 = time.perf_counter()
            res = analyze(model)
            wall = time.perf_counter() - t0
            s = res.attrs["summary"]
            peaks = "; ".join(f"{p} {e['first_peak']:.2f}" for p, e in s["rdf"].items()
                              if e["first_peak"] is not None and p != "total")
            cn = ", ".join(f"{a}: " + "/".join(f"{b}{v:.2f}" for b, v in row.items() if b != "all" and v > 0.05)
                           for a, row in s["coordination"].items())
            m = s["motifs"]
            r = s["rings"]
            rings = r.get("former_histogram") or r["histogram"]
            top = max(rings, key=rings.get) if rings else "-"
            print(f"## {name} ({wall:.1f} s)")
            print(f"  cutoff (total first valley) {s['cutoff']:.2f} Å; first peaks {peaks}")
            print(f"  coordination {cn}")
            print(f"  density {s['density']['mean_interior']:.2f} g/cm³; Voronoi top "
                  + ", ".join(f"{t['index']} {100 * t['fraction']:.1f}%" for t in s["voronoi"]["top_indices"][:3]))
            print(f"  atoms in PBs {100 * m['motif_fractions']['pentagonal']:.1f}%, {m['pentagonal_bipyramids']} PBs, "
                  f"{m['pb_networks']} networks (largest {m['largest_network']}), icosahedra {m['full_icosahedra']} full / "
                  f"{m['partial_icosahedra']} partial")
            cr = s["bond_order"]["crystalline_fraction"]
            alt = r["alternating_fraction"]
            print(f"  crystal-like {'n/a (open network)' if cr is None else f'{100 * cr:.2f}%'}; rings over "
                  f"{r['bonds']}: most common size {top} ({'formers' if r.get('former_histogram') else 'atoms'}), "
                  f"alternating {alt if alt is None else round(100 * alt, 1)}%")


if __name__ == "__main__":
    sys.exit(main())
