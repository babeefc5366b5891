"""The run report: one PNG of the run's key figures and an HTML page around it."""

from __future__ import annotations

import base64
import html
import pathlib

import numpy as np

from aetdask import plot
from aetdask.errors import StoreError
from aetdask.evaluate import evaluate, scanned_region, to_json
from aetdask.geometry import detector_coordinates
from aetdask.io import RunStore
from aetdask.model.refine import render_profiles
from aetdask.reconstruct.stage import reconstruction_record
from aetdask.schema import last_record


def model_projection(refined, tilts, k: int) -> np.ndarray:
    """The refined model seen at projection ``k``: background + scale × the atoms' Gaussian profiles, as fitted."""
    p = last_record(refined, "refine")
    n = tilts.sizes["y"]
    pixel = float(tilts.attrs["pixel_size"])
    angles = np.array([[float(tilts.phi[k]), float(tilts.theta[k]), float(tilts.psi[k])]])
    det = detector_coordinates(refined.position.values, angles) / pixel + n // 2
    det = det + np.array([p["offset_y"][k], p["offset_x"][k]])
    img = render_profiles(p, refined.species.values, det, n, pixel)[0]
    return p["background"][k] + p["scale"][k] * img


#: The report's files next to the run store: ``STORE-report.png`` and ``STORE-report.html``.
REPORT_FILES = ("-report.png", "-report.html")


def metrics_table(m: dict) -> str:
    """An evaluation (:func:`aetdask.evaluate.to_json`) as an HTML table: the seed paper's metric and the strict
    one-to-one match, overall and per species."""

    def pct(v):
        return "–" if v is None else f"{v:.1f} %"

    def pm(v):
        return "–" if v is None else f"{v:.1f} pm"

    strict = m.get("strict", {})
    rows = [("all", m.get("overall", {}), strict)]
    rows += [(sym, r, strict.get("species", {}).get(sym, {})) for sym, r in m.get("species", {}).items()]
    cells = "".join(
        f"<tr><td>{html.escape(str(name))}</td><td>{pct(o.get('identification_pct'))}</td>"
        f"<td>{o.get('matched', '–')} / {o.get('truth', '–')}</td><td>{o.get('traced', '–')}</td>"
        f"<td>{pm(o.get('precision_pm'))}</td><td>{s.get('true_positives', '–')}</td>"
        f"<td>{s.get('false_positives', '–')}</td><td>{s.get('false_negatives', '–')}</td>"
        f"<td>{pm(s.get('rmsd_pm'))}</td></tr>" for name, o, s in rows)
    return (f"<h2>Evaluation against the truth (matching distance {m.get('cutoff', '?')} Å)</h2>"
            "<table border=1 cellpadding=4><tr><th rowspan=2>species</th><th colspan=4>the seed paper's metric</th>"
            "<th colspan=4>strict one-to-one</th></tr><tr><th>identified</th><th>matched / truth</th><th>traced</th>"
            "<th>precision</th><th>true positives</th><th>false positives</th><th>false negatives</th><th>RMSD</th></tr>"
            f"{cells}</table>")


