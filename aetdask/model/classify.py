"""Classification of atom candidates: K-means on their integrated intensity."""

from __future__ import annotations

import numpy as np
import xarray as xr
from sklearn.cluster import KMeans

from aetdask import config
from aetdask.errors import InputError
from aetdask.schema import atomic_number, atoms, normalize_species, provenance_record, validate_atoms


def _kmeans(values, k, seed, init=None):
    x = np.asarray(values, dtype=float)[:, None]
    if init is None:
        km = KMeans(n_clusters=k, n_init=10, random_state=seed)
    else:
        km = KMeans(n_clusters=k, init=np.asarray(init, float)[:, None], n_init=1, random_state=seed)
    labels = km.fit_predict(x)
    order = np.argsort(km.cluster_centers_[:, 0])
    rank = np.empty(k, dtype=int)
    rank[order] = np.arange(k)
    return rank[labels], km.cluster_centers_[order, 0]


def classify(candidates: xr.Dataset, species=None, *, seed: int | None = None, passes: int | None = None,
             noise_classes: int | None = None) -> xr.Dataset:
    """Assign species to atom candidates and drop the non-atoms.

    K-means (``k`` = species + non-atom classes, fixed seed) on the candidates'
    integrated intensity: the faintest classes are "non-atom" (noise maxima),
    the others are the species in order of atomic number (heavier atoms scatter
    more). Non-atoms are many and heavy-tailed — a crowd of faint maxima and a
    tail of ghost peaks reaching towards the atoms — and one K-means class for
    them puts its boundary half-way between the crowd and the atoms, deep in
    the tail; two classes (the default) let the tail have its own centre, which
    keeps low-dose ghosts out. ``noise_classes=1`` is the seed paper's scheme. A tail
    class whose centre lies nearer the faintest atom class than the non-atom crowd
    is one species split in two (clean data whose non-atoms are all faint): it is
    given back to the atoms (one non-atom class fewer; ``noise_classes`` in the
    provenance is the number used). With
    ``passes`` > 1 the atom classes are re-clustered among the atoms alone,
    started from the previous centres, which sharpens the boundaries between
    species once the non-atoms are out (the multi-pass scheme for three species).

    Parameters
    ----------
    candidates : xr.Dataset
        The ``candidates`` product of :func:`aetdask.model.trace.trace`.
    species : list of str, optional
        The elements (default: those recorded by tracing).
    seed, passes
        None = ``aetdask.classify.*`` configuration.

    Returns
    -------
    xr.Dataset
        The atoms, with ``species``, ``intensity`` and ``peak``; the class
        centres and the intensity boundaries between classes in the provenance.

    Examples
    --------
    >>> from aetdask.schema import atoms
    >>> cand = atoms(np.arange(21.0).reshape(7, 3), ["Si"] * 7, intensity=[0.05, 5.0, 0.1, 5.2, 0.2, 1.1, 4.9])
    >>> classify(cand, ["Si"]).intensity.values.tolist()
    [5.0, 5.2, 4.9]
    """
    validate_atoms(candidates, source="candidates")
    if "intensity" not in candidates:
        raise InputError("candidates: variable 'intensity' is missing (trace the volume first)")
    names = species if species is not None else candidates.attrs.get("species")
    if names is None:
        raise InputError("species: not given and not recorded on the candidates")
    names = normalize_species(np.atleast_1d(names))
    names = names[np.argsort(atomic_number(names), kind="stable")]
    seed = int(config.get("classify.seed", seed))
    passes = int(config.get("classify.passes", passes))
    noise = int(config.get("classify.noise_classes", noise_classes))
    if noise < 1:
        raise InputError(f"noise_classes: expected at least 1, got {noise}")
    intensity = np.asarray(candidates.intensity.values, dtype=float)
    k = len(names) + noise
    if len(intensity) < k:
        raise InputError(f"candidates: {len(intensity)} candidates cannot be split into {k} classes")
    labels, centers = _kmeans(intensity, k, seed)
    while noise > 1 and centers[noise - 1] - centers[noise - 2] > centers[noise] - centers[noise - 1]:
        # the "tail" class lies nearer the faintest atoms than the crowd of non-atoms: it is not a
        # tail of ghost peaks but one species split in two (clean, high-dose data whose non-atoms
        # are all faint); one class fewer for the non-atoms
        noise -= 1
        k -= 1
        labels, centers = _kmeans(intensity, k, seed)
    labels = np.maximum(labels - (noise - 1), 0)  # 0: non-atom, 1…: species
    centers = np.concatenate([[centers[:noise].mean()], centers[noise:]])
    for _ in range(max(passes, 1) - 1):
        if len(names) == 1:
            break
        is_atom = labels > 0
        sub, sub_centers = _kmeans(intensity[is_atom], len(names), seed, init=centers[1:])
        labels = np.zeros_like(labels)
        labels[is_atom] = sub + 1
        centers = np.concatenate([[centers[0]], sub_centers])
    keep = labels > 0
    boundaries = [float(0.5 * (intensity[labels == c].max() + intensity[labels == c + 1].min()))
                  for c in range(len(names)) if np.any(labels == c) and np.any(labels == c + 1)]
    out = atoms(candidates.position.values[keep], names[labels[keep] - 1], intensity=intensity[keep],
                provenance=list(candidates.attrs.get("provenance", [])))
    if "peak" in candidates:
        out["peak"] = ("atom", candidates.peak.values[keep])
    counts = {str(s): int(np.sum(labels[keep] - 1 == i)) for i, s in enumerate(names)}
    out.attrs["provenance"] = out.attrs["provenance"] + [provenance_record("classify", {
        "method": "kmeans", "seed": seed, "passes": passes, "noise_classes": noise, "classes": ["non-atom"] + names.tolist(),
        "centers": centers.tolist(), "boundaries": boundaries, "counts": counts,
        "non_atoms": int(np.sum(~keep)), "candidates": len(intensity),
    }, inputs=[f"candidates ({len(intensity)})"])]
    return out
