"""Projections of atoms modelled as 2-D Gaussians, and the gradients of a least-squares misfit.

An atom j seen in projection k sits at detector pixel ``p_kj = (row, col)``
and contributes ``H_j · exp(−|u − p_kj|² / (2 s_j²))`` to pixel ``u``. For the
misfit ``L = ½ Σ_k Σ_u (model_k(u) − b_k(u))²`` the kernels return
``∂L/∂p_kj``, ``∂L/∂H_j`` and ``∂L/∂s_j`` (summed over projections). Each
Gaussian is cut off at ``cutoff · s`` pixels.

CPU: Numba, parallel over projections. Any other array module (CuPy): the same
sums written with ``xp`` scatter-adds over atom windows.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from aetdask.backend import get_array_module, scatter_add


@numba.njit(inline="always", cache=True)
def _window_bounds(py, px, r, ny, nx):
    """First and last row and column of the pixels within ``r`` of (py, px), clipped to the image."""
    i0, i1 = max(0, int(math.ceil(py - r))), min(ny - 1, int(math.floor(py + r)))
    j0, j1 = max(0, int(math.ceil(px - r))), min(nx - 1, int(math.floor(px + r)))
    return i0, i1, j0, j1


@numba.njit(inline="always", cache=True)
def _axis_weights(buf, lo, hi, p, inv):
    """``exp(−(u − p)² · inv)`` for u = lo … hi into ``buf[0 : hi − lo + 1]``: a Gaussian is the
    product of its row and column factors, so a window of n² pixels needs 2n exponentials, not n²."""
    for u in range(lo, hi + 1):
        buf[u - lo] = math.exp(-((u - p) ** 2) * inv)


@numba.njit(cache=True)
def _widest_window(sigma, cutoff):
    """Length of the longest window row any atom needs: the size of the row and column factor buffers."""
    span = 3
    for j in range(sigma.shape[0]):
        span = max(span, 2 * int(math.ceil(cutoff * sigma[j])) + 3)
    return span


@numba.njit(inline="always", cache=True)
def _row_bounds(dy, px, r, j0, j1):
    """First and last column of a window row ``dy`` from the centre that lie within ``r`` of it."""
    half = math.sqrt(max(r * r - dy * dy, 0.0))
    return max(j0, int(math.ceil(px - half))), min(j1, int(math.floor(px + half)))


@numba.njit(parallel=True, cache=True)
def _render(pos, height, sigma, ny, nx, cutoff):
    nt, na = pos.shape[0], pos.shape[1]
    out = np.zeros((nt, ny, nx))
    span = _widest_window(sigma, cutoff)
    for k in numba.prange(nt):
        ey = np.empty(span)
        ex = np.empty(span)
        for j in range(na):
            s = sigma[j]
            r = cutoff * s
            py, px = pos[k, j, 0], pos[k, j, 1]
            i0, i1, j0, j1 = _window_bounds(py, px, r, ny, nx)
            inv = 0.5 / (s * s)
            _axis_weights(ey, i0, i1, py, inv)
            _axis_weights(ex, j0, j1, px, inv)
            h = height[j]
            for i in range(i0, i1 + 1):
                m0, m1 = _row_bounds(i - py, px, r, j0, j1)
                hy = h * ey[i - i0]
                for m in range(m0, m1 + 1):
                    out[k, i, m] += hy * ex[m - j0]
    return out


@numba.njit(parallel=True, cache=True)
def _gradients(residual, pos, height, sigma, cutoff):
    nt, ny, nx = residual.shape
    na = pos.shape[1]
    gpos = np.zeros((nt, na, 2))
    gh = np.zeros((nt, na))
    gs = np.zeros((nt, na))
    span = _widest_window(sigma, cutoff)
    for k in numba.prange(nt):
        ey = np.empty(span)
        ex = np.empty(span)
        for j in range(na):
            s = sigma[j]
            r = cutoff * s
            py, px = pos[k, j, 0], pos[k, j, 1]
            i0, i1, j0, j1 = _window_bounds(py, px, r, ny, nx)
            inv = 1.0 / (s * s)
            _axis_weights(ey, i0, i1, py, 0.5 * inv)
            _axis_weights(ex, j0, j1, px, 0.5 * inv)
            ay = 0.0
            ax = 0.0
            ah = 0.0
            as_ = 0.0
            for i in range(i0, i1 + 1):
                dy = i - py
                gy = ey[i - i0]
                m0, m1 = _row_bounds(dy, px, r, j0, j1)
                for m in range(m0, m1 + 1):
                    dx = m - px
                    d2 = dy * dy + dx * dx
                    rg = residual[k, i, m] * gy * ex[m - j0]
                    ah += rg
                    ay += rg * dy
                    ax += rg * dx
                    as_ += rg * d2
            h = height[j]
            gpos[k, j, 0] = h * ay * inv
            gpos[k, j, 1] = h * ax * inv
            gh[k, j] = ah
            gs[k, j] = h * as_ * inv / s
    return gpos, gh, gs


def _window(xp, pos, sigma, cutoff, shape):
    """Pixel indices (k, a, w, w) of every atom's window and their offsets from the centre."""
    r = int(math.ceil(cutoff * float(sigma.max())))
    span = xp.arange(-r, r + 1)
    base = xp.rint(pos).astype(int)  # (t, a, 2)
    iy = base[..., 0, None, None] + span[:, None]
    ix = base[..., 1, None, None] + span[None, :]
    dy = iy - pos[..., 0, None, None]
    dx = ix - pos[..., 1, None, None]
    d2 = dy * dy + dx * dx
    inside = (d2 <= (cutoff * sigma[None, :, None, None]) ** 2) & (iy >= 0) & (iy < shape[0]) & (ix >= 0) & (ix < shape[1])
    iy = xp.broadcast_to(xp.clip(iy, 0, shape[0] - 1), d2.shape)
    ix = xp.broadcast_to(xp.clip(ix, 0, shape[1] - 1), d2.shape)
    g = xp.where(inside, xp.exp(-0.5 * d2 / sigma[None, :, None, None] ** 2), 0.0)
    return iy, ix, dy, dx, d2, g


