"""Recorded shifts and the tilt axis on the seed paper's 1.6×10⁴ e⁻/Å² a-Si series (128², 60 tilts).

Runs the real preprocessing stage (default parameters) on the seed series moved by seeded whole-pixel
shifts (``--shift`` px at most, per axis and projection; circular, so the counts are exactly the
seed's) and on series whose tilt axis is turned in-plane by known angles (``--angles``; simulated from
the seed's ground truth at its dose, see :func:`turned`), and prints one table:

* shift error: ``recorded + applied``, less what a rigid translation of the whole object does to every
  projection (a shift along x, and ``a·cos θ + b·sin θ + c`` across it: the object's centre is a
  convention, :func:`aetdask.geometry.rigid_motion_basis`), RMS per axis (px). The seed's own
  projections are aligned, so this is the error of the recorded shifts;
* the slope of recorded against −applied (1 = no pull towards zero);
* consistency: ``recorded(shifted) + applied − recorded(as given)``, less the rigid translation, RMS per
  axis: how exactly the recorded shifts follow the applied ones on the same counts;
* the tilt axis found from the data, as the preprocessing stage records it (``tilt_axis_found``:
  :func:`aetdask.kernels.preprocessing.tilt_axis.estimate_tilt_axis` on each image less its median, with its
  noise power read from its FFT), degrees from x towards +y, its standard error and its error against the turn; and, given the
  turn (``preprocess.tilt_axis``, carried in the Euler angles) or found by the stage itself
  (``preprocess.find_tilt_axis``, ``--tilt-axis auto``), the error of its
  recorded shifts (turned back to the detector's own axes).

With ``--refine`` it then runs ``aetdask run`` (local cluster, a store in a temporary folder) on the series
as given, on it moved by ±``--shift`` px, and on two independent halves of its counts (binomial thinning), and
scores the offsets the coordinate refinement ends with (``offset_y``/``offset_x`` of the ``refined``
product: each projection's shift fitted with the atoms to the counts) the same way; the halves' offsets are
compared with each other — their difference is noise alone, and ``RMS(A − B) / 2`` is the noise of one
projection's offset in the full series, whatever estimator: the floor a per-projection shift cannot go below.

Example::

    python benchmarks/bench_tilt_axis.py --shift 5 --angles 1 5 30
    python benchmarks/bench_tilt_axis.py --shift 5 --angles --refine
"""

from __future__ import annotations

import argparse
import pathlib
import time

import dask
import numpy as np

from aetdask.geometry import remove_rigid_motion, rigid_motion_basis
from aetdask.io import read_atoms, read_tilt_series
from aetdask.kernels.preprocessing.tilt_axis import turned_angles
from aetdask.preprocess import preprocess
from aetdask.simulate import linear

SEED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference" / "seed-paper"


def _run(series, **kw):
    t = time.perf_counter()
    out = preprocess(series, **kw).compute()
    return out, time.perf_counter() - t


def shifted(raw, seed, most):
    """The series with each projection rolled by seeded whole pixels in ±``most`` (y, x), and those shifts."""
    applied = np.random.default_rng(seed).integers(-most, most + 1, size=(raw.sizes["tilt"], 2))
    data = np.stack([np.roll(p, tuple(a), axis=(0, 1)) for p, a in zip(raw.values, applied)])
    return raw.copy(data=data), applied.astype(float)


def turned(raw, angle, truth):
    """The seed series as the microscope would give it with its tilt axis at ``angle`` degrees in the
    image: the seed's ground truth projected at the seed's angles on a detector turned by ``angle``
    (:func:`aetdask.kernels.preprocessing.tilt_axis.turned_angles`), Poisson counts at the seed's dose on its
    background of 1 count (resampling the seed's noisy counts instead would smooth their noise),
    with the untuned angles in the file, as a microscope's would be."""
    euler = np.c_[raw.phi.values, raw.theta.values, raw.psi.values]
    sim = linear(truth, angles=turned_angles(euler, angle), pixel_size=float(raw.attrs["pixel_size"]),
                 shape=raw.sizes["y"], dose=1.6e4, background=1.0, seed=int(round(angle * 10)) % 2**31).compute()
    return raw.copy(data=sim.values.astype(np.float32))


def shift_errors(recorded, applied, theta, reference=None):
    """RMS per axis (y, x) of ``recorded + applied`` (less ``reference``) less the rigid translation."""
    d = recorded + applied - (0.0 if reference is None else reference)
    err = remove_rigid_motion(d, rigid_motion_basis(theta)[1])
    return np.sqrt((err**2).mean(axis=0))


def refined_offsets(series, work, label):
    """``aetdask run`` on ``series`` (a store under ``work``): the shifts the coordinate refinement ends with,
    (n, 2) px (y, x), as recorded shifts (the negated offsets)."""
    import subprocess
    import sys

    from aetdask.io import RunStore
    from aetdask.schema import last_record

    tilts, store = work / f"{label}.npy", work / f"{label}.zarr"
    np.save(tilts, series.values.astype(np.float32))
    angles = work / "angles.txt"
    np.savetxt(angles, np.c_[series.phi.values, series.theta.values, series.psi.values], header="phi theta psi")
    done = subprocess.run([sys.executable, "-m", "aetdask.cli", "run", str(tilts), "--angles", str(angles),
                           "--pixel-size", str(series.attrs["pixel_size"]), "--species", "Si", "--out", str(store)],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"aetdask run failed:\n{done.stderr[-2000:]}")
    params = last_record(RunStore(store, create=False).read("refined"), "refine")
    return -np.c_[params["offset_y"], params["offset_x"]]


