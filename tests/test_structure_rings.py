"""Known-answer tests of the ring statistics kernel (aetdask.kernels.structure.rings)."""

import numpy as np
import pytest

from aetdask.kernels.structure.rings import (
    bond_graph,
    canonical_rings,
    ring_sizes,
    ring_statistics,
    shortest_path_rings,
)


def polygon(n, side, centre=(0.0, 0.0, 0.0)):
    """Regular planar n-gon with the given side length (Å), in the xy plane."""
    radius = side / (2 * np.sin(np.pi / n))
    phi = 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(phi), radius * np.sin(phi), np.zeros(n)], axis=1) + centre


def ring_set(rings):
    return {tuple(int(a) for a in row if a >= 0) for row in rings}


def rings_of(positions, species, cutoffs, max_size=12):
    i, j = bond_graph(positions, species, cutoffs)
    return shortest_path_rings(len(positions), i, j, max_size=max_size)


def diamond_cluster(radius, a=5.431):
    basis = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]], float)
    basis = np.concatenate([basis, basis + 0.25])
    k = int(np.ceil(radius / a)) + 1
    cells = np.stack(np.meshgrid(*[np.arange(-k, k)] * 3, indexing="ij"), -1).reshape(-1, 3)
    p = (cells[:, None, :] + basis[None]).reshape(-1, 3) * a
    return p[np.linalg.norm(p, axis=1) < radius]


# --------------------------------------------------------------------------- simple graphs


def test_hexagon_has_one_six_ring():
    pos = polygon(6, 1.5)
    rings = rings_of(pos, ["C"] * 6, 1.6)
    assert rings.shape == (1, 12)
    assert rings[0].tolist() == [0, 1, 2, 3, 4, 5] + [-1] * 6
    assert ring_sizes(rings).tolist() == [6]


def test_naphthalene_gives_two_six_rings_not_the_ten_ring():
    left = polygon(6, 1.4)
    # second hexagon: reflect the first through the line of its shared edge (atoms 0, 1)
    p0, p1 = left[0], left[1]
    mid, u = (p0 + p1) / 2, (p1 - p0) / np.linalg.norm(p1 - p0)
    normal = np.cross(u, [0, 0, 1.0])
    rel = left[2:] - mid
    right = left[2:] - 2 * (rel @ normal)[:, None] * normal
    pos = np.concatenate([left, right])  # 10 atoms
    i, j = bond_graph(pos, ["C"] * 10, {("C", "C"): 1.5})
    assert len(i) == 11
    rings = shortest_path_rings(10, i, j)
    assert ring_sizes(rings).tolist() == [6, 6]
    assert ring_set(rings) == {(0, 1, 2, 3, 4, 5), (0, 1, 6, 7, 8, 9)}


def test_cube_has_six_four_rings():
    pos = np.array([[x, y, z] for x in (0, 2.0) for y in (0, 2.0) for z in (0, 2.0)])
    rings = rings_of(pos, ["Si"] * 8, 2.1)  # edges 2.0, face diagonals 2.83: edges only
    assert ring_sizes(rings).tolist() == [4] * 6
    faces = set()
    for axis in range(3):
        for value in (0, 2.0):
            faces.add(frozenset(np.flatnonzero(pos[:, axis] == value).tolist()))
    assert {frozenset(r) for r in ring_set(rings)} == faces


def test_max_size_limits_rings():
    pos = polygon(8, 1.5)
    assert len(rings_of(pos, ["C"] * 8, 1.6, max_size=8)) == 1
    assert len(rings_of(pos, ["C"] * 8, 1.6, max_size=7)) == 0
    assert rings_of(pos, ["C"] * 8, 1.6, max_size=7).shape == (0, 7)


def test_tree_and_empty_graph_have_no_rings():
    assert shortest_path_rings(5, [0, 1, 1, 3], [1, 2, 3, 4]).shape == (0, 12)
    assert shortest_path_rings(0, [], []).shape == (0, 12)
    assert shortest_path_rings(4, np.array([], int), np.array([], int), max_size=5).shape == (0, 5)


# --------------------------------------------------------------------------- silica


