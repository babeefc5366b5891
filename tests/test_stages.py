"""The stage graph: declarations, fingerprints, and what a change of each parameter recomputes."""

import subprocess
import sys
import time

import numpy as np
import pytest

from aetdask import config, pipeline
from aetdask.errors import InputError, StoreError
from aetdask.parameters import PARAMETERS
from aetdask.stages import BY_NAME, chain

CHAINS = {"adf": chain(), "adf, angles refined": chain(refine_angles=True), "scanning": chain(scanning=True),
          "ptycho": chain("ptycho")}
#: Readers of parameters that are not stages of a chain (commands of their own).
OTHER_READERS = {"simulate", "evaluate", "analyze", "demo"}


def _other(p):
    """A valid value of ``p`` other than its default."""
    if p.choices:
        return next(c for c in p.choices if c != p.default)
    if p.kind is bool:
        return not p.default if p.default is not None else True
    if p.kind is list:
        if p.items is str:
            return ["Ge"] if p.default != ["Ge"] else ["Si"]
        return [v * 1.1 + 0.01 for v in p.default]
    base = p.default if p.default is not None else (p.low if p.low is not None else 1)
    v = base + 1 if p.kind is int else base * 1.1 + 0.01
    if p.high is not None and v > p.high:
        v = base - 1 if p.kind is int else (base + (p.low or 0.0)) / 2
    return v


def test_every_stage_a_parameter_names_exists():
    named = {s for p in PARAMETERS.values() for s in p.stages}
    assert named - OTHER_READERS <= set(BY_NAME), named - OTHER_READERS - set(BY_NAME)
    for name, st in BY_NAME.items():
        assert st.name == name and st.product and st.work in ("graph", "iterative", "client")


@pytest.mark.parametrize("key", sorted(k for k, p in PARAMETERS.items() if p.role == "result"))
def test_a_parameter_recomputes_the_stage_that_reads_it_and_those_after_it_only(key):
    p = PARAMETERS[key]
    value = _other(p)
    assert config.validate(key, value) == value and value != p.default
    for name, stages in CHAINS.items():
        before = [fp for _, fp in pipeline.plan(stages, "input", ["Si"])]
        with config.set({key: value}):
            after = [fp for _, fp in pipeline.plan(stages, "input", ["Si"])]
        first = next((i for i, st in enumerate(stages) if key in st.params), None)
        if first is None:  # no stage of this chain reads it: nothing recomputes
            assert before == after, (name, key)
        else:
            assert before[:first] == after[:first], (name, key)
            assert all(b != a for b, a in zip(before[first:], after[first:])), (name, key)


def test_the_elements_the_input_and_the_version_recompute_what_they_should(monkeypatch):
    stages = chain()
    base = [fp for _, fp in pipeline.plan(stages, "input", ["Si"])]
    species = [fp for _, fp in pipeline.plan(stages, "input", ["Ge"])]
    first = next(i for i, st in enumerate(stages) if st.species)
    assert species[:first] == base[:first] and all(a != b for a, b in zip(species[first:], base[first:]))
    assert all(a != b for a, b in zip(pipeline.plan(stages, "other input", ["Si"]), base))
    monkeypatch.setattr(pipeline, "__version__", "0.0.0-other")
    assert all(a != b for (_, a), b in zip(pipeline.plan(stages, "input", ["Si"]), base))


def test_angle_refinement_with_another_method_is_refused():
    from aetdask.reconstruct.refine import refine_geometry
    from aetdask.schema import tilt_series

    ts = tilt_series(np.ones((6, 16, 16)), np.arange(0.0, 180.0, 30.0), 0.5)
    with config.set({"reconstruct.method": "sirt"}), pytest.raises(InputError, match="reconstruct.method.*resire"):
        refine_geometry(ts)


def test_a_second_writer_is_refused_while_a_run_holds_the_store(tmp_path):
    from aetdask.io import RunStore
    from aetdask.schema import tilt_series

    out = tmp_path / "run.zarr"
    RunStore(out)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from aetdask.io import RunStore\n"
        f"with RunStore({str(out)!r}).lock('aetdask run (the first)'):\n"
        "    print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        ts = tilt_series(np.ones((6, 16, 16)), np.arange(0.0, 180.0, 30.0), 0.5)
        t0 = time.perf_counter()
        with pytest.raises(StoreError, match=rf"in use by another aetdask process \(pid {holder.pid}.*the first"):
            pipeline.run(ts, out, ["Si"], progress=False, echo=lambda *a: None)
        assert time.perf_counter() - t0 < 30  # refused at once, not after computing
        assert RunStore(out, create=False).products() == []  # and nothing written
    finally:
        holder.kill()
        holder.wait()


def test_angle_refinement_starts_from_the_preprocessed_geometry_whatever_an_earlier_one_wrote():
    # a run killed after the refined series was written but before its volume redoes the stage from the
    # geometry preprocessing gave, not from the refined one, so it ends where a clean run does
    from aetdask.schema import tilt_series
    from aetdask.stages import _GEOMETRY, _as_preprocessed

    pre = tilt_series(np.ones((4, 8, 8)), [0.0, 45.0, 90.0, 135.0], 0.5)
    pre = pre.assign_coords(shift_y=("tilt", [0.5, 0.0, -0.5, 1.0]))
    assert _as_preprocessed(pre) is pre  # never refined: as it is
    refined = pre.assign_coords(theta=("tilt", [0.3, 45.2, 89.9, 135.1]), shift_y=("tilt", [0.4, 0.1, -0.6, 0.9]),
                                scale=("tilt", [1.0, 1.1, 0.9, 1.0]))
    refined = refined.assign_coords({f"preprocessed_{c}": ("tilt", pre.coords[c].values if c in pre.coords
                                                           else np.full(4, v)) for c, v in _GEOMETRY.items()})
    refined.attrs["provenance"] = list(pre.attrs.get("provenance", [])) + [{"stage": "reconstruct.refine"}]
    back = _as_preprocessed(refined)
    for c in ("phi", "theta", "psi", "shift_y"):
        np.testing.assert_array_equal(back[c].values, pre[c].values)
    np.testing.assert_array_equal(back.scale.values, np.ones(4))
    assert not any(str(c).startswith("preprocessed_") for c in back.coords)
    assert all(r.get("stage") != "reconstruct.refine" for r in back.attrs["provenance"])
