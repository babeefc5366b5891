"""The aetdask page served by the scheduler, what reconstructions and campaigns publish to it, and `aetdask cluster`."""

import base64
import io
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
from click.testing import CliRunner
from distributed import Client, Event
from PIL import Image

from aetdask.cli import main
from aetdask.cluster import cluster, page_link
from aetdask.dashboard import RunMonitor, Throttle, current_state, publish, render_page
from aetdask.reconstruct import resire
from aetdask.schema import atoms
from aetdask.simulate import linear


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def points(page: str) -> int:
    return len(re.search(r'<polyline points="([^"]*)"', page).group(1).split())


def test_publish_without_a_client_does_nothing():
    try:
        Client.current()
    except ValueError:
        pass
    else:  # pragma: no cover
        pytest.skip("a distributed client was left open in this process")
    assert publish("reconstruction", {"method": "resire"}) is False
    throttle = Throttle("campaign")
    assert throttle(lambda: {"rows": []}, force=True) is False


@pytest.fixture(scope="module")
def client():
    with cluster(n_workers=2, processes=False, quiet=True) as c:
        yield c


def test_reconstruction_is_on_the_page(client):
    positions = [[0, 0, 0], [3.1, -2.0, 1.5], [-2.5, 2.2, -1.0], [1.0, 3.0, -3.0], [-3.0, -2.5, 2.0]]
    tilts = linear(atoms(positions, ["Pt"] * 5), angles=np.arange(-75, 90, 15)[:12], pixel_size=0.4, shape=32)
    vol = resire(tilts.compute(), iterations=20)
    r = vol.attrs["provenance"][-1]["params"]["r_factor"]
    assert len(r) == 20

    base = page_link(client.dashboard_link)
    rec = json.loads(get(base + "/state.json"))["reconstruction"]
    assert rec["method"] == "resire" and rec["done"] == rec["iterations"] == 20 and rec["finished"]
    its = rec["r_iterations"]  # as reported while it ran (per round), never resampled at the end
    assert its[-1] == 20 and its == sorted(set(its)) and rec["r_factor"] == [r[i - 1] for i in its]
    assert rec["voxel_size"] == 0.4
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(rec["slice"]["png"]))))
    assert image.shape == (32, 32) == tuple(rec["slice"]["shape"]) and image.dtype == np.uint8
    assert image.max() == 255 and image.min() == 0  # not blank: atoms in the central slice

    page = get(base)
    assert "<svg" in page and points(page) == len(its)
    assert "1 nm" in page and "y–x plane at the middle z" in page and "0.4 Å" in page
    assert f'<img class="slice" src="data:image/png;base64,{rec["slice"]["png"]}"' in page
    assert "iteration 20/20" in page and f"R = {r[-1]:.4f}" in page and 'href="status"' in page
    assert '<meta http-equiv="refresh" content="2">' in page and "<script" not in page


def test_a_run_shows_its_stages_and_how_it_ended(client):
    base = page_link(client.dashboard_link)
    with RunMonitor("/data/first.zarr", ["import", "reconstruction", "tracing"]) as run:
        run.stage(0, "kept")
        run.stage(1, "running")
        page = get(base)
        assert "Run: /data/first.zarr" in page and "stage 2/3: reconstruction" in page and "running" in page
        run.stage(1, "done", 12.5)
    state = json.loads(get(base + "/state.json"))
    first = next(r for r in state["runs"] if r["store"] == "/data/first.zarr")
    assert first["state"] == "finished" and [s["state"] for s in first["stages"]] == ["kept", "done", "to do"]
    assert first["stages"][1]["seconds"] == 12.5

    with pytest.raises(KeyboardInterrupt), RunMonitor("/data/second.zarr", ["import", "tracing"]) as run:
        run.stage(0, "running")
        raise KeyboardInterrupt
    with pytest.raises(ValueError), RunMonitor("/data/third.zarr", ["import"]) as run:
        run.stage(0, "running")
        raise ValueError("no vacuum")
    runs = {r["store"]: r for r in json.loads(get(base + "/state.json"))["runs"]}
    assert runs["/data/second.zarr"]["state"] == "stopped" and runs["/data/second.zarr"]["stages"][0]["state"] == "stopped"
    assert runs["/data/third.zarr"]["state"] == "failed" and runs["/data/third.zarr"]["error"] == "no vacuum"
    page = get(base + "/")  # the page also answers at /aetdask/, its links leading back to the root
    assert "Run: /data/second.zarr" in page and "<b>stopped</b>" in page and "no vacuum" in page
    assert 'href="../status"' in page


