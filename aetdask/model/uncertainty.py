"""How precisely the counts fix each refined atom's position: the sandwich covariance around the Cramér–Rao bound.

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
:func:`aetdask.kernels.atoms.gaussian_atoms.fisher_blocks`, the blocks the
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

The bound holds for a right model. :func:`position_covariance` therefore returns by default the
sandwich (Huber–White) covariance ``F⁻¹ M F⁻¹``, each atom's block over its neighbourhood as above,
with ``M`` the empirical outer product of the per-pixel score: the same pixel sums as ``F`` with the
weight ``1/var`` replaced by ``(z − μ)²/var²`` (least squares: ``(z − μ)²`` around ``JᵀJ``),
between neighbours too (:func:`position_information`, ``kind="score"``). Where the residuals are the
noise, ``M ≈ F`` and σ is the bound's (``model``, stored as ``position_sigma_model``); where the model
misses the counts, σ grows. Leaving M's blocks between neighbours out makes σ a few per cent larger
on a dense cluster whose model is right (their scores share pixels). The bread is the observed
information (the curvature at the fit, which carries the low-count excess of the fit over the bound that
the expected information misses); the expected one (``curvature="expected"``) and whole projections as
M's units (``units="projection"``) are variants for comparison. A misfit the fit absorbs into the
positions themselves (a coherent pull, the same in every projection, such as a neighbour's profile
tail) leaves no residual for M to see:
see BENCHMARKS.md for how much of the one-Gaussian profile's misfit at 10⁶ e⁻/Å² it covers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.sparse
from scipy.spatial import cKDTree
from threadpoolctl import threadpool_limits

from aetdask.kernels.atoms.gaussian_atoms import curvature_blocks, fisher_blocks, gradients, pair_information


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

    def local(self, atoms, entries=None) -> np.ndarray:
        """The dense ``(3m, 3m)`` principal block of the atoms ``atoms`` (sorted, m of them); ``entries``:
        :meth:`entries` of those atoms, from this or another information over the same pairs."""
        atoms = np.asarray(atoms, dtype=np.int64)
        m = len(atoms)
        out = np.zeros((m, m, 3, 3))
        out[np.arange(m), np.arange(m)] = self.diagonal[atoms]
        if len(self.pairs) and m > 1:
            row, col, q = self.entries(atoms) if entries is None else entries
            upper = q > 0
            out[row[upper], col[upper]] = self.cross[q[upper] - 1]
            out[row[~upper], col[~upper]] = np.swapaxes(self.cross[-q[~upper] - 1], 1, 2)
        return out.transpose(0, 2, 1, 3).reshape(3 * m, 3 * m)

    def entries(self, atoms):
        """Where the pair blocks of the atoms ``atoms`` (sorted) go in their :meth:`local` block: rows,
        columns (0…m−1) and the signed pair number (+(q + 1) for ``(j, l)``, −(q + 1) for ``(l, j)``)."""
        index = self._index()
        m = len(atoms)
        # the stored entries of the atoms' rows (CSR: each row's slice), kept where the column is one of them
        start = index.indptr[atoms]
        count = index.indptr[atoms + 1] - start
        row = np.repeat(np.arange(m), count)
        entry = np.repeat(start - np.cumsum(count) + count, count) + np.arange(int(count.sum()))
        other = index.indices[entry]
        col = np.searchsorted(atoms, other)
        inside = col < m
        inside[inside] = atoms[col[inside]] == other[inside]
        return row[inside], col[inside], index.data[entry][inside]

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


def _pixels(problem, x):
    """The pieces every block needs at the parameters ``x``: positions, the atoms' detector positions and
    profiles (px), the gradient weight per projection, the Jacobians, and per pixel the mean ``m`` and the
    data ``z`` on the likelihood's scale (counts: the shifted Poisson scale; least squares: the model and the
    data, in the data's units)."""
    pos, h, s, bg, c, o, e = problem.unpack(x)
    det, hc, sc = problem.gaussians(pos, h, s, o, e)
    det = det[:, ::problem.k]
    hc, sc = hc.reshape(-1, problem.k), sc.reshape(-1, problem.k)
    last = problem.rendered
    if last is not None and np.array_equal(last[0], x):
        m = last[1]
    else:  # rendered once: the information of every kind at x needs the same images
        m = problem.model(x)[0]
        problem.rendered = (np.array(x, copy=True), m)
    if problem.counts:
        mean = np.maximum((m + problem.offset) / problem.alpha, 1e-12)
        weight, data = c / problem.alpha[:, 0, 0], problem.zp
    else:
        mean, weight, data = m, c, problem.b
    return pos, det, hc, sc, weight, problem.jacobian(e), mean, data


