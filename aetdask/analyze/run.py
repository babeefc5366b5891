"""Structure analysis of an atomic model, end to end: one call, one Dataset.

Two Dask passes over spatial blocks: first the RDFs (their first valley is the
first-shell cutoff everything else uses), then the local structure (bond order,
Voronoi cells, polytetrahedral motifs) and the rings. The small global steps —
crystal nuclei, pentagonal-bipyramid networks, icosahedra, coordination numbers,
the density grid — run on the joined per-block results.
"""

from __future__ import annotations

import time

import numpy as np
import xarray as xr

from aetdask import config
from aetdask.analyze import local
from aetdask.analyze.radial import peaks_and_valleys
from aetdask.analyze.radial import rdf as rdf_stage
from aetdask.cluster import compute
from aetdask.errors import InputError
from aetdask.kernels.structure import bond_order as bo
from aetdask.kernels.structure import density as density_k
from aetdask.kernels.structure import polytetrahedra as pt
from aetdask.kernels.structure.neighbors import neighbor_pairs
from aetdask.schema import provenance_record, validate_atoms

#: Parameters read from ``aetdask.analyze.*`` when not given.
PARAMETERS = ("r_max", "dr", "cutoff", "area_fraction", "delta_max", "deltas", "order_threshold",
              "nucleus_min", "partial_icosahedron", "ring_max", "density_spacing", "density_sigma", "block")


#: Most RDF shells (r_max / dr): 10 nm in 0.1 Å shells is 1e4.
MAX_SHELLS = 1e6
#: Thinnest RMS extent (Å) of a model along its thinnest direction: a line or a plane of atoms has no volume, and
#: the RDF's normalisation (the particle's shape), its Voronoi cells and its density need one.
MIN_THICKNESS = 0.01


def _check_model(pos: np.ndarray, p: dict) -> None:
    """Refuse a model that cannot be analysed, before any work: atoms on a line or in a plane (no volume for the
    RDF's shape, the Voronoi cells and the density), or a density grid larger than this machine's memory."""
    from aetdask.plausibility import memory_limit

    n = len(pos)
    extent = np.ptp(pos, axis=0)
    with np.errstate(all="ignore"):
        spread = np.linalg.svd(pos - pos.mean(axis=0), compute_uv=False) / np.sqrt(n)  # RMS extent, widest first
    if not np.all(np.isfinite(spread)):
        raise InputError(f"analyze: the atoms' coordinates reach {np.abs(pos).max():.3g} Å, too large to compute "
                         "with; expected positions in Å of a particle")
    if spread[2] < MIN_THICKNESS:
        shape = "on one point" if spread[0] < MIN_THICKNESS else "on a line" if spread[1] < MIN_THICKNESS else "in a plane"
        raise InputError(f"analyze: the {n} atoms lie {shape} (RMS thickness {spread[2]:.2g} Å across the thinnest "
                         f"direction), which has no volume; expected a 3-D model (its RDF is normalised by the "
                         "particle's shape, and Voronoi cells and density need a volume)")
    # the local-density grid: density_spacing apart over the model and 3σ around it; 4 float64 arrays of it
    # (weights, weighted densities, the Gaussian filter's output, the ratio)
    spacing, pad = float(p["density_spacing"]), 3.0 * float(p["density_sigma"])
    voxels = float(np.prod(np.floor((extent + 2 * pad) / spacing) + 1))
    need = 4 * 8 * voxels
    limit = memory_limit()
    if limit is not None and need > limit:
        size = "×".join(str(int(v)) for v in np.floor((extent + 2 * pad) / spacing) + 1)
        raise InputError(f"analyze: the model spans {' × '.join(f'{v:.3g}' for v in extent)} Å, so its local-density "
                         f"grid ({size} voxels of {spacing:g} Å) needs {need / 2**30:.3g} GiB of memory, more than the "
                         f"{limit / 2**30:.3g} GiB this machine has; expected a particle a few nm across with "
                         "positions in Å (or a larger analyze.density_spacing)")