def render(positions, height, sigma, shape, cutoff: float = 4.0):
    """Images ``(n_tilt, ny, nx)`` of Gaussian atoms at detector pixel positions ``(n_tilt, n_atom, 2)``.

    >>> img = render(np.array([[[2.0, 3.0]]]), np.array([1.0]), np.array([1.0]), (5, 6))
    >>> float(img[0, 2, 3]), round(float(img[0, 2, 4]), 4)
    (1.0, 0.6065)
    """
    xp = get_array_module(positions)
    ny, nx = shape
    if xp is np:
        return _render(np.ascontiguousarray(positions, dtype=np.float64), np.asarray(height, np.float64),
                       np.asarray(sigma, np.float64), int(ny), int(nx), float(cutoff))
    iy, ix, _, _, _, g = _window(xp, positions, sigma, cutoff, shape)
    out = xp.zeros((positions.shape[0], ny * nx))
    t = xp.broadcast_to(xp.arange(positions.shape[0])[:, None, None, None], g.shape)
    flat = t * 0 + iy * nx + ix
    scatter_add(out, (t.ravel(), flat.ravel()), (height[None, :, None, None] * g).ravel())
    return out.reshape(positions.shape[0], ny, nx)


def gradients(residual, positions, height, sigma, cutoff: float = 4.0):
    """Gradients of ``½ Σ residual²`` (residual = model − data) with respect to the model.

    Returns ``(d_positions (n_tilt, n_atom, 2), d_height (n_atom,), d_sigma (n_atom,))``.
    """
    xp = get_array_module(residual)
    if xp is np:
        gp, gh, gs = _gradients(np.ascontiguousarray(residual, dtype=np.float64),
                                np.ascontiguousarray(positions, dtype=np.float64),
                                np.asarray(height, np.float64), np.asarray(sigma, np.float64), float(cutoff))
        return gp, gh.sum(axis=0), gs.sum(axis=0)
    iy, ix, dy, dx, d2, g = _window(xp, positions, sigma, cutoff, residual.shape[1:])
    t = xp.arange(residual.shape[0])[:, None, None, None]
    rg = residual[t, iy, ix] * g
    h = height[None, :]
    inv = 1.0 / sigma[None, :] ** 2
    gp = xp.stack([h * (rg * dy).sum(axis=(2, 3)) * inv, h * (rg * dx).sum(axis=(2, 3)) * inv], axis=-1)
    gh = rg.sum(axis=(2, 3)).sum(axis=0)
    gs = (h * (rg * d2).sum(axis=(2, 3)) * inv / sigma[None, :]).sum(axis=0)
    return gp, gh, gs



@numba.njit(inline="always", cache=True)
def _profile_window(py, px, sigma, cutoff, ny, nx):
    """Reach of a profile of concentric Gaussians (widths ``sigma``) and its window's rows and columns."""
    r = 0.0
    for c in range(sigma.shape[0]):
        r = max(r, cutoff * sigma[c])
    i0, i1, j0, j1 = _window_bounds(py, px, r, ny, nx)
    return r, i0, i1, j0, j1