#: The per-pixel weights of the information's kinds (:func:`position_information`): ``None`` the
#: expected information (1/m for counts, 1 for least squares).
KINDS = ("expected", "score", "observed", "projection-score")


def projection_scores(problem, x) -> np.ndarray:
    """Each atom's score (the log-likelihood's gradient by its position, per Å) from each projection alone,
    ``(n_tilt, n_atom, 3)``, at the parameters ``x``: ``J_kᵀ Σ_u w_k ∇a(u − p_k) (z − m)/m`` (counts) or
    ``J_kᵀ Σ_u w_k ∇a (z − m)`` (least squares). They sum to zero over the projections at the optimum."""
    pos, h, s, bg, c, o, e = problem.unpack(x)
    _, _, _, _, weight, jac, mean, data = _pixels(problem, x)
    residual = (data - mean) / mean if problem.counts else data - mean
    grad = gradients(residual * weight[:, None, None], *problem.gaussians(pos, h, s, o, e))[0]
    grad = grad.reshape(problem.n_t, len(pos), problem.k, 2).sum(axis=2)
    return np.einsum("tni,tij->tnj", grad, jac, optimize=True)


def position_information(problem, x, *, radius: float | None = None, kind: str = "expected") -> PositionInformation:
    """The Fisher information of the refinement's atom positions at its parameters ``x``.

    ``problem`` is the refinement's misfit (``aetdask.model.refine._Problem``), ``x`` its packed
    parameters. The diagonal blocks are the ones the refinement's Fisher scoring uses (in counts, not
    the misfit's units); the pair blocks (:func:`pair_information`) are computed for every two atoms
    closer than ``radius`` Å (None: every two atoms, for small models and checks), over all the
    projections in which their images overlap. Least squares (projections in arbitrary units):
    ``JᵀJ``, with ``scale`` the residual variance (:func:`residual_variance`).

    ``kind`` — the same pixel sums with another weight per pixel:

    * ``"expected"``: the expected information, ``Σ ∇m ∇mᵀ / m`` (counts) or ``JᵀJ``;
    * ``"score"``: the empirical outer product of the per-pixel score, ``Σ ∇m ∇mᵀ (z − m)²/m²`` (counts)
      or ``Σ ∇m ∇mᵀ (m − z)²`` (least squares): the middle of the sandwich ``I⁻¹ M I⁻¹``; ``scale`` 1;
    * ``"observed"``: the curvature of the negative log-likelihood at ``x``,
      ``Σ ∇m ∇mᵀ z/m² − Σ ∇²m (z − m)/m`` (counts) or ``JᵀJ + Σ ∇²m (m − z)``; the second sum only on
      the diagonal blocks (an atom's image does not depend on another's position).
    """
    return position_informations(problem, x, radius=radius, kinds=(kind,))[0]


