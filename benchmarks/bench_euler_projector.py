"""The two Euler-angle projectors: time at the realistic size and what each gives the tracing.

    python benchmarks/bench_euler_projector.py [--size 280] [--projections 55] [--radius 15] [--dose 1.7e4]
        [--skip-general-size]

1. **Time.** One forward and one back projection of a ``--size``³ float32 volume at the seed paper's
   CoPdPt angles (``CoPdPt_Angle_Dose1p7e4.mat``: 55 projections, φ and ψ up to 2.8°; repeated or cut to
   ``--projections``), through the shear-warp projector and the general one, and the time of 100 RESIRE
   iterations that implies (two projections per iteration; the update itself is extra).
2. **Accuracy.** A spherical cut (``--radius`` Å) of the CoPdPt model (``MG_final_atom_coord_inA.mat``),
   simulated with the linear ADF model (seeded) at those angles, 0.347 Å pixels, ``--dose`` e⁻/Å², run
   through preprocessing, RESIRE (100 iterations) and tracing with ``reconstruct.projector`` shear-warp and
   then general. Printed for each: reconstruction time and final R, the candidates, the truth atoms with a
   candidate within 0.5 Å and the RMS distance of those pairs.

Needs ``../shared/reference/seed-paper`` (the angles and the model).
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import tempfile
import time

import numba
import numpy as np

SEED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference" / "seed-paper"


def best_of(f, repeat=2):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def timing(size, n_proj, euler, skip_general):
    from aetdask.geometry import projection_matrices
    from aetdask.kernels.tomography import projector_general, projector_sheared

    e = np.resize(euler, (n_proj, 3))
    a = projection_matrices(e)
    vol = np.random.default_rng(0).random((size,) * 3, dtype=np.float32)
    det = (size, size)
    rows = []
    for name, mod, sub in (("shear-warp", projector_sheared, (2, 2, 1)), ("general", projector_general, (2, 2, 2))):
        if name == "general" and skip_general:
            continue
        small = vol[:4, :16, :16].copy()  # compile outside the clock
        mod.forward(small, a[:2], (16, 16), sub)
        mod.backward(np.ones((2, 16, 16), np.float32), a[:2], small.shape, sub)
        proj = mod.forward(vol, a, det, sub)
        f = best_of(lambda: mod.forward(vol, a, det, sub), 1 if name == "general" else 2)
        b = best_of(lambda: mod.backward(proj, a, vol.shape, sub), 1 if name == "general" else 2)
        rows.append((name, sub, f, b))
        print(f"  {name:10s} sub-samples {sub}: forward {f:6.2f} s, back {b:6.2f} s → 100 iterations ≈ "
              f"{100 * (f + b) / 60:5.1f} min ({size ** 3 * n_proj * 2 / (f + b) / 1e9:.2f} G voxel-projections/s)")
    return rows


def accuracy(radius, dose):
    from scipy.spatial import cKDTree

    from aetdask import config, pipeline
    from aetdask.io import read_angles, read_atoms
    from aetdask.io.store import RunStore
    from aetdask.schema import atoms
    from aetdask.simulate import linear

    names = ["Co", "Pd", "Pt"]
    model = read_atoms(SEED / "MG_final_atom_coord_inA.mat", species=names, types=SEED / "MG_final_atom_types.mat")
    pos = model.position.values
    inside = np.linalg.norm(pos - pos.mean(0), axis=1) <= radius
    truth = atoms(pos[inside] - pos[inside].mean(0), model.species.values[inside])
    angles = read_angles(SEED / "CoPdPt_Angle_Dose1p7e4.mat")
    pixel = 0.347
    shape = int(2 * np.ceil((2 * radius + 12) / pixel / 2 / 8) * 8)
    print(f"\naccuracy: spherical cut r = {radius:g} Å of the CoPdPt model, {truth.sizes['atom']} atoms, "
          f"{len(angles)} projections, {shape}² px of {pixel} Å, {dose:g} e⁻/Å²")
    ts = linear(truth, angles=angles, pixel_size=pixel, shape=shape, dose=dose, seed=0).compute()
    tree = cKDTree(truth.position.values)
    for projector in ("shear-warp", "general"):
        out = pathlib.Path(tempfile.mkdtemp(prefix="aetdask-euler-")) / "r.zarr"
        with config.set({"reconstruct.projector": projector, "refine_atoms.iterations": 1}):
            pipeline.run(ts, out, names, progress=False, echo=lambda *a: None)
        store = RunStore(out, create=False)
        rec = [r for r in store.read("volume").attrs["provenance"] if r["stage"].startswith("reconstruct")][-1]
        cand = store.read("candidates").position.values
        d, j = tree.query(cand)
        near = d <= 0.5
        found = len(np.unique(j[near]))
        print(f"  {projector:10s}: RESIRE {rec['params'].get('seconds', float('nan')):6.1f} s, R {rec['params']['r_final']:.4f}; "
              f"{len(cand)} candidates, {found}/{truth.sizes['atom']} truth atoms within 0.5 Å, "
              f"RMS {100 * np.sqrt(np.mean(d[near] ** 2)):.1f} pm")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=280)
    ap.add_argument("--projections", type=int, default=55)
    ap.add_argument("--radius", type=float, default=15.0)
    ap.add_argument("--dose", type=float, default=1.7e4)
    ap.add_argument("--skip-general-size", action="store_true", help="time the shear-warp projector only")
    ap.add_argument("--skip-accuracy", action="store_true")
    args = ap.parse_args()
    from aetdask.io import read_angles
    from aetdask.schema import as_euler

    euler = as_euler(read_angles(SEED / "CoPdPt_Angle_Dose1p7e4.mat"))
    print(f"{platform.machine()}, {numba.get_num_threads()} Numba threads; {args.size}³ float32, "
          f"{args.projections} projections (CoPdPt angles, |φ| ≤ {np.abs(euler[:, 0]).max():.1f}°, "
          f"|ψ| ≤ {np.abs(euler[:, 2]).max():.1f}°)")
    timing(args.size, args.projections, euler, args.skip_general_size)
    if not args.skip_accuracy:
        accuracy(args.radius, args.dose)


if __name__ == "__main__":
    main()