@numba.njit(inline="always", cache=True)
def _component_factors(ey, ex, i0, i1, j0, j1, py, px, sigma, height, per_variance):
    """Each profile component's row factors (times its height, and by 1/s² with ``per_variance``) into
    ``ey[c]`` and column factors into ``ex[c]`` (:func:`_axis_weights`) over rows ``i0…i1``, columns ``j0…j1``."""
    for c in range(sigma.shape[0]):
        inv = 0.5 / (sigma[c] * sigma[c])
        _axis_weights(ey[c], i0, i1, py, inv)
        _axis_weights(ex[c], j0, j1, px, inv)
        factor = 2.0 * inv * height[c] if per_variance else height[c]
        for u in range(i1 - i0 + 1):
            ey[c, u] = factor * ey[c, u]


@numba.njit(parallel=True, cache=True)
def _likelihood_change(zp, mp, log_mp, pos, height, sigma, weight, cutoff):
    nt, ny, nx = zp.shape
    na, nc = height.shape
    out = np.zeros((nt, na))
    span = _widest_window(sigma.ravel(), cutoff)
    for k in numba.prange(nt):
        ey = np.empty((nc, span))  # each component's row and column factors (the height in the rows')
        ex = np.empty((nc, span))
        wk = weight[k]
        for j in range(na):
            py, px = pos[k, j, 0], pos[k, j, 1]
            r, i0, i1, j0, j1 = _profile_window(py, px, sigma[j], cutoff, ny, nx)
            _component_factors(ey, ex, i0, i1, j0, j1, py, px, sigma[j], height[j], False)
            acc = 0.0
            for i in range(i0, i1 + 1):
                dy = i - py
                m0, m1 = _row_bounds(dy, px, r, j0, j1)
                for m in range(m0, m1 + 1):
                    d2 = dy * dy + (m - px) ** 2
                    add = 0.0
                    for c in range(nc):
                        s = sigma[j, c]
                        if d2 <= (cutoff * s) ** 2:
                            add += ey[c, i - i0] * ex[c, m - j0]
                    base = mp[k, i, m]
                    new = max(base + wk * add, 1e-12)
                    acc += (new - base) - zp[k, i, m] * (math.log(new) - log_mp[k, i, m])
            out[k, j] = acc
    return out


def likelihood_change(counts, mean, positions, height, sigma, weight, cutoff: float = 4.0) -> np.ndarray:
    """Change of the Poisson negative log-likelihood ``Σ (m − z log m)`` when one atom is added
    (``height`` > 0) or taken away (``height`` < 0), for each atom alone, summed over projections.

    ``counts`` z and ``mean`` m are ``(n_tilt, ny, nx)`` in the Poisson scale; an
    atom adds ``weight_k · Σ_c H_c · exp(−|u − p|²/2s_c²)`` to projection k:
    ``height`` and ``sigma`` are ``(n_atom,)`` for one Gaussian per atom or
    ``(n_atom, n_component)`` for a profile of concentric Gaussians.

    >>> z = np.full((1, 9, 9), 1.0); m = np.full((1, 9, 9), 1.0)
    >>> dl = likelihood_change(z, m, np.array([[[4.0, 4.0]]]), np.array([2.0]), np.array([1.0]), np.array([1.0]))
    >>> bool(dl[0] > 0)  # an atom where the counts show none makes the fit worse
    True
    """
    n = np.shape(positions)[1]
    mean = np.ascontiguousarray(mean, dtype=np.float64)
    # log m once per pixel, not once per atom that reaches it; the Gaussians as row × column factors
    out = _likelihood_change(np.ascontiguousarray(counts, dtype=np.float64), mean, np.log(mean),
                             np.ascontiguousarray(positions, dtype=np.float64),
                             np.ascontiguousarray(np.asarray(height, np.float64).reshape(n, -1)),
                             np.ascontiguousarray(np.asarray(sigma, np.float64).reshape(n, -1)),
                             np.asarray(weight, np.float64), float(cutoff))
    return out.sum(axis=0)


