"""Fault tolerance (DESIGN §8): a killed worker is retried by Dask, a killed run resumes, same result.

One small cluster of two single-threaded worker processes (with nannies, which restart a dead
worker) serves every test, and one uninterrupted run of the pipeline on a 12-atom Pt particle is
the reference. A worker is killed in the middle of a stage by a tripwire: the stage's kernel is
wrapped on every worker so that the first call anywhere SIGKILLs its own worker process (a
marker file, created atomically, says which worker died), so the kill lands inside a running
task on every run, with no timing to race against.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import dask
import numpy as np
import pytest
import yaml
from distributed import Client, LocalCluster

import aetdask.pipeline as pipeline
from aetdask import config
from aetdask.cluster import worker_environment
from aetdask.io import RunStore
from aetdask.simulate import amorphous_particle, linear

#: Small and fast, but a real run: every atom is found (100 %, a few pm) with these settings.
PARAMS = {"preprocess": {"denoiser": "none"}, "reconstruct": {"iterations": 30},
          "refine_atoms": {"iterations": 20, "select": False}}
FLAT = {f"{group}.{key}": value for group, values in PARAMS.items() for key, value in values.items()}
PIXEL = 0.35


def wait_for(condition, timeout, what, interval=0.02):
    """Poll ``condition()`` until it is truthy; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def client():
    # On a busy machine a restarted worker can take longer to come back than the 15 s after which
    # a LocalCluster gives up on a lost worker for good; give it time.
    with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environment(),
                          "distributed.deploy.lost-worker-timeout": "300s"}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=50)
        with cluster, Client(cluster) as c:
            yield c


@pytest.fixture(scope="module")
def tilts():
    truth = amorphous_particle(12, species=["Pt"], seed=4)
    return linear(truth, angles=np.arange(0.0, 180.0, 12.0), pixel_size=PIXEL, shape=36, dose=3e5,
                  seed=2).compute(scheduler="sync")


def run_pipeline(tilts, out):
    """``aetdask.pipeline.run`` with the test's parameters, less the report (a figure: seconds, and not
    what these tests are about; the command-line test below writes it)."""
    with config.set(FLAT), pytest.MonkeyPatch.context() as mp:
        mp.setattr("aetdask.report.write_report", lambda store, **_: (out.with_suffix(".png"), out.with_suffix(".html")))
        return pipeline.run(tilts, out, ["Pt"], progress=False, echo=lambda *a: None)


@pytest.fixture(scope="module")
def reference(client, tilts, tmp_path_factory):
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run.zarr"
    assert run_pipeline(tilts, out)["atoms"] == {"Pt": 12}
    return RunStore(out, create=False)


def same_model(a, b):
    assert a.sizes["atom"] == b.sizes["atom"] > 0
    assert a.species.values.tolist() == b.species.values.tolist()
    np.testing.assert_allclose(a.position.values, b.position.values, rtol=0, atol=1e-6)


def same_product(a, b):
    if hasattr(a, "data_vars"):
        same_model(a, b)
    else:
        np.testing.assert_array_equal(a.values, b.values)


# ------------------------------------------------------------------ a worker killed mid-stage
def _install_tripwire(module, name, marker):
    """On a worker: the first call of ``module.name`` anywhere SIGKILLs the calling worker process."""
    import importlib

    mod = importlib.import_module(module)
    real = getattr(mod, name)

    def tripwire(*args, **kwargs):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:  # someone died already: behave
            return real(*args, **kwargs)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(mod, name, tripwire)


def _two_workers(client):
    return len(client.scheduler_info()["workers"]) == 2


