"""How well concentric Gaussians fit the image of one atom in the linear ADF-STEM model.

The image of an atom is its projected potential's shape (Lobato scattering factors) seen
through the probe (aberration-free, the convergence semi-angle's disc) and the
partial-coherence blur: a sharp core on broad tails. The coordinate refinement models each
species' atom as ``k`` concentric Gaussians (``refine_atoms.components``); this prints how
much of that image 1, 2 and 3 Gaussians leave unexplained (relative RMS residual within 4 Å)
and the fitted widths, for the simulator's settings (``aetdask.simulate.*`` configuration).

Run: python benchmarks/bench_atom_profile.py [--species Si,Pt,Ta] [--semiangle MRAD] [--blur Å]
"""

from __future__ import annotations

import argparse


def fit(r, v, k):
    """Least-squares fit of ``Σ_c a_c exp(−r²/2s_c²)`` to the radial profile; (relative residual, widths)."""
    import numpy as np
    import scipy.optimize

    v = v / v.max()  # amplitudes of order one

    def residual(p):
        a, s = p[:k], p[k:]
        return (a[None] * np.exp(-r[:, None] ** 2 / (2 * s[None] ** 2))).sum(axis=1) - v

    start = np.r_[np.full(k, 1.0 / k), 0.5 * 2.0 ** np.arange(k)]
    res = scipy.optimize.least_squares(residual, start, bounds=(np.r_[np.zeros(k), np.full(k, 0.05)], np.inf))
    return float(np.linalg.norm(res.fun) / np.linalg.norm(v)), np.sort(res.x[k:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--species", default="Si,Pt,Ta")
    parser.add_argument("--semiangle", type=float, default=None, help="mrad (default: config simulate.semiangle)")
    parser.add_argument("--blur", type=float, default=None, help="Å (default: config simulate.blur)")
    a = parser.parse_args()

    import numpy as np

    from aetdask import config, physics

    params = {k: config.get(f"simulate.{k}") for k in ("energy", "semiangle", "detector", "blur")}
    params["semiangle"] = params["semiangle"] if a.semiangle is None else a.semiangle
    params["blur"] = params["blur"] if a.blur is None else a.blur
    print(f"linear ADF model: {params['energy'] / 1e3:g} kV, semi-angle {params['semiangle']} mrad, detector "
          f"{params['detector'][0]:g}–{params['detector'][1]:g} mrad, blur {params['blur']} Å")
    pixel, n = 0.05, 512
    q = np.hypot(np.fft.fftfreq(n, d=pixel)[:, None], np.fft.fftfreq(n, d=pixel)[None, :])
    y, x = np.indices((n, n)) - n // 2
    r = np.hypot(y, x) * pixel
    inside = r < 4.0
    for symbol in a.species.split(","):
        image = np.fft.fftshift(np.real(np.fft.ifft2(physics.adf_transfer(symbol, q, **params))))
        line = [f"{symbol:>3}:"]
        for k in (1, 2, 3):
            rel, widths = fit(r[inside], image[inside], k)
            line.append(f"{k} Gaussian{'s' if k > 1 else ''} {100 * rel:5.2f} % "
                        f"(widths {', '.join(f'{w:.2f}' for w in widths)} Å)")
        print("  ".join(line))


if __name__ == "__main__":
    main()
