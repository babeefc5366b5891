"""Known answers for the Voronoi-index and local-density kernels."""

import itertools

import numpy as np
import pytest
from scipy.spatial import Voronoi, cKDTree

from aetdask.kernels.structure.density import AMU_PER_A3_IN_G_PER_CM3, atomic_mass, local_density
from aetdask.kernels.structure.neighbors import neighbor_lists
from aetdask.kernels.structure.voronoi import CELL_KEYS, voronoi_cells, voronoi_faces

FCC = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
BCC = np.array([[0, 0, 0], [0.5, 0.5, 0.5]])


def lattice(basis, a, cells):
    grid = np.array(list(itertools.product(range(cells), repeat=3)), dtype=float)
    return ((grid[:, None, :] + basis[None]) * a).reshape(-1, 3)


def rsa(n, box, dmin, seed=0):
    """Random sequential addition of up to ``n`` points in a cube, at least ``dmin`` apart."""
    rng = np.random.default_rng(seed)
    pts = np.empty((0, 3))
    for _ in range(200):
        cand = rng.uniform(0, box, (4 * n, 3))
        keep = []
        tree = cKDTree(pts) if len(pts) else None
        for k, c in enumerate(cand):
            if tree is not None and tree.query_ball_point(c, dmin, return_length=True) > 0:
                continue
            if keep and np.min(np.sum((cand[keep] - c) ** 2, axis=1)) < dmin**2:
                continue
            keep.append(k)
            if len(pts) + len(keep) >= n:
                break
        pts = np.vstack([pts, cand[keep]])
        if len(pts) >= n:
            break
    return pts[:n]


def n_neighbours(pos, cutoff):
    indptr, _ = neighbor_lists(pos, cutoff)
    return np.diff(indptr)


def test_fcc_cluster():
    a = 4.0
    pos = lattice(FCC, a, 7) + 0.123  # off the origin: no help from exact coordinates
    cutoff = 0.5 * (a / np.sqrt(2) + a)
    cells = voronoi_cells(pos, cutoff)
    assert set(cells) == set(CELL_KEYS)
    inner = cells["interior"]
    # interior atoms are exactly those with all 12 nearest neighbours; the rest sit on the cube's faces
    assert np.array_equal(inner, n_neighbours(pos, cutoff) == 12)
    assert inner.sum() > 800
    # every interior atom, including those next to the surface, is a perfect rhombic dodecahedron
    assert np.all(cells["index"][inner] == [0, 12, 0, 0])
    assert np.all(cells["n7plus"][inner] == 0)
    assert np.all(cells["coordination"][inner] == 12)
    np.testing.assert_allclose(cells["volume"][inner], a**3 / 4, rtol=1e-9)
    np.testing.assert_allclose(cells["area"][inner], 3 * np.sqrt(2) * a**2 / 2, rtol=1e-9)
    assert np.all(cells["five_edged_fraction"][inner] == 0)
    # surface atoms: the documented convention
    out = ~inner
    assert out.sum() > 0
    assert np.all(cells["index"][out] == -1) and np.all(cells["coordination"][out] == -1)
    assert np.all(np.isnan(cells["volume"][out])) and np.all(np.isnan(cells["five_edged_fraction"][out]))
    # the outermost layer is surface
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    skin = np.any((pos - lo < 0.1) | (hi - pos < 0.1), axis=1)
    assert not np.any(inner & skin)


def test_bcc_cluster():
    a = 3.2
    pos = lattice(BCC, a, 7)
    cutoff = 0.5 * (a + a * np.sqrt(2))  # first (a√3/2) and second (a) shells
    cells = voronoi_cells(pos, cutoff)
    inner = cells["interior"]
    # atoms with both shells complete (8 + 6 neighbours) have the perfect truncated-octahedron cell
    full = n_neighbours(pos, cutoff) == 14
    assert full.sum() >= 5**3 and np.all(inner[full])
    assert np.all(cells["index"][full] == [0, 6, 0, 8])
    assert np.all(cells["coordination"][full] == 14)
    np.testing.assert_allclose(cells["volume"][full], a**3 / 2, rtol=1e-9)
    np.testing.assert_allclose(cells["five_edged_fraction"][full], 0.0)
    # an atom just under a {100} surface misses one second neighbour: its cell is closed by the
    # first shell well within the cutoff (a true cell of this finite cluster, so interior), but
    # its square face towards the vacuum is replaced by the tips of four hexagons
    under = inner & ~full
    assert under.sum() > 0 and not np.any(np.all(cells["index"][under] == [0, 6, 0, 8], axis=1))
    assert np.all(cells["volume"][under] > a**3 / 2)
    # with a first-shell-only cutoff the 6 square faces are not counted
    first = voronoi_cells(pos, 0.5 * (a * np.sqrt(3) / 2 + a))
    assert np.array_equal(first["interior"], inner)
    assert np.all(first["index"][full] == [0, 0, 0, 8])


