"""Electron-scattering physics for the linear ADF imaging model.

* Relativistic electron wavelength and Lorentz factor.
* Electron scattering factors of neutral atoms from the Lobato–Van Dyck
  parametrisation (the table that abTEM ships; read from its data file).
* The ADF cross-section of an atom: the scattering factor squared, integrated
  over the annular detector, which gives the Z-contrast of ADF-STEM.
* The incoherent transfer function of an aberration-free probe.

References
----------
I. Lobato and D. Van Dyck, Acta Cryst. A 70, 636 (2014).
E. J. Kirkland, *Advanced Computing in Electron Microscopy*, 3rd ed. (2020), ch. 5–6.
"""

from __future__ import annotations

import functools
import math
import importlib.util
import json
import pathlib

import numpy as np

from aetdask.errors import InputError
from aetdask.schema import normalize_species

HC = 12398.419843320026  # eV·Å
MC2 = 510998.95000  # electron rest energy, eV


def wavelength(energy: float) -> float:
    """Relativistic electron wavelength (Å) at ``energy`` (eV).

    >>> round(wavelength(200e3), 5)
    0.02508
    """
    e = float(energy)
    return HC / math.sqrt(e * (2 * MC2 + e))


def lorentz_factor(energy: float) -> float:
    """γ = 1 + E / mc²."""
    return 1.0 + float(energy) / MC2


@functools.lru_cache(maxsize=1)
def _lobato_table() -> dict:
    spec = importlib.util.find_spec("abtem")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("abTEM is needed for its table of scattering factors: pip install abtem")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "parametrizations" / "data" / "lobato.json"
    with open(path) as f:
        return json.load(f)


def lobato_parameters(symbol: str) -> np.ndarray:
    """Lobato parameters ``(a_i, b_i)`` of an element, shape (2, 5)."""
    (sym,) = normalize_species([symbol])
    table = _lobato_table()
    if sym not in table:
        raise InputError(f"species {sym!r}: no scattering-factor parameters available")
    return np.asarray(table[sym], dtype=float)


def scattering_factor(symbol: str, k) -> np.ndarray:
    """Electron scattering factor f(k) in Å (non-relativistic), k = θ/λ in 1/Å.

    f(k) = Σ_i a_i (2 + b_i k²) / (1 + b_i k²)²   (Lobato & Van Dyck, eq. 10)
    """
    a, b = lobato_parameters(symbol)
    k2 = np.asarray(k, dtype=float)[..., None] ** 2
    return np.sum(a * (2 + b * k2) / (1 + b * k2) ** 2, axis=-1)


def adf_cross_section(symbol: str, energy: float, detector=(40.0, 190.0)) -> float:
    """Cross-section (Å²) for scattering into an annular detector.

    σ = ∫ |γ f(k)|² dΩ = 2π γ² λ² ∫_{θ_in/λ}^{θ_out/λ} |f(k)|² k dk

    with the detector angles in mrad. Multiplied by the dose (e⁻/Å²) it is the
    number of electrons an isolated atom sends to the detector; it grows as
    roughly Z^1.7, the Z-contrast of ADF-STEM.

    >>> adf_cross_section("Pt", 200e3) / adf_cross_section("Si", 200e3) > 10
    True
    """
    inner, outer = (float(d) * 1e-3 for d in detector)
    if not 0 <= inner < outer:
        raise InputError(f"detector: expected 0 ≤ inner < outer (mrad), got {detector}")
    lam = wavelength(energy)
    k = np.linspace(inner / lam, outer / lam, 4001)
    integrand = scattering_factor(symbol, k) ** 2 * k
    integral = np.sum((integrand[1:] + integrand[:-1]) * np.diff(k)) / 2
    return float(2 * np.pi * (lorentz_factor(energy) * lam) ** 2 * integral)


def probe_transfer(q, energy: float, semiangle: float) -> np.ndarray:
    """Fourier transform of an aberration-free probe's intensity, normalised to 1 at q = 0.

    The probe intensity is |FT⁻¹ A|² with A the disc of radius k_α = α/λ, so its
    transform is the disc's autocorrelation (the "chat" function)::

        T(q) = (2/π) [arccos s − s √(1 − s²)],   s = q / (2 k_α),  0 for s > 1
    """
    k_alpha = float(semiangle) * 1e-3 / wavelength(energy)
    s = np.clip(np.asarray(q, dtype=float) / (2 * k_alpha), 0.0, 1.0)
    return (2 / np.pi) * (np.arccos(s) - s * np.sqrt(1 - s**2))


def gaussian_transfer(q, sigma: float) -> np.ndarray:
    """Fourier transform of a normalised Gaussian of standard deviation ``sigma`` (Å)."""
    return np.exp(-2 * np.pi**2 * float(sigma) ** 2 * np.asarray(q, dtype=float) ** 2)


def adf_transfer(symbol: str, q, *, energy: float, semiangle: float, detector, blur: float) -> np.ndarray:
    """Transfer function of one atom in the incoherent linear ADF model (Å², at spatial frequencies q).

    H(q) = σ_ADF · f(q)/f(0) · T_probe(q) · G_blur(q): the atom's ADF cross-section,
    spread as its projected potential, convolved with the probe intensity and the
    partial-coherence Gaussian.
    """
    shape = scattering_factor(symbol, q) / scattering_factor(symbol, 0.0)
    return (
        adf_cross_section(symbol, energy, detector)
        * shape
        * probe_transfer(q, energy, semiangle)
        * gaussian_transfer(q, blur)
    )