@numba.njit(parallel=True, cache=True)
def _group_change(zp, mp, pos, height, sigma, sign, weight, cutoff):
    nt, ny, nx = zp.shape
    n, g = pos.shape[1], sign.shape[0]
    nc = height.shape[2]
    out = np.zeros((nt, n))
    for k in numba.prange(nt):
        for j in range(n):
            i0, i1, j0, j1 = ny, -1, nx, -1
            r = np.zeros(g)
            for a in range(g):
                ra, a0, a1, b0, b1 = _profile_window(pos[k, j, a, 0], pos[k, j, a, 1], sigma[j, a], cutoff, ny, nx)
                r[a] = ra
                i0, i1, j0, j1 = min(i0, a0), max(i1, a1), min(j0, b0), max(j1, b1)
            acc = 0.0
            for i in range(i0, i1 + 1):
                for m in range(j0, j1 + 1):
                    add = 0.0
                    for a in range(g):
                        d2 = (i - pos[k, j, a, 0]) ** 2 + (m - pos[k, j, a, 1]) ** 2
                        if d2 > r[a] * r[a]:
                            continue
                        for c in range(nc):
                            s = sigma[j, a, c]
                            if d2 <= (cutoff * s) ** 2:
                                add += sign[a] * height[j, a, c] * math.exp(-0.5 * d2 / (s * s))
                    if add == 0.0:
                        continue
                    base = mp[k, i, m]
                    new = max(base + weight[k] * add, 1e-12)
                    acc += (new - base) - zp[k, i, m] * math.log(new / base)
            out[k, j] = acc
    return out


def group_change(counts, mean, positions, height, sigma, sign, weight, cutoff: float = 4.0) -> np.ndarray:
    """Change of the Poisson negative log-likelihood ``Σ (m − z log m)`` when each of n groups of atoms is
    added together, every group alone: group j adds ``sign[a] · weight_k · image`` of its atoms a to the
    mean of projection k. ``positions`` ``(n_tilt, n, g, 2)`` detector positions, ``height`` and ``sigma``
    ``(n, g, n_component)`` (px), ``sign`` ``(g,)``. With g = 1 and sign 1 this is :func:`likelihood_change`;
    with one atom taken away and two put in its place, the change of splitting it into two.

    >>> z = np.full((1, 15, 15), 1.0); m = np.full((1, 15, 15), 1.0)
    >>> one = likelihood_change(z, m, np.array([[[7.0, 7.0]]]), np.array([2.0]), np.array([1.0]), np.array([1.0]))
    >>> pair = group_change(z, m, np.array([[[[7.0, 7.0], [7.0, 7.0]]]]), np.full((1, 2, 1), 2.0), np.ones((1, 2, 1)),
    ...                     np.array([1.0, -1.0]), np.array([1.0]))
    >>> bool(abs(pair[0]) < 1e-12 and one[0] > 0)  # an atom added and taken away again changes nothing
    True
    """
    pos = np.asarray(positions, dtype=np.float64)
    n, g = pos.shape[1], pos.shape[2]
    out = _group_change(np.ascontiguousarray(counts, dtype=np.float64), np.ascontiguousarray(mean, dtype=np.float64),
                        np.ascontiguousarray(pos), np.ascontiguousarray(np.asarray(height, np.float64).reshape(n, g, -1)),
                        np.ascontiguousarray(np.asarray(sigma, np.float64).reshape(n, g, -1)),
                        np.asarray(sign, np.float64), np.asarray(weight, np.float64), float(cutoff))
    return out.sum(axis=0)


@numba.njit(parallel=True, cache=True)
def _poisson_misfit(model, offset, alpha, counts):
    nt, ny, nx = model.shape
    grad = np.empty_like(model)
    part = np.zeros(nt)
    for k in numba.prange(nt):
        a, o = alpha[k], offset[k]
        acc = 0.0
        for i in range(ny):
            for j in range(nx):
                mp = max((model[k, i, j] + o) / a, 1e-12)
                z = counts[k, i, j]
                acc += mp - z * math.log(mp)
                grad[k, i, j] = (1.0 - z / mp) / a
        part[k] = acc
    return part.sum(), grad


def poisson_misfit(model, offset, alpha, counts):
    """The shifted-Poisson negative log-likelihood ``Σ (m′ − z log m′)``, ``m′ = max((m + offset)/α, 10⁻¹²)``,
    and its gradient by the model ``(1 − z/m′)/α``, in one pass: ``model`` and ``counts`` (the shifted counts z)
    ``(n_tilt, ny, nx)``, ``offset`` and ``alpha`` per projection ``(n_tilt,)``.

    >>> m = np.full((1, 2, 2), 2.0); z = np.full((1, 2, 2), 2.0)
    >>> value, grad = poisson_misfit(m, np.zeros(1), np.ones(1), z)
    >>> round(value, 6), float(abs(grad).max())  # the mean equals the counts: the gradient vanishes
    (2.454823, 0.0)
    """
    return _poisson_misfit(np.ascontiguousarray(model, dtype=np.float64),
                           np.ascontiguousarray(np.ravel(offset), dtype=np.float64),
                           np.ascontiguousarray(np.ravel(alpha), dtype=np.float64),
                           np.ascontiguousarray(counts, dtype=np.float64))