def test_simple_cubic_degenerate_lattice():
    # Qhull's facet merging drops the corners of a cubic grid; the kernel re-runs with joggle
    a = 2.5
    pos = lattice(np.zeros((1, 3)), a, 6)
    cells = voronoi_cells(pos, 0.5 * (a + a * np.sqrt(2)))
    inner = cells["interior"]
    assert np.array_equal(inner, n_neighbours(pos, 1.1 * a) == 6)
    assert np.all(cells["index"][inner] == [0, 6, 0, 0])
    np.testing.assert_allclose(cells["volume"][inner], a**3, rtol=1e-8)


def icosahedron(radius):
    phi = (1 + np.sqrt(5)) / 2
    v = []
    for s1, s2 in itertools.product((-1, 1), repeat=2):
        v += [(0, s1, s2 * phi), (s1, s2 * phi, 0), (s2 * phi, 0, s1)]
    v = np.array(v, dtype=float)
    return radius * v / np.linalg.norm(v, axis=1)[:, None]


def test_icosahedron_centre():
    r = 2.7
    rng = np.random.default_rng(3)
    shell = rng.normal(size=(60, 3))
    shell = 2.1 * r * shell / np.linalg.norm(shell, axis=1)[:, None]
    pos = np.vstack([[0.0, 0.0, 0.0], icosahedron(r), shell]) + [5.0, -2.0, 1.0]
    cells = voronoi_cells(pos, cutoff=1.2 * r)
    assert cells["interior"][0]
    assert cells["index"][0].tolist() == [0, 0, 12, 0]
    assert cells["coordination"][0] == 12 and cells["n7plus"][0] == 0
    assert cells["five_edged_fraction"][0] == 1.0
    # the cell is a regular dodecahedron with inradius r/2
    edge = (r / 2) / (0.5 * np.sqrt(5 / 2 + 11 / 10 * np.sqrt(5)))
    np.testing.assert_allclose(cells["volume"][0], (15 + 7 * np.sqrt(5)) / 4 * edge**3, rtol=1e-9)
    # the bare 13-atom icosahedron: the centre is the only interior atom, same answer
    bare = voronoi_cells(pos[:13], cutoff=1.2 * r)
    assert bare["interior"].tolist() == [True] + [False] * 12
    assert bare["index"][0].tolist() == [0, 0, 12, 0]


def test_area_regulation_removes_tiny_face():
    a = 4.0
    pos = lattice(FCC, a, 5)
    centre = int(np.argmin(np.linalg.norm(pos - pos.mean(axis=0), axis=1)))
    pos[centre, 0] += 0.05  # opens a tiny face towards the second neighbour at +a along x
    cutoff = 4.2  # includes the second shell, so only the area rule can drop that face
    keep_all = voronoi_cells(pos, cutoff, area_fraction=0.0)
    regulated = voronoi_cells(pos, cutoff, area_fraction=0.01)
    assert keep_all["interior"][centre] and regulated["interior"][centre]
    assert keep_all["coordination"][centre] == 13
    assert regulated["coordination"][centre] == 12
    # the tiny face is a square; the four rhombi around the split vertex got a fifth edge
    assert keep_all["index"][centre].tolist() == [0, 9, 4, 0]
    assert regulated["index"][centre].tolist() == [0, 8, 4, 0]
    # regulation only removes faces: same cells, fewer counted faces overall
    inner = regulated["interior"]
    assert np.array_equal(keep_all["interior"], inner)
    assert np.array_equal(keep_all["volume"], regulated["volume"], equal_nan=True)
    assert regulated["coordination"][inner].sum() < keep_all["coordination"][inner].sum()
    tiny = voronoi_faces(pos)
    face = np.flatnonzero((tiny["points"] == centre).any(axis=1) & (tiny["distance"] > 3.5) & tiny["bounded"])
    assert len(face) == 1 and 0 < tiny["area"][face[0]] < 0.01 * keep_all["area"][centre]


@pytest.fixture(scope="module")
def amorphous():
    return rsa(900, 25.0, 2.3, seed=1)