def write_report(store, truth=None, cutoff: float | None = None, overwrite: bool = False
                 ) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``STORE-report.png`` and ``STORE-report.html`` next to the run store; return their paths.

    A file of either name that aetdask did not write for this store is refused (:class:`StoreError`) unless
    ``overwrite`` (:meth:`RunStore.write_beside`), before anything is computed.

    Panels: a projection raw / preprocessed / as the refined model predicts it;
    the volume's central slices; the traced-intensity histogram with the
    classes; the R-factor per iteration; and, with ``truth`` (an atom file or
    Dataset; by default the store's own truth when it holds one) and ``cutoff``
    (Å; default ``evaluate.cutoff``), the identification and precision with a
    histogram of position errors (else the refinement's displacements), and a
    table of the scores in the HTML page (``metrics.json`` in the store).
    """
    store = store if isinstance(store, RunStore) else RunStore(store, create=False)
    missing = [p for p in ("raw", "volume") if p not in store]
    if missing:
        raise StoreError(f"{store.path}: nothing to report yet (missing {missing})")
    store.check_beside(REPORT_FILES, overwrite, "aetdask report")
    plt = plot._pyplot()
    raw = store.read("raw")
    pre = store.read("preprocessed") if "preprocessed" in store else None
    volume = store.read("volume")
    from aetdask.stages import result_model

    name = result_model(store)
    model = store.read(name) if name else None
    k = int(np.argmin(np.abs(raw.theta.values)))
    metrics = None
    if truth is None and "truth" in store:  # a simulation's store: scored against the particle it came from
        truth = store.read("truth")
    if truth is not None and model is not None:
        from aetdask import config

        metrics = evaluate(model, truth, cutoff if cutoff is not None else config.get("evaluate.cutoff"),
                           region=scanned_region(store))
        store.write_json("metrics.json", to_json(metrics))

    fig = plt.figure(figsize=(13, 12.5), layout="constrained")
    grid = fig.add_gridspec(3, 3)
    images = [("raw counts", raw[k].values)]
    if pre is not None:
        images.append(("preprocessed", pre[k].values))
    if model is not None and last_record(model, "refine"):
        images.append(("refined model, reprojected", model_projection(model, raw, k)))
    ext = [float(raw.x[0]), float(raw.x[-1]), float(raw.y[-1]), float(raw.y[0])]
    for c, (label, img) in enumerate(images):
        ax = fig.add_subplot(grid[0, c])
        ax.imshow(np.asarray(img, float), cmap="gray", extent=ext)
        ax.set_title(f"{label}, θ = {float(raw.theta[k]):.1f}°", fontsize=10)
        ax.set_xlabel("x (Å)")
        ax.set_ylabel("y (Å)")
    v = np.asarray(volume.values, dtype=float)
    nz, ny, nx = v.shape
    c = {d: volume[d].values for d in ("z", "y", "x")}
    for col, (label, img, h, w, xl, yl) in enumerate([
        ("volume, z = 0", v[nz // 2], c["x"], c["y"], "x (Å)", "y (Å)"),
        ("volume, y = 0", v[:, ny // 2], c["x"], c["z"], "x (Å)", "z (Å)"),
        ("volume, x = 0", v[:, :, nx // 2], c["y"], c["z"], "y (Å)", "z (Å)"),
    ]):
        ax = fig.add_subplot(grid[1, col])
        ax.imshow(img, cmap="magma", extent=[h[0], h[-1], w[-1], w[0]])
        ax.set_title(label, fontsize=10)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)

    ax = fig.add_subplot(grid[2, 0])
    if "candidates" in store:
        cand = store.read("candidates")
        ax.hist(cand.intensity.values, bins=100, color="0.6", label="candidates")
        cls = last_record(store.read("atoms"), "classify") if "atoms" in store else None
        if cls:
            for b in cls["boundaries"]:
                ax.axvline(b, color="C3", lw=1)
            counts = ", ".join(f"{n} {s}" for s, n in cls["counts"].items())
            ax.set_title(f"traced intensity: {cls['non_atoms']} non-atoms | {counts}", fontsize=10)
        ax.set_xlabel("integrated intensity")
        ax.set_ylabel("candidates")
        ax.set_yscale("log")
    ax = fig.add_subplot(grid[2, 1])
    rec = reconstruction_record(volume)
    if rec and rec.get("r_factor"):
        ax.plot(np.arange(1, len(rec["r_factor"]) + 1), rec["r_factor"])
        ax.set_title(f"{rec['method']}: R = {rec['r_final']:.4f}", fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel("R-factor")
    ax = fig.add_subplot(grid[2, 2])
    if metrics is not None:
        o, s = metrics["overall"], metrics["strict"]
        err = np.asarray(metrics.get("errors_pm", []))
        if err.size:
            ax.hist(err, bins=40, color="C0")
        ax.set_title(f"{o['identification_pct']:.1f}% identified, {o['precision_pm']:.1f} pm; "
                     f"strict FP {s['false_positives']} FN {s['false_negatives']}", fontsize=10)
        ax.set_xlabel("position error (pm)")
        ax.set_ylabel("atoms")
    elif model is not None and "displacement" in model:
        ax.hist(model.displacement.values * 100, bins=40, color="C0")
        ax.set_title("refinement: displacement from the traced position", fontsize=10)
        ax.set_xlabel("displacement (pm)")
        ax.set_ylabel("atoms")
    fig.suptitle(f"aetdask run {store.path.name}", fontsize=12)
    png = store.write_beside(REPORT_FILES[0], lambda tmp: plot._save(fig, tmp), overwrite, "aetdask report")

    run = store.read_json("run.json") or {}
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{info.get('seconds', 0):.1f}</td>"
        f"<td>{html.escape(str(info.get('note', '')))}</td></tr>"
        for name, info in run.get("stages", {}).items())
    body = (f"<h1>aetdask run {html.escape(store.path.name)}</h1>"
            f"<table border=1 cellpadding=4><tr><th>stage</th><th>seconds</th><th>result</th></tr>{rows}</table>")
    if metrics is not None:
        body += metrics_table(to_json(metrics))
    body += f'<p><img src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}" width="100%"></p>'
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>aetdask report</title></head>"
            f"<body style='font-family:sans-serif'>{body}</body></html>")
    page = store.write_beside(REPORT_FILES[1], lambda tmp: tmp.write_text(text), overwrite, "aetdask report")
    return png, page


#: The preprocessing figure's file next to the run store.
PREPROCESSING_FIGURE = "-preprocessing.png"


def preprocessing_figure(store, overwrite: bool = False) -> pathlib.Path:
    """Write ``STORE-preprocessing.png``: for a few projections (``preprocess.panel_tilts``), the raw counts, the
    denoised image and the background-subtracted, aligned projection; return its path. A file of that name
    that aetdask did not write for this store is refused unless ``overwrite``."""
    from aetdask import config
    from aetdask.preprocess import aligned, denoise_image

    store = store if isinstance(store, RunStore) else RunStore(store, create=False, writable=True)
    store.check_beside([PREPROCESSING_FIGURE], overwrite, "aetdask preprocess")
    raw, pre = store.read("raw"), store.read("preprocessed")
    n = pre.sizes["tilt"]
    picks = np.unique(np.linspace(0, n - 1, config.get("preprocess.panel_tilts")).round().astype(int))
    method = pre.attrs["provenance"][-1]["params"]["denoiser"]
    shown = aligned(pre)
    rows = {}
    for k in picks:
        img = raw[k].values
        den = denoise_image(img, float(pre.noise_alpha[k]), float(pre.noise_sigma[k]), method)
        rows[f"θ = {float(pre.theta[k]):.1f}°"] = {"raw": img, f"denoised ({method})": den,
                                                   "background subtracted, aligned": shown[k].values}
    return store.write_beside(PREPROCESSING_FIGURE, lambda tmp: plot.preprocessing_panel(rows, tmp), overwrite,
                              "aetdask preprocess")