def profile_kernel(height, sigma, cutoff: float = 4.0) -> np.ndarray:
    """An atom's image on the pixel grid, centred: ``Σ_c H_c · exp(−|u|²/2s_c²)`` within ``cutoff · max s``.

    >>> k = profile_kernel(np.array([2.0]), np.array([1.0]))
    >>> k.shape, float(k[4, 4])
    ((9, 9), 2.0)
    """
    h = np.atleast_1d(np.asarray(height, dtype=np.float64))
    s = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
    r = int(math.ceil(cutoff * float(s.max())))
    u = np.arange(-r, r + 1, dtype=np.float64)
    d2 = u[:, None] ** 2 + u[None, :] ** 2
    out = np.zeros_like(d2)
    for hc, sc in zip(h, s):
        out += np.where(d2 <= (cutoff * sc) ** 2, hc * np.exp(-0.5 * d2 / (sc * sc)), 0.0)
    return out


@numba.njit(parallel=True, cache=True)
def _sample_sum(points, rows, cols, images):
    """Σ_k bilinear(images[k], row_k(p), col_k(p)) for every point p; ``rows``/``cols`` are (t, 4): the
    affine maps ``a·x + b·y + c·z + d`` of a point to its detector row and column."""
    nt, ny, nx = images.shape
    n = points.shape[0]
    out = np.zeros(n)
    for i in numba.prange(n):
        x, y, z = points[i, 0], points[i, 1], points[i, 2]
        acc = 0.0
        for k in range(nt):
            r = rows[k, 0] * x + rows[k, 1] * y + rows[k, 2] * z + rows[k, 3]
            c = cols[k, 0] * x + cols[k, 1] * y + cols[k, 2] * z + cols[k, 3]
            i0 = int(math.floor(r))
            j0 = int(math.floor(c))
            if i0 < 0 or j0 < 0 or i0 + 1 >= ny or j0 + 1 >= nx:
                continue
            fr = r - i0
            fc = c - j0
            acc += ((1 - fr) * ((1 - fc) * images[k, i0, j0] + fc * images[k, i0, j0 + 1])
                    + fr * ((1 - fc) * images[k, i0 + 1, j0] + fc * images[k, i0 + 1, j0 + 1]))
        out[i] = acc
    return out


def gain_map(counts, mean, weight, height, sigma, points, rows, cols, cutoff: float = 4.0) -> np.ndarray:
    """Approximate gain in Poisson log-likelihood of adding one atom at each of ``points`` (all at once).

    To second order in the atom's image ``w_k a(u − p_k)``, the gain of adding it is
    ``Σ_k Σ_u [w_k a · (z − m)/m − ½ (w_k a)² z/m²]``; with ``z/m² ≈ 1/m`` both sums are the
    residual images filtered by the atom's profile (``a`` and ``a²``) and read at the point's
    detector position: one back-projection of two filtered images per projection, for any number of
    points, where :func:`likelihood_change` costs a window of pixels per point and projection.

    ``counts`` z, ``mean`` m ``(t, ny, nx)`` on the Poisson scale; ``weight`` (t,); ``height``,
    ``sigma`` (px) the profile's components; ``points`` (n, 3); ``rows``, ``cols`` (t, 4) as in
    :func:`_sample_sum`. Points whose image leaves the detector get no contribution from that
    projection.
    """
    from scipy.signal import fftconvolve

    z = np.asarray(counts, dtype=np.float64)
    m = np.maximum(np.asarray(mean, dtype=np.float64), 1e-12)
    w = np.asarray(weight, dtype=np.float64)[:, None, None]
    a = profile_kernel(height, sigma, cutoff)[None]
    first = fftconvolve(w * (z - m) / m, a, mode="same", axes=(1, 2))
    second = fftconvolve(w * w / m, a * a, mode="same", axes=(1, 2))
    return _sample_sum(np.ascontiguousarray(points, dtype=np.float64), np.ascontiguousarray(rows, np.float64),
                       np.ascontiguousarray(cols, np.float64), np.ascontiguousarray(first - 0.5 * second))


#: What :func:`_window_blocks` sums per pixel: the Fisher information with the weight ``1/mean``, with a given
#: per-pixel weight (the precision), or the residual-weighted curvature of the atom's image.
_FISHER, _GIVEN, _CURVATURE = 0, 1, 2


@numba.njit(inline="always")
def _information_weight(wk, product, value, given):
    """A pixel's share of an information sum: ``w² · product`` times the pixel's precision ``value``
    (``given``) or divided by its mean ``value``."""
    if given:
        return wk * wk * product * value
    return wk * wk * product / max(value, 1e-12)


