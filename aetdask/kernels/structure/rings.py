"""Ring statistics of network structures: bond graphs and shortest-path (primitive) rings.

A *ring* is a closed path of bonded atoms without repeated atoms. Counting every closed
path is meaningless (their number explodes), so ring statistics use a criterion that
keeps the "primitive" rings of the network. This module uses Guttman's shortest-path
criterion: for every bond ``(a, b)`` the ring is the shortest closed path through that
bond, i.e. a shortest path from ``a`` to ``b`` in the graph with the bond removed, plus
the bond. In amorphous silica, sizes are usually quoted in network formers (an
"n-membered" ring holds n Si and n O atoms); :func:`ring_statistics` gives both
conventions and the fraction of chemically alternating (A–B–A–B…) rings.

Rings are returned as a padded integer array ``(m, max_size)``: each row lists the atom
indices of one ring in ring order, in a canonical form (smallest index first, then the
direction whose second atom is the smaller neighbour of the first), padded with ``-1``;
rows are unique and sorted lexicographically. ``(rings >= 0).sum(axis=1)`` are the sizes.

Everything works on the local indices of the arrays passed in and keeps no global state,
so a model can be processed block by block (see :func:`shortest_path_rings`).

References
----------
.. [1] L. Guttman, "Ring structure of the crystalline and amorphous forms of silicon
   dioxide", J. Non-Cryst. Solids 116, 145–147 (1990).
.. [2] D. S. Franzblau, "Computation of ring statistics for network models of solids",
   Phys. Rev. B 44, 4925–4930 (1991).
.. [3] S. V. King, "Ring configurations in a random network model of vitreous silica",
   Nature 213, 1112–1113 (1967).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numba
import numpy as np
from ase.data import chemical_symbols

from .neighbors import as_positions, neighbor_pairs

__all__ = ["bond_graph", "shortest_path_rings", "canonical_rings", "ring_sizes", "ring_statistics"]

_ELEMENTS = frozenset(chemical_symbols[1:])


# ----------------------------------------------------------------------------- bond graph


def _check_cutoff(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what}: expected a number in Å, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what}: expected a finite cutoff ≥ 0 Å, got {value!r}")
    return value


def _check_species(species, n: int) -> np.ndarray:
    sp = np.asarray(species)
    if sp.ndim != 1 or len(sp) != n:
        raise ValueError(f"species must be a 1-D array of {n} element symbols, got shape {sp.shape}")
    sp = sp.astype(str)
    unknown = sorted(set(np.unique(sp).tolist()) - _ELEMENTS)
    if unknown:
        raise ValueError(f"unknown species {unknown}: expected element symbols such as 'Si', 'O'")
    return sp


def bond_graph(positions, species, cutoffs):
    """Bonds of an atomic model from per-species-pair distance cutoffs.

    Parameters
    ----------
    positions : (n, 3) array_like of float
        Atom positions in Å (a finite, non-periodic model).
    species : (n,) array_like of str
        Element symbol of every atom, e.g. ``"Si"``, ``"O"``.
    cutoffs : float or dict
        Either one cutoff in Å for every pair of atoms, or a dict keyed by pairs of
        element symbols, e.g. ``{("O", "Si"): 2.0, ("Si", "Si"): 2.6}``. Keys are
        meant sorted; an unsorted key means the same pair. Pairs missing from the dict
        are never bonded; pairs naming species absent from the model are ignored.

    Returns
    -------
    i, j : (n_bonds,) ndarray of int64
        The bonded pairs, ``i < j``, sorted by ``(i, j)``. Two atoms are bonded when
        their distance is strictly smaller than the cutoff of their species pair.

    Raises
    ------
    ValueError
        Bad shapes, a species or key that is not an element symbol, a key that is not a
        pair, a negative or non-finite cutoff, or one pair given twice with different
        cutoffs.

    Examples
    --------
    >>> p = np.array([[0.0, 0, 0], [1.6, 0, 0], [3.2, 0, 0], [4.4, 0, 0]])
    >>> i, j = bond_graph(p, ["Si", "O", "Si", "Si"], {("O", "Si"): 2.0})
    >>> i.tolist(), j.tolist()
    ([0, 1], [1, 2])
    """
    pos = as_positions(positions, "bond_graph")
    sp = _check_species(species, len(pos))
    empty = np.zeros(0, dtype=np.int64)
    if not isinstance(cutoffs, Mapping):
        cut = _check_cutoff(cutoffs, "cutoffs")
        if cut == 0 or len(pos) < 2:
            return empty, empty.copy()
        i, j, _ = neighbor_pairs(pos, cut)
        return i, j

    table: dict[tuple[str, str], float] = {}
    for key, value in cutoffs.items():
        if not isinstance(key, (tuple, list)) or len(key) != 2 or not all(isinstance(s, str) for s in key):
            raise ValueError(f"cutoffs: keys must be pairs of element symbols such as ('O', 'Si'), got {key!r}")
        bad = [s for s in key if s not in _ELEMENTS]
        if bad:
            raise ValueError(f"cutoffs: unknown species {bad} in key {tuple(key)!r}")
        pair = tuple(sorted(key))
        cut = _check_cutoff(value, f"cutoffs[{tuple(key)!r}]")
        if pair in table and table[pair] != cut:
            raise ValueError(f"cutoffs: pair {pair} given twice with different cutoffs ({table[pair]}, {cut})")
        table[pair] = cut

    names, code = np.unique(sp, return_inverse=True)
    matrix = np.zeros((len(names), len(names)))
    for (s1, s2), cut in table.items():
        k1, k2 = np.searchsorted(names, s1), np.searchsorted(names, s2)
        if k1 < len(names) and k2 < len(names) and names[k1] == s1 and names[k2] == s2:
            matrix[k1, k2] = matrix[k2, k1] = cut
    rmax = float(matrix.max()) if matrix.size else 0.0
    if rmax == 0 or len(pos) < 2:
        return empty, empty.copy()
    i, j, d = neighbor_pairs(pos, rmax)
    keep = d < matrix[code[i], code[j]]
    return i[keep], j[keep]


# ----------------------------------------------------------------------------- rings (numba)


@numba.njit(cache=True)
def _down_paths(start, depth, dist, indptr, indices, ea, eb, buf, stack_v, stack_p):
    """All paths ``start = v0, v1, …, v_depth`` with ``dist`` dropping by 1 per step.

    ``dist[start] == depth`` and ``dist`` is a BFS distance from a source, so these are
    all shortest paths from ``start`` back to the source. The edge ``(ea, eb)`` is never
    used. Rows of ``buf`` (grown when full) receive the paths; returns ``buf, count``.
    """
    count = 0
    k = 0
    stack_v[0] = start
    stack_p[0] = indptr[start]
    while k >= 0:
        v = stack_v[k]
        if k == depth:
            if count == buf.shape[0]:
                bigger = np.empty((2 * buf.shape[0], buf.shape[1]), dtype=np.int64)
                bigger[:count] = buf[:count]
                buf = bigger
            for t in range(depth + 1):
                buf[count, t] = stack_v[t]
            count += 1
            k -= 1
            continue
        target = dist[v] - 1
        p = stack_p[k]
        end = indptr[v + 1]
        pushed = False
        while p < end:
            u = indices[p]
            p += 1
            if dist[u] == target and not ((v == ea and u == eb) or (v == eb and u == ea)):
                stack_p[k] = p
                k += 1
                stack_v[k] = u
                stack_p[k] = indptr[u]
                pushed = True
                break
        if not pushed:
            k -= 1
    return buf, count


@numba.njit(cache=True)
def _expand(level_start, depth, queue, n_queued, dist, indptr, indices, ea, eb):
    """Append BFS level ``depth + 1`` (from level ``depth``) to ``queue``; returns new length."""
    for q in range(level_start[depth], level_start[depth + 1]):
        v = queue[q]
        for p in range(indptr[v], indptr[v + 1]):
            u = indices[p]
            if (v == ea and u == eb) or (v == eb and u == ea):
                continue
            if dist[u] < 0:
                dist[u] = depth + 1
                queue[n_queued] = u
                n_queued += 1
    level_start[depth + 2] = n_queued
    return n_queued


@numba.njit(cache=True)
def _shortest_path_rings(indptr, indices, bond_a, bond_b, max_size):
    """Canonical shortest-path rings of every bond, with repeats; rows padded with -1."""
    n = len(indptr) - 1
    da = np.full(n, -1, dtype=np.int64)
    db = np.full(n, -1, dtype=np.int64)
    qa = np.empty(n, dtype=np.int64)
    qb = np.empty(n, dtype=np.int64)
    sa = np.zeros(max_size + 3, dtype=np.int64)  # BFS level d is q[s[d]:s[d+1]]
    sb = np.zeros(max_size + 3, dtype=np.int64)
    out = np.full((max(64, 2 * len(bond_a)), max_size), -1, dtype=np.int64)
    n_out = 0
    bufa = np.empty((8, max_size + 1), dtype=np.int64)
    bufb = np.empty((8, max_size + 1), dtype=np.int64)
    stack_v = np.empty(max_size + 1, dtype=np.int64)
    stack_p = np.empty(max_size + 1, dtype=np.int64)
    ring = np.empty(max_size, dtype=np.int64)

    for e in range(len(bond_a)):
        a = bond_a[e]
        b = bond_b[e]
        da[a] = 0
        qa[0] = a
        sa[0] = 0
        sa[1] = 1
        na = 1
        depth_a = 0
        db[b] = 0
        qb[0] = b
        sb[0] = 0
        sb[1] = 1
        nb = 1
        depth_b = 0
        # Path lengths L (bonds) in increasing order; a path of L bonds closes a ring of
        # L + 1 atoms. Its atom at position L // 2 from a is at distance ha from a and
        # hb from b, so BFS from both ends to depth ha, hb finds all shortest paths.
        for L in range(2, max_size):
            ha = L // 2
            hb = L - ha
            exhausted = False
            while depth_a < ha:
                na = _expand(sa, depth_a, qa, na, da, indptr, indices, a, b)
                depth_a += 1
                if sa[depth_a + 1] == sa[depth_a]:
                    exhausted = True
                    break
            while not exhausted and depth_b < hb:
                nb = _expand(sb, depth_b, qb, nb, db, indptr, indices, a, b)
                depth_b += 1
                if sb[depth_b + 1] == sb[depth_b]:
                    exhausted = True
                    break
            if exhausted:  # an empty BFS level: no longer path can close
                break
            found = False
            for q in range(sa[ha], sa[ha + 1]):
                m = qa[q]
                if db[m] != hb:
                    continue
                found = True
                bufa, ka = _down_paths(m, ha, da, indptr, indices, a, b, bufa, stack_v, stack_p)
                bufb, kb = _down_paths(m, hb, db, indptr, indices, a, b, bufb, stack_v, stack_p)
                size = L + 1
                for x in range(ka):
                    for y in range(kb):
                        for t in range(ha + 1):
                            ring[t] = bufa[x, ha - t]  # a … m
                        for t in range(1, hb + 1):
                            ring[ha + t] = bufb[y, t]  # … b
                        k0 = 0
                        for t in range(1, size):
                            if ring[t] < ring[k0]:
                                k0 = t
                        if n_out == out.shape[0]:
                            bigger = np.full((2 * out.shape[0], max_size), -1, dtype=np.int64)
                            bigger[:n_out] = out[:n_out]
                            out = bigger
                        forward = ring[(k0 + 1) % size] < ring[(k0 - 1 + size) % size]
                        for t in range(size):
                            if forward:
                                out[n_out, t] = ring[(k0 + t) % size]
                            else:
                                out[n_out, t] = ring[(k0 - t + size) % size]
                        n_out += 1
            if found:
                break
        for q in range(na):
            da[qa[q]] = -1
        for q in range(nb):
            db[qb[q]] = -1
    return out[:n_out]


@numba.njit(cache=True)
def _canonicalize(rings):
    out = np.full(rings.shape, -1, dtype=np.int64)
    for r in range(rings.shape[0]):
        size = 0
        while size < rings.shape[1] and rings[r, size] >= 0:
            size += 1
        if size == 0:
            continue
        k0 = 0
        for t in range(1, size):
            if rings[r, t] < rings[r, k0]:
                k0 = t
        forward = size < 3 or rings[r, (k0 + 1) % size] < rings[r, (k0 - 1 + size) % size]
        for t in range(size):
            out[r, t] = rings[r, (k0 + t) % size] if forward else rings[r, (k0 - t + size) % size]
    return out


def _unique_rows(rows: np.ndarray) -> np.ndarray:
    if len(rows) == 0:
        return rows
    order = np.lexsort(rows.T[::-1])
    rows = rows[order]
    keep = np.ones(len(rows), dtype=bool)
    keep[1:] = np.any(rows[1:] != rows[:-1], axis=1)
    return np.ascontiguousarray(rows[keep])


def _check_rings(rings) -> np.ndarray:
    r = np.asarray(rings)
    if r.ndim != 2 or not np.issubdtype(r.dtype, np.integer):
        raise ValueError(f"rings: expected a 2-D integer array padded with -1, got {r.dtype} of shape {r.shape}")
    r = r.astype(np.int64, copy=False)
    if r.size and r.min() < -1:
        raise ValueError("rings: atom indices must be ≥ 0, padding -1")
    if r.shape[1] > 1 and np.any((r[:, 1:] >= 0) & (r[:, :-1] < 0)):
        raise ValueError("rings: -1 padding must come after the atoms of each row")
    return r


def canonical_rings(rings) -> np.ndarray:
    """Rings in canonical form, without repeats, sorted: to compare or merge ring sets.

    Each row is rotated so that its smallest atom index comes first and, of the two
    directions, the one whose second atom is the smaller is kept; then duplicate rows are
    dropped and rows are sorted lexicographically (``-1`` padding sorts first). Use it
    after mapping local atom indices to global ones, e.g. when merging blocks.

    Parameters
    ----------
    rings : (m, w) array_like of int
        Atom indices in ring order, each row padded with trailing ``-1``.

    Returns
    -------
    (m', w) ndarray of int64

    Examples
    --------
    >>> canonical_rings([[5, 2, 9, -1], [9, 2, 5, -1], [3, 1, 0, 2]]).tolist()
    [[0, 1, 3, 2], [2, 5, 9, -1]]
    """
    return _unique_rows(_canonicalize(np.ascontiguousarray(_check_rings(rings))))


def ring_sizes(rings) -> np.ndarray:
    """Number of atoms in each ring of a ``-1``-padded ring array.

    >>> ring_sizes([[0, 1, 2, -1], [0, 1, 2, 3]]).tolist()
    [3, 4]
    """
    return (_check_rings(rings) >= 0).sum(axis=1)


def shortest_path_rings(n_atoms: int, i, j, max_size: int = 12) -> np.ndarray:
    """Guttman's shortest-path (primitive) rings of a bond graph.

    For every bond ``(a, b)`` the bond is removed and all shortest paths from ``a`` to
    ``b`` are found; each, closed by the bond, is a ring, kept if it has at most
    ``max_size`` atoms [1]_. When several shortest paths have the same length, *all* of
    them are kept (so the result does not depend on the atom order: e.g. both hexagons of
    naphthalene through the shared bond; all six 4-rings of a cube). A ring found from
    several of its bonds is reported once.

    This is Guttman's criterion. Franzblau's shortest-path rings [2]_ (a ring containing
    a shortest path between every pair of its atoms) and King's criterion [3]_ (the
    shortest ring through two neighbours of an atom) are stricter or differently
    anchored and can give other counts for the same network.

    The search is a bidirectional breadth-first search on the CSR adjacency, to depth
    ``(max_size - 1) // 2`` from ``a`` and ``max_size // 2`` from ``b``, stopping at the
    first length where the two searches meet, so its cost per bond does not depend on
    the model size.

    Parameters
    ----------
    n_atoms : int
        Number of atoms; atom indices are ``0 … n_atoms - 1``.
    i, j : (n_bonds,) array_like of int
        Bonded pairs, e.g. from :func:`bond_graph` (order and duplicates do not matter).
    max_size : int, default 12
        Largest ring kept, in atoms (≥ 3). For silica, 12 atoms are 6 Si + 6 O.

    Returns
    -------
    rings : (m, max_size) ndarray of int64
        One ring per row, atom indices in ring order, in canonical form (the smallest
        index first, then the direction with the smaller second atom), padded with
        ``-1``; rows unique and sorted lexicographically. Sizes:
        ``(rings >= 0).sum(axis=1)`` (see :func:`ring_sizes`).

    Raises
    ------
    ValueError
        ``i`` and ``j`` of different shapes, indices out of range, a bond of an atom to
        itself, or ``max_size < 3``.

    Notes
    -----
    Atom indices are the local indices of the input and nothing is cached between calls,
    so rings can be computed block by block: take the atoms of a spatial block plus a
    halo, compute bonds and rings on them, map the ring atoms to global indices, keep the
    rings whose smallest global index lies in the block core (re-canonicalise with
    :func:`canonical_rings` if the local order does not follow the global one), and
    concatenate. A halo of ``(max_size - 1)`` times the largest bond cutoff around the
    core is sufficient for the blocks to give exactly the rings of the whole model: every
    atom of a kept ring and of any shorter path that could compete with it is at most
    ``max_size - 1`` bonds from the ring's core atom.

    References
    ----------
    .. [1] L. Guttman, J. Non-Cryst. Solids 116, 145 (1990).
    .. [2] D. S. Franzblau, Phys. Rev. B 44, 4925 (1991).
    .. [3] S. V. King, Nature 213, 1112 (1967).

    Examples
    --------
    Two squares sharing the bond 1–4 (a 2×3 ladder); the 6-ring around both is not a
    shortest-path ring:

    >>> i = [0, 1, 0, 3, 1, 4, 2, 5, 3, 4]
    >>> j = [1, 2, 3, 4, 4, 5, 5, 4, 0, 1]
    >>> shortest_path_rings(6, i, j, max_size=6).tolist()
    [[0, 1, 4, 3, -1, -1], [1, 2, 5, 4, -1, -1]]
    """
    n = int(n_atoms)
    if n < 0:
        raise ValueError(f"n_atoms must be ≥ 0, got {n_atoms!r}")
    if isinstance(max_size, bool) or int(max_size) != max_size or max_size < 3:
        raise ValueError(f"max_size: expected an integer ≥ 3 (atoms per ring), got {max_size!r}")
    max_size = int(max_size)
    a = np.asarray(i)
    b = np.asarray(j)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"i and j must be 1-D arrays of the same length, got shapes {a.shape}, {b.shape}")
    if a.size and not (np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)):
        raise ValueError(f"i and j must be integer atom indices, got {a.dtype}, {b.dtype}")
    a = a.astype(np.int64)
    b = b.astype(np.int64)
    if a.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= n):
        lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
        raise ValueError(f"bond atom indices must lie in [0, {n}), got [{lo}, {hi}]")
    if np.any(a == b):
        raise ValueError(f"bond of an atom to itself: atom {int(a[a == b][0])}")
    if a.size == 0:
        return np.full((0, max_size), -1, dtype=np.int64)
    pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0)
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    order = np.lexsort((cols, rows))
    indices = np.ascontiguousarray(cols[order])
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    found = _shortest_path_rings(indptr, indices, np.ascontiguousarray(pairs[:, 0]),
                                 np.ascontiguousarray(pairs[:, 1]), max_size)
    return _unique_rows(found)


# ----------------------------------------------------------------------------- statistics


def ring_statistics(rings, species, network_former: str | None = None) -> dict:
    """Ring-size histograms and chemical alternation of a set of rings.

    Parameters
    ----------
    rings : (m, w) array_like of int
        Rings as returned by :func:`shortest_path_rings` (atom indices padded with -1).
    species : (n,) array_like
        Species of every atom (element symbols), indexed by the ring atom indices.
    network_former : str, optional
        The network-forming species of a network glass, e.g. ``"Si"`` for silica. When
        given, ring sizes are also counted in network formers (the usual "n-membered
        ring" of silica: a ring of 3 Si and 3 O is 3-membered). A species absent from
        ``species`` gives zero counts (useful for blocks of a model).

    Returns
    -------
    dict
        ``"n_rings"`` : int, the number of rings.
        ``"sizes"`` : (m,) int, atoms per ring.
        ``"histogram"`` : (w + 1,) int, number of rings with each atom count (index = size).
        ``"alternating"`` : (m,) bool, ring strictly alternates between two species
        (A–B–A–B…: even size, two species, no two ring neighbours of the same species).
        ``"alternating_fraction"`` : float, fraction of alternating rings (NaN if none).
        With ``network_former`` also ``"former_sizes"`` : (m,) int, network-former atoms
        per ring, and ``"former_histogram"`` : (w + 1,) int, rings per former count.

    Raises
    ------
    ValueError
        Malformed ``rings``, atom indices beyond ``species``, or a non-string
        ``network_former``.

    Examples
    --------
    >>> s = ring_statistics([[0, 1, 2, 3, 4, 5]], ["Si", "O"] * 3, network_former="Si")
    >>> s["histogram"].tolist(), s["former_histogram"].tolist(), s["alternating_fraction"]
    ([0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 1, 0, 0, 0], 1.0)
    """
    r = _check_rings(rings)
    sp = np.asarray(species)
    if sp.ndim != 1:
        raise ValueError(f"species must be a 1-D array, got shape {sp.shape}")
    if r.size and r.max() >= len(sp):
        raise ValueError(f"rings refer to atom {int(r.max())} but species has only {len(sp)} entries")
    if network_former is not None and not isinstance(network_former, str):
        raise ValueError(f"network_former: expected an element symbol such as 'Si' or None, got {network_former!r}")
    m, w = r.shape
    valid = r >= 0
    sizes = valid.sum(axis=1)
    if len(sp):
        names, code = np.unique(sp.astype(str), return_inverse=True)
        codes = np.where(valid, code.reshape(-1)[np.where(valid, r, 0)], -1)
    else:
        names = np.zeros(0, dtype=str)
        codes = np.full(r.shape, -1, dtype=np.int64)
    if m and w >= 2:
        parity = np.arange(w) % 2
        same_as_parity = codes == codes[:, parity]  # atom t has the species of atom t % 2
        alternating = ((sizes % 2 == 0) & (sizes >= 4) & (codes[:, 0] != codes[:, 1])
                       & np.all(same_as_parity | ~valid, axis=1))
    else:
        alternating = np.zeros(m, dtype=bool)
    out = {
        "n_rings": int(m),
        "sizes": sizes,
        "histogram": np.bincount(sizes, minlength=w + 1),
        "alternating": alternating,
        "alternating_fraction": float(alternating.mean()) if m else float("nan"),
    }
    if network_former is not None:
        k = np.searchsorted(names, network_former)
        is_former = k < len(names) and names[k] == network_former
        former_sizes = ((codes == k) & valid).sum(axis=1) if is_former else np.zeros(m, dtype=np.int64)
        out["former_sizes"] = former_sizes
        out["former_histogram"] = np.bincount(former_sizes, minlength=w + 1)
    return out
