"""Projection matching: shifts of a single-axis tilt series against reprojections of the object.

The centre of mass and the common line (:mod:`aetdask.kernels.preprocessing.align`) use the
whole field, whose background noise reaches them with the lever arm of its distance from the
centre: on a photon-starved series they are good to about a pixel. Registering each projection
to what the object, reconstructed from the series, projects at its angle uses the particle's own
structure and is limited only by the projection's photon noise (a tenth of a pixel or two).

:func:`projection_matching` iterates: shift the projections by the current estimate, reconstruct
the object (a callable, supplied by the caller: this domain does not reconstruct), reproject it,
register every projection to its reprojection (:func:`register_to_reference`), update. Each
projection is matched to a reconstruction from the *other* folds of the series (interleaved
folds ``k::folds``): a reconstruction that contains the projection itself reproduces part of its
misalignment and of its noise, and would pull every correction towards where it already is.

A rigid translation of the object cannot be told from the data (it moves every projection in a
fixed pattern, ``basis``); it is removed from every update, and each fold's own rigid offset is
corrected by ``(folds − 1) / folds`` of what it measures: its reference sits at the mean of the
other folds' frames, so taking all of it would swap the folds' offsets (with two folds) instead
of averaging them.

All functions take NumPy arrays; shifts follow
:func:`aetdask.kernels.preprocessing.shift.fourier_shift` (what to apply to an image to align it).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from aetdask.kernels.preprocessing.align import register
from aetdask.kernels.preprocessing.shift import fourier_shift

__all__ = ["register_to_reference", "projection_matching"]


def register_to_reference(reference, image, variance, smooth=1.0, upsample=20):
    """Sub-pixel shift ``(dy, dx)`` that moves ``image`` onto ``reference``, and its standard errors.

    Both images are smoothed by a Gaussian of ``smooth`` px (the finest detail of a
    reconstruction's reprojection is its noise and its sampling artefacts, not the object's),
    then registered by plain cross-correlation (:func:`aetdask.kernels.preprocessing.align.register`).
    The errors are those of that estimator to first order: with template ``T`` (the twice-smoothed
    reference) the shift error along an axis is ``Σ ∂T² · var / (Σ ∂T · ∂ref)²``, ``var`` the pixel
    variance of ``image`` (its photon noise).

    Examples
    --------
    >>> yy, xx = np.mgrid[:32, :32]
    >>> ref = np.exp(-((yy - 15) ** 2 + (xx - 17) ** 2) / 6.0)
    >>> moved = fourier_shift(ref[None], np.array([[1.3, -2.4]]))[0]
    >>> shift, error = register_to_reference(ref, moved, np.full((32, 32), 1e-6))
    >>> [round(float(v), 2) for v in shift], bool(np.all(error < 1e-2))
    ([-1.3, 2.4], True)
    """
    ref = np.asarray(reference, dtype=np.float64)
    img = np.asarray(image, dtype=np.float64)
    if smooth > 0:
        a = ndimage.gaussian_filter(ref, smooth, mode="wrap")
        b = ndimage.gaussian_filter(img, smooth, mode="wrap")
        template = ndimage.gaussian_filter(a, smooth, mode="wrap")
    else:
        a, b, template = ref, img, ref
    shift = register(a, b, upsample)
    var = np.asarray(variance, dtype=np.float64)
    errors = []
    for axis in (0, 1):
        dt = np.gradient(template, axis=axis)
        dr = np.gradient(ref, axis=axis)
        gain = float(np.sum(dt * dr))
        errors.append(np.sqrt(float(np.sum(dt**2 * var))) / abs(gain) if gain else np.inf)
    return np.array(shift), np.array(errors)


def _fold_offsets(d, basis, folds):
    """Each fold's least-squares rigid component of ``d`` (n, 2) along ``basis`` (n, 2, p), with (n, 2) layout."""
    out = np.zeros_like(d)
    n = len(d)
    for f in range(folds):
        idx = np.arange(f, n, folds)
        b = basis[idx].reshape(-1, basis.shape[-1])
        coef = np.linalg.lstsq(b, d[idx].reshape(-1), rcond=None)[0]
        out[idx] = basis[idx] @ coef
    return out


