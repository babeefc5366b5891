"""Where the work runs: the embedded local Dask cluster, or an existing one.

:func:`cluster` gives a client for one command (a local cluster started and closed
with it, or a running one joined); :func:`serve` and :func:`join` keep a cluster up
by hand (``aetdask cluster``) for several commands or several nodes. Every scheduler
started here also serves the aetdask page (:mod:`aetdask.dashboard`) next to the
stock dashboard.

Examples
--------
>>> with cluster(n_workers=1, processes=False, quiet=True) as client:  # doctest: +SKIP
...     client.dashboard_link
>>> page_link("http://127.0.0.1:8787/status")
'http://127.0.0.1:8787/aetdask'
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

import dask

from aetdask import config
from aetdask.errors import InputError

ROUTES = "aetdask.dashboard"  # the module of the aetdask page, for distributed.scheduler.http.routes


def worker_environment() -> dict:
    """Environment of local worker processes: distributed's, less ``MALLOC_TRIM_THRESHOLD_``.

    Setting that variable at all turns off glibc's adaptive mmap threshold, so every large
    temporary array is mapped and unmapped afresh; multislice simulation (many FFT buffers
    per probe batch) then ran 2.2× slower in a worker than in a plain process.
    """
    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    return env


def scheduler_settings() -> dict:
    """``dask.config`` settings for local schedulers and workers started here.

    The scheduler's HTTP routes gain the aetdask page; worker processes get
    :func:`worker_environment`.
    """
    routes = list(dask.config.get("distributed.scheduler.http.routes", []))
    return {
        "distributed.scheduler.http.routes": routes if ROUTES in routes else routes + [ROUTES],
        "distributed.nanny.pre-spawn-environ": worker_environment(),
    }


def page_link(dashboard_link: str) -> str:
    """The aetdask page next to a dashboard link (``.../status`` → ``.../aetdask``)."""
    base = dashboard_link[: -len("/status")] if dashboard_link.endswith("/status") else dashboard_link.rstrip("/")
    return base + "/aetdask"


def active_client():
    """The distributed client of this process or of the task running here, or None (cheaply)."""
    if "distributed" not in sys.modules:  # nothing can have started a client
        return None
    from distributed import Client, get_client, get_worker

    try:
        return Client.current()
    except ValueError:
        pass
    try:
        get_worker()
    except ValueError:
        return None
    return get_client()


def _serves_page() -> bool:
    return ROUTES in sys.modules


def _links(client) -> str:
    """The dashboard link, and the aetdask page's where the scheduler serves it."""
    text = f"Dask dashboard: {client.dashboard_link}"
    try:
        serves = client.run_on_scheduler(_serves_page)
    except Exception:  # a scheduler that runs no foreign functions: just no page link
        serves = False
    if serves:
        text += f"\naetdask page:   {page_link(client.dashboard_link)}"
    return text


@contextlib.contextmanager
def cluster(scheduler: str | None = None, n_workers: int | None = None, processes: bool = True, quiet: bool = False):
    """A ``distributed.Client`` for the duration of a ``with`` block.

    ``scheduler`` (or ``aetdask.scheduler`` in config) joins a running cluster;
    otherwise a ``LocalCluster`` with one single-threaded worker process per core
    is started and closed afterwards — or, with ``aetdask.device: gpu`` and dask-cuda
    installed, a ``LocalCUDACluster`` with one worker per GPU. The dashboard link
    is printed, with the aetdask page's where the scheduler serves it (always, for
    a cluster started here).
    """
    from distributed import Client, LocalCluster

    address = config.get("scheduler", scheduler)
    if address:
        try:
            client = Client(address)
        except OSError as exc:
            raise InputError(f"scheduler {address}: cannot connect ({exc}); expected the address of a running Dask "
                             f"scheduler, e.g. the one `aetdask cluster` prints") from None
        local = None
    else:
        n = n_workers or max(1, os.cpu_count() or 1)
        with dask.config.set(scheduler_settings()):
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
        print(_links(client))
    try:
        yield client
    finally:
        client.close()
        if local is not None:
            local.close()


@contextlib.contextmanager
def _stop_signals():
    """An ``asyncio.Event`` set by the first SIGINT or SIGTERM in the block (a second one interrupts)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)

    def on_signal():
        stop.set()
        for sig in signals:
            loop.remove_signal_handler(sig)

    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    try:
        yield stop
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def _until(*events) -> None:
    """Wait for the first of ``events`` (awaitables) to end."""
    waiters = [asyncio.ensure_future(e) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def dask_setup(worker) -> None:
    """Worker preload of :func:`serve` and :func:`join`: Ctrl-C in the terminal is for the command.

    The command stops its workers itself; a worker process that took the terminal's
    SIGINT would die mid-task with a traceback first.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _held_settings() -> dict:
    preload = list(dask.config.get("distributed.worker.preload", []))
    return {**scheduler_settings(), "distributed.worker.preload": preload + [__name__]}


