"""2-D maps of the class-code manifold (paper Fig. 8): PNG figures and one offline interactive page."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.markers import MarkerStyle
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from caex.utils import atomic_write_text
from caex.utils.plotting import literal_text, save_figure

SPLITS = ("train", "test")
#: How each projection is named in titles.
PROJECTION_NAMES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
EXACT_TSNE_MAX_POINTS = 1000
#: Each class's marker shape, cycled: colour alone does not tell classes apart in greyscale (tab10's blue and red
#: print as nearly the same grey) or to colour-blind readers (its orange, green and red). maps.html draws the same.
CLASS_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")
#: How opaque a map's points are: 0.6 left light classes at 1.5-2.8:1 contrast on white.
POINT_ALPHA = 0.8
#: The class means' legend entry: they are drawn in their class's shape, so no one marker stands for them all.
MEAN_LEGEND = "class mean (map coordinates):\nlarge, dark edge"


def umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def subsample_rows(splits: list[str], cap_per_split: int, *, seed: int = 0) -> np.ndarray:
    """Sorted row indices keeping at most ``cap_per_split`` random rows of each split (seeded)."""
    rng = np.random.default_rng(seed)
    split_array = np.asarray(splits)
    kept = []
    for split in SPLITS:
        rows = np.flatnonzero(split_array == split)
        kept.append(rows if len(rows) <= cap_per_split else rng.choice(rows, cap_per_split, replace=False))
    return np.sort(np.concatenate(kept))


def project_2d(codes: np.ndarray, method: str, *, seed: int = 0) -> np.ndarray:
    """``[N, 2]`` coordinates of ``codes [N, D]``; train and test are embedded together so they share axes."""
    codes = np.asarray(codes, dtype=np.float32)
    if codes.shape[1] < 2:  # a 1-number code: PCA and t-SNE's PCA start need two columns
        codes = np.pad(codes, ((0, 0), (0, 2 - codes.shape[1])))
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(codes)
    if method == "tsne":
        perplexity = float(min(30.0, max(1.0, (len(codes) - 1) / 3)))  # must stay below N
        # Exact gradients are far cheaper than Barnes-Hut's tree below about a thousand points.
        method = "exact" if len(codes) <= EXACT_TSNE_MAX_POINTS else "barnes_hut"
        return TSNE(n_components=2, perplexity=perplexity, init="pca", method=method,
                    random_state=seed).fit_transform(codes)
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(codes)
    raise ValueError(f"unknown projection {method!r} (pca, tsne or umap)")


def class_colours(num_classes: int) -> list[str]:
    """Distinct hex colours, the same in the PNGs and the HTML page."""
    palette = colormaps["tab10" if num_classes <= 10 else "tab20" if num_classes <= 20 else "hsv"]
    if num_classes <= 20:
        return [to_hex(palette(k)) for k in range(num_classes)]
    return [to_hex(palette(k / num_classes)) for k in range(num_classes)]


def class_markers(num_classes: int) -> list[str]:
    """Each class's matplotlib marker, from :data:`CLASS_MARKERS` in turn."""
    return [CLASS_MARKERS[k % len(CLASS_MARKERS)] for k in range(num_classes)]


def marker_outline(marker: str) -> list[list[float]]:
    """``marker``'s shape as matplotlib draws it, as the vertices of a polygon about one unit across with y
    pointing down: the canvas of maps.html draws the PNGs' shapes from these."""
    style = MarkerStyle(marker)
    polygon = np.asarray(style.get_path().transformed(style.get_transform()).to_polygons(closed_only=True)[0])[:-1]
    return np.round(polygon * [1, -1], 3).tolist()


def panel_title(split: str, shown: int, total: int | None) -> str:
    """A map panel's title: its images, and of how many where the map shows a sample (``maps_per_split``)."""
    if total in (None, shown):
        return f"{split} ({shown:,} images)"
    return f"{split} ({shown:,} of {total:,} images, a seeded sample)"