def test_a_running_step_shows_its_progress_and_the_time_it_still_needs(client):
    from aetdask.progress import Line

    base = page_link(client.dashboard_link)
    with RunMonitor("/data/steps.zarr", ["import", "refinement"]) as run:
        run.stage(1, "running")
        step = Line("refining 500 atoms", total=40, stream=io.StringIO())
        step.started -= 30.0  # as if it began 30 s ago
        step.update(10, "misfit 1.5")
        run._throttle(run._payload, force=True)
        page = get(base)
        assert "refining 500 atoms: 10/40 (25 %) · misfit 1.5" in page
        left = json.loads(get(base + "/state.json"))
        left = next(r for r in left["runs"] if r["store"] == "/data/steps.zarr")["step"]["left"]
        assert 85.0 <= left <= 100.0  # 30 s for a quarter: about 90 s for the rest
        step.close()
    runs = {r["store"]: r for r in json.loads(get(base + "/state.json"))["runs"]}
    assert runs["/data/steps.zarr"]["state"] == "finished" and runs["/data/steps.zarr"]["step"] is None
    Line("after the run", total=1, stream=io.StringIO()).close()  # no longer listened to: nothing to fail


def test_a_run_that_went_silent_is_not_shown_as_running():
    run = {"store": "gone.zarr", "state": "running", "stages": [{"label": "tracing", "state": "running"}],
           "current": 0, "heartbeat": 10.0, "updated": time.time() - 300, "host": "node1", "pid": 42}
    page = render_page({"runs": [run]})
    assert "silent for" in page and "stopped?" in page and "node1 pid 42" in page


def wait_for_event(name):
    return Event(name).wait(30)


def task_state(key, dask_scheduler=None):
    return getattr(dask_scheduler.tasks.get(key), "state", None)


def test_campaign_table_counts(client):
    release = Event("aetdask-test-release")
    busy = client.submit(wait_for_event, "aetdask-test-release", key="aetdask-test-busy")
    deadline = time.time() + 20
    while client.run_on_scheduler(task_state, "aetdask-test-busy") != "processing" and time.time() < deadline:
        time.sleep(0.05)
    rows = [{"particle": "pt12", "mode": "focus", "total": 8, "done": 5, "failed": 1,
             "keys": ["aetdask-test-busy", "gone-1"], "doses": {"dose-1e+04": False, "dose-1e+05": False}},
            {"particle": "si<film>", "mode": "defocus-3nm", "total": 8, "done": 8, "failed": 0, "keys": [],
             "doses": {"dose-1e+04": True, "dose-1e+05": False}}]
    assert publish("campaign", {"store": "c.zarr", "doses": ["dose-1e+04", "dose-1e+05"], "rows": rows,
                                "finished": False, "updated": time.time()})
    base = page_link(client.dashboard_link)
    state = json.loads(get(base + "/state.json"))["campaign"]
    assert [(r["done"], r["running"], r["failed"], r["total"]) for r in state["rows"]] == [(5, 1, 1, 8), (8, 0, 0, 8)]
    assert all("keys" not in r for r in state["rows"])  # the scheduler counts the running ones
    page = get(base)
    page = page[page.index("<h2>Campaign"):]  # (runs of other tests come first)
    table = page[page.index("<table>"):page.index("</table>")]
    assert "<td>pt12</td><td>focus</td><td>5</td><td>1</td><td>1</td><td>8</td>" in table
    assert "<td>si&lt;film&gt;</td><td>defocus-3nm</td><td>8</td><td>0</td><td>0</td><td>8</td>" in table
    assert table.count("<tr>") == 3 and table.count("written") == 1 and table.count("to do") == 3
    assert 'class="done" style="width:62.5%"' in table and 'class="run" style="width:12.5%"' in table
    release.set()
    assert busy.result()


