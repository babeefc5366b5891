"""Accuracy of the tilt-series geometry refinement (angles, shifts) on a simulated series.

A Pt/Si particle → noise-free ``simulate.linear`` projections at θ evenly over 0…180° (default 30: 0, 6, …, 174°) →
known shifts (uniform ±1.5 px) and Euler-angle errors (θ ~ N(0, 0.5°), φ, ψ ~ N(0, 0.3°))
→ ``reconstruct.refine`` → the error of each projection's refined orientation, after the
rotation of the whole object (which no data can fix) is taken out:

* as a rotation: each projection's error rotation ``ω_k`` (sample frame, from ``Aᵀ_true A``),
  less their mean (the common rotation); its RMS angle (geodesic) and its RMS parts about the
  tilt axis, about the detector's other axis and about the beam. This is the error that
  matters and it does not depend on the Euler convention;
* per Euler angle (φ, θ, ψ), with the global rotation fitted in angle space. In this
  convention a rotation about the beam at tilt θ shows in φ magnified 1/|cos θ| and in ψ
  by |tan θ| (at θ = ±90°, a gimbal lock, only φ − ψ is defined), so for a series through
  ±90° the RMS of φ and ψ overstates the orientation error;

the shifts' RMS error, and the part of the θ error that is a smooth ``a cos 2θ + b sin 2θ``
pattern, the slowest direction of the refinement (see docs/angle-refinement.md).

Run: python benchmarks/bench_refine.py [--atoms 40] [--fov 16] [--pixel 0.4] [--projections 30] [--rounds 10]
     [--iterations 40] [--momentum 0.8] [--angle-error 1] [--shift-error 1.5] [--strain C=VALUE] [--seed 0]
     [--model ATOMS --angles ANGLES] [--species Pt,Si] [--atom-fit [--components K]] [--track] [--save FILE.npz]

``--model`` takes any atomic model that ``aetdask.io.read_atoms`` reads, ``--angles`` any angle
file that ``read_angles`` reads (the true angles). The seed paper's 208-atom Si particle in its
own geometry (60 projections, 0.195 Å, 128² px):

    python benchmarks/bench_refine.py --model ../shared/reference/seed-paper/aSi_208atoms_GT.txt \
        --angles ../shared/reference/seed-paper/Si_Angle.mat --pixel 0.195 --fov 24.96

``--track`` prints the rotation error after every round (its parts about the three axes),
to see which part converges slowly; ``--angle-error 0 --shift-error 0`` starts at the truth
(does the refinement stay there?); ``--angle-error 0 --shift-error 0 --strain yz=2e-3`` starts
from nothing but a deformation-like θ pattern (how fast is the slowest direction removed?);
``--save`` keeps the true, given and refined geometry. ``--atom-fit`` then traces and classifies
the refined volume and fits the atoms to every projection with the angles free
(``aetdask.model.refine(angles=True)``, the coordinate refinement's option, with its search along
the deformation patterns), and reports those angles too; ``--components`` sets its Gaussians per atom
profile (default with angles: a core and a tail Gaussian).
"""

from __future__ import annotations

import argparse
import os
import platform
import time


def low_order(theta_deg, err):
    """(a, b) of the least-squares fit ``c + a cos 2θ + b sin 2θ`` to ``err`` (degrees)."""
    import numpy as np

    t = np.radians(theta_deg)
    basis = np.c_[np.ones_like(t), np.cos(2 * t), np.sin(2 * t)]
    coef, *_ = np.linalg.lstsq(basis, err, rcond=None)
    return coef[1], coef[2]


