"""Structure analysis end to end: known answers, chunked = whole, the seed models, the CLI."""

import json
import pathlib

import numpy as np
import pytest
from click.testing import CliRunner

from aetdask.analyze import analyze, rdf
from aetdask.analyze.radial import peaks_and_valleys
from aetdask.cli import main
from aetdask.io import write_atoms
from aetdask.kernels.structure import rdf as rdf_k
from aetdask.schema import atoms as make_atoms
from aetdask.simulate.amorphous import dense_particle

SEED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference" / "seed-paper"


def fcc_cluster(cells=6, a=4.0):
    g = np.arange(-cells, cells + 1)
    cube = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3).astype(float)
    pts = np.concatenate([cube, cube + [0.5, 0.5, 0], cube + [0.5, 0, 0.5], cube + [0, 0.5, 0.5]]) * a
    return pts[np.linalg.norm(pts, axis=1) <= cells * a]  # a spherical fcc crystallite


def test_ideal_gas_rdf_is_one():
    rng = np.random.default_rng(3)
    x = rng.uniform(-20, 20, size=(30000, 3))  # uniform points in a 40 Å cube
    model = make_atoms(x, "Ar")
    res = rdf(model, r_max=15.0, dr=0.25, pad=0.0).compute()
    g = res.g_total.values
    r = res.r.values
    for lo in (1, 5, 10):
        shell = (r > lo) & (r < lo + 4)
        assert abs(np.mean(g[shell]) - 1.0) < 0.02, (lo, np.mean(g[shell]))
    # the periodic-box normalisation would fall with r; the finite-particle one does not
    assert abs(np.mean(g[(r > 1) & (r < 3)]) - np.mean(g[(r > 12) & (r < 15)])) < 0.03


def test_fcc_crystal_known_answers():
    a = 4.0
    pos = fcc_cluster(6, a)
    res = analyze(make_atoms(pos, "Cu"), r_max=8.0, ring_max=6)
    s = res.attrs["summary"]
    assert a / np.sqrt(2) < s["cutoff"] < a  # the first valley lies between the first two shells
    assert s["rdf"]["total"]["first_peak"] == pytest.approx(a / np.sqrt(2), abs=0.05)
    deep = np.linalg.norm(pos, axis=1) < 6 * a - 2 * a  # atoms with complete neighbourhoods
    assert np.allclose(res.bond_order.values[deep], 1.0, atol=1e-6)
    assert np.all(res.crystalline.values[deep])
    assert np.all(res.neighbors.values[deep] == 12)
    interior = res.voronoi_interior.values & deep
    assert interior.sum() > 100
    assert np.all(res.voronoi_index.values[interior] == [0, 12, 0, 0])
    assert np.allclose(res.voronoi_volume.values[interior], a**3 / 4)
    assert np.allclose(res.density.values[interior], 4 * 63.546 / a**3 * 1.66053906660, rtol=1e-3)
    assert s["motifs"]["pentagonal_bipyramids"] == 0  # fcc: tetrahedra never share an edge in a ring
    assert s["bond_order"]["largest_nucleus"] == len(pos)  # one crystal
    assert s["rings"]["histogram"] == {"3": s["rings"]["rings"]}  # close packing: triangles only


def test_chunked_equals_whole():
    model = dense_particle(6000, species=("Cu", "Zr"), fractions=(0.6, 0.4), seed=4, steps=120)
    kw = dict(r_max=8.0, ring_max=8)
    whole = analyze(model, block=1000.0, **kw)
    chunked = analyze(model, block=10.0, **kw)
    from aetdask.analyze.blocks import spatial_blocks

    assert len(spatial_blocks(model.position.values, 10.0, 4 * whole.attrs["summary"]["cutoff"])) > 1
    for name in ("q4", "q6", "bond_order"):  # freud works in float32, on the same coordinates in every block
        np.testing.assert_array_equal(chunked[name].values, whole[name].values, err_msg=name)
    for name in ("voronoi_volume", "density", "five_edged_fraction"):
        np.testing.assert_allclose(chunked[name].values, whole[name].values, rtol=1e-9, equal_nan=True, err_msg=name)
    for name in ("neighbors", "voronoi_index", "voronoi_coordination", "voronoi_interior", "crystalline",
                 "pb_count", "icosahedron", "ring_count", "motif_fraction", "g", "g_total"):
        np.testing.assert_array_equal(chunked[name].values, whole[name].values, err_msg=name)
    for name in ("network_size", "network_atoms", "tetrahedron_delta"):
        np.testing.assert_array_equal(chunked[name].values, whole[name].values, err_msg=name)
    np.testing.assert_allclose(chunked.network_length.values, whole.network_length.values, rtol=1e-12)
    a, b = chunked.attrs["summary"], whole.attrs["summary"]
    for key in ("motifs", "rings", "voronoi", "coordination", "rdf"):
        assert a[key] == b[key], key
    # a dense random packing is polytetrahedral: pentagonal bipyramids in networks
    assert b["motifs"]["pentagonal_bipyramids"] > 100 and b["motifs"]["largest_network"] > 10
    assert b["bond_order"]["close_packed"]


