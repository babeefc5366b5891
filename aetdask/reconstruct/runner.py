"""Running iterative reconstructions on Dask workers (DESIGN §6).

* Single-axis series: the volume is cut into slabs along the tilt axis; each
  slab is an independent problem, one task per slab, no communication. The
  work goes in rounds of a few iterations so the global R-factor can be
  watched (progress, plateau stopping) between rounds; the slabs stay on their
  workers between rounds.
* General Euler angles: the volume is cut into z-slabs; every iteration each
  slab's forward projection is computed on its worker, the projections are
  summed in slab order on a worker (an all-reduce), the residual and the
  R-factor terms are formed there, and the residual goes to every slab for its
  back projection and update. Only the R-factor (a few numbers) comes back to
  this process each iteration, one iteration late, so the next iteration is
  already queued while it travels.

The slab partition follows the volume (``slab`` planes per slab, see
:func:`slab_ranges`), not the number of workers, and sums run in slab order:
the volume is the same, bit for bit, on any number of workers. With
``device="gpu"`` the slabs live on the workers' GPUs between rounds and
iterations (CuPy); only the result is brought back. Every input enters as a
task (not scattered data), so a worker lost mid-run is recomputed from the
task graph by Dask and the run finishes with the same volume.

With no distributed client the same tasks run in this process, in the same
order, so the result does not depend on where it runs.
"""

from __future__ import annotations

import warnings

import numpy as np

from aetdask.backend import asnumpy, get_array_module
from aetdask.kernels.tomography import iterative
from aetdask.reconstruct.projectors import EulerProjector, slice_projector


class _Done:
    """A finished 'future' for in-process execution."""

    def __init__(self, value):
        self._value = value

    def result(self):
        return self._value


def _identity(x):
    return x


