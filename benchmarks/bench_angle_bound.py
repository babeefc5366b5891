"""How precisely can a tilt series' counts fix each projection's orientation? The Cramér–Rao bound.

    python benchmarks/bench_angle_bound.py STORE [--angles TRUE_ANGLES]

STORE is a run store whose coordinate refinement was fitted to raw counts (``aetdask run``). Its
refined model (atoms, profiles, per-projection background, scale and offsets, as fitted) predicts
the mean counts ``μ`` of every pixel; the noise is Poisson–Gaussian with the variance
``α μ + σ²`` that preprocessing estimated. For each projection the Fisher information of seven
parameters is summed over its pixels, ``F = Jᵀ diag(1 / var) J``: small rotations of the object
about the detector's two axes and the beam (``J`` by central differences of the rendered model),
and the nuisances that every projection carries too (shift in y and x, scale, background). The
rotation block of ``F⁻¹`` bounds the variance of any unbiased estimate of that projection's
orientation, **with the atoms known exactly**: a real refinement, which must find the atoms from
the same counts, can only do worse.

With ``--angles`` (the true angles, any file ``aetdask.io.read_angles`` reads), the angles in
the store (those of the RESIRE refinement, and those of the coordinate refinement when it refined
them) are scored against them as in ``bench_refine.py``, beside the bound.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def rotate_about(q, axis, h):
    """Rotate detector-frame points ``q`` (..., 3) by ``h`` radians about detector axis ``axis`` (0 x, 1 y, 2 beam)."""
    i, j = [a for a in range(3) if a != axis]
    c, s = np.cos(h), np.sin(h)
    out = q.copy()
    out[..., i] = c * q[..., i] - s * q[..., j]
    out[..., j] = s * q[..., i] + c * q[..., j]
    return out


def main():
    from aetdask.geometry import projection_matrices
    from aetdask.io import RunStore, read_angles
    from aetdask.kernels import gaussian_atoms
    from aetdask.model.refine import profile_of
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
    if p.get("likelihood") != "poisson-gaussian":
        raise SystemExit(f"{args.store}: the coordinate refinement was not fitted to counts; no noise model to bound")
    n_tilt, n = raw.sizes["tilt"], raw.sizes["y"]
    pixel = float(raw.attrs["pixel_size"])
    angles = np.c_[p["phi"], p["theta"], p["psi"]] if "theta" in p else np.c_[pre.phi, pre.theta, pre.psi]
    a = projection_matrices(angles)
    q = np.einsum("tij,nj->tni", a, model.position.values)  # (x_det, y_det, depth), Å
    heights, widths = profile_of(p, model.species.values)  # (atoms, components)
    k_comp = heights.shape[1]
    offset = np.c_[p["offset_y"], p["offset_x"]][:, None, :]
    bg, scale = np.asarray(p["background"]), np.asarray(p["scale"])

    def render(points):
        det = points[..., [1, 0]] / pixel + n // 2 + offset
        img = gaussian_atoms.render(np.repeat(det, k_comp, axis=1), heights.ravel(), widths.ravel() / pixel, (n, n))
        return np.asarray(img, dtype=float)

    atoms = render(q)
    mu = bg[:, None, None] + scale[:, None, None] * atoms
    alpha = np.ones(n_tilt) if args.poisson else np.asarray(pre.noise_alpha.values, dtype=float)
    sigma = np.zeros(n_tilt) if args.poisson else np.asarray(pre.noise_sigma.values, dtype=float)
    var = np.maximum(alpha[:, None, None] * mu + sigma[:, None, None] ** 2, 1e-12)
    h = np.deg2rad(0.05)
    cols = []
    for axis in range(3):
        d = render(rotate_about(q, axis, h)) - render(rotate_about(q, axis, -h))
        cols.append(scale[:, None, None] * d / (2 * h) * np.pi / 180)  # per degree
    gy, gx = np.gradient(atoms, axis=(1, 2))
    cols += [scale[:, None, None] * gy, scale[:, None, None] * gx, atoms, np.ones_like(atoms)]
    jac = np.stack([c.reshape(n_tilt, -1) for c in cols], axis=2)  # (tilt, pixels, 7)
    fisher = np.einsum("tpi,tp,tpj->tij", jac, 1.0 / var.reshape(n_tilt, -1), jac)
    bound = np.sqrt(np.stack([np.diag(np.linalg.inv(f))[:3] for f in fisher]))  # (tilt, 3) degrees
    parts = np.sqrt((bound**2).mean(axis=0))
    total = np.sqrt((bound**2).sum(axis=1).mean())
    dose = float((np.asarray(raw.values, dtype=float) - bg[:, None, None]).sum(axis=(1, 2)).mean())
    print(f"{args.store}: {n_tilt} projections of {n}² px at {pixel} Å, {len(model.position)} atoms, "
          f"{k_comp} Gaussian(s) per atom; about {dose:.3g} counts above background per projection; noise "
          + ("Poisson" if args.poisson else f"α ≈ {np.median(alpha):.3g}, σ ≈ {np.median(sigma):.3g} (preprocessing)"))
    print(f"Cramér–Rao bound per projection, atoms known: rotation RMS {total:.3f}° (about the detector's x axis "
          f"{parts[0]:.3f}°, y axis {parts[1]:.3f}°, the beam {parts[2]:.3f}°); the best projection {np.sqrt((bound**2).sum(1)).min():.3f}°, "
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
