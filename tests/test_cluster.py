import time
import urllib.request

import dask
import pytest
from click.testing import CliRunner

from aetdask.cli import main
from aetdask.cluster import ROUTES, cluster, compute, page_link, scheduler_settings


def test_local_cluster_serves_a_real_bokeh_dashboard_and_the_aetdask_page(capsys):
    with cluster(n_workers=1, processes=False) as client:
        assert client.submit(sum, [1, 2, 3]).result() == 6
        link = client.dashboard_link
        page = urllib.request.urlopen(link, timeout=30).read().decode()
        ours = urllib.request.urlopen(page_link(link), timeout=30).read().decode()
    out = capsys.readouterr().out
    assert f"Dask dashboard: {link}" in out and f"aetdask page:   {page_link(link)}" in out
    assert "Bokeh.embed" in page and "bokeh.min.js" in page  # without bokeh: a placeholder page
    assert "<title>aetdask</title>" in ours and 'href="status"' in ours


def test_scheduler_settings_add_the_page_to_the_stock_routes():
    stock = dask.config.get("distributed.scheduler.http.routes")
    routes = scheduler_settings()["distributed.scheduler.http.routes"]
    assert routes == stock + [ROUTES] and ROUTES not in stock
    with dask.config.set({"distributed.scheduler.http.routes": routes}):
        assert scheduler_settings()["distributed.scheduler.http.routes"] == routes  # not twice


def _fail():
    raise ValueError("no")


def test_compute_reports_each_result_as_it_is_in():
    seen = []
    with cluster(n_workers=1, processes=False, quiet=True):
        assert compute([dask.delayed(sum)([1, 2])], on_done=lambda f: seen.append(f.status)) == [3]
        with pytest.raises(ValueError, match="no"):
            compute([dask.delayed(_fail)()], on_done=lambda f: seen.append(f.status))
        deadline = time.time() + 10  # the callbacks run in a thread of the client
        while len(seen) < 2 and time.time() < deadline:
            time.sleep(0.01)
    assert sorted(seen) == ["error", "finished"]
    assert compute([dask.delayed(sum)([1, 2])], on_done=seen.append) == [3]  # no client: plain dask


def test_cluster_gpu_without_a_gpu_is_a_clear_error():
    from aetdask.backend import cupy_available

    if cupy_available():
        pytest.skip("a GPU is here")
    r = CliRunner().invoke(main, ["cluster", "--gpu", "--port", "0", "--dashboard-address", ":0"])
    assert r.exit_code == 2 and "--gpu needs CuPy, dask-cuda and a GPU" in r.output


def test_an_unreachable_scheduler_is_a_clear_input_error():
    import dask
    import pytest

    from aetdask.cluster import cluster
    from aetdask.errors import InputError

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(InputError, match="cannot connect"), cluster("tcp://127.0.0.1:9", quiet=True):
        pass


def test_closing_a_commands_own_cluster_silences_only_a_lost_heartbeat():
    """A heartbeat in flight while the command's cluster closes finds the scheduler gone: distributed logs that
    at ERROR with a traceback. From the moment the command closes its cluster, that record (and only it) is
    dropped on the workers; before, it is logged like any other."""
    import logging

    from aetdask.cluster import _ShutdownFilter, cluster

    logger = logging.getLogger("distributed.worker")
    for f in [f for f in logger.filters if isinstance(f, _ShutdownFilter)]:
        logger.removeFilter(f)

    def record(msg):
        return logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, msg, None, None)

    lost = record("Failed to communicate with scheduler during heartbeat.")
    with cluster(n_workers=1, processes=False, quiet=True) as client:
        assert client.run(lambda: logging.getLogger("distributed.worker").filter(lost))
    assert not logger.filter(lost)  # dropped once closing
    assert logger.filter(record("Worker stream died during communication"))  # everything else still logged
    for f in [f for f in logger.filters if isinstance(f, _ShutdownFilter)]:
        logger.removeFilter(f)
