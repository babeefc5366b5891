import numpy as np
import pytest
from scipy import ndimage

from aetdask.errors import InputError
from aetdask.kernels.atoms import trace as trace_k
from aetdask.model import merge_distance, trace
from aetdask.schema import volume as make_volume


def gaussian_volume(centres, shape=(40, 40, 40), sigma=1.6, heights=None):
    """Sum of 3-D Gaussians at fractional voxel positions (k, i, j)."""
    grid = np.indices(shape).reshape(3, -1).T.astype(float)
    out = np.zeros(len(grid))
    for c, h in zip(centres, heights if heights is not None else np.ones(len(centres))):
        out += h * np.exp(-np.sum((grid - c) ** 2, axis=1) / (2 * sigma**2))
    return out.reshape(shape)


def test_window_samples_equal_map_coordinates():
    rng = np.random.default_rng(0)
    coef = trace_k.spline_coefficients(rng.normal(size=(12, 14, 16)))
    centres = rng.uniform(-1, 16, (30, 3))
    steps = (np.arange(7) - 3) / 3
    got = trace_k.window_samples(coef, centres, steps)
    offsets = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)
    pts = (centres[:, None, :] + offsets).reshape(-1, 3).T
    want = ndimage.map_coordinates(coef, pts, order=3, mode="mirror", prefilter=False).reshape(got.shape)
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_fit_peaks_find_sub_voxel_centres():
    rng = np.random.default_rng(1)
    centres = np.array([[12.3, 15.7, 20.1], [25.55, 22.2, 11.9], [19.0, 30.4, 28.65]])
    vol = gaussian_volume(centres, heights=rng.uniform(0.5, 2.0, 3))
    start = trace_k.local_maxima(vol, threshold=0.1)
    assert len(start) == 3
    pos, peak, ok = trace_k.fit_peaks(trace_k.spline_coefficients(vol), start)
    assert ok.all()
    order = np.argsort(pos[:, 0])
    np.testing.assert_allclose(pos[order], centres[np.argsort(centres[:, 0])], atol=0.01)  # voxels


def test_merge_keeps_the_brightest_of_each_cluster_and_is_order_free():
    rng = np.random.default_rng(2)
    centres = np.array([[0, 0, 0], [5, 0, 0], [0, 5, 0]], float)
    pts = np.concatenate([c + rng.normal(0, 0.3, (6, 3)) for c in centres])
    strength = rng.uniform(0, 1, len(pts))
    kept = trace_k.merge(pts, strength, 2.0)
    assert len(kept) == 3
    for k in kept:  # each survivor is the brightest of its cluster
        cluster = np.flatnonzero(np.linalg.norm(pts - pts[k], axis=1) < 2.0)
        assert strength[k] == strength[cluster].max()
    perm = rng.permutation(len(pts))
    again = trace_k.merge(pts[perm], strength[perm], 2.0)
    assert sorted(perm[again].tolist()) == sorted(kept.tolist())


@pytest.mark.parametrize("distance", [0.7, 3.0, 8.5])
def test_merge_is_the_greedy_rule_at_any_density(distance):
    """Every candidate, brightest first, is kept unless one kept already lies within the distance (checked against
    every pair, here in a volume with negative coordinates and chains of neighbours)."""
    rng = np.random.default_rng(7)
    pts = rng.uniform(-20, 40, (600, 3))
    strength = rng.uniform(0, 1, len(pts))
    dist = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    kept = []
    for i in np.argsort(-strength, kind="stable"):
        if not any(dist[i, j] <= distance for j in kept):
            kept.append(i)
    assert trace_k.merge(pts, strength, distance).tolist() == kept


def test_merge_distance_follows_from_the_species():
    assert merge_distance(["Si"]) == pytest.approx(0.75 * 2 * 1.11)
    assert merge_distance(["Si", "O"]) < merge_distance(["Si"]) < merge_distance(["Co", "Pd", "Pt"])
    with pytest.raises(InputError):
        trace(make_volume(np.zeros((8, 8, 8)), 0.3), [])


