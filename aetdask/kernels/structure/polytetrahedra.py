"""Polytetrahedral packing: tetrahedra, bipyramid motifs, pentagonal-bipyramid networks, icosahedra.

The structure analysis of Yuan et al. (2022) for monatomic amorphous materials:

1. :func:`tetrahedra` — every set of four mutually neighbouring atoms (the
   4-cliques of the neighbour graph) and its distortion
   ``δ = e_max / e_avg − 1`` over the six edge lengths.
2. :func:`bipyramids` — tetrahedra (kept where ``δ ≤ δ_max``) that share a
   common edge, the *axis*, and are face-connected around it: triplets (3),
   quadrilateral (4), pentagonal (5) and hexagonal (6) bipyramids, each with
   its order and whether it closes into a ring around the axis.
   :func:`motif_atoms` and :func:`motif_fractions_vs_delta` give the fractions
   of atoms in each motif type (against ``δ_max``).
3. :func:`pentagonal_bipyramids` — the closed 5-rings as ``(k, 7)`` atom ids
   (two caps, then the ring in ring order); :func:`pb_networks` joins
   edge-sharing pentagonal bipyramids (PBs) into networks and measures them;
   :func:`icosahedra` finds atoms capping 12 PBs (full icosahedra) or fewer
   (partial icosahedra).

Models are finite, non-periodic particles or films; positions ``(n, 3)`` in Å.
Every kernel here is pure NumPy / SciPy / Numba.

References
----------
.. [1] Y. Yuan, D. S. Kim, J. Zhou, D. J. Chang, F. Zhu, Y. Nagaoka, Y. Yang,
   M. Pham, S. J. Osher, O. Chen, P. Ercius, A. K. Schmid, J. Miao, "Direct
   observation of 3D atomic packing in monatomic amorphous materials",
   Nature Materials 21, 95–102 (2022).
.. [2] D. R. Nelson, F. Spaepen, "Polytetrahedral order in condensed matter",
   Solid State Physics 42, 1–90 (1989).
"""

from __future__ import annotations

import numba
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

from aetdask.kernels.structure.neighbors import neighbor_csr, neighbor_pairs

#: The motif types of Yuan et al. by order (number of tetrahedra around the common edge).
MOTIF_TYPES = {"triplet": 3, "quadrilateral": 4, "pentagonal": 5, "hexagonal": 6}

# The 6 edges of a tetrahedron (columns of a sorted row) and, for each, the opposite edge.
_EDGES = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])
_OPPOSITE = np.array([[2, 3], [1, 3], [1, 2], [0, 3], [0, 2], [0, 1]])

# The 16 edges of a pentagonal bipyramid given as (cap, cap, r0, r1, r2, r3, r4).
_PB_EDGES = np.array(
    [[0, 1]]
    + [[2 + r, 2 + (r + 1) % 5] for r in range(5)]
    + [[c, 2 + r] for c in (0, 1) for r in range(5)]
)


# --------------------------------------------------------------------------- tetrahedra


@numba.njit(cache=True)
def _four_cliques(indptr, indices):
    """All 4-cliques ``i < j < k < l`` of a symmetric CSR graph with sorted rows, in lexicographic order."""
    n = len(indptr) - 1
    cap = max(64, 2 * len(indices))
    out = np.empty((cap, 4), dtype=np.int64)
    m = 0
    max_degree = 0
    for a in range(n):
        max_degree = max(max_degree, indptr[a + 1] - indptr[a])
    # Stamps: mark_i[x] == i ⇔ x is a neighbour of i (adjacency is static, so an old stamp
    # with the same value stays true; every atom's row is re-stamped before it is used).
    mark_i = np.full(n, -1, dtype=np.int64)
    mark_k = np.full(n, -1, dtype=np.int64)
    cand = np.empty(max(max_degree, 1), dtype=np.int64)
    for i in range(n):
        for p in range(indptr[i], indptr[i + 1]):
            mark_i[indices[p]] = i
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            if j <= i:
                continue
            nc = 0  # common neighbours k > j of i and j, ascending
            for q in range(indptr[j], indptr[j + 1]):
                k = indices[q]
                if k > j and mark_i[k] == i:
                    cand[nc] = k
                    nc += 1
            for a in range(nc - 1):
                k = cand[a]
                for r in range(indptr[k], indptr[k + 1]):
                    mark_k[indices[r]] = k
                for b in range(a + 1, nc):
                    l = cand[b]
                    if mark_k[l] == k:
                        if m == cap:
                            cap *= 2
                            grown = np.empty((cap, 4), dtype=np.int64)
                            grown[:m] = out[:m]
                            out = grown
                        out[m, 0] = i
                        out[m, 1] = j
                        out[m, 2] = k
                        out[m, 3] = l
                        m += 1
    return out[:m].copy()


