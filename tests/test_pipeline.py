import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.spatial.transform import Rotation

import aetdask.pipeline as pipeline
from aetdask import config
from aetdask.cli import main
from aetdask.evaluate import evaluate
from aetdask.geometry import projection_matrices
from aetdask.io import RunStore, read_atoms
from aetdask.simulate import amorphous_particle, linear

from ._util import needs_seed


@pytest.fixture(scope="module")
def two_species(tmp_path_factory):
    """A 50-atom Si/Ge particle, 60 projections at high dose, run end to end."""
    truth = amorphous_particle(50, species=["Si", "Ge"], seed=3)
    ts = linear(truth, angles=np.arange(0.0, 180.0, 3.0), pixel_size=0.3, shape=72, dose=1e6, seed=1).compute()
    out = tmp_path_factory.mktemp("run") / "two.zarr"
    lines = []
    summary = pipeline.run(ts, out, ["Si", "Ge"], progress=False, echo=lines.append)
    return truth, ts, out, summary, lines


def test_two_species_particle_is_traced_completely_and_correctly(two_species):
    truth, _, out, summary, lines = two_species
    store = RunStore(out, create=False)
    assert store.products() == ["raw", "preprocessed", "volume", "candidates", "atoms", "refined"]
    result = evaluate(store.read("refined"), truth, 0.9)
    print("two species:", result["overall"], {s: r["precision_pm"] for s, r in result["species"].items()})
    assert result["overall"]["identification_pct"] == 100.0
    for r in result["species"].values():  # the paper's metric matches same-species atoms only
        assert r["identification_pct"] == 100.0 and r["traced"] == r["truth"]
    assert result["strict"]["false_positives"] == 0 and result["strict"]["false_negatives"] == 0
    assert summary["atoms"] == {"Si": 24, "Ge": 26}
    assert all(not s["resumed"] for s in summary["stages"].values())
    assert any("[6/6]" in line for line in lines)


def test_report_files_are_written(two_species):
    _, _, out, summary, _ = two_species
    png, page = (out.parent / f"{out.name}-report.png"), (out.parent / f"{out.name}-report.html")
    assert [str(png), str(page)] == summary["report"]
    assert png.stat().st_size > 50_000
    text = page.read_text()
    assert "data:image/png;base64," in text and "preprocessed" in text


def test_each_product_records_what_it_was_made_from_and_a_stage_run_alone_leaves_later_ones_stale(two_species,
                                                                                                   tmp_path):
    import shutil

    from aetdask.stages import MODEL_PRODUCTS, chain, is_current, result_model

    _, _, out, _, _ = two_species
    store = RunStore(shutil.copytree(out, tmp_path / "run.zarr"), create=False, writable=True)
    records = [store.record(st.product) for st in chain()]
    for before, after in zip(records, records[1:]):
        assert after["upstream"] == before["fingerprint"]
    assert result_model(store) == "refined" and all(is_current(store, p) for p in MODEL_PRODUCTS)
    with config.set({"classify.seed": 7}):
        pipeline.run_stage(store, "classify", ["Si", "Ge"], progress=False, echo=lambda *a: None)
    assert not is_current(store, "refined") and is_current(store, "atoms")
    assert result_model(store) == "atoms"  # the refined model is of the atoms before
    from aetdask.evaluate import load_model

    assert load_model(store.path).identical(store.read("atoms"))


def test_rerun_resumes_and_a_changed_parameter_redoes_only_what_it_affects(two_species, monkeypatch):
    _, ts, out, _, _ = two_species
    calls = []
    import aetdask.model as model

    real_refine, real_trace = model.refine_atoms, model.trace
    monkeypatch.setattr(model, "refine_atoms", lambda *a, **k: calls.append("refine") or real_refine(*a, **k))
    monkeypatch.setattr(model, "trace", lambda *a, **k: calls.append("trace") or real_trace(*a, **k))
    again = pipeline.run(ts, out, ["Si", "Ge"], progress=False, echo=lambda *a: None)
    assert all(s["resumed"] for s in again["stages"].values()) and calls == []
    with config.set({"refine_atoms.iterations": 20}):
        changed = pipeline.run(ts, out, ["Si", "Ge"], progress=False, echo=lambda *a: None)
    assert [k for k, s in changed["stages"].items() if not s["resumed"]] == ["refined"] and calls == ["refine"]
    run_json = RunStore(out, create=False).read_json("run.json")
    assert run_json["stages"]["refined"]["params"]["refine_atoms.iterations"] == 20


