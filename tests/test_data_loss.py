"""aetdask never loses a user's data: it replaces only what it can prove it wrote, refuses anything else
unless --overwrite is given, and writes inside a run store only through the store.

Each case runs the real command (on a small in-process cluster where it computes) and checks, for a
refusal, exit status 2, exactly one ``error:`` line that names the file or option, and the victim (file,
folder or run store) byte for byte as it was; with --overwrite, that the replacement happens.
"""

import hashlib
import json
import os
import pathlib
import shutil

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from aetdask.cli import main
from aetdask.errors import InputError
from aetdask.io import RunStore, read_atoms, write_atoms
from aetdask.schema import volume
from aetdask.simulate import amorphous_particle, linear

NT, N, PIXEL = 8, 16, 0.5
THETA = np.arange(NT) * 20.0 - 70.0


@pytest.fixture(scope="module")
def scheduler():
    """A small in-process cluster the computing commands join with --scheduler (fast to start)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as c:
        yield c.scheduler_address


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A finished run store (raw, truth, volume, atoms, run.json, metrics.json) and input files."""
    d = tmp_path_factory.mktemp("template")
    truth = amorphous_particle(60, species=["Si"], seed=0)
    raw = linear(truth, angles=THETA, pixel_size=PIXEL, shape=N, dose=1e4, seed=0).compute(scheduler="sync")
    store = RunStore(d / "run.zarr")
    store.write("raw", raw)
    store.write("truth", truth)
    store.write("volume", volume(np.ones((N, N, N), np.float32), PIXEL))
    store.write("atoms", truth.isel(atom=slice(0, 50)))
    store.write_json("run.json", {"stages": {"raw": {"fingerprint": "0123456789abcdef", "seconds": 0.1}}})
    store.write_json("metrics.json", {"overall": {"identification_pct": 100.0, "precision_pm": 1.0}})
    np.save(d / "tilts.npy", np.random.default_rng(1).poisson(3.0, (NT, N, N)).astype(np.float32))
    np.savetxt(d / "angles.txt", THETA)
    write_atoms(truth, d / "model.xyz")
    return d


@pytest.fixture
def here(template, tmp_path, monkeypatch):
    """A copy of the template in a fresh working directory."""
    for p in template.iterdir():
        (shutil.copytree if p.is_dir() else shutil.copy2)(p, tmp_path / p.name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(path: pathlib.Path) -> dict:
    """Every file at or under ``path``: relative name → SHA-256 of its bytes (a symlink: where it points)."""
    path = pathlib.Path(path)
    if path.is_symlink():
        return {".": "link:" + os.readlink(path)}
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, *words):
    """Exit 2, one ``error:`` line (holding ``words``), no traceback."""
    output = result.output
    assert result.exit_code == 2, output
    assert result.exception is None or isinstance(result.exception, SystemExit), output
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    for word in words:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"
    return errors[0]


# ------------------------------------------------------------------------------------------------- export
def test_export_does_not_replace_the_truth_the_readme_scored_against(here):
    before = snapshot(here / "model.xyz")
    refused(cli("export", "run.zarr", "--atoms", "model.xyz"), "model.xyz", "already exists", "--overwrite",
            "another name")
    assert snapshot(here / "model.xyz") == before
    r = cli("export", "run.zarr", "--atoms", "model.xyz", "--overwrite")
    assert r.exit_code == 0, r.output
    assert read_atoms(here / "model.xyz").sizes["atom"] == 50  # now the store's model


def test_export_writes_a_new_file_and_then_refuses_to_replace_it(here):
    r = cli("export", "run.zarr", "--atoms", "refined.xyz")
    assert r.exit_code == 0, r.output
    assert read_atoms(here / "refined.xyz").sizes["atom"] == 50
    before = snapshot(here / "refined.xyz")
    refused(cli("export", "run.zarr", "--atoms", "refined.xyz", "--product", "truth"), "refined.xyz", "--overwrite")
    assert snapshot(here / "refined.xyz") == before
    assert [p.name for p in here.iterdir() if p.name.startswith(".")] == []  # no temporary left