def assert_blocks_match(pos, cutoff, blocks):
    """Each block's core atoms, computed with a 2·cutoff halo, equal the whole-model result."""
    whole = voronoi_cells(pos, cutoff)
    for lo, hi in blocks:
        lo, hi = np.array(lo, float), np.array(hi, float)
        core = np.all((pos >= lo) & (pos < hi), axis=1)
        halo = np.all((pos >= lo - 2 * cutoff) & (pos < hi + 2 * cutoff), axis=1)
        assert halo.sum() < len(pos) - 50  # the block really leaves atoms out
        block = voronoi_cells(pos[halo], cutoff)
        at = np.flatnonzero(core[halo])  # core atoms within the block
        ref = np.flatnonzero(core)
        assert np.array_equal(block["interior"][at], whole["interior"][ref])
        assert block["interior"][at].sum() > 20
        for key in ("index", "n7plus", "coordination"):
            assert np.array_equal(block[key][at], whole[key][ref]), key
        for key in ("volume", "area", "five_edged_fraction"):
            np.testing.assert_allclose(block[key][at], whole[key][ref], rtol=1e-9, equal_nan=True)
        # the cut made surface atoms at the halo's outer edge (hence "keep only the core"), never
        # a wrongly interior one: adding atoms only shrinks a cell, so interior stays interior
        assert np.any(~block["interior"] & whole["interior"][halo])
        assert not np.any(block["interior"] & ~whole["interior"][halo])
    return whole


def test_blocking_equivalence(amorphous):
    whole = assert_blocks_match(amorphous, 3.3, [((0, 0, 0), (10, 25, 25)), ((6, 6, 0), (16, 16, 25))])
    inner = whole["interior"]
    assert inner.sum() > 200
    assert np.all(whole["index"][inner].sum(axis=1) + whole["n7plus"][inner] == whole["coordination"][inner])


def test_blocking_equivalence_particle():
    from aetdask.simulate.amorphous import amorphous_particle

    pos = amorphous_particle(1200, species=("Ta",), packing=0.3, seed=2).position.values
    assert_blocks_match(pos, 4.6, [((-50, -50, -50), (0, 50, 50)), ((-8, -8, -8), (8, 8, 8))])


def test_amorphous_sanity(amorphous):
    cells = voronoi_cells(amorphous, 3.6)
    inner = cells["interior"]
    # interior cells have positive volume; the ones in the middle of the cube tile it
    assert np.all(cells["volume"][inner] > 0)
    assert np.all((cells["five_edged_fraction"][inner] >= 0) & (cells["five_edged_fraction"][inner] <= 1))
    assert 6 < np.mean(cells["coordination"][inner]) < 15
    # regulation only ever removes faces
    loose = voronoi_cells(amorphous, 3.6, area_fraction=0.0)
    assert np.all(loose["coordination"][inner] >= cells["coordination"][inner])
    # without the area rule, an interior atom's coordination counts every face to a near neighbour
    faces = voronoi_faces(amorphous)
    near = (faces["distance"] < 3.6) & (faces["n_edges"] >= 3)
    counts = np.bincount(faces["points"][near].ravel(), minlength=len(amorphous))
    assert np.array_equal(loose["coordination"][inner], counts[inner])
    # the index is a partition of the retained faces by their number of edges
    assert np.all(loose["index"][inner].sum(axis=1) + loose["n7plus"][inner] == counts[inner])


def test_qhull_ridge_order_is_cyclic(amorphous):
    # the kernel sorts face vertices by angle; Qhull already gives them in cyclic order
    pos = amorphous[:300]
    faces = voronoi_faces(pos)
    vor = Voronoi(pos - 0.5 * (pos.min(axis=0) + pos.max(axis=0)))
    checked = 0
    for k in np.flatnonzero(faces["bounded"]):
        q = list(vor.ridge_vertices[k])
        s = faces["vertex_ids"][faces["indptr"][k] : faces["indptr"][k + 1]].tolist()
        i = s.index(q[0])
        rot = s[i:] + s[:i]
        assert q == rot or q == [rot[0]] + rot[1:][::-1]
        checked += 1
    assert checked > 100


def test_degenerate_inputs():
    n = voronoi_cells(np.random.default_rng(0).normal(size=(4, 3)), 3.0)
    assert not n["interior"].any() and np.all(n["index"] == -1)
    flat = np.c_[np.random.default_rng(1).normal(size=(20, 2)), np.zeros(20)]
    f = voronoi_cells(flat, 3.0)
    assert not f["interior"].any() and np.all(np.isnan(f["volume"]))
    empty = voronoi_cells(np.zeros((0, 3)), 3.0)
    assert empty["index"].shape == (0, 4)
    with pytest.raises(ValueError, match="at least 5"):
        voronoi_faces(flat)