def tetrahedron_distortion(positions, tets) -> np.ndarray:
    """Distortion ``δ = e_max / e_avg − 1`` of each tetrahedron over its six edge lengths.

    ``δ = 0`` for a regular tetrahedron (exactly, when the six lengths are equal).
    Yuan et al. [1]_ keep tetrahedra with ``δ ≤ 0.255``.

    Parameters
    ----------
    positions : (n, 3) float
    tets : (m, 4) int
        Atom ids of each tetrahedron.

    Returns
    -------
    delta : (m,) float64

    References
    ----------
    .. [1] Y. Yuan et al., Nature Materials 21, 95–102 (2022).

    Examples
    --------
    >>> p = np.array([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    >>> tetrahedron_distortion(p, np.array([[0, 1, 2, 3]])).tolist()
    [0.0]
    """
    pos = np.asarray(positions, dtype=np.float64)
    tets = np.asarray(tets, dtype=np.int64).reshape(-1, 4)
    if len(tets) == 0:
        return np.zeros(0)
    e = np.linalg.norm(pos[tets[:, _EDGES[:, 0]]] - pos[tets[:, _EDGES[:, 1]]], axis=2)  # (m, 6)
    # δ = (e_max − e_avg)/e_avg written with r = e − e_min, so equal edges give exactly 0.
    e_min = e.min(axis=1)
    r = e - e_min[:, None]
    r_avg = r.mean(axis=1)
    return (r.max(axis=1) - r_avg) / (e_min + r_avg)


def tetrahedra(positions, cutoff: float):
    """Every set of four mutually neighbouring atoms and its distortion.

    A tetrahedron is a 4-clique of the neighbour graph: all six pair distances
    are below ``cutoff`` (strictly). Nothing is filtered by distortion here, so
    motif statistics for several ``δ_max`` come from one enumeration (see
    :func:`bipyramids`, :func:`motif_fractions_vs_delta`).

    Parameters
    ----------
    positions : (n, 3) float
        Atom positions (Å).
    cutoff : float
        Neighbour cutoff (Å), usually the first minimum of the pair distribution.

    Returns
    -------
    tets : (m, 4) int64
        Atom ids, each row ascending, rows in lexicographic order.
    delta : (m,) float64
        ``δ = e_max / e_avg − 1`` over the six edges (:func:`tetrahedron_distortion`).

    Notes
    -----
    Numba enumeration over the neighbour CSR: for each atom ``i``, each
    neighbour ``j > i``, the common neighbours ``k > j`` of ``i`` and ``j``,
    and among those each ``l > k`` adjacent to ``k``. The cost is linear in the
    number of atoms for a packing of bounded coordination.

    References
    ----------
    .. [1] Y. Yuan et al., Nature Materials 21, 95–102 (2022).
    .. [2] D. R. Nelson, F. Spaepen, Solid State Physics 42, 1–90 (1989).

    Examples
    --------
    >>> p = np.array([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1], [9, 9, 9]])
    >>> tets, delta = tetrahedra(p, 3.0)
    >>> tets.tolist(), delta.tolist()
    ([[0, 1, 2, 3]], [0.0])
    """
    pos = np.asarray(positions, dtype=np.float64)
    i, j, _ = neighbor_pairs(pos, cutoff)
    indptr, indices = neighbor_csr(len(pos), i, j)
    tets = _four_cliques(indptr, indices)
    return tets, tetrahedron_distortion(pos, tets)


