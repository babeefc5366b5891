"""No tracebacks (issue 28): whatever a user feeds the command line, it ends in exit 0 with a sane result or in
exit 2 with one ``error:`` line naming the file, field or option and what was expected — never a Python
traceback, never a worker's "Compute Failed" dump, never a changed input file.

Generated inputs (hypothesis, derandomised so that the suite is repeatable) cover the parameter file (every key
with values of every kind), atom files (any mix of tokens in any of the text layouts), atomic models of any
geometry for ``aetdask analyze``, damaged run stores (any metadata or chunk file of any product truncated,
emptied, garbled or removed) and species lists; parametrised cases cover what the issue names (zero-sized fit
windows, a negative seed, ``device: gpu`` without a GPU, a YAML "billion laughs", output names over 255 bytes,
...). Computing commands join one small in-process cluster (``--scheduler``) shared by the module; one test runs a
real process on a local cluster, where a task fails inside a worker process.
"""

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aetdask.cli import main
from aetdask.io import RunStore, write_atoms
from aetdask.parameters import PARAMETERS
from aetdask.schema import atoms as make_atoms
from aetdask.simulate import amorphous_particle
from tests.test_bad_inputs import make_inputs, make_store

# AETDASK_FUZZ=N searches N times as many random examples (a new search each run) instead of the fixed ones
FUZZ = int(os.environ.get("AETDASK_FUZZ", "0"))
SETTINGS = dict(deadline=None, derandomize=not FUZZ, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def examples(n: int) -> int:
    return n * max(FUZZ, 1)
LONG = "A" * 300  # a file name over 255 bytes
MAX_LINE = 2100  # the CLI bounds an error line to 2000 characters (plus "error: ")


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = make_inputs(tmp_path_factory.mktemp("inputs"))
    write_atoms(amorphous_particle(30, species=["Si"], seed=1), d / "si.xyz")
    return d


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("template") / "run.zarr")


