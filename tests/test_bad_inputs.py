"""Bad input on the command line: a clear message, exit 2, no traceback, and nothing already written changed.

Each case runs one ``aetdask`` command against a copy of a small finished run store (raw, truth,
volume, atoms, run.json, metrics.json) wherever the command takes one, and compares every file of
the store (relative path and bytes) before and after. The README's "Bad input" table lists the
same cases with the messages they get.
"""

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import scipy.io
import zarr
from click.testing import CliRunner

from aetdask.cli import main
from aetdask.io import RunStore, write_atoms
from aetdask.schema import volume
from aetdask.simulate import amorphous_particle, linear

NT, N, PIXEL = 8, 16, 0.5
THETA = np.arange(NT) * 20.0 - 70.0


def _truncate(path: pathlib.Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def make_inputs(d: pathlib.Path) -> pathlib.Path:
    """Input files in ``d``, good and bad: 8 projections of 16×16 px."""
    good = np.random.default_rng(0).poisson(3.0, (NT, N, N)).astype(np.float32)
    np.save(d / "tilts.npy", good)
    np.savetxt(d / "angles.txt", THETA)
    np.savetxt(d / "angles7.txt", THETA[:7])
    for name, (k, y, x), value in [("nan", (3, 4, 5), np.nan), ("inf", (2, 1, 1), np.inf), ("neg", (5, 2, 2), -4.0)]:
        bad = good.copy()
        bad[k, y, x] = value
        np.save(d / f"{name}.npy", bad)
    np.save(d / "cut.npy", good)
    _truncate(d / "cut.npy")
    np.save(d / "cut_angles.npy", THETA)
    _truncate(d / "cut_angles.npy")
    scipy.io.savemat(d / "cut.mat", {"proj": np.moveaxis(good, 0, 2)})
    _truncate(d / "cut.mat")
    with h5py.File(d / "cut73.mat", "w") as f:  # MATLAB v7.3 is HDF5
        f["proj"] = good
    _truncate(d / "cut73.mat")
    np.save(d / "rect.npy", good[:, :, :12])
    np.save(d / "empty.npy", good[:0])
    np.save(d / "zeros.npy", np.zeros_like(good))
    np.save(d / "objects.npy", np.array([{"counts": 1}] * NT, dtype=object), allow_pickle=True)
    write_atoms(amorphous_particle(6, species=["Ge"], seed=2), d / "ge.xyz")
    return d


def make_store(path: pathlib.Path) -> pathlib.Path:
    """A small run store holding a product of every kind, as a finished run leaves it."""
    truth = amorphous_particle(6, species=["Si"], seed=0)
    raw = linear(truth, angles=THETA, pixel_size=PIXEL, shape=N, dose=1e4, seed=0).compute(scheduler="sync")
    store = RunStore(path)
    store.write("raw", raw)
    store.write("truth", truth)
    store.write("volume", volume(np.ones((N, N, N), np.float32), PIXEL))
    store.write("atoms", truth)
    store.write_json("run.json", {"stages": {"raw": {"fingerprint": "0123456789abcdef", "seconds": 0.1}}})
    store.write_json("metrics.json", {"overall": {"identification_pct": 100.0, "precision_pm": 1.0}})
    return store.path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("template") / "run.zarr")


@pytest.fixture
def store(finished_store, tmp_path):
    path = tmp_path / "run.zarr"
    shutil.copytree(finished_store, path)
    return path


@pytest.fixture(scope="module")
def scheduler():
    """A small in-process cluster the computing commands join with --scheduler (fast to start)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


def snapshot(root: pathlib.Path) -> dict:
    """Every file under ``root``: relative path → SHA-256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _permissions_bite(tmp_path) -> bool:
    """False where a read-only directory can still be written (root, CAP_DAC_OVERRIDE)."""
    d = tmp_path / "probe"
    d.mkdir()
    d.chmod(0o555)
    try:
        (d / "x").write_text("x")
        return False
    except PermissionError:
        return True
    finally:
        d.chmod(0o755)


def _read_only(tmp_path, store, files):
    if not _permissions_bite(tmp_path):
        pytest.skip("this user writes into read-only directories (root): a permission check cannot fail here")
    for p in [store, *store.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)


