"""Draw docs/geometry.png: the projection convention of aetdask.geometry.

Run: python docs/geometry_figure.py
"""

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from aetdask.schema import atoms
from aetdask.simulate import linear

HERE = pathlib.Path(__file__).parent


def main():
    fig = plt.figure(figsize=(12, 4.6))
    ax = fig.add_subplot(1, 3, 1, projection="3d")
    o = np.zeros(3)
    for v, name, c in [((1, 0, 0), "x  (tilt axis)", "C3"), ((0, 1, 0), "y", "C2"), ((0, 0, 1), "z", "C0")]:
        ax.quiver(*o, *v, color=c, arrow_length_ratio=0.1, linewidth=2)
        ax.text(*(1.1 * np.array(v)), name, color=c)
    theta = np.deg2rad(30)
    beam = np.array([0, np.sin(theta), np.cos(theta)])  # depth direction at θ = 30°
    ax.quiver(*(-1.4 * beam), *(1.0 * beam), color="k", arrow_length_ratio=0.15)
    ax.text(*(-1.5 * beam), "beam (depth)\nθ = 30°", fontsize=8)
    ydet = np.array([0, np.cos(theta), -np.sin(theta)])
    ax.quiver(*o, *(0.8 * ydet), color="C1", linestyle="--", arrow_length_ratio=0.1)
    ax.text(*(0.9 * ydet), "y_det", color="C1")
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_zlim(-1, 1)
    ax.set_axis_off()
    ax.set_title("sample frame; φ = ψ = 0:\nx_det = x,  y_det = y cos θ − z sin θ", fontsize=9)

    # an asymmetric model: Pt at +x, Si at +y, Ge at +z
    model = atoms([[3, 0, 0], [0, 3, 0], [0, 0, 3]], ["Pt", "Si", "Ge"])
    ts = linear(model, angles=[0.0, 90.0], pixel_size=0.2, shape=48)
    for k, label in enumerate(["θ = 0°: looking along z", "θ = 90°: looking along y"]):
        a = fig.add_subplot(1, 3, 2 + k)
        ext = [float(ts.x[0]), float(ts.x[-1]), float(ts.y[-1]), float(ts.y[0])]
        a.imshow(ts[k].values, cmap="magma", extent=ext, norm=matplotlib.colors.PowerNorm(0.4))
        a.set_xlabel("x_det (Å)  → image axis x (tilt axis)")
        a.set_ylabel("y_det (Å)  → image axis y")
        a.set_title(label + "\nPt at x = +3, Si at y = +3, Ge at z = +3 Å (√ scale)", fontsize=9)
    fig.tight_layout()
    fig.savefig(HERE / "geometry.png", dpi=100)


if __name__ == "__main__":
    main()
