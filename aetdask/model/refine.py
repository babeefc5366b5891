"""Coordinate refinement: atoms as Gaussians fitted to every projection of the tilt series.

The model of projection k is ``m_k = bg_k + c_k · Σ_j H_s · exp(−|u − p_kj − o_k|² / 2 s_s²)``:
atom j of species s at the detector position ``p_kj`` the geometry gives it,
per-species height H and width s (B = 8π²s²), and per projection a
background ``bg_k``, a scale ``c_k`` (dose) and an image offset ``o_k``
(alignment). Raw counts are fitted by maximum likelihood under the mixed
Poisson–Gaussian noise model estimated in preprocessing (α, σ per projection;
the shifted-Poisson approximation); projections in arbitrary units by least
squares. Fitting the counts themselves, not their denoised version, keeps all
the information the photons carry and none of the denoiser's bias.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.optimize
from scipy import ndimage
import xarray as xr

from aetdask import config
from aetdask.errors import InputError
from aetdask.geometry import (deformation_directions, projection_matrices, remove_rigid_motion, rigid_motion_basis,
                              strain_matrix)
from aetdask.kernels.atoms import gaussian_atoms
from aetdask.kernels.atoms.trace import merge, nearest_distance
from aetdask.model.blocks import Frame, LocalEngine
from aetdask.model.blocks import engine as block_engine
from aetdask.progress import Line
from aetdask.model.uncertainty import attach as attach_position_sigma
from aetdask.model.uncertainty import position_covariance
from aetdask.reconstruct.stage import euler_angles
from aetdask.schema import add_provenance, validate_atoms, validate_tilt_series
from aetdask.schema import atoms as make_atoms

#: Starting Gaussian width (Å) before it is fitted: about the probe-limited resolution.
_START_WIDTH = 0.5
#: Largest change of a projection's Euler angles in angle refinement (degrees).
_MAX_ANGLE = 2.0
#: L-BFGS stops on the projected gradient or the iteration cap, not on one iteration's small relative gain
#: (the default 2×10⁻⁹ ended fits after a single short step, far from the optimum).
_FTOL = 1e-13
#: Widest an atom's core may be, as a fraction of the closest two atoms may be (``min_distance``): two
#: Gaussians of width s at distance d show two peaks only while d > 2s (Sparrow's limit).
_CORE_WIDTH = 0.5
#: Most Fisher-scoring iterations on the positions after each free fit (:func:`_score_positions`); they stop
#: sooner once one gains less than :data:`STALL` per atom.
SCORING = 30
#: Log-likelihood per atom below which an iteration's gain is not worth its cost: Fisher scoring stops after an
#: iteration that gains less, L-BFGS once its last :data:`STALL_WINDOW` iterations gained less each on average (a
#: step of 1/20 of an atom's own standard error gains about that).
STALL = 1e-3
#: Iterations over which the free L-BFGS fit's gain is averaged for :data:`STALL` (its gain per iteration
#: comes in bursts: a few strong iterations between weak ones).
STALL_WINDOW = 20
#: Trial strain of the deformation search: about 0.1° of angle change, the size of the errors it is for.
_STRAIN_STEP = 2e-3


def _deformation_search(problem, x, sweeps=2, h=_STRAIN_STEP, log=None):
    """Move the angles along the deformation patterns, the atoms following; return the new parameters.

    A linear deformation of the whole model ``r → (I + E) r`` seen at angles
    changed along :func:`aetdask.geometry.strain_basis` reproduces every
    projection up to a small in-plane magnification: a long, flat valley of the
    misfit that a joint fit of atoms and angles does not travel (its gradient
    along the valley is tiny next to those across it). Here the valley is
    searched directly: for each deformation direction ``d`` (the right singular
    vectors of the strain-to-angle map that change the angles), the misfit with
    the angles moved by ``strain_basis @ (ε ± h d)`` and the atoms moved by
    ``(I − E)`` and then refitted (angles held) is evaluated, and a parabola
    through the three values gives the step. The atoms, unlike a voxel volume,
    cannot take up each projection's in-plane magnification, so the valley has a
    minimum where the deformation is right. Steps that do not lower the misfit
    are refused.
    """
    pos, hgt, wid, bg, c, o, e = problem.unpack(x)
    euler = problem.euler + e
    pattern, directions, _ = deformation_directions(euler)  # magnifications, which change no angle, left out
    pattern = pattern.reshape(-1, 3, 6)  # degrees per unit strain
    hessian = _position_hessians(problem, x)

    def trial(eps):
        """Misfit with the angles moved along the patterns by ``eps``, the atoms deformed back and refitted."""
        p = problem.pack(pos @ (np.eye(3) - strain_matrix(eps)).T, hgt, wid, bg, c, o, e + pattern @ eps)
        return _fit_positions(problem, p, hessian)

    eps = np.zeros(6)
    best, best_x = trial(eps)
    for sweep in range(sweeps):
        for d in directions:
            fp, _ = trial(eps + h * d)
            fm, _ = trial(eps - h * d)
            curv = fp - 2 * best + fm
            if curv <= 0:
                continue
            t = float(np.clip(0.5 * h * (fm - fp) / curv, -h, h))  # no further than the three points reach
            f, xt = trial(eps + t * d)
            if log is not None:
                log(f"deformation search, sweep {sweep + 1}: misfit {best:.6g} → {f:.6g} (strain step {t:+.2e})")
            if f < best:
                eps, best, best_x = eps + t * d, f, xt
    return best_x, eps


def _position_hessians(problem, x, delta=1e-3):
    """Each atom's 3×3 block of the misfit's Hessian in its position (Å), by differences of the gradient.

    All atoms are moved at once along one axis per difference: the blocks couple
    neighbours only through overlapping tails, which this leaves out.
    """
    sl = problem._slice("pos")
    g0 = problem(x)[1][sl].reshape(-1, 3)
    blocks = np.empty((len(g0), 3, 3))
    for axis in range(3):
        moved = x.copy()
        moved[sl.start + axis:sl.stop:3] += delta
        blocks[:, :, axis] = (problem(moved)[1][sl].reshape(-1, 3) - g0) / delta
    blocks = 0.5 * (blocks + np.swapaxes(blocks, 1, 2))
    w, v = np.linalg.eigh(blocks)
    w = np.maximum(w, 1e-3 * w.max(axis=1, keepdims=True))
    return np.einsum("nij,nj,nkj->nik", v, w, v, optimize=True)


def _fit_positions(problem, x, hessian, iterations=10):
    """Newton steps on every atom's position, everything else held; return ``(misfit, parameters)``."""
    sl = problem._slice("pos")
    x = x.copy()
    value, grad = problem(x)
    for _ in range(iterations):
        step = -np.linalg.solve(hessian, grad[sl].reshape(-1, 3, 1))[..., 0]
        for _half in range(6):  # halve a step that raises the misfit
            trial = x.copy()
            trial[sl] += step.ravel()
            new, new_grad = problem(trial)
            if new <= value:
                break
            step *= 0.5
        else:
            break
        converged = value - new < 1e-10 * max(abs(value), 1.0)
        x, value, grad = trial, new, new_grad
        if converged:
            break
    return float(value), x


