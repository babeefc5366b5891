"""The aetdask page of the Dask dashboard: live reconstructions and campaign progress.

The process that drives the work publishes its state to the scheduler
(:func:`publish`: ``Client.set_metadata(["aetdask", topic], payload)``, from a
client process or from inside a task, and nothing at all without a distributed
client). The scheduler's own HTTP server renders it next to the stock dashboard
once this module is in ``distributed.scheduler.http.routes`` — :mod:`aetdask.cluster`
adds it to every scheduler it starts; elsewhere set that list before the scheduler
starts (``DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES`` in a container):

* ``/aetdask``: an HTML page that reloads itself every 2 s, with no scripts: the
  R-factor per iteration (log scale) and the central slice of the reconstruction
  running, and per particle and defocus mode of a campaign the projections done,
  running, failed and still to do, and the dose stores written;
* ``/aetdask/state.json``: the same, for machines.

Topics: ``reconstruction`` (:class:`ReconstructionMonitor`: method, iterations,
``r_factor`` with ``r_iterations``, ``slice`` as a PNG) and ``campaign`` (rows of
``particle``, ``mode``, ``total``, ``done``, ``failed``, ``doses``, and the ``keys``
of the projection tasks still to finish, from which the scheduler counts the
``running`` ones). Each is the latest state of the latest run that published it.

Examples
--------
>>> page = render_page({"reconstruction": {"method": "resire", "iterations": 3, "done": 3,
...                                        "r_factor": [0.5, 0.3, 0.2]}})
>>> "<svg" in page and "iteration 3/3" in page
True
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import threading
import time

import numpy as np
from tornado import web

from aetdask.cluster import active_client

NAMESPACE = "aetdask"
REFRESH_S = 2


def publish(topic, payload: dict) -> bool:
    """Store ``payload`` (plain JSON-like data) as the scheduler's state of ``topic`` (a name, or a list of
    names: ``["runs", store]``).

    Works from a client process and from inside a task. Without a distributed
    client it does nothing (and costs next to nothing). A scheduler that cannot be
    reached is not an error of the work being watched: the update is dropped.
    Returns whether it was sent.
    """
    client = active_client()
    if client is None or client.asynchronous or client.status != "running":
        return False
    try:
        client.set_metadata([NAMESPACE, *([topic] if isinstance(topic, str) else topic)], payload)
    except Exception:  # a client or scheduler going away mid-update (it raises all sorts): the work goes on
        return False
    return True


class Throttle:
    """:func:`publish` at most once per ``interval`` seconds; ``force`` sends at once.

    ``make`` builds the payload only when it is sent, so a skipped update costs
    nothing; the last one skipped is sent when the interval is over (from a timer
    thread), so the page never stays behind. An older payload never follows a newer.
    """

    def __init__(self, topic: str, interval: float = 1.0):
        self.topic, self.interval = topic, float(interval)
        self._last = -math.inf
        self._latest, self._sent = (0, None), 0
        self._timer = None
        self._lock = threading.Lock()  # the fields above
        self._sending = threading.Lock()  # one make() and publish() at a time

    def __call__(self, make, force: bool = False) -> bool:
        with self._lock:
            self._latest = (self._latest[0] + 1, make)
            wait = self._last + self.interval - time.monotonic()
            if wait > 0 and not force:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self._send)
                    self._timer.daemon = True
                    self._timer.start()
                return False
        return self._send()

    def _send(self) -> bool:
        with self._sending:
            with self._lock:
                number, make = self._latest
                if number <= self._sent:
                    return False
                self._sent, self._last = number, time.monotonic()
                if self._timer is not None and self._timer is not threading.current_thread():
                    self._timer.cancel()
                self._timer = None
            return publish(self.topic, make())


def slice_image(plane, max_size: int = 256) -> dict:
    """A 2-D array as ``{"shape": [h, w], "png": base64}``: block-averaged to ≤ ``max_size`` px, 8 bits, min–max.

    >>> slice_image(np.arange(600.0).reshape(20, 30), max_size=16)["shape"]
    [10, 15]
    """
    a = np.nan_to_num(np.asarray(plane, dtype=float))
    f = max(1, -(-max(a.shape) // int(max_size)))
    if f > 1:
        h, w = a.shape[0] // f * f, a.shape[1] // f * f
        a = a[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))
    lo, hi = float(a.min()), float(a.max())
    u8 = np.zeros(a.shape, np.uint8) if hi <= lo else np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="PNG")
    return {"shape": list(u8.shape), "png": base64.b64encode(buf.getvalue()).decode("ascii")}


class ReconstructionMonitor:
    """The ``progress(done, r, central)`` of a reconstruction, published as topic ``reconstruction``.

    At most one update a second (always the last iteration); the central slice,
    when one came, is encoded only for an update that is sent. :meth:`finish`
    publishes the whole R history (the runner reports R once per round).
    """

    def __init__(self, method: str, iterations: int, shape=None, interval: float = 1.0, voxel_size: float | None = None):
        self.state = {"method": method, "iterations": int(iterations), "done": 0, "r_factor": [], "r_iterations": [],
                      "shape": list(shape) if shape is not None else None, "slice": None, "finished": False,
                      "started": time.time(), "run": RunMonitor.current, "voxel_size": voxel_size}
        self._central = None
        self._throttle = Throttle("reconstruction", interval)

    def __call__(self, done, r, central=None) -> None:
        s = self.state
        s["done"] = int(done)
        if not s["r_iterations"] or s["r_iterations"][-1] < done:
            s["r_iterations"].append(int(done))
            s["r_factor"].append(float(r))
        if central is not None:
            self._central = central
        self._throttle(self._payload, force=done >= s["iterations"])

    def finish(self, r_history) -> None:
        """The reconstruction ended: its last R (the curve keeps the sampling it was drawn with, so it does not
        change shape at the end)."""
        r = [float(v) for v in r_history]
        if r and (not self.state["r_iterations"] or self.state["r_iterations"][-1] < len(r)):
            self.state["r_iterations"].append(len(r))
            self.state["r_factor"].append(r[-1])
        self.state.update(done=len(r), finished=True)
        self._throttle(self._payload, force=True)

    def _payload(self) -> dict:
        if self._central is not None:
            self.state["slice"] = slice_image(self._central)
            self._central = None
        return {**self.state, "r_factor": list(self.state["r_factor"]),
                "r_iterations": list(self.state["r_iterations"]), "updated": time.time()}


# ---------------------------------------------------------------- served by the scheduler
class RunMonitor:
    """A chain of stages running on a store, on the aetdask page (topic ``runs``, one entry per store).

    Shows the chain, each stage's state (to do, kept, running, done, failed) and time, the current stage and
    the elapsed time; the run's end as finished, failed (with the error) or stopped (Ctrl-C). While the run
    goes on it says so every :attr:`heartbeat` seconds, so that a run killed outright (its process gone)
    shows on the page as silent, not as running forever. Use it as a context manager around the run.
    """

    #: The store of the run this process is running now (labels the reconstruction it makes), or None.
    current: str | None = None

    def __init__(self, store, labels, heartbeat: float = 10.0):
        import os
        import socket

        self.key = str(store)
        self.heartbeat = float(heartbeat)
        self.state = {"store": self.key, "stages": [{"label": str(x), "state": "to do", "seconds": None} for x in labels],
                      "current": None, "state": "running", "started": time.time(), "error": None,
                      "host": socket.gethostname(), "pid": os.getpid(), "heartbeat": self.heartbeat}
        self._stage_started = None
        self._unlisten = None
        self._throttle = Throttle(["runs", self.key])
        self._stop = threading.Event()
        self._beat = None

    def stage(self, index: int, state: str, seconds: float | None = None) -> None:
        """Stage ``index`` (0-based) is now ``state``; ``seconds`` when it ended."""
        entry = self.state["stages"][index]
        entry["state"] = state
        if state == "running":
            self.state["current"] = index
            self._stage_started = time.time()
        if seconds is not None:
            entry["seconds"] = float(seconds)
        self._throttle(self._payload, force=True)

    def _step(self, step: dict) -> None:
        """A step of the current stage reported progress (:func:`aetdask.progress.listen`)."""
        self.state["step"] = {**step, "at": time.time()}
        self._throttle(self._payload)

    def _payload(self) -> dict:
        now = time.time()
        stages = [dict(e) for e in self.state["stages"]]
        current = self.state["current"]
        if current is not None and stages[current]["state"] == "running" and self._stage_started:
            stages[current]["seconds"] = now - self._stage_started
        step = self.state.get("step")
        if step is not None:
            step = dict(step)
            step["left"] = remaining(step, now)
        return {**self.state, "stages": stages, "step": step, "elapsed": now - self.state["started"], "updated": now}

    def _beating(self) -> None:
        while not self._stop.wait(self.heartbeat):
            self._throttle(self._payload, force=True)

    def __enter__(self):
        from aetdask.progress import listen

        RunMonitor.current = self.key
        self._unlisten = listen(self._step)
        self._throttle(self._payload, force=True)
        self._beat = threading.Thread(target=self._beating, daemon=True, name="aetdask-run-heartbeat")
        self._beat.start()
        return self

    def __exit__(self, kind, value, tb):
        self._stop.set()
        if self._unlisten is not None:
            self._unlisten()
        self.state["step"] = None
        RunMonitor.current = None
        if kind is None:
            self.state["state"] = "finished"
        elif issubclass(kind, KeyboardInterrupt):
            self.state["state"] = "stopped"
        else:
            self.state["state"] = "failed"
            self.state["error"] = " ".join(str(value).split())[:500]
        current = self.state["current"]
        if kind is not None and current is not None and self.state["stages"][current]["state"] == "running":
            self.state["stages"][current]["state"] = self.state["state"]
        self._throttle(self._payload, force=True)
        return False


def _running(keys, tasks) -> int:
    """How many of ``keys`` are being computed: the task itself or one of its inputs is processing."""
    n = 0
    for key in keys:
        ts = tasks.get(tuple(key) if isinstance(key, list) else key)
        if ts is not None and (ts.state == "processing" or any(d.state == "processing" for d in ts.dependencies)):
            n += 1
    return n


def current_state(scheduler) -> dict:
    """What the scheduler holds for the page, with the running tasks of a campaign counted now."""
    published = scheduler.get_metadata([NAMESPACE], default=None)
    published = published if isinstance(published, dict) else {}
    state = {}
    runs = published.get("runs")
    if isinstance(runs, dict):
        state["runs"] = sorted((r for r in runs.values() if isinstance(r, dict)), key=lambda r: -float(r.get("started", 0)))
    if isinstance(published.get("reconstruction"), dict):
        state["reconstruction"] = published["reconstruction"]
    campaign = published.get("campaign")
    if isinstance(campaign, dict):
        rows = [{**{k: v for k, v in row.items() if k != "keys"}, "running": _running(row.get("keys", ()),
                                                                                      scheduler.tasks)}
                for row in campaign.get("rows", [])]
        state["campaign"] = {**campaign, "rows": rows}
    return state


def _ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 values between 10**lo and 10**hi (log10 bounds)."""
    out = []
    for e in range(math.floor(lo), math.ceil(hi) + 1):
        for m in (1, 2, 5):
            v = m * 10.0**e
            if lo <= math.log10(v) <= hi:
                out.append(v)
    return out


