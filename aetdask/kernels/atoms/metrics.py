"""Score a traced atomic model against a ground-truth model.

Two rules, both pure NumPy/SciPy on ``(n, 3)`` positions in Å with one element symbol per
atom:

* :func:`paper_match` reproduces the seed paper's ``Cal_RMSD`` exactly: each traced atom
  is matched to its nearest ground-truth atom of the same species within a cutoff (not
  one-to-one), and a global translation is re-estimated until stable. It gives the
  paper's identification rate and precision.
* :func:`strict_match` pairs atoms one-to-one (Hungarian assignment within the cutoff),
  so it also counts false positives and false negatives.

Every number in the returned ``"species"`` and ``"overall"`` entries is a plain Python
``int`` or ``float``, ready for ``json.dumps``.

References
----------
.. [1] Liao et al., Nature (2026), doi:10.1038/s41586-025-09857-4; evaluation script
   ``Cal_RMSD`` in github.com/AET-pAET/Supplementary-Data-Codes.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

__all__ = ["paper_match", "strict_match"]


def paper_match(traced, truth, traced_species, truth_species, cutoff, *, center=True,
                tolerance=1e-4, max_iterations=100):
    """Match traced atoms to ground truth with the seed paper's rule (``Cal_RMSD``).

    Each traced atom of species *s* is matched to the nearest ground-truth atom of species
    *s* if that atom lies within `cutoff`. The matching is not one-to-one: two traced atoms
    may share a truth atom, and unmatched traced atoms are not penalised. A global
    translation ``shift`` (added to `traced`) is re-estimated as the mean residual until it
    changes by less than `tolerance`.

    Parameters
    ----------
    traced, truth : array_like, shape (n, 3) and (m, 3)
        Atom positions in Å.
    traced_species, truth_species : array_like of str, length n and m
        Element symbol of every atom.
    cutoff : float
        Largest distance (Å, inclusive) at which a traced atom counts as matched.
    center : bool, optional
        Start from the shift that puts both centroids on top of each other
        (``centroid(truth) - centroid(traced)``); otherwise start from zero.
    tolerance : float, optional
        Stop when the shift moves by less than this (Å).
    max_iterations : int, optional
        Most re-estimations of the shift; 0 keeps the starting shift.

    Returns
    -------
    dict
        ``"species"``: ``{symbol: stats}`` and ``"overall"``: stats, where stats has
        ``truth``, ``traced`` and ``matched`` (atom counts: matched traced atoms),
        ``truth_matched`` (distinct truth atoms that some traced atom matched; ≤ truth),
        ``identification_pct`` (the paper's 100 · matched / truth; nan when truth is 0) and ``precision_pm``
        (100 · sqrt(Σ_axes var(diff, ddof=1)); nan with fewer than 2 matches).
        ``"shift"``: the final translation (list of 3 floats, Å); ``"iterations"``: how
        many re-estimations ran. Per traced atom: ``"matched_mask"`` (bool, n),
        ``"match_index"`` (int, n; index into `truth`, -1 if unmatched) and ``"diff"``
        (n, 3; ``truth[match] - (traced + shift)``, nan if unmatched).

    Notes
    -----
    Precision is an RMS about the mean residual, so any leftover offset does not count.
    The paper's identification can exceed 100 % when several traced atoms match one truth
    atom (a duplicated model scores 200 %); ``truth_matched / truth`` cannot, and is what
    :func:`aetdask.evaluate.evaluate` reports. :func:`strict_match` counts the extra traced
    atoms as false positives.

    Examples
    --------
    >>> truth = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    >>> traced = truth[:2] + [0.1, 0.0, 0.0]
    >>> result = paper_match(traced, truth, ["Si", "Si"], ["Si"] * 3, cutoff=1.0,
    ...                      center=False)
    >>> result["match_index"].tolist(), np.round(result["shift"], 6).tolist()
    ([0, 1], [-0.1, 0.0, 0.0])
    >>> round(result["overall"]["identification_pct"], 1)
    66.7
    """
    traced, truth, traced_species, truth_species = _validate(
        traced, truth, traced_species, truth_species, cutoff)
    if max_iterations < 0:
        raise ValueError(f"max_iterations must be >= 0, got {max_iterations}")

    # One tree per species, built once; `nearest(shift)` returns matched (traced, truth) pairs.
    groups = []
    for symbol in np.unique(traced_species):
        theirs = np.flatnonzero(truth_species == symbol)
        if theirs.size:
            groups.append((np.flatnonzero(traced_species == symbol), theirs,
                           cKDTree(truth[theirs])))

    def nearest(shift):
        index = np.full(len(traced), -1)
        for mine, theirs, tree in groups:
            distance, nn = tree.query(traced[mine] + shift)
            close = distance <= cutoff
            index[mine[close]] = theirs[nn[close]]
        return np.flatnonzero(index >= 0), index[index >= 0]

    shift = np.zeros(3)
    if center and len(traced) and len(truth):
        shift = truth.mean(axis=0) - traced.mean(axis=0)
    shift, iterations = _refine_shift(nearest, traced, truth, shift, tolerance, max_iterations)

    i, j = nearest(shift)
    match_index = np.full(len(traced), -1)
    match_index[i] = j
    diff = np.full((len(traced), 3), np.nan)
    diff[i] = truth[j] - (traced[i] + shift)

    def stats(in_traced, in_truth):
        n_truth, matched = int(in_truth.sum()), int((in_traced & (match_index >= 0)).sum())
        return {"truth": n_truth, "traced": int(in_traced.sum()), "matched": matched,
                "truth_matched": int(np.unique(match_index[in_traced & (match_index >= 0)]).size),
                "identification_pct": 100.0 * matched / n_truth if n_truth else float("nan"),
                "precision_pm": _precision_pm(diff[in_traced & (match_index >= 0)])}

    return {
        "species": {str(s): stats(traced_species == s, truth_species == s)
                    for s in _all_species(traced_species, truth_species)},
        "overall": stats(np.ones(len(traced), bool), np.ones(len(truth), bool)),
        "shift": [float(x) for x in shift],
        "iterations": iterations,
        "matched_mask": match_index >= 0,
        "match_index": match_index,
        "diff": diff,
    }


def strict_match(traced, truth, traced_species, truth_species, cutoff, *, shift=None,
                 iterations=10, tolerance=1e-4):
    """Pair traced and ground-truth atoms one-to-one within a cutoff, per species.

    Among all one-to-one pairings of same-species atoms closer than `cutoff`, take one
    with the most pairs and, among those, the least total distance (Hungarian assignment).
    Traced atoms left unpaired are false positives; truth atoms left unpaired are false
    negatives. The translation ``shift`` (added to `traced`) is re-estimated from the
    mean residual of the pairs, as in :func:`paper_match`.

    Parameters
    ----------
    traced, truth : array_like, shape (n, 3) and (m, 3)
        Atom positions in Å.
    traced_species, truth_species : array_like of str, length n and m
        Element symbol of every atom.
    cutoff : float
        Largest distance (Å, inclusive) between paired atoms.
    shift : array_like, shape (3,), optional
        Starting translation added to `traced` (default zeros), e.g. the ``"shift"`` of
        :func:`paper_match`.
    iterations : int, optional
        Most re-estimations of the shift; 0 keeps `shift` fixed.
    tolerance : float, optional
        Stop when the shift moves by less than this (Å).

    Returns
    -------
    dict
        ``"species"``: ``{symbol: stats}`` and ``"overall"``: stats, where stats has
        ``true_positives``, ``false_positives`` (unpaired traced atoms),
        ``false_negatives`` (unpaired truth atoms), ``precision_pm``
        (100 · sqrt(Σ_axes var(diff, ddof=1)); nan with fewer than 2 pairs) and
        ``rmsd_pm`` (100 · sqrt(mean |diff|²); nan without pairs), with
        ``diff = truth - (traced + shift)`` over the pairs.
        ``"shift"``: final translation (list of 3 floats, Å); ``"iterations"``: how many
        re-estimations ran; ``"pairs"``: int array (k, 2) of (traced index, truth index).

    Notes
    -----
    Only pairs within the cutoff are ever formed (``cKDTree.sparse_distance_matrix``).
    They split into connected components of the bipartite traced–truth graph, usually a
    single pair each; those are accepted directly and each larger component gets its own
    small dense :func:`scipy.optimize.linear_sum_assignment`, so no n × m matrix is built.
    A pair outside the cutoff costs more than any set of real pairs, which makes the
    assignment maximise the number of pairs first.

    Examples
    --------
    Two traced atoms near one truth atom: only the closer one is a true positive.

    >>> truth = np.array([[0.0, 0.0, 0.0]])
    >>> traced = np.array([[0.1, 0.0, 0.0], [0.0, 0.4, 0.0]])
    >>> result = strict_match(traced, truth, ["Si", "Si"], ["Si"], cutoff=1.0, iterations=0)
    >>> result["pairs"].tolist()
    [[0, 0]]
    >>> {k: result["overall"][k] for k in ("true_positives", "false_positives", "false_negatives")}
    {'true_positives': 1, 'false_positives': 1, 'false_negatives': 0}
    """
    traced, truth, traced_species, truth_species = _validate(
        traced, truth, traced_species, truth_species, cutoff)
    shift = np.zeros(3) if shift is None else np.asarray(shift, dtype=float)
    if shift.shape != (3,):
        raise ValueError(f"shift must have shape (3,), got {shift.shape}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")

    groups = [(np.flatnonzero(traced_species == s), np.flatnonzero(truth_species == s))
              for s in np.unique(traced_species)]

    def assign(shift):
        pairs = [np.empty((0, 2), int)]
        for mine, theirs in groups:
            local = _assign_within(traced[mine] + shift, truth[theirs], cutoff)
            pairs.append(np.column_stack([mine[local[:, 0]], theirs[local[:, 1]]]))
        pairs = np.concatenate(pairs)
        return pairs[:, 0], pairs[:, 1]

    shift, iterations = _refine_shift(assign, traced, truth, shift, tolerance, iterations)
    i, j = assign(shift)
    diff = truth[j] - (traced[i] + shift)

    def stats(symbol):
        in_pairs = slice(None) if symbol is None else traced_species[i] == symbol
        n_traced = len(traced) if symbol is None else int((traced_species == symbol).sum())
        n_truth = len(truth) if symbol is None else int((truth_species == symbol).sum())
        found = diff[in_pairs]
        return {"true_positives": len(found), "false_positives": n_traced - len(found),
                "false_negatives": n_truth - len(found),
                "precision_pm": _precision_pm(found), "rmsd_pm": _rmsd_pm(found)}

    return {
        "species": {str(s): stats(s) for s in _all_species(traced_species, truth_species)},
        "overall": stats(None),
        "shift": [float(x) for x in shift],
        "iterations": iterations,
        "pairs": np.column_stack([i, j]),
    }


def _assign_within(points, targets, cutoff):
    """One-to-one pairs (row into `points`, row into `targets`) within `cutoff`.

    Most pairs first, then least total distance; solved per connected component.
    """
    if len(points) == 0 or len(targets) == 0:
        return np.empty((0, 2), int)
    edges = cKDTree(points).sparse_distance_matrix(cKDTree(targets), cutoff,
                                                   output_type="ndarray")
    i, j, d = edges["i"], edges["j"], edges["v"]
    n = len(points)
    graph = coo_matrix((np.ones(len(i)), (i, n + j)), shape=(n + len(targets),) * 2)
    _, label = connected_components(graph, directed=False)
    component = label[i]
    lone = np.bincount(component)[component] == 1     # the only edge of its component
    pairs = [np.column_stack([i[lone], j[lone]])]

    order = np.argsort(component[~lone], kind="stable")
    ci, cj, cd, cc = (a[~lone][order] for a in (i, j, d, component))
    bounds = np.flatnonzero(np.diff(cc)) + 1
    for ei, ej, ed in zip(np.split(ci, bounds), np.split(cj, bounds), np.split(cd, bounds)):
        if ei.size == 0:
            continue
        rows, r = np.unique(ei, return_inverse=True)
        cols, c = np.unique(ej, return_inverse=True)
        # Costlier than any set of real pairs, so the assignment first maximises their number.
        cost = np.full((len(rows), len(cols)), 1.0 + cutoff * min(len(rows), len(cols)))
        cost[r, c] = ed
        a, b = linear_sum_assignment(cost)
        real = cost[a, b] <= cutoff
        pairs.append(np.column_stack([rows[a[real]], cols[b[real]]]))
    return np.concatenate(pairs)


def _refine_shift(pair_up, traced, truth, shift, tolerance, max_iterations):
    """Move `shift` by the mean residual of ``pair_up(shift)`` until the step < `tolerance`."""
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        i, j = pair_up(shift)
        if i.size == 0:
            break
        step = (truth[j] - (traced[i] + shift)).mean(axis=0)
        shift = shift + step
        if np.linalg.norm(step) < tolerance:
            break
    return shift, iterations


def _precision_pm(diff):
    """100 · sqrt(Σ_axes var(diff, ddof=1)): RMS spread about the mean residual, in pm."""
    if len(diff) < 2:
        return float("nan")
    return float(100.0 * np.sqrt(diff.var(axis=0, ddof=1).sum()))


def _rmsd_pm(diff):
    """100 · sqrt(mean |diff|²): RMS residual including any mean offset, in pm."""
    if len(diff) == 0:
        return float("nan")
    return float(100.0 * np.sqrt((diff ** 2).sum(axis=1).mean()))


def _all_species(traced_species, truth_species):
    return sorted(set(traced_species.tolist()) | set(truth_species.tolist()))


def _validate(traced, truth, traced_species, truth_species, cutoff):
    """Check shapes and the cutoff; return float positions and str species arrays."""
    positions = {}
    for name, value in (("traced", traced), ("truth", truth)):
        value = np.asarray(value, dtype=float)
        if value.ndim != 2 or value.shape[1] != 3:
            raise ValueError(f"{name} must have shape (n, 3), got {value.shape}")
        if not np.isfinite(value).all():
            raise ValueError(f"{name} contains non-finite positions")
        positions[name] = value
    species = {}
    for name, value, n in (("traced_species", traced_species, len(positions["traced"])),
                           ("truth_species", truth_species, len(positions["truth"]))):
        value = np.asarray(value).astype(str)
        if value.shape != (n,):
            raise ValueError(f"{name} must be 1-D with one symbol per atom ({n}), "
                             f"got shape {value.shape}")
        species[name] = value
    try:
        good = 0 < float(cutoff) < np.inf
    except (TypeError, ValueError):
        good = False
    if not good:
        raise ValueError(f"cutoff must be a positive finite number (Å), got {cutoff!r}")
    return positions["traced"], positions["truth"], species["traced_species"], \
        species["truth_species"]
