"""How precisely the counts fix each refined atom's position: the Cramér–Rao bound at the fitted model.

The coordinate refinement (:func:`aetdask.model.refine.refine`) maximises the
likelihood of the projections given the atoms. At its optimum the Fisher
information of the atom positions,

``F = Σ_k Σ_u ∂μ_k(u)/∂r ∂μ_k(u)/∂rᵀ / var_k(u)``,

summed over the projections k and their pixels u (``μ`` the model's mean counts,
``var = α μ + σ²`` the noise model of preprocessing), bounds the covariance of
the positions from below, ``cov ≥ F⁻¹``; a maximum-likelihood fit of this many
counts reaches it, so ``F⁻¹`` is the positions' covariance and the square roots
of its diagonal each coordinate's standard error σ.

An atom's image moves only with its own position, so ``F`` is a sparse matrix
of 3×3 blocks: the diagonal ones (each atom's own information,
:func:`aetdask.kernels.gaussian_atoms.fisher_blocks`, the blocks the
refinement's Fisher scoring steps with), and one for every two atoms whose
images overlap in some projection (:func:`pair_information`): neighbours in the
volume, which overlap in every projection, and atoms on one line with a
projection's beam. The diagonal blocks alone take every other atom as known: on
a 600-atom Si particle at 1.6×10⁴ e⁻/Å² (one Gaussian per atom, 0.71 Å wide)
the inverse of the whole joint information gives σ 13 % larger on average than
they do (12 % in the 3-D RMS; 0.6 % to 38 % per atom); on a 200-atom one with a
core-and-tail profile, 7 % (up to 20 %). :func:`position_covariance` therefore
inverts the joint information of each atom and its neighbours (:data:`NEIGHBOURHOOD`).

Projections in arbitrary units are fitted by least squares: ``F = JᵀJ / s²``
with the fit's residual variance ``s² = RSS / (N_pixels − N_parameters)``.

The other parameters of the fit (each projection's background, scale and offset,
the species' profiles; the angles when they are refined) are held at their fitted
values. Each is fixed by the counts of all the atoms: on a 200-atom particle the
joint inverse over every parameter of the fit gives σ 0.2 % larger. Angles refined
with the atoms are not covered: their errors along the deformation patterns move
all the atoms together (:func:`aetdask.model.refine._deformation_search`).

The bound is what a fit reaches once σ is small against the atom's width and the
model is right. On simulated a-Si particles of 500, 1000 and 2000 atoms at the
seed paper's geometry (``benchmarks/bench_uncertainty.py``, core-and-tail
profile, fitted from the truth) the errors over σ have a standard deviation of
1.19, 1.14 and 1.24 at 8×10³ e⁻/Å², 1.10, 1.09 and 1.07 at 1.6×10⁴ and 1.05,
1.01 and 1.05 at 1.6×10⁵. At 8×10³ (σ about 30 % of the atom's core width) counts
drawn from the fitted model itself give 1.15 (500 atoms) and 1.20 (2000): the
maximum-likelihood fit's own excess over the bound at low counts, which falls with
the dose. The rest is the profile's misfit (concentric Gaussians against the
simulated atom images): the scatter of such a fit is ``H⁻¹ K H⁻¹``, not ``F⁻¹``,
6 % larger on a 200-atom particle at 1.6×10⁴ e⁻/Å².
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.sparse
from scipy.spatial import cKDTree
from threadpoolctl import threadpool_limits

from aetdask.kernels.gaussian_atoms import pair_information


#: The neighbourhood whose joint information is inverted for each atom (:func:`_local_inverse`), in
#: information widths (:func:`information_width`) of the widest species' profile. Every atom beyond is
#: taken as known, so each σ is a little low: on a 600-atom Si particle at 1.6×10⁴ e⁻/Å² (width 0.71 Å)
#: by 1.8 % at 4 Å, 0.9 % at 5 Å and 0.4 % at 6 Å on average against the inverse of the whole joint
#: information; on 2000 atoms at 8×10³ e⁻/Å², with this default (4.8 Å), by 0.65 % (at most 3.4 %).
NEIGHBOURHOOD = 8.0
#: Pairs held in the joint information: those closer than this many neighbourhood radii. A neighbourhood
#: needs its atoms' pairs up to twice its radius; two of its atoms farther apart than 1.5 radii lie on
#: opposite sides of the atom and hardly share counts (leaving them out changes σ by < 0.1 %, with 2.4
#: times fewer pairs to compute).
PAIR_SPAN = 1.5


def information_width(height, sigma) -> float:
    """The width over which a profile of concentric Gaussians tells where it is: ``w`` with
    ``2 w² = ∫ |∇a|² r² dA / ∫ |∇a|² dA`` (``w = s`` for one Gaussian of width s; a broad, low tail
    adds little, since the information is in the slope).

    >>> round(information_width([1.0], [0.7]), 3)
    0.7
    >>> bool(information_width([1.0, 0.2], [0.6, 1.2]) < 0.7)
    True
    """
    h = np.atleast_1d(np.asarray(height, dtype=float))
    s = np.atleast_1d(np.asarray(sigma, dtype=float))
    r = np.linspace(0.0, 6.0 * float(s.max()), 2001)
    slope = np.sum(h[:, None] * r / s[:, None] ** 2 * np.exp(-0.5 * (r / s[:, None]) ** 2), axis=0)
    power = slope**2 * r  # |∇a|² dA over rings
    return float(np.sqrt(np.sum(power * r * r) / max(2.0 * np.sum(power), 1e-300)))


@dataclass
class PositionInformation:
    """The joint Fisher information of the atom positions (per Å²), as sparse 3×3 blocks.

    ``diagonal`` ``(n, 3, 3)`` each atom's own; ``pairs`` ``(p, 2)`` atom indices and ``cross``
    ``(p, 3, 3)`` their blocks ``F_jl`` (``F_lj = F_jlᵀ``); ``scale`` the variance that multiplies
    ``F⁻¹`` (1 for counts, the residual variance for least squares); ``radius`` (Å) the distance
    within which every pair is held (``inf``: all of them).
    """

    diagonal: np.ndarray
    pairs: np.ndarray
    cross: np.ndarray
    scale: float = 1.0
    radius: float = np.inf
    _map: object = field(default=None, init=False, repr=False)

    @property
    def n(self) -> int:
        return len(self.diagonal)

    def local(self, atoms) -> np.ndarray:
        """The dense ``(3m, 3m)`` principal block of the atoms ``atoms`` (sorted, m of them)."""
        atoms = np.asarray(atoms, dtype=np.int64)
        m = len(atoms)
        out = np.zeros((m, m, 3, 3))
        out[np.arange(m), np.arange(m)] = self.diagonal[atoms]
        if len(self.pairs):
            sub = self._index()[atoms][:, atoms].tocoo()
            q = sub.data
            upper = q > 0
            out[sub.row[upper], sub.col[upper]] = self.cross[q[upper] - 1]
            out[sub.row[~upper], sub.col[~upper]] = np.swapaxes(self.cross[-q[~upper] - 1], 1, 2)
        return out.transpose(0, 2, 1, 3).reshape(3 * m, 3 * m)

    def matrix(self) -> np.ndarray:
        """The whole ``(3n, 3n)`` matrix, dense (for small models and checks)."""
        return self.local(np.arange(self.n))

    def _index(self):
        """Sparse ``(n, n)`` map of atom pairs to their block: ``q + 1`` at ``(j, l)``, ``−(q + 1)`` at ``(l, j)``."""
        if self._map is None:
            p = self.pairs
            q = np.arange(1, len(p) + 1)
            self._map = scipy.sparse.csr_matrix((np.concatenate([q, -q]), (np.r_[p[:, 0], p[:, 1]], np.r_[p[:, 1], p[:, 0]])),
                                                shape=(self.n, self.n))
        return self._map


def position_information(problem, x, *, radius: float | None = None) -> PositionInformation:
    """The Fisher information of the refinement's atom positions at its parameters ``x``.

    ``problem`` is the refinement's misfit (``aetdask.model.refine._Problem``), ``x`` its packed
    parameters. The diagonal blocks are the ones the refinement's Fisher scoring uses, taken from
    the misfit's units (``problem.norm`` per count) back to counts; the pair blocks
    (:func:`pair_information`) are computed for every two atoms closer than ``radius`` Å (None:
    every two atoms, for small models and checks), over all the projections in which their images
    overlap. Least squares (projections in arbitrary units): ``JᵀJ``, with ``scale`` the residual
    variance (:func:`residual_variance`).
    """
    from aetdask.model.refine import _position_information

    diagonal = _position_information(problem, x) / problem.norm
    pos, h, s, bg, c, o, e = problem.unpack(x)
    det, hc, sc = problem.gaussians(pos, h, s, o, e)
    det = det[:, ::problem.k]
    hc, sc = hc.reshape(-1, problem.k), sc.reshape(-1, problem.k)
    if problem.counts:
        last = problem.rendered
        m = last[1] if last is not None and np.array_equal(last[0], x) else problem.model(x)[0]
        mean = np.maximum((m + problem.offset) / problem.alpha, 1e-12)
        weight = c / problem.alpha[:, 0, 0]
        scale = 1.0
    else:
        mean = np.ones((problem.n_t, problem.n_px, problem.n_px))
        weight = c
        scale = residual_variance(problem, x)
    n = len(pos)
    if n < 2:
        pairs = np.empty((0, 2), dtype=np.int64)
    elif radius is None:
        pairs = np.column_stack(np.triu_indices(n, 1)).astype(np.int64)
    else:
        pairs = cKDTree(pos).query_pairs(float(radius), output_type="ndarray").astype(np.int64).reshape(-1, 2)
    cross = pair_information(mean, det, hc, sc, weight, problem.jacobian(e), pairs).reshape(-1, 3, 3)
    return PositionInformation(diagonal, pairs, cross, scale, np.inf if radius is None else float(radius))


def free_parameters(problem) -> int:
    """How many parameters the refinement fits: the positions, the species' profiles, per projection
    the background, scale and offset, and the angles when they are refined."""
    return int(problem.size - (0 if problem.angles else 3 * problem.n_t))


def residual_variance(problem, x) -> float:
    """A least-squares fit's residual variance ``RSS / (N_pixels − N_parameters)``, in the data's units²."""
    m = problem.model(x)[0]
    rss = float(np.sum((m - problem.b) ** 2))
    return rss / max(problem.b.size - free_parameters(problem), 1)


def _inverse_block(matrix, at):
    """Block ``at`` (3×3) of the inverse of a symmetric positive semi-definite matrix of 3×3 blocks;
    a direction of the atom's position that no count fixes gets an infinite variance."""
    sel = slice(3 * at, 3 * at + 3)
    try:
        rhs = np.zeros((len(matrix), 3))
        rhs[sel] = np.eye(3)
        sol = scipy.linalg.cho_solve(scipy.linalg.cho_factor(matrix, check_finite=False), rhs, check_finite=False)[sel]
        if np.all(np.isfinite(sol)) and np.all(np.diag(sol) > 0):
            return 0.5 * (sol + sol.T)
    except np.linalg.LinAlgError:
        pass
    w, v = np.linalg.eigh(matrix)
    keep = w > 1e-10 * max(float(w.max()), 1e-300)
    rows = v[sel]
    block = (rows[:, keep] / w[keep]) @ rows[:, keep].T
    unseen = np.linalg.norm(rows[:, ~keep], axis=1) > 1e-6
    block[unseen, :] = np.inf
    block[:, unseen] = np.inf
    return block


