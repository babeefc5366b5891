"""Multislice campaigns: dose statistics, resume after a kill, same result on any workers, bad input."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import dask
import numpy as np
import pytest
import yaml
import zarr
from click.testing import CliRunner

from aetdask.cli import main
from aetdask.errors import InputError
from aetdask.io import RunStore
from aetdask.simulate.campaign import load_campaign, run_campaign

# coarse and small: a few seconds per projection on one core
PARAMS = {"pixel_size": 0.5, "shape": 20, "phonons": 2, "slice_thickness": 2.0, "detector": [40.0, 100.0],
          "semiangle": 17.5, "pad": 3.0}


def spec(tilts=(0, 180, 60)):
    return {
        "seed": 5,
        "parameters": dict(PARAMS),
        "tilts": {"theta": list(tilts)},
        "doses": [2.0e4, 2.0e5],
        "defocus": [0.0],
        "particles": [{"name": "pt", "generate": {"kind": "rsa", "n": 6, "species": ["Pt"], "seed": 2}}],
    }


def clean(out, particle="pt", mode="focus"):
    return np.asarray(zarr.open_array(str(pathlib.Path(out) / particle / mode / "clean.zarr"), mode="r")[:])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("campaign") / "ref"
    with dask.config.set(scheduler="synchronous"):
        summary = run_campaign(load_campaign(spec()), out, progress=False, echo=lambda *a: None)
    return out, summary


def test_campaign_writes_projections_and_dose_stores(reference):
    out, summary = reference
    assert summary["projections"] == 3 and summary["simulated_now"] == 3 and summary["dose_stores_written"] == 2
    images = clean(out)
    assert images.shape == (3, 20, 20) and np.all(np.isfinite(images)) and images.max() > 0
    assert len(list((out / "pt" / "focus" / "clean").glob("done-*.json"))) == 3
    for dose in (2.0e4, 2.0e5):
        store = RunStore(out / "pt" / "focus" / f"dose-{dose:.2g}", create=False)
        raw = store.read("raw").values
        assert store.read("truth").sizes["atom"] == 6
        # dose statistics: mean counts = dose · pixel area · detected fraction + background
        expected = dose * 0.5**2 * images.mean() + 1.0
        standard_error = np.sqrt(expected / raw.size)  # Poisson
        assert abs(raw.mean() - expected) < max(0.01 * expected, 4 * standard_error)
        assert np.all(raw == np.round(raw)) and raw.min() >= 0


def test_rerun_skips_everything(reference):
    out, _ = reference
    again = run_campaign(load_campaign(spec()), out, progress=False, echo=lambda *a: None)
    assert again["simulated_now"] == 0 and again["dose_stores_written"] == 0


@pytest.mark.slow
def test_killed_campaign_resumes_to_the_same_result(reference, tmp_path):
    ref, _ = reference
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(spec()))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "aetdask.cli", "simulate", "--campaign", str(tmp_path / "c.yaml"), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    done = out / "pt" / "focus" / "clean"
    deadline = time.time() + 240
    while time.time() < deadline and not list(done.glob("done-*.json")) and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the campaign stopped before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the command and its workers
    proc.wait()
    finished = len(list(done.glob("done-*.json")))
    assert finished >= 1
    result = CliRunner().invoke(main, ["simulate", "--campaign", str(tmp_path / "c.yaml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{finished} already done" in result.output or finished == 3
    # resumed on a 2-worker local cluster, the reference ran synchronously in one process
    np.testing.assert_array_equal(clean(out), clean(ref))
    for dose in (2.0e4, 2.0e5):
        a = RunStore(out / "pt" / "focus" / f"dose-{dose:.2g}", create=False).read("raw").values
        b = RunStore(ref / "pt" / "focus" / f"dose-{dose:.2g}", create=False).read("raw").values
        np.testing.assert_array_equal(a, b)


def test_changed_parameters_are_not_mixed_into_a_store(reference):
    out, _ = reference
    changed = spec()
    changed["parameters"]["phonons"] = 3
    with pytest.raises(InputError, match="different simulation"):
        run_campaign(load_campaign(changed), out, progress=False, echo=lambda *a: None)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.update(bogus=1), "unknown key"),
        (lambda s: s.pop("particles"), "particles"),
        (lambda s: s.update(preset="Si-9"), "unknown preset"),
        (lambda s: s.update(doses=[-1]), "doses"),
        (lambda s: s.update(tilts={"spiral": 3}), "tilt"),
        (lambda s: s["particles"].append({"name": "pt", "generate": {"n": 3}}), "repeated"),
        (lambda s: s["particles"][0].update(generate={"kind": "fcc", "n": 3}), "kind"),
    ],
)
def test_bad_campaigns_are_refused(edit, message):
    s = spec()
    edit(s)
    with pytest.raises(InputError, match=message):
        load_campaign(s)


def test_cli_refuses_a_bad_campaign_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("particles: [\n")
    result = CliRunner().invoke(main, ["simulate", "--campaign", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "YAML" in result.output


def test_campaign_json_records_the_resolved_campaign(reference):
    out, _ = reference
    rec = json.loads((out / "campaign.json").read_text())
    assert rec["doses"] == [2.0e4, 2.0e5] and len(rec["euler"]) == 3 and rec["particles"][0]["atoms"] == 6
