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


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes (for a page that embeds it); the figure is closed."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    _pyplot().close(fig)
    return buf.getvalue()


def _scale_bar(ax, extent_x: float, extent_y: float, origin) -> None:
    """A white bar of a round length (Å) in the lower left of an image axis, with its length written above."""
    step = [1, 2, 5, 10, 20, 50, 100, 200, 500]
    length = max([s for s in step if s <= extent_x / 4] or [step[0]])
    x0, y0 = origin[0] + 0.06 * extent_x, origin[1] + 0.06 * extent_y
    ax.plot([x0, x0 + length], [y0, y0], color="white", lw=4, solid_capstyle="butt")
    ax.text(x0 + length / 2, y0 + 0.03 * extent_y, f"{length:g} Å", color="white", ha="center", va="bottom",
            fontsize=9, fontweight="bold")


def slab_planes(positions, n: int = 3) -> list[tuple[str, float]]:
    """Where to cut: ``n`` planes normal to z spread over the middle of the model's z range, and the central
    plane normal to y, as ``(axis, position in Å)``.

    >>> slab_planes([[0, 0, -4.0], [0, 0, 4.0]])
    [('z', -2.0), ('z', 0.0), ('z', 2.0), ('y', 0.0)]
    """
    q = np.asarray(positions, dtype=float).reshape(-1, 3)
    lo, hi = q.min(axis=0), q.max(axis=0)
    zs = lo[2] + (hi[2] - lo[2]) * (np.arange(1, n + 1) / (n + 1))
    return [("z", round(float(z), 2)) for z in zs] + [("y", round(float((lo[1] + hi[1]) / 2), 2))]


