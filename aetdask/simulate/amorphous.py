"""Amorphous test particles: random sequential addition (loose) or relaxed dense random packing in a sphere."""

from __future__ import annotations

import numpy as np
from ase.data import atomic_numbers, covalent_radii

from aetdask.errors import InputError
from aetdask.schema import atoms as make_atoms
from aetdask.schema import normalize_species, provenance_record


def minimum_distance(a: str, b: str, factor: float = 0.95) -> float:
    """Closest allowed approach (Å) of two species: ``factor`` × the sum of covalent radii."""
    return factor * float(covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]])


def _box(box) -> np.ndarray:
    b = np.asarray(box, dtype=float).reshape(-1)
    if b.shape != (3,) or not np.all(b > 0):
        raise InputError(f"box must be three positive lengths (Å), got {box!r}")
    return b


def amorphous_particle(
    n: int,
    species=("Si",),
    fractions=None,
    radius: float | None = None,
    packing: float = 0.25,
    seed: int = 0,
    max_tries: int | None = None,
    box=None,
):
    """A random amorphous particle: ``n`` atoms placed one by one in a sphere (or a box).

    Each new atom is accepted only if it keeps at least
    :func:`minimum_distance` from every atom already placed (random sequential
    addition). The sphere's ``radius`` defaults to the one that gives the
    ``packing`` fraction of hard spheres of the largest minimum distance.
    ``box = (lx, ly, lz)`` (Å) fills a box centred on the origin instead — a thin
    film when ``lz`` is small.

    Examples
    --------
    >>> model = amorphous_particle(50, seed=1)
    >>> model.sizes["atom"], bool(abs(model.position.mean("atom")).max() < 1e-9)
    (50, True)
    """
    symbols = normalize_species(species)
    frac = np.full(len(symbols), 1 / len(symbols)) if fractions is None else np.asarray(fractions, float)
    if frac.shape != symbols.shape or np.any(frac < 0) or frac.sum() <= 0:
        raise InputError("amorphous_particle: fractions must be non-negative, one per species")
    rng = np.random.default_rng(seed)
    kinds = rng.choice(len(symbols), size=n, p=frac / frac.sum())
    dmin = np.array([[minimum_distance(a, b) for b in symbols] for a in symbols])
    half = None if box is None else 0.5 * _box(box)
    if radius is None:
        radius = dmin.max() * (n / (8 * packing)) ** (1 / 3)
    max_tries = 100 * n + 1000 if max_tries is None else max_tries
    cell = float(dmin.max())
    grid: dict[tuple, list[int]] = {}  # cell index -> atoms in it (neighbour search in O(1))
    offsets = [(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]
    pos = np.empty((n, 3))
    placed, tries = 0, 0
    while placed < n:
        tries += 1
        if tries > max_tries:
            where = f"a sphere of radius {radius:.2f} Å" if half is None else f"a box of {2 * half} Å"
            fix = "a larger radius" if half is None else "a larger box"
            raise InputError(f"amorphous_particle: could place only {placed} of {n} atoms in {where}; give {fix}")
        if half is None:
            p = rng.uniform(-radius, radius, 3)
            if p @ p > radius**2:
                continue
        else:
            p = rng.uniform(-half, half)
        c = tuple(np.floor(p / cell).astype(int))
        near = [i for o in offsets for i in grid.get((c[0] + o[0], c[1] + o[1], c[2] + o[2]), ())]
        if near:
            d2 = np.sum((pos[near] - p) ** 2, axis=1)
            if np.any(d2 < dmin[kinds[placed], kinds[near]] ** 2):
                continue
        pos[placed] = p
        grid.setdefault(c, []).append(placed)
        placed += 1
    pos -= pos.mean(axis=0)
    record = provenance_record(
        "simulate.amorphous_particle",
        {"n": n, "species": symbols.tolist(), "fractions": frac.tolist(), "radius": radius, "seed": seed,
         "box": None if box is None else _box(box).tolist()},
    )
    return make_atoms(pos, symbols[kinds], provenance=[record])


def dense_particle(
    n: int,
    species=("Pd",),
    fractions=None,
    packing: float = 0.62,
    seed: int = 0,
    steps: int = 200,
    box=None,
):
    """A dense amorphous particle: random points in a sphere (or a box), overlaps relaxed away.

    Atoms are soft spheres of diameter :func:`minimum_distance` of their species
    pair. Starting from uniform random points in a sphere sized for the hard-sphere
    ``packing`` fraction, every step moves each overlapping pair apart by half its
    overlap and pulls atoms outside the sphere back in (a soft wall), so the packing
    jams into a dense random structure with tetrahedral and icosahedral order — a
    stand-in for a metallic glass, unlike :func:`amorphous_particle`'s loose packing.
    ``box = (lx, ly, lz)`` (Å) packs ``n`` atoms into a box centred on the origin (a thin
    film when ``lz`` is small) instead; ``packing`` then follows from ``n`` and the box.

    Examples
    --------
    >>> from scipy.spatial import cKDTree
    >>> model = dense_particle(300, seed=1)
    >>> d, _ = cKDTree(model.position.values).query(model.position.values, k=2)
    >>> bool(d[:, 1].min() > 0.85 * minimum_distance("Pd", "Pd"))
    True
    """
    from scipy.spatial import cKDTree

    symbols = normalize_species(species)
    frac = np.full(len(symbols), 1 / len(symbols)) if fractions is None else np.asarray(fractions, float)
    if frac.shape != symbols.shape or np.any(frac < 0) or frac.sum() <= 0:
        raise InputError("dense_particle: fractions must be non-negative, one per species")
    if not 0 < packing < 0.74:
        raise InputError(f"dense_particle: packing must be in (0, 0.74), got {packing}")
    rng = np.random.default_rng(seed)
    kinds = rng.choice(len(symbols), size=n, p=frac / frac.sum())
    dmin = np.array([[minimum_distance(a, b) for b in symbols] for a in symbols])
    diameter = dmin[kinds, kinds]
    radius = 0.5 * float(np.mean(diameter)) * (n / packing) ** (1 / 3)
    if box is None:
        pos = rng.normal(size=(n, 3))
        pos *= (radius * rng.uniform(size=n) ** (1 / 3) / np.linalg.norm(pos, axis=1))[:, None]
    else:
        half = 0.5 * _box(box)
        pos = rng.uniform(-half, half, size=(n, 3))
    reach = float(dmin.max())
    for _ in range(steps):
        pairs = cKDTree(pos).query_pairs(reach, output_type="ndarray")
        i, j = pairs[:, 0], pairs[:, 1]
        v = pos[i] - pos[j]
        r = np.linalg.norm(v, axis=1)
        overlap = dmin[kinds[i], kinds[j]] - r
        push = overlap > 0
        i, j, v, r, overlap = i[push], j[push], v[push], r[push], overlap[push]
        move = (0.5 * overlap / np.maximum(r, 1e-9))[:, None] * v
        step = np.zeros_like(pos)
        np.add.at(step, i, move)
        np.add.at(step, j, -move)
        if box is None:
            rr = np.linalg.norm(pos, axis=1)
            wall = radius - 0.5 * diameter
            out = rr > wall
            step[out] -= ((rr[out] - wall[out]) / rr[out])[:, None] * pos[out]
        else:  # soft walls on the box faces
            limit = half[None, :] - 0.5 * diameter[:, None]
            step -= np.clip(pos - limit, 0, None) + np.clip(pos + limit, None, 0)
        pos += 0.5 * step
    pos -= pos.mean(axis=0)
    record = provenance_record(
        "simulate.dense_particle",
        {"n": n, "species": symbols.tolist(), "fractions": frac.tolist(), "packing": packing, "seed": seed,
         "steps": steps, "box": None if box is None else _box(box).tolist()},
    )
    return make_atoms(pos, symbols[kinds], provenance=[record])