def serve(n_workers: int | None = None, threads_per_worker: int = 1, memory_limit="auto", host: str = "127.0.0.1",
          port: int = 8786, dashboard_address: str = ":8787", gpu: bool = False, echo=print) -> None:
    """Run a scheduler and local workers until SIGINT or SIGTERM (``aetdask cluster``).

    ``n_workers`` worker processes (default one per core; with ``gpu``, dask-cuda's
    ``LocalCUDACluster``: one per GPU) of ``threads_per_worker`` threads each. The
    scheduler listens on ``host:port`` (``0.0.0.0``: every interface, so that workers
    on other nodes can :func:`join`) and serves the dashboard and the aetdask page
    on ``dashboard_address``. What to type to use it is written with ``echo``.
    """
    asyncio.run(_serve(n_workers, threads_per_worker, memory_limit, host, port, dashboard_address, gpu, echo))


async def _serve(n_workers, threads_per_worker, memory_limit, host, port, dashboard_address, gpu, echo) -> None:
    from distributed import LocalCluster

    common = dict(threads_per_worker=threads_per_worker, memory_limit=memory_limit, host=host, scheduler_port=port,
                  dashboard_address=dashboard_address, silence_logs=40, asynchronous=True)
    with _stop_signals() as stop, dask.config.set(_held_settings()):
        if gpu:
            from aetdask.backend import local_cuda_cluster

            local = local_cuda_cluster(**common, **({"n_workers": n_workers} if n_workers else {}))
            if local is None:
                raise InputError("--gpu needs CuPy, dask-cuda and a GPU: pip install 'aetdask[gpu]'")
        else:
            local = LocalCluster(n_workers=n_workers or max(1, os.cpu_count() or 1), **common)
        try:
            await local
            address = local.scheduler_address
            echo(f"aetdask cluster: scheduler {address}, {len(local.scheduler.workers)} worker(s) × "
                 f"{threads_per_worker} thread(s)\n"
                 f"Dask dashboard: {local.dashboard_link}\n"
                 f"aetdask page:   {page_link(local.dashboard_link)}\n"
                 f"Use it:         aetdask run ... --scheduler {address}\n"
                 f"More workers:   aetdask cluster --join {address} --workers N   (on any node that reaches it"
                 f"{'; start with --host 0.0.0.0 for other nodes' if host in ('127.0.0.1', 'localhost') else ''})\n"
                 "Ctrl-C stops the scheduler and its workers.")
            await stop.wait()
            echo("aetdask cluster: stopping")
        finally:
            await local.close()


def join(address: str, n_workers: int | None = None, threads_per_worker: int = 1, memory_limit="auto",
         host: str | None = None, gpu: bool = False, echo=print) -> None:
    """Run worker processes on this node for the scheduler at ``address`` until SIGINT or SIGTERM.

    ``n_workers`` nannies (default one per core), each watching one worker process
    of ``threads_per_worker`` threads; with ``gpu``, dask-cuda's ``CUDAWorker`` (one
    worker per GPU). Returns when stopped or when the workers end (the scheduler
    went away).
    """
    asyncio.run(_join(address, n_workers, threads_per_worker, memory_limit, host, gpu, echo))


async def _join(address, n_workers, threads_per_worker, memory_limit, host, gpu, echo) -> None:
    from distributed.utils import silence_logging_cmgr

    with _stop_signals() as stop, dask.config.set(_held_settings()), silence_logging_cmgr(40):
        if gpu:
            from aetdask.backend import cuda_worker

            worker = cuda_worker(address, host=host, nthreads=threads_per_worker, memory_limit=memory_limit,
                                 preload=[__name__])
            if worker is None:
                raise InputError("--gpu needs dask-cuda: pip install 'aetdask[gpu]'")
            workers = [worker]
        else:
            from distributed import Nanny

            workers = [Nanny(address, host=host, nthreads=threads_per_worker, memory_limit=memory_limit)
                       for _ in range(n_workers or max(1, os.cpu_count() or 1))]
        try:
            try:
                await asyncio.gather(*workers)
            except (OSError, TimeoutError, RuntimeError) as exc:
                raise InputError(f"could not join the scheduler at {address}: {exc}") from None
            n = sum(len(getattr(w, "nannies", [w])) for w in workers)
            echo(f"aetdask cluster: {n} worker process(es) × {threads_per_worker} thread(s) joined {address}\n"
                 "Ctrl-C stops them.")
            await _until(stop.wait(), *(w.finished() for w in workers))
            echo("aetdask cluster: stopping")
        finally:
            await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)


def compute(collections, progress: bool = False, label: str | None = None, on_done=None) -> list:
    """``dask.compute(*collections)`` as a list, with a progress bar when asked.

    On the active distributed client the bar is distributed's (the work shows
    on the dashboard), and ``on_done(future)`` is called as each result is in
    (or failed), in a thread of the client; otherwise dask's local ``ProgressBar``.
    """
    collections = list(collections)
    if progress and label:
        print(label)
    client = active_client()
    if client is None and progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            return list(dask.compute(*collections))
    if client is None or (not progress and on_done is None):
        return list(dask.compute(*collections))
    futures = client.compute(collections)
    if on_done is not None:
        for future in futures:
            future.add_done_callback(on_done)
    if progress:
        from distributed import progress as dist_progress

        dist_progress(futures)
        print()
    return client.gather(futures)
