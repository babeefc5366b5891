"""The report's interactive 3-D view of an atomic model: one ``<div>`` with the model as JSON and a small
canvas renderer in plain JavaScript, so the HTML page stands alone (no network, no library).

The page holds positions rounded to 0.01 Å, one species index per atom and, when known, each atom's
uncertainty σ and its error against the truth (pm, rounded to 0.1 pm). Models of more than
:data:`MAX_ATOMS` atoms are subsampled evenly, and the page says so; above :data:`POINT_ATOMS` atoms
the renderer draws points instead of shaded spheres so that rotating stays fluid.
"""

from __future__ import annotations

import html
import json

import numpy as np

#: Most atoms written into the page; a larger model is subsampled (every k-th atom) and the page says so.
MAX_ATOMS = 60_000
#: Above this many atoms drawn, the renderer draws points rather than shaded spheres.
POINT_ATOMS = 15_000

#: Colours of the elements the seed paper and its peers image (Jmol's palette, darkened where it is too
#: light to see on white); other elements take the next colour of a qualitative cycle.
ELEMENT_COLOURS = {
    "H": "#bbbbbb", "C": "#555555", "N": "#3050f8", "O": "#e0201b", "Si": "#d9a040", "Ge": "#668f8f",
    "Sn": "#4f7f80", "Co": "#e36f8a", "Ni": "#50d050", "Cu": "#c88033", "Pd": "#1f8fb0", "Ag": "#909090",
    "Pt": "#6a5acd", "Au": "#e0b000", "Fe": "#e06633", "Ti": "#8f8f9f", "Al": "#a08f8f", "W": "#2194d6",
    "Ta": "#4da6ff", "Mo": "#54b5b5", "Zr": "#3fb8b8", "Pb": "#575961", "Se": "#ffa100", "Mn": "#9c7ac7",
}
_CYCLE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def species_colours(species) -> dict[str, str]:
    """A distinct colour for each species, in the order given.

    >>> species_colours(["Si", "Ge", "Xx"])
    {'Si': '#d9a040', 'Ge': '#668f8f', 'Xx': '#1f77b4'}
    """
    out, spare = {}, iter(_CYCLE * (len(list(species)) // len(_CYCLE) + 1))
    for s in species:
        out[str(s)] = ELEMENT_COLOURS.get(str(s)) or next(c for c in spare if c not in out.values())
    return out


def _pm(values) -> list | None:
    """Per-atom values in Å as pm rounded to 0.1 (None for what is not finite); None when there are none."""
    if values is None:
        return None
    v = np.round(100.0 * np.asarray(values, dtype=float), 1)
    return [float(x) if np.isfinite(x) else None for x in v]


def _range(values) -> list | None:
    v = np.asarray([x for x in (values or []) if x is not None], dtype=float)
    return [0.0, round(float(np.percentile(v, 98)) or 1.0, 1)] if v.size else None


def viewer_data(positions, species, *, sigma=None, error=None, outline=None, max_atoms: int = MAX_ATOMS) -> dict:
    """What the 3-D view draws, as a JSON-ready dict.

    Parameters
    ----------
    positions : array (n, 3)
        Atom positions (x, y, z) in Å.
    species : array (n,)
        Element symbols.
    sigma : array (n,), optional
        Each atom's position uncertainty σ in Å (e.g. the RMS over the axes).
    error : array (n,), optional
        Each atom's distance to its matched true atom in Å; NaN where unmatched.
    outline : array (m, 3), optional
        Points on the particle's (support's) surface in Å; without it the view draws the model's
        bounding box.
    max_atoms : int
        Most atoms kept; a larger model is subsampled evenly.

    Examples
    --------
    >>> d = viewer_data([[0, 0, 0], [1.234, 0, 0]], ["Si", "Ge"])
    >>> d["n_atoms"], d["species"], d["position"]
    (2, ['Si', 'Ge'], [0, 0, 0, 123, 0, 0])
    """
    q = np.asarray(positions, dtype=float).reshape(-1, 3)
    sp = np.asarray(species).astype(str)
    n = len(q)
    keep = np.arange(n) if n <= max_atoms else np.unique(np.linspace(0, n - 1, max_atoms).round().astype(int))
    names = list(dict.fromkeys(sp.tolist()))
    index = {s: i for i, s in enumerate(names)}
    lo, hi = (q.min(axis=0), q.max(axis=0)) if n else (np.zeros(3), np.zeros(3))
    sig = _pm(None if sigma is None else np.asarray(sigma, dtype=float)[keep])
    err = _pm(None if error is None else np.asarray(error, dtype=float)[keep])
    data = {
        "n_atoms": n, "n_drawn": int(len(keep)), "points": bool(len(keep) > POINT_ATOMS),
        "species": names, "colours": species_colours(names),
        "counts": {s: int((sp == s).sum()) for s in names},
        "position": np.round(100.0 * q[keep]).astype(int).ravel().tolist(),  # 0.01 Å
        "species_index": [index[s] for s in sp[keep]],
        "box": [np.round(lo, 2).tolist(), np.round(hi, 2).tolist()],
        "sigma": sig, "sigma_range": _range(sig), "error": err, "error_range": _range(err),
    }
    if outline is not None and len(outline):
        o = np.asarray(outline, dtype=float).reshape(-1, 3)
        o = o[np.unique(np.linspace(0, len(o) - 1, min(len(o), 4000)).round().astype(int))]
        data["outline"] = np.round(100.0 * o).astype(int).ravel().tolist()
    return data


def support_outline(mask, coords) -> np.ndarray | None:
    """Points (x, y, z; Å) on the surface of a support mask ``(z, y, x)`` given its axes' coordinates
    ``(z, y, x)``: the voxels inside with a neighbour outside; None for an empty mask."""
    from scipy import ndimage

    m = np.asarray(mask) > 0
    if not m.any():
        return None
    surface = m & ~ndimage.binary_erosion(m)
    iz, iy, ix = np.nonzero(surface)
    z, y, x = (np.asarray(c, dtype=float) for c in coords)
    return np.stack([x[ix], y[iy], z[iz]], axis=1)


def viewer_html(data: dict, title: str = "The atomic model in 3-D") -> str:
    """The view as an HTML fragment: a heading, the controls, the canvas, a legend and the renderer."""
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    note = ""
    if data["n_drawn"] < data["n_atoms"]:
        note = (f"<p class='aet-note'>Subsampled: {data['n_drawn']:,} of {data['n_atoms']:,} atoms are drawn "
                "(every atom in the files of the run store).</p>")
    options = "".join(f"<option value='{k}'>{label}</option>" for k, label in
                      [("species", "species"), ("sigma", "uncertainty σ"), ("error", "error vs truth")]
                      if k == "species" or data.get(k))
    sizes = "".join(f"<option value='{k}'>{label}</option>" for k, label in
                    [("uniform", "uniform"), ("sigma", "uncertainty σ"), ("error", "error vs truth")]
                    if k == "uniform" or data.get(k))
    return f"""<section id='aet-view' data-atoms='{data["n_drawn"]}' data-species='{len(data["species"])}'>
<h2>{html.escape(title)}</h2>
<p>Drag to rotate, wheel to zoom, double-click to reset (the address can choose the modes, e.g.
<code>#colour=sigma&amp;size=error</code>). {data["n_atoms"]:,} atoms;
{"points" if data["points"] else "spheres"} drawn. Axes and box in Å.</p>{note}
<p><label>colour by <select id='aet-view-colour'>{options}</select></label>
<label>size by <select id='aet-view-size'>{sizes}</select></label></p>
<div style='display:flex;gap:16px;align-items:flex-start'>
<canvas id='aet-view-canvas' width='760' height='560' style='border:1px solid #ccc;cursor:grab;touch-action:none'></canvas>
<div><div id='aet-view-legend'></div><div id='aet-view-bar'></div>
<p id='aet-view-status' style='color:#777;font-size:small'>3-D view: not drawn (JavaScript off?)</p></div></div>
<script type='application/json' id='aet-view-data'>{payload}</script>
<script>{VIEWER_SCRIPT}</script>
</section>"""


#: The renderer: an orthographic projection drawn back to front on a 2-D canvas.
VIEWER_SCRIPT = r"""
(function () {
  "use strict";
  var status = document.getElementById("aet-view-status");
  var section = document.getElementById("aet-view");
  window.addEventListener("error", function (e) { section.setAttribute("data-error", String(e.message)); });
  var D = JSON.parse(document.getElementById("aet-view-data").textContent);
  var canvas = document.getElementById("aet-view-canvas");
  var ctx = canvas.getContext("2d");
  var colourSel = document.getElementById("aet-view-colour");
  var sizeSel = document.getElementById("aet-view-size");
  var n = D.species_index.length;
  var P = new Float32Array(3 * n);
  for (var i = 0; i < 3 * n; i++) P[i] = D.position[i] / 100;
  var lo = D.box[0], hi = D.box[1];
  var centre = [0, 1, 2].map(function (a) { return (lo[a] + hi[a]) / 2; });
  var extent = Math.max(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2], 1);
  var outline = null;
  if (D.outline) { outline = []; for (i = 0; i < D.outline.length; i++) outline.push(D.outline[i] / 100); }
  var VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

  function rot(ax, a) {
    var c = Math.cos(a), s = Math.sin(a);
    return ax === 0 ? [1, 0, 0, 0, c, -s, 0, s, c] : ax === 1 ? [c, 0, s, 0, 1, 0, -s, 0, c] : [c, -s, 0, s, c, 0, 0, 0, 1];
  }
  function mul(A, B) {
    var C = new Array(9);
    for (var r = 0; r < 3; r++) for (var c = 0; c < 3; c++)
      C[3 * r + c] = A[3 * r] * B[c] + A[3 * r + 1] * B[3 + c] + A[3 * r + 2] * B[6 + c];
    return C;
  }
  var R0 = mul(rot(0, -1.2), rot(2, -0.6)), R = R0.slice(), zoom = 1;  // z up, x–y plane seen obliquely
  function scale() { return zoom * 0.52 * Math.min(canvas.width, canvas.height) / extent; }
  function project(x, y, z, s) {
    x -= centre[0]; y -= centre[1]; z -= centre[2];
    return [canvas.width / 2 + s * (R[0] * x + R[1] * y + R[2] * z),
            canvas.height / 2 - s * (R[3] * x + R[4] * y + R[5] * z),
            R[6] * x + R[7] * y + R[8] * z];
  }
  function viridis(t) {
    t = Math.max(0, Math.min(1, t)) * (VIRIDIS.length - 1);
    var k = Math.min(Math.floor(t), VIRIDIS.length - 2), f = t - k, a = VIRIDIS[k], b = VIRIDIS[k + 1];
    return "rgb(" + [0, 1, 2].map(function (j) { return Math.round(a[j] + f * (b[j] - a[j])); }).join(",") + ")";
  }
  function values(key) { return key === "sigma" ? D.sigma : key === "error" ? D.error : null; }
  function range(key) { return key === "sigma" ? D.sigma_range : D.error_range; }
  function label(key) { return key === "sigma" ? "σ, 3-D (pm)" : "error vs truth (pm)"; }

  function legend() {
    var key = colourSel.value, el = document.getElementById("aet-view-legend"), bar = document.getElementById("aet-view-bar");
    el.innerHTML = "<b>species</b>" + D.species.map(function (s) {
      return "<div><span style='display:inline-block;width:12px;height:12px;border-radius:6px;margin-right:6px;background:" +
        D.colours[s] + "'></span>" + s + " (" + D.counts[s] + ")</div>";
    }).join("");
    if (key === "species") { bar.innerHTML = ""; return; }
    var r = range(key), stops = VIRIDIS.map(function (c) { return "rgb(" + c.join(",") + ")"; }).join(",");
    bar.innerHTML = "<p><b>colour: " + label(key) + "</b></p>" +
      "<div style='width:200px;height:14px;background:linear-gradient(to right," + stops + ")'></div>" +
      "<div style='display:flex;justify-content:space-between;width:200px;font-size:small'><span>" + r[0] +
      "</span><span>" + (r[1] / 2).toFixed(1) + "</span><span>≥ " + r[1] + " pm</span></div>" +
      (key === "error" ? "<p style='font-size:small'>grey: no true atom within the matching distance</p>" : "");
  }

  function niceStep(span) {
    var raw = span / 4, p = Math.pow(10, Math.floor(Math.log10(raw))), m = raw / p;
    return p * (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10);
  }

  function drawBox(s, labels) {
    var corners = [];
    for (var c = 0; c < 8; c++) corners.push(project(c & 1 ? hi[0] : lo[0], c & 2 ? hi[1] : lo[1], c & 4 ? hi[2] : lo[2], s));
    ctx.strokeStyle = "#bbb"; ctx.lineWidth = 1;
    if (!outline) {
      [[0, 1], [2, 3], [4, 5], [6, 7], [0, 2], [1, 3], [4, 6], [5, 7], [0, 4], [1, 5], [2, 6], [3, 7]].forEach(function (e) {
        var a = corners[e[0]], b = corners[e[1]];
        ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
      });
    }
    // the three axes from the lower corner, with ticks in Å
    var names = ["x", "y", "z"], colours = ["#c0392b", "#27ae60", "#2e6fd8"];
    ctx.font = "12px sans-serif";
    for (var a = 0; a < 3; a++) {
      var end = [lo[0], lo[1], lo[2]]; end[a] = hi[a];
      var p0 = project(lo[0], lo[1], lo[2], s), p1 = project(end[0], end[1], end[2], s);
      ctx.strokeStyle = colours[a]; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.moveTo(p0[0], p0[1]); ctx.lineTo(p1[0], p1[1]); ctx.stroke();
      var step = niceStep(hi[a] - lo[a] || 1), t0 = Math.ceil(lo[a] / step) * step;
      ctx.fillStyle = colours[a];
      for (var t = t0; t <= hi[a] + 1e-9; t += step) {
        var q = [lo[0], lo[1], lo[2]]; q[a] = t;
        var pt = project(q[0], q[1], q[2], s);
        ctx.fillRect(pt[0] - 2, pt[1] - 2, 4, 4);
        labels.push([colours[a], "12px sans-serif", String(Math.round(t * 10) / 10), pt[0] + 4, pt[1] + 12]);
      }
      labels.push([colours[a], "bold 13px sans-serif", names[a] + " (Å)", p1[0] + 6, p1[1] - 6]);
    }
  }

  function draw() {
    var s = scale(), W = canvas.width, H = canvas.height;
    ctx.clearRect(0, 0, W, H);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
    if (outline) {
      ctx.fillStyle = "rgba(120,120,120,0.35)";
      for (var k = 0; k < outline.length; k += 3) {
        var o = project(outline[k], outline[k + 1], outline[k + 2], s);
        ctx.fillRect(o[0] - 1, o[1] - 1, 2, 2);
      }
    }
    var labels = [];
    drawBox(s, labels);
    var key = colourSel.value, cv = values(key), cr = cv ? range(key) : null;
    var sv = values(sizeSel.value), sr = sv ? range(sizeSel.value) : null;
    var X = new Float32Array(n), Y = new Float32Array(n), Z = new Float32Array(n), order = new Array(n);
    for (var i = 0; i < n; i++) {
      var p = project(P[3 * i], P[3 * i + 1], P[3 * i + 2], s);
      X[i] = p[0]; Y[i] = p[1]; Z[i] = p[2]; order[i] = i;
    }
    order.sort(function (a, b) { return Z[a] - Z[b]; });
    var base = Math.max(1.2, s * 0.5), zr = extent / 2;
    for (var j = 0; j < n; j++) {
      i = order[j];
      var colour = D.colours[D.species[D.species_index[i]]];
      if (cv) colour = cv[i] === null ? "#bbb" : viridis((cv[i] - cr[0]) / (cr[1] - cr[0] || 1));
      var r = base;
      if (sv) r = sv[i] === null ? base * 0.4 : base * (0.35 + 1.3 * Math.min(1.5, sv[i] / (sr[1] || 1)));
      var shade = 0.55 + 0.45 * Math.max(0, Math.min(1, 0.5 + Z[i] / (2 * zr)));
      ctx.globalAlpha = shade;
      ctx.fillStyle = colour;
      if (D.points) { ctx.fillRect(X[i] - 1, Y[i] - 1, 2.5, 2.5); continue; }
      ctx.beginPath(); ctx.arc(X[i], Y[i], r, 0, 2 * Math.PI); ctx.fill();
      if (r > 3) { ctx.strokeStyle = "rgba(0,0,0,0.45)"; ctx.lineWidth = 0.7; ctx.stroke(); }
    }
    ctx.globalAlpha = 1;
    labels.forEach(function (l) { ctx.fillStyle = l[0]; ctx.font = l[1]; ctx.fillText(l[2], l[3], l[4]); });
    status.textContent = "3-D view: " + n + " atoms drawn";
    section.setAttribute("data-drawn", String(n));
  }

  var pending = false;
  function redraw() { if (!pending) { pending = true; requestAnimationFrame(function () { pending = false; draw(); }); } }
  var dragging = null;
  canvas.addEventListener("pointerdown", function (e) {
    dragging = [e.clientX, e.clientY]; canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointerup", function () { dragging = null; });
  canvas.addEventListener("pointermove", function (e) {
    if (!dragging) return;
    var dx = e.clientX - dragging[0], dy = e.clientY - dragging[1];
    dragging = [e.clientX, e.clientY];
    R = mul(rot(1, dx * 0.01), mul(rot(0, dy * 0.01), R));
    redraw();
  });
  canvas.addEventListener("wheel", function (e) {
    e.preventDefault(); zoom = Math.max(0.2, Math.min(20, zoom * Math.exp(-e.deltaY * 0.0015))); redraw();
  }, { passive: false });
  canvas.addEventListener("dblclick", function () { R = R0.slice(); zoom = 1; redraw(); });
  colourSel.addEventListener("change", function () { legend(); redraw(); });
  sizeSel.addEventListener("change", redraw);
  // the page's address may choose the modes: report.html#colour=sigma&size=error
  location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
    var p = kv.split("="), sel = p[0] === "colour" ? colourSel : p[0] === "size" ? sizeSel : null;
    if (sel && Array.prototype.some.call(sel.options, function (o) { return o.value === p[1]; })) sel.value = p[1];
  });
  legend();
  draw();
  console.log("aetdask-view: drew " + n + " atoms, colour by " + colourSel.value + ", size by " + sizeSel.value);
})();
"""