def test_chunked_tracing_gives_the_whole_volume_atoms():
    rng = np.random.default_rng(3)
    n = 36
    centres = []
    while len(centres) < 40:  # atoms at least 2.4 Å apart at 0.3 Å voxels
        c = rng.uniform(4, n - 4, 3)
        if all(np.linalg.norm(c - q) * 0.3 > 2.4 for q in centres):
            centres.append(c)
    vol = gaussian_volume(np.array(centres), shape=(n, n, n), sigma=1.5) + rng.normal(0, 0.02, (n, n, n))
    vol = make_volume(np.clip(vol, 0, None), 0.3)
    whole = trace(vol, "Si", chunk=n)
    for chunk in (12, 20):
        part = trace(vol.chunk({"z": chunk, "y": chunk, "x": chunk}), "Si", chunk=chunk)
        bright = slice(0, 40)  # the atoms (the candidates are sorted brightest first)
        np.testing.assert_allclose(part.position.values[bright], whole.position.values[bright], atol=1e-3)
        assert part.attrs["provenance"][-1]["params"]["sub_volumes"] == int(np.ceil(n / chunk)) ** 3
    found = whole.position.values[:40]
    truth = (np.array(centres)[:, ::-1] - n // 2) * 0.3
    d = np.linalg.norm(found[:, None] - truth[None], axis=2).min(axis=1)
    assert d.max() < 0.05  # Å, with 2 % noise on the volume


def _dense_noisy_particle(rng, n=40, pixel=0.347, sigma=1.3, noise=0.6):
    """Gaussian atoms (``sigma`` voxels) at least 2.2 Å apart, packed at about a-Si's density, in strong noise."""
    centres = np.empty((0, 3))
    for c in rng.uniform(4, n - 4, (20000, 3)):
        if len(centres) == 0 or np.min(np.linalg.norm(centres - c, axis=1)) * pixel > 2.2:
            centres = np.vstack([centres, c])
        if len(centres) >= int(0.05 * ((n - 8) * pixel) ** 3):
            break
    vol = gaussian_volume(centres, shape=(n, n, n), sigma=sigma) + rng.normal(0, noise, (n, n, n))
    return centres, make_volume(np.clip(vol, 0, None), pixel)


def test_matched_filter_finds_atoms_plain_local_maxima_miss():
    """A dense particle in noise as strong as the atoms: the brightest plain local maxima are mostly noise;
    correlating with the atom's profile, its width measured from the volume itself, finds the atoms."""
    from aetdask import config

    rng = np.random.default_rng(4)
    centres, vol = _dense_noisy_particle(rng, noise=0.8)
    n, pixel = vol.shape[0], 0.347
    truth = (centres[:, ::-1] - n // 2) * pixel

    def covered(width):
        with config.set({"trace.atom_width": width}):
            found = trace(vol, "Si")
        brightest = found.position.values[: len(centres)]
        d = np.linalg.norm(truth[:, None] - brightest[None], axis=2).min(axis=1)
        return np.mean(d < 0.5), found.attrs["provenance"][-1]["params"]["atom_width"]

    plain, _ = covered(0.0)
    matched, width = covered(None)
    assert width == pytest.approx(1.3 * pixel, rel=0.3)  # the measured profile (Å)
    assert matched > 0.75
    assert plain < 0.65


def test_nearest_distance_is_the_distance_transform_within_its_reach():
    from scipy import ndimage

    from aetdask.kernels.atoms.trace import nearest_distance

    rng = np.random.default_rng(1)
    shape = np.array([30, 35, 40])
    idx = rng.integers(0, shape, size=(150, 3))
    empty = np.ones(shape, bool)
    empty[tuple(idx.T)] = False
    exact = ndimage.distance_transform_edt(empty, sampling=0.347)
    reach = 3.4  # not a whole number of grid steps: the ball reaches grid points no axis-aligned step does
    got = nearest_distance(idx, shape, reach, spacing=0.347)
    within = exact <= reach
    assert np.allclose(got[within], exact[within], rtol=0, atol=1e-12)
    assert np.isinf(got[~within]).all()
