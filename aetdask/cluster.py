"""Where the work runs: the embedded local Dask cluster, or an existing one.

Examples
--------
>>> with cluster(n_workers=1, processes=False, quiet=True) as client:  # doctest: +SKIP
...     client.dashboard_link
"""

from __future__ import annotations

import contextlib
import os

import dask

from aetdask import config


def worker_environment() -> dict:
    """Environment of local worker processes: distributed's, less ``MALLOC_TRIM_THRESHOLD_``.

    Setting that variable at all turns off glibc's adaptive mmap threshold, so every large
    temporary array is mapped and unmapped afresh; multislice simulation (many FFT buffers
    per probe batch) then ran 2.2× slower in a worker than in a plain process.
    """
    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    return env


@contextlib.contextmanager
def cluster(scheduler: str | None = None, n_workers: int | None = None, processes: bool = True, quiet: bool = False):
    """A ``distributed.Client`` for the duration of a ``with`` block.

    ``scheduler`` (or ``aetdask.scheduler`` in config) joins a running cluster;
    otherwise a ``LocalCluster`` with one single-threaded worker process per core
    is started and closed afterwards — or, with ``aetdask.device: gpu`` and dask-cuda
    installed, a ``LocalCUDACluster`` with one worker per GPU. The dashboard link is printed.
    """
    from distributed import Client, LocalCluster

    address = config.get("scheduler", scheduler)
    if address:
        client = Client(address)
        local = None
    else:
        n = n_workers or max(1, os.cpu_count() or 1)
        with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environment()}):
            local = None
            if config.get("device") == "gpu" and processes:
                from aetdask.backend import local_cuda_cluster

                local = local_cuda_cluster(dashboard_address=":0", silence_logs=40)  # one worker per GPU
            if local is None:
                local = LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=processes, dashboard_address=":0", silence_logs=40
                )
        client = Client(local)
    if not quiet:
        print(f"Dask dashboard: {client.dashboard_link}")
    try:
        yield client
    finally:
        client.close()
        if local is not None:
            local.close()


def compute(collections, progress: bool = False, label: str | None = None) -> list:
    """``dask.compute(*collections)`` as a list, with a progress bar when asked.

    On the active distributed client the bar is distributed's (the work shows
    on the dashboard); otherwise dask's local ``ProgressBar``.
    """
    import dask

    collections = list(collections)
    if not progress:
        return list(dask.compute(*collections))
    if label:
        print(label)
    try:
        from distributed import get_client
        from distributed import progress as dist_progress

        client = get_client()
    except (ImportError, ValueError):
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            return list(dask.compute(*collections))
    futures = client.compute(collections)
    dist_progress(futures)
    print()
    return client.gather(futures)
