"""The tracing stage: volume in, atom candidates out, sub-volume by sub-volume on Dask workers.

Every sub-volume is traced with a halo wide enough for everything a candidate
needs (the spline's reach, the fit window, how far a fit may wander, the
integration ball); a candidate belongs to the sub-volume that holds the local
maximum it started from, so the union over sub-volumes is the whole volume's
candidate list. The minimum-distance merge, a cheap greedy pass over the
candidates, then runs once over all of them — chunked and whole-volume tracing
give the same atoms.
"""

from __future__ import annotations

import itertools
import math
import time

import dask
import numpy as np
import xarray as xr
from ase.data import covalent_radii

from aetdask import config
from aetdask.cluster import compute
from aetdask.errors import InputError
from aetdask.plausibility import memory_limit
from aetdask.kernels import trace as trace_k
from aetdask.schema import atomic_number, atoms, normalize_species, provenance_record, validate_volume

#: Spline coefficients near a sub-volume's edge differ from the whole volume's by ~0.27 per voxel
#: of distance (cubic B-spline prefilter pole); this many extra voxels make the difference negligible.
_SPLINE_SETTLE = 10


def merge_distance(species) -> float:
    """Minimum distance (Å) between two atoms: ``bond_fraction`` × the shortest bond the species can form.

    The shortest bond is twice the smallest covalent radius (Cordero et al.):
    Si 2.22 Å → 1.67 Å; Si + O 1.32 Å → 0.99 Å; Co, Pd, Pt 2.52 Å → 1.89 Å
    with the default fraction 0.75.

    >>> round(merge_distance(["Si"]), 3), round(merge_distance(["Si", "O"]), 3)
    (1.665, 0.99)
    """
    z = atomic_number(species)
    return float(config.get("trace.bond_fraction")) * 2.0 * float(np.min(covalent_radii[z]))


def _check_fit(params: dict) -> None:
    """Refuse fit settings (``aetdask.trace.*``) that give no polynomial fit, before any task runs: the fit's
    operator is built here once (as every task builds it) and must exist and be finite."""
    values = f"window {params['window']}, oversample {params['oversample']}, sigma {params['sigma']:g}, order " \
             f"{params['order']}"
    # the operator's size before it is built: window³ samples × the polynomial's terms, float64, the design
    # matrix and its pseudo-inverse (with the SVD's work arrays, about three of them); every task builds one
    samples, terms = params["window"] ** 3, math.comb(params["order"] + 3, 3)
    need = 3 * 8 * samples * (terms + 3)
    limit = memory_limit()
    if limit is not None and need > limit / 4:
        raise InputError(f"aetdask.trace ({values}): the polynomial fit over {samples} samples with {terms} terms needs "
                         f"{need / 2**30:.3g} GiB in every task, more than a quarter of the {limit / 2**30:.3g} GiB "
                         "this machine has; expected a window of a few voxels around an atom and a low order (defaults "
                         "7 and 4)")
    try:
        with np.errstate(all="ignore"):
            _, operator, _ = trace_k.fit_operator(params["window"], params["oversample"], params["sigma"],
                                                  params["order"])
    except (np.linalg.LinAlgError, OverflowError, FloatingPointError) as exc:
        operator, reason = None, f"{exc}" if isinstance(exc, np.linalg.LinAlgError) else "sigma² overflows"
    except ValueError as exc:  # an even window
        raise InputError(f"aetdask.trace.{exc} (the fit window is centred on a voxel)") from None
    else:
        reason = "its weights are not finite"
    if operator is None or not np.all(np.isfinite(operator)):
        raise InputError(f"aetdask.trace ({values}): the polynomial fit cannot be set up ({reason}); expected a "
                         "Gaussian weight sigma of about 1–10 oversampled voxels (default 3)")


def _trace_block(block, origin, core_lo, core_hi, params):
    """Candidates of one sub-volume: (positions in global voxels, peak, ball intensity) for the
    local maxima inside its core."""
    v = np.asarray(block, dtype=np.float64)
    origin = np.asarray(origin)
    maxima = trace_k.local_maxima(v)
    g = maxima + origin
    own = np.all((g >= core_lo) & (g < core_hi), axis=1)
    maxima = maxima[own]
    if len(maxima) == 0:
        return np.empty((0, 5))
    coef = trace_k.spline_coefficients(v)
    pos, peak, ok = trace_k.fit_peaks(coef, maxima, window=params["window"], oversample=params["oversample"],
                                      sigma=params["sigma"], order=params["order"], max_shift=params["max_shift"])
    pos, peak = pos[ok], peak[ok]
    intensity = trace_k.ball_sums(v, pos, params["radius"])
    return np.column_stack([pos + origin, peak, intensity])


