"""Figures people would rather look at than read."""

from __future__ import annotations

import pathlib

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def projections(tilt_series, path, n: int = 4, title: str | None = None) -> pathlib.Path:
    """Save a PNG panel of ``n`` projections spread evenly over the tilt range."""
    plt = _pyplot()
    nt = tilt_series.sizes["tilt"]
    picks = np.unique(np.linspace(0, nt - 1, min(n, nt)).round().astype(int))
    ext = [float(tilt_series.x[0]), float(tilt_series.x[-1]), float(tilt_series.y[-1]), float(tilt_series.y[0])]
    fig, axes = plt.subplots(1, len(picks), figsize=(3.2 * len(picks), 3.4), squeeze=False)
    for ax, k in zip(axes[0], picks):
        img = np.asarray(tilt_series[k].values, dtype=float)
        ax.imshow(img, cmap="gray", extent=ext)
        t = tilt_series.isel(tilt=k)
        ax.set_title(f"θ = {float(t.theta):.1f}°  (φ {float(t.phi):.1f}, ψ {float(t.psi):.1f})", fontsize=9)
        ax.set_xlabel("x (Å), tilt axis")
    axes[0][0].set_ylabel("y (Å)")
    units = tilt_series.attrs.get("units", "")
    fig.suptitle(title or f"tilt series ({units})", fontsize=10)
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
