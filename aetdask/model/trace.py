"""The tracing stage: volume in, atom candidates out, sub-volume by sub-volume on Dask workers.

Every sub-volume is traced with a halo wide enough for everything a candidate
needs (the spline's reach, the fit window, how far a fit may wander, the
integration ball); a candidate belongs to the sub-volume that holds the local
maximum it started from, so the union over sub-volumes is the whole volume's
candidate list. Before the maxima are found, the volume may be correlated with the atom's profile
(a matched filter, ``aetdask.trace.atom_width``; off by default). The minimum-distance
merge, a cheap greedy pass over the
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
from aetdask.kernels.atoms import trace as trace_k
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


#: Voxels per side of the central block the atom's width is measured on (a few thousand atoms' worth).
_WIDTH_BLOCK = 96


def measure_width(volume, min_distance: float) -> float:
    """Standard deviation (voxels) of an atom's profile in a volume, measured from the volume itself.

    Correlate with a Gaussian as wide as an atom can be without reaching its
    neighbours (half ``min_distance``, in voxels), where noise maxima are
    smoothed away most; find and fit its maxima, merge them at
    ``min_distance``, and take the brighter K-means class of the merged maxima
    (the atoms, not the noise). Average the *unfiltered* volume against the
    distance from them and fit a Gaussian on a constant from one voxel out to
    ``min_distance`` (nearer than any neighbour's centre): within a voxel of a
    maximum the noise, correlated over about a voxel, is biased up by the
    selection. The wide filter only finds the atoms; their width comes from the
    unfiltered volume. (Iterating — filtering at the width found and measuring
    again — drifts narrower in strong noise, as more noise maxima join the
    brighter class.)
    """
    v = np.asarray(volume, dtype=np.float64)
    wide = 0.5 * min_distance
    f = trace_k.matched_filter(v, wide)
    start = trace_k.local_maxima(f)
    if len(start) < 2:
        return float(wide)
    pos, peak, ok = trace_k.fit_peaks(trace_k.spline_coefficients(f), start, max_shift=0.5 * min_distance)
    pos, peak = pos[ok], peak[ok]
    keep = trace_k.merge(pos, peak, min_distance)
    pos, peak = pos[keep], peak[keep]
    bright = peak > trace_k._two_means(peak)
    if bright.sum() < 2:
        return float(wide)
    r, profile = trace_k.radial_profile(v, pos[bright], min_distance)
    width = trace_k.gaussian_width(r[r >= 1.0], profile[r >= 1.0])
    return float(width) if np.isfinite(width) else float(wide)


def _trace_block(block, origin, core_lo, core_hi, params):
    """Candidates of one sub-volume: (positions in global voxels, peak, ball intensity) for the
    local maxima inside its core."""
    raw = np.asarray(block, dtype=np.float64)
    origin = np.asarray(origin)
    v = trace_k.matched_filter(raw, params["filter"])
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
    intensity = trace_k.ball_sums(raw, pos, params["radius"])
    return np.column_stack([pos + origin, peak, intensity])


def trace(volume: xr.DataArray, species, *, chunk: int | None = None, progress: bool = False) -> xr.Dataset:
    """Trace atom candidates in a volume.

    Matched filter → local maxima → polynomial fits on the ×3
    spline-oversampled filtered volume (:func:`aetdask.kernels.atoms.trace.fit_peaks`)
    → integrated intensity of the unfiltered volume in a ball of half the merge
    distance → greedy merge at :func:`merge_distance` in descending intensity.

    The matched filter correlates the volume with the atom's profile in it, a
    Gaussian of width ``aetdask.trace.atom_width`` (Å), or measured from the
    volume itself (:func:`measure_width`) when that is null: in a noisy volume
    most plain local maxima are noise a voxel wide, which outnumber and
    displace the atoms' maxima; the filtered volume's maxima are the atoms'
    least-squares positions. The default, 0, traces the plain local maxima
    (the seed paper's scheme): on a dense 20,000-atom particle the filter also
    blurs neighbours 2.35 Å apart together and loses atoms (BENCHMARKS.md).

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
    data = volume.data
    shape = volume.shape
    t0 = time.perf_counter()
    width = config.get("trace.atom_width")
    if width is None:  # measured on a central block of the volume
        lo = [max(0, (n - _WIDTH_BLOCK) // 2) for n in shape]
        block = data[tuple(slice(a, a + _WIDTH_BLOCK) for a in lo)]
        params["filter"] = measure_width(np.asarray(block), d / pixel)
        measured = True
    else:
        params["filter"], measured = float(width) / pixel, False
    # the filter reaches 4 σ: its value there must be the whole volume's before the spline settles
    halo = int(math.ceil(params["max_shift"] + params["window"] // 2 / params["oversample"] + 2
                         + max(params["radius"], _SPLINE_SETTLE + 4.0 * params["filter"])))
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
        **params, "atom_width": params["filter"] * pixel, "atom_width_measured": measured, "merge_distance": d,
        "chunk": chunk, "halo": halo, "sub_volumes": len(tasks),
        "fitted": n_fitted, "candidates": len(found), "seconds": time.perf_counter() - t0,
    }, inputs=[f"volume {shape}"])
    light = names[np.argmin(atomic_number(names))]
    out = atoms(xyz, np.repeat(light, len(xyz)), intensity=found[:, 4],
                provenance=list(volume.attrs.get("provenance", [])) + [record])
    out["peak"] = ("atom", found[:, 3])
    out.attrs["classified"] = False
    out.attrs["species"] = names.tolist()
    return out
