"""How close the seed paper's own angle refinement came to the true angles, on the same measure.

The seed paper's CoPdPt tilt series (55 projections) was simulated at known angles
(``CoPdPt_Angle_Dose1p7e4.mat``); its "experimental" angles (``CoPdPt_ExperimentalAngles.mat``)
carry errors, and RESIRE's refinement turned them into ``CoPdPt_RefinedAngles.mat``. This prints
the rotation error of both against the truth, with the common rotation taken out, split into its
parts about the tilt axis, the detector's other axis and the beam — the measure of
``bench_refine.py`` — so that aetdask's refinement can be set beside the paper's.

Run: python benchmarks/paper_refined_angles.py [DIR]   (default ../shared/reference/seed-paper)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from aetdask.io._mat import read_mat
from bench_refine import rotation_error


def main():
    here = Path(__file__).resolve().parent
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else here.parent.parent / "shared" / "reference" / "seed-paper"
    truth = np.asarray(read_mat(folder / "CoPdPt_Angle_Dose1p7e4.mat")["angles_refined_out"], dtype=float)
    given = np.asarray(read_mat(folder / "CoPdPt_ExperimentalAngles.mat")["angle1"], dtype=float)
    refined = np.asarray(read_mat(folder / "CoPdPt_RefinedAngles.mat")["Angle_OPT"], dtype=float)
    print(f"{len(truth)} projections, θ {truth[:, 1].min():.1f}…{truth[:, 1].max():.1f}°")
    for label, est in (("experimental", given), ("refined (paper)", refined)):
        geo, parts = rotation_error(truth, est)
        print(f"{label}: rotation error RMS {geo:.3f}° (about the tilt axis {parts[0]:.3f}°, "
              f"the detector's other axis {parts[1]:.3f}°, the beam {parts[2]:.3f}°)")


if __name__ == "__main__":
    main()
