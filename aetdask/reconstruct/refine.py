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

A rigid motion of the whole object (3 rotations, 3 translations) and a global
intensity scale cannot be told from the data: they change every projection's
angles and shifts in a fixed, correlated way
(:func:`aetdask.geometry.rigid_motion_basis`). Those components are removed
from every correction, so the object keeps the frame of the input angles.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from skimage.registration import phase_cross_correlation

from aetdask import config
from aetdask.errors import InputError
from aetdask.reconstruct.anderson import AndersonMixer
from aetdask.reconstruct.projectors import EulerProjector, is_single_axis
from aetdask.reconstruct.runner import Executor, split
from aetdask.reconstruct.stage import euler_angles, prepared_projections, reconstruct
from aetdask.geometry import deformation_directions, remove_rigid_motion, rigid_motion_basis
from aetdask.kernels.preprocessing.shift import fourier_shift
from aetdask.schema import add_provenance



def _register(reference, image, upsample):
    """Sub-pixel shift (dy, dx) that moves ``image`` onto ``reference``, and the squared residual after it."""
    shift, _, _ = phase_cross_correlation(reference, image, upsample_factor=upsample, normalization=None)
    moved = fourier_shift(image[None], shift[None])[0]
    return shift, float(((moved - reference) ** 2).sum())


def _polish(volume, image, euler, shift, subsamples, iterations=6, h=0.02, method="auto"):
    """Gauss–Newton refinement of one projection's (φ, θ, ψ), shift and scale together.

    Minimises ``‖s · shift(image, t) − Π(φ, θ, ψ) V‖²`` from the grid search's
    result: the angle derivatives by central differences of the projector
    (``h`` degrees), the shift derivatives spectrally. The grid search and the
    alternation with registration leave the angles and the shift a fraction of
    a step off where they are coupled; this finishes the job at the cost of
    seven projections per step. Columns are scaled to unit norm and directions
    the data hardly constrain (relative singular value < 1e-2: φ against ψ
    near θ = ±90°, where the convention has a gimbal lock) are left alone.
    """
    e = np.array(euler, dtype=float)
    t = np.array(shift, dtype=float)
    image = np.asarray(image, dtype=float)
    shape = image.shape

    offsets = np.concatenate([np.zeros((1, 3)), h * np.eye(3), -h * np.eye(3)])

    scale = None
    for _ in range(iterations):
        moved = fourier_shift(image[None], t[None])[0]
        # the projection and its six neighbours (±h per angle) in one projector call
        proj = EulerProjector(e + offsets, shape, volume.shape, subsamples, method=method).forward(volume).astype(float)
        current = proj[0]
        if scale is None:
            scale = _scale(moved, current)
        cols = [(proj[1 + c] - proj[4 + c]) / (2 * h) for c in range(3)]
        f = np.fft.fft2(moved)
        for k in (np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :]):
            # d shift(image, t) / dt = −∂ of the shifted image along that axis
            cols.append(-scale * np.fft.ifft2(f * 2j * np.pi * k).real)
        cols.append(moved)
        jac = np.stack([c.ravel() for c in cols], axis=1)
        # residual Π V − s · moved; the angle columns enter with +, the image ones with −
        jac[:, 3:] *= -1
        r = (current - scale * moved).ravel()
        norm = np.linalg.norm(jac, axis=0)
        norm[norm == 0] = 1.0
        step = -np.linalg.lstsq(jac / norm, r, rcond=1e-2)[0] / norm
        e += step[:3]
        t += step[3:5]
        scale += step[5]
        if np.abs(step[:3]).max() < 1e-4 and np.abs(step[3:5]).max() < 1e-4:
            break
    return e, t


