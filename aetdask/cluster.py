"""Where the work runs: the embedded local Dask cluster, or an existing one.

:func:`cluster` gives a client for one command (a local cluster started and closed
with it, or a running one joined); :func:`serve` and :func:`join` keep a cluster up
by hand (``aetdask cluster``) for several commands or several nodes. Every scheduler
started here also serves the aetdask page (:mod:`aetdask.dashboard`) next to the
stock dashboard.

Everything started here listens on this machine's loopback interface (127.0.0.1)
unless asked otherwise: a Dask scheduler runs any function a client sends it, and
its dashboard and the aetdask page show the work and live slices of the data,
without authentication unless TLS is configured (``distributed.comm.tls``).
:func:`exposure_warnings` says what listening elsewhere exposes.

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
import ipaddress
import logging
import os
import signal
import socket
import sys

import dask

from aetdask import config
from aetdask.errors import InputError

ROUTES = "aetdask.dashboard"  # the module of the aetdask page, for distributed.scheduler.http.routes
LOOPBACK = "127.0.0.1"  # where everything started here listens unless asked otherwise


class _TaskFailureFilter(logging.Filter):
    """Drops the worker's "Compute Failed" record (the task, its exception and the worker-side traceback, logged
    at ERROR): the exception itself reaches the client that computes, which reports it — one line for bad input,
    the full traceback for a bug — so the dump only repeats it, in Dask's words, before the command's own line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Compute Failed")


def quiet_task_failures() -> None:
    """Stop ``distributed.worker`` in this process from logging "Compute Failed" (see :class:`_TaskFailureFilter`);
    every other record (a worker that died, lost connections, ...) is logged as before. Idempotent."""
    logger = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _TaskFailureFilter) for f in logger.filters):
        logger.addFilter(_TaskFailureFilter())


class _ShutdownFilter(logging.Filter):
    """Drops a worker's "Failed to communicate with scheduler during heartbeat" record (ERROR, with a traceback):
    while a cluster started for one command closes, a heartbeat in flight finds the scheduler gone."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to communicate with scheduler")


def quiet_shutdown() -> None:
    """Stop ``distributed.worker`` in this process from logging a lost heartbeat (:class:`_ShutdownFilter`): run
    on a cluster's workers just before the command that started it closes it. Idempotent."""
    logger = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _ShutdownFilter) for f in logger.filters):
        logger.addFilter(_ShutdownFilter())


