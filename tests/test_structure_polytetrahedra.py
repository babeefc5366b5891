"""Known answers for the polytetrahedral-packing kernels (aetdask.kernels.structure.polytetrahedra)."""

import itertools
from collections import defaultdict

import numpy as np
import pytest
from scipy.spatial import cKDTree

from aetdask.kernels.structure import polytetrahedra as pt

PHI = (1 + 5**0.5) / 2


def icosahedron(radius=1.0):
    """Centre (atom 0) + 12 vertices at ``radius``."""
    v = []
    for s1 in (-1, 1):
        for s2 in (-1, 1):
            v += [(0, s1, s2 * PHI), (s1, s2 * PHI, 0), (s2 * PHI, 0, s1)]
    v = np.array(v, float)
    v *= radius / np.linalg.norm(v, axis=1, keepdims=True)
    return np.vstack([np.zeros(3), v])


def ico_edge(radius=1.0):
    return radius * 4 / np.sqrt(10 + 2 * np.sqrt(5))  # 1.0515 × radius


def fcc_cluster(n_cells=4, a=1.0):
    base = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    cells = np.array(list(itertools.product(range(n_cells), repeat=3)), float)
    return a * (cells[:, None, :] + base[None]).reshape(-1, 3)


def pentagonal_bipyramid(centre=(0.0, 0.0, 0.0)):
    ring = [[np.cos(t), np.sin(t), 0.0] for t in 2 * np.pi * np.arange(5) / 5]
    return np.array([[0, 0, 0.85], [0, 0, -0.85]] + ring) + np.asarray(centre)


def brute_tetrahedra(pos, cutoff):
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    adj = (d < cutoff) & ~np.eye(len(pos), dtype=bool)
    out = []
    for i in range(len(pos)):
        nbrs = [j for j in np.flatnonzero(adj[i]) if j > i]
        for j, k, l in itertools.combinations(nbrs, 3):
            if adj[j, k] and adj[j, l] and adj[k, l]:
                out.append([i, int(j), int(k), int(l)])
    return sorted(out)


def brute_groups(tets, delta, delta_max, min_order):
    """(axis, order, closed) of every face-connected group around every edge, by plain Python."""
    around = defaultdict(list)
    for t, d in zip(map(tuple, tets), delta):
        if d <= delta_max:
            for a, b in itertools.combinations(t, 2):
                around[(a, b)].append(set(t) - {a, b})
    out = []
    for axis, rings in around.items():
        todo = list(range(len(rings)))
        while todo:
            group, stack = [], [todo.pop(0)]
            while stack:
                g = stack.pop()
                group.append(g)
                for h in [h for h in todo if rings[h] & rings[g]]:
                    todo.remove(h)
                    stack.append(h)
            if len(group) < min_order:
                continue
            count = defaultdict(int)
            for g in group:
                for x in rings[g]:
                    count[x] += 1
            closed = len(group) >= 3 and all(c == 2 for c in count.values())
            out.append((axis, len(group), closed))
    return sorted(out)


def relaxed_packing(n, seed=1, phi=0.64, steps=300):
    """A dense amorphous packing: random points in a sphere, soft-sphere (diameter 1) overlaps relaxed."""
    rng = np.random.default_rng(seed)
    radius = (n / phi / 8) ** (1 / 3)
    pos = rng.normal(size=(n, 3))
    pos *= (radius * rng.uniform(size=n) ** (1 / 3) / np.linalg.norm(pos, axis=1))[:, None]
    for _ in range(steps):
        i, j = cKDTree(pos).query_pairs(1.0, output_type="ndarray").T
        v = pos[i] - pos[j]
        r = np.linalg.norm(v, axis=1)
        f = ((1 - r) / np.maximum(r, 1e-9))[:, None] * v
        force = np.zeros_like(pos)
        np.add.at(force, i, f)
        np.add.at(force, j, -f)
        rr = np.linalg.norm(pos, axis=1)
        out = rr > radius - 0.5  # a soft spherical wall
        force[out] -= ((rr[out] - (radius - 0.5)) / rr[out])[:, None] * pos[out]
        pos += 0.3 * force
    return pos


@pytest.fixture(scope="module")
def dense():
    """2000 atoms of a relaxed dense packing, cutoff 1.3 diameters (≈ the first minimum of g(r))."""
    pos = relaxed_packing(2000)
    cutoff = 1.3
    tets, delta = pt.tetrahedra(pos, cutoff)
    return pos, cutoff, tets, delta