def test_bad_parameters_are_refused():
    model = dense_particle(50, seed=0, steps=10)
    with pytest.raises(Exception, match="unknown parameter"):
        analyze(model, bogus=1)
    with pytest.raises(Exception, match="ring_max"):
        analyze(model, ring_max=2)
    with pytest.raises(Exception, match="at least 5 atoms"):
        analyze(make_atoms(np.zeros((3, 3)) + np.arange(3)[:, None] * 2.5, "Si"))


def test_cli_analyze(tmp_path):
    model = dense_particle(800, seed=2, steps=60)
    path = write_atoms(model, tmp_path / "pd.xyz")
    result = CliRunner().invoke(main, ["analyze", str(path), "--json", "--r-max", "8"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["n_atoms"] == 800 and summary["species"] == {"Pd": 800}
    out = tmp_path / "pd.xyz.analysis"
    assert (out / "structure.png").stat().st_size > 10_000
    assert json.loads((out / "structure.json").read_text())["cutoff"] == summary["cutoff"]
    import xarray as xr

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the run store's format (Zarr v2): no unstable string type, no warnings
        saved = xr.open_zarr(out / "structure.zarr")
    assert (out / "structure.zarr" / ".zgroup").is_file()
    assert saved.sizes["atom"] == 800 and json.loads(saved.attrs["summary"])["n_atoms"] == 800
    text = CliRunner().invoke(main, ["analyze", str(path), "--r-max", "8", "--out", str(tmp_path / "o")])
    assert text.exit_code == 0 and "first-shell cutoff" in text.output
    bad = tmp_path / "bad.xyz"
    bad.write_text("2\n\nPd 0 0 0\nPd 0 0 nan\n")
    result = CliRunner().invoke(main, ["analyze", str(bad)])
    assert result.exit_code == 2 and "error" in result.output


@pytest.mark.skipif(not SEED.exists(), reason="seed data not present")
def test_seed_silica_model():
    from aetdask.io import read_atoms

    model = read_atoms(SEED / "model_GT.mat")
    res = analyze(model)
    s = res.attrs["summary"]
    assert s["rdf"]["O-Si"]["first_peak"] == pytest.approx(1.62, abs=0.05)
    assert 3.8 < s["coordination"]["Si"]["O"] < 4.0  # the surface lowers the mean below 4
    inner = np.linalg.norm(model.position.values - model.position.values.mean(0), axis=1) < 20.0
    si = (model.species.values == "Si") & inner
    assert np.mean(res.neighbors.values[si]) == pytest.approx(4.0, abs=0.1)  # a few 5-fold Si in the MD model
    assert s["rings"]["bonds"] == ["O-Si"] and s["rings"]["alternating_fraction"] == 1.0
    assert 2.0 < s["density"]["mean_interior"] < 2.6  # g/cm³: amorphous silica is 2.2


def test_peaks_of_a_two_species_rdf():
    model = dense_particle(1500, species=("Cu", "Zr"), seed=1, steps=80)
    res = rdf(model, r_max=8.0).compute()
    ext = peaks_and_valleys(res)
    d = {k: v["first_peak"] for k, v in ext.items()}
    # peaks follow the pair diameters: Cu–Cu < Cu–Zr < Zr–Zr
    assert d["Cu-Cu"] < d["Cu-Zr"] < d["Zr-Zr"]
    assert rdf_k.first_peak_and_valley(res.r.values, res.g_total.values)[1] == ext["total"]["first_valley"]