def _local_inverse(info: PositionInformation, positions, radius: float) -> np.ndarray:
    """Each atom's block of ``F⁻¹`` from the joint information of the atom and its neighbours within
    ``radius`` Å: ``(F_NN)⁻¹`` restricted to the atom, ``F_NN`` the principal block of those atoms N
    (``info`` holds the pairs closer than :data:`PAIR_SPAN` · ``radius``). That is the atom's covariance were the
    atoms beyond known: it grows with the radius towards ``(F⁻¹)_jj``, from below."""
    if len(info.pairs) == 0 or radius <= 0:
        return np.stack([_inverse_block(b, 0) for b in info.diagonal]) if info.n else np.empty((0, 3, 3))
    out = np.empty((info.n, 3, 3))
    # matrices of a few hundred rows: BLAS threads cost far more than they save (on two cores, a hundred
    # times the time of one thread)
    with threadpool_limits(1, user_api="blas"):
        for j, hood in enumerate(cKDTree(positions).query_ball_point(positions, radius)):
            hood = np.sort(np.asarray(hood, dtype=np.int64))
            out[j] = _inverse_block(info.local(hood), int(np.searchsorted(hood, j)))
    return out


@dataclass
class PositionCovariance:
    """Each atom's position covariance and σ (Å), and how they were found.

    ``covariance`` ``(n, 3, 3)`` and ``sigma`` ``(n, 3)`` along x, y, z; ``independent`` ``(n, 3)``
    the σ of the diagonal blocks alone (every other atom known); ``radius`` (Å) the neighbourhood
    inverted jointly (0: none); ``scale`` the residual variance of a least-squares fit (1 for counts).
    """

    covariance: np.ndarray
    sigma: np.ndarray
    independent: np.ndarray
    radius: float
    scale: float
    counts: bool

    @property
    def precision_pm(self) -> float:
        """The model's predicted precision (:func:`predicted_precision_pm`)."""
        return predicted_precision_pm(self.sigma)

    @property
    def coupling(self) -> float:
        """How much the neighbours' share of the counts raises the 3-D RMS σ: the ratio of the joint
        σ's to the independent ones' (1: no effect)."""
        ok = np.all(np.isfinite(self.sigma), axis=1) & np.all(np.isfinite(self.independent), axis=1)
        if not ok.any():
            return float("nan")
        return float(np.sqrt(np.sum(self.sigma[ok] ** 2) / max(np.sum(self.independent[ok] ** 2), 1e-300)))


