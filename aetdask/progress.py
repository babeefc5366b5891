"""One progress channel: every long step of aetdask reports through :class:`Line`.

On a terminal a step's line is redrawn in place (a bar when the total is known), at most ten times a
second. Anywhere else — a log file, a pipe, a batch job's output — frames would pile up (a 290³ run
once wrote 400 kB of them): there a step writes a plain line at most every :data:`LOG_INTERVAL` seconds
while it runs, and one when it ends, so a log holds a few lines per step however long it takes.

Dask's progress bars (local and distributed) draw through the same line (:func:`dask_bar`), so the
computation of a product, the reconstruction's iterations and the refinement's evaluations look alike.

>>> import io
>>> log = io.StringIO()
>>> step = Line("tracing", total=4, stream=log)
>>> for k in range(1, 5):
...     step.update(k)
>>> step.close("12 candidates")
>>> log.getvalue()
'tracing: 4/4 (100%) 12 candidates\\n'
"""

from __future__ import annotations

import sys
import threading
import time

#: Seconds between two lines of a running step where the output is not a terminal.
LOG_INTERVAL = 30.0
#: Seconds between two redraws on a terminal.
TTY_INTERVAL = 0.1
_WIDTH = 30
#: Functions called with every step's progress (:func:`listen`): the dashboard's run monitor is one.
_LISTENERS: list = []


def listen(fn):
    """Call ``fn(step)`` on every update and end of every :class:`Line` from now on (``step`` is a dict: ``label``,
    ``done``, ``total``, ``text``, ``seconds`` since the step began, ``ended``); returns a function that stops it.
    A listener's own failure never stops the step.

    >>> import io
    >>> seen = []
    >>> stop = listen(seen.append)
    >>> Line("tracing", total=2, stream=io.StringIO()).close("done")
    >>> stop(); seen[-1]["label"], seen[-1]["ended"]
    ('tracing', True)
    """
    _LISTENERS.append(fn)

    def stop():
        if fn in _LISTENERS:
            _LISTENERS.remove(fn)
    return stop


def is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal (a line can be redrawn in place)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class Line:
    """The progress of one step: ``update(done, text)`` while it runs, ``close(text)`` when it ends.

    Parameters
    ----------
    label : str
        What the step is ("writing volume", "refining 2,000 atoms against 60 projections").
    total : int, optional
        How many units the step has (tasks, iterations); None when unknown (then only ``text`` shows).
    stream : file, optional
        Where to write (default ``sys.stdout`` at each write, so that a redirected or captured stdout is used).
    interval : float, optional
        Seconds between two lines where ``stream`` is not a terminal (default :data:`LOG_INTERVAL`).
    """

    def __init__(self, label: str, total: int | None = None, stream=None, interval: float | None = None):
        self.label, self.total, self._stream = label, total, stream
        self.interval = LOG_INTERVAL if interval is None else interval
        self.started = time.perf_counter()
        self.done, self.text = 0, ""
        self._shown = None  # when a line was last written
        self._drawn = False  # a line is on the terminal, not ended
        self._lock = threading.Lock()

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stdout

    def _render(self) -> str:
        parts = [f"{self.label}:"]
        if self.total:
            frac = min(max(self.done / self.total, 0.0), 1.0)
            if is_terminal(self.stream):
                parts.append(f"[{'#' * int(_WIDTH * frac):<{_WIDTH}}]")
            parts.append(f"{self.done}/{self.total} ({100 * frac:.0f}%)")
        if self.text:
            parts.append(self.text)
        return " ".join(parts)

    def update(self, done: int | None = None, text: str | None = None) -> None:
        """Record progress; written now if the last line is old enough (see the class)."""
        self._update(done, text)
        self._tell(False)

    def _update(self, done, text) -> None:
        with self._lock:
            if done is not None:
                self.done = done
            if text is not None:
                self.text = text
            now = time.perf_counter()
            tty = is_terminal(self.stream)
            wait = TTY_INTERVAL if tty else self.interval
            if self._shown is not None and now - self._shown < wait:
                return
            if self._shown is None and not tty:  # in a log, the first line only after an interval
                self._shown = now
                return
            self._shown = now
            self._write(self._render(), final=False, tty=tty)

    def _tell(self, ended: bool) -> None:
        if not _LISTENERS:
            return
        step = {"label": self.label, "done": self.done, "total": self.total, "text": self.text,
                "seconds": time.perf_counter() - self.started, "ended": ended}
        for fn in list(_LISTENERS):
            try:
                fn(step)
            except Exception:  # noqa: BLE001 - a watcher never stops the work it watches
                pass

    def close(self, text: str | None = None) -> None:
        """End the step: its last line, complete (a terminal's line ends; a log gets one line)."""
        with self._lock:
            if text is not None:
                self.text = text
            self._write(self._render(), final=True, tty=is_terminal(self.stream))
        self._tell(True)

    def _write(self, line: str, final: bool, tty: bool) -> None:
        try:
            if tty:
                self.stream.write(f"\r\033[2K{line}" + ("\n" if final else ""))
                self._drawn = not final
            else:
                self.stream.write(line + "\n")
            self.stream.flush()
        except ValueError:  # a closed stream: nobody watches
            pass


def dask_bar(label: str, futures=None):
    """A context manager that shows the progress of a Dask computation on one :class:`Line`: of ``futures`` on
    the active distributed client (its tasks, as the scheduler counts them), or, without ``futures``, of
    every computation run in the block by the local scheduler."""
    if futures is not None:
        return _DistributedBar(label, futures)
    return _LocalBar(label)


class _LocalBar:
    def __init__(self, label):
        from dask.callbacks import Callback

        line = self.line = Line(label)

        class Counter(Callback):
            def _start_state(self, dsk, state):
                line.total = len(state["ready"]) + len(state["waiting"]) + len(state["running"]) + len(state["finished"])

            def _posttask(self, key, result, dsk, state, worker_id):
                line.update(len(state["finished"]))

        self.counter = Counter()

    def __enter__(self):
        self.counter.__enter__()
        return self.line

    def __exit__(self, kind, value, tb):
        self.counter.__exit__(kind, value, tb)
        self.line.close(None if kind is None else "stopped")
        return False


class _DistributedBar:
    def __init__(self, label, futures):
        self.line, self.futures = Line(label), futures

    def __enter__(self):
        from distributed.diagnostics.progressbar import TextProgressBar

        line = self.line

        class Bar(TextProgressBar):
            def _draw_bar(self, remaining, all, **kwargs):
                line.total = all
                line.update(all - remaining)

            def _draw_stop(self, **kwargs):
                pass

        Bar(self.futures, complete=True)  # returns when the futures are done (or failed)
        return self.line

    def __exit__(self, kind, value, tb):
        self.line.close(None if kind is None else "stopped")
        return False