def _parameters(overrides: dict) -> dict:
    p = {k: config.get(f"analyze.{k}") for k in PARAMETERS}
    unknown = set(overrides) - set(PARAMETERS)
    if unknown:
        raise InputError(f"analyze: unknown parameter(s) {sorted(unknown)}; known: {list(PARAMETERS)}")
    p.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("r_max", "dr", "block", "density_spacing", "density_sigma"):
        if not float(p[key]) > 0:
            raise InputError(f"analyze: {key} must be positive, got {p[key]}")
    if p["cutoff"] is not None and not float(p["cutoff"]) > 0:
        raise InputError(f"analyze: cutoff must be positive, got {p['cutoff']}")
    if int(p["ring_max"]) < 3:
        raise InputError(f"analyze: ring_max must be at least 3, got {p['ring_max']}")
    shells = float(p["r_max"]) / float(p["dr"])
    if shells < 1:
        raise InputError(f"analyze: r_max = {p['r_max']:g} Å is less than one RDF shell (dr = {p['dr']:g} Å); expected "
                         "r_max ≥ dr (the first shell of neighbours lies at 2–3 Å)")
    if shells > MAX_SHELLS:
        raise InputError(f"analyze: r_max / dr = {p['r_max']:g} Å / {p['dr']:g} Å is {shells:.3g} RDF shells; expected at "
                         f"most {MAX_SHELLS:.0e} (an RDF resolves structure to a few nm in 0.1 Å shells)")
    p["deltas"] = sorted({float(d) for d in p["deltas"]} | {float(p["delta_max"])})
    return p


def bonded_pairs(extrema: dict, cutoff: float) -> dict:
    """Species pairs that form bonds: those whose partial RDF peaks inside the first shell.

    In silica the Si–O peak (1.6 Å) lies inside the total RDF's first valley (2.1 Å);
    the O–O (2.6 Å) and Si–Si (3.1 Å) peaks do not, so rings run over Si–O bonds only
    and an O–O pair that happens to be short is not a bond.

    >>> ext = {"total": {}, "O-O": {"first_peak": 2.6}, "O-Si": {"first_peak": 1.6}, "Si-Si": {"first_peak": 3.1}}
    >>> bonded_pairs(ext, 2.1)
    {('O', 'Si'): 2.1}
    """
    out = {}
    for name, e in extrema.items():
        if name == "total" or e.get("first_peak") is None or e["first_peak"] >= cutoff:
            continue
        a, b = name.split("-")
        out[(a, b)] = float(cutoff)
    return out


def network_former(species, i, j) -> str | None:
    """The species with the highest mean first-shell coordination, for models of two or more."""
    symbols = np.unique(species)
    if len(symbols) < 2:
        return None
    cn = np.bincount(np.concatenate([i, j]), minlength=len(species))
    return str(max(symbols, key=lambda s: cn[species == s].mean()))


def coordination(species, i, j) -> dict:
    """Mean number of first-shell neighbours of each species, by neighbour species.

    >>> sp = np.array(["Si", "O", "O"])
    >>> coordination(sp, np.array([0, 0]), np.array([1, 2]))
    {'O': {'O': 0.0, 'Si': 1.0, 'all': 1.0}, 'Si': {'O': 2.0, 'Si': 0.0, 'all': 2.0}}
    """
    symbols = np.unique(species)
    out = {}
    for a in symbols:
        na = max(int(np.sum(species == a)), 1)
        row = {}
        for b in symbols:
            n = np.sum((species[i] == a) & (species[j] == b)) + np.sum((species[j] == a) & (species[i] == b))
            row[str(b)] = float(n) / na
        row["all"] = float(sum(row.values()))
        out[str(a)] = row
    return out