def position_covariance(problem, x, *, coupling: bool = True, radius: float | None = None) -> PositionCovariance:
    """Each atom's 3×3 position covariance ``(F⁻¹)_jj`` (Å²) at the refinement's parameters ``x``.

    Parameters
    ----------
    problem, x
        The refinement's misfit (``aetdask.model.refine._Problem``) and its packed parameters, as the
        fit left them.
    coupling : bool
        Take the atoms that share counts with each atom into account: invert the joint information of
        the atom and its neighbours within ``radius`` (:func:`_local_inverse`). False: every atom's
        own block alone, as if every other atom were known.
    radius : float, optional
        The neighbourhood (Å); default :data:`NEIGHBOURHOOD` information widths of the widest
        species' profile (:func:`information_width`).

    Returns
    -------
    PositionCovariance
        The covariances, the σ along x, y, z (square roots of their diagonals), and the σ of the
        diagonal blocks alone. Least squares: scaled by the residual variance of the fit.
    """
    pos, h, s = problem.unpack(x)[:3]
    if len(pos) == 0:
        empty = np.empty((0, 3))
        return PositionCovariance(np.empty((0, 3, 3)), empty, empty, 0.0, 1.0, bool(problem.counts))
    if radius is None:
        h, s = np.reshape(h, (-1, problem.k)), np.reshape(s, (-1, problem.k))
        radius = NEIGHBOURHOOD * max(information_width(hh, ss) for hh, ss in zip(h, s))
    radius = float(radius) if coupling else 0.0
    info = position_information(problem, x, radius=PAIR_SPAN * radius if radius > 0 else 0.0)
    own = np.stack([_inverse_block(b, 0) for b in info.diagonal]) if info.n else np.empty((0, 3, 3))
    cov = _local_inverse(info, pos, radius) if radius > 0 else own
    cov, own = info.scale * cov, info.scale * own
    return PositionCovariance(cov, _sigma(cov), _sigma(own), radius, info.scale, bool(problem.counts))