# --------------------------------------------------------------------------- icosahedron


def test_icosahedron_tetrahedra_and_delta():
    pos = icosahedron()
    a = ico_edge()
    assert np.isclose(np.sort(np.linalg.norm(pos[1] - pos[2:], axis=1))[0], a)
    tets, delta = pt.tetrahedra(pos, 1.3)  # between the edge (1.05) and the next distance (1.70)
    assert tets.shape == (20, 4)
    assert np.all(tets[:, 0] == 0)  # centre + each face
    assert np.all(np.diff(tets, axis=1) > 0)
    assert tets.tolist() == sorted(tets.tolist())
    # δ = e_max / e_avg − 1 with edges 3 × a and 3 × radius
    expected = a / ((3 * a + 3 * 1.0) / 6) - 1
    np.testing.assert_allclose(delta, expected, rtol=1e-12)
    assert 0.025 < expected < 0.026


def test_icosahedron_pentagonal_bipyramids():
    pos = icosahedron()
    tets, delta = pt.tetrahedra(pos, 1.3)
    m = pt.bipyramids(tets, delta)
    assert np.all(m["order"] == 5) and np.all(m["closed"]) and len(m["order"]) == 12
    assert sorted(m["axis"].tolist()) == [[0, v] for v in range(1, 13)]
    pbs = pt.pentagonal_bipyramids(m)
    assert pbs.shape == (12, 7)
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    for row in pbs:
        cap, ring = row[1], row[2:]
        np.testing.assert_allclose(d[cap, ring], ico_edge())  # the ring: the 5 neighbours of the cap
        np.testing.assert_allclose(d[ring, np.roll(ring, 1)], ico_edge())  # in ring order
    # each tetrahedron sits in the PBs of its 3 centre–vertex edges
    counts = np.bincount(m["tet_ids"], minlength=len(tets))
    assert np.all(counts == 3)
    # with order 2 recorded: the 30 vertex–vertex edges, each between 2 face-sharing tetrahedra
    m2 = pt.bipyramids(tets, delta, min_order=2)
    assert np.sum(m2["order"] == 2) == 30 and np.sum(m2["order"] == 5) == 12

    ico = pt.icosahedra(pbs, len(pos))
    assert ico["full"].tolist() == [True] + [False] * 12
    assert ico["pb_count"].tolist() == [12] + [1] * 12
    assert not ico["partial"].any()

    net = pt.pb_networks(pbs, pos)
    assert net["label"].tolist() == [0] * 12
    assert net["size"].tolist() == [12] and net["n_atoms"].tolist() == [13]
    np.testing.assert_allclose(net["length"], [2.0])  # opposite vertices

    atoms = pt.motif_atoms(len(pos), m)
    assert atoms["pentagonal"].all() and not atoms["triplet"].any() and atoms["any"].all()


def test_partial_icosahedron_and_no_shared_edge():
    pos = icosahedron()
    tets, delta = pt.tetrahedra(pos, 1.3)
    pbs = pt.pentagonal_bipyramids(pt.bipyramids(tets, delta))
    ico = pt.icosahedra(pbs[:8], len(pos))
    assert ico["pb_count"][0] == 8 and ico["partial"][0] and not ico["full"][0]
    assert not pt.icosahedra(pbs[:8], len(pos), partial_min=9)["partial"].any()
    # PBs on opposite axes share only the centre atom: not connected
    v = pbs[:, 1]
    opposite = int(np.flatnonzero(np.isclose(pos[v] @ pos[v[0]], -1))[0])
    net = pt.pb_networks(pbs[[0, opposite]], pos)
    assert net["label"].tolist() == [0, 1] and net["size"].tolist() == [1, 1]