# --------------------------------------------------------------------------- bipyramids


@numba.njit(cache=True)
def _root(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@numba.njit(cache=True)
def _edge_groups(starts, ax_a, ax_b, ring_c, ring_d, tet_id, min_order):
    """Face-connected groups of the tetrahedra around each axis.

    ``starts`` delimit runs of incidences with the same axis; each incidence is one
    tetrahedron ``tet_id`` around axis ``(ax_a, ax_b)`` with opposite edge ``(ring_c, ring_d)``.
    Around one axis, two tetrahedra share a face iff their opposite edges share an atom, so
    the groups are the connected components of the graph of opposite edges.
    """
    n_inc = len(ax_a)
    n_runs = len(starts) - 1
    max_groups = n_inc // max(min_order, 1) + 1
    g_axis = np.empty((max_groups, 2), dtype=np.int64)
    g_order = np.empty(max_groups, dtype=np.int64)
    g_closed = np.empty(max_groups, dtype=np.bool_)
    ring_ptr = np.zeros(max_groups + 1, dtype=np.int64)
    ring_atoms = np.empty(2 * n_inc + 1, dtype=np.int64)
    tet_ptr = np.zeros(max_groups + 1, dtype=np.int64)
    tet_ids = np.empty(n_inc + 1, dtype=np.int64)
    smax = 1
    for r in range(n_runs):
        smax = max(smax, starts[r + 1] - starts[r])
    atoms = np.empty(2 * smax, dtype=np.int64)  # local ring atoms of this axis
    parent = np.empty(2 * smax, dtype=np.int64)
    u = np.empty(smax, dtype=np.int64)  # local ends of each opposite edge
    v = np.empty(smax, dtype=np.int64)
    root = np.empty(2 * smax, dtype=np.int64)
    deg = np.empty(2 * smax, dtype=np.int64)
    nb = np.empty((2 * smax, 2), dtype=np.int64)  # first two ring neighbours of each atom
    done = np.empty(2 * smax, dtype=np.bool_)
    in_group = np.empty(2 * smax, dtype=np.bool_)
    k = 0
    na_out = 0
    nt_out = 0
    for r in range(n_runs):
        s0 = starts[r]
        s = starts[r + 1] - s0
        na = 0
        for t in range(s):
            for which in range(2):
                x = ring_c[s0 + t] if which == 0 else ring_d[s0 + t]
                loc = -1
                for q in range(na):
                    if atoms[q] == x:
                        loc = q
                        break
                if loc < 0:
                    atoms[na] = x
                    loc = na
                    na += 1
                if which == 0:
                    u[t] = loc
                else:
                    v[t] = loc
        for q in range(na):
            parent[q] = q
            deg[q] = 0
            done[q] = False
        for t in range(s):
            ru = _root(parent, u[t])
            rv = _root(parent, v[t])
            if ru != rv:
                parent[max(ru, rv)] = min(ru, rv)
        for q in range(na):
            root[q] = _root(parent, q)
        for t in range(s):
            rt = root[u[t]]
            if done[rt]:
                continue
            done[rt] = True  # a new group, in the order of its first tetrahedron
            order = 0
            for t2 in range(t, s):
                if root[u[t2]] == rt:
                    order += 1
            if order < min_order:
                continue
            n_ring = 0
            for q in range(na):
                in_group[q] = root[q] == rt
                deg[q] = 0
                if in_group[q]:
                    n_ring += 1
            for t2 in range(t, s):
                if root[u[t2]] == rt:
                    a, b = u[t2], v[t2]
                    if deg[a] < 2:
                        nb[a, deg[a]] = b
                    if deg[b] < 2:
                        nb[b, deg[b]] = a
                    deg[a] += 1
                    deg[b] += 1
                    tet_ids[nt_out] = tet_id[s0 + t2]
                    nt_out += 1
            max_deg = 0
            n_ends = 0
            start = -1
            for q in range(na):
                if in_group[q]:
                    max_deg = max(max_deg, deg[q])
                    if deg[q] == 1:
                        n_ends += 1
            closed = order >= 3 and max_deg == 2 and n_ring == order
            path = max_deg <= 2 and n_ends == 2 and n_ring == order + 1
            if closed or path:
                # start at the smallest atom id (closed) or the end with the smaller id (path)
                for q in range(na):
                    if in_group[q] and (closed or deg[q] == 1):
                        if start < 0 or atoms[q] < atoms[start]:
                            start = q
                prev = -1
                cur = start
                if closed:  # go round towards the smaller of the two ring neighbours
                    nxt = nb[cur, 0] if atoms[nb[cur, 0]] < atoms[nb[cur, 1]] else nb[cur, 1]
                else:
                    nxt = nb[cur, 0]
                for _ in range(n_ring):
                    ring_atoms[na_out] = atoms[cur]
                    na_out += 1
                    prev = cur
                    cur = nxt
                    if cur < 0:
                        break
                    if deg[cur] == 1:
                        nxt = -1
                    else:
                        nxt = nb[cur, 0] if nb[cur, 0] != prev else nb[cur, 1]
            else:  # branched (overlapping tetrahedra): ring atoms in ascending order
                first = na_out
                for q in range(na):
                    if in_group[q]:
                        x = atoms[q]
                        p = na_out
                        while p > first and ring_atoms[p - 1] > x:
                            ring_atoms[p] = ring_atoms[p - 1]
                            p -= 1
                        ring_atoms[p] = x
                        na_out += 1
            g_axis[k, 0] = ax_a[s0]
            g_axis[k, 1] = ax_b[s0]
            g_order[k] = order
            g_closed[k] = closed
            ring_ptr[k + 1] = na_out
            tet_ptr[k + 1] = nt_out
            k += 1
    return (g_axis[:k].copy(), g_order[:k].copy(), g_closed[:k].copy(), ring_ptr[: k + 1].copy(),
            ring_atoms[:na_out].copy(), tet_ptr[: k + 1].copy(), tet_ids[:nt_out].copy())


def bipyramids(tets, delta, delta_max: float = 0.255, min_order: int = 3) -> dict:
    """Motifs of tetrahedra sharing a common edge: triplets and 4-, 5-, 6-fold bipyramids.

    Tetrahedra with ``δ ≤ delta_max`` are kept. For every edge ``(a, b)`` of a kept
    tetrahedron, the kept tetrahedra containing it are linked when they share a
    face (a third atom); each face-connected group is one motif with axis
    ``(a, b)`` (its two *capping* atoms), order ``n`` = number of tetrahedra,
    and ring atoms = the other atoms of its tetrahedra. The group is ``closed``
    when it forms a ring around the axis: ``n ≥ 3`` and every ring atom is in
    exactly two of its tetrahedra (then there are ``n`` ring atoms).

    Every group of order ``≥ min_order`` is recorded, open or closed, whatever
    its order: 3 = triplet, 4 = quadrilateral bipyramid, 5 = pentagonal
    bipyramid (PB), 6 = hexagonal bipyramid; open chains of 4–6 tetrahedra and
    groups of 7 or more are recorded with their ``order`` and ``closed`` flag,
    and the caller chooses (:func:`motif_atoms` counts closed rings only as
    bipyramids; :func:`pentagonal_bipyramids` takes the closed rings of 5).

    Parameters
    ----------
    tets : (m, 4) int
        Tetrahedra from :func:`tetrahedra` (rows ascending).
    delta : (m,) float
        Their distortions.
    delta_max : float
        Keep tetrahedra with ``δ ≤ delta_max`` (Yuan et al.: 0.255).
    min_order : int
        Smallest group recorded (≥ 1; 3 by default: order 2, a face-sharing pair, is no motif).

    Returns
    -------
    dict of arrays, one row per motif, ordered by axis then by first tetrahedron:
        ``axis`` (k, 2) int64, capping atoms ``a < b``;
        ``order`` (k,) int64, number of tetrahedra;
        ``closed`` (k,) bool, a ring around the axis;
        ``ring`` (k, w) int64, ring atoms padded with −1, ``w = max(6, largest group)``;
        ``ring_ptr`` (k + 1,), ``ring_atoms``: the same as CSR;
        ``tet_ptr`` (k + 1,), ``tet_ids``: indices into ``tets`` of each motif's tetrahedra (CSR).
    Ring atoms of a closed ring are in ring order, starting at the smallest id and going
    towards its smaller ring neighbour; of an open chain in chain order from the end with the
    smaller id; of a branched group (only with overlapping, strongly distorted tetrahedra)
    in ascending order.

    Notes
    -----
    The (tetrahedron, edge) incidences are sorted by edge once (``6m`` of them); the
    groups of each edge are found by a union–find over its few ring atoms in Numba.

    References
    ----------
    .. [1] Y. Yuan et al., Nature Materials 21, 95–102 (2022).
    .. [2] D. R. Nelson, F. Spaepen, Solid State Physics 42, 1–90 (1989).

    Examples
    --------
    Three tetrahedra around the axis (0, 1), face-sharing in a fan:

    >>> tets = np.array([[0, 1, 2, 3], [0, 1, 3, 4], [0, 1, 4, 5]])
    >>> m = bipyramids(tets, np.zeros(3))
    >>> m["axis"].tolist(), m["order"].tolist(), m["closed"].tolist(), m["ring"].tolist()
    ([[0, 1]], [3], [False], [[2, 3, 4, 5, -1, -1]])
    """
    tets = np.asarray(tets, dtype=np.int64).reshape(-1, 4)
    delta = np.asarray(delta, dtype=np.float64)
    if delta.shape != (len(tets),):
        raise ValueError(f"delta must have shape ({len(tets)},), got {delta.shape}")
    if min_order < 1:
        raise ValueError(f"min_order must be ≥ 1, got {min_order}")
    keep = np.flatnonzero(delta <= delta_max)
    kt = np.sort(tets[keep], axis=1)
    n_ids = int(kt.max()) + 1 if len(kt) else 1
    a = kt[:, _EDGES[:, 0]].ravel()
    b = kt[:, _EDGES[:, 1]].ravel()
    key = a * n_ids + b
    order = np.argsort(key, kind="stable")
    key = key[order]
    bounds = np.flatnonzero(np.diff(key)) + 1
    starts = np.concatenate([[0], bounds, [len(key)]]).astype(np.int64)
    counts = np.diff(starts)
    big = counts >= min_order  # only axes with enough tetrahedra can hold a recorded group
    sel = np.repeat(big, counts)
    order = order[sel]
    starts = np.concatenate([[0], np.cumsum(counts[big])]).astype(np.int64)
    c = kt[:, _OPPOSITE[:, 0]].ravel()[order]
    d = kt[:, _OPPOSITE[:, 1]].ravel()[order]
    tid = np.repeat(keep, 6)[order]
    axis, g_order, closed, ring_ptr, ring_atoms, tet_ptr, tet_ids = _edge_groups(
        starts, a[order], b[order], c, d, tid, int(min_order)
    )
    sizes = np.diff(ring_ptr)
    width = max(6, int(sizes.max()) if len(sizes) else 0)
    ring = np.full((len(g_order), width), -1, dtype=np.int64)
    rows = np.repeat(np.arange(len(g_order)), sizes)
    cols = np.arange(len(ring_atoms)) - np.repeat(ring_ptr[:-1], sizes)
    ring[rows, cols] = ring_atoms
    return {
        "axis": axis, "order": g_order, "closed": closed, "ring": ring,
        "ring_ptr": ring_ptr, "ring_atoms": ring_atoms, "tet_ptr": tet_ptr, "tet_ids": tet_ids,
    }


def motif_atoms(n_atoms: int, motifs: dict, closed_only: bool = True) -> dict:
    """Which atoms belong to at least one motif of each type (axis and ring atoms).

    Types by order (:data:`MOTIF_TYPES`): ``"triplet"`` = groups of exactly 3
    tetrahedra (open or closed); ``"quadrilateral"``, ``"pentagonal"``,
    ``"hexagonal"`` = groups of exactly 4, 5, 6 tetrahedra that close into a
    ring around their axis (``closed_only=True``, the bipyramids) or any such
    group (``closed_only=False``). ``"any"`` = every recorded group (of order
    ≥ ``min_order`` of :func:`bipyramids`, open or closed, including order ≥ 7).

    Groups are maximal (face-connected groups around an axis), so a triplet that
    grows into a larger group when ``δ_max`` rises stops being a triplet: the
    per-type fractions need not grow with ``δ_max``, but ``"any"`` does.

    Parameters
    ----------
    n_atoms : int
    motifs : dict
        From :func:`bipyramids`.
    closed_only : bool
        Count only closed rings as quadrilateral/pentagonal/hexagonal bipyramids.

    Returns
    -------
    dict of (n_atoms,) bool, keys ``"triplet", "quadrilateral", "pentagonal", "hexagonal", "any"``.
    ``mask.mean()`` is the fraction of atoms in that motif type.

    Examples
    --------
    >>> m = bipyramids(np.array([[0, 1, 2, 3], [0, 1, 3, 4], [0, 1, 4, 5]]), np.zeros(3))
    >>> a = motif_atoms(7, m)
    >>> a["triplet"].tolist(), int(a["pentagonal"].sum())
    ([True, True, True, True, True, True, False], 0)
    """
    order = np.asarray(motifs["order"])
    closed = np.asarray(motifs["closed"], dtype=bool)
    ring_ptr = np.asarray(motifs["ring_ptr"])
    ring_atoms = np.asarray(motifs["ring_atoms"])
    axis = np.asarray(motifs["axis"]).reshape(-1, 2)
    owner = np.repeat(np.arange(len(order)), np.diff(ring_ptr))

    def mark(sel):
        mask = np.zeros(int(n_atoms), dtype=bool)
        mask[axis[sel].ravel()] = True
        mask[ring_atoms[sel[owner]]] = True
        return mask

    out = {}
    for name, n in MOTIF_TYPES.items():
        sel = order == n
        if closed_only and n >= 4:
            sel &= closed
        out[name] = mark(sel)
    out["any"] = mark(np.ones(len(order), dtype=bool))
    return out


def motif_fractions_vs_delta(tets, delta, n_atoms: int, deltas, closed_only: bool = True) -> dict:
    """Fraction of atoms in each motif type for each ``δ_max`` in ``deltas``.

    Runs :func:`bipyramids` and :func:`motif_atoms` for every ``δ_max`` on one
    enumeration of tetrahedra (:func:`tetrahedra`), as plotted by Yuan et al. [1]_.

    Parameters
    ----------
    tets, delta
        From :func:`tetrahedra`.
    n_atoms : int
        Number of atoms of the model (the denominator of the fractions).
    deltas : sequence of float
        The ``δ_max`` values.
    closed_only : bool
        See :func:`motif_atoms`.

    Returns
    -------
    dict
        ``"delta_max"`` (d,) and, for each key of :func:`motif_atoms`, a (d,) array of fractions.

    References
    ----------
    .. [1] Y. Yuan et al., Nature Materials 21, 95–102 (2022).

    Examples
    --------
    >>> tets = np.array([[0, 1, 2, 3], [0, 1, 3, 4], [0, 1, 4, 5]])
    >>> f = motif_fractions_vs_delta(tets, np.array([0.0, 0.1, 0.2]), 6, [0.05, 0.15, 0.25])
    >>> f["triplet"].tolist(), f["any"].tolist()
    ([0.0, 0.0, 1.0], [0.0, 0.0, 1.0])
    """
    deltas = np.atleast_1d(np.asarray(deltas, dtype=np.float64))
    out = {"delta_max": deltas}
    for q, dm in enumerate(deltas):
        masks = motif_atoms(n_atoms, bipyramids(tets, delta, dm), closed_only=closed_only)
        for name, mask in masks.items():
            out.setdefault(name, np.zeros(len(deltas)))[q] = mask.mean() if n_atoms else 0.0
    if len(deltas) == 0:
        for name in (*MOTIF_TYPES, "any"):
            out[name] = np.zeros(0)
    return out


def pentagonal_bipyramids(motifs: dict) -> np.ndarray:
    """Atom ids of the closed pentagonal bipyramids: ``(k, 7)``, two caps then the ring in ring order.

    Examples
    --------
    >>> tets = np.sort([[0, 1, 2 + r, 2 + (r + 1) % 5] for r in range(5)], axis=1)
    >>> pentagonal_bipyramids(bipyramids(tets, np.zeros(5))).tolist()
    [[0, 1, 2, 3, 4, 5, 6]]
    """
    sel = (np.asarray(motifs["order"]) == 5) & np.asarray(motifs["closed"], dtype=bool)
    return np.concatenate([motifs["axis"][sel], motifs["ring"][sel, :5]], axis=1).astype(np.int64)


# --------------------------------------------------------------------------- PB networks


def _max_distances(pos, atom_ptr, atoms, small: int = 40, budget: int = 4_000_000) -> np.ndarray:
    """Largest pairwise distance among the atoms of each group (CSR ``atom_ptr``, ``atoms``)."""
    n_groups = len(atom_ptr) - 1
    sizes = np.diff(atom_ptr)
    out = np.zeros(n_groups)
    # Small groups, vectorised: all groups of one size at once, in chunks.
    for width in np.unique(sizes[(sizes >= 2) & (sizes <= small)]):
        groups = np.flatnonzero(sizes == width)
        chunk = max(1, budget // int(width * width))
        for s in range(0, len(groups), chunk):
            g = groups[s:s + chunk]
            p = pos[atoms[atom_ptr[g][:, None] + np.arange(width)[None, :]]]  # (g, w, 3)
            d2 = np.sum((p[:, :, None, :] - p[:, None, :, :]) ** 2, axis=-1)
            out[g] = np.sqrt(d2.reshape(len(g), -1).max(axis=1))
    # Large groups: the farthest pair lies on the convex hull.
    for g in np.flatnonzero(sizes > small):
        p = pos[atoms[atom_ptr[g]:atom_ptr[g + 1]]]
        try:
            p = p[ConvexHull(p).vertices]
        except QhullError:  # degenerate (flat or collinear): all points
            pass
        out[g] = pdist(p).max()
    return out


def pb_networks(pb_atoms, positions) -> dict:
    """Networks of edge-sharing pentagonal bipyramids.

    Two PBs are connected when they share an edge: a pair of atoms that is one
    of the 16 edges of both (the axis, the 5 ring edges, the 10 cap–ring edges).
    Networks are the connected components (sharing a single atom, or two atoms
    that are not an edge of both, does not connect).

    Parameters
    ----------
    pb_atoms : (k, 7) int
        Caps then ring atoms in ring order (:func:`pentagonal_bipyramids`).
    positions : (n, 3) float
        Atom positions (Å), for the lengths.

    Returns
    -------
    dict
        ``label`` (k,) int64, network of each PB, numbered by their first PB;
        ``size`` (g,) int64, number of PBs per network;
        ``n_atoms`` (g,) int64, number of distinct atoms per network;
        ``length`` (g,) float64, end-to-end length (Å) = the largest distance between
        two atom centres of the network (for large networks found among the vertices
        of its convex hull);
        ``atom_ptr`` (g + 1,), ``atoms``: the distinct atoms of each network (CSR, ascending).

    References
    ----------
    .. [1] Y. Yuan et al., Nature Materials 21, 95–102 (2022).

    Examples
    --------
    >>> ring = [[np.cos(t), np.sin(t), 0.0] for t in 2 * np.pi * np.arange(5) / 5]
    >>> pos = np.array([[0, 0, 0.85], [0, 0, -0.85]] + ring)
    >>> net = pb_networks(np.array([[0, 1, 2, 3, 4, 5, 6]]), pos)
    >>> net["label"].tolist(), net["size"].tolist(), net["n_atoms"].tolist(), net["length"].round(3).tolist()
    ([0], [1], [7], [1.902])
    """
    pb = np.asarray(pb_atoms, dtype=np.int64).reshape(-1, 7)
    pos = np.asarray(positions, dtype=np.float64)
    k = len(pb)
    if k == 0:
        z = np.zeros(0, dtype=np.int64)
        return {"label": z, "size": z.copy(), "n_atoms": z.copy(), "length": np.zeros(0),
                "atom_ptr": np.zeros(1, dtype=np.int64), "atoms": z.copy()}
    n_ids = int(max(pb.max() + 1, len(pos)))
    e = pb[:, _PB_EDGES]  # (k, 16, 2)
    lo, hi = np.minimum(e[..., 0], e[..., 1]).ravel(), np.maximum(e[..., 0], e[..., 1]).ravel()
    key = lo * n_ids + hi
    owner = np.repeat(np.arange(k), len(_PB_EDGES))
    order = np.argsort(key, kind="stable")
    key, owner = key[order], owner[order]
    same = np.flatnonzero(key[1:] == key[:-1])  # consecutive PBs sharing an edge
    graph = coo_matrix((np.ones(len(same)), (owner[same], owner[same + 1])), shape=(k, k))
    _, raw = connected_components(graph, directed=False)
    # renumber networks in the order of their first PB
    _, first = np.unique(raw, return_index=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    label = rank[raw]
    n_net = len(first)
    size = np.bincount(label, minlength=n_net).astype(np.int64)
    pair = np.unique(np.repeat(label, 7) * n_ids + pb.ravel())
    net_of, atoms = pair // n_ids, pair % n_ids
    count = np.bincount(net_of, minlength=n_net).astype(np.int64)
    atom_ptr = np.concatenate([[0], np.cumsum(count)]).astype(np.int64)
    return {"label": label, "size": size, "n_atoms": count,
            "length": _max_distances(pos, atom_ptr, atoms), "atom_ptr": atom_ptr, "atoms": atoms}


def icosahedra(pb_atoms, n_atoms: int, partial_min: int = 6) -> dict:
    """Full and partial icosahedra: atoms capping many pentagonal bipyramids.

    An icosahedron's centre caps 12 PBs, one along each centre–vertex axis. An
    atom capping exactly 12 PBs whose other caps are 12 distinct atoms is the
    centre of a full icosahedron; an atom capping ``partial_min`` to 11 PBs is
    the centre of a partial icosahedron. ``partial_min = 6`` (half of the
    icosahedron's axes) is a convention of this module, not a definition from
    Yuan et al.; choose it to suit.

    Parameters
    ----------
    pb_atoms : (k, 7) int
        Caps then ring atoms (:func:`pentagonal_bipyramids`); only the caps are used.
    n_atoms : int
    partial_min : int
        Fewest PBs capped by the centre of a partial icosahedron.

    Returns
    -------
    dict of (n_atoms,) arrays
        ``pb_count`` int64, number of PBs each atom caps; ``partners`` int64, number
        of distinct other caps of those PBs; ``full`` bool; ``partial`` bool.

    References
    ----------
    .. [1] Y. Yuan et al., Nature Materials 21, 95–102 (2022).
    .. [2] D. R. Nelson, F. Spaepen, Solid State Physics 42, 1–90 (1989).

    Examples
    --------
    >>> pbs = np.array([[0, v, 1, 2, 3, 4, 5] for v in range(6, 13)])
    >>> ico = icosahedra(pbs, 13)
    >>> int(ico["pb_count"][0]), bool(ico["full"][0]), bool(ico["partial"][0])
    (7, False, True)
    """
    pb = np.asarray(pb_atoms, dtype=np.int64).reshape(-1, 7)
    n = int(n_atoms)
    caps = pb[:, :2]
    me = np.concatenate([caps[:, 0], caps[:, 1]])
    other = np.concatenate([caps[:, 1], caps[:, 0]])
    pb_count = np.bincount(me, minlength=n).astype(np.int64)
    pairs = np.unique(me * max(n, 1) + other)
    partners = np.bincount(pairs // max(n, 1), minlength=n).astype(np.int64)
    full = (pb_count == 12) & (partners == 12)
    partial = (pb_count >= partial_min) & (pb_count <= 11)
    return {"pb_count": pb_count, "partners": partners, "full": full, "partial": partial}
