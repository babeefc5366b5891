"""The ptychography stage: a 4D-STEM tilt series in, a tilt series of phase projections out.

One Dask task per tilt (:func:`aetdask.ptycho.engine.phase_image` on that tilt's patterns),
on any worker, CPU or GPU. The phase of a weak object is proportional to the projected
potential, a linear projection of the sample: after the partial-coherence blur it is the
input the AET chain expects (preprocessing, RESIRE, tracing, classification).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from aetdask import config
from aetdask.errors import InputError
from aetdask.ptycho.engine import image_shape, object_pixel, phase_image
from aetdask.ptycho.simulate import PATTERN_DIMS
from aetdask.schema import add_provenance, jsonable, tilt_series
from aetdask.simulate.multislice import blur as blur_image

__all__ = ["ptycho", "validate_patterns"]

_ATTRS = ("step", "energy", "semiangle", "defocus", "angular_sampling")


def validate_patterns(patterns: xr.DataArray) -> xr.DataArray:
    """Check a 4D-STEM tilt series: dims, the experiment's attributes, angles."""
    if not isinstance(patterns, xr.DataArray):
        raise InputError(f"4D-STEM data must be an xarray DataArray, got {type(patterns).__name__}")
    if tuple(patterns.dims) != PATTERN_DIMS:
        raise InputError(f"4D-STEM data: expected dims {PATTERN_DIMS}, got {tuple(patterns.dims)}")
    missing = [a for a in _ATTRS if patterns.attrs.get(a) is None]
    if missing:
        raise InputError(f"4D-STEM data: the attributes {missing} (the experiment's settings) are missing")
    for a in _ATTRS:
        value = float(patterns.attrs[a])
        if not np.isfinite(value) or (a != "defocus" and value <= 0):
            raise InputError(f"4D-STEM data: attribute {a} = {patterns.attrs[a]!r} is not a valid value")
    for c in ("phi", "theta", "psi"):
        if c not in patterns.coords:
            raise InputError(f"4D-STEM data: the {c} angle of each tilt is missing")
    return patterns


def _one(block, attrs, multislice, slices, thickness, iterations, probe_after, seed, device, shape):
    image, _ = phase_image(block[0], step=attrs["step"], angular_sampling=attrs["angular_sampling"],
                           energy=attrs["energy"], semiangle=attrs["semiangle"], defocus=attrs["defocus"],
                           multislice=multislice, slices=slices, thickness=thickness, iterations=iterations,
                           probe_after=probe_after, seed=seed, device=device)
    if image.shape != shape:  # cannot happen for one scan: every tilt shares the grid
        raise RuntimeError(f"phase image of shape {image.shape}, expected {shape}")
    return image[None].astype(np.float32)


def _blur(block, sigma, pixel_size):
    return blur_image(block, sigma, pixel_size).astype(np.float32)


def ptycho(
    patterns: xr.DataArray,
    *,
    multislice: bool | None = None,
    slices: int | None = None,
    thickness: float | None = None,
    iterations: int | None = None,
    blur: float | None = None,
    seed: int = 0,
    device: str | None = None,
) -> xr.DataArray:
    """Phase projections of a 4D-STEM tilt series (lazy; one task per tilt).

    Parameters
    ----------
    patterns : xr.DataArray
        ``(tilt, scan_y, scan_x, ky, kx)`` with the experiment's attributes
        (:func:`aetdask.ptycho.simulate.fourdstem` makes them).
    multislice : bool
        Multislice ptychography; None = ``aetdask.ptycho.multislice``.
    slices : int
        Slices of a multislice reconstruction; None = ``aetdask.ptycho.slices``.
    thickness : float
        Depth (Å) the slices span; None = measured per tilt from the data
        (:func:`aetdask.ptycho.engine.sample_extent`).
    iterations : int
        Passes over the probe positions; None = ``aetdask.ptycho.iterations``.
    blur : float
        The partial-coherence Gaussian (σ, Å) applied to the phase images;
        None = ``aetdask.ptycho.blur``.
    seed, device
        Order of the position updates; abTEM's device (None = ``aetdask.device``).

    Returns
    -------
    xr.DataArray
        Tilt series ``(tilt, y, x)`` of phases (units ``"rad"``), pixel ``λ / (K ·
        angular_sampling)``, centred on the scan centre; the angles of ``patterns``.
    """
    validate_patterns(patterns)
    multislice = bool(config.get("ptycho.multislice", multislice))
    slices = int(config.get("ptycho.slices", slices))
    iterations = int(config.get("ptycho.iterations", iterations))
    probe_after = config.get("ptycho.probe_after")
    probe_after = None if probe_after is None else float(probe_after)
    sigma = float(config.get("ptycho.blur", blur))
    device = str(device or config.get("device"))
    if iterations < 1 or slices < 1:
        raise InputError("ptychography: iterations and slices must be ≥ 1")
    attrs = {a: float(patterns.attrs[a]) for a in _ATTRS}
    nt, sy, sx, k, _ = patterns.shape
    s = object_pixel(attrs["energy"], attrs["angular_sampling"], k)
    shape = image_shape((sy, sx), attrs["step"], s)
    data = patterns.data if isinstance(patterns.data, da.Array) else da.from_array(patterns.values)
    data = data.rechunk({0: 1, 1: -1, 2: -1, 3: -1, 4: -1})
    phases = data.map_blocks(_one, attrs, multislice, slices, thickness, iterations, probe_after, int(seed), device,
                             shape,
                             drop_axis=[3, 4], chunks=((1,) * nt, (shape[0],), (shape[1],)), dtype=np.float32,
                             meta=np.empty((0, 0, 0), np.float32))
    if sigma > 0:
        phases = phases.map_blocks(_blur, sigma, s, dtype=np.float32)
    euler = np.column_stack([patterns[c].values for c in ("phi", "theta", "psi")])
    provenance = list(patterns.attrs.get("provenance") or [])
    ts = tilt_series(phases, euler, s, units="rad", dose=patterns.attrs.get("dose"), provenance=provenance)
    return add_provenance(ts, "ptycho", jsonable({
        "engine": "abtem.reconstruct " + ("MultislicePtychographicOperator" if multislice else
                                          "RegularizedPtychographicOperator"),
        "multislice": multislice, "slices": slices if multislice else 1, "thickness": thickness,
        "iterations": iterations, "probe_after": probe_after, "blur": sigma, "seed": int(seed), "device": device, **attrs}))
