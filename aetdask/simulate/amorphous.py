"""Amorphous test particles: random sequential addition (loose), relaxed dense random packing, a-SiO2 networks."""

from __future__ import annotations

import numpy as np
from ase.data import atomic_masses, atomic_numbers, covalent_radii
from scipy.spatial import cKDTree

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
    if symbols.size == 0:
        raise InputError("amorphous_particle: no species given; expected at least one element, e.g. ('Si',)")
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


# ----------------------------------------------------------------------------- amorphous silica
SI_O = 1.61  # Å, the Si–O bond of amorphous silica
SI_SI_MIN = 2.95  # Å, closest Si–Si (a-SiO2: 3.08–3.12 Å)
O_O_MIN = 2.3  # Å, closest O–O (a-SiO2: 2.63 Å, the edge of an SiO4 tetrahedron)
SI_O_AWAY = 2.6  # Å, closest an O comes to a Si it is not bonded to
SI_O_SI = (147.0, 10.0, 125.0)  # degrees: mean, spread and least Si–O–Si angle of a new bridge
FUSE_MOVE = 0.6  # Å: a new corner and a free O of another Si fuse (a ring closes) if neither moves farther,
FUSE_SI_SI = 3.4  # Å: and their two Si are at most this far apart (so Si–O ≤ 1.7 Å)
PAIR_MAX = 2.9  # Å: two free O at most this far apart can be bridged by a new Si (O–Si–O ≤ 128°)
SILICA_DENSITY = (1.8, 2.4)  # g/cm³ accepted; the grown network's own density is about 2.0–2.1
_NEAR = 8.0  # Å: atoms farther than this from an attachment cannot come close to the new atoms