def test_distortion_filter_opens_pbs():
    # One tetrahedron above δ_max: its 3 centre–vertex PBs become open chains of 4.
    pos = icosahedron()
    tets, delta = pt.tetrahedra(pos, 1.3)
    delta = delta.copy()
    delta[7] = 0.5
    m = pt.bipyramids(tets, delta, 0.255)
    open_axes = sorted(m["axis"][~m["closed"]].tolist())
    assert open_axes == [[0, v] for v in tets[7, 1:]]
    assert np.all(m["order"][~m["closed"]] == 4) and np.sum(m["closed"]) == 9
    assert len(pt.pentagonal_bipyramids(m)) == 9
    assert not pt.icosahedra(pt.pentagonal_bipyramids(m), 13)["full"].any()
    # An open chain of 4 is no quadrilateral bipyramid unless closed_only=False.
    assert not pt.motif_atoms(13, m)["quadrilateral"].any()
    quad = pt.motif_atoms(13, m, closed_only=False)["quadrilateral"]
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    near_face = np.isclose(d[tets[7, 1:]], ico_edge()).any(axis=0) | np.isin(np.arange(13), tets[7])
    assert quad.tolist() == near_face.tolist() and quad.sum() == 10

    # Geometric distortion: push vertex 1 outwards; its 5 tetrahedra exceed δ_max = 0.05.
    pos[1] *= 1.15
    tets, delta = pt.tetrahedra(pos, 1.3)
    assert len(tets) == 20
    bad = np.any(tets == 1, axis=1)
    assert bad.sum() == 5 and np.all(delta[bad] > 0.05) and np.all(delta[~bad] < 0.03)
    m = pt.bipyramids(tets, delta, 0.05)
    nbrs = np.flatnonzero(np.isclose(np.linalg.norm(pos[2:] - pos[1] / 1.15, axis=1), ico_edge())) + 2
    assert len(nbrs) == 5
    assert [0, 1] not in m["axis"].tolist()  # its PB is gone
    triplets = m["order"] == 3
    assert sorted(m["axis"][triplets].tolist()) == [[0, v] for v in nbrs]
    assert not m["closed"][triplets].any()
    assert np.sum((m["order"] == 5) & m["closed"]) == 6
    # all 20 kept at the default δ_max
    assert np.sum((pt.bipyramids(tets, delta)["order"] == 5)) == 12


# --------------------------------------------------------------------------- simple shapes