def rotation_error(truth, est):
    """Per-projection error rotation (degrees, sample frame) less the common one: its RMS angle and
    its RMS parts about the tilt axis, the detector's other axis and the beam."""
    import numpy as np
    from scipy.spatial.transform import Rotation

    from aetdask.geometry import projection_matrices

    true_m = projection_matrices(truth)
    omega = Rotation.from_matrix(np.transpose(true_m, (0, 2, 1)) @ projection_matrices(est)).as_rotvec()
    omega -= omega.mean(axis=0)  # the common rotation of the object
    geo = np.degrees(np.sqrt((omega**2).sum(axis=1).mean()))
    parts = np.degrees(np.sqrt((np.einsum("kij,kj->ki", true_m, omega) ** 2).mean(axis=0)))
    return geo, parts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=40, help="atoms of the random particle")
    parser.add_argument("--model", metavar="ATOMS", help="an atomic model file instead of the random particle")
    parser.add_argument("--angles", metavar="FILE", help="the true angles from a file (default: θ evenly over 0…180°)")
    parser.add_argument("--fov", type=float, default=16.0, help="field of view (Å)")
    parser.add_argument("--pixel", type=float, default=0.4, help="pixel size (Å)")
    parser.add_argument("--projections", type=int, default=30, help="tilts evenly over 0…180° (60: the seed paper's 3° steps)")
    parser.add_argument("--angle-error", type=float, default=1.0,
                        help="scale of the angle errors put in (0: start at the true angles)")
    parser.add_argument("--shift-error", type=float, default=1.5, help="largest shift put in (px)")
    parser.add_argument("--strain", metavar="C=VALUE", action="append", default=[],
                        help="add the angle pattern of a deformation of the object (C one of xx, yy, zz, yz, xz, xy; "
                             "e.g. yz=2e-3: θ errors ∝ cos 2θ), the refinement's slowest direction; repeatable")
    parser.add_argument("--species", default="Pt,Si", help="elements of the random particle (comma-separated)")
    parser.add_argument("--atom-fit", action="store_true",
                        help="then trace and classify the refined volume and fit the atoms with every projection's "
                             "angles free (aetdask.model.refine(angles=True), with its deformation search)")
    parser.add_argument("--components", type=int, default=None,
                        help="with --atom-fit: Gaussians per atom profile (default: config refine_atoms.components)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--momentum", type=float, default=None, help="default: config refine.momentum")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--projector", choices=["auto", "shear-warp", "general"], default=None,
                        help="reconstruct.projector for the Euler-angle rounds (default: config)")
    parser.add_argument("--save", metavar="FILE.npz", help="save the true, given and refined angles and shifts")
    parser.add_argument("--track", action="store_true", help="print the rotation error after every round")
    a = parser.parse_args()

    import numpy as np

    from aetdask.geometry import (STRAIN_COMPONENTS, deformation_directions, remove_rigid_motion, rigid_motion_basis,
                                  strain_basis, strain_matrix)
    from aetdask.io import read_angles, read_atoms
    from aetdask.kernels.preprocessing.shift import fourier_shift
    from aetdask.reconstruct.refine import refine_geometry as refine
    from aetdask.simulate import amorphous_particle, linear

    rng = np.random.default_rng(a.seed)
    if a.model:
        model = read_atoms(a.model)
        model = model.assign(position=model.position - model.position.mean("atom"))
    else:
        model = amorphous_particle(a.atoms, species=a.species.split(","), seed=5)
    if a.angles:
        truth = read_angles(a.angles)
        n = len(truth)
    else:
        n = a.projections
        truth = np.c_[np.zeros(n), np.arange(n) * 180.0 / n, np.zeros(n)]
    shape = int(round(a.fov / a.pixel))
    ts = linear(model, angles=truth, pixel_size=a.pixel, shape=shape).compute()
    shifts = rng.uniform(-a.shift_error, a.shift_error, (n, 2))
    ts = ts.copy(data=fourier_shift(ts.values, shifts))
    given = truth + a.angle_error * np.c_[rng.normal(0, 0.3, n), rng.normal(0, 0.5, n), rng.normal(0, 0.3, n)]
    if a.strain:
        eps = np.zeros(6)
        for item in a.strain:
            name, _, value = item.partition("=")
            if name not in STRAIN_COMPONENTS or not value:
                parser.error(f"--strain {item!r}: expected C=VALUE with C one of {', '.join(STRAIN_COMPONENTS)}")
            eps[STRAIN_COMPONENTS.index(name)] += float(value)
        given = given + strain_basis(truth)[0] @ eps
    ts = ts.assign_coords(phi=("tilt", given[:, 0]), theta=("tilt", given[:, 1]), psi=("tilt", given[:, 2]))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores")
    print(f"model: {a.model or 'random ' + a.species.replace(',', '/') + ' particle'}, {model.sizes['atom']} atoms; "
          f"{n} projections "
          f"θ {truth[:, 1].min():g}…{truth[:, 1].max():g}°, {shape}² px of {a.pixel} Å; "
          f"{a.rounds} rounds × {a.iterations} RESIRE iterations")
    def track(record, tilts):
        if a.track:
            geo, parts = rotation_error(truth, np.c_[tilts.phi, tilts.theta, tilts.psi])
            print(f"  after round {record['round']}: rotation error {geo:.4f}° (tilt axis {parts[0]:.4f}°, "
                  f"other axis {parts[1]:.4f}°, beam {parts[2]:.4f}°)", flush=True)

    t0 = time.perf_counter()
    from aetdask import config

    with config.set({"reconstruct.projector": a.projector} if a.projector else {}):
        volume, out = refine(ts, rounds=a.rounds, iterations=a.iterations, momentum=a.momentum, on_round=track)
    seconds = time.perf_counter() - t0
    fitted = None
    if a.atom_fit:
        from aetdask.model import classify, trace
        from aetdask.model import refine as fit_atoms

        t1 = time.perf_counter()
        names = sorted(set(model.species.values.astype(str)))
        found = classify(trace(volume, names), names)
        res = fit_atoms(found, out, angles=True, select=False, components=a.components, progress=True)
        p = res.attrs["provenance"][-1]["params"]
        fitted = np.c_[p["phi"], p["theta"], p["psi"]]
        fit_seconds = time.perf_counter() - t1
        fit_info = (f"{found.sizes['atom']} atoms traced and classified of {model.sizes['atom']}; "
                    f"{p['components']} Gaussian(s) per atom, R {p['r_factor']:.4f}; deformation search "
                    f"strain {np.round(np.asarray(p['deformation_search_strain']) * 1e3, 2)} ×10⁻³")
    rotation, translation = rigid_motion_basis(truth)

    def report(label, est):
        d = remove_rigid_motion(est - truth, rotation)
        rms = np.sqrt((d**2).mean(axis=0))
        a_b = low_order(truth[:, 1], d[:, 1])
        geo, parts = rotation_error(truth, est)
        print(f"{label}: rotation error RMS {geo:.3f}° (about the tilt axis {parts[0]:.3f}°, "
              f"the detector's other axis {parts[1]:.3f}°, the beam {parts[2]:.3f}°); per Euler angle RMS "
              f"φ {rms[0]:.3f}°, θ {rms[1]:.3f}°, ψ {rms[2]:.3f}°; θ error's cos 2θ, sin 2θ parts "
              f"{a_b[0]:+.3f}°, {a_b[1]:+.3f}°")
        # the deformation-like part of the error stands for a deformed reconstruction: how far it moves the atoms
        collective, _, to_strain = deformation_directions(truth)
        eps = to_strain @ d.ravel()  # the refinement's own deformation coordinates
        moved = np.linalg.norm(atoms @ strain_matrix(eps), axis=1) * 100  # pm
        print(f"         deformation-like part: strain {np.round(eps * 1e3, 2)} ×10⁻³ ({', '.join(STRAIN_COMPONENTS)}), "
              f"moves the atoms {np.sqrt((moved**2).mean()):.1f} pm RMS, {moved.max():.1f} pm at most")
        rest, rest_parts = rotation_error(truth, truth + d - (collective @ eps).reshape(-1, 3))
        print(f"         the rest (error less its deformation-like part): rotation error RMS {rest:.3f}° "
              f"({rest_parts[0]:.3f}° / {rest_parts[1]:.3f}° / {rest_parts[2]:.3f}°)")

    atoms = model.position.values - model.position.values.mean(axis=0)  # Å, about the centre
    report("given  ", given)
    report("refined", np.c_[out.phi, out.theta, out.psi])
    if fitted is not None:
        print(f"atom fit: {fit_info}")
        report("atom-fit", fitted)
    err = remove_rigid_motion(np.c_[out.shift_y, out.shift_x] + shifts, translation)
    if a.save:
        np.savez(a.save, truth=truth, given=given, refined=np.c_[out.phi, out.theta, out.psi], shifts=shifts,
                 refined_shifts=np.c_[out.shift_y, out.shift_x], scale=np.asarray(out.scale))
    print(f"shifts: RMS error {np.sqrt((err**2).mean(axis=0)).max():.3f} px (up to a global translation)")
    for h in out.attrs["provenance"][-1]["params"]["history"]:
        print("  round", h)
    print(f"refinement: {seconds:.1f} s" + (f"; atom fit {fit_seconds:.1f} s" if fitted is not None else ""))


if __name__ == "__main__":
    main()
