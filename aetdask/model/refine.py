"""Coordinate refinement: atoms as Gaussians fitted to every projection of the tilt series."""

from __future__ import annotations

import time

import numpy as np
import scipy.optimize
import xarray as xr

from aetdask import config
from aetdask.errors import InputError
from aetdask.geometry import projection_matrices
from aetdask.kernels import gaussian_atoms
from aetdask.reconstruct.stage import euler_angles, prepared_projections
from aetdask.schema import add_provenance, validate_atoms, validate_tilt_series

#: Starting Gaussian width (Å) before it is fitted: about the probe-limited resolution.
_START_WIDTH = 0.4


def _detector(positions, a, pixel, n):
    """Detector pixel positions (t, atoms, 2) as (row, col) and the map d(row, col)/d(x, y, z)."""
    xyz = np.einsum("tij,nj->tni", a, positions)
    jac = a[:, [1, 0], :] / pixel  # (t, 2, 3)
    return xyz[..., [1, 0]] / pixel + n // 2, jac


def refine(
    model: xr.Dataset,
    tilts: xr.DataArray,
    iterations: int | None = None,
    *,
    max_displacement: float | None = None,
    progress: bool = False,
) -> xr.Dataset:
    """Refine atom positions (and per-species height and width) against the projections.

    Every atom is a Gaussian of its species' height H and width s (B = 8π²s²,
    Å²) in every projection, at the place the geometry of the tilt series puts
    it. The squared misfit to the projections is minimised over all positions
    and the per-species H and s together (L-BFGS-B), each atom kept within
    ``max_displacement`` Å of its traced position along every axis.

    Parameters
    ----------
    model : xr.Dataset
        Atoms with species (the ``atoms`` product), in Å, in the sample frame.
    tilts : xr.DataArray
        The preprocessed tilt series the volume was reconstructed from
        (recorded shifts and scales applied, as in reconstruction).
    iterations, max_displacement
        None = ``aetdask.refine_atoms.*`` configuration.

    Returns
    -------
    xr.Dataset
        The refined model, with ``displacement`` (Å) per atom, and per-species
        ``height`` / ``b_factor`` and the misfit history in the provenance.

    Examples
    --------
    >>> from aetdask.schema import atoms
    >>> from aetdask.simulate import linear
    >>> truth = atoms([[0.0, 0.0, 0.0], [2.5, 0.5, -1.0]], ["Pt", "Pt"])
    >>> ts = linear(truth, angles=range(0, 180, 15), pixel_size=0.3, shape=24)
    >>> start = truth.copy(deep=True); start["position"] = start.position + 0.15
    >>> out = refine(start, ts, 100)
    >>> bool(np.abs(out.position.values - truth.position.values).max() < 0.03)
    True
    """
    validate_atoms(model, source="model")
    tilts = validate_tilt_series(tilts, values=False)
    iterations = int(config.get("refine_atoms.iterations", iterations))
    cap = float(config.get("refine_atoms.max_displacement", max_displacement))
    if cap <= 0:
        raise InputError(f"max_displacement: expected a positive distance in Å, got {cap!r}")
    b = prepared_projections(tilts, dtype="float64")
    n_t, n_px = b.shape[0], b.shape[1]
    pixel = float(tilts.attrs["pixel_size"])
    a = projection_matrices(euler_angles(tilts))
    level = float(np.abs(b).max()) or 1.0
    b = b / level
    start = np.asarray(model.position.values, dtype=float)
    species = np.asarray(model.species.values).astype(str)
    kinds, kind_of = np.unique(species, return_inverse=True)
    n_at, n_sp = len(start), len(kinds)
    t0 = time.perf_counter()
    history = []

    def unpack(p):
        pos = p[: 3 * n_at].reshape(n_at, 3)
        h, s = p[3 * n_at: 3 * n_at + n_sp], p[3 * n_at + n_sp:]
        return pos, h, s

    def misfit(p, fixed_positions=None):
        pos, h, s = unpack(p)
        det, jac = _detector(pos, a, pixel, n_px)
        hj, sj = h[kind_of], s[kind_of] / pixel
        res = gaussian_atoms.render(det, hj, sj, (n_px, n_px)) - b
        gp, gh, gs = gaussian_atoms.gradients(res, det, hj, sj)
        g_pos = np.einsum("tnc,tcd->nd", gp, jac)
        g_h = np.bincount(kind_of, gh, n_sp)
        g_s = np.bincount(kind_of, gs, n_sp) / pixel
        value = 0.5 * float(np.sum(res * res))
        history.append(value)
        if progress and len(history) % 10 == 0:
            print(f"\rrefining {n_at} atoms: evaluation {len(history)}, misfit {value:.5g}", end="", flush=True)
        if fixed_positions:
            g_pos = np.zeros_like(g_pos)
        return value, np.concatenate([g_pos.ravel(), g_h, g_s])

    # 1. heights and widths with the positions held, started from the data's own scale
    h0 = np.full(n_sp, 1.0)
    s0 = np.full(n_sp, max(_START_WIDTH, pixel))
    p = np.concatenate([start.ravel(), h0, s0])
    fixed = [(v, v) for v in start.ravel()]
    shape_bounds = [(1e-6, None)] * n_sp + [(0.3 * pixel, 5.0)] * n_sp
    p = scipy.optimize.minimize(misfit, p, args=(True,), jac=True, method="L-BFGS-B",
                                bounds=fixed + shape_bounds, options={"maxiter": 50}).x
    n_shape = len(history)
    # 2. everything together, positions capped
    free = [(v - cap, v + cap) for v in start.ravel()]
    result = scipy.optimize.minimize(misfit, p, jac=True, method="L-BFGS-B", bounds=free + shape_bounds,
                                     options={"maxiter": iterations, "maxcor": 20})
    if progress:
        print()
    pos, h, s = unpack(result.x)
    out = model.copy(deep=True)
    out["position"] = (("atom", "xyz"), pos, {"units": "Å"})
    out["displacement"] = ("atom", np.linalg.norm(pos - start, axis=1), {"units": "Å"})
    params = {
        "iterations": iterations, "max_displacement": cap,
        "species": kinds.tolist(), "height": (h * level).tolist(),
        "width": s.tolist(), "b_factor": (8 * np.pi**2 * s**2).tolist(),
        "misfit_start": history[0] * level**2, "misfit_final": float(result.fun) * level**2,
        "evaluations": len(history), "shape_evaluations": n_shape,
        "r_factor": _r_factor(result.x, unpack, a, pixel, n_px, kind_of, b),
        "seconds": time.perf_counter() - t0,
    }
    return add_provenance(out, "refine", params, inputs=[f"atoms ({n_at})", f"tilt series ({n_t}×{n_px}×{n_px})"])


def _r_factor(p, unpack, a, pixel, n, kind_of, b) -> float:
    pos, h, s = unpack(p)
    det, _ = _detector(pos, a, pixel, n)
    model = gaussian_atoms.render(det, h[kind_of], s[kind_of] / pixel, (n, n))
    return float(np.mean(np.abs(model - b).sum(axis=(1, 2)) / np.abs(b).sum(axis=(1, 2))))