def silica_rings(oo_bond=False):
    """Planar Si3O3 ring plus a Si4O4 ring (Si–O 1.6 Å) far apart; optionally O1–O3 close."""
    si3 = polygon(3, 2.9)  # O outside each Si–Si edge so that Si–O = 1.6 Å
    o3 = []
    for k in range(3):
        a, b = si3[k], si3[(k + 1) % 3]
        mid = (a + b) / 2
        out = mid / np.linalg.norm(mid)
        o3.append(mid + out * np.sqrt(1.6**2 - 1.45**2))
    ring3 = np.stack([si3[0], o3[0], si3[1], o3[1], si3[2], o3[2]])
    # Si4O4: Si on a square of side s; O on the circle of radius r about each Si–Si axis,
    # in plane (pointing out) or, for O1 and O3, rotated out of plane towards each other.
    s = 2.6
    r = np.sqrt(1.6**2 - (s / 2) ** 2)
    si = np.array([[0, 0, 0], [s, 0, 0], [s, s, 0], [0, s, 0]], float)
    o = np.array([[s / 2, -r, 0], [s + r, s / 2, 0], [s / 2, s + r, 0], [-r, s / 2, 0]])
    if oo_bond:
        o[0] = [s / 2, 0, r]
        o[1] = [s, s / 2, r]
    ring4 = np.stack([si[0], o[0], si[1], o[1], si[2], o[2], si[3], o[3]]) + [30.0, 0, 0]
    pos = np.concatenate([ring3, ring4])
    species = np.array(["Si", "O"] * 7)
    return pos, species


def test_silica_rings_in_network_formers_and_alternation():
    pos, species = silica_rings()
    cut = {("O", "Si"): 2.0, ("O", "O"): 2.0}
    i, j = bond_graph(pos, species, cut)
    assert len(i) == 14 and np.all(species[i] != species[j])
    rings = shortest_path_rings(len(pos), i, j)
    stats = ring_statistics(rings, species, network_former="Si")
    assert stats["n_rings"] == 2
    assert sorted(stats["sizes"].tolist()) == [6, 8]
    assert sorted(stats["former_sizes"].tolist()) == [3, 4]
    assert stats["former_histogram"][3] == 1 and stats["former_histogram"][4] == 1
    assert stats["histogram"][6] == 1 and stats["histogram"][8] == 1 and stats["histogram"].sum() == 2
    assert stats["alternating"].all() and stats["alternating_fraction"] == 1.0
    assert "former_sizes" not in ring_statistics(rings, species)


def test_an_o_o_bond_breaks_alternation():
    pos, species = silica_rings(oo_bond=True)
    i, j = bond_graph(pos, species, {("O", "Si"): 2.0, ("O", "O"): 2.0})
    assert len(i) == 15  # one O–O bond more
    # without the O–O cutoff the extra contact is not a bond
    assert len(bond_graph(pos, species, {("O", "Si"): 2.0})[0]) == 14
    rings = shortest_path_rings(len(pos), i, j)
    stats = ring_statistics(rings, species, network_former="Si")
    # the 8-ring splits into an O–Si–O triangle and a 7-ring through the O–O bond
    order = np.argsort(stats["sizes"])
    assert stats["sizes"][order].tolist() == [3, 6, 7]
    assert stats["former_sizes"][order].tolist() == [1, 3, 3]
    assert stats["alternating"][order].tolist() == [False, True, False]
    assert stats["alternating_fraction"] == pytest.approx(1 / 3)


def test_alternation_needs_two_species_alternating():
    species = np.array(["Si", "O", "Ge", "O", "Si", "O"])
    stats = ring_statistics([[0, 1, 2, 3], [0, 1, 4, 5], [1, 2, 3, 5]], species)
    assert stats["alternating"].tolist() == [False, True, False]
    empty = ring_statistics(np.zeros((0, 12), int), species, network_former="Si")
    assert empty["n_rings"] == 0 and np.isnan(empty["alternating_fraction"])
    assert empty["former_histogram"].sum() == 0
    absent = ring_statistics([[1, 3, 5, -1]], species, network_former="B")
    assert absent["former_sizes"].tolist() == [0]