def _read_only_parent(tmp_path, store, files):
    if not _permissions_bite(tmp_path):
        pytest.skip("this user writes into read-only directories (root): a permission check cannot fail here")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked").chmod(0o555)


def _newer_version(tmp_path, store, files):
    zarr.open_group(str(store), mode="r+").attrs["aetdask"] = {"store_version": 2, "version": "9.0.0"}


def _cut_run_json(tmp_path, store, files):
    _truncate(store / "run.json")


# (id, command with {d} = input files, {store} = the run store, {tmp} = a scratch directory,
#  {sched} = the scheduler; the words the message must hold; preparation of the store)
CASES = [
    ("NaN in the tilt series", ["import", "{d}/nan.npy", "--angles", "{d}/angles.txt", "--pixel-size", "0.5",
                                "--out", "{store}"], ["nan.npy", "NaN or Inf", "tilt 3", "expected finite"], None),
    ("Inf in the tilt series", ["run", "{d}/inf.npy", "--angles", "{d}/angles.txt", "--pixel-size", "0.5",
                                "--species", "Si", "--out", "{store}", "--scheduler", "{sched}"],
     ["inf.npy", "NaN or Inf", "tilt 2"], None),
    ("negative counts", ["import", "{d}/neg.npy", "--angles", "{d}/angles.txt", "--pixel-size", "0.5",
                         "--out", "{store}"], ["neg.npy", "negative values in count data", "expected counts ≥ 0",
                                               "--units a.u."], None),
    ("7 angles for 8 projections", ["run", "{d}/tilts.npy", "--angles", "{d}/angles7.txt", "--pixel-size", "0.5",
                                    "--species", "Si", "--out", "{store}", "--scheduler", "{sched}"],
     ["tilts.npy", "8 projections but 7 angles", "angles7.txt", "one θ"], None),
    ("truncated .npy", ["import", "{d}/cut.npy", "--angles", "{d}/angles.txt", "--pixel-size", "0.5",
                        "--out", "{store}"], ["cut.npy", "truncated"], None),
    ("truncated .mat (v5)", ["run", "{d}/cut.mat", "--angles", "{d}/angles.txt", "--pixel-size", "0.5",
                             "--species", "Si", "--out", "{store}", "--scheduler", "{sched}"],
     ["cut.mat", "truncated"], None),
    ("truncated .mat (v7.3)", ["import", "{d}/cut73.mat", "--angles", "{d}/angles.txt", "--pixel-size", "0.5",
                               "--out", "{store}"], ["cut73.mat", "v7.3 (HDF5)", "truncated"], None),
    ("truncated angle file", ["simulate", "--n-atoms", "5", "--shape", "16", "--angles", "{d}/cut_angles.npy",
                              "--out", "{store}", "--scheduler", "{sched}"], ["cut_angles.npy", "truncated"], None),
    ("non-square images", ["import", "{d}/rect.npy", "--angles", "{d}/angles.txt", "--pixel-size", "0.5",
                           "--out", "{store}"], ["rect.npy", "images must be square", "16×12"], None),
    ("no projections", ["import", "{d}/empty.npy", "--angles", "{d}/angles.txt", "--pixel-size", "0.5",
                        "--out", "{store}"], ["empty.npy", "empty tilt series", "(0, 16, 16)"], None),
    ("every pixel zero", ["import", "{d}/zeros.npy", "--angles", "{d}/angles.txt", "--pixel-size", "0.5",
                          "--out", "{store}"], ["zeros.npy", "every pixel is zero"], None),
    ("pickled .npy", ["import", "{d}/objects.npy", "--angles", "{d}/angles.txt", "--pixel-size", "0.5",
                      "--out", "{store}"], ["objects.npy", "pickled", "expected a numeric array"], None),
    ("unknown species (run)", ["run", "{store}", "--species", "Xx", "--scheduler", "{sched}"],
     ["species", "unknown species 'Xx'", "element symbol"], None),
    ("unknown species (simulate)", ["simulate", "--n-atoms", "5", "--species", "Xx", "--shape", "16",
                                    "--out", "{store}", "--scheduler", "{sched}"], ["unknown species 'Xx'"], None),
    ("species not the truth's (run)", ["run", "{store}", "--species", "Ge", "--scheduler", "{sched}"],
     ["species", "Ge given", "truth model", "holds Si", "--species Si"], None),
    ("species not the truth's (trace)", ["trace", "{store}", "--species", "Ge", "--scheduler", "{sched}"],
     ["Ge given", "holds Si"], None),
    ("species not the truth's (evaluate)", ["evaluate", "{store}", "--truth", "{d}/ge.xyz", "--cutoff", "0.9"],
     ["run.zarr", "species Si", "ge.xyz", "holds Ge", "same sample"], None),
    ("read-only run store", ["run", "{store}", "--species", "Si", "--scheduler", "{sched}"],
     ["run.zarr", "cannot write here", "Permission denied", "Nothing was changed"], _read_only),
    ("read-only run store (reconstruct)", ["reconstruct", "{store}", "--iterations", "2", "--scheduler", "{sched}"],
     ["run.zarr", "cannot write here", "Permission denied"], _read_only),
    ("read-only output directory", ["import", "{d}/tilts.npy", "--angles", "{d}/angles.txt", "--pixel-size", "0.5",
                                    "--out", "{tmp}/locked/new.zarr"], ["new.zarr", "cannot write here", "locked"],
     _read_only_parent),
    ("store from a newer aetdask", ["run", "{store}", "--species", "Si", "--scheduler", "{sched}"],
     ["run.zarr", "aetdask 9.0.0", "store format 2", "Upgrade aetdask"], _newer_version),
    ("store from a newer aetdask (info)", ["info", "{store}"], ["run.zarr", "store format 2", "Upgrade"],
     _newer_version),
    ("damaged run.json", ["run", "{store}", "--species", "Si", "--scheduler", "{sched}"],
     ["run.json", "not valid JSON", "Remove it"], _cut_run_json),
    ("missing tilt-series file", ["import", "{d}/nothere.npy", "--angles", "{d}/angles.txt", "--pixel-size", "0.5",
                                  "--out", "{store}"], ["TILTS", "nothere.npy", "does not exist"], None),
    ("missing angle file", ["run", "{d}/tilts.npy", "--angles", "{d}/nothere.txt", "--pixel-size", "0.5",
                            "--species", "Si", "--out", "{store}"],
     ["--angles", "nothere.txt", "does not exist"], None),
    ("pixel size ≤ 0", ["import", "{d}/tilts.npy", "--angles", "{d}/angles.txt", "--pixel-size", "0",
                        "--out", "{store}"], ["--pixel-size", "x>0"], None),
    ("negative dose", ["simulate", "--n-atoms", "5", "--dose", "-5", "--out", "{store}"], ["--dose", "x>0"], None),
    ("unknown atom-file format", ["export", "{store}", "--atoms", "{tmp}/model.pdbx"],
     ["model.pdbx", "unknown atom-file format", ".xyz"], None),
]


