"""The RDF stage: total and partial radial distribution functions of an atomic model.

Pair counts are summed over spatial blocks (one Dask task each, halo = ``r_max``);
the finite-particle reference ``P_S(r)`` (an ideal gas in the particle's shape,
see :mod:`aetdask.kernels.structure.rdf`) is one more task. Lazy: returns Dask-backed xarray.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import xarray as xr

from aetdask.analyze.blocks import spatial_blocks
from aetdask.errors import InputError
from aetdask.kernels.structure import rdf as rdf_k


def species_pairs(symbols) -> list[tuple[str, str]]:
    """Unordered species pairs in order: ``[(a, a), (a, b), (b, b)]`` for ``[a, b]``.

    >>> species_pairs(["O", "Si"])
    [('O', 'O'), ('O', 'Si'), ('Si', 'Si')]
    """
    s = list(symbols)
    return [(s[a], s[b]) for a in range(len(s)) for b in range(a, len(s))]


def _block_counts(pos, kind, core, edges, n_kinds):
    """Ordered pair counts (core atom of kind a → any atom of kind b) of one block."""
    out = np.zeros((n_kinds, n_kinds, len(edges) - 1), dtype=np.int64)
    for a in range(n_kinds):
        qa = pos[core & (kind == a)]
        for b in range(n_kinds):
            out[a, b] = rdf_k.pair_counts(qa, pos[kind == b], edges, same=False)
    return out


def _shape_reference(pos, edges, pad):
    extent = float(np.ptp(pos, axis=0).max())
    spacing = max(extent / 64.0, 1e-3)
    try:
        mask, _ = rdf_k.hull_mask(pos, spacing, pad=pad)
    except ValueError as exc:  # a flat model (analyze refuses those up front; rdf() may be called directly)
        raise InputError(f"rdf: the particle's shape cannot be found ({exc}); expected atoms that span a volume, "
                         "not a line or a plane") from None
    p, volume = rdf_k.shape_distance_distribution(mask, spacing, edges)
    return np.concatenate([p, [volume]])


def rdf(atoms: xr.Dataset, *, r_max: float = 12.0, dr: float = 0.1, block: float = 40.0, pad=None) -> xr.Dataset:
    """Total and partial RDFs ``g(r)`` of a finite model (lazy).

    Parameters
    ----------
    atoms : Dataset
        An atomic model (``position``, ``species``).
    r_max, dr : float
        Largest distance and shell width (Å); Yuan et al. use 0.1 Å shells.
    block : float
        Core size (Å) of the spatial blocks counted in parallel.
    pad : float, optional
        How far (Å) the particle's shape reaches beyond the convex hull of its atoms;
        default half the median nearest-neighbour distance.

    Returns
    -------
    Dataset with ``g (pair, r)``, ``g_total (r)``, ``pair_count (pair, r)`` and the
    shape's ``volume`` (Å³) and ``number_density`` (Å⁻³) in attrs once computed.

    Examples
    --------
    >>> from aetdask.simulate.amorphous import amorphous_particle
    >>> res = rdf(amorphous_particle(300, seed=0), r_max=8.0).compute()
    >>> res.g_total.sel(r=slice(0, 1.5)).sum().item()  # nothing closer than a bond
    0.0
    """
    pos = np.asarray(atoms.position.values, dtype=np.float64)
    symbols, kind = np.unique(atoms.species.values.astype(str), return_inverse=True)
    edges = rdf_k.shell_edges(r_max, dr)
    n_shell = len(edges) - 1
    nk = len(symbols)
    parts = []
    for b in spatial_blocks(pos, block, r_max):
        task = dask.delayed(_block_counts, pure=True)(pos[b.ids], kind[b.ids], b.core, edges, nk)
        parts.append(da.from_delayed(task, shape=(nk, nk, n_shell), dtype=np.int64))
    ordered = da.stack(parts).sum(axis=0)
    ref = da.from_delayed(dask.delayed(_shape_reference, pure=True)(pos, edges, pad), shape=(n_shell + 1,), dtype=float)
    p_shape, volume = ref[:n_shell], ref[n_shell]
    n_of = np.bincount(kind, minlength=nk)
    pairs = species_pairs(range(nk))
    counts, totals = [], []
    for a, b in pairs:
        if a == b:
            self_pairs = np.zeros(n_shell, dtype=np.int64)
            self_pairs[0] = n_of[a]  # each atom counted with itself, at r = 0
            counts.append((ordered[a, a] - self_pairs) // 2)
            totals.append(n_of[a] * (n_of[a] - 1) / 2)
        else:
            counts.append(ordered[a, b])
            totals.append(float(n_of[a] * n_of[b]))
    counts = da.stack(counts)
    totals = np.asarray(totals)
    g = counts / (totals[:, None] * p_shape[None, :])
    n = len(pos)
    g_total = counts.sum(axis=0) / (n * (n - 1) / 2 * p_shape)
    labels = ["-".join((str(symbols[a]), str(symbols[b]))) for a, b in pairs]
    r = 0.5 * (edges[:-1] + edges[1:])
    return xr.Dataset(
        {
            "g": (("pair", "r"), g),
            "g_total": ("r", g_total),
            "pair_count": (("pair", "r"), counts),
            "volume": ((), volume, {"units": "Å³"}),
        },
        coords={"r": ("r", r, {"units": "Å"}), "pair": labels},
        attrs={"dr": dr, "r_max": r_max, "n_atoms": n},
    )


def peaks_and_valleys(result: xr.Dataset) -> dict:
    """First peak and first valley (Å) of the total and each partial RDF (computed).

    Partials without a peak within ``r_max`` (too few pairs) get None.
    """
    out = {}
    r = result.r.values
    for name, g in [("total", result.g_total.values)] + [(p, result.g.sel(pair=p).values) for p in result.pair.values]:
        try:
            peak, valley = rdf_k.first_peak_and_valley(r, g)
            out[str(name)] = {"first_peak": peak, "first_valley": valley}
        except ValueError:
            out[str(name)] = {"first_peak": None, "first_valley": None}
    return out
