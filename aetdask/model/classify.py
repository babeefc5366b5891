"""Classification of atom candidates on their integrated intensity: K-means (the paper) or a mixture with posteriors."""

from __future__ import annotations

import numpy as np
import xarray as xr
from sklearn.cluster import KMeans

from aetdask import config, physics
from aetdask.errors import InputError
from aetdask.kernels.atoms import mixture
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


def _kmeans_classes(intensity, n_species, noise, seed):
    """K-means with ``noise`` non-atom classes; (labels 0…noise-1 non-atom, noise… species; centres; noise used)."""
    k = n_species + noise
    labels, centers = _kmeans(intensity, k, seed)
    while noise > 1 and centers[noise - 1] - centers[noise - 2] > centers[noise] - centers[noise - 1]:
        # the "tail" class lies nearer the faintest atoms than the crowd of non-atoms: it is not a
        # tail of ghost peaks but one species split in two (clean, high-dose data whose non-atoms
        # are all faint); one class fewer for the non-atoms
        noise -= 1
        k -= 1
        labels, centers = _kmeans(intensity, k, seed)
    return labels, centers, noise


def _noise_centers(fitted):
    m, v = np.asarray(fitted["noise_means"]), np.asarray(fitted["noise_vars"])
    return np.exp(m + v / 2) if fitted["noise_model"] == "lognormal" else m


def _physics_ratios(candidates, names, energy=None, detector=None):
    """The species' ADF cross-sections relative to the lightest one, at the data's energy and detector.

    The energy and detector are those given, else the ``aetdask.classify.*`` ones the user set,
    else those recorded in the data's provenance (a simulation records them), else the defaults.
    """
    for key in ("energy", "detector"):
        if (energy if key == "energy" else detector) is None and not config.explicit(f"classify.{key}"):
            for rec in reversed(list(candidates.attrs.get("provenance", []))):
                p = rec.get("params", {}) if isinstance(rec, dict) else {}
                if p.get("energy") is not None and p.get("detector") is not None:
                    energy, detector = (p["energy"], detector) if key == "energy" else (energy, p["detector"])
                    break
    energy = float(config.get("classify.energy", energy))
    detector = [float(d) for d in config.get("classify.detector", detector)]
    sigma = np.array([physics.adf_cross_section(str(s), energy, detector) for s in names])
    return sigma / sigma[0], energy, detector


def _fit(candidates, species, method, seed, passes, noise_classes, noise_model, tied_means, energy, detector) -> dict:
    """The classes of every candidate: hard labels (0 non-atom, 1… species), posteriors, centres, record."""
    validate_atoms(candidates, source="candidates")
    if "intensity" not in candidates:
        raise InputError("candidates: variable 'intensity' is missing (trace the volume first)")
    names = species if species is not None else candidates.attrs.get("species")
    if names is None:
        raise InputError("species: not given and not recorded on the candidates")
    names = normalize_species(np.atleast_1d(names))
    names = names[np.argsort(atomic_number(names), kind="stable")]
    method = str(config.get("classify.method", method))
    if method not in ("kmeans", "mixture"):
        raise InputError(f"classify.method: expected 'kmeans' or 'mixture', got {method!r}")
    seed = int(config.get("classify.seed", seed))
    passes = int(config.get("classify.passes", passes))
    noise = int(config.get("classify.noise_classes", noise_classes))
    if noise < 1:
        raise InputError(f"noise_classes: expected at least 1, got {noise}")
    intensity = np.asarray(candidates.intensity.values, dtype=float)
    if len(intensity) < len(names) + noise:
        raise InputError(f"candidates: {len(intensity)} candidates cannot be split into {len(names) + noise} classes")
    raw, centers, noise = _kmeans_classes(intensity, len(names), noise, seed)
    labels = np.maximum(raw - (noise - 1), 0)  # 0: non-atom, 1…: species
    centers = np.concatenate([[centers[:noise].mean()], centers[noise:]])
    for _ in range(max(passes, 1) - 1):
        if len(names) == 1:
            break
        is_atom = labels > 0
        sub, sub_centers = _kmeans(intensity[is_atom], len(names), seed, init=centers[1:])
        labels = np.zeros_like(labels)
        labels[is_atom] = sub + 1
        centers = np.concatenate([[centers[0]], sub_centers])
    extra = {"passes": passes}
    if method == "kmeans":
        prob = np.eye(len(names) + 1)[labels]  # hard: all of the probability on the K-means class
    else:
        ratios, energy, detector = _physics_ratios(candidates, names, energy, detector)
        noise_model = str(config.get("classify.noise_model", noise_model))
        tied = bool(config.get("classify.tied_means", tied_means))
        # starts: every K-means centre taken as each species' mean; the fit of highest likelihood wins
        k_centers = np.array([intensity[raw == c].mean() for c in np.unique(raw)])
        fitted, iterations, starts = mixture.fit_best(intensity, ratios, (k_centers[:, None] / ratios[None, :]).ravel(),
                                                      noise, noise_model=noise_model, tied=tied,
                                                      hard_start=np.where(labels > 0, labels + noise - 1, raw))
        prob, _ = mixture.posteriors(intensity, fitted)
        labels = np.argmax(prob, axis=1)
        centers = np.concatenate([[float(np.dot(fitted["noise_weights"], _noise_centers(fitted))
                                         / np.sum(fitted["noise_weights"]))], fitted["species_means"]])
        extra = {"noise_model": noise_model, "tied_means": tied, "means": "tied" if fitted["tied"] else "free",
                 "energy": energy, "detector": detector,
                 "ratios": ratios.tolist(), "scale": fitted["scale"], "iterations": iterations, "starts": starts,
                 "log_likelihood": fitted["log_likelihood"],
                 "species_weights": fitted["species_weights"], "species_sd": np.sqrt(fitted["species_vars"]).tolist(),
                 "noise_weights": fitted["noise_weights"], "noise_means": fitted["noise_means"],
                 "noise_sd": np.sqrt(fitted["noise_vars"]).tolist()}
    return {"names": names, "intensity": intensity, "labels": labels, "prob": prob, "centers": centers,
            "method": method, "seed": seed, "noise": noise, "extra": extra}


