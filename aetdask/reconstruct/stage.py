"""The reconstruction stage: tilt series in, volume out."""

from __future__ import annotations

import time

import numpy as np
import xarray as xr

from aetdask import config
from aetdask.errors import InputError
from aetdask.plausibility import check_reconstruction_memory
from aetdask.progress import Line
from aetdask.kernels.preprocessing.shift import fourier_shift
from aetdask.geometry import projection_matrices
from aetdask.kernels.preprocessing.tilt_axis import rotate_to_x, turned_angles
from aetdask.reconstruct.projectors import euler_method, is_single_axis, turned_axis
from aetdask.reconstruct.runner import run_euler, run_single_axis
from aetdask.schema import last_record, provenance_record, validate_tilt_series
from aetdask.schema import volume as make_volume

METHODS = ("resire", "sirt", "fbp")


def reconstruction_record(volume) -> dict | None:
    """Parameters of the reconstruction that made ``volume``, or None.

    The newest ``reconstruct.<method>`` or ``reconstruct.scanning`` record of
    its provenance: after angle refinement the volume's last record is the
    refinement's (``reconstruct.refine``), which holds no R-factor of its own.
    """
    return last_record(volume, tuple(f"reconstruct.{m}" for m in METHODS + ("scanning",)))


def euler_angles(tilts: xr.DataArray) -> np.ndarray:
    """(n, 3) array of (φ, θ, ψ) from a tilt series' coords."""
    return np.stack([tilts.phi.values, tilts.theta.values, tilts.psi.values], axis=1).astype(float)


def prepared_projections(tilts: xr.DataArray, dtype=None) -> np.ndarray:
    """The projections as a NumPy array, with recorded ``shift_y/shift_x`` (pixels) and ``scale`` applied.

    Shifts and scales are coordinates on ``tilt`` written by alignment or
    refinement; the stored data are never modified.
    """
    dtype = np.dtype(config.get("dtype", dtype))
    b = np.asarray(tilts.values, dtype=dtype)
    if "shift_y" in tilts.coords or "shift_x" in tilts.coords:
        sy = tilts.coords["shift_y"].values if "shift_y" in tilts.coords else np.zeros(len(b))
        sx = tilts.coords["shift_x"].values if "shift_x" in tilts.coords else np.zeros(len(b))
        b = fourier_shift(b, np.stack([sy, sx], axis=1))
    if "scale" in tilts.coords:
        b = b * tilts.coords["scale"].values[:, None, None].astype(dtype)
    return b