def analyze(atoms: xr.Dataset, *, progress: bool = False, **overrides) -> xr.Dataset:
    """Structure analysis of an atomic model (Yuan et al. 2022; see :mod:`aetdask.analyze`).

    Parameters
    ----------
    atoms : Dataset
        Any atomic model: traced, ground truth or from molecular dynamics (Å).
    progress : bool
        Progress bars for the two Dask passes.
    **overrides
        Any of :data:`PARAMETERS` (default: ``aetdask.analyze.*``).

    Returns
    -------
    Dataset with per-atom results (dim ``atom``), the RDFs (``r``, ``pair``), the
    motif fractions against ``delta``, ring and network histograms and the local
    mass density grid; ``attrs["summary"]`` holds the headline numbers (JSON-able).

    Examples
    --------
    >>> from aetdask.simulate.amorphous import amorphous_particle
    >>> res = analyze(amorphous_particle(400, species=["Ta"], seed=1), r_max=8.0)
    >>> res.sizes["atom"], sorted(res.attrs["summary"]["coordination"])
    (400, ['Ta'])
    """
    atoms = validate_atoms(atoms)
    p = _parameters(overrides)
    pos = np.asarray(atoms.position.values, dtype=np.float64)
    species = atoms.species.values.astype(str)
    n = len(pos)
    if n < 5:
        raise InputError(f"analyze: a model needs at least 5 atoms, got {n}")
    _check_model(pos, p)
    t0 = time.perf_counter()

    # pass 1: RDFs, and the first-shell cutoff from the total RDF's first valley
    (g,) = compute([rdf_stage(atoms, r_max=p["r_max"], dr=p["dr"], block=p["block"])], progress, "analyze: RDF")
    extrema = peaks_and_valleys(g)
    cutoff = p["cutoff"]
    if cutoff is None:
        cutoff = extrema["total"]["first_valley"]
        if cutoff is None:
            raise InputError("analyze: the total RDF has no first valley within r_max; give cutoff= or a larger r_max")
    cutoff = float(cutoff)

    # pass 2: local structure and rings, block by block
    i, j, _ = neighbor_pairs(pos, cutoff)
    bonds = bonded_pairs(extrema, cutoff)
    # ring sizes in network formers only where bonds strictly alternate (silica: Si–O only)
    alternating = bool(bonds) and all(a != b for a, b in bonds)
    former = network_former(species, i, j) if alternating else None
    tasks = local.local_structure(pos, cutoff, block=p["block"], area_fraction=p["area_fraction"],
                                  delta_max=p["delta_max"], deltas=p["deltas"])
    ring_tasks = local.ring_structure(pos, species, bonds, block=p["block"], ring_max=p["ring_max"], former=former)
    blocks, ring_blocks = compute([tasks, ring_tasks], progress, "analyze: local structure and rings")

    ds = _per_atom(atoms, blocks, n)
    # the fcc-normalised order separates crystal from glass in close-packed (metallic)
    # models; open networks (a-Si, silica: 2–4 neighbours) score high without any crystal
    close_packed = float(np.median(ds.neighbors.values)) >= 8
    crystalline = (ds.bond_order.values >= p["order_threshold"]) & close_packed
    nucleus, nucleus_sizes = bo.crystal_nuclei(crystalline, i, j, min_size=p["nucleus_min"])
    ds["crystalline"] = ("atom", crystalline)
    ds["nucleus"] = ("atom", nucleus)

    motif = _motifs(blocks, pos, n, p)
    rings = _rings(ring_blocks, former, p["ring_max"])
    rings["summary"]["bonds"] = ["-".join(k) for k in bonds]
    dens = _density(pos, species, ds.voronoi_volume.values, p)
    ds = xr.merge([ds, g.rename({"volume": "shape_volume"}), motif.pop("dataset"), rings.pop("dataset"), dens.pop("dataset")],
                  combine_attrs="override")
    ds["pb_count"] = ("atom", motif["icosahedra"]["pb_count"])
    ds["icosahedron"] = ("atom", np.where(motif["icosahedra"]["full"], 2, np.where(motif["icosahedra"]["partial"], 1, 0)),
                         {"meaning": "0 none, 1 partial, 2 full icosahedron centre"})

    interior = ds.voronoi_interior.values
    idx = np.column_stack([ds.voronoi_index.values, ds.voronoi_n7plus.values])[interior]
    top = _top_indices(idx, 10)
    summary = {
        "n_atoms": n,
        "species": {str(s): int(np.sum(species == s)) for s in np.unique(species)},
        "cutoff": cutoff,
        "rdf": extrema,
        "number_density": n / float(g.volume),
        "coordination": coordination(species, i, j),
        "bond_order": {
            "mean_q4": float(np.nanmean(ds.q4.values)),
            "mean_q6": float(np.nanmean(ds.q6.values)),
            "crystalline_fraction": float(crystalline.mean()) if close_packed else None,
            "close_packed": close_packed,
            "nuclei": len(nucleus_sizes),
            "largest_nucleus": int(nucleus_sizes[0]) if len(nucleus_sizes) else 0,
        },
        "voronoi": {
            "interior_atoms": int(interior.sum()),
            "mean_coordination": float(np.mean(ds.voronoi_coordination.values[interior])) if interior.any() else None,
            "five_edged_fraction": float(np.nanmean(ds.five_edged_fraction.values[interior])) if interior.any() else None,
            "top_indices": top,
        },
        "motifs": motif["summary"],
        "rings": rings["summary"],
        "density": dens["summary"],
        "parameters": {k: v for k, v in p.items() if k != "deltas"},
        "seconds": round(time.perf_counter() - t0, 3),
    }
    ds.attrs = {
        "summary": summary,
        "provenance": list(atoms.attrs.get("provenance", [])) + [provenance_record("analyze", {**p, "cutoff": cutoff})],
    }
    return ds