def position_informations(problem, x, *, radius: float | None = None, kinds=("expected",)) -> list:
    """:func:`position_information` of several ``kinds`` at once, one per kind: their pair blocks in one pass
    over the pairs' pixels (the images' gradients, where the time goes, are the same for every kind)."""
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    found = {}
    if "projection-score" in kinds:
        score = projection_scores(problem, x)
        pairs = _pairs(problem.unpack(x)[0], radius)
        cross = np.einsum("tpi,tpj->pij", score[:, pairs[:, 0]], score[:, pairs[:, 1]], optimize=True)
        found["projection-score"] = PositionInformation(
            np.einsum("tni,tnj->nij", score, score, optimize=True), pairs, cross.reshape(-1, 3, 3), 1.0,
            np.inf if radius is None else float(radius))
    pixel_kinds = [k for k in dict.fromkeys(kinds) if k != "projection-score"]
    if pixel_kinds:
        pos, det, hc, sc, weight, jac, mean, data = _pixels(problem, x)
        pairs = _pairs(pos, radius)
        fields = []
        for kind in pixel_kinds:
            precision, residual = _weights(problem, kind, mean, data)
            blocks = fisher_blocks(None, det, hc, sc, weight, precision=precision)
            if residual is not None:
                blocks = blocks + curvature_blocks(residual, det, hc, sc, weight)
            diagonal = np.einsum("tai,tnab,tbj->nij", jac, blocks, jac, optimize=True)
            scale = 1.0 if problem.counts or kind == "score" else residual_variance(problem, x)
            found[kind] = (diagonal, scale)
            fields.append(precision)
        cross = pair_information(None, det, hc, sc, weight, jac, pairs, precision=np.stack(fields))
        for kind, c in zip(pixel_kinds, cross):
            diagonal, scale = found[kind]
            found[kind] = PositionInformation(diagonal, pairs, c.reshape(-1, 3, 3), scale,
                                              np.inf if radius is None else float(radius))
    return [found[k] for k in kinds]


def _weights(problem, kind, mean, data):
    """A kind's weight of each pixel in the sums of ``∇m ∇mᵀ`` (counts: ``1/m`` expected, ``(z − m)²/m²`` score,
    ``z/m²`` observed; least squares: 1, ``(m − z)²``, 1) and the residual whose curvature the observed
    information adds to the diagonal blocks (None: none)."""
    residual = None
    if problem.counts:
        if kind == "score":
            precision = (data - mean) ** 2 / (mean * mean)
        elif kind == "observed":
            precision, residual = data / (mean * mean), -(data - mean) / mean
        else:
            precision = 1.0 / np.maximum(mean, 1e-12)
    else:
        precision = (mean - data) ** 2 if kind == "score" else np.ones_like(mean)
        if kind == "observed":
            residual = mean - data
    return precision, residual


def _pairs(pos, radius):
    n = len(pos)
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    if radius is None:
        return np.column_stack(np.triu_indices(n, 1)).astype(np.int64)
    return cKDTree(pos).query_pairs(float(radius), output_type="ndarray").astype(np.int64).reshape(-1, 2)


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


def _columns(matrix, at):
    """The three columns ``X`` ``(3m, 3)`` of the inverse of a symmetric positive definite matrix of 3×3 blocks
    that belong to block ``at``, and which of the atom's axes no count fixes (bool, 3) — then ``X`` is the
    pseudo-inverse's and those axes get an infinite variance; None where the matrix is not positive
    semi-definite enough to tell (an observed curvature at low counts)."""
    sel = slice(3 * at, 3 * at + 3)
    try:
        rhs = np.zeros((len(matrix), 3))
        rhs[sel] = np.eye(3)
        sol = scipy.linalg.cho_solve(scipy.linalg.cho_factor(matrix, check_finite=False), rhs, check_finite=False)
        if np.all(np.isfinite(sol)) and np.all(np.diag(sol[sel]) > 0):
            return sol, np.zeros(3, dtype=bool)
    except np.linalg.LinAlgError:
        pass
    w, v = np.linalg.eigh(matrix)
    top = max(float(np.abs(w).max()), 1e-300)
    if w.min() < -1e-8 * top:
        return None
    keep = w > 1e-10 * top
    rows = v[sel]
    return (v[:, keep] / w[keep]) @ rows[:, keep].T, np.linalg.norm(rows[:, ~keep], axis=1) > 1e-6


