"""What aetdask's clusters listen on: this machine's loopback only, unless asked (then with a warning).

A Dask scheduler runs whatever a client sends it, and its dashboard (with the aetdask page's live
slices of the data) has no authentication: neither may listen beyond 127.0.0.1 by default.
"""

import ipaddress
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.parse

import pytest
from click.testing import CliRunner

from aetdask.cli import main
from aetdask.cluster import LOOPBACK, cluster, dashboard_bind, exposure_warnings, is_loopback

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _bound(http_server) -> list[str]:
    from distributed.comm.utils import get_tcp_server_addresses

    return [a[0] for a in get_tcp_server_addresses(http_server)]


def _loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


@pytest.mark.parametrize("processes", [False, True])
def test_the_local_cluster_listens_on_loopback_only(processes):
    with cluster(None, n_workers=1, processes=processes, quiet=True) as client:
        local = client.cluster
        assert client.submit(sum, [1, 2]).result() == 3
        info = client.scheduler_info()
        assert info["address"].startswith(f"tcp://{LOOPBACK}:") or info["address"].startswith(f"tls://{LOOPBACK}:")
        assert all(urllib.parse.urlparse(w).hostname == LOOPBACK for w in info["workers"])
        assert all(_loopback(urllib.parse.urlparse(listener.listen_address).hostname)
                   for listener in local.scheduler.listeners)
        bound = _bound(local.scheduler.http_server)  # the dashboard and the aetdask page
        assert bound and all(_loopback(h) for h in bound), bound
        assert urllib.parse.urlparse(client.dashboard_link).hostname == LOOPBACK  # the link printed works
        assert urllib.parse.urlparse(local.dashboard_link).hostname == LOOPBACK


def test_dashboard_addresses_are_on_loopback_unless_an_interface_is_named():
    assert dashboard_bind(None) == "127.0.0.1:8787"
    assert dashboard_bind(":8787") == "127.0.0.1:8787" and dashboard_bind("9000") == "127.0.0.1:9000"
    assert dashboard_bind("0.0.0.0:8787") == "0.0.0.0:8787" and dashboard_bind("[::1]:0") == "[::1]:0"
    from aetdask.errors import InputError

    with pytest.raises(InputError, match="--dashboard-address"):
        dashboard_bind("nonsense")


def test_loopback_and_what_is_not():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("tcp://127.0.0.1:8786")
    assert is_loopback("[::1]:8787") and is_loopback("127.0.0.1:0")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback(None) and not is_loopback("::")
    assert not is_loopback("0.0.0.0:8787") and not is_loopback("tcp://10.1.2.3:8786")


def test_a_warning_for_each_thing_that_listens_beyond_this_machine():
    assert exposure_warnings(scheduler_host="127.0.0.1", dashboard="127.0.0.1:8787") == []
    lines = exposure_warnings(scheduler_host="0.0.0.0", dashboard="0.0.0.0:8787")
    assert len(lines) == 2 and all(line.startswith("warning: ") and "\n" not in line for line in lines)
    assert "scheduler listens on 0.0.0.0" in lines[0] and "no authentication without TLS" in lines[0]
    assert "dashboard" in lines[1] and "0.0.0.0:8787" in lines[1]
    assert exposure_warnings(workers_host=None, joined="tcp://10.1.2.3:8786")[0].startswith(
        "warning: these workers listen on every interface")
    assert exposure_warnings(workers_host="127.0.0.1", joined="tcp://127.0.0.1:8786") == []


def _serve(*args, timeout=120):
    """``aetdask cluster ARGS`` until it is up; then Ctrl-C. Its stdout and stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "aetdask.cli", "cluster", "--workers", "1", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    out = []
    deadline = time.time() + timeout
    try:
        for line in proc.stdout:
            out.append(line)
            if "Ctrl-C" in line or time.time() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, err = proc.communicate()
    return "".join(out) + rest, err


def test_aetdask_cluster_listens_on_loopback_by_default():
    out, err = _serve("--dashboard-address", ":0")  # a bare port (any free one here): on the loopback too
    assert "scheduler tcp://127.0.0.1:" in out, out + err
    assert "Dask dashboard: http://127.0.0.1:" in out and "aetdask page:   http://127.0.0.1:" in out
    assert "warning" not in err, err


def test_aetdask_cluster_warns_when_asked_to_listen_elsewhere():
    out, err = _serve("--host", "0.0.0.0", "--dashboard-address", "0.0.0.0:0")
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, out + err
    assert "scheduler listens on 0.0.0.0" in warnings[0] and "TLS" in warnings[0]
    assert "dashboard and the aetdask page listen on 0.0.0.0:0" in warnings[1]
    assert "aetdask cluster: scheduler tcp://" in out


def test_a_dashboard_address_without_a_port_is_refused_before_anything_starts():
    r = CliRunner().invoke(main, ["cluster", "--dashboard-address", "localhost"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert [line for line in r.output.splitlines() if line.startswith("error:")] == [
        "error: --dashboard-address localhost: expected HOST:PORT or :PORT, e.g. 127.0.0.1:8787"]