def cli_run(tmp_path, angles, params, *flags):
    """`aetdask run` from files on a 12-atom Pt series (30 projections of 40² px at 0.35 Å, 3×10⁵ e⁻/Å²)
    simulated at the true θ, given ``angles``; returns the truth, the runner, the store and the result."""
    truth = amorphous_particle(12, species=["Pt"], seed=4)
    ts = linear(truth, angles=np.arange(0.0, 180.0, 6.0), pixel_size=0.35, shape=40, dose=3e5, seed=2).compute()
    np.save(tmp_path / "tilts.npy", ts.values)
    np.savetxt(tmp_path / "angles.txt", angles)
    (tmp_path / "params.yaml").write_text(params)
    runner = CliRunner()
    store = str(tmp_path / "run.zarr")
    r = runner.invoke(main, ["run", str(tmp_path / "tilts.npy"), "--angles", str(tmp_path / "angles.txt"),
                             "--pixel-size", "0.35", "--species", "Pt", "--out", store, "--config",
                             str(tmp_path / "params.yaml"), *flags])
    assert r.exit_code == 0, r.output
    return truth, runner, store, r


@pytest.mark.slow
def test_cli_run_evaluate_export_report(tmp_path):
    truth, runner, store, r = cli_run(tmp_path, np.arange(0.0, 180.0, 6.0), "preprocess:\n  denoiser: none\n", "--json")
    from aetdask.io import write_atoms

    write_atoms(truth, tmp_path / "truth.xyz")
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["atoms"] == {"Pt": 12}
    r = runner.invoke(main, ["evaluate", store, "--truth", str(tmp_path / "truth.xyz"), "--cutoff", "1.0", "--json"])
    assert r.exit_code == 0, r.output
    metrics = json.loads(r.output)
    assert metrics["overall"]["identification_pct"] == 100.0 and metrics["strict"]["false_positives"] == 0
    r = runner.invoke(main, ["export", store, "--atoms", str(tmp_path / "model.xyz")])
    assert r.exit_code == 0, r.output
    exported = read_atoms(tmp_path / "model.xyz")
    np.testing.assert_allclose(exported.position.values, RunStore(store).read("refined").position.values, atol=1e-6)
    r = runner.invoke(main, ["refine", store])
    assert r.exit_code == 0 and "wrote" in r.output and "12 atoms" in r.output, r.output
    r = runner.invoke(main, ["report", store, "--truth", str(tmp_path / "truth.xyz"), "--cutoff", "1.0"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run.zarr-report.png").stat().st_size > 50_000
    r = runner.invoke(main, ["run", str(tmp_path / "tilts.npy"), "--angles", str(tmp_path / "angles.txt"),
                             "--pixel-size", "0.35", "--species", "Xx", "--out", store])
    assert r.exit_code == 2 and "unknown species" in r.output


@pytest.mark.slow
def test_cli_run_and_reconstruct_with_angle_refinement(tmp_path):
    # angles off as measured ones are (the θ N(0, 0.5°), φ and ψ N(0, 0.3°)): the run refines
    # them, records them with the preprocessed series, reports the reconstruction's R-factor (not the
    # refinement's record) and finds every atom; `aetdask reconstruct --refine-angles` does the same on
    # its own. These counts bound each projection's orientation to 0.12° (Cramér–Rao, with the atoms
    # known: benchmarks/bench_angle_bound.py), so the angles can end no closer than about that
    true_angles = np.c_[np.zeros(30), np.arange(0.0, 180.0, 6.0), np.zeros(30)]
    given = true_angles + np.random.default_rng(0).normal(0, 1, (30, 3)) * [0.3, 0.5, 0.3]
    _, runner, store, r = cli_run(tmp_path, given, "preprocess:\n  denoiser: none\nreconstruct:\n  iterations: 30\n"
                                  "refine:\n  rounds: 3\n  iterations: 20\n", "--refine-angles")
    assert "[3/6] reconstruction with angle refinement" in r.output
    assert re.search(r"refinement round 2/3 \(angles and shifts\): R = 0\.\d+, angles moved \d\.\d+° RMS", r.output)
    r_factor = re.search(r"resire, 30 iterations, R = (\d\.\d+)", r.output)
    assert r_factor and 0 < float(r_factor.group(1)) < 0.2, r.output
    assert "model: 12 atoms (12 Pt)" in r.output
    # the coordinate refinement refined the angles too, as the reconstruction did
    assert re.search(r"angles refined against the atoms, \d\.\d+° RMS from the reconstruction's \(the counts bound "
                     r"each projection's orientation to 0\.1\d\d° RMS\)", r.output)
    rs = RunStore(store, create=False)
    pre, p = rs.read("preprocessed"), rs.read("refined").attrs["provenance"][-1]["params"]
    assert pre.attrs["provenance"][-1]["stage"] == "reconstruct.refine"

    def theta_error(angles):  # RMS, less the common rotation about the tilt axis
        d = (np.asarray(angles) - true_angles)[:, 1]
        return np.sqrt(((d - d.mean()) ** 2).mean())

    given_error, resire_error = theta_error(given), theta_error(np.c_[pre.phi, pre.theta, pre.psi])
    atoms_error = theta_error(np.c_[p["phi"], p["theta"], p["psi"]])
    def rotation_error(angles):  # the whole error as a rotation, less the object's common rotation
        omega = Rotation.from_matrix(np.transpose(projection_matrices(true_angles), (0, 2, 1))
                                     @ projection_matrices(angles)).as_rotvec()
        return np.degrees(np.sqrt(((omega - omega.mean(axis=0)) ** 2).sum(axis=1).mean()))

    final = rotation_error(np.c_[p["phi"], p["theta"], p["psi"]])
    print(f"θ error RMS: given {given_error:.3f}°, RESIRE refinement {resire_error:.3f}°, atom fit {atoms_error:.3f}°; "
          f"rotation error: given {rotation_error(given):.3f}°, final {final:.3f}°")
    assert resire_error < 0.6 * given_error and atoms_error < resire_error
    assert final < 0.3 * rotation_error(given)
    r = runner.invoke(main, ["reconstruct", store, "--refine-angles", "--iterations", "10", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output.strip().splitlines()[-1])
    assert out["method"] == "resire" and out["iterations"] == 10 and 0 < out["r_factor"] < 0.2


@needs_seed
def test_seed_paper_parity(seed_dir, tmp_path):
    """The acceptance run: the paper's own 1.6e4 e⁻/Å² tilt series, no per-dataset settings."""
    import time

    t0 = time.perf_counter()
    out = tmp_path / "np1.zarr"
    pipeline.run(seed_dir / "aSi_2nmFosCetr_Dose1p6e4_cov35pm_ForBM3D.mat", out, ["Si"],
                 angles=seed_dir / "Si_Angle.mat", pixel_size=0.195, progress=False, echo=lambda *a: None)
    seconds = time.perf_counter() - t0
    result = evaluate(out, seed_dir / "aSi_208atoms_GT.txt", 0.9)
    o, s = result["overall"], result["strict"]
    print(f"seed 1.6e4: {o['identification_pct']:.1f}% ({o['matched']}/{o['truth']}), {o['precision_pm']:.1f} pm; "
          f"strict FP {s['false_positives']} FN {s['false_negatives']}; {seconds:.0f} s")
    assert o["identification_pct"] == 100.0 and o["precision_pm"] <= 14.0  # paper: 100 %, 17 pm
    assert s["false_positives"] <= 2