@pytest.fixture(scope="module")
def scheduler():
    """A small in-process cluster the computing commands join with --scheduler (fast to start)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


class Scratch:
    """A fresh copy of the finished store and an empty folder, for one example of a generated test."""

    def __init__(self, base: pathlib.Path, template: pathlib.Path):
        base.mkdir(parents=True, exist_ok=True)
        self.root = pathlib.Path(os.path.realpath(base / f"x{time.monotonic_ns()}"))
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True)
        self.store = self.root / "run.zarr"
        shutil.copytree(template, self.store)

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def scratch(tmp_path, finished_store):
    made = []

    def make():
        made.append(Scratch(tmp_path, finished_store))
        return made[-1]

    yield make
    for s in made:
        s.close()


# ---------------------------------------------------------------------------------------------- the rule
def snapshot(root: pathlib.Path) -> dict:
    """Every file under ``root`` (or ``root`` itself): relative path → SHA-256 of its bytes."""
    root = pathlib.Path(root)
    if root.is_file():
        return {"": hashlib.sha256(root.read_bytes()).hexdigest()}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def outside(snap: dict, outputs) -> dict:
    """``snap`` without the entries under the top-level names ``outputs`` (what a command may write)."""
    return {k: v for k, v in snap.items() if k.split(os.sep)[0] not in set(outputs)}


def invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def check(result, *, words=(), exit_code=None) -> str:
    """The rule: exit 0 and no error line, or exit 2 and exactly one error line of bounded length; never a
    traceback or an exception escaping. Returns the error line ('' for exit 0)."""
    out = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{type(result.exception).__name__}: {result.exception}\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]
    assert "Compute Failed" not in out, out[-3000:]
    assert result.exit_code in (0, 2), out[-3000:]
    if exit_code is not None:
        assert result.exit_code == exit_code, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith(("error:", "Error:"))]
    if result.exit_code == 0:
        assert not errors, out[-3000:]
        return ""
    assert len(errors) == 1, out[-3000:]
    assert len(errors[0]) <= MAX_LINE, errors[0][:300]
    for word in words:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"
    return errors[0]


def run_checked(args, *, watch=(), outputs=(), words=(), exit_code=None) -> str:
    """Run the CLI and apply the rule; files and folders in ``watch`` must not change (on success, only the
    top-level entries ``outputs`` of a watched folder may)."""
    before = [snapshot(w) for w in watch]
    line = check(invoke(args), words=words, exit_code=exit_code)
    for w, snap in zip(watch, before):
        after = snapshot(w)
        if line:
            assert after == snap, f"{w} changed by a refused command"
        else:
            assert outside(after, outputs) == outside(snap, outputs), f"{w} changed beyond {outputs}"
    return line


# ---------------------------------------------------------------------------------------------- parameter files
BOMB = "".join(f"{a}: &{a} [{', '.join(['*' + p] * 9 if p else ['lol'] * 9)}]\n"
               for p, a in zip(["", *"abcdefgh"], "abcdefghi"))  # 9⁹ ≈ 387 million strings when expanded

CONFIGS = [
    # (id, text of c.yaml, command, words of the message)
    ("zero fit window", "aetdask:\n  trace:\n    window: 0\n", "trace", ["c.yaml", "aetdask.trace.window = 0", "≥ 3"]),
    ("even fit window", "trace.window: 4\n", "trace", ["aetdask.trace.window", "odd"]),
    ("fit window of a billion samples", "trace.window: 1001\n", "trace", ["aetdask.trace", "GiB"]),
    ("fit of order 300", "trace.order: 300\n", "trace", ["aetdask.trace", "GiB"]),
    ("vanishing fit weight", "trace.sigma: 1.0e-300\n", "trace", ["aetdask.trace", "sigma"]),
    ("overflowing fit weight", "trace.sigma: 1.0e+300\n", "trace", ["aetdask.trace", "sigma"]),
    ("zero-sized sub-volumes", "trace.chunk: 0\n", "trace", ["aetdask.trace.chunk"]),
    ("negative K-means seed", "classify:\n  seed: -1\n", "classify", ["aetdask.classify.seed = -1", "≥ 0"]),
    ("no noise class", "classify.noise_classes: 0\n", "classify", ["aetdask.classify.noise_classes"]),
    ("gpu without a GPU, local cluster", "device: gpu\n", "local", ["c.yaml", "aetdask.device = 'gpu'", "cpu"]),
    ("billion laughs", BOMB, "trace", ["c.yaml", "alias", "not allowed"]),
    ("alias inside aetdask", "aetdask:\n  demo:\n    species: &s [Si, O]\n  analyze:\n    deltas: *s\n", "trace",
     ["c.yaml", "line 5", "alias *s"]),
    ("aetdask: a number", "aetdask: 5\n", "trace", ["c.yaml", "'aetdask' holds 5", "mapping"]),
    ("top level a list", "- 1\n- 2\n", "trace", ["c.yaml", "mapping"]),
    ("binary file", bytes(range(256)), "trace", ["c.yaml", "not a text file"]),
    ("integer of 5000 digits", "trace.window: 1" + "0" * 5000 + "\n", "trace", ["c.yaml", "digits"]),
    ("value of 100 000 characters", "device: " + "x" * 100_000 + "\n", "trace", ["c.yaml", "aetdask.device", "left out"]),
    ("key of 100 000 characters", "k" * 100_000 + ": 1\n", "trace", ["c.yaml"]),
    ("50 000 nested lists", "[" * 50_000, "trace", ["c.yaml"]),
    ("30 nested mappings", "".join(" " * i + "a:\n" for i in range(30)) + " " * 30 + "a: 1\n", "trace",
     ["c.yaml", "nested"]),
    ("file over 1 MiB", "# parameters\n" * 100_000, "trace", ["c.yaml", "1 MiB"]),
    ("invalid YAML", "trace: [\n", "trace", ["c.yaml", "not valid YAML", "line 2"]),
    ("python tag", "trace.window: !!python/object/apply:os.system ['echo hi']\n", "trace", ["c.yaml", "python"]),
    ("scheduler without a port", "scheduler: tcp://nowhere\n", "local", ["aetdask.scheduler", "port"]),
    ("unknown key", "trace.windows: 7\n", "trace", ["c.yaml", "trace.windows", "allowed keys"]),
]

COMMANDS = {
    "trace": ["trace", "{store}", "--species", "Si", "--scheduler", "{sched}"],
    "classify": ["classify", "{store}", "--species", "Si", "--scheduler", "{sched}"],
    "local": ["reconstruct", "{store}", "--iterations", "1"],  # no --scheduler: checked before a cluster starts
}


@pytest.mark.parametrize("text, command, words", [pytest.param(*c[1:], id=c[0]) for c in CONFIGS])
def test_bad_parameter_files_are_refused_in_one_short_line(text, command, words, scratch, scheduler):
    s = scratch()
    cfg = s.tmp / "c.yaml"
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    args = [a.format(store=s.store, sched=scheduler) for a in COMMANDS[command]] + ["--config", cfg]
    t0 = time.perf_counter()
    run_checked(args, watch=[s.store, cfg], words=words, exit_code=2)
    assert time.perf_counter() - t0 < 60  # refused, not expanded or computed


def test_a_gpu_that_is_not_there_is_one_line_also_from_inside_a_task(scratch, scheduler):
    """With --scheduler the workers' device is theirs: the task that needs CuPy fails, and its error is the line."""
    s = scratch()
    (s.tmp / "c.yaml").write_text("device: gpu\n")
    run_checked(["reconstruct", s.store, "--iterations", "1", "--scheduler", scheduler,
                 "--config", s.tmp / "c.yaml"], watch=[s.store], words=["aetdask.device = 'gpu'", "CuPy", "cpu"],
                exit_code=2)


