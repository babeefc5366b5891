import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import xarray as xr
from click.testing import CliRunner

from aetdask.cli import main
from aetdask.io import RunStore, write_atoms
from aetdask.simulate import amorphous_particle


@pytest.fixture
def runner():
    return CliRunner()


def test_import_info_and_errors(tmp_path, runner):
    arr = np.random.default_rng(0).poisson(2.0, (16, 16, 5)).astype(np.uint8)  # MATLAB (dim1, dim2, angle)
    scipy.io.savemat(tmp_path / "t.mat", {"proj": arr})
    np.savetxt(tmp_path / "angles.txt", np.arange(5) * 30.0)  # five directions over 120°: a tilt series
    out = tmp_path / "run.zarr"
    r = runner.invoke(main, ["import", str(tmp_path / "t.mat"), "--angles", str(tmp_path / "angles.txt"),
                             "--pixel-size", "0.2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    ts = xr.open_zarr(out, group="raw")["tilt_series"]
    np.testing.assert_array_equal(ts.values[2], arr[:, :, 2])
    r = runner.invoke(main, ["info", str(out), "--json"])
    info = json.loads(r.output)
    assert info["products"]["raw"]["shape"] == [5, 16, 16] and info["products"]["raw"]["pixel_size"] == 0.2

    np.savetxt(tmp_path / "bad.txt", np.arange(4) * 30.0)
    r = runner.invoke(main, ["import", str(tmp_path / "t.mat"), "--angles", str(tmp_path / "bad.txt"),
                             "--pixel-size", "0.2", "--out", str(tmp_path / "x.zarr")])
    assert r.exit_code == 2 and "5 projections but 4 angles" in r.output
    assert "Traceback" not in r.output


def test_evaluate_json_schema(tmp_path, runner):
    truth = amorphous_particle(60, species=["Si", "Ge"], seed=1)
    traced = truth.isel(atom=slice(3, None))
    write_atoms(truth, tmp_path / "gt.xyz")
    write_atoms(traced, tmp_path / "traced.csv")
    r = runner.invoke(main, ["evaluate", str(tmp_path / "traced.csv"), "--truth", str(tmp_path / "gt.xyz"),
                             "--cutoff", "0.9", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    keys = {"truth", "traced", "matched", "identification_pct", "precision_pm"}
    assert set(out["species"]) == {"Si", "Ge"} and keys <= set(out["overall"])
    assert out["overall"]["matched"] == 57 and out["overall"]["truth"] == 60
    assert out["strict"]["false_negatives"] == 3 and out["strict"]["false_positives"] == 0
    assert {"true_positives", "false_positives", "false_negatives", "precision_pm"} <= set(out["strict"])

    store = RunStore(tmp_path / "run.zarr")
    store.write("atoms", traced)
    r = runner.invoke(main, ["evaluate", str(store.path), "--truth", str(tmp_path / "gt.xyz"), "--cutoff", "0.9"])
    assert r.exit_code == 0 and "overall" in r.output
    assert store.read_json("metrics.json")["overall"]["matched"] == 57


def test_unreadable_atoms_file_is_a_clear_error(tmp_path, runner):
    (tmp_path / "gt.txt").write_text("% 2\n1 0 0 0\n1 2.0 0\n")
    r = runner.invoke(main, ["evaluate", str(tmp_path / "gt.txt"), "--truth", str(tmp_path / "gt.txt"),
                             "--cutoff", "0.9"])
    assert r.exit_code == 2 and "gt.txt" in r.output and "Traceback" not in r.output


@pytest.mark.slow
def test_simulate_and_demo_end_to_end(tmp_path):
    """The real commands, on the embedded local cluster (worker processes)."""
    cmd = [sys.executable, "-m", "aetdask.cli"]
    r = subprocess.run(cmd + ["simulate", "--n-atoms", "40", "--shape", "32", "--dose", "1e4",
                              "--out", str(tmp_path / "sim.zarr")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Dask dashboard: http" in r.stdout
    store = RunStore(tmp_path / "sim.zarr", create=False)
    assert store.products() == ["raw", "truth"] and store.read("raw").shape == (60, 32, 32)
    r = subprocess.run(cmd + ["demo", "--out", str(tmp_path / "demo")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "demo" / "run.zarr-report.png").stat().st_size > 50_000
    assert (tmp_path / "demo" / "run.zarr-report.html").exists()
    assert RunStore(tmp_path / "demo" / "run.zarr", create=False).products() == [
        "raw", "preprocessed", "volume", "candidates", "atoms", "refined", "truth"]
    metrics = json.loads((tmp_path / "demo" / "run.zarr" / "metrics.json").read_text())
    print("demo:", metrics["overall"], metrics["strict"]["false_positives"], metrics["strict"]["false_negatives"])
    assert metrics["overall"]["identification_pct"] >= 98.0 and metrics["overall"]["precision_pm"] <= 20.0
    assert metrics["strict"]["false_positives"] <= 2


def test_bad_parameter_file_is_a_clear_error(tmp_path, runner):
    f = tmp_path / "params.yaml"
    f.write_text("aetdask:\n  simulate:\n    energie: 300000.0\n")
    r = runner.invoke(main, ["demo", "--out", str(tmp_path / "d"), "--config", str(f)])
    assert r.exit_code == 2
    assert "unknown aetdask configuration key 'simulate.energie'" in r.output and "simulate.energy" in r.output


@pytest.fixture(scope="module")
def scheduler():
    """One in-process cluster the commands run as subprocesses join with --scheduler: starting a local cluster
    of worker processes per command was most of these tests' time."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


def test_reconstruct_command_writes_the_volume(tmp_path, scheduler):
    cmd = [sys.executable, "-m", "aetdask.cli"]
    store = str(tmp_path / "r.zarr")
    r = subprocess.run(cmd + ["simulate", "--n-atoms", "30", "--shape", "32", "--out", store],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(cmd + ["reconstruct", store, "--iterations", "60", "--json", "--scheduler", scheduler],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["method"] == "resire" and out["iterations"] == 60 and out["r_factor"] < 0.05 and out["seconds"] > 0
    vol = xr.open_zarr(store, group="volume")["volume"]
    assert vol.shape == (32, 32, 32) and vol.attrs["voxel_size"] == 0.3


def test_each_stage_by_its_own_command_prints_one_json_object_and_info_names_the_result(tmp_path, scheduler):
    cmd = [sys.executable, "-m", "aetdask.cli"]
    store = str(tmp_path / "r.zarr")
    np.savetxt(tmp_path / "angles.txt", np.arange(0.0, 180.0, 6.0))  # 30 projections: every stage's work halved
    r = subprocess.run(cmd + ["simulate", "--n-atoms", "20", "--shape", "48", "--dose", "1e5", "--out", store,
                              "--angles", str(tmp_path / "angles.txt")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (tmp_path / "fast.yaml").write_text("refine_atoms:\n  iterations: 5\n")
    for command, product in (["preprocess", "--denoiser", "none"], None), (["reconstruct", "--iterations", "60"], None), \
            (["trace", "--species", "Si"], "candidates"), (["classify"], "atoms"), \
            (["refine", "--config", str(tmp_path / "fast.yaml")], "refined"):
        r = subprocess.run(cmd + [command[0], store, *command[1:], "--json", "--scheduler", scheduler],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.strip().splitlines()
        assert len(lines) == 1, r.stdout  # nothing but the object
        out = json.loads(lines[0])
        if product:
            assert out["product"] == product and out["seconds"] > 0 and isinstance(out["values"], dict)
    assert 14 <= out["values"]["atoms"] <= 30  # of the 20 simulated
    r = subprocess.run(cmd + ["info", store, "--json"], capture_output=True, text=True, timeout=300)
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["result"] == "refined" and all(e["current"] for e in info["products"].values())


def test_preprocess_command(tmp_path, scheduler):
    cmd = [sys.executable, "-m", "aetdask.cli"]
    store = str(tmp_path / "p.zarr")
    np.savetxt(tmp_path / "angles.txt", np.arange(0.0, 180.0, 6.0))
    r = subprocess.run(cmd + ["simulate", "--n-atoms", "30", "--shape", "64", "--dose", "2e4", "--out", store,
                              "--angles", str(tmp_path / "angles.txt")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(cmd + ["preprocess", store, "--denoiser", "nlm", "--json", "--scheduler", scheduler],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["denoiser"] == "nlm" and out["projections"] == 30
    assert 0.8 < out["noise_alpha_median"] < 1.25  # Poisson counts: gain ≈ 1
    pre = xr.open_zarr(store, group="preprocessed")
    assert {"shift_y", "shift_x", "scale", "noise_alpha"} <= set(pre.coords)
    assert pathlib.Path(out["figure"]).stat().st_size > 10_000


@pytest.mark.parametrize("args,words", [
    (["simulate", "--dose", "abc"], ["aetdask simulate", "--dose", "abc"]),
    (["run"], ["aetdask run", "TILTS"]),
    (["bogus"], ["aetdask", "bogus"]),
    (["evaluate", "--no-such-option"], ["aetdask evaluate", "--no-such-option"]),
])
def test_usage_errors_are_one_error_line(runner, args, words):
    r = runner.invoke(main, args, prog_name="aetdask")
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert all(w in lines[0] for w in words) and "--help" in lines[0], lines[0]


def test_help_and_version_still_exit_zero(runner):
    assert runner.invoke(main, ["--help"]).exit_code == 0
    assert runner.invoke(main, ["run", "--help"]).exit_code == 0
    r = runner.invoke(main, ["--version"])
    assert r.exit_code == 0 and "aetdask" in r.output