def _sigma(cov):
    return np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2), 0.0))


def predicted_precision_pm(sigma) -> float:
    """The precision (pm) a model with these σ ``(n, 3)`` (Å) is expected to have against the truth.

    The evaluation's precision is ``100 · √(Σ_axes var(diff))`` over the matched atoms
    (:func:`aetdask.kernels.metrics.paper_match`); with independent, unbiased errors of variance σ²
    its expectation squared is ``Σ_axes mean_atoms σ²``: ``100 · √(mean_atoms Σ_axes σ²)``. Atoms
    without a finite σ are left out.

    >>> round(predicted_precision_pm(np.full((4, 3), 0.1)), 2)  # 10 pm per axis: 10·√3
    17.32
    """
    s = np.asarray(sigma, dtype=float).reshape(-1, 3)
    ok = np.all(np.isfinite(s), axis=1)
    if not ok.any():
        return float("nan")
    return float(100.0 * np.sqrt(np.mean(np.sum(s[ok] ** 2, axis=1))))


def attach(model, result: PositionCovariance):
    """``model`` with ``position_sigma`` (atom, xyz) and ``position_covariance`` (atom, xyz, xyz2) in Å
    and Å², and the record's summary of them (a dict for the refinement's provenance)."""
    how = ("Cramér–Rao bound at the fitted model: the inverse of the Fisher information of the atom "
           "positions" + (", Poisson–Gaussian counts" if result.counts else
                          f", least squares scaled by the residual variance {result.scale:.6g}")
           + (f", each atom jointly with its neighbours within {result.radius:.2f} Å" if result.radius > 0
              else ", each atom alone (every other atom known)")
           + "; the other parameters of the fit held at their values")
    xyz = list(model.coords["xyz"].values) if "xyz" in model.coords else ["x", "y", "z"]
    out = model.assign_coords(xyz2=("xyz2", xyz))
    out["position_sigma"] = (("atom", "xyz"), result.sigma, {"units": "Å", "description": how})
    out["position_covariance"] = (("atom", "xyz", "xyz2"), result.covariance, {"units": "Å²", "description": how})
    finite = np.all(np.isfinite(result.sigma), axis=1)
    precision = result.precision_pm
    summary = {
        "predicted_precision_pm": round(precision, 3) if np.isfinite(precision) else None,
        "position_sigma_pm": [round(float(100 * np.sqrt(np.mean(result.sigma[finite, a] ** 2))), 3) if finite.any()
                              else None for a in range(3)],
        "position_sigma_method": "fisher-joint" if result.radius > 0 else "fisher-independent",
        "position_sigma_radius": round(result.radius, 3),
        "position_sigma_coupling": round(result.coupling, 4) if np.isfinite(result.coupling) else None,
        "position_sigma_unbounded": int((~finite).sum()),
        **({} if result.counts else {"residual_variance": result.scale}),
    }
    return out, summary