def _sandwich_block(matrix, middle, at, fallback=None):
    """Block ``at`` of ``A⁻¹`` and of ``A⁻¹ M A⁻¹`` (A ``matrix``, M ``middle``; ``middle`` None: the
    block-diagonal M of ``(at, 3, 3)`` blocks is given as a ``(m, 3, 3)`` array instead); ``fallback`` the
    matrix to invert where ``matrix`` is not positive definite."""
    got = _columns(matrix, at)
    if got is None:
        got = _columns(fallback, at) if fallback is not None else None
        if got is None:
            return np.full((3, 3), np.inf), np.full((3, 3), np.inf)
    x, unseen = got
    sel = slice(3 * at, 3 * at + 3)
    inv = 0.5 * (x[sel] + x[sel].T)
    if middle.ndim == 3:  # block-diagonal M
        xb = x.reshape(-1, 3, 3)
        sand = np.einsum("lai,lab,lbj->ij", xb, middle, xb, optimize=True)
    else:
        sand = x.T @ middle @ x
    sand = 0.5 * (sand + sand.T)
    for out in (inv, sand):
        out[unseen, :] = np.inf
        out[:, unseen] = np.inf
    return inv, sand


def _local_sandwich(info, score, positions, radius, *, coupled=True, fallback=None):
    """Each atom's block of ``A⁻¹`` and of the sandwich ``A⁻¹ M A⁻¹`` (A ``info``, M ``score``) over the atom
    and its neighbours within ``radius`` Å (0: the atom alone), as :func:`_local_inverse` does for ``A⁻¹``.
    ``coupled`` False: M's blocks between atoms left out (each atom's score taken as independent of its
    neighbours'). ``fallback`` an information to invert where ``info`` is not positive definite."""
    n = info.n
    inv, sand = np.empty((n, 3, 3)), np.empty((n, 3, 3))
    if n == 0:
        return inv, sand
    with threadpool_limits(1, user_api="blas"):
        if radius <= 0 or len(info.pairs) == 0:
            hoods = [np.array([j]) for j in range(n)]
        else:
            hoods = [np.sort(np.asarray(h, dtype=np.int64)) for h in cKDTree(positions).query_ball_point(positions, radius)]
        for j, hood in enumerate(hoods):
            at = int(np.searchsorted(hood, j))
            many = len(hood) > 1
            # where the pair blocks go, once for the informations over the same pairs (the kinds of one pass)
            where = info.entries(hood) if many and len(info.pairs) else None

            def local(other):
                return other.local(hood, where if other.pairs is info.pairs else None)

            a = local(info) if many else info.diagonal[j]
            m = (local(score) if many else score.diagonal[j]) if coupled else score.diagonal[hood]
            f = None if fallback is None else (local(fallback) if many else fallback.diagonal[j])
            inv[j], sand[j] = _sandwich_block(a, m, at, f)
    return inv, sand


@dataclass
class PositionCovariance:
    """Each atom's position covariance and σ (Å), and how they were found.

    ``covariance`` ``(n, 3, 3)`` and ``sigma`` ``(n, 3)`` along x, y, z; ``independent`` ``(n, 3)``
    the σ of the diagonal blocks alone (every other atom known); ``radius`` (Å) the neighbourhood
    inverted jointly (0: none); ``scale`` the residual variance of a least-squares fit (1 for counts);
    ``estimator`` ``"fisher"`` (the inverse of the expected information) or ``"sandwich"`` (``I⁻¹ M I⁻¹``);
    ``model`` ``(n, 3)`` the σ of the expected information (the Cramér–Rao bound of a right model), for
    comparison with a sandwich's (None: not computed).
    """

    covariance: np.ndarray
    sigma: np.ndarray
    independent: np.ndarray
    radius: float
    scale: float
    counts: bool
    estimator: str = "fisher"
    model: np.ndarray | None = None
    curvature: str = "expected"
    score_coupling: bool = True

    @property
    def precision_pm(self) -> float:
        """The model's predicted precision (:func:`predicted_precision_pm`)."""
        return predicted_precision_pm(self.sigma)

    @property
    def coupling(self) -> float:
        """How much the neighbours' share of the counts raises the 3-D RMS σ: the ratio of the joint
        σ's to the independent ones' (1: no effect)."""
        return _rms_ratio(self.sigma, self.independent)

    @property
    def inflation(self) -> float:
        """How much the sandwich raises the 3-D RMS σ over the expected information's (1: the model fits
        the counts as their noise allows; nan: no comparison)."""
        return float("nan") if self.model is None else _rms_ratio(self.sigma, self.model)


