"""Spatial blocks with halos: how a large atomic model is cut into independent tasks.

Each block owns the atoms whose position falls in its *core* (a box of the regular
partition of the model's bounding box; every atom is owned exactly once) and sees
also the atoms of a *halo* around the core. A quantity of an owned atom that depends
only on atoms within distance ``halo`` of it is then the same in the block as in the
whole model. Quantities of a group of atoms (a tetrahedron, a motif, a ring) are owned
by the block that owns the group's smallest atom id, so each group is counted once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aetdask.kernels.structure.neighbors import as_positions


@dataclass(frozen=True)
class Block:
    """Atom ids of one block: ``ids`` (core and halo, sorted) and the mask of its core."""

    ids: np.ndarray
    core: np.ndarray

    @property
    def n_core(self) -> int:
        return int(self.core.sum())


def spatial_blocks(positions, core_size: float, halo: float) -> list[Block]:
    """Cut a model into blocks of about ``core_size`` Å per side with a ``halo`` Å margin.

    The number of blocks per axis is ``floor(extent / core_size)`` (at least 1), but a
    core is never thinner than its halo (thinner cores would mostly recompute the halo),
    so a model not much larger than its halo is one block.

    >>> p = np.array([[0.0, 0, 0], [1, 0, 0], [9, 0, 0], [10, 0, 0]])
    >>> [(b.ids.tolist(), b.core.tolist()) for b in spatial_blocks(p, 5.0, 1.5)]
    [([0, 1], [True, True]), ([2, 3], [True, True])]
    >>> [b.ids.tolist() for b in spatial_blocks(p, 5.0, 6.0)]
    [[0, 1, 2, 3]]
    """
    pos = as_positions(positions, "spatial_blocks")
    if core_size <= 0 or halo < 0:
        raise ValueError("core_size must be positive and halo non-negative")
    n = len(pos)
    if n == 0:
        return []
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    extent = np.maximum(hi - lo, 1e-9)
    side = max(float(core_size), float(halo))
    counts = np.maximum(1, np.floor(extent / side).astype(int))
    width = extent / counts
    cell = np.minimum(((pos - lo) / width).astype(int), counts - 1)
    flat = np.ravel_multi_index(cell.T, tuple(counts))
    blocks = []
    for b in np.unique(flat):
        owned = flat == b
        c = np.array(np.unravel_index(b, tuple(counts)))
        b_lo = lo + c * width - halo
        b_hi = lo + (c + 1) * width + halo
        seen = np.all((pos >= b_lo) & (pos <= b_hi), axis=1) | owned
        ids = np.flatnonzero(seen)
        blocks.append(Block(ids=ids, core=owned[ids]))
    return blocks