def model_slices(volume, positions, species, colours: dict, planes=None, slab: float = 2.0, title: str | None = None):
    """Slabs through a reconstructed ``(z, y, x)`` volume with the atoms inside each overlaid, as the seed
    paper shows its models: each panel is the volume averaged over a slab ``slab`` Å thick about a plane
    (:func:`slab_planes` by default), the atoms within ±``slab``/2 of it drawn as circles coloured by
    species, a scale bar and a colour bar in the volume's units. Returns the figure."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    q = np.asarray(positions, dtype=float).reshape(-1, 3)
    sp = np.asarray(species).astype(str)
    planes = planes or slab_planes(q)
    v = np.asarray(volume.values, dtype=float)
    c = {d: np.asarray(volume[d].values, dtype=float) for d in ("z", "y", "x")}
    units = volume.attrs.get("units", "a.u.")
    fig, axes = plt.subplots(1, len(planes), figsize=(3.6 * len(planes) + 0.8, 4.1), layout="constrained", squeeze=False)
    vmax = float(np.percentile(v, 99.9)) or 1.0
    for ax, (axis, at) in zip(axes[0], planes):
        n = {"z": 0, "y": 1, "x": 2}[axis]
        inside = np.abs(c[axis] - at) <= slab / 2
        if not inside.any():
            inside = np.abs(c[axis] - at) == np.abs(c[axis] - at).min()
        img = np.take(v, np.flatnonzero(inside), axis=n).mean(axis=n)
        (h, hn), (w, wn) = [(c[d], d) for d in ("z", "y", "x") if d != axis][::-1]
        image = ax.imshow(img, cmap="gray", vmin=0, vmax=vmax, origin="lower", extent=[h[0], h[-1], w[0], w[-1]])
        col = {"x": 0, "y": 1, "z": 2}
        near = np.abs(q[:, col[axis]] - at) <= slab / 2
        for s in dict.fromkeys(sp):
            m = near & (sp == s)
            ax.scatter(q[m, col[hn]], q[m, col[wn]], s=30, facecolors="none", edgecolors=colours.get(s, "C0"), lw=1.3)
        ax.set_title(f"{axis} = {at:+.1f} Å (slab ±{slab / 2:g} Å), {int(near.sum())} atoms", fontsize=9)
        ax.set_xlabel(f"{hn} (Å)")
        ax.set_ylabel(f"{wn} (Å)")
        _scale_bar(ax, h[-1] - h[0], w[-1] - w[0], (h[0], w[0]))
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=f"volume, slab mean ({units})")
    handles = [Line2D([], [], marker="o", ls="", mfc="none", mec=colours.get(s, "C0"), label=s) for s in dict.fromkeys(sp)]
    axes[0][0].legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.8)
    fig.suptitle(title or "slabs through the reconstruction with the atoms in each", fontsize=10)
    return fig


def uncertainty_panel(positions, species, sigma, colours: dict, ratio=None, title: str | None = None):
    """The atoms' predicted position uncertainty: σ (3-D, pm) against the distance from the particle's
    centre, a map of σ projected along z, and, with ``ratio`` (n, 3: error/σ per axis of the atoms
    matched to a truth), its histograms against a unit normal. ``sigma`` is (n, 3) in Å. Returns the
    figure."""
    plt = _pyplot()
    q = np.asarray(positions, dtype=float).reshape(-1, 3)
    sp = np.asarray(species).astype(str)
    s3 = 100 * np.sqrt(np.sum(np.asarray(sigma, dtype=float) ** 2, axis=1))
    ok = np.isfinite(s3)
    cols = 3 if ratio is not None else 2
    fig, axes = plt.subplots(1, cols, figsize=(4.6 * cols, 4.0), layout="constrained")
    radius = np.linalg.norm(q - q[ok].mean(axis=0) if ok.any() else q, axis=1)
    ax = axes[0]
    for s in dict.fromkeys(sp):
        m = ok & (sp == s)
        ax.scatter(radius[m], s3[m], s=6, color=colours.get(s, "C0"), alpha=0.6, label=f"{s} ({int(m.sum())})")
    edges = np.linspace(0, (radius[ok].max() if ok.any() else 0) + 1e-9, 9)
    for s in dict.fromkeys(sp):  # each species' median in shells: species can differ several-fold
        m = ok & (sp == s)
        if m.sum() > 10:
            idx = np.digitize(radius[m], edges) - 1
            med = [np.median(s3[m][idx == b]) if np.any(idx == b) else np.nan for b in range(len(edges) - 1)]
            ax.plot((edges[:-1] + edges[1:]) / 2, med, "-", color=colours.get(s, "C0"), lw=2, label=f"{s} median")
    ax.set_xlabel("distance from the centre (Å)")
    ax.set_ylabel("σ = √(σx² + σy² + σz²) (pm)")
    ax.set_title("uncertainty across the particle", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    order = np.argsort(s3[ok])
    if ok.sum() > 3000:
        art = ax.hexbin(q[ok, 0], q[ok, 1], C=s3[ok], reduce_C_function=np.mean, gridsize=40, cmap="viridis")
    else:
        art = ax.scatter(q[ok, 0][order], q[ok, 1][order], c=s3[ok][order], s=14, cmap="viridis")
    ax.set_aspect("equal")
    ax.set_xlabel("x (Å)")
    ax.set_ylabel("y (Å)")
    ax.set_title("σ seen along z", fontsize=10)
    fig.colorbar(art, ax=ax, label="σ (pm)")
    if ratio is not None:
        ax = axes[2]
        r = np.asarray(ratio, dtype=float).reshape(-1, 3)
        finite = r[np.isfinite(r)]
        reach = float(np.clip(np.ceil(np.percentile(np.abs(finite), 99)) if finite.size else 5, 5, 50))
        grid = np.linspace(-4, 4, 161)
        bins = np.linspace(-reach, reach, 41)
        for a, name in enumerate("xyz"):
            v = r[np.isfinite(r[:, a]), a]
            if v.size:
                ax.hist(np.clip(v, -reach, reach), bins=bins, density=True, histtype="step", lw=1.5,
                        label=f"{name}: sd {np.std(v):.2f} ({v.size})")
        ax.plot(grid, np.exp(-grid ** 2 / 2) / np.sqrt(2 * np.pi), "k--", lw=1.2, label="unit normal")
        ax.set_xlabel(f"error / σ per axis (clipped at ±{reach:g})")
        ax.set_ylabel("density")
        ax.set_title("calibration against the truth", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(title or "predicted position uncertainty (Cramér–Rao bound)", fontsize=10)
    return fig
