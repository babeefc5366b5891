"""Refinement of the tilt-series geometry against the current reconstruction.

Each round reconstructs with the current geometry, then, per projection:

* **shift** — cross-correlation (sub-pixel, upsampled) of the measured image
  with the reprojection of the volume;
* **scale** — least-squares factor s with s·b ≈ Π O;
* **angles** — the seed paper's grid search: for each of θ, φ, ψ in turn, the
  projection is recomputed at a small grid of offsets around the current angle
  and the offset with the lowest residual is kept, then refined by a parabola
  through the best grid point and its neighbours (the squared residual is
  smooth in the angle, the L1 R-factor is not).

A global rotation about the tilt axis, a global in-plane translation and a
global intensity scale cannot be told from the data (they move or brighten the
object as a whole), so the mean θ and φ corrections, the mean shift and the
mean scale are held at their input values: the user's angles fix the frame.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from skimage.registration import phase_cross_correlation

from aetdask import config
from aetdask.reconstruct.projectors import EulerProjector
from aetdask.reconstruct.runner import Executor, split
from aetdask.reconstruct.stage import euler_angles, prepared_projections, reconstruct
from aetdask.schema import add_provenance


def _search_angles(volume, measured, euler, indices, offsets, subsamples):
    """Best (φ, θ, ψ) per projection by a one-angle-at-a-time grid search with a parabolic step."""
    out = np.array(euler, dtype=float)
    dy, dx = measured.shape[1:]
    for k in range(len(indices)):
        for comp in (1, 0, 2):  # θ first: it matters most
            cands = np.repeat(out[k][None], len(offsets), axis=0)
            cands[:, comp] += offsets
            proj = EulerProjector(cands, (dy, dx), volume.shape, subsamples).forward(volume)
            cost = ((proj - measured[k][None]) ** 2).sum(axis=(1, 2), dtype=float)
            i = int(np.argmin(cost))
            step = offsets[1] - offsets[0]
            delta = offsets[i]
            if 0 < i < len(offsets) - 1:
                c0, c1, c2 = cost[i - 1], cost[i], cost[i + 1]
                curv = c0 - 2 * c1 + c2
                if curv > 0:
                    delta += 0.5 * step * (c0 - c2) / curv
            out[k, comp] += delta
    return out


def _shift_and_scale(measured, reprojected, upsample):
    shifts = np.zeros((len(measured), 2))
    scales = np.ones(len(measured))
    for k in range(len(measured)):
        shifts[k], _, _ = phase_cross_correlation(reprojected[k], measured[k], upsample_factor=upsample,
                                                  normalization=None)
        m = measured[k].astype(float)
        denom = float((m * m).sum())
        scales[k] = float((m * reprojected[k]).sum()) / denom if denom > 0 else 1.0
    return shifts, scales


def refine(
    tilts: xr.DataArray,
    *,
    rounds: int | None = None,
    iterations: int | None = None,
    angles: bool = True,
    shifts: bool = True,
    scales: bool = True,
    angle_step: float | None = None,
    angle_points: int | None = None,
    progress: bool = False,
):
    """Refine angles, shifts and scales; return ``(volume, refined tilt series)``.

    The refined tilt series carries the new ``phi, theta, psi`` and the
    ``shift_y``, ``shift_x`` (pixels) and ``scale`` coords on ``tilt``; its data
    are unchanged. The volume is the RESIRE reconstruction with the final
    geometry.
    """
    rounds = int(config.get("refine.rounds", rounds))
    iterations = int(config.get("refine.iterations", iterations))
    step = float(config.get("refine.angle_step", angle_step))
    points = int(config.get("refine.angle_points", angle_points))
    if points < 3 or points % 2 == 0:
        raise ValueError(f"angle_points: expected an odd number ≥ 3, got {points}")
    upsample = int(config.get("refine.shift_upsample"))
    subsamples = int(config.get("reconstruct.subsamples"))
    offsets = step * (np.arange(points) - points // 2)
    n = tilts.sizes["tilt"]
    current = tilts.copy()
    for name, value in (("shift_y", 0.0), ("shift_x", 0.0), ("scale", 1.0)):
        if name not in current.coords:
            current = current.assign_coords({name: ("tilt", np.full(n, value))})
    ex = Executor()
    history = []
    for r in range(rounds):
        vol = reconstruct(current, "resire", iterations, progress=progress)
        volume = np.asarray(vol.values)
        euler = euler_angles(current)
        measured = prepared_projections(current)
        reproj = EulerProjector(euler, measured.shape[1:], volume.shape, subsamples).forward(volume)
        record = {"round": r + 1, "r_factor": vol.attrs["provenance"][-1]["params"]["r_final"]}
        if shifts or scales:
            d_shift, d_scale = _shift_and_scale(measured, reproj, upsample)
            if shifts:
                d_shift -= d_shift.mean(axis=0)
                current = current.assign_coords(shift_y=current.shift_y + d_shift[:, 0],
                                                shift_x=current.shift_x + d_shift[:, 1])
                record["shift_rms_change"] = float(np.sqrt((d_shift**2).sum(axis=1).mean()))
            if scales:
                current = current.assign_coords(scale=current.scale * d_scale / d_scale.mean())
            measured = prepared_projections(current)
        if angles:
            vol_f = ex.scatter(volume)
            chunks = split(n, max(1, ex.workers) * 2)
            found = ex.gather([
                ex.submit(_search_angles, vol_f, measured[a:b], euler[a:b], range(b - a), offsets, subsamples)
                for a, b in chunks
            ])
            new = np.concatenate(found, axis=0)
            delta = new - euler
            delta[:, :2] -= delta[:, :2].mean(axis=0)  # hold the mean φ and θ (the frame)
            euler = euler + delta
            current = current.assign_coords(phi=("tilt", euler[:, 0]), theta=("tilt", euler[:, 1]),
                                            psi=("tilt", euler[:, 2]))
            record["angle_rms_change"] = float(np.sqrt((delta**2).sum(axis=1).mean()))
        history.append(record)
        if progress:
            print(f"refinement round {r + 1}/{rounds}: {record}")
    volume = reconstruct(current, "resire", config.get("reconstruct.iterations"), progress=progress)
    params = {"rounds": rounds, "iterations": iterations, "angles": angles, "shifts": shifts, "scales": scales,
              "angle_step": step, "angle_points": points, "history": history}
    current = add_provenance(current, "reconstruct.refine", params)
    volume = add_provenance(volume, "reconstruct.refine", params)
    return volume, current