def r_factor_svg(r, iterations=None, total=None, width: int = 480, height: int = 260) -> str:
    """The R-factor against the iteration as an inline SVG line chart, log-scaled R.

    >>> import re
    >>> re.search('<polyline points="([^"]*)"', r_factor_svg([0.4, 0.2, 0.1])).group(1).count(",")  # 3 points
    3
    """
    its = list(iterations) if iterations else list(range(1, len(r) + 1))
    logs = [math.log10(max(float(v), 1e-12)) for v in r]
    left, right, top, bottom = 56, 12, 12, 34
    pw, ph = width - left - right, height - top - bottom
    xmax = max([int(total or 0), *its, 1])
    lo, hi = (min(logs), max(logs)) if logs else (-1.0, 0.0)
    pad = max(0.05 * (hi - lo), 0.05)
    lo, hi = lo - pad, hi + pad

    def x(i):
        return left + pw * i / xmax

    def y(v):
        return top + ph * (hi - v) / (hi - lo)

    grid = []
    for v in _ticks(lo, hi):
        yy = y(math.log10(v))
        grid.append(f'<line x1="{left}" x2="{left + pw}" y1="{yy:.1f}" y2="{yy:.1f}" class="grid"/>'
                    f'<text x="{left - 4}" y="{yy + 4:.1f}" text-anchor="end">{v:g}</text>')
    points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in zip(its, logs))
    last = f'<circle cx="{x(its[-1]):.1f}" cy="{y(logs[-1]):.1f}" r="3"/>' if logs else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="chart">'
            f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>{"".join(grid)}'
            f'<polyline points="{points}"/>{last}'
            f'<text x="{left}" y="{height - 8}">0</text>'
            f'<text x="{left + pw}" y="{height - 8}" text-anchor="end">{xmax}</text>'
            f'<text x="{left + pw / 2:.0f}" y="{height - 8}" text-anchor="middle">iteration</text>'
            f'<text x="14" y="{top + ph / 2:.0f}" transform="rotate(-90 14 {top + ph / 2:.0f})" '
            f'text-anchor="middle">R</text></svg>')