@pytest.mark.parametrize("stage, kernel", [
    pytest.param("preprocessed", ("aetdask.kernels.preprocessing.background", "fit_background"), id="preprocessing"),
    pytest.param("volume", ("aetdask.kernels.tomography.iterative", "resire"), id="reconstruction"),
    pytest.param("candidates", ("aetdask.kernels.atoms.trace", "fit_peaks"), id="tracing"),
])
def test_worker_killed_mid_stage_is_retried_with_the_same_result(stage, kernel, client, tilts, reference, tmp_path):
    out = tmp_path / "run.zarr"
    shutil.copytree(reference.path, out)
    shutil.rmtree(out / stage)  # this stage and every one after it run again
    wait_for(lambda: _two_workers(client), 180, "two workers")
    before = client.run(os.getpid)
    marker = tmp_path / "killed"
    client.run(_install_tripwire, *kernel, str(marker))

    summary = run_pipeline(tilts, out)

    victim = int(marker.read_text())  # a worker did die, inside the stage's kernel
    assert victim in before.values()
    wait_for(lambda: _two_workers(client) and victim not in client.run(os.getpid).values(), 180,
             "the nanny to restart the killed worker")
    redone = pipeline.STAGES[pipeline.STAGES.index(stage):]
    assert [k for k, s in summary["stages"].items() if not s["resumed"]] == list(redone)
    store = RunStore(out, create=False)
    same_product(store.read(stage), reference.read(stage))
    same_model(store.read("refined"), reference.read("refined"))


# ------------------------------------------------------------------ a killed `aetdask run` resumes
def _recorded(store_path):
    """Stages run.json records as finished (run.json is replaced atomically: never half-read)."""
    try:
        return list(RunStore(store_path, create=False).read_json("run.json")["stages"])
    except Exception:  # noqa: BLE001 - not there yet
        return []


def _run_until(command, log, store_path, signum=None, after=None):
    """Run ``command``; with ``signum``, send it once run.json records ``after``. Returns the exit code."""
    with open(log, "w") as f:
        proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, text=True)
    try:
        if signum is not None:
            wait_for(lambda: after in _recorded(store_path) or proc.poll() is not None, 300, f"{after} to finish")
            assert proc.poll() is None, f"the run ended before it could be interrupted:\n{log.read_text()}"
            proc.send_signal(signum)
        return proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _stages(log):
    """{stage: kept?} for every stage the run's output announces ("[i/6] label[: done before, kept ...]")."""
    lines = [line for line in log.read_text().splitlines() if line.startswith("[")]
    return {name: "done before, kept" in line for name, line in zip(pipeline.STAGES, lines)}


def test_interrupted_run_resumes_from_the_last_finished_stage(client, tilts, reference, tmp_path):
    np.save(tmp_path / "tilts.npy", tilts.values)
    np.savetxt(tmp_path / "angles.txt", tilts.theta.values)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    out = tmp_path / "run.zarr"
    command = [sys.executable, "-m", "aetdask.cli", "run", str(tmp_path / "tilts.npy"), "--angles",
               str(tmp_path / "angles.txt"), "--pixel-size", str(PIXEL), "--species", "Pt", "--out", str(out),
               "--config", str(tmp_path / "params.yaml"), "--scheduler", client.scheduler.address]
    logs = [tmp_path / f"run{i}.log" for i in range(3)]

    # Ctrl-C once preprocessing is recorded as finished ...
    assert _run_until(command, logs[0], out, signal.SIGINT, after="preprocessed") != 0
    assert _recorded(out)[:2] == ["raw", "preprocessed"]
    # ... then SIGKILL once reconstruction is: the finished stages are kept, not redone
    assert _run_until(command, logs[1], out, signal.SIGKILL, after="volume") == -signal.SIGKILL
    assert list(_stages(logs[1]).items())[:3] == [("raw", True), ("preprocessed", True), ("volume", False)]
    finished = _recorded(out)
    assert finished[:3] == ["raw", "preprocessed", "volume"] and "refined" not in finished, finished

    # what a kill can leave of the next stage: a half-written group under its temporary name, and a
    # finished-looking product that run.json does not record (killed between the two writes)
    following = pipeline.STAGES[len(finished)]
    half = out / f".{following}.tmp-deadbeef"
    shutil.copytree(reference.path / following, half)
    for chunk in [p for p in half.rglob("*") if p.is_file() and not p.name.startswith(".")]:
        chunk.write_bytes(chunk.read_bytes()[:3])
    bogus = reference.read(following)
    RunStore(out, create=False).write(following, bogus.isel(atom=[0]) if "atom" in bogus.dims else bogus * 0 + 1)

    assert _run_until(command, logs[2], out) == 0, logs[2].read_text()
    assert _stages(logs[2]) == {name: name in finished for name in pipeline.STAGES}
    done = RunStore(out, create=False)
    assert list(done.read_json("run.json")["stages"]) == list(pipeline.STAGES)
    same_product(done.read(following), reference.read(following))
    same_model(done.read("refined"), reference.read("refined"))