def _si_number_density(density: float) -> float:
    """Si per Å³ in SiO2 of mass ``density`` (g/cm³); 1 u/Å³ = 1.66054 g/cm³."""
    formula = atomic_masses[atomic_numbers["Si"]] + 2 * atomic_masses[atomic_numbers["O"]]
    return density / (float(formula) * 1.66053906660)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _frame(w: np.ndarray):
    """Two unit vectors perpendicular to the unit vector(s) ``w`` and to each other."""
    helper = np.where(np.abs(w[..., :1]) < 0.9, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    a = _unit(np.cross(w, helper))
    return a, np.cross(w, a)


def _angle(a: np.ndarray, vertex: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle a–vertex–b in degrees."""
    return np.degrees(np.arccos(np.clip(np.sum(_unit(a - vertex) * _unit(b - vertex), axis=-1), -1, 1)))


def _other_corners(w: np.ndarray, twist: np.ndarray) -> np.ndarray:
    """Directions (k, 3, 3) of the other three corners of regular tetrahedra with a corner along ``w`` (k, 3)."""
    a, b = _frame(w)
    turn = twist[:, None] + 2 * np.pi / 3 * np.arange(1, 4)
    side = np.cos(turn)[..., None] * a[:, None] + np.sin(turn)[..., None] * b[:, None]
    return -w[:, None] / 3 + np.sqrt(8 / 9) * side


def _bridge(a: np.ndarray, b: np.ndarray, near: np.ndarray) -> np.ndarray:
    """Points 1.61 Å from Si ``a`` and ``b`` nearest to ``near`` (the midpoint where a and b are > 3.22 Å apart)."""
    mid = 0.5 * (a + b)
    axis = _unit(b - a)
    lift = np.sqrt(np.clip(SI_O**2 - 0.25 * np.sum((b - a) ** 2, axis=-1), 0, None))
    off = near - mid
    off = off - np.sum(off * axis, axis=-1, keepdims=True) * axis
    return mid + lift[..., None] * _unit(off + 1e-12)


def _nearest(points: np.ndarray, others: np.ndarray, exclude=None) -> np.ndarray:
    """Distance from each of ``points`` (..., 3) to the nearest of ``others`` (m, 3), skipping ``exclude`` (..., m)."""
    d = np.linalg.norm(points[..., None, :] - others, axis=-1)
    if exclude is not None:
        d = np.where(exclude, np.inf, d)
    return d.min(axis=-1, initial=np.inf)


class _SilicaNetwork:
    """Corner-sharing SiO4 tetrahedra grown one Si at a time from one at the origin (see :func:`silica_particle`)."""

    def __init__(self, n_si: int, rng):
        self.rng = rng
        self.si = np.zeros((n_si, 3))
        self.o = np.zeros((4 * n_si, 3))
        self.bond = np.full((4 * n_si, 2), -1)  # the Si (one, or two for a bridging O) of each O
        self.dead = np.zeros(4 * n_si, dtype=bool)  # free O that took no new tetrahedron
        self.failed: set[tuple[int, int]] = set()  # pairs of free O that no new Si could bridge
        self.linked: set[tuple[int, int]] = set()  # Si pairs that share an O
        w = _unit(rng.normal(size=(1, 3)))
        self.o[0] = SI_O * w[0]
        self.o[1:4] = SI_O * _other_corners(w, rng.uniform(0, 2 * np.pi, 1))[0]
        self.bond[:4, 0] = 0
        self.n_si, self.n_o = 1, 4

    def free(self) -> np.ndarray:
        """Indices of the non-bridging O."""
        return np.flatnonzero(self.bond[: self.n_o, 1] < 0)

    def close_ring(self, radius: float) -> bool:
        """Bridge two free O of different Si with a new Si, closing a ring; pairs nearest the centre first."""
        free = self.free()
        if len(free) < 2:
            return False
        pairs = cKDTree(self.o[free]).query_pairs(PAIR_MAX, output_type="ndarray")
        k1, k2 = free[pairs[:, 0]], free[pairs[:, 1]]
        si = np.sort(self.bond[np.stack([k1, k2], axis=1), 0], axis=1)
        order = np.argsort(np.sum((self.o[k1] + self.o[k2]) ** 2, axis=1), kind="stable")
        order = order[si[order, 0] != si[order, 1]]
        for key, link in zip(zip(k1[order].tolist(), k2[order].tolist()), map(tuple, si[order].tolist())):
            if link in self.linked or key in self.failed:
                continue
            s, corners = self._between(*key)
            if self._attach(s, np.array(key), corners, radius):
                return True
            self.failed.add(key)
        return False

    def branch(self, radius: float, tries: int = 64) -> bool:
        """Hang a new tetrahedron on the free O nearest the centre; False when no free O is left to try."""
        free = self.free()
        free = free[~self.dead[free]]
        if not len(free):
            return False
        k = free[np.argmin(np.sum(self.o[free] ** 2, axis=1))]
        o = self.o[k]
        v = _unit(o - self.si[self.bond[k, 0]])
        a, b = _frame(v)
        mean, spread, least = SI_O_SI
        phi = np.radians(np.clip(self.rng.normal(mean, spread, tries), least, 180))
        psi = self.rng.uniform(0, 2 * np.pi, tries)[:, None]
        d = -np.cos(phi)[:, None] * v + np.sin(phi)[:, None] * (np.cos(psi) * a + np.sin(psi) * b)
        s = o + SI_O * d
        corners = s[:, None] + SI_O * _other_corners(-d, self.rng.uniform(0, 2 * np.pi, tries))
        if not self._attach(s, np.array([k]), corners, radius):
            self.dead[k] = True
        return True

    def _between(self, k1: int, k2: int, n: int = 24):
        """New Si 1.61 Å from O ``k1`` and ``k2`` (widest Si–O–Si angles first) and their two other corners."""
        o1, o2 = self.o[k1], self.o[k2]
        a, b = _frame(_unit(o2 - o1))
        turn = 2 * np.pi * np.arange(n)[:, None] / n
        lift = np.sqrt(SI_O**2 - 0.25 * np.sum((o2 - o1) ** 2))
        s = 0.5 * (o1 + o2) + lift * (np.cos(turn) * a + np.sin(turn) * b)
        angle = np.minimum(_angle(self.si[self.bond[k1, 0]], o1, s), _angle(self.si[self.bond[k2, 0]], o2, s))
        s = s[np.argsort(-angle, kind="stable")[: np.sum(angle >= SI_O_SI[2])]]
        u1, u2 = _unit(o1 - s), _unit(o2 - s)
        away, normal = -_unit(u1 + u2), _unit(np.cross(u1, u2))
        half = np.radians(109.47 / 2)  # the tetrahedral angle's half
        corners = s[:, None] + SI_O * (np.cos(half) * away[:, None] + np.sin(half) * np.stack([normal, -normal], 1))
        return s, corners

    def _attach(self, s: np.ndarray, fixed: np.ndarray, corners: np.ndarray, radius: float) -> bool:
        """Add the first of candidate Si ``s`` (T, 3) that fits, with the most ring closures; False if none fits.

        Each candidate bonds the O ``fixed`` and has new ``corners`` (T, C, 3). A corner
        fuses with the nearest free O of another Si into one bridging O, 1.61 Å from
        both Si, where neither has to move more than :data:`FUSE_MOVE`.
        """
        inside = np.sum(s**2, axis=1) <= radius**2
        s, corners = s[inside], corners[inside]
        if not len(s):
            return False
        centre = self.o[fixed].mean(axis=0)
        near_o = np.flatnonzero(np.sum((self.o[: self.n_o] - centre) ** 2, axis=1) < _NEAR**2)
        near_si = np.flatnonzero(np.sum((self.si[: self.n_si] - centre) ** 2, axis=1) < _NEAR**2)
        own = self.bond[fixed, 0]
        candidates = near_o[(self.bond[near_o, 1] < 0) & ~np.isin(near_o, fixed) & ~np.isin(self.bond[near_o, 0], own)]
        fuse = np.zeros(corners.shape[:2], dtype=bool)
        q = np.zeros(corners.shape[:2], dtype=int)  # the free O each corner fuses with
        pos = corners
        if len(candidates):
            d = np.linalg.norm(corners[:, :, None] - self.o[candidates], axis=3)
            q = candidates[np.argmin(d, axis=2)]
            other = self.si[self.bond[q, 0]]
            bridge = _bridge(other, s[:, None], 0.5 * (corners + self.o[q]))
            moved = np.maximum(np.linalg.norm(bridge - corners, axis=2), np.linalg.norm(bridge - self.o[q], axis=2))
            fuse = (moved <= FUSE_MOVE) & (np.linalg.norm(other - s[:, None], axis=2) <= FUSE_SI_SI)
            pos = np.where(fuse[..., None], bridge, corners)
        fused_o = (near_o == q[..., None]) & fuse[..., None]  # (T, C, near O)
        fused_si = (near_si == self.bond[q, 0][..., None]) & fuse[..., None]
        ok = _nearest(s, self.si[near_si]) >= SI_SI_MIN
        ok &= _nearest(s, self.o[near_o], np.isin(near_o, fixed) | fused_o.any(axis=1)) >= SI_O_AWAY
        ok &= _nearest(pos, self.o[near_o], fused_o).min(axis=1) >= O_O_MIN
        ok &= _nearest(pos, self.si[near_si], fused_si).min(axis=1) >= SI_O_AWAY
        pair = ~np.eye(pos.shape[1], dtype=bool)  # two different corners
        ok &= np.where(pair, np.linalg.norm(pos[:, :, None] - pos[:, None], axis=3), np.inf).min(axis=(1, 2)) >= O_O_MIN
        owner = np.where(fuse, self.bond[q, 0], -1 - np.arange(pos.shape[1]))
        ok &= ~((owner[:, :, None] == owner[:, None]) & pair).any(axis=(1, 2))  # two fusions with one Si: a shared edge
        if not ok.any():
            return False
        t = np.flatnonzero(ok)[np.argmax(fuse[ok].sum(axis=1))]
        new = self.n_si
        self.si[new] = s[t]
        self.n_si += 1
        for k in fixed:
            self.bond[k, 1] = new
            self.linked.add((int(self.bond[k, 0]), new))
        for f, k, p in zip(fuse[t], q[t], pos[t]):
            if f:
                self.o[k] = p
                self.bond[k, 1] = new
                self.linked.add((int(self.bond[k, 0]), new))
            else:
                self.o[self.n_o] = p
                self.bond[self.n_o, 0] = new
                self.n_o += 1
        return True


def silica_particle(n_si: int | None = None, *, radius: float | None = None, density: float = 2.2, seed: int = 0):
    """A small amorphous SiO2 particle: a random network of corner-sharing SiO4 tetrahedra.

    The network grows one regular SiO4 tetrahedron (Si–O 1.61 Å, O–Si–O 109.5°) at a
    time from one at the origin, inside the sphere that holds ``n_si`` Si at the Si
    number density of SiO2 of mass ``density`` (2.2 g/cm³ → 0.0221 Si/Å³):

    1. Ring closure first: a new Si 1.61 Å from two free (non-bridging) O of
       different Si that are ≤ 2.9 Å apart, both Si–O–Si angles ≥ 125°, its other
       two corners completing the tetrahedron; pairs nearest the centre first.
    2. Otherwise a branch: a new tetrahedron on the free O nearest the centre, with a
       Si–O–Si angle drawn from 147° ± 10° (≥ 125°), a random azimuth and twist;
       64 tries.
    3. A new corner fuses with a free O of another Si (≤ 3.4 Å away) into one
       bridging O 1.61 Å from both Si (≤ 1.7 Å where they are > 3.22 Å apart) if
       neither O moves more than 0.6 Å; the try with the most fusions wins.
    4. A try is rejected unless Si–Si ≥ 2.95 Å, O–O ≥ 2.3 Å, every O ≥ 2.6 Å from
       the Si it is not bonded to, and no two Si share two O; a free O that takes no
       tetrahedron stays non-bridging.

    If the sphere fills up before ``n_si`` Si, it grows in 0.5 Å steps (the radius
    used is in the provenance). Every Si has exactly four O. The free O left at the
    end are non-bridging (surface, silanol-like) O: they put O/Si above 2, at about
    2.7–2.8 for 40–100 Si and 2.6 for 300–1000. O–Si–O angles come out at
    109.4° ± 4° and Si–O–Si at 148° ± 10° (133°–180°). It is a grown, not a relaxed,
    network: interior Si too may keep a non-bridging O, and the network's own interior
    density is about 2.0–2.1 g/cm³ whatever ``density`` says, so at 2.2 g/cm³ the sphere
    for ``n_si`` Si is enlarged a little and a given ``radius`` may hold fewer Si than
    the density gives.

    Parameters
    ----------
    n_si : int, optional
        Number of Si atoms. Give exactly one of ``n_si`` and ``radius``.
    radius : float, optional
        Radius (Å) of the sphere holding the Si; Si are added until no more fits, up
        to the number that ``density`` gives.
    density : float
        Mass density (g/cm³) that relates ``n_si`` and the sphere's radius; 1.8 to
        2.4 (a-SiO2: 2.2).
    seed : int
        Seed of the random generator; the same seed gives the same particle.

    Returns
    -------
    xarray.Dataset
        An atoms dataset, Si first then O, positions in Å centred on the origin.

    Examples
    --------
    >>> from scipy.spatial.distance import cdist
    >>> model = silica_particle(40, seed=1)
    >>> pos, sp = model.position.values, model.species.values
    >>> int((sp == "Si").sum()), bool(2.0 < (sp == "O").sum() / (sp == "Si").sum() < 3.0)
    (40, True)
    >>> si_o = cdist(pos[sp == "Si"], pos[sp == "O"])
    >>> bool(np.all(np.sum(si_o < 1.9, axis=1) == 4))  # every Si in an SiO4 tetrahedron
    True
    """
    if (n_si is None) == (radius is None):
        raise InputError("silica_particle: give exactly one of n_si (number of Si) and radius (Å)")
    low, high = SILICA_DENSITY
    if not isinstance(density, (int, float, np.integer, np.floating)) or not low <= density <= high:
        raise InputError(
            f"silica_particle: density must be {low}–{high} g/cm³ (amorphous silica: 2.2; the grown network's "
            f"own density is about 2.0–2.1), got {density!r}"
        )
    rho = _si_number_density(float(density))
    if n_si is not None:
        if isinstance(n_si, bool) or not isinstance(n_si, (int, np.integer)) or n_si < 1:
            raise InputError(f"silica_particle: n_si must be a positive integer, got {n_si!r}")
        n_si = int(n_si)
        sphere = (3 * n_si / (4 * np.pi * rho)) ** (1 / 3)
    else:
        if isinstance(radius, bool) or not isinstance(radius, (int, float, np.integer, np.floating)):
            raise InputError(f"silica_particle: radius must be a length in Å, got {radius!r}")
        if not (np.isfinite(radius) and radius > 0):
            raise InputError(f"silica_particle: radius must be a positive length (Å), got {radius}")
        sphere = float(radius)
        n_si = int(round(4 / 3 * np.pi * sphere**3 * rho))
        if n_si < 1:
            raise InputError(f"silica_particle: a sphere of radius {radius} Å holds no Si at {density} g/cm³")
    net = _SilicaNetwork(n_si, np.random.default_rng(seed))
    start = sphere
    while net.n_si < n_si:
        if net.close_ring(sphere) or net.branch(sphere):
            continue
        if radius is not None or sphere > 2 * start + 10:
            break  # the given sphere is full
        sphere += 0.5
        net.dead[:] = False
        net.failed.clear()
    pos = np.concatenate([net.si[: net.n_si], net.o[: net.n_o]])
    pos -= pos.mean(axis=0)
    species = ["Si"] * net.n_si + ["O"] * net.n_o
    record = provenance_record(
        "simulate.silica_particle",
        {"n_si": net.n_si, "n_o": net.n_o, "radius": sphere, "density": density, "seed": seed},
    )
    return make_atoms(pos, species, provenance=[record])