@literal_text
def plot_map(path: str | os.PathLike, coords: np.ndarray, labels: np.ndarray, splits: list[str],
             class_names: list[str], title: str, totals: dict[str, int] | None = None) -> Path:
    """Train and test panels side by side on the same axes, each class in its own colour and marker shape, its
    mean position on the map in that shape drawn large with a dark edge (a mean of t-SNE or UMAP coordinates, not
    the map of the codes' centroid); ``totals`` (images per split) says how many a subsampled panel shows of how
    many."""
    colours, markers = class_colours(len(class_names)), class_markers(len(class_names))
    split_array = np.asarray(splits)
    figure = Figure(figsize=(11, 5.2), layout="constrained")
    axes = figure.subplots(1, 2, sharex=True, sharey=True)
    for axis, split in zip(axes, SPLITS):
        in_split = split_array == split
        for k in range(len(class_names)):
            points = coords[in_split & (labels == k)]
            if not len(points):
                continue
            axis.scatter(points[:, 0], points[:, 1], s=12, alpha=POINT_ALPHA, color=colours[k], marker=markers[k],
                         linewidths=0)
            centre = points.mean(axis=0)
            axis.scatter(*centre, marker=markers[k], s=160, color=colours[k], edgecolors="black", linewidths=1.2)
        axis.set_title(panel_title(split, int(in_split.sum()), (totals or {}).get(split)))
        axis.set_xticks([])
        axis.set_yticks([])
    handles = [Line2D([], [], marker=marker, linestyle="", color=colour, label=name)
               for colour, marker, name in zip(colours, markers, class_names)]
    handles.append(Line2D([], [], linestyle="", label=MEAN_LEGEND))
    figure.legend(handles=handles, loc="outside right center", frameon=False, title="class")
    figure.suptitle(title)
    return save_figure(path, figure)


def maps_html(projections: dict[str, np.ndarray], labels: np.ndarray, predictions: np.ndarray,
              splits: list[str], sources: list[str], class_names: list[str]) -> str:
    """A self-contained page (inline data, canvas and script; no network) to browse the maps."""
    data = {
        "classes": list(class_names),
        "colours": class_colours(len(class_names)),
        "shapes": [marker_outline(marker) for marker in class_markers(len(class_names))],
        "labels": [int(v) for v in labels],
        "predictions": [int(v) for v in predictions],
        "test": [int(split == "test") for split in splits],
        "sources": list(sources),
        "projections": {name: np.round(np.asarray(xy, dtype=np.float64), 4).tolist()
                        for name, xy in projections.items()},
    }
    # Every "<" as \u003c (it only occurs inside JSON strings): "</script>" would end the script and "<!--<script"
    # would swallow it, both breaking the page for a class or file named so.
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    return _PAGE.replace("__DATA__", payload)


def write_maps_html(path: str | os.PathLike, *args, **kwargs) -> Path:
    return atomic_write_text(path, maps_html(*args, **kwargs))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>caex: class-code manifold</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.2em;color:#222}
#controls{margin:.5em 0}#controls>*{margin-right:1.2em}
#legend label{display:inline-block;margin-right:1em;cursor:pointer}
#map{border:1px solid #ccc;cursor:crosshair;max-width:100%;height:auto}
#legend canvas{margin-right:.3em;vertical-align:middle}
#points>div{max-width:100%;overflow-x:auto}
#points table{border-collapse:collapse;font-size:.85em;margin-top:.5em}
#points th,#points td{border:1px solid #ccc;padding:.15em .5em;text-align:left;overflow-wrap:anywhere}
#tip{position:absolute;display:none;background:#fff;border:1px solid #888;padding:.3em .5em;
font-size:.85em;pointer-events:none;width:max-content;max-width:calc(100vw - 16px);overflow-wrap:anywhere;
box-shadow:1px 1px 4px #aaa}
</style></head><body>
<h1>Class-code manifold</h1>
<p>Each point is one image's class code projected to 2-D, in its class's colour and shape; filled shapes are
training images, outlined ones test images, large dark-edged ones the class centroids. Hover a point for its file,
label and the classifier's prediction, or open the table below the map; tick classes in the legend to show or hide
them.</p>
<div id="controls">
<label>projection <select id="projection"></select></label>
<label><input type="checkbox" id="show-train" checked> train</label>
<label><input type="checkbox" id="show-test" checked> test</label>
</div>
<div id="legend" role="group" aria-label="classes shown"></div>
<p id="markers">filled: training image &nbsp; outlined: test image &nbsp; large, dark edge: class centroid</p>
<canvas id="map" width="760" height="760" role="img"
 aria-label="2-D map of the class codes, one point per image, coloured and shaped by class; the table below lists them">
