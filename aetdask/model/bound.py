"""How precisely a tilt series' counts can fix each projection's orientation: the Cramér–Rao bound."""

from __future__ import annotations

import numpy as np
import xarray as xr

from aetdask.errors import InputError
from aetdask.geometry import projection_matrices
from aetdask.schema import last_record


def _rotate_about(q, axis, h):
    """Rotate detector-frame points ``q`` (..., 3) by ``h`` radians about detector axis ``axis`` (0 x, 1 y, 2 beam)."""
    i, j = [a for a in range(3) if a != axis]
    c, s = np.cos(h), np.sin(h)
    out = q.copy()
    out[..., i] = c * q[..., i] - s * q[..., j]
    out[..., j] = s * q[..., i] + c * q[..., j]
    return out


def orientation_bound(refined: xr.Dataset, tilts: xr.DataArray, *, poisson: bool = False) -> np.ndarray:
    """Cramér–Rao bound of each projection's orientation, in degrees, shape ``(tilt, 3)``.

    ``refined`` is a model from :func:`aetdask.model.refine` fitted to counts;
    its atoms, profiles and per-projection background, scale and offsets (as
    fitted, at its angles) predict the mean counts ``μ`` of every pixel.
    ``tilts`` carries the noise estimate of preprocessing (coords
    ``noise_alpha``, ``noise_sigma``): the variance is ``α μ + σ²``, or ``μ``
    with ``poisson=True``. For each projection the Fisher information of seven
    parameters is summed over its pixels, ``F = Jᵀ diag(1 / var) J``: small
    rotations of the object about the detector's x and y axes and the beam
    (``J`` by central differences of the rendered model), and the nuisances
    every projection carries too (shift in y and x, scale, background).

    Returns the square roots of the rotation block's diagonal of ``F⁻¹``: no
    unbiased estimate of that projection's orientation can scatter less, even
    **with the atoms known exactly**; a refinement that finds the atoms from
    the same counts can only do worse.
    """
    p = last_record(refined, "refine")
    if p is None or p.get("likelihood") != "poisson-gaussian":
        raise InputError("orientation_bound: expected a model refined against counts (aetdask.model.refine on raw "
                         "counts); without a noise model there is nothing to bound")
    from aetdask.model.refine import render_profiles

    n_tilt, n = tilts.sizes["tilt"], tilts.sizes["y"]
    if len(p["background"]) != n_tilt:
        raise InputError(f"orientation_bound: the model was refined against {len(p['background'])} projections, "
                         f"the tilt series has {n_tilt}")
    pixel = float(tilts.attrs["pixel_size"])
    angles = (np.c_[p["phi"], p["theta"], p["psi"]] if "theta" in p
              else np.c_[tilts.phi.values, tilts.theta.values, tilts.psi.values])
    q = np.einsum("tij,nj->tni", projection_matrices(angles), refined.position.values, optimize=True)  # (x_det, y_det, depth), Å
    offset = np.c_[p["offset_y"], p["offset_x"]][:, None, :]
    bg, scale = np.asarray(p["background"], dtype=float), np.asarray(p["scale"], dtype=float)

    def render(points):
        det = points[..., [1, 0]] / pixel + n // 2 + offset
        # cut at 8 widths, not the fit's 4: the finite differences below would count the jump at the
        # cut (e⁻⁸ of the peak) moving with the atom as information
        return np.asarray(render_profiles(p, refined.species.values, det, n, pixel, cutoff=8.0), dtype=float)

    atoms = render(q)
    mu = bg[:, None, None] + scale[:, None, None] * atoms
    if poisson:
        alpha, sigma = np.ones(n_tilt), np.zeros(n_tilt)
    else:
        alpha = np.asarray(tilts.noise_alpha.values, dtype=float)
        sigma = np.asarray(tilts.noise_sigma.values, dtype=float)
    var = np.maximum(alpha[:, None, None] * mu + sigma[:, None, None] ** 2, 1e-12)
    h = np.deg2rad(0.05)
    cols = [scale[:, None, None] * (render(_rotate_about(q, axis, h)) - render(_rotate_about(q, axis, -h)))
            / (2 * h) * (np.pi / 180) for axis in range(3)]  # per degree
    gy, gx = np.gradient(atoms, axis=(1, 2))
    cols += [scale[:, None, None] * gy, scale[:, None, None] * gx, atoms, np.ones_like(atoms)]
    jac = np.stack([c.reshape(n_tilt, -1) for c in cols], axis=2)  # (tilt, pixels, 7)
    fisher = np.einsum("tpi,tp,tpj->tij", jac, 1.0 / var.reshape(n_tilt, -1), jac, optimize=True)
    return np.sqrt(np.stack([np.diag(np.linalg.inv(f))[:3] for f in fisher]))