def _position_information(problem, x):
    """Each atom's Fisher information about its position, ``(n, 3, 3)`` per Å², in the misfit's units: the
    Gauss–Newton block of the misfit's Hessian (counts: Poisson; a.u.: least squares), neighbours held."""
    pos, h, s, bg, c, o, e = problem.unpack(x)
    if problem.counts:
        last = problem.rendered  # the step just evaluated there: its images, not a second rendering
        m = last[1] if last is not None and np.array_equal(last[0], x) else problem.model(x)[0]
        mean = np.maximum((m + problem.offset) / problem.alpha, 1e-12)
        weight = c / problem.alpha[:, 0, 0]
    else:
        mean = None  # every pixel weighs one
        weight = c
    return problem.norm * problem.engine.fisher(problem.frame(h, s, o, e), pos, problem.kind_of, mean, weight)


def _score_positions(problem, x, lower, upper, iterations=20, log=None):
    """Fisher scoring of every atom's position at once, everything else held: ``(misfit, parameters)``.

    Each atom steps by ``−F_j⁻¹ g_j`` (its own 3×3 information block, :func:`_position_information`,
    and its gradient), within ``lower``/``upper``. An atom's curvature differs from its neighbour's by
    the counts over it (the particle's centre against its rim, atoms seen over thick and thin parts):
    a quasi-Newton fit of all positions at once, scaled by none of it, needs hundreds of iterations;
    these steps take each atom most of the way in one. The blocks leave out the coupling of atoms whose
    images overlap, so a step that raises the misfit is halved (at most six times), and the scoring
    stops once an iteration gains less than :data:`STALL` in log-likelihood per atom.
    """
    sl = problem._slice("pos")
    x = x.copy()
    value, grad = problem(x, ("h", "s", "bg", "c", "o", "e"))
    for it in range(iterations):
        info = _position_information(problem, x)
        w, v = np.linalg.eigh(info)
        w = np.maximum(w, 1e-6 * max(float(w.max()), 1e-300))  # an atom the counts do not see does not move
        step = -np.einsum("nij,nj,nkj,nk->ni", v, 1.0 / w, v, grad[sl].reshape(-1, 3), optimize=True).ravel()
        for _half in range(6):  # the misfit alone for a step that may be refused; the gradient once one is not
            trial = x.copy()
            trial[sl] = np.clip(x[sl] + step, lower, upper)
            new = problem.value(trial)
            if new < value:
                break
            step *= 0.5
        else:
            break
        gained = value - new
        new_grad = problem(trial, ("h", "s", "bg", "c", "o", "e"))[1]
        problem.calls -= 1  # the same evaluation, its gradient now
        x, value, grad = trial, new, new_grad
        if log is not None:
            log(f"scoring {it + 1}: misfit {value:.8g}")
        if gained < STALL * problem.norm * problem.n_at:
            break
    return float(value), x


def _stalled(problem, callback):
    """An L-BFGS callback that calls ``callback`` and ends the fit (``StopIteration``) once the misfit's last
    :data:`STALL_WINDOW` iterations gained less than :data:`STALL` per atom and iteration: Fisher scoring
    (:func:`_score_positions`), which follows, then gains more per evaluation. On 20,000 atoms the second
    free fit gained 0.08 per atom in its last 160 of 200 iterations, for 260 s (BENCHMARKS.md). Only on counts
    (a misfit in log-likelihood) and with the angles held: refined angles travel a long, flat valley of the
    misfit whose small gains per iteration add up (:func:`_deformation_search`)."""
    values = []

    def check(xk):
        callback(xk)
        values.append(problem.last)
        if (len(values) > STALL_WINDOW
                and values[-STALL_WINDOW - 1] - values[-1] < STALL_WINDOW * STALL * problem.norm * problem.n_at):
            raise StopIteration
    return check


def _per_tilt(tilts, name, default):
    if name in tilts.coords:
        v = np.asarray(tilts.coords[name].values, dtype=float)
        return np.where(np.isfinite(v), v, default)
    return np.full(tilts.sizes["tilt"], float(default))