def _search_angles(volume, measured, euler, offsets, subsamples, upsample, passes=4, method="auto"):
    """Best (φ, θ, ψ) and shift per projection.

    Each pass registers the image to the reprojection at the current angles
    (sub-pixel shift), then grid-searches one angle at a time (θ, then φ, then
    ψ) with that shift held fixed, scoring candidates by the squared residual
    and taking a parabolic step through the best grid point and its
    neighbours. Holding the shift fixed inside a pass keeps the cost smooth in
    the angle; alternating the two handles their coupling (a tilt error moves
    the image much like a shift does). Passes repeat until the angles settle;
    a joint Gauss–Newton step on angles, shift and scale finishes
    (:func:`_polish`).
    """
    out = np.array(euler, dtype=float)
    shifts = np.zeros((len(out), 2))
    step = offsets[1] - offsets[0]
    shape = measured.shape[1:]
    for k in range(len(out)):
        for _ in range(passes):
            before = out[k].copy()
            current = EulerProjector(out[k][None], shape, volume.shape, subsamples, method=method).forward(volume)[0]
            shifts[k] = _register(current, measured[k], upsample)[0]
            moved = fourier_shift(measured[k][None], shifts[k][None])[0]
            for comp in (1, 0, 2):
                cands = np.repeat(out[k][None], len(offsets), axis=0)
                cands[:, comp] += offsets
                proj = EulerProjector(cands, shape, volume.shape, subsamples, method=method).forward(volume)
                cost = ((proj - moved[None]) ** 2).sum(axis=(1, 2), dtype=float)
                i = int(np.argmin(cost))
                delta = offsets[i]
                if 0 < i < len(offsets) - 1:
                    curv = cost[i - 1] - 2 * cost[i] + cost[i + 1]
                    if curv > 0:
                        delta += 0.5 * step * (cost[i - 1] - cost[i + 1]) / curv
                out[k, comp] += delta
            if np.abs(out[k] - before).max() < 0.05 * step:
                break
        final = EulerProjector(out[k][None], shape, volume.shape, subsamples, method=method).forward(volume)[0]
        shifts[k] = _register(final, measured[k], upsample)[0]
        out[k], shifts[k] = _polish(volume, measured[k], out[k], shifts[k], subsamples, method=method)
    return out, shifts


def _round_line(record: dict, rounds: int) -> str:
    """One line of progress for a refinement round's record."""
    parts = [f"R = {record['r_factor']:.4f}"]
    if "angle_rms_change" in record:
        parts.append(f"angles moved {record['angle_rms_change']:.3f}° RMS")
    if "shift_rms_change" in record:
        parts.append(f"shifts {record['shift_rms_change']:.3f} px RMS")
    if record.get("mixed_rounds"):
        parts.append(f"mixed with {record['mixed_rounds']} past round(s)")
    what = " and ".join(w for w, key in (("angles", "angle_rms_change"), ("shifts", "shift_rms_change")) if key in record)
    return f"refinement round {record['round']}/{rounds}" + (f" ({what})" if what else "") + ": " + ", ".join(parts)


def _subsamples(euler, s: int):
    """The projector's sub-samples for this geometry: (s, s, 1) single-axis (the slice projector's), else
    ``s`` for the Euler projector to expand as its method does (:class:`EulerProjector`)."""
    return (s, s, 1) if is_single_axis(euler) else s