def remaining(step: dict, now: float | None = None) -> float | None:
    """Seconds a running step still needs at the rate it has gone so far (None when its size is unknown, it has
    done nothing yet, or it has ended).

    >>> remaining({"done": 30, "total": 120, "seconds": 60.0, "ended": False, "at": 0.0}, now=0.0)
    180.0
    """
    total, done = step.get("total"), step.get("done") or 0
    if step.get("ended") or not total or done <= 0 or done >= total:
        return None
    now = step.get("at", 0.0) if now is None else now
    seconds = float(step.get("seconds", 0.0)) + max(0.0, now - float(step.get("at", now)))
    return seconds * (total - done) / done


def _step_html(step) -> str:
    if not step or step.get("ended"):
        return ""
    total, done = step.get("total"), step.get("done") or 0
    count = f" {done}/{total} ({100 * done / total:.0f} %)" if total else ""
    text = f" · {html.escape(str(step.get('text')))}" if step.get("text") else ""
    left = step.get("left")
    eta = (f" · ≈ {_duration(left)} left in this step (at its rate so far; later stages are not estimated)"
           if left is not None else "")
    return f"<p>{html.escape(str(step.get('label', '')))}:{count}{text}{eta}</p>"


def _ago(t) -> str:
    return f", updated {max(0.0, time.time() - float(t)):.0f} s ago" if t else ""