class _Problem:
    """The misfit and its gradient over all parameters, packed in one vector.

    Blocks: positions (atoms × 3, Å), heights and widths (per species),
    background and scale (per projection), image offsets (projections × 2,
    pixels) and Euler-angle offsets (projections × 3, degrees).
    """

    def __init__(self, b, euler, pixel, kind_of, n_sp, counts, alpha, sigma, angles=False, radius=1.0, components=1):
        self.b, self.pixel, self.kind_of, self.n_sp, self.counts = b, pixel, kind_of, n_sp, counts
        self.k = int(components)
        # component c of atom j is Gaussian j·k + c; its height and width are entry kind·k + c
        self.profile_of = (np.asarray(kind_of)[:, None] * self.k + np.arange(self.k)).ravel()
        # the optimiser sees angles in pixels of motion at the model's radius: well scaled against the
        # positions and offsets (degrees alone make the problem stiff and L-BFGS crawl)
        self.kappa = np.deg2rad(1.0) * max(float(radius), pixel) / pixel
        # heights and backgrounds in the misfit's own unit of the data: counts for counts, the data's RMS for
        # least squares (projections in arbitrary units can be 10⁻³ or 10⁶; the optimiser needs them of order one)
        self.level = 1.0 if counts else max(float(np.sqrt(np.mean(b * b))), 1e-300)
        self.euler = np.asarray(euler, dtype=float)
        self.angles = angles
        self.n_t, self.n_px = b.shape[0], b.shape[1]
        self.n_at = len(kind_of)
        if counts:  # shifted Poisson: (z + σ²/α)/α ~ Poisson((m + σ²/α)/α)
            self.alpha = np.maximum(alpha, 1e-12)[:, None, None]
            self.offset = (sigma**2)[:, None, None] / self.alpha
            self.zp = np.clip((b + self.offset) / self.alpha, 0, None)
            self.norm = 1.0 / max(float(np.mean(self.zp)), 1.0)  # per count: tolerances independent of dose
        else:  # least squares in units of the data's RMS, so the optimiser's tolerances mean the same
            self.norm = 1.0 / max(float(np.mean(b * b)), 1e-300)
        self.calls = 0
        self.last = np.nan
        self.rendered = None  # (parameters, model images) last rendered, by an evaluation or for an information
        self._drawn = None  # (parameters but bg and c, the atoms' image) last drawn
        # runs the per-atom kernels: here (the reference), or in blocks on Dask workers (refine_atoms sets it)
        self.engine = LocalEngine()
        sizes = [3 * self.n_at, n_sp * self.k, n_sp * self.k, self.n_t, self.n_t, 2 * self.n_t, 3 * self.n_t]
        self.split = np.cumsum(sizes)[:-1]
        self.size = int(np.sum(sizes))

    def unpack(self, p):
        pos, h, s, bg, c, o, e = np.split(p, self.split)
        return (pos.reshape(-1, 3), h * self.level, s, bg * self.level, c, o.reshape(-1, 2),
                e.reshape(-1, 3) / self.kappa)

    def pack(self, pos, h, s, bg, c, o, e):
        return np.concatenate([np.ravel(pos), np.asarray(h) / self.level, s, np.asarray(bg) / self.level, c,
                               np.ravel(o), np.ravel(e) * self.kappa])

    def matrices(self, e):
        return projection_matrices(self.euler + e)

    def jacobian(self, e):
        """d(row, col)/d(x, y, z) per projection, (t, 2, 3)."""
        return self.matrices(e)[:, [1, 0], :] / self.pixel

    def detector(self, pos, o, e):
        xyz = np.einsum("tij,nj->tni", self.matrices(e), pos, optimize=True)
        return xyz[..., [1, 0]] / self.pixel + self.n_px // 2 + o[:, None, :]

    def gaussians(self, pos, h, s, o, e):
        """Every atom's profile components as Gaussians: detector positions (t, n·k, 2), heights, widths (px)."""
        return (np.repeat(self.detector(pos, o, e), self.k, axis=1), h[self.profile_of],
                s[self.profile_of] / self.pixel)

    def frame(self, h, s, o, e, turns=False):
        """What the engine's blocks need to place and draw every atom (:class:`aetdask.model.blocks.Frame`);
        ``turns``: with the matrices' derivatives by the angles, for their gradient."""
        da = None
        if turns:
            step = 1e-4  # degrees; the matrices are smooth, central differences are exact to ~1e-9
            da = np.empty((3, self.n_t, 3, 3))
            for comp in range(3):
                d = np.zeros(3)
                d[comp] = step
                da[comp] = (self.matrices(e + d) - self.matrices(e - d)) / (2 * step)
        return Frame(self.matrices(e), o, self.pixel, self.n_px, h, s / self.pixel, self.k, da)

    def model(self, p, frame=None):
        pos, h, s, bg, c, o, e = self.unpack(p)
        atoms = self.engine.render(frame if frame is not None else self.frame(h, s, o, e), pos, self.kind_of)
        return bg[:, None, None] + c[:, None, None] * atoms, atoms

    def _images(self, p, frame):
        """Model images and the atoms' image at ``p``: the atoms' image is the last one drawn where only the
        backgrounds and scales changed since (a fit of those alone, or a step tried by :meth:`value` first)."""
        pos, h, s, bg, c, o, e = self.unpack(p)
        shape = np.concatenate([p[: self.split[2]], p[self.split[4]:]])  # everything but bg and c
        if self._drawn is not None and np.array_equal(self._drawn[0], shape):
            atoms = self._drawn[1]
            m = bg[:, None, None] + c[:, None, None] * atoms
        else:
            m, atoms = self.model(p, frame)
            self._drawn = (shape, atoms)
        self.rendered = (np.array(p, copy=True), m)
        return m, atoms

    def _misfit(self, m):
        if self.counts:
            value, g = gaussian_atoms.poisson_misfit(m, self.offset, self.alpha, self.zp)  # and dL/dm
            return self.norm * value, self.norm * g
        r = m - self.b
        return 0.5 * self.norm * float(np.sum(r * r)), self.norm * r

    def value(self, p):
        """The misfit alone (no gradient): for a step that may be refused; its images are kept, so the
        gradient there, if it is taken, costs no second rendering."""
        pos, h, s, bg, c, o, e = self.unpack(p)
        m, _ = self._images(p, self.frame(h, s, o, e))
        value = self._misfit(m)[0]
        self.calls += 1
        self.last = value
        return value

    def __call__(self, p, frozen=()):
        pos, h, s, bg, c, o, e = self.unpack(p)
        # with the atoms, their profile, the offsets and the angles all held (a fit of the backgrounds and
        # scales alone), the atoms' image is the one drawn before and their gradients are not needed
        still = {"pos", "h", "s", "o"} <= set(frozen) and ("e" in frozen or not self.angles)
        frame = self.frame(h, s, o, e, turns=self.angles and "e" not in frozen)
        m, atoms = self._images(p, frame)
        value, g = self._misfit(m)
        # per atom: positions; summed over the atoms: profiles, offsets and angles (the engine's blocks)
        if still:
            n_prof = self.n_sp * self.k
            g_pos, gh, gs, g_o, g_e = (np.zeros((self.n_at, 3)), np.zeros(n_prof), np.zeros(n_prof),
                                       np.zeros((self.n_t, 2)), np.zeros((self.n_t, 3)))
        else:
            g_pos, gh, gs, g_o, g_e = self.engine.gradients(frame, pos, self.kind_of, g * c[:, None, None])
        grad = self.pack(
            g_pos,
            gh * self.level**2,  # pack divides by the level again
            gs / self.pixel,
            g.sum(axis=(1, 2)) * self.level**2,
            np.sum(g * atoms, axis=(1, 2)),
            g_o,
            g_e / self.kappa**2,  # pack multiplies by κ again: the gradient per packed unit is g_e / κ
        )
        for part in frozen:
            grad[self._slice(part)] = 0.0
        if not self.angles:
            grad[self._slice("e")] = 0.0
        self.calls += 1
        self.last = value
        return value, grad

    def _slice(self, part):
        names = ["pos", "h", "s", "bg", "c", "o", "e"]
        i = names.index(part)
        edges = np.concatenate([[0], self.split, [self.size]])
        return slice(edges[i], edges[i + 1])


