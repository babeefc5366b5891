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

    The HTML page also holds the atomic model: an interactive 3-D view drawn by
    the page itself (:mod:`aetdask.report_view`; coloured or sized by each
    atom's σ and, with a truth, its error), the model's predicted precision,
    slabs through the volume with the atoms overlaid
    (:func:`aetdask.plot.model_slices`) and the uncertainty figures
    (:func:`aetdask.plot.uncertainty_panel`).
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

    view, figures = model_sections(store, model, volume, truth, metrics)
    run = store.read_json("run.json") or {}
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{info.get('seconds', 0):.1f}</td>"
        f"<td>{html.escape(str(info.get('note', '')))}</td></tr>"
        for name, info in run.get("stages", {}).items())
    body = f"<h1>aetdask run {html.escape(store.path.name)}</h1>" + view
    if metrics is not None:
        body += metrics_table(to_json(metrics))
    body += ("<h2>Stages</h2><table border=1 cellpadding=4><tr><th>stage</th><th>seconds</th><th>result</th></tr>"
             f"{rows}</table>") + figures
    body += _img(png.read_bytes(), "the run's key figures")
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>aetdask report</title></head>"
            f"<body style='font-family:sans-serif'>{body}</body></html>")
    page = store.write_beside(REPORT_FILES[1], lambda tmp: tmp.write_text(text), overwrite, "aetdask report")
    return png, page


def atom_errors(model, truth, cutoff: float, region=None) -> np.ndarray:
    """Each model atom's error against the truth, ``truth − (model + shift)`` (n, 3; Å), matched as the
    evaluation matches (:func:`aetdask.evaluate.evaluate`, the seed paper's rule); NaN for atoms not matched
    (or outside ``region``)."""
    from aetdask import config
    from aetdask.kernels.atoms.metrics import paper_match

    q, t = model.position.values, truth.position.values
    inside, tin = np.ones(len(q), bool), np.ones(len(t), bool)
    if region is not None:
        lo, hi = (np.asarray(v, dtype=float) for v in region)
        inside, tin = np.all((q >= lo) & (q <= hi), axis=1), np.all((t >= lo) & (t <= hi), axis=1)
    out = np.full((len(q), 3), np.nan)
    if inside.any() and tin.any():
        m = paper_match(q[inside], t[tin], model.species.values[inside].astype(str),
                        truth.species.values[tin].astype(str), float(cutoff), center=region is None,
                        tolerance=config.get("evaluate.tolerance"), max_iterations=config.get("evaluate.max_iterations"))
        out[inside] = m["diff"]
    return out


def _support(store, volume):
    """Points on the surface of the reconstruction's support, when the store holds one (a ``support`` product
    or a ``support`` mask on the volume's grid); else None."""
    from aetdask.report_view import support_outline

    mask = None
    if "support" in store:
        mask = store.read("support")
    elif "support" in getattr(volume, "coords", {}):
        mask = volume.coords["support"]
    if mask is None or getattr(mask, "ndim", 0) != 3:
        return None
    return support_outline(np.asarray(mask), [np.asarray(mask[d].values if d in mask.coords else volume[d].values)
                                              for d in ("z", "y", "x")])


def model_summary(model, metrics=None) -> str:
    """The model's atoms per species and its predicted precision (no truth needed; the refinement's
    Cramér–Rao bound, :func:`aetdask.model.uncertainty.predicted_precision_pm`) as an HTML table, with the
    measured precision beside it when the model was scored."""
    sp = model.species.values.astype(str)
    counts = ", ".join(f"{int((sp == s).sum())} {html.escape(s)}" for s in dict.fromkeys(sp))
    rows = [("atoms", f"{len(sp)} ({counts})")]
    rec = last_record(model, "refine") or {}
    if "position_sigma" in model:
        from aetdask.model.uncertainty import predicted_precision_pm

        sigma = model.position_sigma.values
        pred = rec.get("predicted_precision_pm", predicted_precision_pm(sigma))
        ok = np.all(np.isfinite(sigma), axis=1)
        axes = rec.get("position_sigma_pm") or [float(100 * np.sqrt(np.mean(sigma[ok, a] ** 2))) for a in range(3)]
        rows.append(("predicted precision (no truth needed)",
                     "–" if pred is None or not np.isfinite(pred) else f"{pred:.1f} pm"))
        rows.append(("σ per axis (RMS over the atoms)",
                     " / ".join("–" if v is None else f"{v:.1f}" for v in axes) + " pm (x / y / z)"))
        for s in dict.fromkeys(sp):
            rows.append((f"predicted precision, {html.escape(s)}", f"{predicted_precision_pm(sigma[sp == s]):.1f} pm"))
        if rec.get("position_sigma_method"):
            rows.append(("how σ was found", html.escape(str(rec["position_sigma_method"]))
                         + (f", neighbours within {rec['position_sigma_radius']} Å" if rec.get("position_sigma_radius")
                            else "")))
    if metrics is not None and metrics.get("overall", {}).get("precision_pm") is not None:
        rows.append(("measured precision against the truth", f"{metrics['overall']['precision_pm']:.1f} pm"))
    cells = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return f"<h2>Model</h2><table border=1 cellpadding=4>{cells}</table>"


def _img(png: bytes, alt: str) -> str:
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}" width="100%"></p>'


def model_sections(store, model, volume, truth=None, metrics=None) -> tuple[str, str]:
    """The report's HTML about the atomic model, in two parts: the interactive 3-D view
    (:mod:`aetdask.report_view`) with the model's summary and predicted precision; and the figures: slabs
    through the volume with the atoms overlaid and the uncertainty across the particle (with a truth, the
    errors over σ against a unit normal). Both empty without a model."""
    from aetdask.report_view import species_colours, viewer_data, viewer_html

    if model is None or model.sizes.get("atom", 0) == 0:
        return "", ""
    q, sp = model.position.values, model.species.values.astype(str)
    colours = species_colours(dict.fromkeys(sp))
    sigma = model.position_sigma.values if "position_sigma" in model else None
    diff = None
    if truth is not None and metrics is not None:
        from aetdask.evaluate import load_model

        diff = atom_errors(model, load_model(truth, products=("truth",)), metrics["cutoff"], scanned_region(store))
    s3 = None if sigma is None else np.sqrt(np.sum(sigma ** 2, axis=1))
    data = viewer_data(q, sp, sigma=s3, error=None if diff is None else np.linalg.norm(diff, axis=1),
                       outline=_support(store, volume))
    figures = _img(plot.png_bytes(plot.model_slices(volume, q, sp, colours)), "slabs through the volume")
    if sigma is not None and np.isfinite(sigma).any():
        ratio = None if diff is None else diff / sigma
        figures += _img(plot.png_bytes(plot.uncertainty_panel(q, sp, sigma, colours, ratio)), "position uncertainty")
    return viewer_html(data) + model_summary(model, metrics), figures


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
