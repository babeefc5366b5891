"""Figures people would rather look at than read."""

from __future__ import annotations

import pathlib

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def projections(tilt_series, path, n: int = 4, title: str | None = None, rows: dict | None = None) -> pathlib.Path:
    """Save a PNG panel of ``n`` projections spread evenly over the tilt range.

    ``rows`` maps row labels to further tilt series of the same geometry
    (e.g. the noise-free model) shown under the first one.
    """
    plt = _pyplot()
    series = {f"{tilt_series.attrs.get('units', '')}": tilt_series, **(rows or {})}
    nt = tilt_series.sizes["tilt"]
    picks = np.unique(np.linspace(0, nt - 1, min(n, nt)).round().astype(int))
    ext = [float(tilt_series.x[0]), float(tilt_series.x[-1]), float(tilt_series.y[-1]), float(tilt_series.y[0])]
    fig, axes = plt.subplots(len(series), len(picks), figsize=(3.0 * len(picks), 3.1 * len(series)),
                             squeeze=False, layout="constrained")
    for r, (label, ts) in enumerate(series.items()):
        for ax, k in zip(axes[r], picks):
            ax.imshow(np.asarray(ts[k].values, dtype=float), cmap="gray", extent=ext)
            t = ts.isel(tilt=k)
            ax.set_title(f"θ = {float(t.theta):.1f}°  (φ {float(t.phi):.1f}, ψ {float(t.psi):.1f})", fontsize=9)
            if r == len(series) - 1:
                ax.set_xlabel("x (Å), tilt axis")
        axes[r][0].set_ylabel(f"{label}\ny (Å)")
    fig.suptitle(title or "tilt series", fontsize=10)
    return _save(fig, path)


def volume_slices(volume, path, title: str | None = None, rows: dict | None = None) -> pathlib.Path:
    """Save a PNG of the three central slices of a ``(z, y, x)`` volume, with axes in Å.

    ``rows`` maps labels to further volumes of the same grid shown underneath.
    """
    plt = _pyplot()
    series = {"": volume, **(rows or {})}
    fig, axes = plt.subplots(len(series), 3, figsize=(10, 3.4 * len(series)), layout="constrained", squeeze=False)
    for r, (name, vol) in enumerate(series.items()):
        v = np.asarray(vol.values, dtype=float)
        nz, ny, nx = v.shape
        c = {d: vol[d].values for d in ("z", "y", "x")}
        views = [
            ("z = 0 (x–y plane)", v[nz // 2], c["x"], c["y"], "x (Å)", "y (Å)"),
            ("y = 0 (x–z plane)", v[:, ny // 2], c["x"], c["z"], "x (Å)", "z (Å)"),
            ("x = 0 (y–z plane)", v[:, :, nx // 2], c["y"], c["z"], "y (Å)", "z (Å)"),
        ]
        for ax, (label, img, h, w, xl, yl) in zip(axes[r], views):
            ax.imshow(img, cmap="magma", extent=[h[0], h[-1], w[-1], w[0]])
            ax.set_title(f"{name}  {label}".strip(), fontsize=9)
            ax.set_xlabel(xl)
            ax.set_ylabel(yl)
    fig.suptitle(title or "volume", fontsize=10)
    return _save(fig, path)


def preprocessing_panel(rows: dict, path, title: str | None = None) -> pathlib.Path:
    """One row per chosen projection, one column per processing step (e.g. raw, denoised, background-subtracted).

    ``rows`` maps a row label to ``{column label: 2-D image}``.
    """
    plt = _pyplot()
    labels = list(rows)
    cols = list(rows[labels[0]])
    fig, axes = plt.subplots(len(labels), len(cols), figsize=(3.0 * len(cols), 3.0 * len(labels)),
                             squeeze=False, layout="constrained")
    for r, label in enumerate(labels):
        for c, col in enumerate(cols):
            ax = axes[r][c]
            ax.imshow(np.asarray(rows[label][col], dtype=float), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col, fontsize=10)
        axes[r][0].set_ylabel(label, fontsize=9)
    fig.suptitle(title or "preprocessing", fontsize=10)
    return _save(fig, path)