@pytest.mark.parametrize("target", ["run.zarr/run.json", "run.zarr/metrics.json", "run.zarr/model.xyz",
                                    "run.zarr/raw/x.xyz", "link/run.json", "run.zarr/../run.zarr/new.csv"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_export_never_writes_inside_a_run_store(here, target, overwrite):
    (here / "link").symlink_to(here / "run.zarr")
    before = snapshot(here / "run.zarr")
    refused(cli("export", "run.zarr", "--atoms", target, *(["--overwrite"] if overwrite else [])),
            "--atoms", target, "inside the run store run.zarr", "outside")
    assert snapshot(here / "run.zarr") == before


def test_export_replaces_a_symlink_not_the_file_it_points_to(here):
    (here / "out.xyz").symlink_to(here / "model.xyz")
    before = snapshot(here / "model.xyz")
    refused(cli("export", "run.zarr", "--atoms", "out.xyz"), "out.xyz", "already exists")
    assert snapshot(here / "model.xyz") == before and (here / "out.xyz").is_symlink()
    r = cli("export", "run.zarr", "--atoms", "out.xyz", "--overwrite")
    assert r.exit_code == 0, r.output
    assert not (here / "out.xyz").is_symlink() and snapshot(here / "model.xyz") == before


def test_export_of_an_unknown_format_names_the_file_asked_for(here):
    line = refused(cli("export", "run.zarr", "--atoms", "model.pdbx"), "model.pdbx", "unknown atom-file format")
    assert line.startswith("error: model.pdbx: ")
    assert [p.name for p in here.iterdir() if p.name.startswith(".")] == []


# ------------------------------------------------------------------------------------------------- import / simulate
def test_import_into_a_finished_store_is_refused(here):
    before = snapshot(here / "run.zarr")
    refused(cli("import", "tilts.npy", "--angles", "angles.txt", "--pixel-size", "0.5", "--out", "run.zarr"),
            "run.zarr", "already holds raw, volume, atoms, truth, run.json, metrics.json", "--overwrite", "new --out")
    assert snapshot(here / "run.zarr") == before


def test_import_overwrite_removes_everything_made_from_the_old_data(here):
    (here / "run.zarr" / "notes.txt").write_text("mine")  # not aetdask's: kept
    r = cli("import", "tilts.npy", "--angles", "angles.txt", "--pixel-size", "0.5", "--out", "run.zarr", "--overwrite")
    assert r.exit_code == 0, r.output
    store = RunStore(here / "run.zarr", create=False)
    assert store.products() == ["raw"]
    assert not (here / "run.zarr" / "run.json").exists() and not (here / "run.zarr" / "metrics.json").exists()
    assert (here / "run.zarr" / "notes.txt").read_text() == "mine"
    np.testing.assert_array_equal(store.read("raw").values, np.load(here / "tilts.npy"))
    assert sorted(p.name for p in (here / "run.zarr").iterdir() if p.name.startswith(".")) == [
        ".zattrs", ".zgroup", ".zmetadata"]  # no temporaries, no lock
    assert xr.open_zarr(here / "run.zarr", group="raw")["tilt_series"].shape == (NT, N, N)


def test_simulate_into_a_finished_store_is_refused_and_overwrite_starts_it_afresh(here, scheduler):
    before = snapshot(here / "run.zarr")
    args = ["simulate", "--n-atoms", "20", "--shape", "24", "--seed", "3", "--out", "run.zarr", "--scheduler", scheduler]
    refused(cli(*args), "run.zarr", "already holds", "--overwrite")
    assert snapshot(here / "run.zarr") == before
    r = cli(*args, "--overwrite")
    assert r.exit_code == 0, r.output
    store = RunStore(here / "run.zarr", create=False)
    assert store.products() == ["raw", "truth"]  # no volume, atoms, run.json or metrics.json of the old data
    assert store.read("truth").sizes["atom"] == 20 and store.read("raw").shape == (60, 24, 24)
    assert not (here / "run.zarr" / "metrics.json").exists()


def test_new_input_into_an_empty_or_new_store_needs_no_overwrite(here):
    RunStore(here / "empty.zarr")
    for out in ("empty.zarr", "new.zarr"):
        r = cli("import", "tilts.npy", "--angles", "angles.txt", "--pixel-size", "0.5", "--out", out)
        assert r.exit_code == 0, r.output
        assert RunStore(here / out, create=False).products() == ["raw"]


@pytest.mark.parametrize("out", ["run.zarr/raw", "run.zarr/new.zarr", "run.zarr/analysis/x"])
def test_new_input_is_never_a_store_inside_a_store(here, out):
    before = snapshot(here / "run.zarr")
    refused(cli("import", "tilts.npy", "--angles", "angles.txt", "--pixel-size", "0.5", "--out", out, "--overwrite"),
            f"--out {out}", "inside the run store run.zarr")
    assert snapshot(here / "run.zarr") == before


# ------------------------------------------------------------------------------------------------- run of other data
FAST = "preprocess:\n  denoiser: none\nreconstruct:\n  iterations: 5\nrefine_atoms:\n  iterations: 3\n"


def test_run_of_other_data_into_a_store_with_a_truth_is_refused(here, scheduler):
    """`aetdask run FILE --out STORE` onto a store of other data would keep its truth (and score a model of
    the new data against it): refused before any work, nothing changed."""
    before = snapshot(here / "run.zarr")
    refused(cli("run", "tilts.npy", "--angles", "angles.txt", "--pixel-size", "0.5", "--species", "Si", "--out",
                "run.zarr", "--scheduler", scheduler), "run.zarr", "already holds", "truth", "--overwrite")
    assert snapshot(here / "run.zarr") == before
    assert not (here / "run.zarr-report.png").exists()


def _small_particle_series(seed: int = 5):
    particle = amorphous_particle(10, species=["Si"], seed=seed)
    return linear(particle, angles=THETA, pixel_size=PIXEL, shape=32, dose=1e4, seed=seed).compute(scheduler="sync")


def test_run_overwrite_replaces_everything_made_from_other_data(here, scheduler):
    (here / "fast.yaml").write_text(FAST)
    np.save(here / "other.npy", _small_particle_series().values)
    r = cli("run", "other.npy", "--angles", "angles.txt", "--pixel-size", "0.5", "--species", "Si", "--out",
            "run.zarr", "--overwrite", "--config", "fast.yaml", "--scheduler", scheduler)
    assert r.exit_code == 0, r.output
    store = RunStore(here / "run.zarr", create=False)
    assert "truth" not in store and not (here / "run.zarr" / "metrics.json").exists()
    np.testing.assert_array_equal(store.read("raw").values, np.load(here / "other.npy"))
    assert store.record("volume") is not None  # made now, from the new data


def test_run_of_the_stores_own_data_keeps_its_truth(here, scheduler):
    """The store's own raw tilt series (written by a simulation, without the pipeline's record) is not new
    input: the run goes on and the truth stays."""
    (here / "fast.yaml").write_text(FAST)
    store = RunStore(here / "own.zarr")
    store.write("raw", _small_particle_series(6))
    store.write("truth", amorphous_particle(10, species=["Si"], seed=6))
    r = cli("run", "own.zarr", "--species", "Si", "--config", "fast.yaml", "--scheduler", scheduler)
    assert r.exit_code == 0, r.output
    assert store.read("truth").sizes["atom"] == 10 and "refined" in store


# ------------------------------------------------------------------------------------------------- files beside the store
@pytest.mark.parametrize("name", ["run.zarr-report.png", "run.zarr-report.html"])
def test_report_does_not_replace_a_file_it_did_not_write(here, name):
    (here / name).write_text("my own notes")
    refused(cli("report", "run.zarr"), name, "did not write", "--overwrite")
    assert (here / name).read_text() == "my own notes"
    assert not (here / "run.zarr" / "beside.json").exists()
    r = cli("report", "run.zarr", "--overwrite")
    assert r.exit_code == 0, r.output
    assert (here / name).read_text(errors="replace") != "my own notes"


def test_report_replaces_its_own_files_but_not_after_a_change(here):
    r = cli("report", "run.zarr")
    assert r.exit_code == 0, r.output
    assert cli("report", "run.zarr").exit_code == 0  # its own: replaced
    (here / "run.zarr-report.html").write_text("edited")
    refused(cli("report", "run.zarr"), "run.zarr-report.html", "changed since")
    assert (here / "run.zarr-report.html").read_text() == "edited"
    assert [p.name for p in here.iterdir() if ".tmp-" in p.name] == []


def test_report_never_writes_through_a_link(here):
    (here / "run.zarr-report.png").symlink_to(here / "model.xyz")
    before = snapshot(here / "model.xyz")
    refused(cli("report", "run.zarr"), "run.zarr-report.png")
    r = cli("report", "run.zarr", "--overwrite")
    assert r.exit_code == 0, r.output
    assert snapshot(here / "model.xyz") == before and not (here / "run.zarr-report.png").is_symlink()


def test_run_refuses_a_foreign_report_before_any_work(here, scheduler):
    (here / "run.zarr-report.html").write_text("mine")
    before = snapshot(here / "run.zarr")
    refused(cli("run", "run.zarr", "--species", "Si", "--scheduler", scheduler), "run.zarr-report.html",
            "--overwrite")
    assert snapshot(here / "run.zarr") == before


def test_preprocess_does_not_replace_a_figure_it_did_not_write(here, scheduler):
    RunStore(here / "own.zarr").write("raw", _small_particle_series())
    (here / "own.zarr-preprocessing.png").write_text("mine")
    before = snapshot(here / "own.zarr")
    refused(cli("preprocess", "own.zarr", "--denoiser", "none", "--scheduler", scheduler),
            "own.zarr-preprocessing.png", "--overwrite")
    assert snapshot(here / "own.zarr") == before and (here / "own.zarr-preprocessing.png").read_text() == "mine"
    r = cli("preprocess", "own.zarr", "--denoiser", "none", "--overwrite", "--scheduler", scheduler)
    assert r.exit_code == 0, r.output
    assert (here / "own.zarr-preprocessing.png").read_bytes()[:4] == b"\x89PNG"
    assert cli("preprocess", "own.zarr", "--denoiser", "none", "--scheduler", scheduler).exit_code == 0  # its own


# ------------------------------------------------------------------------------------------------- analyze
def test_analyze_a_run_store_as_the_readme_says(here, scheduler):
    r = cli("analyze", "run.zarr", "--r-max", "6", "--json", "--scheduler", scheduler)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    out = here / "run.zarr" / "analysis"
    assert summary["n_atoms"] == 50  # the store's most refined model: atoms
    assert sorted(p.name for p in out.iterdir()) == [".aetdask-analysis.json", "structure.json", "structure.png",
                                                     "structure.zarr"]  # no structure.zarr.tmp
    saved = xr.open_zarr(out / "structure.zarr")
    assert saved.sizes["atom"] == 50 and json.loads(saved.attrs["summary"])["n_atoms"] == 50
    assert not (here / "run.zarr" / ".aetdask.lock").exists()
    r = cli("analyze", "run.zarr", "--r-max", "6", "--product", "truth", "--scheduler", scheduler)  # its own: replaced
    assert r.exit_code == 0, r.output
    assert json.loads((out / "structure.json").read_text())["n_atoms"] == 60


def test_analyze_does_not_replace_a_structure_zarr_it_did_not_make(here, scheduler):
    mine = here / "mine"
    (mine / "structure.zarr").mkdir(parents=True)
    (mine / "structure.zarr" / "notes.txt").write_text("my own analysis")
    before = snapshot(mine)
    args = ["analyze", "model.xyz", "--out", "mine", "--r-max", "6", "--scheduler", scheduler]
    refused(cli(*args), "mine/structure.zarr", "did not write it", "--overwrite")
    assert snapshot(mine) == before
    r = cli(*args, "--overwrite")
    assert r.exit_code == 0, r.output
    assert not (mine / "structure.zarr" / "notes.txt").exists()
    assert xr.open_zarr(mine / "structure.zarr").sizes["atom"] == 60
    assert not [p for p in mine.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_analyze_overwrite_replaces_links_and_folders_not_what_they_point_to(here, scheduler):
    (here / "keep").mkdir()
    (here / "keep" / "data.txt").write_text("keep me")
    mine = here / "mine"
    mine.mkdir()
    (mine / "structure.zarr").symlink_to(here / "keep")
    (mine / "structure.json").mkdir()
    before, kept = snapshot(mine), snapshot(here / "keep")
    args = ["analyze", "model.xyz", "--out", "mine", "--r-max", "6", "--scheduler", scheduler]
    refused(cli(*args), "mine/structure.json", "did not write it")
    assert snapshot(mine) == before and snapshot(here / "keep") == kept
    r = cli(*args, "--overwrite")
    assert r.exit_code == 0, r.output
    assert snapshot(here / "keep") == kept
    assert not (mine / "structure.zarr").is_symlink() and (mine / "structure.json").is_file()
    assert sorted(p.name for p in mine.iterdir()) == [".aetdask-analysis.json", "structure.json", "structure.png",
                                                      "structure.zarr"]


def test_analyze_replaces_its_own_output_but_not_after_a_change(here, scheduler):
    args = ["analyze", "model.xyz", "--out", "a", "--r-max", "6", "--scheduler", scheduler]
    assert cli(*args).exit_code == 0
    assert cli(*args).exit_code == 0  # its own, unchanged: replaced without --overwrite
    (here / "a" / "structure.json").write_text('{"my": "edits"}')
    before = snapshot(here / "a")
    refused(cli(*args), "a/structure.json", "did not write it (or it changed since)")
    assert snapshot(here / "a") == before


@pytest.mark.parametrize("out", ["run.zarr", "run.zarr/raw", "run.zarr/raw/more"])
def test_analyze_never_writes_inside_a_run_store_but_its_analysis_folder(here, scheduler, out):
    before = snapshot(here / "run.zarr")
    refused(cli("analyze", "model.xyz", "--out", out, "--overwrite", "--scheduler", scheduler),
            f"--out {out}", "inside the run store run.zarr", "run.zarr/analysis")
    assert snapshot(here / "run.zarr") == before


# ------------------------------------------------------------------------------------------------- demo
def test_demo_does_not_delete_a_users_run_store(here, scheduler):
    (here / "demo").mkdir()
    shutil.copytree(here / "run.zarr", here / "demo" / "run.zarr")
    (here / "demo" / "run.zarr" / "notes.txt").write_text("my notes")
    before = snapshot(here / "demo")
    refused(cli("demo", "--out", "demo", "--scheduler", scheduler), "demo/run.zarr", "did not make", "--overwrite")
    assert snapshot(here / "demo") == before


def test_demo_does_not_delete_a_file_or_a_report_it_did_not_make(here, scheduler):
    (here / "d1").mkdir()
    (here / "d1" / "run.zarr").write_text("not a store")
    (here / "d2").mkdir()
    (here / "d2" / "run.zarr-report.html").write_text("my page")
    for d, name in (("d1", "d1/run.zarr"), ("d2", "d2/run.zarr-report.html")):
        before = snapshot(here / d)
        refused(cli("demo", "--out", d, "--scheduler", scheduler), name, "--overwrite")
        assert snapshot(here / d) == before


def test_demo_never_writes_its_report_through_a_link(here, scheduler):
    from aetdask.demo import MARKER

    (here / "d").mkdir()
    store = RunStore(here / "d" / "run.zarr")
    store.write_json(MARKER, {"made_by": "aetdask demo"})  # a demo's store (killed early)
    (here / "d" / "run.zarr-report.html").symlink_to(here / "model.xyz")
    before = snapshot(here / "model.xyz")
    refused(cli("demo", "--out", "d", "--scheduler", scheduler), "d/run.zarr-report.html", "a link")
    assert snapshot(here / "model.xyz") == before


def test_demo_refuses_a_folder_inside_a_run_store(here, scheduler):
    before = snapshot(here / "run.zarr")
    refused(cli("demo", "--out", "run.zarr/demo", "--scheduler", scheduler), "--out run.zarr/demo",
            "inside the run store run.zarr")
    assert snapshot(here / "run.zarr") == before


def test_demo_marks_its_store_and_overwrite_replaces_another(here, scheduler):
    from aetdask.demo import claim, not_the_demos

    (here / "demo").mkdir()
    shutil.copytree(here / "run.zarr", here / "demo" / "run.zarr")
    (here / "small.yaml").write_text("aetdask:\n  demo:\n    atoms: 8\n    shape: 32\n    pixel_size: 0.5\n")
    r = cli("demo", "--out", "demo", "--overwrite", "--config", "small.yaml", "--scheduler", scheduler)
    assert r.exit_code == 0, r.output
    path = here / "demo" / "run.zarr"
    assert RunStore(path, create=False).read("truth").sizes["atom"] == 8
    assert json.loads((path / "demo.json").read_text())["made_by"] == "aetdask demo"
    assert not_the_demos(path) is None
    claim(path)  # the demo's own store: a second demo replaces it without --overwrite
    assert [p.name for p in (here / "demo").iterdir()] and not [p for p in (here / "demo").iterdir()
                                                               if p.name.startswith(".")]
    (path / "notes.txt").write_text("mine")  # the user's notes in it: no longer provably the demo's alone
    assert "notes.txt" in not_the_demos(path)
    before = snapshot(here / "demo")
    refused(cli("demo", "--out", "demo", "--scheduler", scheduler), "demo/run.zarr", "notes.txt")
    assert snapshot(here / "demo") == before
    (path / "notes.txt").unlink()
    r = cli("import", "tilts.npy", "--angles", "angles.txt", "--pixel-size", "0.5", "--out", str(path), "--overwrite")
    assert r.exit_code == 0, r.output  # the user's data in the demo's store: the marker goes with the old products
    assert not (path / "demo.json").exists() and not_the_demos(path) is not None


# ------------------------------------------------------------------------------------------------- campaigns
@pytest.mark.parametrize("name", ["..", ".", "a/../../x", "/tmp/abs", "../up", "a\\b", ".hidden", "", " pad",
                                  "x" * 256, "tab\there"])
def test_campaign_particle_names_stay_inside_out(name):
    from aetdask.simulate.campaign import load_campaign

    spec = {"tilts": {"theta": [0, 90]}, "doses": [1e4],
            "particles": [{"name": name, "generate": {"kind": "rsa", "n": 5, "species": ["Si"]}}]}
    with pytest.raises(InputError, match="particle name"):
        load_campaign(spec)


def test_campaign_cli_refuses_a_name_that_leaves_out(here, scheduler):
    (here / "c.yaml").write_text("tilts: {theta: [0, 90]}\ndoses: [1.0e4]\n"
                                 "particles:\n  - {name: '..', generate: {kind: rsa, n: 5, species: [Si]}}\n")
    before = sorted(p.name for p in here.iterdir())
    refused(cli("simulate", "--campaign", "c.yaml", "--out", "camp", "--scheduler", scheduler),
            "particle name '..'", "inside --out")
    assert sorted(p.name for p in here.iterdir()) == before


def test_campaign_does_not_overwrite_a_campaign_json_it_did_not_write(here, scheduler):
    (here / "c.yaml").write_text("tilts: {theta: [0, 90]}\ndoses: [1.0e4]\n"
                                 "particles:\n  - {name: p, generate: {kind: rsa, n: 5, species: [Si]}}\n")
    (here / "camp").mkdir()
    (here / "camp" / "campaign.json").write_text('{"my": "notes"}')
    before = snapshot(here / "camp")
    refused(cli("simulate", "--campaign", "c.yaml", "--out", "camp", "--scheduler", scheduler),
            "camp/campaign.json", "not the record of a campaign")
    assert snapshot(here / "camp") == before


def test_campaign_refuses_an_out_inside_a_run_store(here, scheduler):
    (here / "c.yaml").write_text("tilts: {theta: [0, 90]}\ndoses: [1.0e4]\n"
                                 "particles:\n  - {name: p, generate: {kind: rsa, n: 5, species: [Si]}}\n")
    before = snapshot(here / "run.zarr")
    refused(cli("simulate", "--campaign", "c.yaml", "--out", "run.zarr/camp", "--scheduler", scheduler),
            "--out run.zarr/camp", "inside the run store run.zarr")
    assert snapshot(here / "run.zarr") == before
