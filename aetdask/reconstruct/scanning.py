"""Scanning AET: a film wider than the field of view, reconstructed in local sub-volumes and stitched.

See :mod:`aetdask.kernels.tomography.scanning` for the geometry. The stage:

1. finds where the film lies in z (:func:`film_extent`: a coarse reconstruction
   of a central strip in a tall volume, whose z-profile shows the film);
2. plans overlapping regions (:func:`aetdask.kernels.tomography.scanning.plan`);
3. crops, for every region, the rows of every projection that see it, and
   reconstructs it by RESIRE — one Dask task per region, on any worker (CPU or
   GPU), no communication;
4. blends the regions' centres into one volume with weights that ramp across
   the overlaps.

Tracing then runs on the stitched volume with its usual sub-volumes and halos,
so an atom on a seam is found once.
"""

from __future__ import annotations

import time
import warnings

import dask
import numpy as np
import xarray as xr

from aetdask import config
from aetdask.backend import asnumpy, get_array_module
from aetdask.cluster import compute
from aetdask.errors import InputError
from aetdask.kernels.tomography import iterative
from aetdask.kernels.tomography import scanning as scan_k
from aetdask.kernels.tomography.projector_slices import SliceProjector
from aetdask.reconstruct.projectors import is_single_axis
from aetdask.reconstruct.stage import euler_angles, prepared_projections
from aetdask.schema import provenance_record, validate_tilt_series
from aetdask.schema import volume as make_volume

#: Extra voxels each side of the film's measured z-extent: the reconstructed atoms' own width.
Z_MARGIN_A = 1.5


def extension_exponent(tilts: xr.DataArray) -> float:
    """β in ``total(θ) ∝ 1 / cos(θ)^β``: ≈ 0 for a particle inside the field of view, ≈ 1 for a film wider than it.

    A particle's projections all hold the whole particle, so their totals are
    equal; a film that fills the field of view is crossed over a path that
    grows as 1/cos θ. Fitted by least squares to log totals (raw counts).
    """
    theta = np.deg2rad(np.asarray(tilts.theta.values, dtype=float))
    totals = np.asarray(tilts.sum(dim=("y", "x")).values, dtype=float)
    ok = totals > 0
    x = -np.log(np.abs(np.cos(theta[ok])))
    if ok.sum() < 3 or np.ptp(x) < 1e-3:
        return 0.0
    return float(np.polyfit(x, np.log(totals[ok]), 1)[0])


def suggests_scanning(tilts: xr.DataArray, threshold: float = 0.5) -> bool:
    """True when the sample looks wider than the field of view at high tilt (:func:`extension_exponent`)."""
    return extension_exponent(tilts) > threshold


def _solve(crop, theta, det_offset, local_shape, keep, iterations, step, subsamples, device):
    """One region: RESIRE on its crop, the kept rows brought back. Returns (volume, R per iteration)."""
    xp = get_array_module(device)
    b = xp.asarray(crop)
    proj = SliceProjector(local_shape, b.shape[1], theta, subsamples, xp=xp, dtype=b.dtype, det_offset=det_offset,
                          thickness="ray")
    vol, history = iterative.resire(b, proj, iterations, step=step)
    r = [float(np.mean(n / np.where(d > 0, d, 1.0))) for n, d in history]
    return asnumpy(vol[:, keep[0]:keep[1], :]), r