VALUES = st.one_of(
    st.integers(-3, 13),
    st.sampled_from([0, -1, 2**40, 10**30, 0.0, -0.5, 1e-300, 1e300, float("nan"), float("inf"), 2.5, 0.75]),
    st.booleans(), st.none(), st.text(max_size=12),
    st.lists(st.one_of(st.integers(-2, 5), st.floats(allow_nan=True), st.text(max_size=3)), max_size=4),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@settings(max_examples=examples(40), **SETTINGS)
@given(entries=st.dictionaries(st.one_of(st.sampled_from(sorted(PARAMETERS)), st.text(max_size=8)), VALUES,
                               min_size=1, max_size=3))
def test_any_parameter_file_traces_or_is_refused(entries, scratch, scheduler):
    s = scratch()
    cfg = s.tmp / "c.yaml"
    cfg.write_text(yaml.safe_dump({"aetdask": entries}, allow_unicode=True))
    run_checked(["trace", s.store, "--species", "Si", "--scheduler", scheduler, "--config", cfg],
                watch=[s.store, cfg], outputs=("candidates", ".zmetadata", "run.json"))


# ---------------------------------------------------------------------------------------------- atom files
TOKENS = st.one_of(
    st.sampled_from(["Si", "O", "Ge", "Xx", "si", "", "1", "2", "14", "0", "-1", "nan", "inf", "-inf", "1e400",
                     "1e308", "1e9", "abc", "2.3", "-0", "0x10", "1_0", ",", "%", "#", "\t", "Properties=species:S:1"]),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-50, max_value=50).map(lambda v: f"{v:.3f}"),
    st.text(max_size=4),
)
LINES = st.lists(st.lists(TOKENS, min_size=0, max_size=6), min_size=0, max_size=8)


@settings(max_examples=examples(60), **SETTINGS)
@given(suffix=st.sampled_from([".xyz", ".csv", ".txt"]), header=st.sampled_from(["", "count", "csv", "%"]),
       lines=LINES, sep=st.sampled_from([" ", ",", "\t"]))
def test_any_atom_file_is_scored_or_refused(suffix, header, lines, sep, files, scratch):
    s = scratch()
    body = [sep.join(tokens) for tokens in lines]
    head = {"": [], "count": [str(len(body)), ""], "csv": ["species,x,y,z"], "%": ["% model"]}[header]
    model = s.tmp / f"model{suffix}"
    try:
        model.write_text("\n".join(head + body) + "\n")
    except UnicodeEncodeError:  # lone surrogates: not text a file can hold
        return
    run_checked(["evaluate", model, "--truth", files / "si.xyz", "--cutoff", "0.9"], watch=[model])


GEOMETRIES = ["random", "line", "plane", "point", "two points", "huge", "far apart", "tiny"]


