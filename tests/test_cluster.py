import urllib.request

from aetdask.cluster import cluster


def test_local_cluster_serves_a_real_bokeh_dashboard(capsys):
    with cluster(n_workers=1, processes=False) as client:
        assert client.submit(sum, [1, 2, 3]).result() == 6
        link = client.dashboard_link
        page = urllib.request.urlopen(link, timeout=30).read().decode()
    assert f"Dask dashboard: {link}" in capsys.readouterr().out
    assert "Bokeh.embed" in page and "bokeh.min.js" in page  # without bokeh: a placeholder page