def _rms_ratio(a, b) -> float:
    ok = np.all(np.isfinite(a), axis=1) & np.all(np.isfinite(b), axis=1)
    if not ok.any():
        return float("nan")
    return float(np.sqrt(np.sum(a[ok] ** 2) / max(np.sum(b[ok] ** 2), 1e-300)))


#: The covariance estimators of :func:`position_covariance`.
ESTIMATORS = ("sandwich", "fisher")


def position_covariance(problem, x, *, coupling: bool = True, radius: float | None = None,
                        estimator: str = "sandwich", curvature: str = "observed",
                        score_coupling: bool = True, units: str = "pixel") -> PositionCovariance:
    """Each atom's 3×3 position covariance (Å²) at the refinement's parameters ``x``.

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
    estimator : {"sandwich", "fisher"}
        ``"fisher"``: ``(I⁻¹)_jj``, the inverse of the expected information (least squares: times the
        residual variance) — the Cramér–Rao bound, right where the model is. ``"sandwich"`` (Huber–White):
        ``(I⁻¹ M I⁻¹)_jj`` with M the empirical outer product of the per-pixel score
        (:func:`position_information`, ``kind="score"``): M ≈ I where the residuals are the noise, and
        larger where the model misses the data (the atom's profile, alignment, angles), so σ grows with
        the misfit the bound ignores. The expected-information σ comes with it (``model``).
    curvature : {"observed", "expected"}
        The sandwich's bread: the observed information (the curvature at the fit; the expected one where it
        is not positive definite), or the expected one. The observed one is the default: std(err/σ) 0.999,
        1.021, 1.011 at 8×10³, 1.6×10⁴, 1.6×10⁵ e⁻/Å² against 1.146, 1.090, 1.014 with the expected one
        (1,000 atoms, ``benchmarks/bench_uncertainty.py --variants``; BENCHMARKS.md).
    score_coupling : bool
        Keep M's blocks between neighbours (the scores of atoms that share pixels are correlated).
    units : {"pixel", "projection"}
        The independent units whose scores' outer products make M: each pixel, or each projection (the
        score of an atom from one projection, :func:`projection_scores`: misfits correlated over an
        image — a profile's shape, an image's shift — counted as they act).

    Returns
    -------
    PositionCovariance
        The covariances, the σ along x, y, z (square roots of their diagonals), and the σ of the
        diagonal blocks alone.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, not {estimator!r}")
    if curvature not in ("expected", "observed"):
        raise ValueError(f"curvature must be 'expected' or 'observed', not {curvature!r}")
    pos, h, s = problem.unpack(x)[:3]
    if len(pos) == 0:
        empty = np.empty((0, 3))
        return PositionCovariance(np.empty((0, 3, 3)), empty, empty, 0.0, 1.0, bool(problem.counts), estimator,
                                  empty if estimator == "sandwich" else None, curvature, score_coupling)
    if radius is None:
        h, s = np.reshape(h, (-1, problem.k)), np.reshape(s, (-1, problem.k))
        radius = NEIGHBOURHOOD * max(information_width(hh, ss) for hh, ss in zip(h, s))
    radius = float(radius) if coupling else 0.0
    span = PAIR_SPAN * radius if radius > 0 else 0.0
    if estimator == "fisher":
        info = position_information(problem, x, radius=span)
        own = np.stack([_inverse_block(b, 0) for b in info.diagonal])
        cov = _local_inverse(info, pos, radius) if radius > 0 else own
        cov, own = info.scale * cov, info.scale * own
        return PositionCovariance(cov, _sigma(cov), _sigma(own), radius, info.scale, bool(problem.counts))
    score_kind = "score" if units == "pixel" else "projection-score"
    # the kinds over the same pairs in one pass; the score's own blocks alone where its coupling is left out
    kinds = ["expected"] + (["observed"] if curvature == "observed" else []) + ([score_kind] if score_coupling else [])
    got = dict(zip(kinds, position_informations(problem, x, radius=span, kinds=kinds)))
    info, bread = got["expected"], got.get("observed", got["expected"])
    score = got[score_kind] if score_coupling else position_information(problem, x, radius=0.0, kind=score_kind)
    fallback = None if curvature == "expected" else info
    inv, cov = _local_sandwich(bread, score, pos, radius, coupled=score_coupling, fallback=fallback)
    if curvature == "observed":
        inv = _local_inverse(info, pos, radius) if radius > 0 else np.stack([_inverse_block(b, 0) for b in info.diagonal])
    own = _local_sandwich(bread, score, pos, 0.0, fallback=fallback)[1]
    return PositionCovariance(cov, _sigma(cov), _sigma(own), radius, info.scale, bool(problem.counts), "sandwich",
                              _sigma(info.scale * inv), curvature, score_coupling)


def _sigma(cov):
    return np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2), 0.0))


def predicted_precision_pm(sigma) -> float:
    """The precision (pm) a model with these σ ``(n, 3)`` (Å) is expected to have against the truth.

    The evaluation's precision is ``100 · √(Σ_axes var(diff))`` over the matched atoms
    (:func:`aetdask.kernels.atoms.metrics.paper_match`); with independent, unbiased errors of variance σ²
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
    and Å² (and, for a sandwich, ``position_sigma_model``: the expected information's σ), and the
    record's summary of them (a dict for the refinement's provenance)."""
    noise = (", Poisson–Gaussian counts" if result.counts else
             f", least squares (residual variance {result.scale:.6g})")
    hood = (f", each atom jointly with its neighbours within {result.radius:.2f} Å" if result.radius > 0
            else ", each atom alone (every other atom known)")
    bound = "Cramér–Rao bound at the fitted model: the inverse of the expected Fisher information of the atom positions"
    if result.estimator == "sandwich":
        how = ("sandwich (Huber–White) covariance I⁻¹ M I⁻¹ of the atom positions: I the "
               + ("expected" if result.curvature == "expected" else "observed") + " information, M the empirical "
               "outer product of the per-pixel score" + ("" if result.score_coupling else " (neighbours' scores independent)")
               + noise + hood + "; the other parameters of the fit held at their values")
    else:
        how = bound + noise + hood + "; the other parameters of the fit held at their values"
    xyz = list(model.coords["xyz"].values) if "xyz" in model.coords else ["x", "y", "z"]
    out = model.assign_coords(xyz2=("xyz2", xyz))
    out["position_sigma"] = (("atom", "xyz"), result.sigma, {"units": "Å", "description": how})
    out["position_covariance"] = (("atom", "xyz", "xyz2"), result.covariance, {"units": "Å²", "description": how})
    if result.model is not None:
        out["position_sigma_model"] = (("atom", "xyz"), result.model,
                                       {"units": "Å", "description": bound + noise + hood})
    finite = np.all(np.isfinite(result.sigma), axis=1)
    precision = result.precision_pm
    joint = "joint" if result.radius > 0 else "independent"
    summary = {
        "predicted_precision_pm": round(precision, 3) if np.isfinite(precision) else None,
        "position_sigma_pm": [round(float(100 * np.sqrt(np.mean(result.sigma[finite, a] ** 2))), 3) if finite.any()
                              else None for a in range(3)],
        "position_sigma_method": f"{result.estimator}-{joint}",
        "position_sigma_radius": round(result.radius, 3),
        "position_sigma_coupling": round(result.coupling, 4) if np.isfinite(result.coupling) else None,
        "position_sigma_unbounded": int((~finite).sum()),
        **({} if result.counts else {"residual_variance": result.scale}),
    }
    if result.model is not None:
        model_pm = predicted_precision_pm(result.model)
        inflation = result.inflation
        summary.update({
            "position_sigma_estimator": result.estimator if result.curvature == "expected" else
            f"{result.estimator} ({result.curvature} information)",
            "predicted_precision_model_pm": round(model_pm, 3) if np.isfinite(model_pm) else None,
            "position_sigma_inflation": round(inflation, 4) if np.isfinite(inflation) else None,
        })
    else:
        summary["position_sigma_estimator"] = result.estimator
    return out, summary