@settings(max_examples=examples(14), **SETTINGS)
@given(geometry=st.sampled_from(GEOMETRIES), n=st.integers(5, 14), seed=st.integers(0, 3))
def test_any_model_geometry_is_analysed_or_refused(geometry, n, seed, scratch, scheduler):
    rng = np.random.default_rng(seed)
    spread = {"random": 2.2 * n ** (1 / 3), "huge": 1e12, "far apart": 1e5, "tiny": 1e-3}.get(geometry, 2.4 * n)
    t = np.arange(n, dtype=float) * 2.4
    pos = {
        "line": np.c_[t, 0.5 * t, 0 * t],
        "plane": np.c_[t % 7.2, (t // 7.2) * 2.4, 0 * t],
        "point": np.zeros((n, 3)),
        "two points": np.r_[np.zeros((n // 2, 3)), np.full((n - n // 2, 3), 3.0)],
    }.get(geometry, rng.uniform(0, spread, (n, 3)))
    s = scratch()
    model = s.tmp / "model.xyz"
    write_atoms(make_atoms(pos, ["Si"] * n), model)
    run_checked(["analyze", model, "--out", s.tmp / "out", "--scheduler", scheduler], watch=[model])


def test_collinear_and_coincident_atoms_in_a_run_store_are_refused(scratch, scheduler):
    s = scratch()
    store = RunStore(s.store)
    store.write("refined", make_atoms(np.c_[np.arange(8.0) * 2.3, np.zeros(8), np.zeros(8)], ["Si"] * 8))
    run_checked(["analyze", s.store, "--out", s.tmp / "out", "--scheduler", scheduler], watch=[s.store],
                words=["analyze", "8 atoms lie on a line", "3-D model"], exit_code=2)
    store.write("refined", make_atoms(np.zeros((8, 3)), ["Si"] * 8))
    run_checked(["analyze", s.store, "--out", s.tmp / "out", "--scheduler", scheduler], watch=[s.store],
                words=["8 atoms lie on one point"], exit_code=2)


# ---------------------------------------------------------------------------------------------- damaged stores
def _damage(path: pathlib.Path, how: str) -> None:
    if how == "remove":
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        return
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "garble": bytes(255 - b for b in data),
                      "json list": b"[]", "json null": b"null", "json of a number": b"7",
                      "json object": b'{"zarr_format": 2}'}[how])


# product → (command that reads its chunks, what the command may write into the store on success: its product,
# the log, and the store's root metadata, which every write consolidates — Zarr rewrites .zgroup in its own format)
READERS = {
    "raw": (["reconstruct", "{store}", "--method", "fbp", "--iterations", "1", "--scheduler", "{sched}"],
            ("volume", ".zmetadata", ".zgroup", "run.json")),
    "volume": (["trace", "{store}", "--species", "Si", "--scheduler", "{sched}"],
               ("candidates", ".zmetadata", ".zgroup", "run.json")),
    "atoms": (["export", "{store}", "--atoms", "{tmp}/m.xyz", "--product", "atoms"], ()),
    "truth": (["export", "{store}", "--atoms", "{tmp}/m.xyz", "--product", "truth"], ()),
}
TARGETS = [".zgroup", ".zattrs", ".zmetadata", "array .zarray", "array .zattrs", "chunk", "array", "store .zmetadata",
           "store .zattrs", "store .zgroup"]
DAMAGES = ["truncate", "empty", "garble", "json list", "json null", "json of a number", "json object", "remove"]


def _target(store: pathlib.Path, product: str, target: str) -> pathlib.Path:
    if target.startswith("store "):
        return store / target.split()[1]
    group = store / product
    array = group / {"raw": "tilt_series", "volume": "volume"}.get(product, "position")
    if target == "array":
        return array
    if target.startswith("array "):
        return array / target.split()[1]
    if target == "chunk":
        return sorted(p for p in array.iterdir() if not p.name.startswith("."))[0]
    return group / target


@settings(max_examples=examples(45), **SETTINGS)
@given(product=st.sampled_from(sorted(READERS)), target=st.sampled_from(TARGETS), damage=st.sampled_from(DAMAGES))
def test_a_damaged_store_is_read_or_refused_in_one_line(product, target, damage, scratch, scheduler):
    s = scratch()
    path = _target(s.store, product, target)
    assume(path.exists() and (path.is_file() or damage == "remove"))
    _damage(path, damage)
    command, outputs = READERS[product]
    run_checked([a.format(store=s.store, sched=scheduler, tmp=s.tmp) for a in command], watch=[s.store],
                outputs=outputs)
    run_checked(["info", s.store, "--json"], watch=[s.store])


@pytest.mark.parametrize("product, words", [
    ("volume", ["run.zarr/volume", "a chunk cannot be read", "damaged"]),
    ("atoms", ["run.zarr/atoms", "a chunk cannot be read"]),
    ("raw", ["run.zarr/raw", "a chunk cannot be read"]),
])
def test_a_damaged_chunk_names_its_product(product, words, scratch, scheduler):
    s = scratch()
    _damage(_target(s.store, product, "chunk"), "empty")  # (a truncated chunk may decode to garbage: no checksums)
    command, _ = READERS[product]
    run_checked([a.format(store=s.store, sched=scheduler, tmp=s.tmp) for a in command], watch=[s.store], words=words,
                exit_code=2)


def test_damaged_metadata_names_the_store(scratch):
    s = scratch()
    _damage(s.store / "atoms" / ".zattrs", "garble")
    run_checked(["info", s.store], watch=[s.store], words=["run.zarr/atoms", "cannot be opened", "damaged"],
                exit_code=2)
    s = scratch()
    _damage(s.store / ".zmetadata", "truncate")
    run_checked(["info", s.store], watch=[s.store], words=["run.zarr", "Zarr metadata cannot be read"], exit_code=2)


# ---------------------------------------------------------------------------------------------- names and places
PLACES = [
    ("import --out over 255 bytes", ["import", "{d}/tilts.npy", "--angles", "{d}/angles.txt", "--pixel-size", "0.5",
                                     "--out", "{tmp}/" + LONG + ".zarr"], ["File name too long", "255 bytes"]),
    ("simulate --out over 255 bytes", ["simulate", "--n-atoms", "5", "--shape", "16", "--out", "{tmp}/" + LONG,
                                       "--scheduler", "{sched}"], ["File name too long", "255 bytes"]),
    ("run --out over 255 bytes", ["run", "{d}/tilts.npy", "--angles", "{d}/angles.txt", "--pixel-size", "0.5",
                                  "--species", "Si", "--out", "{tmp}/" + LONG, "--scheduler", "{sched}"],
     ["File name too long", "255 bytes"]),
    ("export --atoms over 255 bytes", ["export", "{store}", "--atoms", "{tmp}/" + LONG + ".xyz"], [LONG[:50]]),
    ("analyze --out over 255 bytes", ["analyze", "{d}/si.xyz", "--out", "{tmp}/" + LONG, "--scheduler", "{sched}"],
     [LONG[:50]]),
    ("demo --out over 255 bytes", ["demo", "--out", "{tmp}/" + LONG, "--scheduler", "{sched}"], [LONG[:50]]),
    ("200 two-byte characters", ["import", "{d}/tilts.npy", "--angles", "{d}/angles.txt", "--pixel-size", "0.5",
                                 "--out", "{tmp}/" + "é" * 200], ["255 bytes"]),
    ("--out below a file", ["import", "{d}/tilts.npy", "--angles", "{d}/angles.txt", "--pixel-size", "0.5",
                            "--out", "{d}/si.xyz/run.zarr"], ["si.xyz"]),
    ("--atoms below a file", ["export", "{store}", "--atoms", "{d}/si.xyz/m.xyz"], ["si.xyz"]),
    ("scheduler without a port", ["trace", "{store}", "--species", "Si", "--scheduler", "nowhere"],
     ["--scheduler nowhere", "port", "tcp://"]),
    ("scheduler of an unknown protocol", ["trace", "{store}", "--species", "Si", "--scheduler", "foo://bar:1"],
     ["--scheduler foo://bar:1", "unknown address scheme"]),
    ("angles as text in a .npy", ["import", "{d}/tilts.npy", "--angles", "{tmp}/angles.npy", "--pixel-size", "0.5",
                                  "--out", "{tmp}/new.zarr"], ["angles.npy", "expected numbers"]),
    ("atoms a light-second apart", ["evaluate", "{tmp}/far.xyz", "--truth", "{d}/si.xyz", "--cutoff", "0.9"],
     ["far.xyz", "atom 5 (counting from 1) has a coordinate of 1.2e+19 Å", "0.1 m"]),
]


@pytest.mark.parametrize("command, words", [pytest.param(*c[1:], id=c[0]) for c in PLACES])
def test_bad_names_and_places_are_one_line(command, words, files, scratch, scheduler):
    s = scratch()
    np.save(s.tmp / "angles.npy", np.array(["a"] * 8))
    (s.tmp / "far.xyz").write_text("5\n\n" + "".join(f"Si {i * 3e18} {i * 2.4} 0\n" for i in range(5)))
    run_checked([a.format(d=files, store=s.store, tmp=s.tmp, sched=scheduler) for a in command],
                watch=[s.store, files], words=words, exit_code=2)


# ---------------------------------------------------------------------------------------------- species lists
@settings(max_examples=examples(25), **SETTINGS)
@given(species=st.one_of(st.sampled_from([",", " , ", "Si,,", ",Si", "Xx", "si", "Si,Si", "Si;O", "Ṡi", "Si O",
                                          "S" * 1000, "Si,Ge,Pt,Co,Pd,Fe,Ni,Au,Ag,Cu"]),
                         st.text(max_size=8).filter(lambda t: not t.startswith("-"))))
def test_any_species_list_traces_or_is_refused(species, scratch, scheduler):
    s = scratch()
    run_checked(["trace", s.store, "--species", species, "--scheduler", scheduler], watch=[s.store],
                outputs=("candidates", ".zmetadata", "run.json"))


@pytest.mark.parametrize("command", [
    ["trace", "{store}", "--species", ",", "--scheduler", "{sched}"],
    ["classify", "{store}", "--species", " , ", "--scheduler", "{sched}"],
    ["run", "{store}", "--species", ",", "--scheduler", "{sched}"],
    ["simulate", "--n-atoms", "5", "--shape", "16", "--species", ",", "--out", "{tmp}/new.zarr", "--scheduler", "{sched}"],
], ids=["trace", "classify", "run", "simulate"])
def test_an_empty_species_list_is_one_line(command, scratch, scheduler):
    s = scratch()
    run_checked([a.format(store=s.store, tmp=s.tmp, sched=scheduler) for a in command], watch=[s.store],
                words=["species"], exit_code=2)


def test_a_negative_simulation_seed_is_one_line(scratch, scheduler):
    s = scratch()
    run_checked(["simulate", "--n-atoms", "5", "--shape", "16", "--seed", "-1", "--out", s.tmp / "new.zarr",
                 "--scheduler", scheduler], words=["--seed"], exit_code=2)


def test_aliases_in_a_campaign_file_are_refused(scratch, scheduler):
    s = scratch()
    bomb = "x1: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nx2: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    (s.tmp / "campaign.yaml").write_text(bomb + "tilts: *b\ndoses: [1]\nparticles: []\n")
    run_checked(["simulate", "--campaign", s.tmp / "campaign.yaml", "--out", s.tmp / "campaign",
                 "--scheduler", scheduler], words=["alias"], exit_code=2)


# ---------------------------------------------------------------------------------------------- aetdask cluster
@pytest.mark.parametrize("options, words", [
    (["--memory-limit", "abc"], ["--memory-limit", "8GiB"]),
    (["--memory-limit", "-5GB"], ["--memory-limit"]),
    (["--memory-limit", "2.5"], ["--memory-limit", "fraction"]),
    (["--host", "no-such-host.invalid"], ["--host", "interface"]),
    (["--host", "192.0.2.1"], ["--host", "cannot listen"]),  # TEST-NET-1: never this machine's
    (["--dashboard-address", "192.0.2.1:8787"], ["--dashboard-address", "192.0.2.1:8787"]),
    (["--join", "garbage"], ["--join", "tcp://HOST:PORT"]),
    (["--join", "tcp://:x"], ["--join"]),
    (["--join", "tcp://127.0.0.1:0"], ["--join"]),
    (["--join", "tcp://127.0.0.1:8786", "--memory-limit", "lots"], ["--memory-limit"]),
], ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0].startswith("-") else None)
def test_cluster_options_are_checked_before_anything_starts(options, words):
    """Every value of `aetdask cluster` that Dask would fail on after starting servers is refused first."""
    run_checked(["cluster", "--workers", "1", "--port", "0", *options], words=words, exit_code=2)


# ---------------------------------------------------------------------------------------------- workers that die
def test_a_task_that_kills_its_workers_is_one_line(capsys):
    """A task that ends every worker process that runs it (out of memory, almost always) raises Dask's
    KilledWorker in the client: one line saying what to change, exit 2."""
    import dask
    from distributed import Client, LocalCluster

    from aetdask.cli import _handle_errors

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:

        @_handle_errors
        def command():
            client.submit(os._exit, 1, key="resire-0123456789abcdef").result()

        with pytest.raises(SystemExit) as stop:
            command()
    assert stop.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: a task (resire) ended each of the 1 Dask workers"), lines
    assert "more memory" in lines[0] and "Traceback" not in lines[0]


# ---------------------------------------------------------------------------------------------- a real process
def test_a_task_that_fails_in_a_worker_process_is_one_line_without_the_workers_dump(finished_store, tmp_path):
    """A local cluster of worker processes (no --scheduler): a damaged chunk is found inside a task, the worker
    logs nothing, and the command's stderr is the one line."""
    store = tmp_path / "run.zarr"
    shutil.copytree(finished_store, store)
    _damage(_target(store, "volume", "chunk"), "empty")
    before = snapshot(store)
    r = subprocess.run([sys.executable, "-m", "aetdask.cli", "trace", str(store), "--species", "Si"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Compute Failed" not in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "run.zarr/volume: a chunk cannot be read" in lines[0], \
        r.stderr
    assert snapshot(store) == before
