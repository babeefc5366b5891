"""The Gaussian-atom model of the coordinate refinement, evaluated block by block on Dask workers.

Every evaluation of the refinement's misfit (:class:`aetdask.model.refine._Problem`) renders
every atom into every projection and takes the gradient of every atom: the per-atom kernels of
:mod:`aetdask.kernels.atoms.gaussian_atoms`, seconds per evaluation at 20,000 atoms. An *engine*
runs them:

* :class:`LocalEngine` — all atoms in this process, one call of each kernel (the reference);
* :class:`DistributedEngine` — the atoms cut into spatial blocks (:func:`partition`), one task
  per block on the workers of the active Dask client. Each block renders its atoms into its own
  *window* of the detector (the pixels its atoms reach at any projection, :func:`window`); the
  windows are summed here in block order (the all-reduce of the Euler-angle reconstruction,
  :mod:`aetdask.reconstruct.runner`), the misfit and its derivative by the model images are
  formed here, and every block is sent the window of that derivative it reaches and returns the
  gradient of its own atoms and its shares of the per-species and per-projection gradients,
  summed here in block order. Fisher blocks and the likelihood test of single atoms go the same
  way. A worker holds only its blocks' atoms and windows: memory in proportion to its block.

Only a few numbers per projection and species (:class:`Frame`) and the blocks' positions travel
with every task besides the windows. The blocks follow the atoms, not the workers, and every sum
runs in block order: the model is the same, bit for bit, on any number of workers, and differs
from the single-process path's only by the order of floating-point sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from aetdask.errors import InputError
from aetdask.kernels.atoms import gaussian_atoms

#: Blocks the atoms are cut into (or one per worker where there are more workers): fixed, so that any
#: number of workers up to it gives the same model.
BLOCKS = 8
#: Fewest atoms for which the refinement goes to the workers by itself (``refine_atoms.workers`` null):
#: below, sending windows costs more than the kernels it spreads.
MIN_ATOMS = 2000


@dataclass(frozen=True)
class Frame:
    """Where every atom lands on the detector and what it looks like, at one evaluation.

    Small (per projection and per profile), so it travels with every block's task.

    Attributes
    ----------
    matrices : array (t, 3, 3)
        Projection matrices (:func:`aetdask.geometry.projection_matrices`).
    offsets : array (t, 2)
        Image offsets (row, column), px.
    pixel : float
        Pixel size, Å.
    n_px : int
        Detector side, px.
    height, width : array (species · k,)
        Height and width (px) of every species' profile components (component c of species s
        at ``s · k + c``).
    k : int
        Gaussians per atom profile.
    turns : array (3, t, 3, 3) or None
        Derivatives of the matrices by each Euler angle (per degree), for the angles' gradient;
        None when the angles are held.
    cutoff : float
        Gaussians end at ``cutoff`` widths.
    """

    matrices: np.ndarray
    offsets: np.ndarray
    pixel: float
    n_px: int
    height: np.ndarray
    width: np.ndarray
    k: int
    turns: np.ndarray | None = None
    cutoff: float = 4.0


def _profiles(frame, kind):
    """Index into ``frame.height``/``width`` of each atom's components, atom-major ``(n · k,)``."""
    return (np.asarray(kind, dtype=np.int64)[:, None] * frame.k + np.arange(frame.k)).ravel()


def _detector(frame, pos, corner):
    """Detector pixels (t, n, 2) of the atoms, relative to the window's ``corner`` (row, column)."""
    xyz = np.einsum("tij,nj->tni", frame.matrices, pos, optimize=True)
    det = xyz[..., [1, 0]] / frame.pixel + frame.n_px // 2 + frame.offsets[:, None, :]
    if corner[0] or corner[1]:
        det = det - np.array(corner, dtype=float)
    return det


def _jacobian(frame):
    """d(row, column)/d(x, y, z) per projection, (t, 2, 3)."""
    return frame.matrices[:, [1, 0], :] / frame.pixel


