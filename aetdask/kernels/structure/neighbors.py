"""Neighbour lists of atomic models: pairs within a cutoff, as edge lists or CSR.

Shared by every structure-analysis kernel (RDF, bond order, Voronoi, polytetrahedra,
rings). Positions are ``(n, 3)`` in Å; a model is a finite, non-periodic particle.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def as_positions(positions, who: str = "positions", finite: bool = True) -> np.ndarray:
    """``positions`` as a float64 ``(n, 3)`` array; ValueError naming ``who`` if not (or not finite).

    >>> as_positions([[0, 0, 1]]).tolist()
    [[0.0, 0.0, 1.0]]
    """
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"{who}: positions must have shape (n, 3), got {pos.shape}")
    if finite and not np.all(np.isfinite(pos)):
        raise ValueError(f"{who}: positions must be finite (found NaN or inf)")
    return pos


def neighbor_pairs(positions, cutoff: float):
    """All pairs ``i < j`` closer than ``cutoff``: arrays ``i, j, distance``, sorted by (i, j).

    >>> p = np.array([[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0]])
    >>> i, j, d = neighbor_pairs(p, 2.5)
    >>> i.tolist(), j.tolist(), d.tolist()
    ([0, 1], [1, 2], [1.0, 2.0])
    """
    pos = as_positions(positions, "neighbor_pairs")
    if len(pos) < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros(0)
    pairs = cKDTree(pos).query_pairs(float(cutoff), output_type="ndarray").astype(np.int64)
    if len(pairs) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros(0)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    i, j = pairs[order, 0], pairs[order, 1]
    d = np.linalg.norm(pos[j] - pos[i], axis=1)
    keep = d < cutoff  # query_pairs includes d == cutoff
    return i[keep], j[keep], d[keep]


def neighbor_csr(n: int, i, j):
    """Symmetric adjacency of ``n`` atoms from pairs ``(i, j)``: ``indptr, indices``, rows sorted.

    >>> indptr, indices = neighbor_csr(3, np.array([0, 1]), np.array([1, 2]))
    >>> indptr.tolist(), indices.tolist()
    ([0, 1, 3, 4], [1, 0, 2, 1])
    """
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    rows = np.concatenate([i, j])
    cols = np.concatenate([j, i])
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.add.at(indptr, rows + 1, 1)
    return np.cumsum(indptr), cols


def neighbor_lists(positions, cutoff: float):
    """``indptr, indices`` of every atom's neighbours closer than ``cutoff`` (CSR, rows sorted)."""
    i, j, _ = neighbor_pairs(positions, cutoff)
    return neighbor_csr(len(positions), i, j)
