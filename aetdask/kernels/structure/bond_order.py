"""Averaged local bond-orientational order (Lechner–Dellago Q4, Q6), normalised to fcc.

For atom i with first-shell neighbours N(i) (closer than the RDF's first valley),

.. math::

    q_{lm}(i) = \\frac{1}{|N(i)|}\\sum_{j\\in N(i)} Y_{lm}(\\hat r_{ij}), \\qquad
    \\bar q_{lm}(i) = \\frac{1}{|N(i)|+1}\\sum_{k\\in \\{i\\}\\cup N(i)} q_{lm}(k),

.. math::

    Q_l(i) = \\sqrt{\\frac{4\\pi}{2l+1}\\sum_{m=-l}^{l}|\\bar q_{lm}(i)|^2}.

The averaging over the neighbours' own ``q_lm`` brings in the second shell and
separates crystal from liquid-like order (Lechner & Dellago 2008). As in the
amorphous-packing analyses of AET (Yang et al. 2021; Yuan et al. 2022) the two
numbers are combined into one normalised order parameter

.. math::

    \\Omega(i) = \\sqrt{Q_4^2 + Q_6^2} \\,/\\, \\sqrt{Q_{4,\\mathrm{fcc}}^2 + Q_{6,\\mathrm{fcc}}^2},

1 for a perfect fcc crystal; atoms with ``Ω ≥ 0.5`` are crystal-like and connected
crystal-like neighbours form crystal nuclei.

The spherical harmonics and averaging are freud's (``freud.order.Steinhardt``)
on this module's explicit neighbour list, so the particle is never treated as
periodic.

References
----------
W. Lechner and C. Dellago, J. Chem. Phys. 129, 114707 (2008).
P. J. Steinhardt, D. R. Nelson and M. Ronchetti, Phys. Rev. B 28, 784 (1983).
Y. Yang et al., Nature 592, 60 (2021); Y. Yuan et al., Nat. Mater. 21, 95 (2022).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from aetdask.kernels.structure.neighbors import as_positions, neighbor_pairs


def _fcc_reference() -> tuple[float, float]:
    """Q4 and Q6 of a perfect fcc first shell (12 neighbours), computed not copied."""
    shell = np.array([(a, b, 0) for a in (-1, 1) for b in (-1, 1)]
                     + [(a, 0, b) for a in (-1, 1) for b in (-1, 1)]
                     + [(0, a, b) for a in (-1, 1) for b in (-1, 1)], dtype=float)
    return tuple(float(_ql(shell, ell)) for ell in (4, 6))


def _ql(vectors, ell: int) -> float:
    """Steinhardt q_l of one atom's bond vectors (used for the fcc reference)."""
    from scipy.special import sph_harm_y

    v = np.asarray(vectors, dtype=float)
    r = np.linalg.norm(v, axis=1)
    theta = np.arccos(np.clip(v[:, 2] / r, -1, 1))
    phi = np.arctan2(v[:, 1], v[:, 0])
    m = np.arange(-ell, ell + 1)
    qlm = sph_harm_y(ell, m[:, None], theta[None, :], phi[None, :]).mean(axis=1)
    return np.sqrt(4 * np.pi / (2 * ell + 1) * np.sum(np.abs(qlm) ** 2))


Q4_FCC, Q6_FCC = _fcc_reference()


def averaged_bond_order(positions, cutoff: float, pairs=None) -> dict:
    """Averaged Q4, Q6 and the fcc-normalised order of every atom.

    Parameters
    ----------
    positions : (n, 3) array, Å
    cutoff : float
        First-shell cutoff (Å), normally the first valley of the RDF.
    pairs : tuple (i, j), optional
        Neighbour pairs ``i < j`` already found with the same cutoff.

    Returns
    -------
    dict with ``q4``, ``q6``, ``order`` (normalised to fcc) and ``neighbors`` (first-shell
    count); atoms without neighbours get NaN.

    Examples
    --------
    >>> a = 4.0
    >>> g = np.arange(-3, 4)
    >>> cube = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    >>> fcc = np.concatenate([cube, cube + [0.5, 0.5, 0], cube + [0.5, 0, 0.5], cube + [0, 0.5, 0.5]]) * a
    >>> res = averaged_bond_order(fcc, cutoff=0.85 * a)
    >>> centre = np.argmin(np.linalg.norm(fcc - fcc.mean(0), axis=1))
    >>> round(float(res["order"][centre]), 6)
    1.0
    """
    import freud

    pos = as_positions(positions, "averaged_bond_order")
    n = len(pos)
    if pairs is None:
        i, j, _ = neighbor_pairs(pos, cutoff)
    else:
        i, j = (np.asarray(a, dtype=np.int64) for a in pairs)
    q_idx = np.concatenate([i, j])
    p_idx = np.concatenate([j, i])
    order = np.lexsort((p_idx, q_idx))  # freud wants bonds sorted by query point
    q_idx, p_idx = q_idx[order], p_idx[order]
    # the raw coordinates (not re-centred per call) in a box around the origin big enough to
    # hold them: freud works in float32, and the same atoms must round alike in every block
    extent = 2.0 * float(np.abs(pos).max()) + 4.0 * float(cutoff) + 1.0
    box = freud.box.Box.cube(extent)
    box.periodic = False
    vectors = pos[p_idx] - pos[q_idx]  # from the raw positions: the same bits in any block
    nlist = freud.locality.NeighborList.from_arrays(n, n, q_idx, p_idx, vectors)
    ql = freud.order.Steinhardt([4, 6], average=True)
    ql.compute((box, pos.astype(np.float32)), neighbors=nlist)
    values = np.asarray(ql.particle_order, dtype=np.float64).reshape(n, 2)
    count = np.bincount(q_idx, minlength=n)
    values[count == 0] = np.nan
    q4, q6 = values[:, 0], values[:, 1]
    return {
        "q4": q4,
        "q6": q6,
        "order": np.sqrt(q4**2 + q6**2) / np.hypot(Q4_FCC, Q6_FCC),
        "neighbors": count,
    }


def crystal_nuclei(crystalline, i, j, min_size: int = 1):
    """Label connected crystal-like atoms (``crystalline`` True) joined by neighbour pairs.

    Returns ``labels`` (−1 for amorphous atoms and nuclei smaller than ``min_size``) and
    the size of each labelled nucleus, largest first.

    >>> lab, sizes = crystal_nuclei(np.array([1, 1, 0, 1], bool), np.array([0, 1, 2]), np.array([1, 2, 3]))
    >>> lab.tolist(), sizes.tolist()
    ([0, 0, -1, 1], [2, 1])
    """
    c = np.asarray(crystalline, dtype=bool)
    n = len(c)
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    both = c[i] & c[j]
    graph = coo_matrix((np.ones(int(both.sum())), (i[both], j[both])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    labels = np.full(n, -1, dtype=np.int64)
    if not c.any():
        return labels, np.zeros(0, dtype=np.int64)
    sizes = np.bincount(comp[c], minlength=comp.max() + 1)
    ranked = [k for k in np.argsort(-sizes, kind="stable") if sizes[k] >= max(min_size, 1)]
    remap = np.full(len(sizes), -1, dtype=np.int64)
    remap[ranked] = np.arange(len(ranked))
    labels[c] = remap[comp[c]]
    return labels, sizes[ranked].astype(np.int64)