def refine_atoms(
    model: xr.Dataset,
    tilts: xr.DataArray,
    iterations: int | None = None,
    *,
    alpha=None,
    sigma=None,
    max_displacement: float | None = None,
    candidates=None,
    min_distance: float | None = None,
    select: bool | None = None,
    angles: bool | None = None,
    components: int | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> xr.Dataset:
    """Refine atom positions against the projections (and the per-species H, B and per-projection
    background, scale and offset).

    Parameters
    ----------
    model : xr.Dataset
        Atoms with species (the ``atoms`` product), in Å, in the sample frame.
    tilts : xr.DataArray
        The tilt series: raw counts (units ``"counts"``: maximum likelihood) or
        preprocessed projections (``"a.u."``: least squares). Recorded
        ``shift_y``/``shift_x`` coords start the per-projection offsets.
    alpha, sigma : float or array (n_tilt,), optional
        Noise model of counts (variance = α·mean + σ²); default the
        ``noise_alpha``/``noise_sigma`` coords, else pure Poisson (1, 0).
    iterations, max_displacement
        None = ``aetdask.refine_atoms.*`` configuration. ``iterations`` caps each
        free L-BFGS fit; on counts with the angles held it ends sooner, once its
        gain per atom stalls (:data:`STALL`). Every atom stays within
        ``max_displacement`` Å of its starting position along each axis.
    candidates : array (n, 3), optional
        Positions (Å) that tracing found but classification left out; with
        ``select``, those the counts support are added as atoms.
    min_distance : float, optional
        Closest two atoms may be (Å); default :func:`~aetdask.model.trace.merge_distance`.
    select : bool, optional
        Model selection on counts (default ``aetdask.refine_atoms.select``):
        after the fit, atoms whose removal costs less likelihood than
        :func:`selection_threshold` are dropped, and candidates or points of
        the gain map near the model that gain more are added (:func:`_select`);
        after the free fit, an atom the counts show to be two (tracing put it between
        bonded neighbours) is split in two (:func:`_split`); and the fit is repeated.
    angles : bool, optional
        Refine every projection's Euler angles too (within ±2°; default
        ``aetdask.refine_atoms.angles``, off when unset; the pipeline's
        :func:`~aetdask.pipeline.refine_store` turns it on when the
        reconstruction refined the angles). A rotation of the whole model is not
        observable and is taken out of the angles. Angle errors along the
        patterns of a linear deformation of the whole model are a flat valley of
        the misfit that the joint fit does not travel; a search along those
        patterns, the atoms following, finishes them (:func:`_deformation_search`).
        The refined angles are in the provenance (``phi``, ``theta``, ``psi``),
        with the strain the search applied (``deformation_search_strain``).
    components : int, optional
        Gaussians per species' atom profile, concentric, each with its own
        height and width (default ``aetdask.refine_atoms.components``; unset:
        2 when the angles are refined, else 1). An ADF atom image is the atom's
        potential seen through the probe: a sharp core on broad tails that one
        Gaussian fits to about 8 % and two to about 1 %
        (``benchmarks/bench_atom_profile.py``). What one Gaussian cannot fit,
        the positions and angles take up instead: a bias of a few pm, which
        matters where the noise is lower than that and for the angles, whose
        deformation-like part the misfit hardly pins down. At the seed paper's
        doses the noise dominates and one Gaussian is as precise, and 2–3 times
        faster (docs/angle-refinement.md).
    workers : int, optional
        Where the per-atom kernels run (default ``aetdask.refine_atoms.workers``):
        unset, on the active Dask client's workers when there is one, the
        model has :data:`aetdask.model.blocks.MIN_ATOMS` atoms or more and the
        workers have more threads than this process, else in this process; 0, in this process; N, on at most N workers of the
        active client. On workers the atoms are cut into spatial blocks
        (``aetdask.refine_atoms.blocks``), each rendered and differentiated where
        it lives, and their images summed here every evaluation
        (:mod:`aetdask.model.blocks`): the same model on any number of workers.

    Returns
    -------
    xr.Dataset
        The refined model with ``displacement`` (Å) per atom from where tracing
        put it and ``flag`` 1 for atoms the likelihood test added; ``position_sigma``
        (atom, xyz; Å) and ``position_covariance`` (atom, xyz, xyz2; Å²), each
        atom's standard errors and covariance at the fit, the Cramér–Rao bound with
        the atoms that share its counts (:func:`aetdask.model.uncertainty.position_covariance`);
        the per-species height / B-factor, per-projection background, scale and
        offset, the misfit before and after, and the precision the σ predict
        (``predicted_precision_pm``, as the evaluation measures it) in the last
        provenance record.

    Examples
    --------
    >>> from aetdask.schema import atoms
    >>> from aetdask.simulate import linear
    >>> truth = atoms([[0.0, 0.0, 0.0], [2.5, 0.5, -1.0]], ["Pt", "Pt"])
    >>> ts = linear(truth, angles=range(0, 180, 15), pixel_size=0.3, shape=24, background=0.0)
    >>> start = truth.copy(deep=True); start["position"] = start.position + [[0.15, -0.1, 0.1]]
    >>> out = refine_atoms(start, ts, 100)
    >>> bool(np.abs(out.position.values - truth.position.values).max() < 0.03)
    True
    """
    validate_atoms(model, source="model")
    tilts = validate_tilt_series(tilts, values=False)
    iterations = int(config.get("refine_atoms.iterations", iterations))
    cap = float(config.get("refine_atoms.max_displacement", max_displacement))
    if cap <= 0:
        raise InputError(f"max_displacement: expected a positive distance in Å, got {cap!r}")
    if model.sizes["atom"] == 0:
        raise InputError("model: no atoms to refine")
    select = bool(config.get("refine_atoms.select", select))
    angles = bool(config.get("refine_atoms.angles", angles))
    workers = config.get("refine_atoms.workers", workers)
    blocks = config.get("refine_atoms.blocks", None)
    n_comp = config.get("refine_atoms.components", components)
    n_comp = int(n_comp if n_comp is not None else (2 if angles else 1))
    if n_comp < 1:
        raise InputError(f"components: expected at least one Gaussian per atom profile, got {n_comp!r}")
    if min_distance is None:
        from aetdask.model.trace import merge_distance

        min_distance = merge_distance(np.unique(model.species.values.astype(str)))
    counts = tilts.attrs.get("units", "counts") == "counts"
    b = np.asarray(tilts.values, dtype=np.float64)
    n_t = b.shape[0]
    pixel = float(tilts.attrs["pixel_size"])
    alpha = np.broadcast_to(np.asarray(alpha if alpha is not None else _per_tilt(tilts, "noise_alpha", 1.0), float), n_t)
    sigma = np.broadcast_to(np.asarray(sigma if sigma is not None else _per_tilt(tilts, "noise_sigma", 0.0), float), n_t)
    start = np.asarray(model.position.values, dtype=float)
    species = np.asarray(model.species.values).astype(str)
    kinds = np.unique(species)
    kind_of = np.searchsorted(kinds, species)
    euler = euler_angles(tilts)
    radius = float(np.sqrt(np.mean(np.sum((start - start.mean(axis=0)) ** 2, axis=1))))
    t0 = time.perf_counter()
    calls = [0]

    line = Line(f"refining {len(start)} atoms against {n_t} projections") if progress else None

    def report(problem):
        def callback(_):
            if line is not None:
                line.label = f"refining {problem.n_at} atoms against {n_t} projections"
                line.update(text=f"evaluation {calls[0] + problem.calls}, misfit {problem.last:.6g}")
        return callback

    # starting values: border background, unit scale, recorded alignment, height from the total signal
    edge = np.concatenate([b[:, :2].reshape(n_t, -1), b[:, -2:].reshape(n_t, -1),
                           b[:, :, :2].reshape(n_t, -1), b[:, :, -2:].reshape(n_t, -1)], axis=1)
    bg0 = edge.mean(axis=1) if counts else np.zeros(n_t)
    # component c starts 2^c times wider than the core, all with the same share of the signal
    s0 = np.tile(max(_START_WIDTH, pixel) * 2.0 ** np.arange(n_comp), len(kinds))
    # an atom's core no wider than half the closest two atoms may be: wider, two atoms at that distance
    # merge into one peak and the model is no longer atomic (held where tracing put them, wrong atoms
    # otherwise widen into a blur of the particle, and every evaluation slows with the window's area)
    core = max(_CORE_WIDTH * min_distance, 0.31 * pixel)
    width_bounds = [(0.3 * pixel, core if c == 0 else 5.0) for _ in kinds for c in range(n_comp)]
    s0 = np.minimum(s0, np.array([b[1] for b in width_bounds]))
    signal = float(np.mean(np.clip(b - bg0[:, None, None], 0, None).sum(axis=(1, 2))))
    h0 = max(signal, 1e-12) / (len(start) * n_comp * 2 * np.pi * (s0 / pixel) ** 2)
    o0 = -np.stack([_per_tilt(tilts, "shift_y", 0.0), _per_tilt(tilts, "shift_x", 0.0)], axis=1)

    def fit(origin, kind_of, shape, first, free_angles=angles, held=False, profile=True):
        """Positions within ``cap`` of ``origin``; ``shape`` = (h, s, bg, c, o, e) to start from. ``held``:
        only the first step (the atoms held where they are); ``profile``: the atom profile (h, s) fitted
        in that step too."""
        problem = _Problem(b, euler, pixel, kind_of, len(kinds), counts, alpha, sigma, angles=free_angles,
                           radius=radius, components=n_comp)
        h, s, bg, c, o, e = shape
        problem.engine = block_engine(origin, problem.matrices(e), workers, blocks)
        p = problem.pack(origin, h, s, bg, c, o, e)

        def bounds(free):
            pos = [(v - cap, v + cap) if free else (v, v) for v in origin.ravel()]
            off = [(v - cap / pixel, v + cap / pixel) if free else (v, v) for v in o.ravel()]
            k = problem.kappa
            ang = [(k * (v - _MAX_ANGLE), k * (v + _MAX_ANGLE)) if free and free_angles else (k * v, k * v)
                   for v in e.ravel()]
            return (pos + [(1e-12, None)] * (len(kinds) * n_comp) + width_bounds
                    + [(None, None)] * n_t + [(0.05, 20.0)] * n_t + off + ang)

        value0 = problem(p)[0]
        if first:  # heights, widths, backgrounds and scales with the atoms held, then everything together
            held_parts = ("pos", "o", "e") if profile else ("pos", "o", "e", "h", "s")
            p = scipy.optimize.minimize(problem, p, args=(held_parts,), jac=True, method="L-BFGS-B",
                                        bounds=bounds(False), callback=report(problem), options={"maxiter": 100}).x
            if held:
                calls[0] += problem.calls
                return problem, scipy.optimize.OptimizeResult(x=p, fun=problem(p)[0]), value0
        result = scipy.optimize.minimize(problem, p, jac=True, method="L-BFGS-B", bounds=bounds(True),
                                         callback=_stalled(problem, report(problem)) if problem.counts and not free_angles
                                         else report(problem),
                                         options={"maxiter": iterations, "maxcor": 20, "ftol": _FTOL})
        # L-BFGS scales no atom by its own curvature: on 20,000 atoms it stops at its iteration cap short of the
        # optimum (scoring after it: 89.2 → 90.7 % identified, 48.4 → 46.5 pm at 1.6×10⁴ e⁻/Å², BENCHMARKS.md)
        lo, hi = np.array(bounds(True)[:3 * len(origin)]).T
        show = (lambda m: line.update(text=m)) if line is not None else None
        value, x = _score_positions(problem, result.x, lo, hi, SCORING, log=show)
        result = scipy.optimize.OptimizeResult(x=x, fun=value)
        calls[0] += problem.calls
        return problem, result, value0

    origin, added, traced = start, np.zeros(len(start), dtype=bool), start
    source = np.arange(len(start))  # each atom's row in the input model; -1 for an atom the selection added
    shape0 = (h0, s0, bg0, np.ones(n_t), o0, np.zeros((n_t, 3)))
    selection = []
    select = select and counts
    pool = np.empty((0, 3)) if candidates is None else np.asarray(candidates, dtype=float).reshape(-1, 3)

    def reselect(problem, result, held=False, test=None):
        """One round of :func:`_select`: the atoms kept and added; False where it changed none, or where
        the changes it made and those still waiting are fewer than :data:`SETTLED` of the atoms."""
        nonlocal origin, added, traced, kind_of, pool, source
        keep, new_pos, new_kind, info = (_select(problem, result.x, pool, kinds, min_distance, held) if test is None
                                         else test(problem, result.x, kinds, min_distance))
        selection.append(info)
        if keep.all() and len(new_pos) == 0:
            return False
        # settled: what this round changed and what still waits are few. Not what it changed alone: on a
        # thick particle the batches a round can make are small (atoms far apart in the volume meet in
        # some projections), and thousands of changes still waited when one round of 20,000 atoms
        # changed fewer than 1 %
        settled = (~keep).sum() + len(new_pos) + info["waiting"] < SETTLED * len(keep)
        pos = problem.unpack(result.x)[0]
        # an atom taken away may be called for again once its neighbours are gone too (each was tested
        # with all the others in place): it goes back to the candidates
        pool = np.concatenate([pool, pos[~keep]])
        origin = np.concatenate([pos[keep], new_pos])
        added = np.concatenate([added[keep], np.ones(len(new_pos), dtype=bool)])
        source = np.concatenate([source[keep], np.full(len(new_pos), -1)])
        traced = np.concatenate([traced[keep], new_pos])
        kind_of = np.concatenate([kind_of[keep], new_kind])
        return not settled

    if select:
        # rounds with the atoms held where tracing put them (free, the atoms next to a missing one, or a
        # ghost with nothing under it, move into its place and neither test sees it), until a round
        # changes almost nothing: of two neighbours missing, the second shows once the first is in. Then
        # everything is fitted, the same rounds run with the atoms where the fit put them (the full
        # removal test: see _select), and everything is fitted once more.
        problem, result, value0 = fit(origin, kind_of, shape0, True, held=True)
        for held in (True, False):
            rounds, unfitted = len(selection), False
            for _round in range(HELD_ROUNDS):
                before = origin
                go_on = reselect(problem, result, held)
                unfitted = origin is not before  # the round changed the atoms: the problem is not theirs yet
                if not go_on:
                    break
                # the profile stays what the fit before found: with atoms still missing or wrong and held, a
                # wider, lower profile smears the model over the particle and fits better than atoms
                problem, result, _ = fit(origin, kind_of, problem.unpack(result.x)[1:], True, held=True,
                                         profile=False)
                unfitted = False
            if not held:
                # one atom where the counts show two (tracing put it between two neighbours, and the fit kept
                # it there): split, held, until a round settles; the fit below then relaxes the pairs. The
                # tests need the fit of the atoms as they are, not of those before a last round's changes
                if unfitted:
                    problem, result, _ = fit(origin, kind_of, problem.unpack(result.x)[1:], True, held=True,
                                             profile=False)
                for _round in range(HELD_ROUNDS):
                    if not reselect(problem, result, True, test=_split):
                        break
                    problem, result, _ = fit(origin, kind_of, problem.unpack(result.x)[1:], True, held=True,
                                             profile=False)
            if held or any(r["removed"] or r["added"] for r in selection[rounds:]):
                problem, result, _ = fit(origin, kind_of, problem.unpack(result.x)[1:], False)
    else:
        problem, result, value0 = fit(origin, kind_of, shape0, True)
    if angles:
        # gauge: a rotation of all atoms is the same as a pattern of angle changes; take it out of the
        # angles and let the atoms (held angles) follow
        pos, h, s, bg, c, o, e = problem.unpack(result.x)
        e = remove_rigid_motion(e, rigid_motion_basis(euler + e)[0])
        problem, result, _ = fit(pos, kind_of, (h, s, bg, c, o, e), False, free_angles=False)
        log = (lambda m: line.update(text=m)) if line is not None else None
        x, deformation = _deformation_search(problem, result.x, log=log)
        result = scipy.optimize.OptimizeResult(x=x, fun=problem(x)[0])
    if line is not None:
        line.close(f"{calls[0]} evaluations, {time.perf_counter() - t0:.0f} s")
    pos, h, s, bg, c, o, e = problem.unpack(result.x)
    # gauge: a translation of all atoms is the same as a pattern of offsets; keep the offsets smallest
    jac = problem.jacobian(e).reshape(-1, 3)
    t = np.linalg.lstsq(jac, o.ravel(), rcond=None)[0]
    moved = np.linalg.norm(pos - traced, axis=1)
    pos, o = pos + t, (o.ravel() - jac @ t).reshape(-1, 2)
    scale = float(np.mean(c))
    h, c = h * scale, c / scale
    out = make_atoms(pos, kinds[kind_of], flag=added.astype(int), provenance=list(model.attrs.get("provenance", [])))
    out["displacement"] = ("atom", moved, {"units": "Å"})
    if "species_probability" in model:  # the classification's posteriors travel with the atoms they belong to
        prob = model.species_probability
        carried = np.full((len(pos), prob.sizes["class"]), np.nan)
        rows = source >= 0
        carried[rows] = prob.values[source[rows]]
        out["species_probability"] = xr.DataArray(
            carried, dims=("atom", "class"), coords={"class": prob["class"].values},
            attrs={**prob.attrs, "description": prob.attrs.get("description", "posterior probability of each class")
                   + "; NaN for an atom the coordinate refinement's likelihood test added"})
    out.attrs = {**model.attrs, **out.attrs}
    model_images = problem.model(result.x)[0]
    # each atom's position covariance at the fit (the Cramér–Rao bound, neighbours sharing its counts
    # included); a translation of all atoms is the offsets' gauge above and changes none of it
    out, sigma_record = attach_position_sigma(out, position_covariance(problem, result.x))
    params = {
        "iterations": iterations, "max_displacement": cap, "likelihood": "poisson-gaussian" if counts else "least-squares",
        "species": kinds.tolist(), "components": n_comp,
        # per species: one value per profile component (core first) when there are several
        "height": _per_species(h, n_comp), "width": _per_species(s, n_comp),
        "b_factor": _per_species(8 * np.pi**2 * s**2, n_comp),
        "background": bg.tolist(), "scale": c.tolist(), "offset_y": o[:, 0].tolist(), "offset_x": o[:, 1].tolist(),
        "misfit_start": value0, "misfit_final": float(result.fun), "evaluations": calls[0],
        "selection": selection, "atoms_in": len(start), "atoms_out": len(pos),
        **({"phi": (euler + e)[:, 0].tolist(), "theta": (euler + e)[:, 1].tolist(), "psi": (euler + e)[:, 2].tolist(),
            "deformation_search_strain": deformation.tolist()}
           if angles else {}),
        "r_factor": float(np.mean(np.abs(model_images - b).sum(axis=(1, 2)) / np.abs(b).sum(axis=(1, 2)))),
        **sigma_record,
        "seconds": time.perf_counter() - t0,
    }
    return add_provenance(out, "refine", params, inputs=[f"atoms ({len(start)})", f"tilt series ({n_t}×{b.shape[1]}²)"])


def _per_species(values, k):
    """Per-species values: a list of floats for one component, of lists (core first) for several."""
    v = np.asarray(values, dtype=float).reshape(-1, k)
    return (v[:, 0] if k == 1 else v).tolist()


def profile_of(params, species):
    """Heights and widths (Å) of each atom's profile components, ``(n, k)`` each, from a refine record."""
    kind = {s: i for i, s in enumerate(params["species"])}
    idx = np.array([kind[s] for s in np.asarray(species).astype(str)], dtype=int)
    n_sp = len(params["species"])
    h = np.asarray(params["height"], dtype=float).reshape(n_sp, -1)
    s = np.asarray(params["width"], dtype=float).reshape(n_sp, -1)
    return h[idx], s[idx]


def render_profiles(params, species, det, n: int, pixel: float, cutoff: float = 4.0) -> np.ndarray:
    """Images ``(t, n, n)`` of atoms with a refine record's profiles (:func:`profile_of`) at detector pixel
    positions ``det`` ``(t, atoms, 2)`` (offsets included), before background and scale."""
    h, s = profile_of(params, species)  # (atoms, components)
    return gaussian_atoms.render(np.repeat(det, h.shape[1], axis=1), h.ravel(), s.ravel() / pixel, (n, n),
                                 cutoff=cutoff)


#: False-alarm probability of the likelihood-ratio test of one atom (:func:`_select`): fixed per atom,
#: so that a model of 200,000 atoms has the same fraction of wrong ones as a model of 200.
SELECT_LEVEL = 1e-3


#: Most rounds of :func:`_select` with the atoms held (where tracing put them, then where the fit did);
#: they stop sooner once the changes a round made and those still waiting are fewer than :data:`SETTLED`
#: of the atoms.
HELD_ROUNDS = 12
#: Rounds stop once the changes one made and those it left waiting are fewer than this share of the atoms
#: (the changes it made stay).
SETTLED = 0.01
#: Atoms whose images share counts, in closest distances (``min_distance``): two Gaussian atoms of the
#: widest core (:data:`_CORE_WIDTH`) twice that distance apart share exp(−4) of what each shares with itself.
_INTERACTION = 2.0


def selection_threshold(level: float = SELECT_LEVEL) -> float:
    """Least gain in log-likelihood an atom must bring to be in the model: ``½ χ²₃(1 − level)``.

    >>> round(selection_threshold(), 2)
    8.13
    """
    from scipy.stats import chi2

    return 0.5 * float(chi2.isf(level, df=3))


def _search_points(pos, pixel, min_distance):
    """Grid (spacing one pixel) of where a missing atom could sit: not closer than ``min_distance`` to
    an atom of the model, and not farther than twice that (a neighbour of the model's atoms). Returns
    the grid's origin and shape, the mask of those points, and the mask of the points where the gain
    is evaluated: those and two pixels more towards the model's atoms, so that a maximum on the
    search region's inner border (a gain that rises towards an atom already in the model) is not
    taken for a maximum."""
    lo = pos.min(axis=0) - 2 * min_distance
    hi = pos.max(axis=0) + 2 * min_distance
    shape = np.ceil((hi - lo) / pixel).astype(int) + 1
    idx = np.clip(np.rint((pos - lo) / pixel).astype(int), 0, shape - 1)
    # the distance to the nearest atom's grid point, as far as it matters here (the balls of the atoms, not the
    # whole grid's distance transform: 0.3 s instead of 4.6 s at 20,000 atoms)
    dist = nearest_distance(idx, shape, 2 * min_distance, spacing=pixel)
    mask = (dist >= min_distance) & (dist <= 2 * min_distance)
    evaluated = (dist >= min_distance - 2 * pixel) & (dist <= 2 * min_distance)
    return lo, shape, mask, evaluated


def _gain_maxima(problem, zp, mp, weight, o, e, h, s, pos, min_distance, floor):
    """Local maxima of the approximate gain of adding an atom (:func:`gaussian_atoms.gain_map`) over the
    points near the model (:func:`_search_points`), for every species' profile: positions (n, 3) Å."""
    pixel = problem.pixel
    lo, shape, mask, evaluated = _search_points(pos, pixel, min_distance)
    if not mask.any():
        return np.empty((0, 3))
    grid = np.argwhere(evaluated)
    points = lo + grid * pixel
    # the detector map is affine: its images of the origin and the unit axes give it, in the fit's own
    # convention (:meth:`_Problem.detector`)
    anchor = problem.detector(np.vstack([np.zeros(3), np.eye(3)]), o, e)  # (t, 4, 2): row, column
    linear = anchor[:, 1:] - anchor[:, :1]
    rows = np.concatenate([linear[..., 0], anchor[:, 0, :1]], axis=1)
    cols = np.concatenate([linear[..., 1], anchor[:, 0, 1:]], axis=1)
    best = np.full(len(points), -np.inf)
    for k in range(h.shape[0]):
        best = np.maximum(best, gaussian_atoms.gain_map(zp, mp, weight, h[k], s[k], points, rows, cols))
    field = np.full(shape, -np.inf)
    field[tuple(grid.T)] = best
    footprint = ndimage.generate_binary_structure(3, 1)
    peaks = (field == ndimage.maximum_filter(field, footprint=footprint, mode="constant", cval=-np.inf)) & (field > floor)
    peaks &= mask
    return lo + np.argwhere(peaks) * pixel


def _batch_size(zp, mp, weight, det, sign, h, s, penalty):
    """How many of a list of changes (surest first) to make together: ``(count, change)``.

    ``det`` (t, n, 2) their detector positions, ``sign`` −1 to take an atom away and +1 to add
    one, ``h``, ``s`` (n, components) their profiles (px). For the first n, n/2, n/4, … changes the
    change of the Poisson negative log-likelihood they make together (their images rendered, every
    pixel summed) plus their ``penalty`` (per change: the threshold for an atom added, minus the level
    of the removal test for one taken away); the count with the lowest is returned (0 and 0.0 when
    none lowers it). A change may move several atoms of one profile: ``det`` (t, n, g, 2) and ``sign`` (g,),
    the same signs for every change (a split: −1, +1, +1)."""
    n = det.shape[1]
    if n == 0:
        return 0, 0.0
    k = h.shape[1]
    g = det.shape[2] if det.ndim == 4 else 1
    det = det.reshape(det.shape[0], n * g, 2)
    sign, h, s = (np.tile(sign, n), np.repeat(h, g, axis=0), np.repeat(s, g, axis=0)) if g > 1 else (sign, h, s)
    base = np.sum(mp - zp * np.log(mp))
    best, best_change = 0, 0.0
    count = n
    while count >= 1:
        m = count * g
        img = gaussian_atoms.render(np.repeat(det[:, :m], k, axis=1), (sign[:m, None] * h[:m]).ravel(),
                                    s[:m].ravel(), zp.shape[1:])
        new = np.maximum(mp + weight[:, None, None] * img, 1e-12)
        change = float(np.sum(new - zp * np.log(new)) - base) + float(np.sum(penalty[:count]))
        if change < best_change:
            best, best_change = count, change
        count //= 2
    return best, best_change


def _split(problem, x, kinds, min_distance):
    """Atoms where the counts show two: the likelihood-ratio test of putting two atoms in one's place.

    In a dense particle at low dose tracing often puts one atom between two neighbours, and the fit keeps
    it there: taking it away, or adding one beside it closer than ``min_distance``, is never tested. Such
    an atom sits in a valley of the misfit along the pair's axis — its observed information in
    that direction falls below the expected one — and that direction is where the split is tried: the
    atom is replaced by two atoms of its species a covalent bond length apart (and 1.15 times it), along
    each atom's direction of least observed relative to expected information. The exact change of the
    misfit (:func:`gaussian_atoms.group_change`) must beat :func:`selection_threshold` (one more atom).
    Returns ``(keep, new positions, new kinds, info)`` like :func:`_select`, the splits that share counts
    made in one batch no larger than their joint change supports (:func:`_batch_size`).
    """
    from ase.data import atomic_numbers, covalent_radii
    from scipy.spatial import cKDTree

    from aetdask.model.uncertainty import _pixels, position_informations

    pos, h, s, bg, c, o, e = problem.unpack(x)
    _, _, _, _, weight, _, mean, _ = _pixels(problem, x)
    # each atom's own blocks only (no pairs): the expected information and the curvature at x
    expected, observed = (i.diagonal for i in position_informations(problem, x, radius=0.0,
                                                                     kinds=("expected", "observed")))
    # the direction of least observed relative to expected information: F^(-1/2) O F^(-1/2)'s lowest eigenvector
    w, v = np.linalg.eigh(expected)
    w = np.maximum(w, 1e-9 * np.maximum(w.max(axis=1, keepdims=True), 1e-300))
    root = np.einsum("nij,nj,nkj->nik", v, 1.0 / np.sqrt(w), v, optimize=True)
    _, u = np.linalg.eigh(np.einsum("nij,njk,nkl->nil", root, observed, root, optimize=True))
    axis = np.einsum("nij,nj->ni", root, u[:, :, 0], optimize=True)
    axis /= np.maximum(np.linalg.norm(axis, axis=1, keepdims=True), 1e-300)
    kind = problem.kind_of
    half = np.array([covalent_radii[atomic_numbers[str(k)]] for k in kinds])[kind]
    mp, wgt = mean, weight  # on the Poisson scale, as in _select
    hk, sk = h.reshape(len(kinds), -1)[kind], s.reshape(len(kinds), -1)[kind] / problem.pixel
    threshold = selection_threshold()
    best = np.full(len(pos), np.inf)
    pairs = np.zeros((len(pos), 2, 3))
    for stretch in (1.0, 1.15):
        d = (stretch * half)[:, None] * axis
        group = np.stack([pos, pos + d, pos - d], axis=1)  # (n, 3, 3): the atom, then its two halves
        gdet = problem.detector(group.reshape(-1, 3), o, e).reshape(problem.n_t, len(pos), 3, 2)
        change = gaussian_atoms.group_change(problem.zp, mp, gdet, np.repeat(hk[:, None], 3, 1),
                                             np.repeat(sk[:, None], 3, 1), np.array([-1.0, 1.0, 1.0]), wgt)
        better = change < best
        best[better], pairs[better] = change[better], group[better, 1:]
    # the halves must keep their distance from every other atom (of a half's two nearest atoms, the one
    # that is not the atom it splits: that may be the nearer or the farther)
    dist, index = cKDTree(pos).query(pairs.reshape(-1, 3), k=2)
    own = np.repeat(np.arange(len(pos)), 2)
    other = np.where(index[:, 0] == own, dist[:, 1], dist[:, 0]).reshape(len(pos), 2)
    ok = (best < -threshold) & (other > min_distance).all(axis=1)
    cand = np.flatnonzero(ok)
    cand = cand[merge(pos[cand], -best[cand], _INTERACTION * min_distance)]  # surest first, apart
    where = np.concatenate([problem.detector(pos[cand], o, e)[:, :, None],
                            problem.detector(pairs[cand].reshape(-1, 3), o, e).reshape(problem.n_t, len(cand), 2, 2)],
                           axis=2)
    count, joint = _batch_size(problem.zp, mp, wgt, where, np.array([-1.0, 1.0, 1.0]), hk[cand], sk[cand],
                               np.full(len(cand), threshold))
    made = cand[:count]
    keep = np.ones(len(pos), dtype=bool)
    keep[made] = False
    info = {"tested": len(pos), "searched": 0, "threshold": threshold, "removed": int(count), "added": 2 * int(count),
            "split": int(count), "waiting": int(len(cand) - count), "penalised_change": joint}
    return keep, pairs[made].reshape(-1, 3), np.repeat(kind[made], 2), info


def _select(problem, x, pool, kinds, min_distance, held=False):
    """Atoms the counts do not support, and atoms they call for: a likelihood-ratio test per atom.

    Taking atom j away changes the negative log-likelihood by ΔL_j; adding one
    (best species) at a position c gains G_c. An atom stays if ΔL_j exceeds, and
    one is added where G_c exceeds, :func:`selection_threshold`: the likelihood
    ratio of three position parameters at a fixed false-alarm level per atom
    (:data:`SELECT_LEVEL`), so the share of wrong decisions does not grow with
    the number of atoms (a family-wise, Bonferroni level over all atoms did: its
    threshold rose with their number until, on 20,000 atoms at low dose, it
    dropped real ones by the thousand).

    Where atoms may be added: the candidates tracing found (``pool``), and the local
    maxima of the gain over every grid point near the model
    (:func:`_gain_maxima`) — the counts themselves say where an atom is missing,
    also where the reconstruction showed none (a large particle at low dose hides
    many atoms in its volume's noise). The gain map is a second-order
    approximation; the test uses the exact gains of its maxima.

    ``held``: the atoms sit where tracing put them, not where the counts do; one
    is then taken away only if the counts are better without it at all
    (ΔL_j < 0, a ghost in a gap), not merely by less than the threshold: at low
    dose tracing puts most atoms 0.5–1 Å from where they are, and held there
    they look unsupported.

    Each test holds every other atom in place, so the changes it calls for are
    not all made at once: of changes closer than their images reach
    (:data:`_INTERACTION`) only the surest, and of the rest only as many, surest
    first, as lower the penalised likelihood together (:func:`_batch_size`); the
    others are tested again in the next round. On 20,000 atoms at low dose,
    making every change at once took 18,419 atoms away and put 30,291 back in
    the next round.
    """
    from scipy.spatial import cKDTree

    pos, h, s, bg, c, o, e = problem.unpack(x)
    m = problem.model(x)[0]
    mp = np.maximum((m + problem.offset) / problem.alpha, 1e-12)
    weight = c / problem.alpha[:, 0, 0]
    pixel = problem.pixel
    det = problem.detector(pos, o, e)
    frame = problem.frame(h, s, o, e)
    h, s = h.reshape(len(kinds), -1), s.reshape(len(kinds), -1) / pixel  # (species, components)
    # the per-atom tests run where the engine runs the fit (its blocks); the threshold stays the one global one
    cost = problem.engine.likelihood_change(frame, pos, problem.kind_of, problem.zp, mp, weight, -1.0)
    threshold = selection_threshold()
    searched = _gain_maxima(problem, problem.zp, mp, weight, o, e, h, s, pos, min_distance, 0.5 * threshold)
    pool = np.concatenate([np.asarray(pool, dtype=float).reshape(-1, 3), searched])
    far = np.empty((0, 3))
    if len(pool):
        d, _ = cKDTree(pos).query(pool)
        far = pool[d > min_distance]
    gains = np.full((len(far), len(kinds)), -np.inf)
    fdet = problem.detector(far, o, e)
    if len(far):
        for k in range(len(kinds)):
            gains[:, k] = -problem.engine.likelihood_change(frame, far, np.full(len(far), k), problem.zp, mp, weight,
                                                            1.0, model=False)
    best, kind = gains.max(axis=1, initial=-np.inf), gains.argmax(axis=1) if len(far) else np.empty(0, int)
    good = np.flatnonzero(best > threshold)
    good = good[merge(far[good], best[good], min_distance)]  # strongest first, none closer than min_distance
    level = 0.0 if held else threshold
    weak = np.flatnonzero(cost <= level)
    # each test held every other atom in place: atoms near each other share their counts, and taking away
    # (or adding) all of a crowd at once overshoots (the next round would put most of them back). Only
    # changes farther apart than their images reach are made together, the surest first; the rest wait
    # for the next round, tested again against the model these leave.
    moves = np.concatenate([pos[weak], far[good]])
    margin = np.concatenate([level - cost[weak], best[good] - threshold])
    order = merge(moves, margin, _INTERACTION * min_distance)  # surest first
    # atoms far apart in the volume still meet in some projections: a thousand changes made together gain
    # less than their separate tests say. The share of the surest changes made is the one whose joint
    # change of the penalised likelihood (misfit + threshold per atom) is lowest, evaluated exactly.
    sign = np.where(order < len(weak), -1.0, 1.0)
    where = np.concatenate([det[:, weak], fdet[:, good]], axis=1)[:, order]
    kind_m = np.concatenate([problem.kind_of[weak], kind[good]]).astype(int)[order]
    penalty = np.where(sign > 0, threshold, -level)
    count, joint = _batch_size(problem.zp, mp, weight, where, sign, h[kind_m], s[kind_m], penalty)
    made = np.zeros(len(moves), dtype=bool)
    made[order[:count]] = True
    keep = np.ones(len(pos), dtype=bool)
    keep[weak[made[:len(weak)]]] = False
    chosen = good[made[len(weak):]]
    info = {"tested": len(pos) + len(far), "searched": len(searched), "threshold": threshold,
            "removed": int((~keep).sum()), "added": len(chosen),
            "waiting": int(len(moves) - made.sum()), "penalised_change": joint}
    return keep, far[chosen].reshape(-1, 3), kind[chosen].astype(int), info