# --------------------------------------------------------------------------- crystals


def test_diamond_cluster_has_only_chair_six_rings():
    pos = diamond_cluster(13.0)
    i, j = bond_graph(pos, ["Si"] * len(pos), {("Si", "Si"): 2.6})
    rings = shortest_path_rings(len(pos), i, j, max_size=12)
    sizes = ring_sizes(rings)
    assert len(rings) > 100
    assert np.all(sizes == 6)  # the finite cluster's surface creates no other ring
    # bulk diamond: every atom is in 12 six-rings, every bond in 6
    per_atom = np.bincount(rings[rings >= 0], minlength=len(pos))
    interior = np.linalg.norm(pos, axis=1) < 13.0 - 5.0
    assert interior.sum() >= 10 and np.all(per_atom[interior] == 12)
    # chairs: every ring atom's ring neighbours are bonded, non-neighbours are not
    d = np.linalg.norm(pos[rings[:, :6, None]] - pos[rings[:, None, :6]], axis=-1)
    gap = np.abs(np.arange(6)[:, None] - np.arange(6)[None, :])
    assert np.all(d[:, (gap == 1) | (gap == 5)] < 2.6) and np.all(d[:, (gap > 1) & (gap < 5)] > 3.5)


# --------------------------------------------------------------------------- determinism


def random_network(n=400, degree=4.0, seed=0):
    rng = np.random.default_rng(seed)
    box = (n / 0.05) ** (1 / 3)
    pos = rng.uniform(0, box, (n, 3))
    cut = (degree / (0.05 * 4 / 3 * np.pi)) ** (1 / 3)
    return pos, cut


def test_rings_are_canonical_unique_and_independent_of_atom_order():
    pos, cut = random_network(n=600, degree=4.0, seed=1)
    i, j = bond_graph(pos, ["Si"] * len(pos), cut)
    rings = shortest_path_rings(len(pos), i, j, max_size=10)
    assert len(rings) > 50
    assert np.array_equal(rings, canonical_rings(rings))  # canonical, unique, sorted
    assert len(ring_set(rings)) == len(rings)
    assert len({frozenset(r) for r in ring_set(rings)}) == len(rings)
    assert np.array_equal(rings, shortest_path_rings(len(pos), i, j, max_size=10))
    # bonds given in another order, reversed, duplicated: same rings
    rng = np.random.default_rng(2)
    k = rng.permutation(len(i))
    again = shortest_path_rings(len(pos), np.r_[j[k], i[:5]], np.r_[i[k], j[:5]], max_size=10)
    assert np.array_equal(rings, again)
    # atoms permuted: the same rings once mapped back to the original indices
    perm = rng.permutation(len(pos))  # new atom q is old atom perm[q]
    ip, jp = bond_graph(pos[perm], ["Si"] * len(pos), cut)
    permuted = shortest_path_rings(len(pos), ip, jp, max_size=10)
    mapped = np.where(permuted >= 0, perm[np.maximum(permuted, 0)], -1)
    assert np.array_equal(canonical_rings(mapped), rings)


def test_matches_brute_force_all_shortest_paths():
    nx = pytest.importorskip("networkx")
    for seed, degree in [(3, 3.0), (4, 5.0)]:
        pos, cut = random_network(n=250, degree=degree, seed=seed)
        i, j = bond_graph(pos, ["Si"] * len(pos), cut)
        graph = nx.Graph()
        graph.add_nodes_from(range(len(pos)))
        graph.add_edges_from(zip(i.tolist(), j.tolist()))
        expected = set()
        for a, b in zip(i.tolist(), j.tolist()):
            graph.remove_edge(a, b)
            try:
                for path in nx.all_shortest_paths(graph, a, b):
                    if len(path) <= 9:
                        expected.add(tuple(path))
            except nx.NetworkXNoPath:
                pass
            graph.add_edge(a, b)
        width = 9
        padded = np.full((len(expected), width), -1)
        for row, path in enumerate(sorted(expected)):
            padded[row, : len(path)] = path
        got = shortest_path_rings(len(pos), i, j, max_size=width)
        assert len(got) > 20
        assert np.array_equal(got, canonical_rings(padded))


