"""Running iterative reconstructions on Dask workers (DESIGN §6).

* Single-axis series: the volume is cut into slabs along the tilt axis; each
  slab is an independent problem, one task per slab, no communication. The
  work goes in rounds of a few iterations so the global R-factor can be
  watched (progress, plateau stopping) between rounds; the slabs stay on their
  workers between rounds.
* General Euler angles: the volume is cut into z-slabs; every iteration each
  slab's forward projection is computed on its worker, the projections are
  summed in slab order (an all-reduce), and the residual goes back to every
  slab for its back projection and update.

With no distributed client the same tasks run in this process, in the same
order, so the result does not depend on where it runs.
"""

from __future__ import annotations

import numpy as np

from aetdask.kernels import iterative
from aetdask.reconstruct.projectors import EulerProjector, slice_projector


class _Done:
    """A finished 'future' for in-process execution."""

    def __init__(self, value):
        self._value = value

    def result(self):
        return self._value


class Executor:
    """Submit work to the active distributed client, or run it here."""

    def __init__(self):
        try:
            from distributed import get_client

            self.client = get_client()
        except (ImportError, ValueError):
            self.client = None

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info()["workers"]) if self.client else 1

    def submit(self, fn, *args, **kwargs):
        if self.client is None:
            args = [a.result() if isinstance(a, _Done) else a for a in args]
            return _Done(fn(*args, **kwargs))
        return self.client.submit(fn, *args, pure=False, **kwargs)

    def gather(self, futures):
        if self.client is None:
            return [f.result() for f in futures]
        return self.client.gather(futures)

    def scatter(self, value):
        # hash=False: a re-scatter of equal data must not share a key that is being released
        return _Done(value) if self.client is None else self.client.scatter(value, hash=False)


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges covering ``range(n)`` as evenly as possible."""
    parts = max(1, min(int(parts), n))
    edges = np.linspace(0, n, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


# ---------------------------------------------------------------- single axis
def _slab_round(b, theta, volume, support, method, iterations, step, subsamples):
    proj = slice_projector((b.shape[1], b.shape[1]), b.shape[1], theta, subsamples, b.dtype)
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


def run_single_axis(b, theta, *, method, iterations, step, subsamples, support=None, initial=None, slabs=None,
                    round_size=10, plateau=0.0, progress=None):
    """Reconstruct a single-axis series in slabs along x; returns (volume, R per iteration)."""
    ex = Executor()
    n, dy, dx = b.shape
    ranges = split(dx, slabs or ex.workers)
    b_f = [ex.scatter(np.ascontiguousarray(b[:, :, x0:x1])) for x0, x1 in ranges]
    sup = [None if support is None else np.ascontiguousarray(support[:, :, x0:x1]) for x0, x1 in ranges]
    vols = [None if initial is None else ex.scatter(np.ascontiguousarray(initial[:, :, x0:x1])) for x0, x1 in ranges]
    r_history: list[float] = []
    todo = 1 if method == "fbp" else int(iterations)
    while todo > 0:
        k = todo if method == "fbp" else min(round_size, todo)
        futures = [
            ex.submit(_slab_round, bf, tuple(theta), v, s, method, k, step, subsamples)
            for bf, v, s in zip(b_f, vols, sup)
        ]
        vols = [ex.submit(_first, f) for f in futures]
        terms = ex.gather([ex.submit(_second, f) for f in futures])
        for it in range(len(terms[0])):
            num = sum(t[it][0] for t in terms)
            den = sum(t[it][1] for t in terms)
            r_history.append(float(np.mean(num / np.where(den > 0, den, 1.0))))
        todo -= k
        if progress is not None:
            progress(len(r_history), r_history[-1])
        if plateau and _plateaued(r_history, plateau):
            break
    volume = np.concatenate(ex.gather(vols), axis=2)
    return volume, r_history


def _first(pair):
    return pair[0]


def _second(pair):
    return pair[1]


def _plateaued(r, tolerance, window=10) -> bool:
    """R improved by less than ``tolerance`` (relative) over the last ``window`` iterations."""
    return len(r) > window and (r[-window - 1] - r[-1]) <= tolerance * r[-1]


# ---------------------------------------------------------------- general Euler angles
def _zslab_forward(volume, euler, det_shape, full_shape, subsamples, z_range):
    return EulerProjector(euler, det_shape, full_shape, subsamples, z_range).forward(volume)


def _zslab_backward(residual, euler, det_shape, full_shape, subsamples, z_range):
    return EulerProjector(euler, det_shape, full_shape, subsamples, z_range).backward(residual)


def _zslab_descend(volume, residual, t, weight, support, euler, det_shape, full_shape, subsamples, z_range):
    """One slab's update, O ← max(0, O − t · weight · Πᵀ residual) [· support].

    RESIRE: residual = Π O − b, no weight. SIRT: residual = R (Π O − b), weight = C, t = λ.
    """
    g = _zslab_backward(residual, euler, det_shape, full_shape, subsamples, z_range)
    if weight is not None:
        g = g * weight
    return iterative.descend(volume.copy(), g, t, support)  # a copy: task inputs are not ours to change


def run_euler(b, euler, *, method, iterations, step, subsamples, support=None, initial=None, slabs=None,
              plateau=0.0, progress=None):
    """Reconstruct at general Euler angles with z-slabs and a per-iteration sum of projections."""
    ex = Executor()
    n, dy, dx = b.shape
    full = (dy, dy, dx)
    ranges = split(full[0], slabs or ex.workers)
    geo = (np.asarray(euler, float), (dy, dx), full, subsamples)
    sup = [None if support is None else support[z0:z1] for z0, z1 in ranges]
    vols = [ex.scatter(np.zeros((z1 - z0, dy, dx), dtype=b.dtype) if initial is None
                       else np.ascontiguousarray(initial[z0:z1])) for z0, z1 in ranges]
    r_history: list[float] = []
    if method == "fbp":
        filtered = iterative.ramp_filter(b, axis=1)
        scale = np.pi * _angular_range(euler[:, 1]) / 180.0 / (2 * n)
        parts = [scale * p for p in ex.gather([ex.submit(_zslab_backward, filtered, *geo, r) for r in ranges])]
        volume = np.concatenate(parts, axis=0)
        calc = sum(ex.gather([ex.submit(_zslab_forward, p, *geo, r) for p, r in zip(parts, ranges)]))
        return volume, [iterative.r_factor(b, calc)]
    t = float(step) / (n * max(full))
    if method == "sirt":
        ones = [ex.submit(np.ones, (z1 - z0, dy, dx), dtype=b.dtype) for z0, z1 in ranges]
        row = sum(ex.gather([ex.submit(_zslab_forward, o, *geo, r) for o, r in zip(ones, ranges)]))
        inv_row = np.where(row > 1e-6, 1 / np.maximum(row, 1e-6), 0).astype(b.dtype)
        col = ex.gather([ex.submit(_zslab_backward, np.ones_like(b), *geo, r) for r in ranges])
        inv_col = [np.where(c > 1e-6, 1 / np.maximum(c, 1e-6), 0).astype(b.dtype) for c in col]
    for it in range(int(iterations)):
        calc = sum(ex.gather([ex.submit(_zslab_forward, v, *geo, r) for v, r in zip(vols, ranges)]))
        num, den = iterative.r_factor_terms(b, calc)
        r_history.append(float(np.mean(num / np.where(den > 0, den, 1.0))))
        if method == "sirt":
            res, rate, weights = ex.scatter(inv_row * (calc - b)), float(step), inv_col
        else:
            res, rate, weights = ex.scatter((calc - b).astype(b.dtype)), t, [None] * len(ranges)
        vols = [ex.submit(_zslab_descend, v, res, rate, w, s, *geo, r)
                for v, w, s, r in zip(vols, weights, sup, ranges)]
        if progress is not None:
            progress(len(r_history), r_history[-1])
        if plateau and _plateaued(r_history, plateau):
            break
    return np.concatenate(ex.gather(vols), axis=0), r_history