def trace(volume: xr.DataArray, species, *, chunk: int | None = None, progress: bool = False) -> xr.Dataset:
    """Trace atom candidates in a volume.

    Local maxima → polynomial fits on the ×3 spline-oversampled volume
    (:func:`aetdask.kernels.trace.fit_peaks`) → integrated intensity in a ball
    of half the merge distance → greedy merge at :func:`merge_distance` in
    descending intensity.

    Parameters
    ----------
    volume : xr.DataArray
        ``(z, y, x)`` volume (NumPy or Dask backed).
    species : str or list of str
        The elements in the sample (sets the merge distance).
    chunk : int, optional
        Voxels per side of the sub-volumes traced as separate Dask tasks
        (default ``aetdask.trace.chunk``).

    Returns
    -------
    xr.Dataset
        Candidates (``position`` in Å, ``intensity``, ``peak``), brightest
        first, species not yet assigned (the lightest given is a placeholder;
        ``attrs["classified"]`` is False).

    Examples
    --------
    >>> from aetdask.schema import atoms as make_atoms
    >>> from aetdask.simulate import linear
    >>> from aetdask.reconstruct import resire
    >>> truth = make_atoms([[0.0, 0.0, 0.0], [2.4, 0.0, 0.6]], ["Pt", "Pt"])
    >>> vol = resire(linear(truth, angles=range(0, 180, 6), pixel_size=0.3, shape=32), iterations=50)
    >>> found = trace(vol, "Pt")
    >>> found.sizes["atom"] >= 2, np.round(np.sort(found.position.values[:2, 0]), 1).tolist()
    (True, [0.0, 2.4])
    """
    validate_volume(volume)
    names = normalize_species(np.atleast_1d(species))
    if len(names) == 0:
        raise InputError("species: give at least one element")
    pixel = float(volume.attrs["voxel_size"])
    d = merge_distance(names)
    params = {k: config.get(f"trace.{k}") for k in ("window", "oversample", "sigma", "order")}
    params["window"], params["oversample"], params["order"] = (int(params[k]) for k in ("window", "oversample", "order"))
    params["max_shift"] = 0.5 * d / pixel
    params["radius"] = 0.5 * d / pixel
    _check_fit(params)
    chunk = int(config.get("trace.chunk", chunk))
    if chunk < 8:
        raise InputError(f"chunk: expected at least 8 voxels per side, got {chunk}")
    halo = int(math.ceil(params["max_shift"] + params["window"] // 2 / params["oversample"] + 2
                         + max(params["radius"], _SPLINE_SETTLE)))
    data = volume.data
    shape = volume.shape
    t0 = time.perf_counter()
    tasks = []
    starts = [range(0, n, chunk) for n in shape]
    for lo in itertools.product(*starts):
        lo = np.array(lo)
        hi = np.minimum(lo + chunk, shape)
        elo, ehi = np.maximum(lo - halo, 0), np.minimum(hi + halo, shape)
        block = data[tuple(slice(a, b) for a, b in zip(elo, ehi))]
        tasks.append(dask.delayed(_trace_block)(block, elo, lo, hi, params))
    if progress:
        print(f"tracing: {len(tasks)} sub-volume(s) of ≤{chunk}³ voxels with a {halo}-voxel halo")
    parts = compute(tasks, progress, "tracing sub-volumes")
    found = np.concatenate(parts) if parts else np.empty((0, 5))
    n_fitted = len(found)
    keep = trace_k.merge(found[:, :3], found[:, 4], d / pixel)
    found = found[keep]
    first = np.array([float(volume[d].values[0]) if d in volume.coords else -(n // 2) * pixel
                      for d, n in zip(("x", "y", "z"), shape[::-1])])
    xyz = found[:, [2, 1, 0]] * pixel + first  # (k, i, j) voxels → (x, y, z) Å
    record = provenance_record("trace", {
        **params, "merge_distance": d, "chunk": chunk, "halo": halo, "sub_volumes": len(tasks),
        "fitted": n_fitted, "candidates": len(found), "seconds": time.perf_counter() - t0,
    }, inputs=[f"volume {shape}"])
    light = names[np.argmin(atomic_number(names))]
    out = atoms(xyz, np.repeat(light, len(xyz)), intensity=found[:, 4],
                provenance=list(volume.attrs.get("provenance", [])) + [record])
    out["peak"] = ("atom", found[:, 3])
    out.attrs["classified"] = False
    out.attrs["species"] = names.tolist()
    return out