def refine_rows(raw, most, theta):
    """Rows of the refined offsets' errors: as given, shifted, and the noise floor from two halves of the counts."""
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory(prefix="aetdask-shifts-") as tmp:
        work = pathlib.Path(tmp)
        t = time.perf_counter()
        given = refined_offsets(raw, work, "given")
        rows.append(("as given, coordinate refinement's offsets", "{:.3f} / {:.3f}".format(*shift_errors(given, 0.0, theta)),
                     "—", "—", "", time.perf_counter() - t))
        series, app = shifted(raw, 0, most)
        t = time.perf_counter()
        moved = refined_offsets(series, work, "shifted")
        slope = [np.polyfit(-app[:, i], moved[:, i], 1)[0] for i in range(2)]
        rows.append((f"shifted ±{most} px, coordinate refinement's offsets",
                     "{:.3f} / {:.3f}".format(*shift_errors(moved, app, theta)), "{:.3f} / {:.3f}".format(*slope),
                     "{:.3f} / {:.3f}".format(*shift_errors(moved, app, theta, given)), "", time.perf_counter() - t))
        counts = np.rint(np.clip(raw.values, 0, None)).astype(np.int64)
        half = np.random.default_rng(1).binomial(counts, 0.5)
        t = time.perf_counter()
        a = refined_offsets(raw.copy(data=half.astype(np.float32)), work, "half_a")
        b = refined_offsets(raw.copy(data=(counts - half).astype(np.float32)), work, "half_b")
        basis = rigid_motion_basis(theta)[1]
        a, b = remove_rigid_motion(a, basis), remove_rigid_motion(b, basis)
        corr = [np.corrcoef(a[:, i], b[:, i])[0, 1] for i in range(2)]
        floor = np.sqrt(((a - b) ** 2).mean(axis=0)) / 2
        rows.append((f"two halves of the counts: noise of one offset in the full series, RMS(A − B)/2 "
                     f"(halves correlate {corr[0]:+.2f} / {corr[1]:+.2f})", "{:.3f} / {:.3f}".format(*floor), "—", "—",
                     "", time.perf_counter() - t))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed-dir", type=pathlib.Path, default=SEED)
    ap.add_argument("--shift", type=int, nargs="*", default=[5], help="largest whole-pixel shifts per axis")
    ap.add_argument("--seeds", type=int, default=1, help="shifted copies per --shift")
    ap.add_argument("--angles", type=float, nargs="*", default=[1.0, 5.0, 30.0], help="in-plane turns (degrees)")
    ap.add_argument("--scheduler", default="threads")
    ap.add_argument("--refine", action="store_true",
                    help="also score the coordinate refinement's offsets (aetdask run) and the noise floor")
    args = ap.parse_args(argv)
    dask.config.set(scheduler=args.scheduler)
    raw = read_tilt_series(args.seed_dir / "aSi_2nmFosCetr_Dose1p6e4_cov35pm_ForBM3D.mat",
                           angles=args.seed_dir / "Si_Angle.mat", pixel_size=0.195).compute()
    theta = raw.theta.values
    truth = read_atoms(args.seed_dir / "aSi_208atoms_GT.txt")
    rows = []

    def axis(product, angle=0.0):
        # the estimate the preprocessing stage records, whatever axis it was given
        found, se = float(product.tilt_axis_found), float(product.tilt_axis_found_se)
        return f"{found:+.3f} ± {se:.3f} (error {found - angle:+.3f})"

    base, t = _run(raw)
    ref = np.c_[base.shift_y.values, base.shift_x.values]
    rows.append(("as given", "{:.3f} / {:.3f}".format(*shift_errors(ref, 0.0, theta)), "—", "—", axis(base), t))
    for most in args.shift:
        for seed in range(args.seeds):
            series, app = shifted(raw, seed, most)
            out, t = _run(series)
            found = np.c_[out.shift_y.values, out.shift_x.values]
            slope = [np.polyfit(-app[:, i], found[:, i], 1)[0] for i in range(2)]
            rows.append((f"shifted ±{most} px (seed {seed})", "{:.3f} / {:.3f}".format(*shift_errors(found, app, theta)),
                         "{:.3f} / {:.3f}".format(*slope),
                         "{:.3f} / {:.3f}".format(*shift_errors(found, app, theta, ref)), "", t))
    for angle in args.angles:
        series = turned(raw, angle, truth)
        out, t = _run(series, tilt_axis=angle)
        a = np.deg2rad(angle)  # the given series' shifts, turned with the detector, are the reference
        turn = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
        found = np.c_[out.shift_y.values, out.shift_x.values] @ turn  # back to the untuned detector's (y, x)
        rows.append((f"turned {angle:+g}° (simulated from the truth), axis given",
                     "{:.3f} / {:.3f}".format(*shift_errors(found, 0.0, theta)), "", "", axis(out, angle), t))
        # the axis not given: found from the images (preprocess.find_tilt_axis), as `--tilt-axis auto` runs it
        out, t = _run(series, find_tilt_axis=True)
        found = np.c_[out.shift_y.values, out.shift_x.values] @ turn
        rows.append((f"turned {angle:+g}°, axis found (`--tilt-axis auto`)",
                     "{:.3f} / {:.3f}".format(*shift_errors(found, 0.0, theta)), "", "", axis(out, angle), t))
    if args.refine:
        rows += refine_rows(raw, max(args.shift or [5]), theta)
    head = ("series", "shift error y / x (px RMS)", "slope y / x", "consistency y / x (px RMS)", "tilt axis (°)",
            "wall (s)")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(str(v) for v in r[:-1]) + f" | {r[-1]:.1f} |")


if __name__ == "__main__":
    main()