def test_blocks_with_halo_reproduce_the_whole_model():
    rng = np.random.default_rng(5)
    pos = rng.uniform(0, 1, (3000, 3)) * [150.0, 20.0, 20.0]  # 0.05 atoms/Å³, long in x
    cut = (3.5 / (0.05 * 4 / 3 * np.pi)) ** (1 / 3)  # ~3.5 bonds per atom
    max_size = 7
    sp = ["Si"] * len(pos)
    whole = shortest_path_rings(len(pos), *bond_graph(pos, sp, cut), max_size=max_size)
    assert len(whole) > 100
    halo = (max_size - 1) * cut
    edges = [0.0, 50.0, 100.0, 150.0]
    parts = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        core = (pos[:, 0] >= lo) & (pos[:, 0] < hi)
        take = np.flatnonzero((pos[:, 0] >= lo - halo) & (pos[:, 0] < hi + halo))
        assert len(take) < 0.7 * len(pos)
        local = shortest_path_rings(len(take), *bond_graph(pos[take], sp[: len(take)], cut), max_size=max_size)
        glob = np.where(local >= 0, take[np.maximum(local, 0)], -1)  # take is increasing
        parts.append(glob[core[glob[:, 0]]])
    merged = canonical_rings(np.concatenate(parts))
    assert len(merged) == sum(len(p) for p in parts)  # each ring in exactly one core
    assert np.array_equal(merged, whole)


# --------------------------------------------------------------------------- bad input


def test_bad_input_raises():
    pos = polygon(6, 1.5)
    sp = ["Si", "O"] * 3
    with pytest.raises(ValueError, match="unknown species"):
        bond_graph(pos, ["Si", "O", "Si", "Xx", "Si", "O"], 2.0)
    with pytest.raises(ValueError, match="unknown species"):
        bond_graph(pos, sp, {("O", "Qq"): 2.0})
    with pytest.raises(ValueError, match="≥ 0"):
        bond_graph(pos, sp, {("O", "Si"): -1.0})
    with pytest.raises(ValueError, match="≥ 0"):
        bond_graph(pos, sp, -1.0)
    with pytest.raises(ValueError, match="finite"):
        bond_graph(pos, sp, float("nan"))
    with pytest.raises(ValueError, match="pairs"):
        bond_graph(pos, sp, {"Si": 2.0})
    with pytest.raises(ValueError, match="twice"):
        bond_graph(pos, sp, {("O", "Si"): 2.0, ("Si", "O"): 1.8})
    with pytest.raises(ValueError, match="species"):
        bond_graph(pos, sp[:4], 2.0)
    with pytest.raises(ValueError, match="shape"):
        bond_graph(pos[:, :2], sp, 2.0)
    with pytest.raises(ValueError, match="max_size"):
        shortest_path_rings(6, [0], [1], max_size=2)
    with pytest.raises(ValueError, match="range|lie in"):
        shortest_path_rings(3, [0, 1], [1, 3])
    with pytest.raises(ValueError, match="itself"):
        shortest_path_rings(3, [0, 1], [1, 1])
    with pytest.raises(ValueError, match="same length"):
        shortest_path_rings(3, [0, 1], [1])
    with pytest.raises(ValueError, match="integer"):
        shortest_path_rings(3, [0.0], [1.0])
    with pytest.raises(ValueError, match="species has only"):
        ring_statistics([[0, 1, 7]], sp)
    with pytest.raises(ValueError, match="2-D"):
        ring_statistics([0, 1, 2], sp)
    with pytest.raises(ValueError, match="padding"):
        ring_statistics([[0, -1, 2]], sp)
    with pytest.raises(ValueError, match="network_former"):
        ring_statistics([[0, 1, 2]], sp, network_former=14)
    # unsorted keys and species absent from the model are fine
    i, j = bond_graph(pos, sp, {("Si", "O"): 1.6, ("N", "B"): 1.5})
    assert len(i) == 6
