"""Scanning AET of a thin film against one whole-field reconstruction of the same data.

A Si film (a-Si number density, 10 Å thick) wider than the field of view at
every tilt but 0°; 60 projections from −70° to +70°, linear ADF model with
Poisson noise. Both reconstructions get 100 RESIRE iterations of the same raw
counts; both are traced and classified the same way and scored (strict
one-to-one, 1 Å) on the atoms of the band the scanning regions cover.

Run: python benchmarks/bench_scanning.py [--pixels 128] [--core 40] [--dose 1e6] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixels", type=int, default=128)
    parser.add_argument("--core", type=int, default=40)
    parser.add_argument("--overlap", type=int, default=12)
    parser.add_argument("--dose", type=float, default=1e6)
    parser.add_argument("--workers", type=int, default=2)
    a = parser.parse_args()

    from distributed import Client, LocalCluster

    from aetdask.evaluate import evaluate
    from aetdask.model import classify, trace
    from aetdask.reconstruct import resire
    from aetdask.reconstruct.scanning import extension_exponent, scanning_reconstruct
    from aetdask.simulate import amorphous_particle, linear

    pixel, thickness = 0.35, 10.0
    theta = np.linspace(-70, 70, 60)
    width = a.pixels * pixel
    ly = 2 * (width / 2 / np.cos(np.deg2rad(70)) + thickness) + 4
    lx = width - 3.0
    film = amorphous_particle(int(0.05 * lx * ly * thickness), species=["Si"], box=(lx, ly, thickness), seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = linear(film, angles=theta, pixel_size=pixel, shape=a.pixels, dose=a.dose, seed=3).compute()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; film {lx:.0f}×{ly:.0f}×"
          f"{thickness:.0f} Å, {film.sizes['atom']} atoms, images {a.pixels}², dose {a.dose:g} e⁻/Å², "
          f"totals ∝ 1/cos θ^{extension_exponent(ts):.2f}")

    def score(volume, band):
        q = lambda m: m.isel(atom=np.flatnonzero((m.position.values[:, 1] >= band[0]) &  # noqa: E731
                                                 (m.position.values[:, 1] <= band[1])))
        t = time.perf_counter()
        found = q(classify(trace(volume, ["Si"]), ["Si"]))
        s = evaluate(found, q(film), 1.0, center=False)["strict"]
        n = q(film).sizes["atom"]
        return (f"{100 * s['true_positives'] / n:5.1f} % of {n} atoms, FP {s['false_positives']}, "
                f"FN {s['false_negatives']}, precision {s['precision_pm']:.1f} pm (tracing {time.perf_counter() - t:.1f} s)")

    with LocalCluster(n_workers=a.workers, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster):
        t = time.perf_counter()
        vol = scanning_reconstruct(ts, core=a.core, overlap=a.overlap, iterations=100)
        t_scan = time.perf_counter() - t
        p = vol.attrs["provenance"][-1]["params"]
        band = (float(vol.y.min()), float(vol.y.max()))
        print(f"scanning AET: {p['regions']} sub-volumes, film z {p['film_center']:.1f} ± "
              f"{p['film_half_thickness']:.1f} Å, {t_scan:.1f} s on {a.workers} workers: {score(vol, band)}")
        t = time.perf_counter()
        whole = resire(ts, iterations=100)
        t_whole = time.perf_counter() - t
        print(f"whole field ({a.pixels}³ cube): {t_whole:.1f} s on {a.workers} workers: {score(whole, band)}")


if __name__ == "__main__":
    main()