class Executor:
    """Submit work to the active distributed client, or run it here."""

    def __init__(self):
        try:
            from distributed import get_client

            self.client = get_client()
        except (ImportError, ValueError):
            self.client = None
        self._names = sorted(self.client.scheduler_info()["workers"]) if self.client else []

    def _placement(self, spread):
        """Slab ``spread`` prefers the worker of that number (round robin); any other may take over
        (a lost worker). Without it the scheduler moves every slab to where the (larger) shared
        residual is, and the slabs run one after another."""
        if spread is None or not self._names:
            return {}
        return {"workers": [self._names[spread % len(self._names)]], "allow_other_workers": True}

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info()["workers"]) if self.client else 1

    def submit(self, fn, *args, spread: int | None = None, **kwargs):
        if self.client is None:
            args = [a.result() if isinstance(a, _Done) else a for a in args]
            return _Done(fn(*args, **kwargs))
        return self.client.submit(fn, *args, pure=False, **self._placement(spread), **kwargs)

    def gather(self, futures):
        if self.client is None:
            return [f.result() for f in futures]
        return self.client.gather(futures)

    def put(self, value, spread: int | None = None):
        """Place ``value`` on a worker as a task (recomputable if that worker dies, unlike scattered data).

        ``spread``: the i-th of several pieces goes preferably to the i-th worker (round robin), so
        that slabs — and the tasks that follow their data — start out on different workers.
        """
        if self.client is None:
            return _Done(value)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*large graph.*")
            return self.client.submit(_identity, value, pure=False, **self._placement(spread))


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges covering ``range(n)`` as evenly as possible."""
    parts = max(1, min(int(parts), n))
    edges = np.linspace(0, n, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def slab_ranges(n: int, slabs: int | None = None, planes: int = 32) -> list[tuple[int, int]]:
    """The slabs a volume axis of ``n`` planes is cut into.

    ``slabs`` given: that many. Otherwise about ``planes`` planes each — a
    partition fixed by the volume, so the result does not depend on how many
    workers there are (more slabs than workers simply queue).

    >>> slab_ranges(128), slab_ranges(40), slab_ranges(128, slabs=3)
    ([(0, 32), (32, 64), (64, 96), (96, 128)], [(0, 40)], [(0, 43), (43, 85), (85, 128)])
    """
    if slabs:
        return split(n, slabs)
    return split(n, max(1, round(n / max(1, int(planes)))))


def _on(device, x):
    """``x`` on the device (``"cpu"`` or ``"gpu"``); None stays None."""
    if x is None:
        return None
    xp = get_array_module(device)
    return xp.asarray(x)


def _to_host(x):
    return asnumpy(x)


def _first(pair):
    return pair[0]


def _second(pair):
    return pair[1]


def _plateaued(r, tolerance, window=10) -> bool:
    """R improved by less than ``tolerance`` (relative) over the last ``window`` iterations."""
    return len(r) > window and (r[-window - 1] - r[-1]) <= tolerance * r[-1]


def _r_value(num, den) -> float:
    return float(np.mean(np.asarray(num) / np.where(np.asarray(den) > 0, den, 1.0)))


# ---------------------------------------------------------------- single axis
def _slab_round(b, theta, volume, support, method, iterations, step, subsamples):
    xp = get_array_module(b)
    proj = slice_projector((b.shape[1], b.shape[1]), b.shape[1], theta, subsamples, b.dtype, xp=xp)
    if method == "fbp":
        vol = iterative.fbp(b, proj, angular_range_deg=_angular_range(theta))
        return vol, [iterative.r_factor_terms(b, proj.forward(vol))]
    run = iterative.resire if method == "resire" else iterative.sirt
    kwargs = {"step": step} if method == "resire" else {"relaxation": step}
    vol, history = run(b, proj, iterations, support=support, initial=volume, **kwargs)
    return vol, history


def _angular_range(theta) -> float:
    t = np.sort(np.asarray(theta, dtype=float))
    step = np.median(np.diff(t)) if len(t) > 1 else 180.0
    return float(min(180.0, t[-1] - t[0] + step))


def _put_slabs(ex, device, array, ranges, axis):
    """Each slab of ``array`` as a task result on the device (None stays None)."""
    if array is None:
        return [None] * len(ranges)
    index = [slice(None)] * array.ndim
    out = []
    for i, (a, b) in enumerate(ranges):
        index[axis] = slice(a, b)
        out.append(ex.submit(_on, device, ex.put(np.ascontiguousarray(array[tuple(index)]), spread=i), spread=i))
    return out


def run_single_axis(b, theta, *, method, iterations, step, subsamples, support=None, initial=None, slabs=None,
                    round_size=10, plateau=0.0, progress=None, device="cpu"):
    """Reconstruct a single-axis series in slabs along x; returns (volume, R per iteration).

    ``progress(iterations_done, r, central_slice)`` is called after every round
    with the central z-plane of the current volume (a (y, x) NumPy array).
    """
    ex = Executor()
    n, dy, dx = b.shape
    ranges = slab_ranges(dx, slabs)
    b_f = _put_slabs(ex, device, b, ranges, axis=2)
    sup = _put_slabs(ex, device, support, ranges, axis=2)
    vols = _put_slabs(ex, device, initial, ranges, axis=2)
    r_history: list[float] = []
    todo = 1 if method == "fbp" else int(iterations)
    while todo > 0:
        k = todo if method == "fbp" else min(round_size, todo)
        futures = [
            ex.submit(_slab_round, bf, tuple(theta), v, s, method, k, step, subsamples, spread=i)
            for i, (bf, v, s) in enumerate(zip(b_f, vols, sup))
        ]
        vols = [ex.submit(_first, f, spread=i) for i, f in enumerate(futures)]
        terms = ex.gather([ex.submit(_second, f) for f in futures])
        for it in range(len(terms[0])):
            r_history.append(_r_value(sum(t[it][0] for t in terms), sum(t[it][1] for t in terms)))
        todo -= k
        if progress is not None:
            central = np.concatenate(ex.gather([ex.submit(_plane, v, dy // 2) for v in vols]), axis=1)
            progress(len(r_history), r_history[-1], central)
        if plateau and _plateaued(r_history, plateau):
            break
    volume = np.concatenate(ex.gather([ex.submit(_to_host, v) for v in vols]), axis=2)
    return volume, r_history


# ---------------------------------------------------------------- general Euler angles
def _zslab_projector(volume, euler, det_shape, full_shape, subsamples, method, z_range):
    return EulerProjector(euler, det_shape, full_shape, subsamples, z_range, xp=get_array_module(volume),
                          method=method)


def _zslab_forward(volume, euler, det_shape, full_shape, subsamples, method, z_range):
    return _zslab_projector(volume, euler, det_shape, full_shape, subsamples, method, z_range).forward(volume)


def _zslab_backward(residual, euler, det_shape, full_shape, subsamples, method, z_range):
    return _zslab_projector(residual, euler, det_shape, full_shape, subsamples, method, z_range).backward(residual)


def _zslab_descend(volume, residual, t, weight, support, euler, det_shape, full_shape, subsamples, method, z_range):
    """One slab's update, O ← max(0, O − t · weight · Πᵀ residual) [· support].

    RESIRE: residual = Π O − b, no weight. SIRT: residual = R (Π O − b), weight = C, t = λ.
    """
    g = _zslab_backward(residual, euler, det_shape, full_shape, subsamples, method, z_range)
    if weight is not None:
        g = g * weight
    return iterative.descend(volume.copy(), g, t, support)  # a copy: task inputs are not ours to change


def _reduce(b, inv_row, *forward):
    """The all-reduce: Σ_slabs Π_slab O in slab order, then the residual and the R terms.

    Returns ``(residual, (numerator, denominator))``: residual = Π O − b
    (RESIRE) or R (Π O − b) (SIRT, ``inv_row`` = R).
    """
    calc = _sum(*forward)
    terms = iterative.r_factor_terms(b, calc)
    res = (calc - b).astype(b.dtype)
    return (res if inv_row is None else inv_row * res), terms


def _sum(*arrays):
    out = arrays[0]
    for a in arrays[1:]:
        out = out + a
    return out


def _inverse(x):
    xp = get_array_module(x)
    return xp.where(x > 1e-6, 1 / xp.maximum(x, 1e-6), 0).astype(x.dtype)


def _full(shape, like, value):
    """An array of ``value`` made on the worker, on ``like``'s device and dtype (nothing shipped)."""
    return get_array_module(like).full(shape, value, dtype=like.dtype)