def _per_atom(atoms, blocks, n) -> xr.Dataset:
    ids = np.concatenate([b["ids"] for b in blocks])
    if not np.array_equal(np.sort(ids), np.arange(n)):
        raise RuntimeError("analyze: blocks do not own every atom exactly once")

    def gather(key, fill, dtype=None):
        first = np.asarray(blocks[0][key])
        out = np.full((n,) + first.shape[1:], fill, dtype=dtype or first.dtype)
        for b in blocks:
            out[b["ids"]] = b[key]
        return out

    ds = xr.Dataset(
        {
            "position": atoms.position,
            "species": atoms.species,
            "q4": ("atom", gather("q4", np.nan)),
            "q6": ("atom", gather("q6", np.nan)),
            "bond_order": ("atom", gather("order", np.nan), {"long_name": "√(Q4²+Q6²) normalised to fcc"}),
            "neighbors": ("atom", gather("neighbors", 0)),
            "voronoi_index": (("atom", "face_edges"), gather("voronoi_index", -1)),
            "voronoi_n7plus": ("atom", gather("voronoi_n7plus", -1)),
            "voronoi_coordination": ("atom", gather("voronoi_coordination", -1)),
            "voronoi_volume": ("atom", gather("voronoi_volume", np.nan), {"units": "Å³"}),
            "voronoi_interior": ("atom", gather("voronoi_interior", False)),
            "five_edged_fraction": ("atom", gather("voronoi_five_edged_fraction", np.nan)),
        },
        coords={"face_edges": [3, 4, 5, 6]},
    )
    return ds


def _motifs(blocks, pos, n, p) -> dict:
    deltas = p["deltas"]
    fractions = np.zeros((len(deltas), len(local.MOTIFS)))
    for q in range(len(deltas)):
        for t in range(len(local.MOTIFS)):
            members = np.concatenate([b["members"][q][t] for b in blocks])
            fractions[q, t] = len(np.unique(members)) / n
    pb = np.concatenate([b["pb"] for b in blocks]).reshape(-1, 7)
    pb = pb[np.lexsort(pb.T[::-1])]  # canonical order: networks numbered alike however the model was cut
    nets = pt.pb_networks(pb, pos) if len(pb) else {"size": np.zeros(0, int), "length": np.zeros(0), "n_atoms": np.zeros(0, int)}
    ico = pt.icosahedra(pb, n, partial_min=int(p["partial_icosahedron"]))
    tet_delta = np.sort(np.concatenate([b["tet_delta"] for b in blocks]))
    order = np.concatenate([b["motif_order"] for b in blocks])
    closed = np.concatenate([b["motif_closed"] for b in blocks])
    at = deltas.index(float(p["delta_max"]))
    summary = {
        "tetrahedra": int(np.sum(tet_delta <= p["delta_max"])),
        "tetrahedra_all": len(tet_delta),
        "motif_fractions": {m: float(fractions[at, t]) for t, m in enumerate(local.MOTIFS)},
        "pentagonal_bipyramids": len(pb),
        "closed_bipyramids": {str(k): int(np.sum(closed & (order == k))) for k in (4, 5, 6)},
        "pb_networks": len(nets["size"]),
        "largest_network": int(np.max(nets["size"])) if len(nets["size"]) else 0,
        "longest_network": float(np.max(nets["length"])) if len(nets["length"]) else 0.0,
        "full_icosahedra": int(ico["full"].sum()),
        "partial_icosahedra": int(ico["partial"].sum()),
    }
    data = xr.Dataset(
        {
            "motif_fraction": (("delta", "motif"), fractions),
            "network_size": ("network", np.asarray(nets["size"], dtype=np.int64)),
            "network_length": ("network", np.asarray(nets["length"], dtype=float), {"units": "Å"}),
            "network_atoms": ("network", np.asarray(nets["n_atoms"], dtype=np.int64)),
            "tetrahedron_delta": ("tetrahedron", tet_delta, {"long_name": "distortion of every tetrahedron, ascending"}),
        },
        coords={"delta": deltas, "motif": list(local.MOTIFS)},
    )
    return {"dataset": data, "summary": summary, "icosahedra": ico}


