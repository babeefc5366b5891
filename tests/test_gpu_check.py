"""The prepared GPU check's plumbing (benchmarks/gpu_check.py), on the CPU at its smallest sizes.

The check itself runs on a GPU machine (benchmarks/gpu_check.sh); here: its plan, the wheels it
carries, the GPU tests it finds, the JSON it writes as parts finish, and a part stopped at its budget.
"""

import importlib.util
import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plan_shares_the_budget(gpu_check):
    assert abs(sum(gpu_check.PARTS.values()) - 1) < 1e-9
    full = gpu_check.plan(450)
    assert list(full) == list(gpu_check.PARTS) and abs(sum(full.values()) - 450) < 1
    assert gpu_check.plan(100, ["env", "tests"]) == {"env": 14.3, "tests": 85.7}


def test_wheels_are_what_the_gpu_machines_lack(gpu_check):
    wanted = gpu_check.wheels()
    assert all(re.fullmatch(r"[a-z0-9-]+==\S+", w) for w in wanted)
    names = {w.split("==")[0] for w in wanted}
    assert {"dask", "distributed", "zarr", "bm3d", "xarray"} <= names  # xarray: carried at the tested version
    assert not names & {"numpy", "scipy", "numba", "cupy-cuda13x", "aetdask", "pytest"}


def test_gpu_tests_are_found(gpu_check):
    found = gpu_check._gpu_tests()
    assert "tests/test_reconstruct.py::test_cupy_slice_projector_and_resire_match_numpy" in found
    assert not any("without_a_gpu" in t for t in found)  # tests of the GPU-less error messages stay out


def test_compare_models(gpu_check):
    import numpy as np

    from aetdask.schema import atoms

    pos = np.random.default_rng(0).uniform(0, 10, (5, 3))
    a = atoms(pos, ["Si"] * 5)
    assert gpu_check.compare_models(a, atoms(pos[::-1] + 0.001, ["Si"] * 5))["same"]
    assert not gpu_check.compare_models(a, atoms(pos + 0.01, ["Si"] * 5))["same"]  # 1.7 pm
    assert not gpu_check.compare_models(a, atoms(pos[:4], ["Si"] * 4))["same"]


def test_dry_run_writes_the_summary_and_records_a_timeout(gpu_check, tmp_path):
    # refine: a part that finishes; resire_euler, given under a second: stopped, and recorded as such
    rc = gpu_check.main(["--device", "cpu", "--small", "--parts", "refine", "--budget", "60", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    part = summary["parts"]["refine"]
    assert rc == 0 and summary["ok"] and part["status"] == "ok"
    assert part["gpu_path"] is False and part["cpu"]["render_s"] > 0
    rc = gpu_check.main(["--device", "cpu", "--small", "--parts", "resire_euler", "--budget", "0.5",
                         "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert rc == 1 and summary["parts"]["resire_euler"]["status"] == "timeout"
    assert "===== resire_euler" in (tmp_path / "gpu_check.log").read_text()
