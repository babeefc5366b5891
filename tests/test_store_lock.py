"""Tests of the run store's transactions: records published with their product, one writer at a
time (the lock), and the leftovers of a killed writer, cleared by the next writer only."""

import json
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import sys
import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

from aetdask.errors import StoreError
from aetdask.io import RunStore
from aetdask.io.store import LOCK_NAME, RECORD_KEY
from aetdask.schema import atoms, tilt_series, volume

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECORD = {"fingerprint": "9c1d", "params": {"tv": 0.25, "shape": (3, 4)}, "seconds": 1.5, "note": "Å"}


def series(value=1.0, nt=3, n=4):
    return tilt_series(np.full((nt, n, n), value, dtype=np.float32), np.linspace(-60, 60, nt), 0.5)


def model(n=5):
    return atoms(np.arange(3.0 * n).reshape(n, 3), ["Si"] * n)


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "run.zarr")


def lock_file(store):
    return store.path / LOCK_NAME


def dead_pid():
    """The pid of a process that has certainly ended (started, waited for, reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    pid = int(proc.stdout)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    return pid


def fake_lock(store, pid, host=None, command="aetdask run (killed)", **extra):
    lock_file(store).write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid, "command": command,
                                            "started": "2026-01-02T03:04:05+00:00", "token": "x", **extra}))


def python(code, *args, **kwargs):
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, **kwargs)


def snapshot(root):
    """Every path under ``root`` (itself included) → (is a directory, size, mtime in ns)."""
    out = {}
    for here, dirs, files in os.walk(root):
        for p in [here, *(os.path.join(here, n) for n in dirs + files)]:
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (stat.S_ISDIR(st.st_mode), st.st_size, st.st_mtime_ns)
    return out


# ----------------------------------------------------------------------------- records
def test_record_is_published_with_the_product(store):
    store.write("raw", series(2.0), record=RECORD)
    back = store.record("raw")
    assert back == {**RECORD, "params": {"tv": 0.25, "shape": [3, 4]}}  # as JSON reads it back
    assert zarr.open_group(str(store.path / "raw"), mode="r").attrs[RECORD_KEY] == back  # in the group itself
    assert store.read("raw").values.mean() == 2.0 and RECORD_KEY not in store.read("raw").attrs

    store.write("truth", model(), record={"fingerprint": "aa"})
    assert store.record("truth") == {"fingerprint": "aa"}
    assert RECORD_KEY not in store.read("truth").attrs  # bookkeeping stays out of the model

    # without a record: none, also when replacing a product that had one, or copying one that had one
    store.write("raw", series(3.0))
    assert store.record("raw") is None
    carried = xr.open_zarr(store.path, group="truth")
    assert carried.attrs[RECORD_KEY] == {"fingerprint": "aa"}
    store.write("atoms", carried)
    assert store.record("atoms") is None and store.record("truth") == {"fingerprint": "aa"}
    assert store.record("volume") is None  # absent product
    with pytest.raises(StoreError, match="unknown product 'bogus'"):
        store.record("bogus")


def test_record_is_in_the_temporary_group_before_the_rename(store):
    store.write("raw", series(1.0), record={"fingerprint": "old"})
    seen = []

    def fn(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 2:
            for tmp in store.path.glob(".raw.tmp-*"):
                seen.append(json.loads((tmp / ".zattrs").read_text()).get(RECORD_KEY))
            seen.append(store.record("raw"))  # the published one is still the old pair
        return block

    new = series(5.0)
    new = new.copy(data=da.from_array(new.values, chunks=(1, 4, 4)).map_blocks(fn, dtype=np.float32))
    with dask.config.set(scheduler="synchronous"):
        store.write("raw", new, record={"fingerprint": "new"})
    assert seen == [{"fingerprint": "new"}, {"fingerprint": "old"}]
    assert store.record("raw") == {"fingerprint": "new"} and store.read("raw").values.mean() == 5.0


def test_failed_write_keeps_the_old_product_with_its_old_record(store):
    store.write("raw", series(1.0), record={"fingerprint": "old"})

    def fail(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 1:
            raise RuntimeError("simulated failure")
        return block

    bad = series(9.0)
    bad = bad.copy(data=da.from_array(bad.values, chunks=(1, 4, 4)).map_blocks(fail, dtype=np.float32))
    with dask.config.set(scheduler="synchronous"), pytest.raises(RuntimeError, match="simulated failure"):
        store.write("raw", bad, record={"fingerprint": "new"})
    assert store.record("raw") == {"fingerprint": "old"} and store.read("raw").values.mean() == 1.0
    assert not lock_file(store).exists()  # released on failure too


def test_a_record_that_is_not_json_is_refused_before_any_work(store):
    for bad, what in (({"f": object()}, "JSON-able"), (["fingerprint"], "must be a dict")):
        with pytest.raises(StoreError, match=what):
            store.write("raw", series(), record=bad)
    assert store.products() == [] and sorted(os.listdir(store.path)) == [".zattrs", ".zgroup"]


def test_callers_attrs_are_not_changed(store):
    ds = model()
    ds.attrs[RECORD_KEY] = {"fingerprint": "carried"}
    before = dict(ds.attrs)
    store.write("atoms", ds, record={"fingerprint": "mine"})
    assert ds.attrs == before and store.record("atoms") == {"fingerprint": "mine"}


# ----------------------------------------------------------------------------- one writer
HOLD = """
import sys
from aetdask.io import RunStore
store = RunStore(sys.argv[1], create=False)
with store.lock("aetdask run --out here"):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_second_process_cannot_write_while_the_first_holds_the_lock(store):
    store.write("raw", series(1.0), record={"fingerprint": "1"})
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(store.path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        info = json.loads(lock_file(store).read_text())
        assert info["pid"] == holder.pid and info["host"] == socket.gethostname()
        assert info["command"] == "aetdask run --out here" and info["started"]
        assert store.holder()["pid"] == holder.pid

        other = RunStore(store.path, create=False)
        for attempt in (lambda: other.write("raw", series(7.0), record={"fingerprint": "7"}),
                        lambda: other.write_json("metrics.json", {"n": 1}),
                        lambda: RunStore(store.path, create=False, writable=True),
                        lambda: other.lock("second").__enter__()):
            with pytest.raises(StoreError) as e:
                attempt()
            message = str(e.value)
            assert "\n" not in message and str(store.path) in message
            assert f"pid {holder.pid} on {socket.gethostname()}" in message
            assert "`aetdask run --out here` since " + info["started"] in message
            assert "wait for it to finish" in message and str(lock_file(store)) in message
        # nothing changed: the holder's lock, the product and its record; reading still works
        assert json.loads(lock_file(store).read_text()) == info
        assert other.read("raw").values.mean() == 1.0 and other.record("raw") == {"fingerprint": "1"}
        assert not (store.path / "metrics.json").exists() and not list(store.path.glob(".*.tmp-*"))
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0 and not lock_file(store).exists()  # released on exit
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a released lock is not a stale one
        store.write("raw", series(7.0))
    assert store.read("raw").values.mean() == 7.0 and store.holder() is None


def test_a_lock_held_by_this_process_blocks_another(store):
    code = ("import sys\nfrom aetdask.errors import StoreError\nfrom aetdask.io import RunStore\n"
            "try:\n    RunStore(sys.argv[1], create=False).write_json('run.json', {})\n"
            "except StoreError as e:\n    print(e)\nelse:\n    print('WROTE')")
    with store.lock("aetdask run"):
        blocked = python(code, store.path)
    assert blocked.returncode == 0, blocked.stderr
    assert f"pid {os.getpid()} on {socket.gethostname()}" in blocked.stdout and "`aetdask run`" in blocked.stdout
    assert not (store.path / "run.json").exists()
    after = python(code, store.path)
    assert after.stdout.strip() == "WROTE" and store.read_json("run.json") == {}


def test_a_stale_lock_of_a_dead_process_is_taken_over(store):
    pid = dead_pid()
    fake_lock(store, pid)
    assert store.holder() is None  # its holder is gone
    with pytest.warns(UserWarning, match=f"pid {pid} on {socket.gethostname()}.*aetdask run \\(killed\\)"):
        store.write("raw", series(4.0), record={"fingerprint": "4"})
    assert store.read("raw").values.mean() == 4.0 and store.record("raw") == {"fingerprint": "4"}
    assert not lock_file(store).exists()

    fake_lock(store, pid)
    with pytest.warns(UserWarning, match="gone"), store.lock("next") as s:
        assert json.loads(lock_file(s).read_text())["pid"] == os.getpid()


@pytest.fixture
def sleeper():
    """A process that runs for as long as the test does."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_which_holders_count_as_alive(store, sleeper):
    alive = sleeper
    fake_lock(store, alive, host="elsewhere.example")  # another host: cannot be checked, so held
    with pytest.raises(StoreError, match="elsewhere.example \\(another host"):
        store.write_json("run.json", {})
    fake_lock(store, alive)  # a live process on this host
    with pytest.raises(StoreError, match=f"pid {alive} on"):
        store.write_json("run.json", {})
    assert store.holder()["pid"] == alive and not (store.path / "run.json").exists()

    fake_lock(store, os.getpid())  # this pid, but not this process's lock: an earlier process that had the pid
    with pytest.warns(UserWarning, match="gone"):
        store.write_json("run.json", {"n": 1})
    assert store.read_json("run.json") == {"n": 1} and not lock_file(store).exists()

    if pathlib.Path(f"/proc/{alive}/stat").exists():  # a pid reused by a process started later
        fake_lock(store, alive, process_start=1)
        with pytest.warns(UserWarning, match="gone"):
            store.write_json("run.json", {"n": 2})
        assert store.read_json("run.json") == {"n": 2}


def test_an_unreadable_lock_is_left_alone(store):
    lock_file(store).write_text("")
    with pytest.raises(StoreError, match="not a lock aetdask wrote.*remove it"):
        store.write_json("run.json", {})
    assert lock_file(store).read_text() == "" and not (store.path / "run.json").exists()


def test_lock_is_reentrant_and_released_by_the_outermost_block(store):
    with store.lock("outer") as s:
        assert s is store
        info = json.loads(lock_file(store).read_text())
        with store.lock("inner"):
            store.write("raw", series(2.0), record={"fingerprint": "2"})
            RunStore(store.path).write("volume", volume(np.ones((2, 3, 4), np.float32), 0.5))  # another object
            store.write_json("run.json", {"ok": True})
            (store.path / ".preprocessed.tmp-live0001").mkdir()  # as a write in progress would have it
            with store.lock("again"):  # not a fresh acquisition: does not clear
                assert (store.path / ".preprocessed.tmp-live0001").is_dir()
        assert json.loads(lock_file(store).read_text()) == info  # same lock, not rewritten by inner blocks
        assert info["command"] == "outer" and info["pid"] == os.getpid()
        assert store.holder() == info
    assert not lock_file(store).exists()
    assert store.products() == ["raw", "volume"] and store.read_json("run.json") == {"ok": True}

    with pytest.raises(RuntimeError, match="boom"), store.lock():
        raise RuntimeError("boom")
    assert not lock_file(store).exists()  # released on error


def test_lock_is_released_only_if_still_ours(store):
    with store.lock("mine"):
        fake_lock(store, os.getppid(), command="someone else")  # removed and taken meanwhile
    assert json.loads(lock_file(store).read_text())["command"] == "someone else"


def test_the_lock_file_is_no_product_and_no_zarr_node(store):
    with store.lock("aetdask run"), warnings.catch_warnings():
        warnings.simplefilter("error")
        store.write("raw", series(3.0))
        store.write("truth", model())
        assert lock_file(store).exists() and store.products() == ["raw", "truth"]
        assert xr.open_zarr(store.path, group="raw")["tilt_series"].values.mean() == 3.0
        assert xr.open_zarr(store.path, group="truth").position.shape == (5, 3)
        meta = json.loads((store.path / ".zmetadata").read_text())["metadata"]
        assert not any("lock" in k for k in meta) and "raw/.zgroup" in meta
        for product in ("raw", "truth"):
            assert not any(LOCK_NAME in str(p) for p in (store.path / product).rglob("*"))


# ----------------------------------------------------------------------------- a killed writer's leftovers
def killed_writer(tmp_path):
    """A store as a writer killed mid-run leaves it: its lock, a half temporary group, a product moved
    aside before its successor arrived, a replaced product not yet removed, a temporary side file."""
    store = RunStore(tmp_path / "run.zarr")
    store.write("raw", series(1.0), record={"fingerprint": "r"})
    store.write("volume", volume(np.full((2, 3, 4), 6.0, np.float32), 0.5), record={"fingerprint": "v"})
    store.write_json("metrics.json", {"n": 1})
    os.replace(store.path / "volume", store.path / ".volume.old-dead0001")  # killed between the two renames
    shutil.copytree(store.path / "raw", store.path / ".raw.old-dead0002")  # killed before removing the old one
    shutil.copytree(store.path / "raw", store.path / ".preprocessed.tmp-dead0003")  # killed while writing
    (store.path / ".metrics.json.tmp-dead0004").write_text('{"n": ')
    fake_lock(store, dead_pid())
    for p in [*store.path.rglob("*"), store.path]:  # old times: a change would show in any mtime
        os.utime(p, ns=(10**18, 10**18), follow_symlinks=False)
    return store


def test_reading_a_killed_writers_store_changes_nothing(tmp_path):
    store = killed_writer(tmp_path)
    before = snapshot(store.path)
    reader = RunStore(store.path, create=False)
    RunStore(store.path, create=False, writable=False)
    assert reader.products() == ["raw"] and "volume" not in reader
    assert reader.read("raw").values.mean() == 1.0 and reader.record("raw") == {"fingerprint": "r"}
    assert reader.record("volume") is None and reader.read_json("metrics.json") == {"n": 1}
    assert reader.holder() is None
    assert xr.open_zarr(store.path, group="raw")["tilt_series"].shape == (3, 4, 4)
    assert snapshot(store.path) == before

    RunStore(store.path, create=False, writable=True)  # opening to write checks, but clears nothing either
    assert {k: v for k, v in snapshot(store.path).items() if k != "."} == {k: v for k, v in before.items()
                                                                           if k != "."}


def test_the_next_writer_clears_a_killed_writers_leftovers(tmp_path):
    store = killed_writer(tmp_path)
    with pytest.warns(UserWarning, match="gone"):
        store.write_json("run.json", {})  # any write takes the lock, and clears first
    names = sorted(os.listdir(store.path))
    assert not [n for n in names if ".tmp-" in n or ".old-" in n], names
    assert "preprocessed" not in names and not lock_file(store).exists()
    assert store.products() == ["raw", "volume"]  # the moved-aside volume is back, with its record
    assert store.read("volume").values.mean() == 6.0 and store.record("volume") == {"fingerprint": "v"}
    assert store.read("raw").values.mean() == 1.0 and store.read_json("metrics.json") == {"n": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert xr.open_zarr(store.path, group="volume", consolidated=True)["volume"].shape == (2, 3, 4)
    assert "volume/.zgroup" in json.loads((store.path / ".zmetadata").read_text())["metadata"]
