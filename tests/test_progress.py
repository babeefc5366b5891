"""One progress channel: redrawn lines on a terminal, a few plain lines per step in a log."""

import io
import time

import dask.array as da
import numpy as np

from aetdask import progress
from aetdask.cluster import compute


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_a_few_plain_lines_however_many_updates(monkeypatch):
    log = io.StringIO()
    line = progress.Line("refining", total=10_000, stream=log, interval=0.05)
    t0 = time.perf_counter()
    for k in range(10_000):
        line.update(k + 1, f"misfit {k}")
        if k % 1000 == 0:
            time.sleep(0.02)
    line.close()
    lines = log.getvalue().splitlines()
    elapsed = time.perf_counter() - t0
    assert "\r" not in log.getvalue() and "\033" not in log.getvalue()
    assert 1 <= len(lines) <= elapsed / 0.05 + 2  # at most one per interval, and the last
    assert lines[-1] == "refining: 10000/10000 (100%) misfit 9999"


def test_a_short_step_in_a_log_is_one_line():
    log = io.StringIO()
    line = progress.Line("writing volume", total=3, stream=log)
    for k in range(3):
        line.update(k + 1)
    line.close()
    assert log.getvalue() == "writing volume: 3/3 (100%)\n"


def test_a_terminal_line_is_redrawn_in_place_and_ended():
    tty = Terminal()
    line = progress.Line("RESIRE iterations", total=4, stream=tty)
    line.update(1, "R = 0.5")
    line.close("R = 0.1")
    out = tty.getvalue()
    assert out.startswith("\r") and out.endswith("\n") and out.count("\n") == 1
    assert "[" in out and "R = 0.1" in out.splitlines()[-1]


def test_dask_computations_report_their_tasks_on_one_line(capsys):
    x = da.ones((64, 64), chunks=16)
    (total,) = compute([x.sum()], progress=True, label="summing")
    assert total == 64 * 64
    out = capsys.readouterr().out
    assert out.splitlines() == [f"summing: {out.split('/')[1].split()[0]}/{out.split('/')[1].split()[0]} (100%)"]


def test_distributed_computations_report_their_tasks_on_one_line(capsys):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster):
        x = da.from_array(np.arange(100.0), chunks=10)
        (total,) = compute([x.sum()], progress=True, label="summing")
    assert total == 4950.0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("summing")]
    assert len(lines) == 1 and lines[0].endswith("(100%)"), lines