def _without(d, basis):
    b = basis.reshape(-1, basis.shape[-1])
    coef = np.linalg.lstsq(b, d.reshape(-1), rcond=None)[0]
    return d - basis @ coef


def projection_matching(stack, variance, basis, reproject, initial, *, folds=2, rounds=8, tolerance=0.01,
                        smooth=1.0, upsample=20):
    """Shifts (n, 2) that align every projection with the object reconstructed from the others.

    Parameters
    ----------
    stack : (n, ny, nx) array
        Background-free projections, tilt axis along x.
    variance : (n, ny, nx) array
        Their pixel variances (photon noise), for the errors.
    basis : (n, 2, p) array
        How a rigid translation of the object moves each projection (y, x): not observable, so
        removed from every update (:func:`aetdask.geometry.rigid_motion_basis`).
    reproject : callable
        ``reproject(aligned, train, test) -> (len(test), ny, nx)``: the object reconstructed from
        ``aligned[train]`` (index arrays into the series), projected at the angles of ``test``.
        Called ``folds`` times a round, fold ``f`` in turn.
    initial : (n, 2) array
        Starting shifts (centre of mass, common line). The result keeps their rigid component:
        the object stays where they put it.
    folds : int
        Interleaved folds (at least 2): projection ``k`` is matched to a reconstruction without
        its fold ``k % folds``.
    rounds : int
        Most rounds.
    tolerance : float
        Stop when a round's update is below this RMS (px, per axis).
    smooth, upsample
        See :func:`register_to_reference`.

    Returns
    -------
    shifts : (n, 2) array
    errors : (n, 2) array
        Standard errors of the last round's registrations (photon noise, px).
    history : list of float
        RMS update (px, both axes together) of every round.

    Examples
    --------
    A "reconstruction" that just averages the other projections (a stack of identical images):

    >>> yy, xx = np.mgrid[:32, :32]
    >>> img = np.exp(-((yy - 16) ** 2 + (xx - 15) ** 2) / 8.0)
    >>> true = np.array([[1.0, 0.5], [-1.0, 0.25], [0.5, -0.5], [-0.5, -0.25]])
    >>> stack = fourier_shift(np.repeat(img[None], 4, axis=0), -true)
    >>> basis = np.repeat(np.eye(2)[None, :, :], 4, axis=0)   # a rigid translation moves all alike
    >>> mean = lambda aligned, train, test: np.repeat(aligned[train].mean(0)[None], len(test), 0)
    >>> found = projection_matching(stack, np.full(stack.shape, 1e-6), basis, mean, np.zeros((4, 2)))[0]
    >>> bool(np.allclose(found - found.mean(0), true - true.mean(0), atol=0.01))
    True
    """
    s = np.asarray(stack, dtype=np.float64)
    var = np.asarray(variance, dtype=np.float64)
    b = np.asarray(basis, dtype=np.float64)
    folds = int(folds)
    n = len(s)
    if folds < 2 or n < 2 * folds:
        raise ValueError(f"projection_matching: need at least 2 folds of 2 projections, got {folds} folds of {n}")
    start = np.asarray(initial, dtype=np.float64)
    shifts = start.copy()
    errors = np.full((n, 2), np.inf)
    history = []
    everything = np.arange(n)
    for _ in range(max(1, int(rounds))):
        aligned = fourier_shift(s, shifts)
        d = np.zeros((n, 2))
        for f in range(folds):
            test = everything[f::folds]
            train = np.setdiff1d(everything, test)
            refs = reproject(aligned, train, test)
            for j, k in enumerate(test):
                # the variance moves with the image: shifting it by the same amount (nearest pixel) is enough
                v = np.roll(var[k], tuple(int(round(x)) for x in shifts[k]), axis=(0, 1))
                d[k], errors[k] = register_to_reference(refs[j], aligned[k], v, smooth, upsample)
        d -= _fold_offsets(d, b, folds) / folds
        d = _without(d, b)
        shifts += d
        step = float(np.sqrt(np.mean(d**2)))
        history.append(step)
        if np.sqrt(np.mean(d**2, axis=0)).max() < tolerance:
            break
    shifts = start + _without(shifts - start, b)  # the rigid translation of the initial estimate
    return shifts, errors, history