def _plane(volume, k):
    """Plane ``k`` of ``volume`` on the host (the progress display's slice)."""
    return asnumpy(volume[k])


def _fbp_scaled(filtered, scale, *geo_and_range):
    return scale * _zslab_backward(filtered, *geo_and_range)


def run_euler(b, euler, *, method, iterations, step, subsamples, support=None, initial=None, slabs=None,
              plateau=0.0, progress=None, device="cpu", snapshot_every: int = 10, projector: str = "auto"):
    """Reconstruct at general Euler angles with z-slabs and a per-iteration sum of projections.

    ``projector``: ``reconstruct.projector`` (:func:`aetdask.reconstruct.projectors.euler_method`).

    ``progress(iterations_done, r, central_slice)``: ``central_slice`` is the
    central z-plane every ``snapshot_every`` iterations, otherwise None.
    """
    ex = Executor()
    n, dy, dx = b.shape
    full = (dy, dy, dx)
    ranges = slab_ranges(full[0], slabs)
    geo = (np.asarray(euler, float), (dy, dx), full, subsamples, projector)
    b_dev = ex.submit(_on, device, ex.put(b))
    sup = _put_slabs(ex, device, support, ranges, axis=0)
    if initial is None:
        vols = [ex.submit(_full, (z1 - z0, dy, dx), b_dev, 0, spread=i) for i, (z0, z1) in enumerate(ranges)]
    else:
        vols = _put_slabs(ex, device, initial, ranges, axis=0)
    centre = next(i for i, (z0, z1) in enumerate(ranges) if z0 <= full[0] // 2 < z1)

    def snapshot(vs):
        z0 = ranges[centre][0]
        return ex.gather([ex.submit(_plane, vs[centre], full[0] // 2 - z0)])[0]

    if method == "fbp":
        filtered = ex.submit(iterative.ramp_filter, b_dev, axis=1)
        scale = np.pi * _angular_range(euler[:, 1]) / 180.0 / (2 * n)
        parts = [ex.submit(_fbp_scaled, filtered, scale, *geo, r, spread=i) for i, r in enumerate(ranges)]
        rt = ex.submit(_reduce, b_dev, None, *[ex.submit(_zslab_forward, p, *geo, r, spread=i)
                                               for i, (p, r) in enumerate(zip(parts, ranges))])
        r = [_r_value(*ex.gather([ex.submit(_second, rt)])[0])]
        if progress is not None:
            progress(1, r[0], snapshot(parts))
        return np.concatenate(ex.gather([ex.submit(_to_host, p) for p in parts]), axis=0), r
    t = float(step) / (n * max(full))
    inv_row, weights, rate = None, [None] * len(ranges), t
    if method == "sirt":
        ones = [ex.submit(_full, (z1 - z0, dy, dx), b_dev, 1, spread=i) for i, (z0, z1) in enumerate(ranges)]
        inv_row = ex.submit(_inverse, ex.submit(_sum, *[ex.submit(_zslab_forward, o, *geo, r, spread=i)
                                                        for i, (o, r) in enumerate(zip(ones, ranges))]))
        one_b = ex.submit(_full, b.shape, b_dev, 1)
        weights = [ex.submit(_inverse, ex.submit(_zslab_backward, one_b, *geo, r, spread=i), spread=i)
                   for i, r in enumerate(ranges)]
        rate = float(step)
    r_history: list[float] = []
    terms_prev = None  # R terms of the iteration before, still on their way
    for k in range(int(iterations) + 1):
        if k < int(iterations):  # queue iteration k: Σ Π O_k, residual, O_k+1
            rt = ex.submit(_reduce, b_dev, inv_row, *[ex.submit(_zslab_forward, v, *geo, r, spread=i)
                                                      for i, (v, r) in enumerate(zip(vols, ranges))])
            res, terms = ex.submit(_first, rt), ex.submit(_second, rt)
            new = [ex.submit(_zslab_descend, v, res, rate, w, s, *geo, r, spread=i)
                   for i, (v, w, s, r) in enumerate(zip(vols, weights, sup, ranges))]
        if terms_prev is not None:  # R of O_k-1 arrives while iteration k runs
            r_history.append(_r_value(*ex.gather([terms_prev])[0]))
            if progress is not None:
                due = k % max(1, snapshot_every) == 0 or k == int(iterations)
                progress(k, r_history[-1], snapshot(vols) if due else None)
            if plateau and _plateaued(r_history, plateau):
                break  # O_k: what a step-by-step loop stopping here would return
        if k == int(iterations):
            break
        terms_prev, vols = terms, new
    return np.concatenate(ex.gather([ex.submit(_to_host, v) for v in vols]), axis=0), r_history
