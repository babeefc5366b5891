"""The structure-analysis figure: RDFs, Q4–Q6 map, Voronoi indices, motifs, networks, rings."""

from __future__ import annotations

import numpy as np

from aetdask.kernels.structure.bond_order import Q4_FCC, Q6_FCC
from aetdask.plot import _pyplot, _save


def _rdf(ax, ds, summary):
    r = ds.r.values
    ax.plot(r, ds.g_total.values, color="k", lw=1.6, label="total")
    if ds.sizes["pair"] > 1:
        for pair in ds.pair.values:
            ax.plot(r, ds.g.sel(pair=pair).values, lw=1.0, label=str(pair))
    ax.axhline(1.0, color="0.6", lw=0.6)
    ax.axvline(summary["cutoff"], color="C3", ls="--", lw=0.8, label=f"cutoff {summary['cutoff']:.2f} Å")
    ax.set(xlabel="r (Å)", ylabel="g(r)", title="Radial distribution (finite-particle normalised)")
    ax.legend(fontsize=7)


def _q4q6(ax, ds):
    q4, q6 = ds.q4.values, ds.q6.values
    ok = np.isfinite(q4) & np.isfinite(q6)
    # the axes hold every atom and the fcc reference (Si's tetrahedral order reaches Q4 ≈ 0.3)
    q4_max = 1.05 * max(0.25, float(q4[ok].max()) if ok.any() else 0.0)
    q6_max = 1.05 * max(0.65, float(q6[ok].max()) if ok.any() else 0.0)
    if ok.sum() > 2000:
        *_, im = ax.hist2d(q4[ok], q6[ok], bins=80, range=[[0, q4_max], [0, q6_max]], cmap="viridis", cmin=1)
        ax.figure.colorbar(im, ax=ax, label="atoms per bin")
    else:
        im = ax.scatter(q4[ok], q6[ok], s=6, c=ds.bond_order.values[ok], cmap="viridis", vmin=0, vmax=1)
        ax.figure.colorbar(im, ax=ax, label="bond-orientational order parameter")
    ax.plot([Q4_FCC], [Q6_FCC], "r*", ms=10, label="fcc")
    t = np.linspace(0, np.pi / 2, 100)
    for level in (0.5,):  # crystal-like threshold: √(Q4²+Q6²) = level × fcc
        rad = level * np.hypot(Q4_FCC, Q6_FCC)
        ax.plot(rad * np.cos(t), rad * np.sin(t), "r:", lw=0.8, label=f"order {level}")
    ax.set(xlim=(0, q4_max), ylim=(0, q6_max), xlabel="Q4 (averaged)", ylabel="Q6 (averaged)", title="Bond-orientational order")
    ax.legend(fontsize=7, loc="lower right")


def _voronoi(ax, summary):
    top = summary["voronoi"]["top_indices"]
    if not top:
        ax.text(0.5, 0.5, "no interior atoms", ha="center", transform=ax.transAxes)
        return
    ax.bar(range(len(top)), [100 * t["fraction"] for t in top], color="C0")
    ax.set_xticks(range(len(top)), [t["index"] for t in top], rotation=60, fontsize=7)
    ax.set(ylabel="% of interior atoms", title="Voronoi indices ⟨n3,n4,n5,n6⟩")


def _motifs(ax, ds, summary):
    fractions = 100 * ds.motif_fraction.values
    if not np.any(fractions > 0):
        _empty(ax, "no polytetrahedral motifs at any δ_max")
        ax.set_xlim(float(ds.delta.min()), float(ds.delta.max()))
    else:
        for m in ds.motif.values:
            ax.plot(ds.delta.values, 100 * ds.motif_fraction.sel(motif=m).values, "o-", ms=3, label=str(m))
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    ax.axvline(summary["parameters"]["delta_max"], color="0.5", ls="--", lw=0.8)
    ax.set(xlabel="δ_max (e_max/e_avg − 1)", ylabel="% of atoms", title="Polytetrahedral motifs")


def _empty(ax, text):
    """A panel with nothing to draw: the reason in its middle, no meaningless ticks."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_yticks([])


def _networks(ax, ds):
    sizes = ds.network_size.values
    if len(sizes) == 0:
        _empty(ax, "no pentagonal bipyramids")
        ax.set_xticks([])
    else:
        bins = np.unique(np.round(np.logspace(0, np.log10(sizes.max() + 1), 25)).astype(int))
        ax.hist(sizes, bins=bins, color="C2")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set(xlabel="PBs per network", ylabel="networks", title="Pentagonal-bipyramid networks")


def _rings(ax, ds, summary):
    rs = summary["rings"]
    count = ds.ring_count_former.values if "ring_count_former" in ds else ds.ring_count.values
    unit = f"{rs['network_former']} atoms" if "ring_count_former" in ds else "atoms"
    k = np.flatnonzero(count)
    if len(k) == 0:
        _empty(ax, "no rings")
    else:
        from matplotlib.ticker import MaxNLocator

        ax.bar(ds.ring_size.values[k], count[k], color="C4")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # ring sizes are whole numbers of atoms
    alt = rs["alternating_fraction"]
    title = "Shortest-path rings" + (f" ({100 * alt:.0f}% alternating)" if alt is not None and rs["network_former"] else "")
    ax.set(xlabel=f"ring size ({unit})", ylabel="rings", title=title)


def structure_figure(ds, path, title: str | None = None):
    """Save the six-panel structure-analysis PNG of an :func:`aetdask.analyze.analyze` result."""
    plt = _pyplot()
    summary = ds.attrs["summary"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5), layout="constrained")
    _rdf(axes[0, 0], ds, summary)
    _q4q6(axes[0, 1], ds)
    _voronoi(axes[0, 2], summary)
    _motifs(axes[1, 0], ds, summary)
    _networks(axes[1, 1], ds)
    _rings(axes[1, 2], ds, summary)
    species = ", ".join(f"{k} {v}" for k, v in summary["species"].items())
    fig.suptitle(title or f"Structure of {summary['n_atoms']} atoms ({species})")
    return _save(fig, path)
