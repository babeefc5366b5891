"""The local-structure stage: per-atom order, Voronoi cells, polytetrahedral motifs and rings.

One Dask task per spatial block (see :mod:`aetdask.analyze.blocks`). Everything of an
owned atom depends only on atoms within the block's halo:

* bond order needs ``2 × cutoff`` (an averaged ``q_lm`` reaches the neighbours'
  neighbours); a Voronoi cell bounded within ``reach`` is decided by the atoms within
  ``2 × reach`` (``reach`` = :data:`VORONOI_REACH` cutoffs);
* a tetrahedron, or a motif around an edge, is owned by its smallest atom id, and all
  tetrahedra through that atom lie within ``cutoff`` of it;
* shortest-path rings of up to ``ring_max`` atoms need ``(ring_max − 1) × cutoff``;
  they get their own pass, so the other quantities keep a small halo.

Tasks return owned results with global atom ids; :func:`aetdask.analyze.analyze` joins
them, so a chunked analysis equals the whole-model one.
"""

from __future__ import annotations

import dask
import numpy as np

from aetdask.analyze.blocks import spatial_blocks
from aetdask.errors import InputError
from aetdask.kernels.structure import bond_order as bo
from aetdask.kernels.structure import polytetrahedra as pt
from aetdask.kernels.structure import rings as rings_k
from aetdask.kernels.structure import voronoi as vor
from aetdask.kernels.structure.neighbors import neighbor_pairs

MOTIFS = ("triplet", "quadrilateral", "pentagonal", "hexagonal")

#: A cell counts as interior when all its vertices lie within this many first-shell cutoffs of
#: its atom: close-packed cells reach about one cutoff, open networks' (silica) somewhat more,
#: surface cells are unbounded or reach far out.
VORONOI_REACH = 2.0


def _owned_motifs(motifs: dict, core) -> dict:
    """The motifs whose smallest capping atom is in the block's core."""
    keep = np.asarray(core)[motifs["axis"][:, 0]] if len(motifs["order"]) else np.zeros(0, bool)
    sizes = np.diff(motifs["ring_ptr"])
    owner = np.repeat(np.arange(len(sizes)), sizes)
    ring_atoms = motifs["ring_atoms"][keep[owner]] if len(owner) else motifs["ring_atoms"]
    return {
        "axis": motifs["axis"][keep],
        "order": motifs["order"][keep],
        "closed": motifs["closed"][keep],
        "ring_ptr": np.concatenate([[0], np.cumsum(sizes[keep])]).astype(np.int64),
        "ring_atoms": ring_atoms,
        "ring": motifs["ring"][keep],
    }


def _all_on_hull(pos) -> bool:
    """Whether every atom is a vertex of the atoms' convex hull: then every Voronoi cell is unbounded (surface)."""
    from scipy.spatial import ConvexHull

    try:
        return len(ConvexHull(pos).vertices) == len(pos)
    except Exception:  # noqa: BLE001 - Qhull fails on flat sets: not all-surface in this sense
        return False


def _local_block(positions, ids, core, cutoff, params):
    """Everything local of one block's owned atoms, with global ids."""
    pos = positions[ids]
    n = len(pos)
    i, j, _ = neighbor_pairs(pos, cutoff)
    order = bo.averaged_bond_order(pos, cutoff, pairs=(i, j))
    try:
        cells = vor.voronoi_cells(pos, cutoff, params["area_fraction"], reach=params["reach"])
    except ValueError as exc:  # Qhull's verdict on the atoms (coincident, degenerate): the model's, said in one line
        if not str(exc).startswith("voronoi_faces"):
            raise
        if _all_on_hull(pos):  # a few atoms, all at the surface (Qhull drops some of their unbounded cells)
            cells = vor._all_surface(n)
        else:
            raise InputError(f"analyze: the Voronoi cells of the {n} atoms around atom {int(ids[core][0]) + 1} "
                             f"(counting from 1) cannot be computed ({exc}); expected a 3-D model of distinct, "
                             "well-separated atoms") from None
    tets, delta = pt.tetrahedra(pos, cutoff)
    out = {"ids": ids[core]}
    for key in ("q4", "q6", "order", "neighbors"):
        out[key] = np.asarray(order[key])[core]
    for key in ("index", "n7plus", "coordination", "volume", "interior", "five_edged_fraction"):
        out["voronoi_" + key] = np.asarray(cells[key])[core]
    owned_tet = core[tets[:, 0]] if len(tets) else np.zeros(0, bool)
    out["tet_delta"] = delta[owned_tet]
    # motif membership for every δ_max: ids of atoms in owned motifs of each type
    members = []
    for dmax in params["deltas"]:  # delta_max is one of them: keep its motifs
        found = _owned_motifs(pt.bipyramids(tets, delta, dmax), core)
        masks = pt.motif_atoms(n, found)
        members.append([ids[np.flatnonzero(masks[name])] for name in MOTIFS])
        if dmax == params["delta_max"]:
            motifs = found
    out["members"] = members
    out["motif_order"] = motifs["order"]
    out["motif_closed"] = motifs["closed"]
    out["pb"] = ids[pt.pentagonal_bipyramids(motifs)] if len(motifs["order"]) else np.zeros((0, 7), np.int64)
    return out


def _ring_block(positions, species, ids, core, bonds, ring_max, former):
    """Sizes (atoms, network formers) and alternation of the rings owned by one block."""
    pos, species = positions[ids], species[ids]
    i, j = rings_k.bond_graph(pos, species, bonds)
    rings = rings_k.shortest_path_rings(len(pos), i, j, max_size=ring_max)
    owned = core[rings[:, 0]] if len(rings) else np.zeros(0, bool)
    # canonical rows start at their smallest id; local order is global order, so ownership
    # by the smallest global id is the smallest local id's
    stats = rings_k.ring_statistics(rings[owned], species, network_former=former)
    out = {"sizes": stats["sizes"].astype(np.int16), "alternating": stats["alternating"]}
    if former is not None:
        out["former_sizes"] = stats["former_sizes"].astype(np.int16)
    return out


def local_structure(positions, cutoff: float, *, block: float, area_fraction: float,
                    delta_max: float, deltas) -> list:
    """Delayed per-block local analyses (see :func:`_local_block`)."""
    pos = np.asarray(positions, dtype=np.float64)
    params = {"area_fraction": float(area_fraction), "delta_max": float(delta_max),
              "deltas": [float(d) for d in deltas], "reach": VORONOI_REACH * float(cutoff)}
    shared = dask.delayed(pos, traverse=False)  # in the graph once, not once per block
    return [
        dask.delayed(_local_block, pure=True)(shared, b.ids, b.core, float(cutoff), params)
        for b in spatial_blocks(pos, block, 2.0 * params["reach"])
    ]


def ring_structure(positions, species, bonds: dict, *, block: float, ring_max: int, former=None) -> list:
    """Delayed per-block ring searches over the bonds ``{(a, b): cutoff}`` (halo ``(ring_max − 1) × cutoff``)."""
    pos = np.asarray(positions, dtype=np.float64)
    species = np.asarray(species).astype(str)
    halo = (int(ring_max) - 1) * max(bonds.values(), default=0.0)
    # the ring halo is wide and the search cheap: cores at least twice the halo, so a model
    # not much larger than its rings is searched once
    shared = dask.delayed(pos, traverse=False), dask.delayed(species, traverse=False)
    return [
        dask.delayed(_ring_block, pure=True)(*shared, b.ids, b.core, bonds, int(ring_max), former)
        for b in spatial_blocks(pos, max(block, 2.0 * halo), halo)
    ]