@numba.njit(parallel=True, cache=True)
def _window_blocks(field, pos, height, sigma, weight, cutoff, mode):
    """Per projection and atom, a 2×2 sum over the pixels of the atom's window (:func:`_profile_window`):
    ``w² (∇a)(∇a)ᵀ / field`` (``_FISHER``), ``w² (∇a)(∇a)ᵀ · field`` (``_GIVEN``) or
    ``w · field · ∇∇ᵀa`` (``_CURVATURE``), for an atom image ``a`` of concentric Gaussians."""
    nt, ny, nx = field.shape
    na, nc = height.shape
    out = np.zeros((nt, na, 2, 2))
    span = _widest_window(sigma.ravel(), cutoff)
    for k in numba.prange(nt):
        ey = np.empty((nc, span))  # each component's row and column factors (H/s² in the rows')
        ex = np.empty((nc, span))
        for j in range(na):
            py, px = pos[k, j, 0], pos[k, j, 1]
            r, i0, i1, j0, j1 = _profile_window(py, px, sigma[j], cutoff, ny, nx)
            _component_factors(ey, ex, i0, i1, j0, j1, py, px, sigma[j], height[j], True)
            ayy = 0.0
            ayx = 0.0
            axx = 0.0
            for i in range(i0, i1 + 1):
                dy = i - py
                m0, m1 = _row_bounds(dy, px, r, j0, j1)
                for m in range(m0, m1 + 1):
                    dx = m - px
                    d2 = dy * dy + dx * dx
                    first = 0.0  # Σ_c g_c / s_c²: d(image)/d(position) along the offset, per unit offset
                    second = 0.0  # Σ_c g_c / s_c⁴
                    for c in range(nc):
                        s = sigma[j, c]
                        if d2 <= (cutoff * s) ** 2:
                            g = ey[c, i - i0] * ex[c, m - j0]
                            first += g
                            second += g / (s * s)
                    if mode == _CURVATURE:
                        f = weight[k] * field[k, i, m]
                        ayy += f * (second * dy * dy - first)
                        ayx += f * second * dy * dx
                        axx += f * (second * dx * dx - first)
                    else:
                        f = _information_weight(weight[k], first * first, field[k, i, m], mode == _GIVEN)
                        ayy += f * dy * dy
                        ayx += f * dy * dx
                        axx += f * dx * dx
            out[k, j, 0, 0] = ayy
            out[k, j, 0, 1] = ayx
            out[k, j, 1, 0] = ayx
            out[k, j, 1, 1] = axx
    return out


def fisher_blocks(mean, positions, height, sigma, weight, cutoff: float = 4.0, *, precision=None) -> np.ndarray:
    """Each atom's Fisher information about its detector position, per projection: ``(n_tilt, n_atom, 2, 2)``
    (row, column; per pixel²), for Poisson counts of mean ``mean`` ``(n_tilt, ny, nx)``.

    An atom adds ``weight_k · Σ_c H_c · exp(−|u − p|²/2s_c²)`` to projection k (``height``, ``sigma`` as
    in :func:`likelihood_change`); its information about p is ``Σ_u ∇_p a ∇_p aᵀ / m(u)``. With the
    projection's Jacobian ``J_k`` (2×3) the information about the atom's 3-D position is
    ``Σ_k J_kᵀ F_k J_k``; its inverse bounds the covariance of any unbiased estimate (Cramér–Rao), the
    other atoms and the nuisance parameters taken as known.

    >>> f = fisher_blocks(np.full((1, 21, 21), 4.0), np.array([[[10.0, 10.0]]]), np.array([8.0]), np.array([1.5]),
    ...                   np.array([1.0]))
    >>> bool(np.isclose(f[0, 0, 0, 0], f[0, 0, 1, 1]) and abs(f[0, 0, 0, 1]) < 1e-9)  # round: the same along both
    True

    ``precision`` ``(n_tilt, ny, nx)``, if given, replaces the weight ``1/m(u)`` of every pixel: with
    ``(z − m)²/m²`` the sums are the empirical outer product of the score ``Σ_u ∇ℓ_u ∇ℓ_uᵀ`` (the middle
    of the sandwich covariance, :func:`aetdask.model.uncertainty.position_covariance`); with ``z/m²``
    the Gauss–Newton part of the observed information.

    >>> z = np.random.default_rng(0).poisson(4.0, (1, 21, 21))
    >>> g = fisher_blocks(None, np.array([[[10.0, 10.0]]]), np.array([8.0]), np.array([1.5]), np.array([1.0]),
    ...                   precision=(z - 4.0) ** 2 / 16.0)
    >>> bool(0.5 < g[0, 0, 0, 0] / f[0, 0, 0, 0] < 2.0)  # counts of the model itself: about the expected information
    True
    """
    n = np.shape(positions)[1]
    given = precision is not None
    return _window_blocks(np.ascontiguousarray(precision if given else mean, dtype=np.float64),
                          np.ascontiguousarray(positions, dtype=np.float64),
                          np.ascontiguousarray(np.asarray(height, np.float64).reshape(n, -1)),
                          np.ascontiguousarray(np.asarray(sigma, np.float64).reshape(n, -1)),
                          np.asarray(weight, np.float64), float(cutoff), _GIVEN if given else _FISHER)