def _duration(seconds) -> str:
    if seconds is None:
        return ""
    seconds = float(seconds)
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _run_html(run: dict, now: float | None = None) -> str:
    now = time.time() if now is None else now
    state = str(run.get("state", "?"))
    silent = now - float(run.get("updated", now))
    if state == "running" and silent > 3 * float(run.get("heartbeat", 10.0)):
        state = (f"silent for {_duration(silent)}: stopped? (its process, {html.escape(str(run.get('host', '?')))} pid "
                 f"{run.get('pid', '?')}, no longer reports: killed, or cut off from the scheduler)")
    elapsed = _duration(run.get("elapsed"))
    rows = []
    for i, st in enumerate(run.get("stages", [])):
        mark = " ◀" if i == run.get("current") and st.get("state") == "running" else ""
        rows.append(f'<tr class="{html.escape(str(st.get("state", "")).replace(" ", "-"))}"><td>{i + 1}</td>'
                    f"<td>{html.escape(str(st.get('label', '')))}{mark}</td><td>{html.escape(str(st.get('state', '')))}</td>"
                    f"<td>{_duration(st.get('seconds'))}</td></tr>")
    current = run.get("current")
    stages = run.get("stages", [])
    now_doing = (f" · stage {current + 1}/{len(stages)}: {html.escape(str(stages[current].get('label', '')))}"
                 if isinstance(current, int) and 0 <= current < len(stages) and run.get("state") == "running" else "")
    error = f'<p class="err">{html.escape(str(run["error"]))}</p>' if run.get("error") else ""
    return (f"<h2>Run: {html.escape(str(run.get('store', '?')))}</h2>"
            f"<p><b>{state}</b>{now_doing} · elapsed {elapsed}{_ago(run.get('updated'))}</p>"
            f"{_step_html(run.get('step')) if run.get('state') == 'running' else ''}{error}"
            f"<table><tr><th>#</th><th>stage</th><th>state</th><th>time</th></tr>{''.join(rows)}</table>")