def _crops(b, p: scan_k.Plan, region: scan_k.Region):
    start, offset = scan_k.crop_rows(p, region)
    nx = p.shape[1]
    cols = slice(region.x0 + nx // 2, region.x1 + nx // 2)
    rows = 2 * p.rows_half + 1
    crop = np.stack([b[k, s:s + rows, cols] for k, s in enumerate(start)])
    return np.ascontiguousarray(crop), offset


def film_extent(tilts: xr.DataArray, iterations: int = 30, columns: int = 16) -> tuple[float, float]:
    """Where the film lies along z: (centre, half-thickness) in voxels, from the data alone.

    A strip of ``columns`` columns spread along the tilt axis, and the central
    rows, are reconstructed in the tallest local volume the images allow. The
    mean density of a plane says nothing (a flat film's mean profile lies in
    the missing wedge: every tilt sees the same uniform slab whatever its
    thickness), but its atoms do: the film is the run of planes whose spread
    (standard deviation over the strip) is above half-way from the profile's
    floor to its peak, widened by :data:`Z_MARGIN_A`.
    """
    return _film_extent(prepared_projections(tilts), euler_angles(tilts)[:, 1], float(tilts.attrs["pixel_size"]),
                        iterations, columns)


def _film_extent(b, theta, pixel, iterations=30, columns=16):
    """:func:`film_extent` of prepared projections ``b`` at tilts ``theta`` (degrees), pixel in Å."""
    ny, nx = b.shape[1:]
    s = np.abs(np.sin(np.deg2rad(theta))).max()
    core = 8
    z_half = max(2, int((ny // 2 - 1 - 4 - core // 2 - 2) / max(s, 1e-3)))
    z_half = min(z_half, ny // 2)
    p = scan_k.plan((ny, nx), theta, z_half, 0, core=core, overlap=0)
    centre = min(p.regions, key=lambda r: abs(r.yc))
    step = max(1, nx // columns)
    cols = np.arange(step // 2, nx, step)
    region = scan_k.Region((0, 0), centre.yc, centre.half, -(nx // 2), nx - nx // 2)
    crop, offset = _crops(b, p, region)
    crop = np.ascontiguousarray(crop[:, :, cols])
    h = p.volume_half
    vol, _ = _solve(crop, theta, offset, p.local_shape, (h - centre.half, h + centre.half + 1), iterations, 1.0, 1,
                    "cpu")
    profile = vol.reshape(vol.shape[0], -1).std(axis=1)
    profile = np.convolve(profile, np.ones(3) / 3, mode="same")
    peak = int(np.argmax(profile))
    above = profile >= profile.min() + 0.5 * (profile[peak] - profile.min())
    lo = peak
    while lo > 0 and above[lo - 1]:
        lo -= 1
    hi = peak
    while hi < len(profile) - 1 and above[hi + 1]:
        hi += 1
    margin = Z_MARGIN_A / pixel
    zc = 0.5 * (lo + hi) - p.z_half
    return float(zc), float(0.5 * (hi - lo) + margin)


def scanning_reconstruct(
    tilts: xr.DataArray,
    *,
    core: int | None = None,
    overlap: int | None = None,
    thickness: float | None = None,
    z_center: float = 0.0,
    iterations: int | None = None,
    step: float | None = None,
    subsamples: int | None = None,
    progress: bool = False,
) -> xr.DataArray:
    """Reconstruct a film in overlapping local sub-volumes and stitch them (scanning AET).

    Parameters
    ----------
    tilts : xr.DataArray
        Single-axis tilt series ``(tilt, y, x)`` (applies ``shift_*``/``scale`` coords).
    core, overlap : int, optional
        Region size and overlap in voxels; None = ``aetdask.scanning.*``.
    thickness : float, optional
        Film thickness in Å (centred on ``z_center`` Å); None = measured
        (:func:`film_extent`).
    iterations, step, subsamples
        RESIRE's; None = ``aetdask.reconstruct.*``.

    Returns
    -------
    xr.DataArray
        The stitched volume ``(z, y, x)``: z over the film, y over the band the
        regions cover, x over the image; coords in Å in the tilt series' frame.
        Provenance holds the plan and each region's R-factor.
    """
    tilts = validate_tilt_series(tilts, values=False)
    euler = euler_angles(tilts)
    if not is_single_axis(euler):
        raise InputError("scanning: needs a single-axis tilt series (φ = ψ = 0); this one has general Euler angles")
    pixel = float(tilts.attrs["pixel_size"])
    core = int(config.get("scanning.core", core))
    overlap = int(config.get("scanning.overlap", overlap))
    iterations = int(config.get("reconstruct.iterations", iterations))
    step = float(config.get("reconstruct.step", step))
    subsamples = int(config.get("reconstruct.subsamples", subsamples))
    t0 = time.perf_counter()
    b = prepared_projections(tilts)
    theta = euler[:, 1]
    if thickness is None:
        zc, z_half = _film_extent(b, theta, pixel)
        measured = True
    else:
        if not thickness > 0:
            raise InputError(f"thickness: expected a positive film thickness in Å, got {thickness!r}")
        zc, z_half = z_center / pixel, 0.5 * thickness / pixel + Z_MARGIN_A / pixel
        measured = False
    try:
        p = scan_k.plan(b.shape[1:], theta, z_half, zc, core=core, overlap=overlap)
    except ValueError as exc:
        raise InputError(f"scanning: {exc}") from None
    h = p.volume_half
    device = config.get("device")
    tasks = []
    for r in p.regions:
        crop, offset = _crops(b, p, r)
        tasks.append(dask.delayed(_solve, pure=True)(crop, theta, offset, p.local_shape,
                                                     (h - r.half, h + r.half + 1), iterations, step, subsamples,
                                                     device))
    if progress:
        nz, nyl = p.local_shape
        print(f"scanning AET: {len(p.regions)} sub-volumes of {nz}×{2 * p.rows_half + 1} rows×≤{core + overlap} "
              f"columns (local slices {nz}×{nyl}), film z = {zc * pixel:.1f} ± {z_half * pixel:.1f} Å")
    with warnings.catch_warnings():  # each task carries its own crop: the graph is as big as the data
        warnings.filterwarnings("ignore", message=".*large graph.*")
        results = compute(tasks, progress, label="reconstructing sub-volumes" if progress else None)
    volume, weights = _stitch(p, [v for v, _ in results])
    seconds = time.perf_counter() - t0
    nz = p.local_shape[0]
    out = make_volume(volume, pixel)
    out = out.assign_coords(
        z=("z", (np.arange(nz) - nz // 2 + p.zc) * pixel, {"units": "Å"}),
        y=("y", np.arange(p.band[0], p.band[1]) * pixel, {"units": "Å"}),
    )
    r_final = [rr[-1] for _, rr in results if rr]
    record = provenance_record("reconstruct.scanning", {
        "method": "resire", "iterations": iterations, "step": step, "subsamples": subsamples, "core": core,
        "overlap": overlap, "regions": len(p.regions), "film_center": p.zc * pixel,
        "film_half_thickness": p.z_half * pixel, "thickness_measured": measured,
        "rows_half": p.rows_half, "local_shape": list(p.local_shape),
        "band": [p.band[0] * pixel, (p.band[1] - 1) * pixel],
        "r_factor": [float(np.mean([rr[i] for _, rr in results])) for i in range(iterations)],
        "r_regions": r_final, "r_final": float(np.mean(r_final)) if r_final else None,
        "iterations_run": iterations, "geometry": "single-axis, scanning", "seconds": seconds,
    }, inputs=[f"tilt series ({b.shape[0]}×{b.shape[1]}×{b.shape[2]})"])
    out.attrs["provenance"] = list(tilts.attrs.get("provenance", [])) + [record]
    return out


def _stitch(p: scan_k.Plan, parts) -> tuple[np.ndarray, np.ndarray]:
    """Blend the regions' kept rows into one (z, band, x) volume; returns (volume, weight sum)."""
    nz = p.local_shape[0]
    nx = p.shape[1]
    band = p.band[1] - p.band[0]
    acc = np.zeros((nz, band, nx))
    wsum = np.zeros((band, nx))
    for r, part, (wy, wx) in zip(p.regions, parts, scan_k.blend_weights(p)):
        y0, y1 = r.y_window
        ys = slice(y0 - p.band[0], y1 - p.band[0])
        xs = slice(r.x0 + nx // 2, r.x1 + nx // 2)
        w = wy[:, None] * wx[None, :]
        acc[:, ys, xs] += part * w[None]
        wsum[ys, xs] += w
    if np.any(wsum <= 0):
        raise RuntimeError("scanning: the regions leave a gap in the band")  # a planning bug, not bad input
    return (acc / wsum[None]).astype(np.float32), wsum