def test_regular_tetrahedron():
    pos = np.array([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) * 1.7
    tets, delta = pt.tetrahedra(pos, 5.0)
    assert tets.tolist() == [[0, 1, 2, 3]] and delta.tolist() == [0.0]
    m = pt.bipyramids(tets, delta, min_order=2)
    assert len(m["order"]) == 0 and m["ring"].shape == (0, 6)
    m1 = pt.bipyramids(tets, delta, min_order=1)
    assert len(m1["order"]) == 6 and np.all(m1["order"] == 1) and not m1["closed"].any()


def test_empty_inputs():
    tets, delta = pt.tetrahedra(np.zeros((0, 3)), 1.0)
    assert tets.shape == (0, 4) and delta.shape == (0,)
    m = pt.bipyramids(tets, delta)
    assert len(m["axis"]) == 0
    assert len(pt.pentagonal_bipyramids(m)) == 0
    net = pt.pb_networks(np.zeros((0, 7), int), np.zeros((0, 3)))
    assert len(net["size"]) == 0
    ico = pt.icosahedra(np.zeros((0, 7), int), 5)
    assert not ico["full"].any() and ico["pb_count"].tolist() == [0] * 5
    f = pt.motif_fractions_vs_delta(tets, delta, 10, [0.1, 0.2])
    assert f["pentagonal"].tolist() == [0.0, 0.0]


def test_fcc_has_tetrahedra_but_no_motifs():
    a = 1.0
    pos = fcc_cluster(4, a)
    nn = a / np.sqrt(2)
    tets, delta = pt.tetrahedra(pos, 0.5 * (nn + a))  # between the 1st (0.707) and 2nd (1.0) shells
    np.testing.assert_allclose(delta, 0.0, atol=1e-12)
    edges = np.linalg.norm(pos[tets[:, pt._EDGES[:, 0]]] - pos[tets[:, pt._EDGES[:, 1]]], axis=2)
    np.testing.assert_allclose(edges, nn)
    # interior atoms (full 12-neighbour shell) are in 8 tetrahedra each
    centre = pos.mean(axis=0)
    interior = np.flatnonzero(np.all(np.abs(pos - centre) < 0.8, axis=1))
    per_atom = np.bincount(tets.ravel(), minlength=len(pos))
    assert len(interior) > 0 and np.all(per_atom[interior] == 8)
    assert tets.tolist() == brute_tetrahedra(pos, 0.5 * (nn + a))
    # around an nn edge: tetrahedron, octahedron, tetrahedron, octahedron → the two
    # tetrahedra share no face: groups of order 1 only, two on each interior edge
    m = pt.bipyramids(tets, delta, min_order=1)
    assert len(m["order"]) == 6 * len(tets) and np.all(m["order"] == 1)
    _, per_edge = np.unique(m["axis"], axis=0, return_counts=True)
    assert per_edge.max() == 2
    assert len(pt.bipyramids(tets, delta, min_order=2)["order"]) == 0
    assert len(pt.bipyramids(tets, delta)["order"]) == 0
    assert not any(v.any() for v in pt.motif_atoms(len(pos), pt.bipyramids(tets, delta)).values())


# --------------------------------------------------------------------------- networks


def test_two_pbs_sharing_an_edge_and_far_apart():
    pb = pentagonal_bipyramid()
    # Second PB: the first rotated by 180° about the ring edge (2, 3), sharing atoms 2 and 3.
    p2, p3 = pb[2], pb[3]
    axis = (p3 - p2) / np.linalg.norm(p3 - p2)
    rel = pb - p2
    rotated = 2 * np.outer(rel @ axis, axis) - rel + p2  # 180° rotation about the line p2–p3
    pos = np.vstack([pb, rotated[[0, 1, 4, 5, 6]]])  # new atoms 7..11; 2, 3 shared
    second = [7, 8, 2, 3, 9, 10, 11]  # caps, then ring in ring order (2, 3 map to themselves)
    np.testing.assert_allclose(pos[second], rotated[[0, 1, 2, 3, 4, 5, 6]], atol=1e-12)
    net = pt.pb_networks(np.array([[0, 1, 2, 3, 4, 5, 6], second]), pos)
    assert net["label"].tolist() == [0, 0] and net["size"].tolist() == [2] and net["n_atoms"].tolist() == [12]
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    np.testing.assert_allclose(net["length"], [d.max()])
    assert net["atoms"].tolist() == list(range(12))

    # Two PBs far apart; and a third that shares only one atom with the first.
    far = np.vstack([pb, pentagonal_bipyramid((50.0, 0, 0))])
    third = [0, 14, 15, 16, 17, 18, 19]  # shares cap 0 only
    far = np.vstack([far, pentagonal_bipyramid((0, 0, 1.7))[[0, 2, 3, 4, 5, 6]]])  # lower cap = atom 0
    net = pt.pb_networks(np.array([[0, 1, 2, 3, 4, 5, 6], list(range(7, 14)), third]), far)
    assert net["label"].tolist() == [0, 1, 2] and net["size"].tolist() == [1, 1, 1]
    assert net["n_atoms"].tolist() == [7, 7, 7]
    one = pdist_max(pb)
    np.testing.assert_allclose(net["length"][:2], [one, one])


def pdist_max(p):
    return np.linalg.norm(p[:, None] - p[None], axis=-1).max()


def test_network_length_large_uses_hull():
    rng = np.random.default_rng(3)
    pos = rng.normal(size=(400, 3))
    # a chain of PBs (fake ids) sharing the axis edge (0, k) with k running: one big network
    pbs = np.array([[0, 1 + q, *(2 + (5 * q + np.arange(5)) % 398)] for q in range(80)])
    net = pt.pb_networks(pbs, pos)
    assert net["size"].tolist() == [80]
    atoms = net["atoms"]
    assert net["n_atoms"][0] == len(atoms) > 40
    np.testing.assert_allclose(net["length"], [pdist_max(pos[atoms])])


# --------------------------------------------------------------------------- random dense packing


def test_dense_packing_matches_brute_force(dense):
    pos, cutoff, tets, delta = dense
    assert len(tets) > 1000
    # a few hundred atoms around the centre, enumerated independently
    sub = np.argsort(np.linalg.norm(pos, axis=1))[:300]
    sub_tets, sub_delta = pt.tetrahedra(pos[sub], cutoff)
    assert sub_tets.tolist() == brute_tetrahedra(pos[sub], cutoff)
    assert len(sub_tets) > 50
    # δ from its definition
    for t, dl in zip(sub_tets[:50], sub_delta[:50]):
        e = [np.linalg.norm(pos[sub][a] - pos[sub][b]) for a, b in itertools.combinations(t, 2)]
        assert np.isclose(dl, max(e) / np.mean(e) - 1, rtol=1e-12, atol=1e-15)
    # the full model: rows are 4-cliques, and the global enumeration restricted to the subset agrees
    d = lambda a, b: np.linalg.norm(pos[a] - pos[b], axis=-1)  # noqa: E731
    for a, b in itertools.combinations(range(4), 2):
        assert np.all(d(tets[:, a], tets[:, b]) < cutoff)
    inside = np.isin(tets, sub).all(axis=1)
    assert sorted(np.sort(sub[sub_tets], axis=1).tolist()) == sorted(tets[inside].tolist())


def test_dense_packing_motifs_match_brute_force(dense):
    pos, cutoff, tets, delta = dense
    for dm in (0.1, 0.255):
        m = pt.bipyramids(tets, delta, dm, min_order=2)
        got = sorted((tuple(a), int(o), bool(c)) for a, o, c in zip(m["axis"].tolist(), m["order"], m["closed"]))
        assert got == brute_groups(tets, delta, dm, 2)
        # ring atoms: closed rings in ring order (consecutive ring atoms share a tetrahedron)
        tetset = set(map(tuple, tets[delta <= dm].tolist()))
        for k in np.flatnonzero(m["closed"])[:200]:
            ring = m["ring"][k][: m["order"][k]]
            for x, y in zip(ring, np.roll(ring, -1)):
                assert tuple(sorted((*m["axis"][k], x, y))) in tetset
        # tet_ids are the group's tetrahedra
        for k in range(min(200, len(m["order"]))):
            ids = m["tet_ids"][m["tet_ptr"][k]:m["tet_ptr"][k + 1]]
            assert len(ids) == m["order"][k]
            a, b = m["axis"][k]
            assert np.all((tets[ids] == a).any(axis=1) & (tets[ids] == b).any(axis=1))
            assert np.all(delta[ids] <= dm)


def test_motif_fractions_vs_delta(dense):
    pos, cutoff, tets, delta = dense
    deltas = np.linspace(0.0, 0.4, 9)
    f = pt.motif_fractions_vs_delta(tets, delta, len(pos), deltas)
    assert set(f) == {"delta_max", "triplet", "quadrilateral", "pentagonal", "hexagonal", "any"}
    assert np.all(np.diff(f["any"]) >= 0)  # groups only grow with δ_max
    assert f["any"][-1] > 0.9 and f["any"][0] == 0.0
    # Per type, groups are maximal: a triplet that grows into a bipyramid stops being a
    # triplet, so only the total is monotone by construction; PBs grow from none to many.
    assert f["pentagonal"][1] < 0.05 < 0.5 < f["pentagonal"][5]
    for name in pt.MOTIF_TYPES:
        assert np.all((f[name] >= 0) & (f[name] <= f["any"]))
    # the same as one call at a given δ_max
    one = pt.motif_atoms(len(pos), pt.bipyramids(tets, delta, deltas[5]))
    for name, mask in one.items():
        assert f[name][5] == mask.mean()


def test_dense_packing_pb_networks_and_icosahedra(dense):
    pos, cutoff, tets, delta = dense
    pbs = pt.pentagonal_bipyramids(pt.bipyramids(tets, delta, 0.255))
    assert len(pbs) > 0
    net = pt.pb_networks(pbs, pos)
    assert net["size"].sum() == len(pbs) and len(net["size"]) == net["label"].max() + 1
    # brute force: connected iff sharing one of the 16 edges
    edges = [{frozenset(e) for e in pbs[q][pt._PB_EDGES].tolist()} for q in range(len(pbs))]
    label = -np.ones(len(pbs), int)
    n = 0
    for q in range(len(pbs)):
        if label[q] >= 0:
            continue
        label[q], stack = n, [q]
        while stack:
            r = stack.pop()
            for s in np.flatnonzero(label < 0):
                if edges[r] & edges[s]:
                    label[s] = n
                    stack.append(s)
        n += 1
    np.testing.assert_array_equal(net["label"], label)
    for g in range(n):
        atoms = np.unique(pbs[label == g])
        assert net["n_atoms"][g] == len(atoms)
        assert np.isclose(net["length"][g], pdist_max(pos[atoms]))
    ico = pt.icosahedra(pbs, len(pos))
    assert ico["pb_count"].sum() == 2 * len(pbs)
    assert np.all(ico["partners"] <= ico["pb_count"])