@numba.njit(parallel=True, cache=True)
def _pair_blocks(precision, pos, height, sigma, weight, jac, first, second, cutoff):
    """``Σ_k J_kᵀ C_k J_k`` (fields, pairs, 3, 3) for atom pairs (first, second): ``C_k`` the pixel sum
    ``Σ_u w_k² ∇a_j ∇a_lᵀ · P(u)`` of projection k over the pixels both images reach, for each per-pixel
    weight ``P`` of ``precision`` (fields, t, ny, nx), with the same cut-offs as
    :func:`aetdask.kernels.atoms.gaussian_atoms.fisher_blocks`. The images' gradients are formed once for
    all the fields. Each Gaussian is the product of its row and column factors: a window of n² pixels
    needs 2n exponentials per atom, not n²."""
    nf, nt, ny, nx = precision.shape
    n_pairs = first.shape[0]
    nc = height.shape[1]
    span = _widest_window(sigma.ravel(), cutoff)
    out = np.zeros((nf, n_pairs, 3, 3))
    for q in numba.prange(n_pairs):
        atom = (first[q], second[q])
        reach = np.zeros(2)
        for side in range(2):
            for c in range(nc):
                reach[side] = max(reach[side], cutoff * sigma[atom[side], c])
        rows = np.empty((2, nc, span))
        cols = np.empty((2, nc, span))
        coef = np.empty((2, nc))
        cut2 = np.empty((2, nc))
        for side in range(2):
            for c in range(nc):
                s = sigma[atom[side], c]
                coef[side, c] = height[atom[side], c] / (s * s)
                cut2[side, c] = (cutoff * s) ** 2
        acc = np.zeros((nf, 3, 3))
        a = np.empty((nf, 4))
        for k in range(nt):
            ay, ax = pos[k, atom[0], 0], pos[k, atom[0], 1]
            by, bx = pos[k, atom[1], 0], pos[k, atom[1], 1]
            ra, rb = reach[0], reach[1]
            if (ay - by) ** 2 + (ax - bx) ** 2 > (ra + rb) ** 2:
                continue
            i0 = max(0, int(math.ceil(max(ay - ra, by - rb))))
            i1 = min(ny - 1, int(math.floor(min(ay + ra, by + rb))))
            j0 = max(0, int(math.ceil(max(ax - ra, bx - rb))))
            j1 = min(nx - 1, int(math.floor(min(ax + ra, bx + rb))))
            if i0 > i1 or j0 > j1:
                continue
            for side in range(2):
                py, px = pos[k, atom[side], 0], pos[k, atom[side], 1]
                for c in range(nc):
                    inv = 0.5 / (sigma[atom[side], c] ** 2)
                    for i in range(i0, i1 + 1):
                        rows[side, c, i - i0] = math.exp(-((i - py) ** 2) * inv)
                    for u in range(j0, j1 + 1):
                        cols[side, c, u - j0] = math.exp(-((u - px) ** 2) * inv)
            a[:] = 0.0
            w2 = weight[k] * weight[k]
            for i in range(i0, i1 + 1):
                dya = i - ay
                dyb = i - by
                for u in range(j0, j1 + 1):
                    dxa = u - ax
                    dxb = u - bx
                    d2a = dya * dya + dxa * dxa
                    d2b = dyb * dyb + dxb * dxb
                    if d2a > ra * ra or d2b > rb * rb:
                        continue
                    sa = 0.0
                    sb = 0.0
                    for c in range(nc):
                        if d2a <= cut2[0, c]:
                            sa += coef[0, c] * rows[0, c, i - i0] * cols[0, c, u - j0]
                        if d2b <= cut2[1, c]:
                            sb += coef[1, c] * rows[1, c, i - i0] * cols[1, c, u - j0]
                    g = w2 * sa * sb
                    for f in range(nf):
                        v = g * precision[f, k, i, u]
                        a[f, 0] += v * dya * dyb
                        a[f, 1] += v * dya * dxb
                        a[f, 2] += v * dxa * dyb
                        a[f, 3] += v * dxa * dxb
            for f in range(nf):
                for r in range(3):
                    for t in range(3):
                        acc[f, r, t] += (jac[k, 0, r] * (a[f, 0] * jac[k, 0, t] + a[f, 1] * jac[k, 1, t])
                                         + jac[k, 1, r] * (a[f, 2] * jac[k, 0, t] + a[f, 3] * jac[k, 1, t]))
        for f in range(nf):
            out[f, q] = acc[f]
    return out


