"""The report's 3-D view of the atomic model and its uncertainty figures, checked in the page and, where
Chromium is installed, in a real headless browser."""

import json
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest
import xarray as xr

from aetdask.io import RunStore
from aetdask.report import atom_errors, write_report
from aetdask.report_view import MAX_ATOMS, viewer_data, viewer_html
from aetdask.schema import atoms
from aetdask.simulate import amorphous_particle, linear

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if pathlib.Path("/usr/bin/chromium").exists() else None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """A hand-made run store: a 40-atom Si/Ge particle's projections, a volume of Gaussian blobs at its atoms,
    a 'refined' model 5 pm off the truth with σ per atom, and the truth."""
    truth = amorphous_particle(40, species=["Si", "Ge"], seed=5)
    raw = linear(truth, angles=np.arange(-60.0, 61.0, 20.0), pixel_size=0.5, shape=40, dose=1e5, seed=1).compute()
    grid = raw.x.values
    z, y, x = np.meshgrid(grid, grid, grid, indexing="ij")
    v = np.zeros(z.shape)
    for px, py, pz in truth.position.values:
        v += np.exp(-((x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2) / (2 * 0.5 ** 2))
    volume = xr.DataArray(v.astype("float32"), dims=("z", "y", "x"), coords={"z": grid, "y": grid, "x": grid},
                          name="volume", attrs={"units": "a.u.", "voxel_size": 0.5})
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.03, 0.08, size=(40, 3))
    model = atoms(truth.position.values + sigma * rng.standard_normal((40, 3)), truth.species.values)
    model["position_sigma"] = (("atom", "xyz"), sigma, {"units": "Å"})
    path = tmp_path_factory.mktemp("report") / "small.zarr"
    store = RunStore(path)
    for name, obj in [("raw", raw), ("volume", volume), ("refined", model), ("truth", truth)]:
        store.write(name, obj)
    return path, truth, model


@pytest.fixture(scope="module")
def page(small_store):
    path, _, _ = small_store
    _, html_path = write_report(path, cutoff=0.9)
    return html_path


def _view_data(text: str) -> dict:
    m = re.search(r"<script type='application/json' id='aet-view-data'>(.*?)</script>", text, re.S)
    assert m, "the page holds no 3-D view"
    return json.loads(m.group(1))


def test_the_report_holds_the_3d_view_with_every_atom_and_species(page, small_store):
    _, truth, model = small_store
    text = page.read_text()
    data = _view_data(text)
    sp = model.species.values.astype(str)
    assert data["n_atoms"] == data["n_drawn"] == len(sp) == len(data["species_index"])
    assert sorted(data["species"]) == sorted(set(sp))
    assert data["counts"] == {s: int((sp == s).sum()) for s in set(sp)}
    assert f"data-atoms='{len(sp)}'" in text and f"data-species='{len(set(sp))}'" in text
    q = np.reshape(data["position"], (-1, 3)) / 100  # stored to 0.01 Å
    np.testing.assert_allclose(q, model.position.values, atol=0.0051)
    np.testing.assert_allclose(data["sigma"], 100 * np.sqrt((model.position_sigma.values ** 2).sum(axis=1)), atol=0.051)
    # every atom is matched, so each has an error: its distance to the true atom (after the matching's shift)
    err = np.linalg.norm(atom_errors(model, truth, 0.9), axis=1)
    assert all(e is not None for e in data["error"])
    np.testing.assert_allclose(data["error"], 100 * err, atol=0.051)
    assert "<script src" not in text and "http://" not in text and "https://" not in text  # self-contained


def test_the_report_shows_the_predicted_precision_and_the_uncertainty_figures(page, small_store):
    from aetdask.model.uncertainty import predicted_precision_pm

    _, _, model = small_store
    text = page.read_text()
    assert "predicted precision (no truth needed)" in text
    assert f"{predicted_precision_pm(model.position_sigma.values):.1f} pm" in text
    assert 'alt="slabs through the volume"' in text and 'alt="position uncertainty"' in text


def test_a_large_model_is_subsampled_and_drawn_as_points_and_the_page_says_so():
    rng = np.random.default_rng(1)
    n = MAX_ATOMS + 5000
    data = viewer_data(rng.uniform(-50, 50, size=(n, 3)), np.where(rng.random(n) < 0.5, "Pt", "Co"))
    assert data["n_atoms"] == n and data["n_drawn"] == MAX_ATOMS == len(data["species_index"]) and data["points"]
    assert f"{MAX_ATOMS:,} of {n:,} atoms are drawn" in viewer_html(data)


def _chromium(url, out_dir, *extra):
    profile = out_dir / f"profile-{len(list(out_dir.iterdir()))}"
    profile.mkdir()
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *extra,
           url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
@pytest.mark.parametrize("colour,size", [("species", "uniform"), ("error", "sigma")])
def test_the_3d_view_runs_in_headless_chromium_without_console_errors(page, small_store, tmp_path, colour, size):
    _, _, model = small_store
    n = model.sizes["atom"]
    url = f"{page.resolve().as_uri()}#colour={colour}&size={size}"
    r = _chromium(url, tmp_path, "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    # the renderer writes what it drew into the page and logs one line; anything else on the console is a fault
    section = re.search(r'<section id="aet-view"[^>]*>', r.stdout)
    assert section and f'data-drawn="{n}"' in section.group(0) and "data-error" not in section.group(0), r.stdout[:2000]
    console = [line for line in r.stderr.splitlines() if "CONSOLE" in line and page.name in line]
    drew = f"aetdask-view: drew {n} atoms, colour by {colour}, size by {size}"
    assert [line for line in console if drew in line], r.stderr[-2000:]
    assert [line for line in console if drew not in line] == []
    shot = tmp_path / f"view-{colour}-{size}.png"  # the view is at the top of the page
    r = _chromium(url, tmp_path, f"--screenshot={shot}", "--window-size=1200,900")
    assert r.returncode == 0 and shot.stat().st_size > 10_000, r.stderr[-2000:]


def test_a_support_mask_gives_its_surface_as_the_outline():
    from aetdask.report_view import support_outline

    grid = np.arange(-5.0, 5.5, 0.5)
    z, y, x = np.meshgrid(grid, grid, grid, indexing="ij")
    points = support_outline(x ** 2 + y ** 2 + z ** 2 <= 4.0 ** 2, (grid, grid, grid))
    r = np.linalg.norm(points, axis=1)
    assert r.max() <= 4.0 and r.min() >= 4.0 - 0.5 * np.sqrt(3)  # the sphere's shell, one voxel thick
    data = viewer_data([[0, 0, 0]], ["Pt"], outline=points)
    assert len(data["outline"]) == 3 * len(points)