def window(frame, pos, kind) -> tuple[int, int, int, int]:
    """Rows ``r0:r1`` and columns ``c0:c1`` of the detector that the atoms reach in any projection.

    The corners of the atoms' bounding box are projected (the projection is affine, so the atoms
    land within the corners' extremes), widened by the reach of their widest profile component
    and a pixel, and clipped to the detector.

    >>> f = Frame(np.eye(3)[None], np.zeros((1, 2)), 1.0, 20, np.ones(1), np.ones(1), 1)
    >>> window(f, np.array([[0.0, 0.0, 0.0]]), np.array([0]))  # an atom at the centre, 4 px reach
    (5, 16, 5, 16)
    """
    n = frame.n_px
    if len(pos) == 0:
        return 0, 0, 0, 0
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    corners = np.array([[(lo, hi)[a][0], (lo, hi)[b][1], (lo, hi)[c][2]]
                        for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    det = _detector(frame, corners, (0, 0))
    reach = frame.cutoff * float(frame.width[_profiles(frame, np.unique(kind))].max()) + 1.0
    r0, c0 = np.floor(det.min(axis=(0, 1)) - reach)
    r1, c1 = np.ceil(det.max(axis=(0, 1)) + reach) + 1
    r0, r1 = int(np.clip(r0, 0, n)), int(np.clip(r1, 0, n))
    c0, c1 = int(np.clip(c0, 0, n)), int(np.clip(c1, 0, n))
    return r0, max(r0, r1), c0, max(c0, c1)


def _crop(images, win):
    r0, r1, c0, c1 = win
    return np.ascontiguousarray(images[:, r0:r1, c0:c1])


def render_block(frame, pos, kind, win):
    """Image (t, rows, columns) of the atoms over window ``win``, before background and scale."""
    r0, r1, c0, c1 = win
    prof = _profiles(frame, kind)
    det = np.repeat(_detector(frame, pos, (r0, c0)), frame.k, axis=1)
    return gaussian_atoms.render(det, frame.height[prof], frame.width[prof], (r1 - r0, c1 - c0), cutoff=frame.cutoff)


def gradient_block(frame, pos, kind, win, residual):
    """The atoms' share of the misfit's gradient, given its derivative by the atoms' image over ``win``.

    Returns ``(positions (n, 3) per Å, heights (profiles,), widths (profiles,) per px, offsets (t, 2)
    per px, angles (t, 3) per degree)``; the last is zero where ``frame.turns`` is None.
    """
    r0, _, c0, _ = win
    n_t, n = len(frame.matrices), len(pos)
    prof = _profiles(frame, kind)
    det = np.repeat(_detector(frame, pos, (r0, c0)), frame.k, axis=1)
    gp, gh, gs = gaussian_atoms.gradients(residual, det, frame.height[prof], frame.width[prof], cutoff=frame.cutoff)
    gp = gp.reshape(n_t, n, frame.k, 2).sum(axis=2)  # an atom's components move together
    g_e = np.zeros((n_t, 3))
    if frame.turns is not None:
        for comp in range(3):
            moved = np.einsum("tij,nj->tni", frame.turns[comp], pos, optimize=True)[..., [1, 0]] / frame.pixel
            g_e[:, comp] = np.einsum("tnc,tnc->t", gp, moved)
    n_prof = len(frame.height)
    return (np.einsum("tnc,tcd->nd", gp, _jacobian(frame), optimize=True), np.bincount(prof, gh, n_prof),
            np.bincount(prof, gs, n_prof), gp.sum(axis=1), g_e)


def fisher_block(frame, pos, kind, win, mean, weight):
    """Each atom's Fisher information about its 3-D position, (n, 3, 3): the pixel sums of
    :func:`~aetdask.kernels.atoms.gaussian_atoms.fisher_blocks` over ``win`` (``mean`` None: every pixel
    weighs one, least squares) through the projections' Jacobians."""
    r0, r1, c0, c1 = win
    prof = _profiles(frame, kind)
    if mean is None:
        mean = np.ones((len(frame.matrices), r1 - r0, c1 - c0))
    blocks = gaussian_atoms.fisher_blocks(mean, _detector(frame, pos, (r0, c0)), frame.height[prof].reshape(-1, frame.k),
                                          frame.width[prof].reshape(-1, frame.k), weight, cutoff=frame.cutoff)
    jac = _jacobian(frame)
    return np.einsum("tai,tnab,tbj->nij", jac, blocks, jac, optimize=True)


def likelihood_block(frame, pos, kind, win, counts, mean, weight, sign):
    """Change of the Poisson negative log-likelihood when each atom alone is added (``sign`` +1) or
    taken away (−1): :func:`~aetdask.kernels.atoms.gaussian_atoms.likelihood_change` over ``win``."""
    r0, _, c0, _ = win
    prof = _profiles(frame, kind)
    return gaussian_atoms.likelihood_change(counts, mean, _detector(frame, pos, (r0, c0)),
                                            sign * frame.height[prof].reshape(-1, frame.k),
                                            frame.width[prof].reshape(-1, frame.k), weight, cutoff=frame.cutoff)


def _on_worker(fn, *args):
    """Run a block's kernels with the threads of the worker that runs it (Numba would take every core)."""
    import numba
    from distributed import get_worker

    worker = get_worker()
    state = getattr(worker, "state", None)
    threads = getattr(state, "nthreads", None) or getattr(worker, "nthreads", 1)
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    return fn(*args)


def partition(positions, matrices, blocks: int) -> list[np.ndarray]:
    """Atom indices of each of ``blocks`` slabs of (nearly) equal numbers of atoms, deterministic.

    The slabs are cut across the direction whose image on one detector axis changes least over the
    projections (the tilt axis of a single-axis series): a slab then lands in one band of that axis in
    every projection, and its window (:func:`window`) is that band.

    >>> pos = np.array([[x, 0.0, 0.0] for x in (3.0, -1.0, 2.0, 0.0)])
    >>> [p.tolist() for p in partition(pos, np.eye(3)[None], 2)]
    [[1, 3], [0, 2]]
    """
    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    rows = np.asarray(matrices, dtype=float)[:, :2, :]  # the detector's two in-plane axes, per projection
    best, direction = np.inf, np.array([1.0, 0.0, 0.0])
    for axis in range(2):
        d = rows[:, axis].mean(axis=0)
        norm = float(np.linalg.norm(d))
        if norm < 1e-12:
            continue
        d = d / norm
        leak = float(np.max(np.linalg.norm(rows[:, axis] - (rows[:, axis] @ d)[:, None] * d, axis=1)))
        if leak < best - 1e-12:
            best, direction = leak, d
    order = np.argsort(pos @ direction, kind="stable")
    return [np.sort(part) for part in np.array_split(order, max(1, min(int(blocks), len(pos))))]


class LocalEngine:
    """Every atom in this process, one call of each kernel: the reference path."""

    blocks = 1

    def render(self, frame, pos, kind):
        """Images (t, n_px, n_px) of the atoms, before background and scale."""
        return render_block(frame, pos, kind, (0, frame.n_px, 0, frame.n_px))

    def gradients(self, frame, pos, kind, residual):
        """The misfit's gradient given its derivative ``residual`` (t, n_px, n_px) by the atoms' image
        (:func:`gradient_block`)."""
        return gradient_block(frame, pos, kind, (0, frame.n_px, 0, frame.n_px), residual)

    def fisher(self, frame, pos, kind, mean, weight):
        """Each atom's information about its position, (n, 3, 3) (:func:`fisher_block`)."""
        return fisher_block(frame, pos, kind, (0, frame.n_px, 0, frame.n_px), mean, weight)

    def likelihood_change(self, frame, pos, kind, counts, mean, weight, sign, model=True):
        """Each atom's change of the negative log-likelihood alone (:func:`likelihood_block`)."""
        return likelihood_block(frame, pos, kind, (0, frame.n_px, 0, frame.n_px), counts, mean, weight, sign)


class DistributedEngine:
    """The atoms in spatial blocks (:func:`partition`), one task per block on the client's workers.

    Parameters
    ----------
    client : distributed.Client or None
        None: the same blocks, windows and sums in this process, one block after another (what the
        workers compute, without them; for tests and comparisons).
    parts : list of int arrays
        Atom indices of each block (of the model the engine evaluates).
    workers : int, optional
        Use at most this many of the client's workers (sorted by address); block i goes to
        worker ``i mod workers`` (another may take it over if that one is lost).
    """

    def __init__(self, client, parts, workers: int | None = None):
        names = sorted(client.scheduler_info()["workers"]) if client is not None else ["here"]
        if not names:
            raise InputError("refine_atoms.workers: the Dask client has no workers to refine the atoms on")
        if workers:
            names = names[: int(workers)]
        self.client = client
        self.parts = [np.asarray(p, dtype=np.int64) for p in parts]
        self.blocks = len(self.parts)
        self.names = names
        self.n_atoms = int(sum(len(p) for p in self.parts))

    def _where(self, i):
        return {"workers": [self.names[i % len(self.names)]], "allow_other_workers": True}

    def _submit(self, fn, i, *args):
        if self.client is None:
            return fn(*args)
        return self.client.submit(_on_worker, fn, *args, pure=False, **self._where(i))

    def _gather(self, futures):
        return futures if self.client is None else self.client.gather(futures)

    def _scatter(self, arrays):
        """Each block's array onto its own worker (directly, not through the scheduler)."""
        if self.client is None:
            return list(arrays)
        out = [None] * len(arrays)
        for w in range(min(len(self.names), len(arrays))):
            mine = list(range(w, len(arrays), len(self.names)))
            futures = self.client.scatter([arrays[i] for i in mine], workers=[self.names[w]], hash=False)
            for i, f in zip(mine, futures):
                out[i] = f
        return out

    def _split(self, frame, pos, kind, model):
        """Blocks of ``pos``: the engine's own partition for its model's atoms, else a new one."""
        if model:
            if len(pos) != self.n_atoms:
                raise ValueError(f"{len(pos)} atoms given to an engine partitioned for {self.n_atoms}")
            parts = self.parts
        else:
            parts = [p for p in partition(pos, frame.matrices, self.blocks) if len(p)]
        return parts, [(np.ascontiguousarray(pos[p]), np.asarray(kind)[p]) for p in parts]

    def _windows(self, frame, pieces):
        return [window(frame, p, k) for p, k in pieces]

    def render(self, frame, pos, kind):
        """Images (t, n_px, n_px) of all atoms: every block's window, summed in block order."""
        _, pieces = self._split(frame, pos, kind, True)
        wins = self._windows(frame, pieces)
        futures = [self._submit(render_block, i, frame, p, k, w) for i, ((p, k), w) in enumerate(zip(pieces, wins))]
        out = np.zeros((len(frame.matrices), frame.n_px, frame.n_px))
        for (r0, r1, c0, c1), img in zip(wins, self._gather(futures)):
            out[:, r0:r1, c0:c1] += img
        return out

    def gradients(self, frame, pos, kind, residual):
        """As :meth:`LocalEngine.gradients`: each block gets its window of ``residual``; positions come
        back in atom order, the shared parts summed in block order."""
        parts, pieces = self._split(frame, pos, kind, True)
        wins = self._windows(frame, pieces)
        data = self._scatter([_crop(residual, w) for w in wins])
        futures = [self._submit(gradient_block, i, frame, p, k, w, d)
                   for i, ((p, k), w, d) in enumerate(zip(pieces, wins, data))]
        g_pos = np.zeros((len(pos), 3))
        total = None
        for part, (gp, *shared) in zip(parts, self._gather(futures)):
            g_pos[part] = gp
            total = shared if total is None else [a + b for a, b in zip(total, shared)]
        return (g_pos, *total)

    def fisher(self, frame, pos, kind, mean, weight):
        """As :meth:`LocalEngine.fisher`, block by block, in atom order."""
        parts, pieces = self._split(frame, pos, kind, True)
        wins = self._windows(frame, pieces)
        data = self._scatter([_crop(mean, w) for w in wins]) if mean is not None else [None] * len(wins)
        futures = [self._submit(fisher_block, i, frame, p, k, w, d, weight)
                   for i, ((p, k), w, d) in enumerate(zip(pieces, wins, data))]
        out = np.zeros((len(pos), 3, 3))
        for part, info in zip(parts, self._gather(futures)):
            out[part] = info
        return out

    def likelihood_change(self, frame, pos, kind, counts, mean, weight, sign, model=True):
        """As :meth:`LocalEngine.likelihood_change`, block by block; ``model`` False: ``pos`` are other
        points than the model's atoms (candidates), cut into blocks of their own."""
        pos = np.asarray(pos, dtype=float).reshape(-1, 3)
        if len(pos) == 0:
            return np.zeros(0)
        parts, pieces = self._split(frame, pos, kind, model)
        wins = self._windows(frame, pieces)
        data = self._scatter([(_crop(counts, w), _crop(mean, w)) for w in wins])
        futures = [self._submit(_likelihood_pair, i, frame, p, k, w, d, weight, sign)
                   for i, ((p, k), w, d) in enumerate(zip(pieces, wins, data))]
        out = np.zeros(len(pos))
        for part, change in zip(parts, self._gather(futures)):
            out[part] = change
        return out


def _likelihood_pair(frame, pos, kind, win, images, weight, sign):
    """:func:`likelihood_block` with the counts and mean windows scattered together."""
    return likelihood_block(frame, pos, kind, win, images[0], images[1], weight, sign)


def _in_task() -> bool:
    """Whether this code runs as a task on a Dask worker."""
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def engine(positions, matrices, workers=None, blocks=None):
    """The engine for refining ``positions`` (Å, (n, 3)) seen through ``matrices`` (t, 3, 3).

    ``workers`` (``refine_atoms.workers``): None — the active Dask client's workers when there is one,
    at least :data:`MIN_ATOMS` atoms, this is not itself a task on a worker and the workers have more
    threads than this process's kernels would use (workers on the same cores only add the transfers:
    ``bench_refine_workers.py --workers 0,1,2``, BENCHMARKS.md), else this process;
    0 — this process; N — at most N workers of the active client (:class:`~aetdask.errors.InputError`
    when none is active). ``blocks`` (``refine_atoms.blocks``): None — :data:`BLOCKS`, or one per
    worker where there are more.

    >>> type(engine(np.zeros((5, 3)), np.eye(3)[None], workers=0)).__name__
    'LocalEngine'
    """
    from aetdask.cluster import active_client

    n = len(positions)
    if workers is not None and int(workers) < 0:
        raise InputError(f"refine_atoms.workers: expected null, 0 or a number of workers, got {workers!r}")
    if workers is not None and int(workers) == 0:
        return LocalEngine()
    client = active_client()
    if client is None:
        if workers is not None:
            raise InputError(f"refine_atoms.workers = {workers}: no Dask client is active to refine the atoms on "
                             "(start one, e.g. with aetdask.cluster.cluster(), or set refine_atoms.workers to 0)")
        return LocalEngine()
    if workers is None and (n < MIN_ATOMS or _in_task()):
        return LocalEngine()  # small, or itself a task on a worker (whose thread would wait on its own blocks)
    info = client.scheduler_info()["workers"]
    available = len(info)
    if workers is None and sum(int(w.get("nthreads", 1)) for w in info.values()) <= numba.get_num_threads():
        return LocalEngine()  # no more cores out there than here
    used = min(available, int(workers)) if workers else available
    count = int(blocks) if blocks else max(BLOCKS, used)
    return DistributedEngine(client, partition(positions, matrices, count), workers=used)
