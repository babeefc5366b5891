"""``aetdask view STORE``: the run's volume and atomic model in napari (the optional ``[view]`` extra).

The volume is an image layer with its voxel size as the scale (so napari's axes are in Å) and the atoms a
points layer on the same axes, one colour per species (with each atom's σ, when the model carries it, as a
feature that napari can colour or filter by). Without napari the command says how to install it.
"""

from __future__ import annotations

import numpy as np

from aetdask.errors import InputError
from aetdask.io import RunStore

#: Colours of the species (CPK-like), others from a fixed cycle.
_COLOURS = {"H": "white", "C": "grey", "N": "blue", "O": "red", "Si": "goldenrod", "Ge": "teal", "Co": "royalblue",
            "Pd": "cyan", "Pt": "silver", "Ta": "orange", "Au": "gold", "Fe": "darkorange", "Ni": "green"}
_CYCLE = ("magenta", "lime", "pink", "yellow", "purple", "brown")


def _napari():
    try:
        import napari
    except ImportError:
        raise InputError("aetdask view: napari is not installed; expected `pip install 'aetdask[view]'` (or "
                         "`pip install napari[all]`), or export the volume and atoms for another viewer "
                         "(`aetdask export STORE --volume run.ome.zarr --atoms model.xyz`)") from None
    return napari


def layers(store) -> list[tuple]:
    """The layers of a store as napari layer-data tuples ``(data, kwargs, kind)``: the volume (z, y, x) scaled
    by its voxel size, and the store's result model as points in (z, y, x) Å with one colour per species."""
    from aetdask.stages import result_model

    rs = RunStore(store, create=False)
    out = []
    if "volume" in rs:
        vol = rs.read("volume")
        voxel = float(vol.attrs["voxel_size"])
        origin = [float(vol[d].values[0]) for d in vol.dims]
        out.append((vol.data, {"name": "volume", "scale": (voxel,) * 3, "translate": origin,
                               "colormap": "gray", "rendering": "mip"}, "image"))
    name = result_model(rs) or ("truth" if "truth" in rs else None)
    if name is not None:
        model = rs.read(name)
        pos = np.asarray(model.position.values, dtype=float)[:, ::-1]  # (x, y, z) → the volume's (z, y, x)
        species = model.species.values.astype(str)
        names = sorted(set(species))
        colours = {s: _COLOURS.get(s, _CYCLE[i % len(_CYCLE)]) for i, s in enumerate(names)}
        features = {"species": species}
        if "position_sigma" in model:
            features["sigma_pm"] = 100.0 * np.sqrt(np.mean(model.position_sigma.values ** 2, axis=1))
        out.append((pos, {"name": f"atoms ({name})", "features": features, "size": 1.0,
                          "face_color": [colours[s] for s in species], "border_width": 0}, "points"))
    if not out:
        raise InputError(f"{rs.path}: nothing to view (it has {rs.products()}); expected a store with a volume or "
                         "an atomic model")
    return out


def view(store, block: bool = True):
    """Open napari with the layers of :func:`layers`; returns the viewer (``block``: run napari's event loop)."""
    found = layers(store)  # the store's own faults first: they hold with napari installed too
    napari = _napari()
    viewer = napari.Viewer(title=f"aetdask: {store}")
    for data, kwargs, kind in found:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.dims.axis_labels = ("z (Å)", "y (Å)", "x (Å)")
    if block:
        napari.run()
    return viewer