</canvas>
<details id="points"><summary>The points as a table</summary><div><table>
<thead><tr><th scope="col">file</th><th scope="col">split</th><th scope="col">label</th><th scope="col">prediction</th>
<th scope="col">wrong?</th></tr></thead><tbody id="points-body"></tbody></table></div></details>
<div id="tip"></div>
<script>
const DATA = __DATA__;
const canvas = document.getElementById("map"), ctx = canvas.getContext("2d");
const tip = document.getElementById("tip"), select = document.getElementById("projection");
const showTrain = document.getElementById("show-train"), showTest = document.getElementById("show-test");
const PAD = 24, MIN_HEIGHT = 160;
let positions = [];
for (const name of Object.keys(DATA.projections)) select.add(new Option(name.toUpperCase(), name));
// Class k's marker shape (the PNG maps' matplotlib marker, a polygon one unit across) as the path of `pen`, centred
// on (x, y) and `size` px across: classes differ in shape, not in colour alone.
function shape(pen, k, x, y, size) {
  pen.beginPath();
  for (const [u, v] of DATA.shapes[k]) pen.lineTo(x + u * size, y + v * size);  // a first lineTo starts the path
  pen.closePath();
}
// One checkbox per class in the legend, with its colour and shape: a class hidden there is neither drawn nor hovered.
const classBoxes = DATA.classes.map((name, k) => {
  const item = document.createElement("label"), box = document.createElement("input");
  const swatch = document.createElement("canvas");
  box.type = "checkbox"; box.checked = true; box.addEventListener("change", draw);
  swatch.width = swatch.height = 14;
  const pen = swatch.getContext("2d");
  shape(pen, k, 7, 7, 11); pen.fillStyle = DATA.colours[k]; pen.fill();
  item.append(box, swatch, name);
  document.getElementById("legend").append(item);
  return box;
});
function visible(i) {
  return (DATA.test[i] ? showTest.checked : showTrain.checked) && classBoxes[DATA.labels[i]].checked;
}
// Below right of the cursor, flipped to its left / above it where the filled tooltip would leave the window, and
// pushed in as a last resort where it fits on neither side. Its CSS width is its text's (max-content), not the
// space left of the window, so it is measured as it will be drawn.
function placeTip(event) {
  const gap = 12, viewWidth = document.documentElement.clientWidth, viewHeight = document.documentElement.clientHeight;
  const width = tip.offsetWidth, height = tip.offsetHeight;
  let x = event.clientX + gap, y = event.clientY + gap;
  if (x + width > viewWidth) x = event.clientX - gap - width;
  if (y + height > viewHeight) y = event.clientY - gap - height;
  x = Math.max(0, Math.min(x, viewWidth - width)); y = Math.max(0, Math.min(y, viewHeight - height));
  tip.style.left = (x + window.scrollX) + "px"; tip.style.top = (y + window.scrollY) + "px";
}
function draw() {
  const xy = DATA.projections[select.value];
  // A loop, not Math.min(...xs): spreading more than ~65k arguments overflows the stack of JS engines.
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const [x, y] of xy) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  // One scale for both axes (distances mean the same either way), with the canvas cut to the map's height: a flat
  // projection (PCA's second axis often spans a fraction of its first) would otherwise fill a strip of it.
  const side = canvas.width - 2 * PAD, scale = Math.min(side / (x1 - x0 || 1), side / (y1 - y0 || 1));
  canvas.height = Math.max(MIN_HEIGHT, Math.round(2 * PAD + (y1 - y0) * scale));
  const left = PAD + (side - (x1 - x0) * scale) / 2, bottom = canvas.height - (canvas.height - (y1 - y0) * scale) / 2;
  positions = xy.map(p => [left + (p[0] - x0) * scale, bottom - (p[1] - y0) * scale]);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const sums = DATA.classes.map(() => [0, 0, 0]);
  positions.forEach((p, i) => {
    if (!visible(i)) return;
    const colour = DATA.colours[DATA.labels[i]];
    shape(ctx, DATA.labels[i], p[0], p[1], 7);
    if (DATA.test[i]) { ctx.strokeStyle = colour; ctx.lineWidth = 1.3; ctx.stroke(); }
    else { ctx.fillStyle = colour; ctx.globalAlpha = 0.85; ctx.fill(); ctx.globalAlpha = 1; }
    const s = sums[DATA.labels[i]]; s[0] += p[0]; s[1] += p[1]; s[2] += 1;
  });
  sums.forEach((s, k) => {
    if (!s[2]) return;
    shape(ctx, k, s[0] / s[2], s[1] / s[2], 18);
    ctx.fillStyle = DATA.colours[k]; ctx.fill(); ctx.lineWidth = 2; ctx.strokeStyle = "#000"; ctx.stroke();
  });
}
canvas.addEventListener("mousemove", event => {
  const box = canvas.getBoundingClientRect();
  const mx = (event.clientX - box.left) * canvas.width / box.width;
  const my = (event.clientY - box.top) * canvas.height / box.height;
  // The nearest point within 7 px; of points drawn on one spot the last, which is the one on top.
  let best = -1, bestDistance = 49;
  positions.forEach((p, i) => {
    const d = (p[0] - mx) ** 2 + (p[1] - my) ** 2;
    if (visible(i) && d <= bestDistance) { best = i; bestDistance = d; }
  });
  if (best < 0) { tip.style.display = "none"; return; }
  const [bx, by] = positions[best];
  let under = 0;  // other shown points within 3 px of the top one's centre, under it
  positions.forEach((p, i) => { if (i !== best && visible(i) && (p[0] - bx) ** 2 + (p[1] - by) ** 2 < 9) under++; });
  const label = DATA.classes[DATA.labels[best]], prediction = DATA.classes[DATA.predictions[best]];
  tip.textContent = "";
  tip.style.left = tip.style.top = "0px";  // filled at the page's corner: at its last place it could widen the page
  for (const line of [DATA.sources[best], (DATA.test[best] ? "test" : "train") + " image",
                      "label: " + label, "prediction: " + prediction + (label === prediction ? "" : " (wrong)"),
                      ...(under ? [under + " more image" + (under > 1 ? "s" : "") + " under this one"] : [])]) {
    tip.appendChild(document.createTextNode(line)); tip.appendChild(document.createElement("br"));
  }
  tip.style.display = "block";  // shown before it is placed: a hidden element has no size to measure
  placeTip(event);
});
canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
for (const control of [select, showTrain, showTest]) control.addEventListener("change", draw);
// The points as a table, for keyboard and screen-reader users (the tooltip needs a mouse), escaped as text; filled
// when first opened, as a map's thousands of rows would slow every page's loading.
const pointsTable = document.getElementById("points"), pointsBody = document.getElementById("points-body");
pointsTable.addEventListener("toggle", () => {
  if (!pointsTable.open || pointsBody.rows.length) return;
  DATA.labels.forEach((label, i) => {
    const row = pointsBody.insertRow(), prediction = DATA.predictions[i];
    for (const text of [DATA.sources[i], DATA.test[i] ? "test" : "train", DATA.classes[label], DATA.classes[prediction],
                        label === prediction ? "no" : "yes"]) row.insertCell().textContent = text;
  });
});
draw();
</script></body></html>
"""