def reconstruct(
    tilts: xr.DataArray,
    method: str | None = None,
    iterations: int | None = None,
    step: float | None = None,
    *,
    subsamples: int | None = None,
    support=None,
    initial=None,
    plateau: float | None = None,
    slabs: int | None = None,
    projector: str | None = None,
    progress: bool = False,
) -> xr.DataArray:
    """Reconstruct a volume from a tilt series (RESIRE, SIRT or FBP).

    Single-axis series (φ = ψ = 0) use the sparse slice projector in slabs along
    the tilt axis; general Euler angles use the sub-voxel Euler projector in
    z-slabs with the projections summed every iteration. The work runs on the
    active Dask client (or in this process) when called: the R-factor history
    of every iteration goes into the volume's provenance.

    Parameters
    ----------
    tilts : xr.DataArray
        Tilt series ``(tilt, y, x)``; square images; optional ``shift_y``,
        ``shift_x``, ``scale`` coords are applied first.
    method : {"resire", "sirt", "fbp"}
    iterations, step, subsamples, plateau, slabs, projector
        None = ``aetdask.reconstruct.*`` configuration (``projector``: the Euler-angle
        projector, :func:`aetdask.reconstruct.projectors.euler_method`). ``step`` is RESIRE's
        step (t = step / (projections × thickness)) or SIRT's relaxation.
    support : array (z, y, x), optional
        1 inside the object, 0 outside.
    initial : array (z, y, x), optional
        Starting volume of an iterative method (default zeros).

    Returns
    -------
    xr.DataArray
        Volume ``(z, y, x)`` (voxel = pixel) with ``provenance`` holding the
        method, parameters, the R-factor per iteration and the wall time.

    Examples
    --------
    >>> from aetdask.schema import atoms
    >>> from aetdask.simulate import linear
    >>> ts = linear(atoms([[0, 0, 0]], ["Pt"]), angles=range(0, 180, 10), pixel_size=0.4, shape=16)
    >>> vol = reconstruct(ts, "resire", iterations=30)
    >>> vol.dims, vol.shape, [int(i) for i in np.unravel_index(int(vol.values.argmax()), vol.shape)]
    (('z', 'y', 'x'), (16, 16, 16), [8, 8, 8])
    """
    tilts = validate_tilt_series(tilts, values=False)
    check_reconstruction_memory(tilts.shape, config.get("dtype"), source="reconstruct")  # before allocating
    method = config.get("reconstruct.method", method)
    if method not in METHODS:
        raise InputError(f"method: {method!r} is not one of {METHODS}")
    params = {
        "method": method,
        "iterations": int(config.get("reconstruct.iterations", iterations)),
        "step": float(config.get("reconstruct.step", step)),
        "subsamples": int(config.get("reconstruct.subsamples", subsamples)),
        "plateau": float(config.get("reconstruct.plateau", plateau)),
        "slabs": int(config.get("reconstruct.slabs", slabs)) or None,
        "projector": str(config.get("reconstruct.projector", projector)),
    }
    b = prepared_projections(tilts)
    n, dy, dx = b.shape
    if support is not None:
        support = np.asarray(support, dtype=b.dtype)
        if support.shape != (dy, dy, dx):
            raise InputError(f"support: expected shape {(dy, dy, dx)}, got {support.shape}")
    if initial is not None:
        initial = np.asarray(initial, dtype=b.dtype)
        if initial.shape != (dy, dy, dx):
            raise InputError(f"initial: expected shape {(dy, dy, dx)}, got {initial.shape}")
    euler = euler_angles(tilts)
    single = is_single_axis(euler)
    total = params["iterations"] if method != "fbp" else 1
    line = Line(f"{method.upper()} iterations", total) if progress else None
    report, monitor = _progress_reporter(method, total, (dy, dy, dx), line, float(tilts.attrs["pixel_size"]))
    t0 = time.perf_counter()
    common = dict(method=method, iterations=params["iterations"], step=params["step"], support=support, initial=initial,
                  slabs=params["slabs"], plateau=params["plateau"], progress=report, device=config.get("device"))
    turn = None
    if not single and params["projector"] == "auto":
        # a single-axis series on a turned detector, beyond what the shear-warp projector takes as it is: the
        # projections turned back (cubic spline) for the reconstruction only, which then takes the single-axis
        # path (a 30° turn of the seed's 128² series: 16 s instead of 680–750 s on the general projector). The
        # volume is in the same sample frame; the coordinate refinement fits the counts in their own geometry.
        turn = turned_axis(euler)
        if turn is not None and euler_method(projection_matrices(euler), "auto",
                                             np if common["device"] != "gpu" else None) != "general":
            turn = None
    if single or turn is not None:
        theta = euler[:, 1]
        if turn is not None:
            b = rotate_to_x(b, turn).astype(b.dtype, copy=False)
            theta = turned_angles(euler, -turn)[:, 1]
            params["turned_back"] = turn
        vol, r = run_single_axis(b, theta, subsamples=params["subsamples"],
                                 round_size=int(config.get("reconstruct.round")), **common)
    else:
        try:
            params["projector"] = euler_method(projection_matrices(euler), params["projector"],
                                               np if common["device"] != "gpu" else None)
        except ValueError as err:
            raise InputError(str(err)) from None
        vol, r = run_euler(b, euler, subsamples=params["subsamples"], projector=params["projector"], **common)
    seconds = time.perf_counter() - t0
    if line is not None:
        line.close(f"R = {r[-1]:.4f}, {seconds:.1f} s" if r else f"{seconds:.1f} s")
    if monitor is not None:
        monitor.finish(r)
    record = provenance_record(
        f"reconstruct.{method}",
        {**params, "geometry": "single-axis" if single or turn is not None else "euler",
         "iterations_run": len(r) if method != "fbp" else 0, "r_factor": r, "r_final": r[-1] if r else None, "seconds": seconds},
        inputs=[f"tilt series ({n}×{dy}×{dx})"],
    )
    return make_volume(vol, tilts.attrs["pixel_size"], provenance=list(tilts.attrs.get("provenance", [])) + [record])


def _progress_reporter(method, total, shape, line, voxel_size=None):
    """``(progress, monitor)``: the runner's ``progress(done, r, central)`` — the progress ``line``
    (:class:`aetdask.progress.Line`) if given, and the aetdask dashboard page whenever a distributed client is
    active (``monitor``, else None) — or ``(None, None)`` when nobody watches."""
    from aetdask.cluster import active_client

    monitor = None
    if active_client() is not None:
        from aetdask.dashboard import ReconstructionMonitor

        monitor = ReconstructionMonitor(method, total, shape, voxel_size=voxel_size)
    printer = (lambda done, r, central=None: line.update(done, f"R = {r:.4f}")) if line is not None else None
    if monitor is None or printer is None:
        return printer or monitor, monitor

    def report(done, r, central=None):
        printer(done, r, central)
        monitor(done, r, central)

    return report, monitor


def resire(tilts, iterations=None, step=None, **kwargs) -> xr.DataArray:
    """RESIRE reconstruction (see :func:`reconstruct`)."""
    return reconstruct(tilts, "resire", iterations, step, **kwargs)


def sirt(tilts, iterations=None, relaxation=None, **kwargs) -> xr.DataArray:
    """SIRT reconstruction with the same sub-sampled projector (see :func:`reconstruct`)."""
    return reconstruct(tilts, "sirt", iterations, relaxation, **kwargs)


def fbp(tilts, **kwargs) -> xr.DataArray:
    """Filtered back projection (Ram-Lak filter) with the same projector."""
    return reconstruct(tilts, "fbp", **kwargs)