def test_bad_input():
    good = lattice(FCC, 4.0, 2)
    with pytest.raises(ValueError, match="shape"):
        voronoi_cells(good[:, :2], 3.0)
    with pytest.raises(ValueError, match="shape"):
        voronoi_cells(good.ravel(), 3.0)
    with pytest.raises(ValueError, match="shape"):
        voronoi_faces(good[:, :2])
    with pytest.raises(ValueError, match="cutoff"):
        voronoi_cells(good, 0.0)
    with pytest.raises(ValueError, match="area_fraction"):
        voronoi_cells(good, 3.0, area_fraction=1.0)
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        voronoi_cells(bad, 3.0)
    dup = np.vstack([good, good[5]])
    with pytest.raises(ValueError, match="coincide"):
        voronoi_cells(dup, 3.0)
    with pytest.raises(ValueError, match="shape"):
        local_density(good[:, :2], 1.0, np.ones(len(good)), spacing=1.0, sigma=1.0)
    with pytest.raises(ValueError, match="shape"):
        local_density(good, np.ones(3), np.ones(len(good)), spacing=1.0, sigma=1.0)
    with pytest.raises(ValueError, match="positive"):
        local_density(good, 1.0, np.ones(len(good)), spacing=0.0, sigma=1.0)
    with pytest.raises(ValueError, match="finite volume"):
        local_density(good, 1.0, np.full(len(good), np.nan), spacing=1.0, sigma=1.0)
    with pytest.raises(ValueError, match="unknown element"):
        atomic_mass(["Si", "Xx"])


def fcc_density(symbol, a, cells=6, spacing=0.8, sigma=2.0):
    pos = lattice(FCC, a, cells)
    vc = voronoi_cells(pos, 0.5 * (a / np.sqrt(2) + a))
    grid, origin = local_density(pos, atomic_mass(symbol), vc["volume"], spacing=spacing, sigma=sigma)
    centre = np.round((pos.mean(axis=0) - origin) / spacing).astype(int)
    return grid, origin, centre, pos, vc


def test_local_density_uniform_fcc():
    a = 4.0
    grid, origin, centre, pos, vc = fcc_density("Ta", a)
    expected = 4 * atomic_mass("Ta") / a**3 * AMU_PER_A3_IN_G_PER_CM3
    np.testing.assert_allclose(grid[tuple(centre)], expected, rtol=1e-2)
    inner = grid[tuple(slice(c - 3, c + 4) for c in centre)]
    np.testing.assert_allclose(inner, expected, rtol=1e-2)
    # the grid covers the interior atoms plus 3 sigma; far corners have no weight
    used = pos[vc["interior"]]
    np.testing.assert_allclose(origin, used.min(axis=0) - 3 * 2.0)
    assert np.isnan(grid[0, 0, 0]) or abs(grid[0, 0, 0] - expected) < 1e-6 * expected


def test_local_density_copper_units():
    grid, _, centre, _, _ = fcc_density("Cu", 3.615)
    assert 8.93 <= grid[tuple(centre)] <= 8.96
    assert 8.93 <= np.nanmin(grid) and np.nanmax(grid) <= 8.96


def test_local_density_weighting():
    # two slabs of different density: the map goes smoothly from one to the other
    x = np.arange(0, 20, 2.0)
    pos = np.array(list(itertools.product(x, x, x)))
    vol = np.where(pos[:, 0] < 10, 10.0, 20.0)
    grid, origin = local_density(pos, 12.0, vol, spacing=1.0, sigma=1.5)
    lo, hi = 12.0 / 20 * AMU_PER_A3_IN_G_PER_CM3, 12.0 / 10 * AMU_PER_A3_IN_G_PER_CM3
    assert np.nanmin(grid) >= lo - 1e-9 and np.nanmax(grid) <= hi + 1e-9
    row = grid[:, grid.shape[1] // 2, grid.shape[2] // 2]
    np.testing.assert_allclose(row[int((2 - origin[0]))], hi, rtol=1e-3)
    np.testing.assert_allclose(row[int((16 - origin[0]))], lo, rtol=1e-3)
    assert np.all(np.diff(row[~np.isnan(row)]) <= 1e-12)
    # given origin and shape: voxels far from every atom are NaN
    big, o = local_density(pos, 12.0, vol, spacing=1.0, sigma=1.5, origin=(-30, -30, -30), shape=(80, 80, 80))
    assert o.tolist() == [-30, -30, -30] and big.shape == (80, 80, 80)
    assert np.isnan(big[0, 0, 0]) and not np.isnan(big[35, 35, 35])
    # NaN volumes are skipped
    vol2 = vol.copy()
    vol2[::3] = np.nan
    g2, _ = local_density(pos, 12.0, vol2, spacing=1.0, sigma=1.5)
    assert np.nanmin(g2) >= lo - 1e-9


def test_atomic_mass():
    assert atomic_mass("Cu") == pytest.approx(63.546, abs=1e-3)
    m = atomic_mass(np.array(["Ta", "Si", "Pd"]))
    assert m.shape == (3,)
    np.testing.assert_allclose(m, [180.948, 28.085, 106.42], atol=1e-2)