def test_throttle_sends_the_latest_once_the_interval_is_over(monkeypatch):
    import aetdask.dashboard

    sent = []
    monkeypatch.setattr(aetdask.dashboard, "publish", lambda topic, payload: sent.append(payload) or True)
    throttle = Throttle("t", interval=0.3)
    assert throttle(lambda: 1) and not throttle(lambda: 2) and not throttle(lambda: 3)
    assert sent == [1]
    deadline = time.time() + 5
    while len(sent) < 2 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.4)
    assert sent == [1, 3]  # 2 was overtaken, 3 went when the interval was over, nothing twice
    assert throttle(lambda: 4, force=True) and sent == [1, 3, 4]


def test_nothing_published_yet():
    assert "Nothing has reported here yet" in render_page({})

    class Empty:
        tasks = {}

        def get_metadata(self, keys, default=None):
            return default

    assert current_state(Empty()) == {}


# ---------------------------------------------------------------- `aetdask cluster` as a command
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Command:
    """A long-running `aetdask` command; its output lines in a queue."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "aetdask.cli", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert self.proc.poll() is None, "".join(self.seen)
                continue
            self.seen.append(line)
            m = re.search(pattern, line)
            if m:
                return m
        raise AssertionError(f"no {pattern!r} in {''.join(self.seen)}")

    def interrupt(self, timeout=60) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def workers(c: Client) -> int:
    return len(c.scheduler_info(n_workers=-1)["workers"])


def test_cluster_command_serves_reconstructs_joins_and_stops(tmp_path):
    port = free_port()
    served = Command("cluster", "--workers", "2", "--port", str(port), "--dashboard-address", ":0")
    joined = None
    try:
        address = served.wait_for(r"scheduler (tcp://\S+),")[1]
        assert address == f"tcp://127.0.0.1:{port}"
        page = served.wait_for(r"aetdask page:\s+(\S+)")[1]
        served.wait_for(r"^Ctrl-C")
        joined = Command("cluster", "--join", address, "--workers", "1")  # starts while we reconstruct
        with Client(address) as c:
            assert workers(c) == 2
            assert "Nothing has reported here yet" in get(page) and json.loads(get(page + "/state.json")) == {}
            assert c.submit(publish, "probe", {"from": "a task"}, pure=False).result()  # in a worker process
            assert c.get_metadata(["aetdask", "probe"]) == {"from": "a task"}
            store = str(tmp_path / "sim.zarr")
            runner = CliRunner()
            r = runner.invoke(main, ["simulate", "--n-atoms", "12", "--shape", "32", "--out", store,
                                     "--scheduler", address])
            assert r.exit_code == 0, r.output
            r = runner.invoke(main, ["reconstruct", store, "--iterations", "20", "--scheduler", address, "--json"])
            assert r.exit_code == 0, r.output
            out = json.loads(r.output.strip().splitlines()[-1])
            rec = json.loads(get(page + "/state.json"))["reconstruction"]
            assert rec["done"] == out["iterations"] == 20 and rec["r_factor"][-1] == out["r_factor"]

            joined.wait_for(r"joined " + re.escape(address))
            assert workers(c) == 3
            assert joined.interrupt() == 0
            deadline = time.time() + 30
            while workers(c) > 2 and time.time() < deadline:
                time.sleep(0.1)
            assert workers(c) == 2
        t0 = time.time()
        assert served.interrupt(timeout=30) == 0 and time.time() - t0 < 30
    finally:
        served.kill()
        if joined is not None:
            joined.kill()
