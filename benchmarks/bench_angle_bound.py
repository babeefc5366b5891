"""How precisely can a tilt series' counts fix each projection's orientation? The Cramér–Rao bound.

    python benchmarks/bench_angle_bound.py STORE [--angles TRUE_ANGLES] [--poisson]

STORE is a run store whose coordinate refinement was fitted to raw counts (``aetdask run``);
``aetdask.model.bound.orientation_bound`` computes the bound from its refined model and the noise
that preprocessing estimated (``--poisson``: pure Poisson counts instead). It bounds the scatter of
any unbiased estimate of each projection's orientation **with the atoms known exactly**: a real
refinement, which must find the atoms from the same counts, can only do worse.

With ``--angles`` (the true angles, any file ``aetdask.io.read_angles`` reads), the angles in
the store (those of the RESIRE refinement, and those of the coordinate refinement when it refined
them) are scored against them as in ``bench_refine.py``, beside the bound.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def main():
    from aetdask.io import RunStore, read_angles
    from aetdask.model.bound import orientation_bound
    from aetdask.schema import last_record

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("store")
    ap.add_argument("--angles", metavar="FILE", help="the true angles, to score the store's angles against the bound")
    ap.add_argument("--poisson", action="store_true",
                    help="pure Poisson counts (α = 1, σ = 0) instead of the noise that preprocessing estimated")
    args = ap.parse_args()
    t0 = time.perf_counter()
    store = RunStore(args.store, create=False)
    raw, pre, model = store.read("raw"), store.read("preprocessed"), store.read("refined")
    p = last_record(model, "refine")
    bound = orientation_bound(model, pre, poisson=args.poisson)  # (tilt, 3) degrees
    n_tilt, n, pixel = raw.sizes["tilt"], raw.sizes["y"], float(raw.attrs["pixel_size"])
    alpha, sigma = pre.noise_alpha.values, pre.noise_sigma.values
    k_comp = p.get("components", 1)
    bg = np.asarray(p["background"])
    parts = np.sqrt((bound**2).mean(axis=0))
    total = np.sqrt((bound**2).sum(axis=1).mean())
    dose = float((np.asarray(raw.values, dtype=float) - bg[:, None, None]).sum(axis=(1, 2)).mean())
    print(f"{args.store}: {n_tilt} projections of {n}² px at {pixel} Å, {len(model.position)} atoms, "
          f"{k_comp} Gaussian(s) per atom; about {dose:.3g} counts above background per projection; noise "
          + ("Poisson" if args.poisson else f"α ≈ {np.median(alpha):.3g}, σ ≈ {np.median(sigma):.3g} (preprocessing)"))
    print(f"Cramér–Rao bound per projection, atoms known: rotation RMS {total:.3f}° (about the detector's x axis "
          f"{parts[0]:.3f}°, y axis {parts[1]:.3f}°, the beam {parts[2]:.3f}°); "
          f"the best projection {np.sqrt((bound**2).sum(1)).min():.3f}°, "
          f"the worst {np.sqrt((bound**2).sum(1)).max():.3f}°")
    if args.angles:
        from bench_refine import rotation_error

        truth = read_angles(args.angles)
        found = {"RESIRE refinement (stored with the preprocessed series)": np.c_[pre.phi, pre.theta, pre.psi]}
        if "theta" in p:
            found["coordinate refinement"] = np.c_[p["phi"], p["theta"], p["psi"]]
        for name, est in found.items():
            geo, err = rotation_error(truth, est)
            print(f"  {name}: rotation error {geo:.3f}° ({err[0]:.3f}° / {err[1]:.3f}° / {err[2]:.3f}°)")
    print(f"{time.perf_counter() - t0:.1f} s; {platform.machine()}, {platform.python_version()}")


if __name__ == "__main__":
    main()