def _scale(rec: dict, width_px: int, columns: int) -> str:
    """A 1 nm scale bar under the slice (when the voxel size is known) and the grey scale."""
    voxel = rec.get("voxel_size")
    bar = ""
    if voxel:
        px = 10.0 / float(voxel) * width_px / max(columns, 1)
        if px <= width_px:
            bar = (f'<div class="scale"><span style="width:{px:.0f}px"></span> 1 nm</div>')
    grey = '<div class="grey"><span></span> lowest → highest value of the slice</div>'
    return bar + grey


def _reconstruction_html(rec: dict) -> str:
    r = rec.get("r_factor") or []
    status = "finished" if rec.get("finished") else "running"
    current = f" · R = {r[-1]:.4f}" if r else ""
    shape = f" · volume {' × '.join(str(n) for n in rec['shape'])}" if rec.get("shape") else ""
    run = f" of {html.escape(str(rec['run']))}" if rec.get("run") else ""
    head = (f"<h2>Reconstruction{run}: {html.escape(str(rec.get('method', '?')))}</h2>"
            f"<p>iteration {rec.get('done', 0)}/{rec.get('iterations', '?')}{current}{shape} · "
            f"{status}{_ago(rec.get('updated'))}</p>")
    img = ""
    sl = rec.get("slice")
    if isinstance(sl, dict) and sl.get("png"):
        h, w = sl["shape"]
        zoom = max(1, 256 // max(h, w))
        columns = (rec.get("shape") or [w, h, w])[-1]
        voxel = f" voxels of {float(rec['voxel_size']):.3g} Å" if rec.get("voxel_size") else ""
        img = (f'<figure><img class="slice" src="data:image/png;base64,{sl["png"]}" width="{w * zoom}" '
               f'height="{h * zoom}" alt="central slice"><figcaption>central slice: the y–x plane at the middle z '
               f"({h} × {w} px{', ' + str(columns) + ' ×' + voxel if voxel else ''})</figcaption>"
               f"{_scale(rec, w * zoom, columns)}</figure>")
    chart = f'<figure>{r_factor_svg(r, rec.get("r_iterations"), rec.get("iterations"))}' \
            f"<figcaption>R-factor per iteration</figcaption></figure>"
    return f'{head}<div class="row">{chart}{img}</div>'


def _bar(row: dict) -> str:
    total = max(int(row.get("total", 0)), 1)
    spans = "".join(f'<span class="{cls}" style="width:{100 * int(row.get(key, 0)) / total:.1f}%"></span>'
                    for key, cls in (("done", "done"), ("running", "run"), ("failed", "fail")))
    return f'<div class="bar">{spans}</div>'


def _campaign_html(c: dict) -> str:
    doses = list(c.get("doses", []))
    head = "".join(f"<th>{html.escape(str(d))}</th>" for d in doses)
    rows = []
    for row in c.get("rows", []):
        cells = "".join(f"<td>{int(row.get(k, 0))}</td>" for k in ("done", "running", "failed", "total"))
        written = row.get("doses", {})
        dose_cells = "".join(f'<td>{"written" if written.get(d) else "to do"}</td>' for d in doses)
        rows.append(f"<tr><td>{html.escape(str(row.get('particle', '')))}</td>"
                    f"<td>{html.escape(str(row.get('mode', '')))}</td>{cells}<td>{_bar(row)}</td>{dose_cells}</tr>")
    status = "finished" if c.get("finished") else "running"
    error = f' · <span class="err">{html.escape(str(c["error"]))}</span>' if c.get("error") else ""
    return (f"<h2>Campaign: {html.escape(str(c.get('store', '')))}</h2><p>{status}{_ago(c.get('updated'))}{error}</p>"
            f"<table><tr><th>particle</th><th>mode</th><th>done</th><th>running</th><th>failed</th><th>total</th>"
            f"<th>projections</th>{head}</tr>{''.join(rows)}</table>")


_STYLE = """body{font-family:sans-serif;margin:1em 2em;color:#222}
.row{display:flex;flex-wrap:wrap;gap:2em;align-items:flex-start}figure{margin:0}
.chart text{font-size:11px}.chart .frame{fill:none;stroke:#999}.chart .grid{stroke:#e4e4e4}
.chart polyline{fill:none;stroke:#1f77b4;stroke-width:2}.chart circle{fill:#1f77b4}
img.slice{image-rendering:pixelated;border:1px solid #999}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
td:nth-child(-n+2){text-align:left}.bar{display:flex;width:160px;height:12px;background:#eee}
.bar .done{background:#2ca02c}.bar .run{background:#1f77b4}.bar .fail{background:#d62728}.err{color:#d62728}
.scale span{display:inline-block;height:4px;background:#222;vertical-align:middle}
.grey span{display:inline-block;width:120px;height:10px;background:linear-gradient(90deg,#000,#fff);border:1px solid #999}
tr.running td{background:#e8f1fb}tr.failed td,tr.stopped td{background:#fbe8e8}tr.done td,tr.kept td{color:#555}"""


def render_page(state: dict, base: str = "") -> str:
    """The ``/aetdask`` page for a :func:`current_state`; ``base`` leads its links back to the dashboard's root
    (``"../"`` for the page at ``/aetdask/``)."""
    parts = [_run_html(run) for run in state.get("runs", [])]
    if state.get("reconstruction"):
        parts.append(_reconstruction_html(state["reconstruction"]))
    if state.get("campaign"):
        parts.append(_campaign_html(state["campaign"]))
    if not parts:
        parts.append("<p>Nothing has reported here yet: runs, reconstructions and campaigns on this cluster "
                     "(<code>--scheduler ADDRESS</code>) show up as they go.</p>")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_S}">'
            f"<title>aetdask</title><style>{_STYLE}</style></head><body>"
            f'<p><b>aetdask</b> · <a href="{base}status">Dask dashboard</a> · '
            f'<a href="{base}aetdask/state.json">state.json</a></p>'
            f"{''.join(parts)}</body></html>")


class _Handler(web.RequestHandler):
    def initialize(self, dask_server=None):
        self.server = dask_server


class PageHandler(_Handler):
    def get(self):
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.write(render_page(current_state(self.server), "../" if self.request.path.endswith("/") else ""))


class StateHandler(_Handler):
    def get(self):
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps(current_state(self.server)))


routes: list[tuple] = [("/aetdask", PageHandler, {}), ("/aetdask/", PageHandler, {}),
                       ("/aetdask/state.json", StateHandler, {})]
