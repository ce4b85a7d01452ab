"""Figures that do not rely on colour alone: class shapes on the manifold maps, a table of maps.html's points for
keyboard and screen-reader users, dash patterns for the curves, a saliency colour key, an outline named by its
look."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from itertools import combinations

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure
from matplotlib.markers import MarkerStyle

from caex.manifold import maps
from caex.manifold.maps import CLASS_MARKERS, POINT_ALPHA, maps_html, marker_outline

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's script")

#: A DOM for the page's script: every canvas records the paths it fills and strokes, tables record their rows, and
#: event handlers are kept so a test can fire them.
_RECORDING_DOM = """
const drawn = [];
let made = 0;
function context(canvas) {
  let path = [];
  const pen = {beginPath() { path = []; }, moveTo(x, y) { path.push([x, y]); }, lineTo(x, y) { path.push([x, y]); },
               arc(x, y) { path.push(["arc", x, y]); }, closePath() {}, clearRect() {}};
  const record = kind => drawn.push({canvas, kind, path, fill: pen.fillStyle, stroke: pen.strokeStyle,
                                     width: pen.lineWidth});
  pen.fill = () => record("fill"); pen.stroke = () => record("stroke");
  return pen;
}
const element = () => {
  const self = {id: made++, checked: true, open: false, value: "pca", width: 760, height: 760, style: {}, options: [],
    rows: [], handlers: {}, getContext: () => self.pen ??= context(self.id),
    addEventListener(type, handler) { self.handlers[type] = handler; }, append() {}, appendChild() {},
    add(option) { self.options.push(option); },
    insertRow() {
      const row = {cells: [], insertCell() { const cell = {textContent: ""}; row.cells.push(cell); return cell; }};
      self.rows.push(row); return row;
    },
    getBoundingClientRect: () => ({left: 0, top: 0, width: 760, height: 760})};
  return self;
};
const elements = {};
globalThis.document = {getElementById: id => (elements[id] ??= element()), createElement: element,
                       createTextNode: text => text};