def _radius(volume) -> float:
    """RMS distance (voxels) of the volume's mass from its centre, at least one voxel."""
    v = np.clip(np.asarray(volume, dtype=float), 0, None)
    total = v.sum()
    if total <= 0:
        return 1.0
    grids = np.meshgrid(*[np.arange(k) - k // 2 for k in v.shape], indexing="ij")
    r2 = sum((v * g.astype(float) ** 2).sum() for g in grids) / total
    return max(1.0, float(np.sqrt(r2)))


def _scale(measured, reprojected) -> float:
    """Least-squares factor s with s·b ≈ Π O."""
    m = measured.astype(float)
    denom = float((m * m).sum())
    return float((m * reprojected).sum()) / denom if denom > 0 else 1.0


def refine_geometry(
    tilts: xr.DataArray,
    *,
    rounds: int | None = None,
    iterations: int | None = None,
    angles: bool = True,
    shifts: bool = True,
    scales: bool = True,
    momentum: float | None = None,
    memory: int | None = None,
    angle_step: float | None = None,
    angle_points: int | None = None,
    progress: bool = False,
    on_round=None,
):
    """Refine angles, shifts and scales; return ``(volume, refined tilt series)``.

    The refined tilt series carries the new ``phi, theta, psi`` and the
    ``shift_y``, ``shift_x`` (pixels) and ``scale`` coords on ``tilt``; its data
    are unchanged. The volume is the RESIRE reconstruction with the final
    geometry.

    Angle errors that follow the pattern of a linear deformation of the object
    (:func:`aetdask.geometry.strain_basis`; for a single-axis series θ errors
    ``a cos 2θ + b sin 2θ``, and tilts of the axis ``∝ cos θ, sin θ``) change the
    residual very little: a deformed object seen at those angles reproduces the
    images nearly as well, the reconstruction deforms towards it, and each round
    corrects only a few per cent of them. That part of each round's
    correction gets heavy-ball ``momentum`` (default: config
    ``refine.momentum``): it adds ``momentum`` × the previous round's, so a
    steady drift along those directions speeds up about ``1 / (1 − momentum)``
    times; the momentum restarts from zero when a round's correction turns
    against it (it has overshot).

    The other directions converge faster but not fast either: the
    reconstruction takes up part of each projection's error (it has more
    unknowns than the data), and smooth patterns across the series, such as a
    slowly varying rotation about the beam, fall by 5–15 % per round. Their
    corrections (angles and shifts together, angles weighted by the object's
    RMS radius so that both are motions in pixels) go through Anderson mixing
    of the last ``memory`` rounds (default: config ``refine.memory``;
    :class:`~aetdask.reconstruct.anderson.AndersonMixer`), which removes a few
    slow directions in about as many rounds. A mixed step that moves anything
    further than the round's own correction or the grid search's reach is not
    trusted and restarts the mixing.

    ``on_round``, if given, is called after every round as ``on_round(record,
    tilts)`` with that round's history record (a dict) and the tilt series with
    the geometry found so far, to follow or plot the convergence.
    """
    method = config.get("reconstruct.method")
    if method != "resire":
        raise InputError(f"reconstruct.method: angle refinement reconstructs with RESIRE, got {method!r}; expected "
                         "resire (or no angle refinement for another method)")
    rounds = int(config.get("refine.rounds", rounds))
    iterations = int(config.get("refine.iterations", iterations))
    step = float(config.get("refine.angle_step", angle_step))
    points = int(config.get("refine.angle_points", angle_points))
    if points < 3 or points % 2 == 0:
        raise ValueError(f"angle_points: expected an odd number ≥ 3, got {points}")
    upsample = int(config.get("refine.shift_upsample"))
    beta = float(config.get("refine.momentum", momentum))
    if not 0 <= beta < 1:
        raise ValueError(f"momentum: expected 0 ≤ momentum < 1, got {beta}")
    memory = int(config.get("refine.memory", memory))  # AndersonMixer refuses a negative one
    s = int(config.get("reconstruct.subsamples"))
    method = str(config.get("reconstruct.projector"))
    offsets = step * (np.arange(points) - points // 2)
    n = tilts.sizes["tilt"]
    current = tilts.copy()
    for name, value in (("shift_y", 0.0), ("shift_x", 0.0), ("scale", 1.0)):
        if name not in current.coords:
            current = current.assign_coords({name: ("tilt", np.full(n, value))})
    ex = Executor()
    history = []
    volume = None
    drift = None  # the momentum of the collective angle corrections
    weight = None  # pixels of motion per degree, at the object's radius
    reach = step * (points // 2)  # the furthest a round's grid search looks (degrees)

    def trusted(mixed, plain):
        """A mixed step moves nothing further than the round's own correction or its grid search reaches."""
        return np.abs(mixed).max() <= max(np.abs(plain).max(), weight * reach)

    mixer = AndersonMixer(memory, limit=trusted)
    for r in range(rounds):
        # the first round aligns shifts only: they are the largest errors, and angles
        # searched against a volume blurred by misalignment drift
        search_angles = angles and (r > 0 or not shifts)
        vol = reconstruct(current, "resire", iterations, initial=volume, progress=progress)
        volume = np.asarray(vol.values)
        euler = euler_angles(current)
        measured = prepared_projections(current)
        subsamples = _subsamples(euler, s)  # the projector the volume was reconstructed with
        reproj = EulerProjector(euler, measured.shape[1:], volume.shape, subsamples, method=method).forward(volume)
        record = {"round": r + 1, "r_factor": vol.attrs["provenance"][-1]["params"]["r_final"]}
        if search_angles:
            vol_f = ex.put(volume)
            chunks = split(n, max(1, ex.workers) * 2)
            found = ex.gather([
                ex.submit(_search_angles, vol_f, measured[a:b], euler[a:b], offsets, subsamples, upsample, method=method)
                for a, b in chunks
            ])
            new = np.concatenate([f[0] for f in found], axis=0)
            d_shift = np.concatenate([f[1] for f in found], axis=0)
            rotation, translation = rigid_motion_basis(euler)
            delta = remove_rigid_motion(new - euler, rotation)  # a global rotation is not observable
            collective, _, to_collective = deformation_directions(euler)  # the slow, deformation-like directions
            c = to_collective @ delta.reshape(-1)
            if beta:
                # heavy ball, restarted when the correction turns against the drift (an overshoot)
                drift = c + beta * drift if drift is not None and float(c @ drift) > 0 else c
                record["momentum_angle_change"] = float(np.sqrt(((collective @ (drift - c)) ** 2).sum() / n))
            else:
                drift = c
            if shifts:  # rigid translations are not observable: out of the shift corrections too
                d_shift = remove_rigid_motion(d_shift, translation)
            # Anderson mixing of everything but the collective part, which has the momentum; angles in
            # pixels of motion at the object's radius, so that angles and shifts weigh alike
            if weight is None:  # fixed once: the mixing compares geometries across rounds
                weight = np.deg2rad(_radius(volume))
            x = np.concatenate([weight * euler.ravel(), np.c_[current.shift_y, current.shift_x].ravel() if shifts else []])
            f = np.concatenate([weight * delta.ravel(), d_shift.ravel() if shifts else []])

            def other(v):
                a = v[: 3 * n]
                return np.concatenate([a - collective @ (to_collective @ a), v[3 * n:]])

            mixed = mixer.step(x, f, project=other)
            record["mixed_rounds"] = mixer.used
            delta = (mixed[: 3 * n] / weight + collective @ drift).reshape(-1, 3)
            delta = remove_rigid_motion(delta, rotation)
            if shifts:
                d_shift = remove_rigid_motion(mixed[3 * n:].reshape(-1, 2), translation)
            euler = euler + delta
            current = current.assign_coords(phi=("tilt", euler[:, 0]), theta=("tilt", euler[:, 1]),
                                            psi=("tilt", euler[:, 2]))
            record["angle_rms_change"] = float(np.sqrt((delta**2).sum(axis=1).mean()))
            reproj = EulerProjector(euler, measured.shape[1:], volume.shape, subsamples, method=method).forward(volume)
        else:
            d_shift = np.stack([_register(p, m, upsample)[0] for p, m in zip(reproj, measured)])
        if shifts:
            if not search_angles:
                d_shift = remove_rigid_motion(d_shift, rigid_motion_basis(euler)[1])  # nor is a global translation
            current = current.assign_coords(shift_y=current.shift_y + d_shift[:, 0],
                                            shift_x=current.shift_x + d_shift[:, 1])
            record["shift_rms_change"] = float(np.sqrt((d_shift**2).sum(axis=1).mean()))
        if scales:
            moved = prepared_projections(current)
            d_scale = np.array([_scale(m, p) for m, p in zip(moved, reproj)])
            scale = np.asarray(current.scale) * d_scale
            current = current.assign_coords(scale=("tilt", scale / scale.mean()))  # the mean scale is the frame
        history.append(record)
        if on_round is not None:
            on_round(dict(record), current)
        if progress:
            print(_round_line(record, rounds))
    volume = reconstruct(current, "resire", config.get("reconstruct.iterations"), initial=volume, progress=progress)
    params = {"rounds": rounds, "iterations": iterations, "angles": angles, "shifts": shifts, "scales": scales,
              "momentum": beta, "memory": memory, "mixing_restarts": mixer.restarts,
              "angle_step": step, "angle_points": points, "history": history}
    current = add_provenance(current, "reconstruct.refine", params)
    volume = add_provenance(volume, "reconstruct.refine", params)
    return volume, current