def _quiet_task_failures_plugin():
    """A worker plugin that runs :func:`quiet_task_failures` in every worker process of a cluster started here
    (also in those started later, e.g. after one died)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class QuietTaskFailures(WorkerPlugin):
        name = "aetdask-quiet-task-failures"

        def setup(self, worker):
            quiet_task_failures()

    return QuietTaskFailures()


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


def dashboard_bind(address: str | int | None, default_port: int = 8787) -> str:
    """A dashboard address as ``HOST:PORT``, on the loopback interface unless it names a host.

    Dask reads a bare ``:PORT`` as every interface; here it means this machine only, so
    that the dashboard is exposed only when an interface is named.

    >>> dashboard_bind(None), dashboard_bind(":8787"), dashboard_bind("0.0.0.0:8787")
    ('127.0.0.1:8787', '127.0.0.1:8787', '0.0.0.0:8787')
    """
    text = "" if address is None else str(address).strip()
    if not text:
        return f"{LOOPBACK}:{default_port}"
    if text.isdigit():
        return f"{LOOPBACK}:{text}"
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or host.count(":") and not host.startswith("["):  # not HOST:PORT
        raise InputError(f"--dashboard-address {address}: expected HOST:PORT or :PORT, e.g. 127.0.0.1:8787")
    return f"{host or LOOPBACK}:{port}"


def memory_limit_option(value) -> str | float:
    """``--memory-limit`` as Dask takes it, or :class:`InputError`: ``auto``, ``0`` (no limit), a size such as
    ``8GiB``, or a fraction of this node's memory in (0, 1].

    >>> memory_limit_option("auto"), memory_limit_option("8GiB"), memory_limit_option("0.5")
    ('auto', '8GiB', 0.5)
    """
    from dask.utils import parse_bytes

    text = str(value).strip()
    if text.lower() == "auto":
        return "auto"
    expected = "expected auto, 0 (no limit), a size such as 8GiB, or a fraction of this node's memory in (0, 1]"
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        if number == 0 or 0 < number <= 1:
            return number if number else "0"
        if number > 1 and number == int(number):  # bytes
            return text
        raise InputError(f"--memory-limit {value}: {expected}")
    try:
        size = parse_bytes(text)
    except (ValueError, TypeError):
        raise InputError(f"--memory-limit {value}: not a size; {expected}") from None
    if size <= 0:
        raise InputError(f"--memory-limit {value}: {expected}")
    return text


def interface_option(host: str | None, option: str = "--host", shown: str | None = None) -> None:
    """Raise :class:`InputError` unless ``host`` (an address or name; empty: every interface) is one this machine
    can listen on: checked by binding a socket to it, before any Dask server starts."""
    if not host:
        return
    name = str(host).strip("[]")
    option = f"{option} {shown or host}"
    try:
        infos = socket.getaddrinfo(name, 0, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise InputError(f"{option}: not a known host name ({getattr(exc, 'strerror', None) or exc}); expected an "
                         "interface of this machine, e.g. 127.0.0.1 or 0.0.0.0 (every interface)") from None
    last = None
    for family, kind, proto, _, address in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.bind(address[:2] if family == socket.AF_INET else address)
                return
        except OSError as exc:
            last = exc
    raise InputError(f"{option}: this machine cannot listen there ({getattr(last, 'strerror', None) or last}); "
                     "expected an interface of this machine, e.g. 127.0.0.1 or 0.0.0.0 (every interface)")


def scheduler_address_option(address: str, option: str = "--join") -> str:
    """``address`` when it reads as a Dask scheduler address (``tcp://HOST:PORT``, or ``HOST:PORT``), else
    :class:`InputError`.

    >>> scheduler_address_option("tcp://10.0.0.5:8786")
    'tcp://10.0.0.5:8786'
    """
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        _, location = parse_address(str(address))
        host, port = parse_host_port(location)
    except (ValueError, TypeError):
        host, port = None, None
    if not host or not port or not 0 < int(port) < 65536:
        raise InputError(f"{option} {address}: expected the scheduler's address as tcp://HOST:PORT, e.g. "
                         "tcp://10.0.0.5:8786 (`aetdask cluster` prints it)")
    return str(address)


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an interface, a name or ``tcp://HOST:PORT``) is this machine's loopback only.

    An empty host is every interface; a name counts as loopback only when every address
    it resolves to is one.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0"), is_loopback("")
    (True, True, False, False)
    """
    if not host:
        return False
    host = str(host)
    if "://" in host:
        host = host.split("://", 1)[1]
    if host.startswith("["):  # [::1]:port
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:  # host:port
        host = host.split(":", 1)[0]
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def exposure_warnings(scheduler_host: str | None = None, dashboard: str | None = None,
                      workers_host: str | None = None, joined: str | None = None) -> list[str]:
    """Warning lines for whatever of these listens beyond this machine (an empty list when nothing does).

    ``scheduler_host`` and ``workers_host`` are interfaces (None or "" for workers: Dask's
    default, every interface); ``dashboard`` is a ``HOST:PORT`` address; ``joined`` the
    scheduler address workers join.
    """
    encrypted = bool(dask.config.get("distributed.comm.require-encryption", False)) or \
        any(str(a).startswith("tls://") for a in (scheduler_host, joined) if a)
    comm = ("its connections are TLS-encrypted, but anyone holding a valid certificate can run code on the cluster"
            if encrypted else "Dask has no authentication without TLS: anyone who can reach it can run any code on "
            "this machine as this user and read the data")
    lines = []
    if scheduler_host is not None and not is_loopback(scheduler_host):
        lines.append(f"warning: the Dask scheduler listens on {scheduler_host or 'every interface'}, not only on this "
                     f"machine; {comm} (see the README, 'Network exposure')")
    if joined is not None and not is_loopback(workers_host):
        lines.append(f"warning: these workers listen on {workers_host or 'every interface'}, not only on this "
                     f"machine; {comm} (see the README, 'Network exposure')")
    if dashboard is not None and not is_loopback(dashboard):
        lines.append(f"warning: the Dask dashboard and the aetdask page listen on {dashboard}, not only on this "
                     "machine; anyone who can reach it sees the cluster's work and live slices of the data, without "
                     "authentication (see the README, 'Network exposure')")
    return lines


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
    installed, a ``LocalCUDACluster`` with one worker per GPU. A cluster started
    here listens on 127.0.0.1 only (scheduler, workers, dashboard). The dashboard link
    is printed, with the aetdask page's where the scheduler serves it (always, for
    a cluster started here).
    """
    from distributed import Client, LocalCluster
    from distributed.security import Security

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

                # one worker per GPU; scheduler, workers and dashboard on this machine only
                local = local_cuda_cluster(host=LOOPBACK, dashboard_address=f"{LOOPBACK}:0", silence_logs=40)
            if local is None:  # on the loopback also in-process (inproc would link the dashboard at this host's IP)
                protocol = "tls://" if Security().require_encryption else "tcp://"  # as distributed.comm.* asks
                local = LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=processes, host=LOOPBACK, protocol=protocol,
                    dashboard_address=f"{LOOPBACK}:0", silence_logs=40
                )
        client = Client(local)
        quiet_task_failures()  # workers in this process
        client.register_plugin(_quiet_task_failures_plugin())  # and in worker processes
    if not quiet:
        print(_links(client))
    try:
        yield client
    finally:
        if local is not None:  # a cluster of this command's own: its closing is not news
            with contextlib.suppress(Exception):
                client.run(quiet_shutdown)
            quiet_shutdown()
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
    quiet_task_failures()  # the client that computes reports a failed task


def _held_settings() -> dict:
    preload = list(dask.config.get("distributed.worker.preload", []))
    return {**scheduler_settings(), "distributed.worker.preload": preload + [__name__]}


def _warn(line: str) -> None:
    print(line, file=sys.stderr)


def serve(n_workers: int | None = None, threads_per_worker: int = 1, memory_limit="auto", host: str = LOOPBACK,
          port: int = 8786, dashboard_address: str | None = None, gpu: bool = False, echo=print, warn=_warn) -> None:
    """Run a scheduler and local workers until SIGINT or SIGTERM (``aetdask cluster``).

    ``n_workers`` worker processes (default one per core; with ``gpu``, dask-cuda's
    ``LocalCUDACluster``: one per GPU) of ``threads_per_worker`` threads each. The
    scheduler listens on ``host:port`` (default 127.0.0.1, this machine only; ``0.0.0.0``:
    every interface, so that workers on other nodes can :func:`join`) and serves the
    dashboard and the aetdask page on ``dashboard_address`` (default 127.0.0.1:8787; a
    bare ``:PORT`` is on 127.0.0.1 too, see :func:`dashboard_bind`). What to type to
    use it is written with ``echo``; what listens beyond this machine, with ``warn``.
    """
    host = host or LOOPBACK
    dashboard = dashboard_bind(dashboard_address)
    memory_limit = memory_limit_option(memory_limit)
    interface_option(host)
    interface_option(dashboard.rpartition(":")[0], "--dashboard-address", dashboard_address)
    for line in exposure_warnings(scheduler_host=host, dashboard=dashboard):
        warn(line)
    asyncio.run(_serve(n_workers, threads_per_worker, memory_limit, host, port, dashboard, gpu, echo))


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
                 f"{'; start with --host 0.0.0.0 for other nodes' if is_loopback(host) else ''})\n"
                 "Ctrl-C stops the scheduler and its workers.")
            await stop.wait()
            echo("aetdask cluster: stopping")
        finally:
            await local.close()


def join(address: str, n_workers: int | None = None, threads_per_worker: int = 1, memory_limit="auto",
         host: str | None = None, gpu: bool = False, echo=print, warn=_warn) -> None:
    """Run worker processes on this node for the scheduler at ``address`` until SIGINT or SIGTERM.

    ``n_workers`` nannies (default one per core), each watching one worker process
    of ``threads_per_worker`` threads; with ``gpu``, dask-cuda's ``CUDAWorker`` (one
    worker per GPU). The workers listen on ``host``: by default 127.0.0.1 when the
    scheduler is on this machine's loopback, else Dask's default (every interface, as
    the scheduler and the other nodes' workers must reach them; a warning says so).
    Returns when stopped or when the workers end (the scheduler went away).
    """
    address = scheduler_address_option(address)
    memory_limit = memory_limit_option(memory_limit)
    interface_option(host)
    if not host and is_loopback(address):
        host = LOOPBACK
    for line in exposure_warnings(workers_host=host, joined=address):
        warn(line)
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
    """``dask.compute(*collections)`` as a list, with a progress line (:mod:`aetdask.progress`) when asked.

    On the active distributed client the line counts the scheduler's tasks (the work shows on the
    dashboard), and ``on_done(future)`` is called as each result is in (or failed), in a thread of the
    client; otherwise the line counts the local scheduler's tasks.
    """
    collections = list(collections)
    client = active_client()
    if client is None and progress:
        from aetdask.progress import dask_bar

        with dask_bar(label or "computing"):
            return list(dask.compute(*collections))
    if client is None or (not progress and on_done is None):
        return list(dask.compute(*collections))
    futures = client.compute(collections)
    if on_done is not None:
        for future in futures:
            future.add_done_callback(on_done)
    if progress:
        from aetdask.progress import dask_bar

        with dask_bar(label or "computing", futures):
            pass  # the bar returns when every future is done or failed
    return client.gather(futures)
