"""One tilt's ptychographic phase image, by abTEM's engines (r-PIE single slice, MS-PIE multislice).

A pure function of one tilt's 4D-STEM data (:func:`phase_image`), so each tilt is an
independent task on any worker. abTEM (``abtem.reconstruct``) does the iterative
reconstruction; this module translates the project's conventions to its and back:

* **Axes**: the project's patterns are ``(scan_y, scan_x, k_y, k_x)``; abTEM's are
  ``(scan_x, scan_y, k_x, k_y)``, and its object's first axis is ``x``. Both are swapped
  together, so no mirror is introduced.
* **Probe**: the initial probe is the aberration-free probe of the experiment
  (``semiangle``, ``defocus``); abTEM's ``defocus`` is the distance from the object's
  entrance plane to the crossover: ``defocus`` for a single slice at the particle's centre
  plane, ``defocus + thickness/2`` for slices spanning ``thickness`` around it.
* **Grid**: the object pixel is ``λ / (K · angular_sampling)``; the phase is resampled
  (cubic spline) onto an image of that pixel centred on the scan's centre, the sample origin
  (:mod:`aetdask.ptycho.simulate`), covering the scanned field.
* **Phase**: the object's phase (summed over slices for multislice), zero in vacuum (the
  median of the image's outer frame is removed).

abTEM shuffles the probe positions with NumPy's global generator after
``np.random.seed(seed)``; a lock keeps two threads of one process from interleaving, so a
tilt gives the same image on any worker. abTEM 1.0.11's multislice engine calls a
propagator method that its ``FresnelPropagator`` lacks; the lock also covers the stand-in
(:class:`_FresnelPropagator`) used while it runs.

References
----------
A. Maiden, D. Johnson and P. Li, Optica 4, 736 (2017) (r-PIE).
A. M. Maiden, M. J. Humphry and J. M. Rodenburg, J. Opt. Soc. Am. A 29, 1606 (2012) (multislice).
J. Madsen and T. Susi, Open Research Europe 1, 24 (2021) (abTEM).
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import scipy.ndimage

from aetdask import physics
from aetdask.errors import InputError

__all__ = ["phase_image", "object_pixel", "image_shape", "sample_extent", "virtual_dark_field"]

_LOCK = threading.Lock()


class _FresnelPropagator:
    """The free-space propagator abTEM's MS-PIE asks for.

    abTEM 1.0.11's ``reconstruct._propagate_array`` calls
    ``FresnelPropagator._evaluate_propagator_array``, which its ``FresnelPropagator`` no
    longer has; this stands in for it during a multislice reconstruction:
    ``exp(−iπ λ Δz |k|²)`` on the FFT grid (abTEM's own sign and layout,
    ``multislice._fresnel_propagator_array``)."""

    def _evaluate_propagator_array(self, shape, sampling, wavelength, thickness, tilt, xp):
        kx = xp.fft.fftfreq(int(shape[-2]), float(sampling[0]))
        ky = xp.fft.fftfreq(int(shape[-1]), float(sampling[1]))
        k2 = kx[:, None] ** 2 + ky[None, :] ** 2
        return xp.exp(-1j * np.pi * float(thickness) * float(wavelength) * k2).astype(xp.complex64)


@contextlib.contextmanager
def _quiet():
    """No progress bars from abTEM's engines (one per iteration and position, on every worker):
    its ``ProgressBar`` is swapped for a disabled one. Used under the lock."""
    import abtem.reconstruct as rec

    original = rec.ProgressBar

    class Silent(original):
        def __init__(self, **kwargs):
            super().__init__(**{**kwargs, "disable": True})

    rec.ProgressBar = Silent
    try:
        yield
    finally:
        rec.ProgressBar = original


@contextlib.contextmanager
def _propagator_for_multislice():
    import abtem.reconstruct as rec

    original = rec.FresnelPropagator
    if hasattr(original, "_evaluate_propagator_array"):  # a fixed abTEM: use its own
        yield
        return
    rec.FresnelPropagator = _FresnelPropagator
    try:
        yield
    finally:
        rec.FresnelPropagator = original


def object_pixel(energy: float, angular_sampling: float, k: int) -> float:
    """Pixel (Å) of the reconstructed object: ``λ / (K · angular_sampling)``.

    >>> round(object_pixel(80e3, 0.8699, 140), 4)
    0.3429
    """
    return physics.wavelength(energy) / (int(k) * float(angular_sampling) * 1e-3)


def image_shape(scan, step: float, pixel_size: float) -> tuple[int, int]:
    """``(ny, nx)`` of the phase image on pixels of ``pixel_size`` covering an ``(sy, sx)`` scan.

    >>> image_shape((16, 16), 2.0, 0.342)
    (88, 88)
    """
    return tuple(int(np.floor((int(n) - 1) * float(step) / float(pixel_size))) + 1 for n in scan)


def virtual_dark_field(patterns, semiangle: float, angular_sampling: float) -> np.ndarray:
    """Counts scattered outside the bright-field disc (beyond 1.1 × ``semiangle``) at each
    probe position: an incoherent image of the sample, ``(scan_y, scan_x)``."""
    p = np.asarray(patterns)
    k = p.shape[-1]
    q = (np.arange(k) - k // 2) * float(angular_sampling)
    outside = np.hypot(q[:, None], q[None, :]) > 1.1 * float(semiangle)
    return p[..., outside].sum(axis=-1, dtype=np.float64)


def sample_extent(patterns, step: float, semiangle: float, angular_sampling: float) -> float:
    """Largest width (Å) of the sample in one tilt's virtual dark-field image.

    The region above half-way between the vacuum level (median of the scan's outer frame)
    and the image's maximum: for a particle, about its diameter, the depth a multislice
    reconstruction must span. Falls back to the scanned field when nothing stands out."""
    img = virtual_dark_field(patterns, semiangle, angular_sampling)
    img = scipy.ndimage.gaussian_filter(img, 1.0)
    frame = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    vac, top = float(np.median(frame)), float(img.max())
    if not top > vac:
        return float(max(img.shape)) * float(step)
    mask = img > vac + 0.5 * (top - vac)
    ys, xs = np.nonzero(mask)
    return float(max(np.ptp(ys) + 1, np.ptp(xs) + 1)) * float(step)


def phase_image(
    patterns,
    *,
    step: float,
    angular_sampling: float,
    energy: float,
    semiangle: float,
    defocus: float,
    multislice: bool = False,
    slices: int = 5,
    thickness: float | None = None,
    iterations: int = 10,
    probe_after: float | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[np.ndarray, dict]:
    """Ptychographic phase image of one tilt.

    Parameters
    ----------
    patterns : array
        ``(scan_y, scan_x, k_y, k_x)`` counts (or beam fractions), zero angle at pixel ``K//2``.
    step : float
        Scan step (Å).
    angular_sampling : float
        mrad per detector pixel.
    energy, semiangle, defocus
        eV, mrad, Å (crossover beyond the particle's centre plane, > 0 deeper).
    multislice : bool
        Multislice ptychography (MS-PIE) over ``slices`` slices spanning ``thickness`` Å
        around the centre plane; the image is the sum of the slices' phases.
    thickness : float, optional
        Depth (Å) the slices span; None = :func:`sample_extent` of these data.
    iterations : int
        Passes over all probe positions.
    probe_after : float, optional
        Fraction of the iterations run with the nominal probe (object only) before the
        probe is refined as well: a known probe first, then its corrections. None = 0.5
        for a single slice, 1 (the nominal probe throughout) for multislice: abTEM's
        MS-PIE probe update made the summed phase worse on the test cluster (NCC with the
        linear projection 0.86 → 0.61 for 5 slices).
    seed : int
        Seed of the order in which positions are visited.
    device : str
        ``"cpu"`` or ``"gpu"`` (abTEM's device).

    Returns
    -------
    image : np.ndarray
        float64 ``(ny, nx)`` phase (rad) on pixels of ``pixel_size``, centred on the scan centre.
    info : dict
        ``pixel_size`` (Å), ``error`` (abTEM's final mean squared error), ``thickness``,
        ``slices``, ``defocus_entrance`` (abTEM's defocus), ``iterations``.
    """
    from abtem.reconstruct import MultislicePtychographicOperator, RegularizedPtychographicOperator

    data = np.asarray(patterns, dtype=np.float32)
    if data.ndim != 4 or data.shape[-1] != data.shape[-2]:
        raise InputError(f"ptychography: expected (scan_y, scan_x, k, k) patterns, got shape {data.shape}")
    if not np.all(np.isfinite(data)) or data.min() < 0:
        raise InputError("ptychography: the patterns hold negative or non-finite values")
    sy, sx, k, _ = data.shape
    if min(sy, sx) < 2:
        raise InputError(f"ptychography: the scan needs ≥ 2 positions per side, got {sy}×{sx}")
    iterations = int(iterations)
    if iterations < 1:
        raise InputError(f"ptychography: iterations must be ≥ 1, got {iterations}")
    totals = data.sum(axis=(-1, -2), dtype=np.float64)
    if not totals.mean() > 0:
        raise InputError("ptychography: the patterns are empty")
    s = object_pixel(energy, angular_sampling, k)
    # abTEM's order (scan_x, scan_y, k_x, k_y); intensities scaled so the mean pattern sums to
    # one, as abTEM's initial probe does (Σ|FFT ψ|² = 1): the object is then a transmission
    # function of modulus ≈ 1 (with counts as they come, it is ≈ √counts, and the slices of a
    # multislice reconstruction cannot share that factor)
    abt = np.ascontiguousarray(data.transpose(1, 0, 3, 2)) / np.float32(totals.mean())
    common = dict(energy=float(energy), semiangle_cutoff=float(semiangle), scan_step_sizes=(float(step),) * 2,
                  angular_sampling=(float(angular_sampling),) * 2, device=device)
    if multislice:
        slices = int(slices)
        if slices < 1:
            raise InputError(f"ptychography: slices must be ≥ 1, got {slices}")
        if thickness is None:
            thickness = sample_extent(data, step, semiangle, angular_sampling)
        thickness = float(thickness)
        if not thickness > 0:
            raise InputError(f"ptychography: thickness must be > 0 Å, got {thickness}")
        entrance = float(defocus) + thickness / 2
        op = MultislicePtychographicOperator(abt, num_slices=slices, slice_thicknesses=thickness / slices,
                                             defocus=entrance, **common)
    else:
        slices, entrance = 1, float(defocus)
        op = RegularizedPtychographicOperator(abt, defocus=entrance, **common)
    import abtem

    # FFTW plans by estimate, not by timing: the same plans, so the same image, in every process
    with _LOCK, _quiet(), abtem.config.set({"fftw.planning_effort": "FFTW_ESTIMATE"}), \
            (_propagator_for_multislice() if multislice else contextlib.nullcontext()):
        op.preprocess()
        if probe_after is None:
            probe_after = 1.0 if multislice else 0.5
        fixed = int(round(min(max(float(probe_after), 0.0), 1.0) * iterations)) * sy * sx
        obj, _, _, error = op.reconstruct(max_iterations=iterations, random_seed=int(seed), verbose=False,
                                          pre_probe_correction_update_steps=fixed if fixed else None)
    if isinstance(obj, (list, tuple)):
        obj = obj[-1]
    arr = np.asarray(getattr(obj, "array", obj))
    if hasattr(arr, "get"):
        arr = arr.get()
    phase = np.angle(arr).astype(np.float64)
    if phase.ndim == 3:  # multislice: (slices, x, y)
        phase = phase.sum(axis=0)
    pad = np.asarray(op._experimental_parameters["object_px_padding"], dtype=float)
    ny, nx = image_shape((sy, sx), step, s)
    u_y = (np.arange(ny) - ny // 2) * s  # detector y of each output row
    u_x = (np.arange(nx) - nx // 2) * s
    px_x = (u_x + (sx // 2) * step) / s + pad[0]  # object axis 0 is x
    px_y = (u_y + (sy // 2) * step) / s + pad[1]
    gx, gy = np.meshgrid(px_x, px_y)  # (ny, nx)
    image = scipy.ndimage.map_coordinates(phase, [gx, gy], order=3, mode="nearest")
    frame = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    image -= np.median(frame)
    info = {"pixel_size": s, "error": float(np.asarray(error).ravel()[-1]), "thickness": thickness,
            "slices": slices, "defocus_entrance": entrance, "iterations": iterations,
            "probe_after": float(probe_after)}
    return image, info