globalThis.Option = function (text, value) { this.text = text; this.value = value; };
"""


def run_page(page: str, after: str, tmp_path) -> dict:
    """What the page's script, then ``after``, print as JSON, run in node on :data:`_RECORDING_DOM`."""
    script = re.search(r"<script>(.*)</script>", page, re.S).group(1)
    (tmp_path / "page.js").write_text(_RECORDING_DOM + script + after, encoding="utf-8")
    result = subprocess.run(["node", str(tmp_path / "page.js")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-500:]
    return json.loads(result.stdout)


def traces(path: list, marker: str, centre, size: float) -> bool:
    """Whether ``path`` (canvas points) is ``marker``'s outline, ``size`` px across, centred on ``centre``."""
    shape = np.array(marker_outline(marker))
    return len(path) == len(shape) and np.allclose((np.array(path, dtype=float) - centre) / size, shape, atol=1e-3)


def three_class_page() -> str:
    """Six points of three classes (circle, square, triangle), train and test alternating, far apart."""
    coords = np.array([[0, 0], [3, 0], [6, 0], [0, 3], [3, 3], [6, 3]], dtype=float)
    labels = np.arange(6) % 3
    return maps_html({"pca": coords}, labels, labels, ["train", "test"] * 3, [f"{i}.png" for i in range(6)],
                     ["a", "b", "c"])


# ----------------------------------------------------------------- the PNG maps


def test_each_class_of_the_png_map_has_its_own_marker_for_points_means_and_legend(tmp_path, monkeypatch) -> None:
    """Every class was drawn as "o" and every class mean as "X": in grey tab10's blue and red classes merged."""
    figures: list[Figure] = []
    monkeypatch.setattr(maps, "save_figure", lambda path, figure: figures.append(figure))
    labels = np.arange(12) % 3
    maps.plot_map(tmp_path / "map.png", np.random.default_rng(0).random((12, 2)), labels, ["train", "test"] * 6,
                  ["a", "b", "c"], "map")
    for axis in figures[0].axes:
        collections = axis.collections  # per class: its points, then its mean
        for k, marker in enumerate(CLASS_MARKERS[:3]):
            style = MarkerStyle(marker)
            shape = style.get_path().transformed(style.get_transform()).vertices
            points, mean = collections[2 * k], collections[2 * k + 1]
            for drawn in (points, mean):
                vertices = drawn.get_paths()[0].vertices
                assert vertices.shape == shape.shape and np.allclose(vertices, shape), marker
            assert mean.get_sizes()[0] > 10 * points.get_sizes()[0]
            assert (mean.get_edgecolor()[0][:3] == 0).all()  # the dark edge
            assert points.get_alpha() == POINT_ALPHA > 0.6
    legend = figures[0].legends[0]
    assert [handle.get_marker() for handle in legend.legend_handles[:3]] == ["o", "s", "^"]


def test_class_markers_cycle_through_distinct_shapes() -> None:
    assert len(set(CLASS_MARKERS)) == len(CLASS_MARKERS) == 10
    assert maps.class_markers(12) == [*CLASS_MARKERS, "o", "s"]
    square = marker_outline("s")
    assert sorted(map(tuple, square)) == [(-0.5, -0.5), (-0.5, 0.5), (0.5, -0.5), (0.5, 0.5)]
    assert marker_outline("^")[0] == [0.0, -0.5]  # y points down on a canvas: the triangle's tip on top


# ----------------------------------------------------------------- maps.html


@needs_node
def test_maps_html_draws_each_class_in_its_shape_filled_for_train_outlined_for_test(tmp_path) -> None:
    """The canvas drew every point as a circle (filled or a ring) and every centroid as a cross."""
    page = three_class_page()
    out = run_page(page, 'console.log(JSON.stringify({drawn, positions, map: elements.map.id}));', tmp_path)
    on_map = [entry for entry in out["drawn"] if entry["canvas"] == out["map"]]
    points, centroids = on_map[:6], on_map[6:]
    for i, (entry, position) in enumerate(zip(points, out["positions"])):
        assert traces(entry["path"], CLASS_MARKERS[i % 3], position, 7), i
        assert entry["kind"] == ("fill" if i % 2 == 0 else "stroke")  # train filled, test outlined
    assert [entry["kind"] for entry in centroids] == ["fill", "stroke"] * 3
    for k in range(3):
        fill, edge = centroids[2 * k: 2 * k + 2]
        centre = np.mean([out["positions"][k], out["positions"][k + 3]], axis=0)
        assert traces(fill["path"], CLASS_MARKERS[k], centre, 18) and fill["fill"] == edge["fill"]
        assert edge["stroke"] == "#000" and edge["width"] >= 2
    swatches = [entry for entry in out["drawn"] if entry["canvas"] != out["map"]]  # the legend's
    assert len(swatches) == 3 and all(traces(entry["path"], marker, (7, 7), 11)
                                      for entry, marker in zip(swatches, CLASS_MARKERS))
    assert "filled: training image" in page and "outlined: test image" in page and "✕" not in page


@needs_node
def test_maps_html_lists_every_point_in_a_collapsed_table(tmp_path) -> None:
    """Point details appeared only on mousemove over the canvas: nothing a keyboard or screen reader could reach."""
    sources = ["<b>bold</b>.png", "b.png", "c.png"]
    page = maps_html({"pca": np.zeros((3, 2))}, np.array([0, 1, 1]), np.array([0, 0, 1]), ["train", "test", "test"],
                     sources, ["x<i>", "y"])
    assert '<details id="points"><summary>The points as a table</summary>' in page  # collapsed: no "open"
    headers = re.findall(r'<th scope="col">([^<]*)</th>', page)
    assert headers == ["file", "split", "label", "prediction", "wrong?"]
    out = run_page(page, """
const rows = () => elements["points-body"].rows.map(row => row.cells.map(cell => cell.textContent));
const closed = rows();
elements.points.open = true; elements.points.handlers.toggle(); elements.points.handlers.toggle();
console.log(JSON.stringify({closed, open: rows()}));""", tmp_path)
    assert out["closed"] == []  # filled when first opened
    assert out["open"] == [["<b>bold</b>.png", "train", "x<i>", "x<i>", "no"],  # as text, not markup
                           ["b.png", "test", "y", "x<i>", "yes"],
                           ["c.png", "test", "y", "y", "no"]]


# ----------------------------------------------------------------- curves.png


def test_gradcam_and_occlusion_have_dash_patterns_no_other_method_uses() -> None:
    """CAE, Grad-CAM and Occlusion were all solid lines of nearly the same grey."""
    from caex.evaluation.runner import METHOD_STYLES

    for method in ("gradcam", "occlusion"):
        others = [style.linestyle for name, style in METHOD_STYLES.items() if name != method]
        assert METHOD_STYLES[method].linestyle not in others, method
    for (a, style_a), (b, style_b) in combinations(METHOD_STYLES.items(), 2):
        assert (style_a.linestyle, style_a.marker) != (style_b.linestyle, style_b.marker), (a, b)


def test_the_curves_draw_the_dash_patterns() -> None:
    from caex.evaluation.runner import EvaluationResults, MethodResult, _curves_figure

    names = ["cae", "gradcam", "occlusion"]
    results = EvaluationResults([MethodResult(name, aopc=0.1, curve=[0.1, 0.2]) for name in names],
                                {"patch": 4, "n_images": 2, "data": "x"}, [0, 1], {})
    figure = _curves_figure(results)
    FigureCanvasAgg(figure).draw()
    dashes = [line._dash_pattern for line in figure.axes[0].get_lines()]  # (offset, on-off sequence or None)
    assert dashes[0][1] is None and dashes[1][1] and dashes[2][1] and dashes[1] != dashes[2]


# ----------------------------------------------------------------- the gallery's colour key


def gallery(methods: list[str], masks: torch.Tensor | None = None) -> Figure:
    from caex.evaluation.runner import EvaluationResults, MethodResult, _gallery_figure

    results = EvaluationResults([MethodResult(name) for name in methods], {}, list(range(6)),
                                {name: torch.rand(6, 8, 8) for name in methods})
    return _gallery_figure(results, torch.rand(6, 3, 8, 8), masks, ["a", "b"] * 3)


def test_the_gallery_has_an_inferno_key_from_low_to_high_saliency_under_its_maps() -> None:
    """No figure said what the saliency colours mean."""
    figure = gallery(["cae", "gradcam"])
    FigureCanvasAgg(figure).draw()
    *grid, key = figure.axes
    assert len(grid) == 6 * 3 and key.get_xlabel() == "low → high saliency"
    mesh = next(collection for collection in key.collections if isinstance(collection, QuadMesh))
    assert mesh.get_cmap().name == "inferno"
    values = np.asarray(mesh.get_array()).ravel()
    assert values[0] < 0.01 and values[-1] > 0.99 and (np.diff(values) > 0).all()  # low at the left, high at the right
    box = key.get_window_extent()
    assert box.y1 < min(axes.get_window_extent().y0 for axes in grid)  # under the grid
    assert box.x0 >= grid[1].get_window_extent().x0 - 1  # under the maps, not the input column
    assert figure.bbox.contains(box.x0, box.y0) and figure.bbox.contains(box.x1, box.y1)


def test_a_gallery_without_maps_has_no_key() -> None:
    assert len(gallery([]).axes) == 6


# ----------------------------------------------------------------- the mask outline's name


def test_the_data_preview_names_the_outline_by_its_look_not_green(tiny_synthetic, tmp_path, monkeypatch) -> None:
    """The title said "green: lesion mask", but to deuteranopes lime looks like inferno's yellow."""
    from caex.data import preview

    figures: list[Figure] = []
    monkeypatch.setattr(preview, "save_figure", lambda path, figure, dpi: figures.append(figure))
    preview.save_preview(tiny_synthetic, tmp_path / "grid.png", per_class=1)
    title = figures[0]._suptitle.get_text()
    assert title.endswith("; lesion outlined (light line, dark edge))") and "green" not in title