def class_probabilities(candidates: xr.Dataset, species=None, **options) -> xr.DataArray:
    """Posterior probability of "non-atom" and of each species for every candidate, ``(atom, class)``.

    The classification :func:`classify` makes (same ``options``), before the non-atoms are dropped:
    how sure it is of what it threw away.
    """
    fit = _fit(candidates, species, *(options.get(k) for k in ("method", "seed", "passes", "noise_classes",
                                                                "noise_model", "tied_means", "energy", "detector")))
    return xr.DataArray(fit["prob"], dims=("atom", "class"), coords={"class": ["non-atom"] + fit["names"].tolist()},
                        attrs={"units": "1", "description": "posterior probability of each class"})


def classify(candidates: xr.Dataset, species=None, *, method: str | None = None, seed: int | None = None,
             passes: int | None = None, noise_classes: int | None = None, noise_model: str | None = None,
             tied_means: bool | None = None, energy: float | None = None, detector=None) -> xr.Dataset:
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

    ``method="mixture"`` models the intensities instead as a mixture
    (:mod:`aetdask.kernels.atoms.mixture`): ``noise_classes`` log-normal (or Gaussian,
    ``noise_model``) non-atom components and one Gaussian per species whose means
    are one fitted scale × the species' ADF cross-sections relative to each other
    (:func:`aetdask.physics.adf_cross_section` at the data's energy and detector:
    those recorded in the provenance, else ``classify.energy`` / ``classify.detector``).
    The scale is started from every K-means centre taken as every species' mean, the
    best start (likelihood) fitted to convergence by EM; unless ``tied_means``, means
    free of the physics (freed from that fit, or started from the K-means classes)
    replace it where the Bayesian information criterion prefers them. Every atom gets
    its posterior probability of each class (``species_probability``); its species
    is the most probable class. K-means gives hard probabilities (0 or 1). The
    result is deterministic for a ``seed``.

    Parameters
    ----------
    candidates : xr.Dataset
        The ``candidates`` product of :func:`aetdask.model.trace.trace`.
    species : list of str, optional
        The elements (default: those recorded by tracing).
    method : "kmeans" or "mixture"
    seed, passes, noise_classes, noise_model, tied_means, energy, detector
        None = ``aetdask.classify.*`` configuration.

    Returns
    -------
    xr.Dataset
        The atoms, with ``species``, ``intensity``, ``peak`` and
        ``species_probability (atom, class)``; the class centres, the intensity
        boundaries between classes, the fitted mixture and the expected number of
        wrong labels (Σ 1 − max posterior) in the provenance.

    Examples
    --------
    >>> from aetdask.schema import atoms
    >>> cand = atoms(np.arange(21.0).reshape(7, 3), ["Si"] * 7, intensity=[0.05, 5.0, 0.1, 5.2, 0.2, 1.1, 4.9])
    >>> classify(cand, ["Si"]).intensity.values.tolist()
    [5.0, 5.2, 4.9]
    """
    fit = _fit(candidates, species, method, seed, passes, noise_classes, noise_model, tied_means, energy, detector)
    names, intensity, labels, prob, centers, method = (fit[k] for k in ("names", "intensity", "labels", "prob",
                                                                         "centers", "method"))
    keep = labels > 0
    boundaries = [float(0.5 * (intensity[labels == c].max() + intensity[labels == c + 1].min()))
                  for c in range(len(names)) if np.any(labels == c) and np.any(labels == c + 1)]
    out = atoms(candidates.position.values[keep], names[labels[keep] - 1], intensity=intensity[keep],
                provenance=list(candidates.attrs.get("provenance", [])))
    if "peak" in candidates:
        out["peak"] = ("atom", candidates.peak.values[keep])
    classes = ["non-atom"] + names.tolist()
    out["species_probability"] = xr.DataArray(
        prob[keep], dims=("atom", "class"), coords={"class": classes},
        attrs={"units": "1", "description": f"posterior probability of each class ({method}"
               + (", the mixture of the intensities" if method == "mixture" else ", hard: 1 for the K-means class")
               + "); the species is the most probable class"})
    certain = prob[keep].max(axis=1) if keep.any() else np.zeros(0)
    counts = {str(s): int(np.sum(labels[keep] - 1 == i)) for i, s in enumerate(names)}
    out.attrs["provenance"] = out.attrs["provenance"] + [provenance_record("classify", {
        "method": method, "seed": fit["seed"], "noise_classes": fit["noise"], "classes": classes,
        "centers": np.asarray(centers, float).tolist(), "boundaries": boundaries, "counts": counts,
        "non_atoms": int(np.sum(~keep)), "candidates": len(intensity),
        "uncertain": int(np.sum(certain < 0.9)), "expected_errors": float(np.sum(1 - certain)),
        "expected_missed": float(np.sum(1 - prob[~keep, 0])), **fit["extra"],
    }, inputs=[f"candidates ({len(intensity)})"])]
    return out
