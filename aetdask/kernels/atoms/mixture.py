"""A mixture model of atom-candidate intensities: species components tied to physics, a heavy-tailed non-atom part.

Pure NumPy. The intensities ``x`` of the candidates traced in a volume are
modelled as

    p(x) = Σ_j w_j N_j(x)  +  Σ_i π_i N(x; μ_i, v_i)

with ``J`` non-atom components ``N_j`` (noise maxima: a crowd of faint peaks and
a tail of ghost peaks; log-normal or Gaussian) and one Gaussian per species
``i``. With ``tied=True`` the species means are ``μ_i = s · r_i``: the ratios
``r_i`` are given (the species' ADF cross-sections relative to each other), one
scale ``s`` is fitted — the scale of a reconstruction is arbitrary. With
``tied=False`` the means are free (started from the tied fit). The fit is
expectation–maximisation from a given start, so it is deterministic.
"""

from __future__ import annotations

import numpy as np

_LOG2PI = np.log(2 * np.pi)
#: Narrowest a species' intensity distribution may become, relative to its mean (keeps EM off a
#: degenerate spike on a few equal values)
_MIN_REL_WIDTH = 0.01


def logsumexp(a, axis=1, keepdims=True):
    """log Σ exp(a) along ``axis``, stable (a plain NumPy one: the EM calls it thousands of times)."""
    m = np.max(a, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def log_normal_pdf(x, mean, var):
    """log N(x; mean, var), elementwise."""
    return -0.5 * (_LOG2PI + np.log(var) + (x - mean) ** 2 / var)


def _log_x(x):
    """log x on x > 0; a candidate with x ≤ 0 (a non-atom) takes the smallest positive value's log."""
    pos = x > 0
    floor = x[pos].min() if np.any(pos) else 1.0
    return np.log(np.where(pos, x, floor))


def _noise_logpdf(x, ly, kind, mean, var):
    if kind == "gaussian":
        return log_normal_pdf(x, mean, var)
    return log_normal_pdf(ly, mean, var) - ly  # log-normal density of x


def log_densities(x, params, ly=None):
    """log (weight × density) of every component, shape (n, J + S): non-atom components first."""
    x = np.asarray(x, dtype=float)
    ly = _log_x(x) if ly is None and params["noise_model"] == "lognormal" else ly
    cols = [np.log(w) + _noise_logpdf(x, ly, params["noise_model"], m, v)
            for w, m, v in zip(params["noise_weights"], params["noise_means"], params["noise_vars"])]
    cols += [np.log(w) + log_normal_pdf(x, m, v)
             for w, m, v in zip(params["species_weights"], params["species_means"], params["species_vars"])]
    return np.stack(cols, axis=1)


def posteriors(x, params):
    """Posterior probability of "non-atom" (column 0) and of each species (columns 1…), and the log-likelihood."""
    lp = log_densities(x, params)
    norm = logsumexp(lp, axis=1, keepdims=True)
    r = np.exp(lp - norm)
    j = len(params["noise_weights"])
    return np.column_stack([r[:, :j].sum(axis=1), r[:, j:]]), float(norm.sum())


def _noise_moments(x, g, kind, ly=None):
    """Weighted mean and variance of the non-atom component's variable (x, or log x on x > 0)."""
    if kind == "lognormal":
        pos = x > 0
        y = (np.log(x[pos]) if ly is None else ly[pos])
        g = g[pos]
    else:
        y = x
    tot = g.sum()
    if tot <= 1e-12:
        return None
    m = float(np.sum(g * y) / tot)
    v = float(np.sum(g * (y - m) ** 2) / tot)
    return m, v


def fit(x, ratios, noise_labels, atom_scale, *, noise_model="lognormal", tied=True, max_iter=500,
        tol=1e-8, start=None, n_noise=None):
    """Fit the mixture by EM from a start; return its parameters (a dict) and the number of iterations.

    Parameters
    ----------
    x : (n,) array
        Candidate intensities.
    ratios : (S,) array
        Species' relative brightness, ascending (tied means are ``scale × ratios``).
    noise_labels : (n,) int array
        Start: -1 for candidates taken as atoms (each starts in the species of the nearest tied mean),
        0…J-1 for the non-atom component they start in; with ``n_noise`` = J given, J… for the species
        they start in (a start with free means: a hard classification, e.g. K-means).
    atom_scale : float
        Start of the scale ``s``.
    start : dict, optional
        Parameters to continue from (then ``noise_labels`` and ``atom_scale`` are not used).
    noise_model : "lognormal" or "gaussian"
        Shape of the non-atom components.
    tied : bool
        Species means tied to ``scale × ratios`` (else free, started from the tied fit).

    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.exponential(0.3, 300), rng.normal(4, 0.3, 50), rng.normal(8, 0.5, 50)])
    >>> start = np.where(x > 2, -1, 0)
    >>> p, _ = fit(x, [1.0, 2.0], start, 4.0)
    >>> round(p["scale"], 1), bool((posteriors(x, p)[0].argmax(1) == np.r_[[0] * 300, [1] * 50, [2] * 50]).all())
    (4.0, True)
    """
    x = np.asarray(x, dtype=float)
    r = np.asarray(ratios, dtype=float)
    n, S = len(x), len(r)
    if start is not None:
        params = dict(start)
        J = len(params["noise_weights"])
    else:
        labels = np.asarray(noise_labels, dtype=int)
        J = int(n_noise) if n_noise is not None else (int(labels.max()) + 1 if np.any(labels >= 0) else 1)
        s = float(atom_scale)
        # start: non-atom components from their start members; species from the nearest tied mean
        g = np.zeros((n, J + S))
        for j in range(J + S):
            g[labels == j, j] = 1.0
        atom = labels < 0
        if np.any(atom):
            near = np.argmin(np.abs(np.log(np.maximum(x[atom], 1e-12))[:, None] - np.log(s * r)[None, :]), axis=1)
            g[np.flatnonzero(atom), J + near] = 1.0
        params = _m_step(x, g, r, s, J, S, noise_model, tied=n_noise is None, init=True)
    ly = _log_x(x)
    it = 0
    for stage_tied in ([True] if tied else ([True, False] if n_noise is None and start is None else [False])):
        last = -np.inf
        for it in range(1, max_iter + 1):
            lp = log_densities(x, params, ly)
            norm = logsumexp(lp, axis=1, keepdims=True)
            ll = float(norm.sum())
            g = np.exp(lp - norm)
            params = _m_step(x, g, r, params["scale"], J, S, noise_model, tied=stage_tied, prev=params, ly=ly)
            if ll - last < tol * max(abs(ll), 1.0):
                break
            last = ll
    params["log_likelihood"] = posteriors(x, params)[1]
    params["tied"] = bool(tied)
    params["iterations"] = it
    return params, it


def _m_step(x, g, r, s, J, S, noise_model, *, tied, init=False, prev=None, ly=None):
    n = len(x)
    nk = g.sum(axis=0) + 1e-12
    weights = nk / nk.sum()
    weights = np.maximum(weights, 1e-10 / max(n, 1))
    weights = weights / weights.sum()
    noise_m, noise_v = [], []
    spread = float(np.var(x)) + 1e-12
    for j in range(J):
        mom = _noise_moments(x, g[:, j], noise_model, ly)
        if mom is None:  # an empty component keeps its previous shape (or a wide one)
            mom = ((prev["noise_means"][j], prev["noise_vars"][j]) if prev is not None
                   else (0.0, 1.0 if noise_model == "lognormal" else spread))
        m, v = mom
        noise_m.append(m)
        noise_v.append(max(v, 1e-6 if noise_model == "lognormal" else 1e-6 * spread))
    gs = g[:, J:]
    if tied:
        if init or prev is None:
            var = np.array([max(np.sum(gs[:, i] * (x - s * r[i]) ** 2) / nk[J + i], (0.1 * s * r[i]) ** 2)
                            if nk[J + i] > 1 else (0.1 * s * r[i]) ** 2 for i in range(S)])
        else:
            var = np.asarray(prev["species_vars"], float)
        # scale that maximises the likelihood at the current variances (closed form)
        s = float(np.sum(gs * x[:, None] * (r / var)[None, :]) / max(np.sum(nk[J:] * r**2 / var), 1e-300))
        means = s * r
    else:
        means = np.array([np.sum(gs[:, i] * x) / nk[J + i] if nk[J + i] > 1
                          else (prev["species_means"][i] if prev is not None else s * r[i]) for i in range(S)])
    var = np.array([np.sum(gs[:, i] * (x - means[i]) ** 2) / nk[J + i] if nk[J + i] > 1
                    else (prev["species_vars"][i] if prev is not None else (0.1 * means[i]) ** 2) for i in range(S)])
    var = np.maximum(var, (_MIN_REL_WIDTH * np.abs(means)) ** 2 + 1e-300)
    return {
        "noise_model": noise_model,
        "noise_weights": weights[:J].tolist(), "noise_means": noise_m, "noise_vars": noise_v,
        "species_weights": weights[J:].tolist(), "species_means": means.tolist(), "species_vars": var.tolist(),
        "scale": float(s),
    }


def noise_start(x, scale, ratio0, n_noise):
    """Start labels for a scale: candidates below half the faintest species' mean are non-atoms, split by
    intensity into ``n_noise`` groups of equal count; the others -1 (atoms)."""
    x = np.asarray(x, dtype=float)
    labels = np.full(len(x), -1)
    low = np.flatnonzero(x < 0.5 * scale * ratio0)
    if low.size < n_noise:  # keep every non-atom component started on at least one candidate
        low = np.argsort(x)[:n_noise]
    order = low[np.argsort(x[low], kind="stable")]
    for j, part in enumerate(np.array_split(order, n_noise)):
        labels[part] = j
    return labels


def fit_best(x, ratios, scales, n_noise, *, noise_model="lognormal", tied=True, short=50, hard_start=None):
    """EM from every start scale (duplicates within 5 % dropped), ``short`` iterations each; the best one
    (highest likelihood) continued to convergence.

    With ``tied=False`` two fits with free means compete with the tied one — freed from it, and started
    from ``hard_start`` (labels: 0…n_noise-1 non-atom components, n_noise… species) — by the Bayesian
    information criterion, among those that keep the species in order of brightness.

    Returns (parameters, iterations, number of starts).

    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.exponential(0.3, 300), rng.normal(4, 0.3, 50), rng.normal(8, 0.5, 50)])
    >>> p, _, _ = fit_best(x, [1.0, 2.0], [0.5, 4.0, 8.0, 16.0], 2)
    >>> round(p["scale"], 1)
    4.0
    """
    x = np.asarray(x, dtype=float)
    r = np.asarray(ratios, dtype=float)
    kept = []
    for sc in sorted(float(v) for v in scales if np.isfinite(v) and v > 0):
        if not kept or sc > 1.05 * kept[-1]:
            kept.append(sc)
    best = None
    for sc in kept:  # a short run from every start…
        params, it = fit(x, r, noise_start(x, sc, r[0], n_noise), sc, noise_model=noise_model, tied=True,
                         max_iter=short)
        if best is None or params["log_likelihood"] > best[0]["log_likelihood"] + 1e-9:
            best = (params, it)
    # …and the best one to convergence
    tied_fit, it = fit(x, r, None, None, noise_model=noise_model, tied=True, start=best[0])
    fits = [(tied_fit, best[1] + it)]
    if not tied:
        # free means: from the tied fit, and from a hard classification; kept where the species stay in
        # order and the extra S - 1 parameters pay for themselves (Bayesian information criterion)
        fits.append(fit(x, r, None, None, noise_model=noise_model, tied=False, start=tied_fit))
        if hard_start is not None:
            fits.append(fit(x, r, hard_start, 1.0, noise_model=noise_model, tied=False, n_noise=n_noise))
    penalty = [0.0] + [0.5 * (len(r) - 1) * np.log(len(x))] * (len(fits) - 1)
    score = [f[0]["log_likelihood"] - pen if np.all(np.diff(f[0]["species_means"]) > 0) else -np.inf
             for f, pen in zip(fits, penalty)]
    pick = int(np.argmax(score)) if np.isfinite(max(score)) else 0
    best = fits[pick]
    best[0]["tied"] = pick == 0
    return best[0], best[1], len(kept)