@pytest.mark.parametrize("command, words, prepare", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input_is_refused_clearly_and_changes_nothing(command, words, prepare, files, store, scheduler, tmp_path):
    if prepare is not None:
        prepare(tmp_path, store, files)
    before = snapshot(store)
    args = [a.format(d=files, store=store, tmp=tmp_path, sched=scheduler) for a in command]
    try:
        result = CliRunner().invoke(main, args)
    finally:
        for p in [store, *store.rglob("*"), tmp_path / "locked"]:
            if p.exists():
                p.chmod(p.stat().st_mode | 0o700)
    output = result.output
    assert result.exit_code == 2, output
    assert result.exception is None or isinstance(result.exception, SystemExit), output
    assert "Traceback" not in output
    for word in words:
        assert word in output, f"{word!r} not in {output!r}"
    assert snapshot(store) == before
    assert not (tmp_path / "locked" / "new.zarr").exists()


def test_a_real_process_exits_2_with_one_line_and_no_traceback(files, tmp_path):
    r = subprocess.run([sys.executable, "-m", "aetdask.cli", "import", str(files / "nan.npy"), "--angles",
                        str(files / "angles.txt"), "--pixel-size", "0.5", "--out", str(tmp_path / "new.zarr")],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: {files / 'nan.npy'}: pixel values contain NaN or Inf (first at tilt 3); expected finite numbers"]
    assert not (tmp_path / "new.zarr").exists()