def _rings(ring_blocks, former, ring_max) -> dict:
    sizes = np.concatenate([b["sizes"] for b in ring_blocks]).astype(np.int64)
    alternating = np.concatenate([b["alternating"] for b in ring_blocks]).astype(bool)
    hist = np.bincount(sizes, minlength=ring_max + 1)
    data = {"ring_count": ("ring_size", hist)}
    summary = {
        "rings": len(sizes),
        "max_size": int(ring_max),
        "histogram": {str(k): int(v) for k, v in enumerate(hist) if v},
        "alternating_fraction": float(alternating.mean()) if len(sizes) else None,
        "network_former": former,
    }
    if former is not None:
        fsizes = np.concatenate([b["former_sizes"] for b in ring_blocks]).astype(np.int64)
        fhist = np.bincount(fsizes, minlength=ring_max + 1)
        data["ring_count_former"] = ("ring_size", fhist)
        summary["former_histogram"] = {str(k): int(v) for k, v in enumerate(fhist) if v}
    ds = xr.Dataset(data, coords={"ring_size": np.arange(ring_max + 1)})
    return {"dataset": ds, "summary": summary}


def _density(pos, species, volumes, p) -> dict:
    masses = density_k.atomic_mass(species)
    per_atom = masses / volumes * density_k.AMU_PER_A3_IN_G_PER_CM3
    if np.any(~np.isnan(volumes)):
        grid, origin = density_k.local_density(pos, masses, volumes, spacing=float(p["density_spacing"]),
                                               sigma=float(p["density_sigma"]))
    else:  # no atom inside the model (a few atoms, or a cutoff too short): every cell reaches the surface
        grid, origin = np.full((1, 1, 1), np.nan), pos.mean(axis=0)
    h = float(p["density_spacing"])
    axes = {d: origin[k] + h * np.arange(grid.shape[k]) for k, d in enumerate(("gz", "gy", "gx"))}
    ds = xr.Dataset(
        {
            "density": ("atom", per_atom, {"units": "g/cm³", "long_name": "atomic mass / Voronoi volume"}),
            "density_grid": (("gz", "gy", "gx"), grid, {"units": "g/cm³"}),
        },
        coords=axes,
    )
    ok = np.isfinite(per_atom)
    summary = {
        "mean_interior": (float(np.sum(masses[ok]) / np.sum(volumes[ok]) * density_k.AMU_PER_A3_IN_G_PER_CM3)
                          if ok.any() else None),
        "grid_spacing": h,
        "sigma": float(p["density_sigma"]),
    }
    return {"dataset": ds, "summary": summary}


def _top_indices(index, k: int) -> list:
    """The ``k`` most frequent Voronoi indices (rows n3, n4, n5, n6, n7+) and their fractions."""
    if len(index) == 0:
        return []
    rows, counts = np.unique(index, axis=0, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:k]

    def label(row):
        text = "<" + ",".join(str(int(v)) for v in row[:4]) + ">"
        return text + (f"+{int(row[4])}" if row[4] else "")  # faces of 7 or more edges

    return [{"index": label(rows[o]), "fraction": float(counts[o] / len(index))} for o in order]