def pair_information(mean, positions, height, sigma, weight, jacobian, pairs, cutoff: float = 4.0, *,
                     precision=None) -> np.ndarray:
    """The joint Fisher information of pairs of atoms about their 3-D positions, ``(pairs, 3, 3)``.

    Block ``(j, l)`` of ``F = Σ_k J_kᵀ [Σ_u w_k² ∇a_j ∇a_lᵀ / m_k(u)] J_k``, the off-diagonal
    companion of :func:`fisher_blocks` (whose pixel sums and cut-offs it repeats): ``mean``
    ``(t, ny, nx)`` the Poisson-scale mean, ``positions`` ``(t, n, 2)`` detector
    pixels (row, column), ``height`` and ``sigma`` ``(n, components)`` each atom's profile (px),
    ``weight`` ``(t,)``, ``jacobian`` ``(t, 2, 3)`` detector pixels per Å, ``pairs`` ``(p, 2)``;
    ``precision`` as in :func:`fisher_blocks` (a per-pixel weight in place of ``1/m``), or a stack of
    them ``(f, t, ny, nx)``: the sums for each, ``(f, pairs, 3, 3)``, for the cost of little more than one.

    Examples
    --------
    Two atoms far apart share no pixel, and no information; close, they share some:

    >>> jac = np.array([[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])  # detector (row, column) = (y, x)
    >>> pos = np.array([[[10.0, 8.0], [10.0, 11.0], [10.0, 30.0]]])
    >>> f = pair_information(np.ones((1, 21, 41)), pos, np.ones((3, 1)), np.ones((3, 1)), np.ones(1), jac,
    ...                      np.array([[0, 1], [0, 2]]))
    >>> bool(f[0, 0, 0] < 0), float(np.abs(f[1]).max())  # along their line, 3 widths apart: anticorrelated
    (True, 0.0)
    """
    n = np.shape(positions)[1]
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if precision is None:
        fields = 1.0 / np.maximum(np.asarray(mean, dtype=np.float64), 1e-12)
    else:
        fields = np.asarray(precision, dtype=np.float64)
    stacked = fields.ndim == 4
    out = _pair_blocks(np.ascontiguousarray(fields if stacked else fields[None]),
                       np.ascontiguousarray(positions, dtype=np.float64),
                       np.ascontiguousarray(np.asarray(height, np.float64).reshape(n, -1)),
                       np.ascontiguousarray(np.asarray(sigma, np.float64).reshape(n, -1)),
                       np.asarray(weight, np.float64), np.ascontiguousarray(jacobian, dtype=np.float64),
                       np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1]), float(cutoff))
    return out if stacked else out[0]


def curvature_blocks(residual, positions, height, sigma, weight, cutoff: float = 4.0) -> np.ndarray:
    """Each atom's residual-weighted second derivative of its image, per projection: ``(n_tilt, n_atom, 2, 2)``.

    ``Σ_u w_k ε(u) ∇_p∇_pᵀ a(u − p)`` for an atom that adds ``w_k a`` to projection k (``height``, ``sigma``
    as in :func:`likelihood_change`), ``residual`` ε ``(n_tilt, ny, nx)``. The observed information
    (the negative log-likelihood's curvature) of a position is the Gauss–Newton part
    (:func:`fisher_blocks` with ``precision = z/m²``) less this sum with ``ε = (z − m)/m``; for least
    squares, ``JᵀJ`` plus it with ``ε = model − data``. Its expectation is zero where the model is right.

    >>> c = curvature_blocks(np.ones((1, 41, 41)), np.array([[[20.0, 20.0]]]), np.array([1.0]), np.array([1.5]),
    ...                      np.array([1.0]), cutoff=8.0)
    >>> bool(np.abs(c).max() < 1e-9)  # a flat residual: a Gaussian's curvature sums to zero (the cut-off aside)
    True
    """
    n = np.shape(positions)[1]
    return _window_blocks(np.ascontiguousarray(residual, dtype=np.float64),
                          np.ascontiguousarray(positions, dtype=np.float64),
                          np.ascontiguousarray(np.asarray(height, np.float64).reshape(n, -1)),
                          np.ascontiguousarray(np.asarray(sigma, np.float64).reshape(n, -1)),
                          np.asarray(weight, np.float64), float(cutoff), _CURVATURE)
