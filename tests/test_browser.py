"""The two offline HTML outputs (``maps.html`` and ``report.html``) opened in a real headless Chromium.

The other tests only read the HTML as text; these run the page: its script must draw, react and show
tooltips, every embedded image must decode, and nothing may be fetched from the network. Class names
and file names full of HTML specials check the escaping end to end (nothing injected, page still works).
Skipped where Debian's ``/usr/bin/chromium`` is missing (``apt-get install chromium``; browsers are never
downloaded) or Playwright is (the test extras install it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"needs {CHROMIUM} (apt-get install chromium)")

from caex.manifold import maps_html  # noqa: E402  (after the skips: nothing to import when they apply)
from caex.report import build_report  # noqa: E402

#: Class names that break a page that does not escape: markup, a comment opener inside the script, quotes, unicode.
NASTY_CLASSES = ["a<b", '"q"', "ü", "<img src=x onerror=alert(1)>", "<!--<script>"]


class OfflinePage:
    """A page opened from disk with every network request aborted, recording what went wrong."""

    def __init__(self, browser: Any, path: Path, viewport: tuple[int, int] = (1280, 1000)) -> None:
        self.problems: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        self.page.route(re.compile(r"^(?!file:|data:)"), self._block)
        self.page.on("console", lambda message: self.problems.append(f"console {message.type}: {message.text}")
                     if message.type == "error" else None)
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.on("dialog", lambda dialog: (self.problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
        self.page.goto(path.resolve().as_uri(), wait_until="load")

    def _block(self, route: Any) -> None:
        self.requests.append(route.request.url)
        route.abort()

    def assert_clean(self) -> None:
        assert self.problems == [] and self.requests == []


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()


# --------------------------------------------------------------------------- maps.html


_PAINTED = """() => { const c = document.getElementById("map");
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; }"""


def test_maps_page_draws_switches_and_shows_tooltips(tmp_path: Path, browser: Any) -> None:
    """Points on a grid far apart, so hovering one point's drawn position must show exactly its tooltip."""
    n = 10
    labels = np.arange(n) % len(NASTY_CLASSES)
    predictions = (labels + np.arange(n) % 2) % len(NASTY_CLASSES)
    splits = ["train", "test"] * (n // 2)
    sources = [f"{NASTY_CLASSES[label]}/img'{i}</script>.png" for i, label in enumerate(labels)]
    grid = np.stack([np.arange(n) % 4, np.arange(n) // 4], axis=1).astype(float)
    path = tmp_path / "maps.html"
    path.write_text(maps_html({"pca": grid, "tsne": grid[::-1] * 3}, labels, predictions, splits, sources,
                              NASTY_CLASSES), encoding="utf-8")
    view = OfflinePage(browser, path)
    page = view.page
    assert page.locator("#legend label").all_inner_texts() == NASTY_CLASSES
    assert page.locator("#projection option").all_inner_texts() == ["PCA", "TSNE"]
    assert page.locator("img").count() == 0  # no class name became markup
    both = page.evaluate(_PAINTED)
    page.uncheck("#show-train")
    test_only = page.evaluate(_PAINTED)
    page.uncheck("#show-test")
    assert 0 < test_only < both and page.evaluate(_PAINTED) == 0
    page.check("#show-train")
    page.check("#show-test")
    assert page.evaluate(_PAINTED) == both

    canvas = page.locator("#map")
    for i in range(n):
        x, y = page.evaluate(f"positions[{i}]")
        canvas.hover(position={"x": x, "y": y})
        label, prediction = NASTY_CLASSES[labels[i]], NASTY_CLASSES[predictions[i]]
        expected = [sources[i], f"{splits[i]} image", f"label: {label}",
                    f"prediction: {prediction}" + ("" if label == prediction else " (wrong)")]
        assert page.locator("#tip").is_visible()
        assert page.locator("#tip").inner_text().splitlines() == expected
    page.uncheck("#show-train")  # the last point hovered is a test image; a hidden train point shows nothing
    x, y = page.evaluate("positions[0]")
    canvas.hover(position={"x": x, "y": y})
    assert not page.locator("#tip").is_visible()

    pca = page.evaluate("positions")
    page.select_option("#projection", "tsne")
    assert page.evaluate("positions") != pca and page.evaluate(_PAINTED) > 0
    view.assert_clean()


_TIP_AND_WINDOW = """() => { const r = document.getElementById("tip").getBoundingClientRect();
  const d = document.documentElement;
  return [[r.left, r.top, r.right, r.bottom], [d.clientWidth, d.clientHeight, d.scrollWidth]]; }"""


def test_maps_tooltip_stays_inside_the_window_at_its_edges(tmp_path: Path, browser: Any) -> None:
    """At the window's right and bottom edges the tooltip flips to the cursor's left / above it (it ran off-screen
    there); a file name wider than the window wraps inside it."""
    points = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5]])  # canvas y points up: [1, 0] is bottom right
    sources = ["a/bottom_left.png", "b/bottom_right_with_a_longer_name.png", "c/top_left.png", "d/top_right.png",
               "e/" + "a_long_folder_name/" * 15 + "x.png"]
    path = tmp_path / "maps.html"
    splits = ["train", "test", "train", "test", "train"]
    path.write_text(maps_html({"pca": points}, np.zeros(5, int), np.ones(5, int), splits, sources, ["x", "y"]),
                    encoding="utf-8")
    view = OfflinePage(browser, path, viewport=(820, 600))  # just wider than the canvas
    page = view.page
    # As tall as the page: every point is in view without scrolling, the bottom ones 44 px above the window's edge.
    page.set_viewport_size({"width": 820, "height": page.evaluate("document.documentElement.scrollHeight")})
    canvas = page.locator("#map")
    origin = canvas.bounding_box()
    for i, (at_right, at_top) in enumerate(points):
        x, y = page.evaluate(f"positions[{i}]")
        canvas.hover(position={"x": x, "y": y})
        assert page.locator("#tip").is_visible()
        (left, top, right, bottom), (width, height, page_width) = page.evaluate(_TIP_AND_WINDOW)
        assert left >= 0 and right <= width and top >= 0 and bottom <= height, (sources[i], left, top, right, bottom)
        assert page_width <= width  # nor does it widen the page
        if at_right == 0.5:  # wider than the window: wrapped and pushed in, on neither side of the cursor
            assert page.locator("#tip").inner_text().splitlines()[-1] == "prediction: y (wrong)"
            continue
        mouse_x, mouse_y = origin["x"] + x, origin["y"] + y
        assert right <= mouse_x if at_right else left >= mouse_x  # left of the cursor at the right edge
        assert top >= mouse_y if at_top else bottom <= mouse_y  # above it at the bottom edge
    view.assert_clean()


def test_maps_legend_hides_classes_hover_takes_the_top_point_and_a_flat_map_fills_its_canvas(
        tmp_path: Path, browser: Any) -> None:
    """The legend only labelled the classes; of points on one spot the hover named the first drawn (hidden under
    the others); a map four times wider than tall filled the top quarter's worth of a square canvas."""
    points = np.array([[0, 0], [4, 1], [2, 0.5], [2, 0.5], [2, 0.5]])  # three images on one spot, in the middle
    labels = np.array([0, 1, 0, 1, 1])
    path = tmp_path / "maps.html"
    path.write_text(maps_html({"pca": points}, labels, labels, ["train"] * 5, [f"{i}.png" for i in range(5)],
                              ["x", "y"]), encoding="utf-8")
    view = OfflinePage(browser, path)
    page = view.page
    height = page.evaluate("document.getElementById('map').height")
    assert abs(height - (48 + 712 / 4)) <= 1  # the canvas is cut to the map: 2 x 24 px padding + 712 px / 4
    xs, ys = zip(*page.evaluate("positions"))
    assert (min(xs), max(xs)) == (24, 736) and min(ys) == pytest.approx(24, abs=1) and max(ys) == pytest.approx(
        height - 24, abs=1)
    canvas = page.locator("#map")
    x, y = page.evaluate("positions[4]")
    canvas.hover(position={"x": x, "y": y})
    assert page.locator("#tip").inner_text().splitlines() == ["4.png", "train image", "label: y", "prediction: y",
                                                              "2 more images under this one"]
    both = page.evaluate(_PAINTED)
    page.locator("#legend input").nth(1).uncheck()  # hide class y: points 1, 3 and 4
    assert 0 < page.evaluate(_PAINTED) < both
    canvas.hover(position={"x": x + 1, "y": y})
    assert page.locator("#tip").inner_text().splitlines()[0] == "2.png"  # the hidden ones neither show nor count
    assert "under this one" not in page.locator("#tip").inner_text()
    x, y = page.evaluate("positions[1]")
    canvas.hover(position={"x": x, "y": y})
    assert not page.locator("#tip").is_visible()
    view.assert_clean()


def test_maps_points_table_opens_from_the_keyboard_and_lists_every_point_as_text(tmp_path: Path,
                                                                                 browser: Any) -> None:
    """Point details were on mouse hover only: keyboard and screen-reader users reached none of them."""
    points = np.array([[0, 0], [1, 1], [2, 0.5]])
    path = tmp_path / "maps.html"
    path.write_text(maps_html({"pca": points}, np.array([0, 1, 0]), np.array([0, 0, 0]), ["train", "test", "test"],
                              ["a.png", "<b>x</b>.png", "c.png"], NASTY_CLASSES[:2]), encoding="utf-8")
    view = OfflinePage(browser, path)
    page = view.page
    page.locator("#points summary").focus()
    page.keyboard.press("Enter")  # a <details> opens from the keyboard
    page.wait_for_function("document.querySelectorAll('#points tbody tr').length > 0")  # filled on its toggle event
    rows = page.evaluate("Array.from(document.querySelectorAll('#points tbody tr'), "
                         "row => Array.from(row.cells, cell => cell.textContent))")
    assert len(rows) == 3 and rows[1][:2] == ["<b>x</b>.png", "test"]  # a name shown as text, not markup
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")  # closed and opened again: the rows are not added twice
    page.wait_for_function("document.getElementById('points').open")
    page.evaluate("new Promise(resolve => setTimeout(resolve, 100))")  # after the queued toggle events
    assert page.locator("#points tbody tr").count() == 3
    view.assert_clean()


# --------------------------------------------------------------------------- report.html


def _png(path: Path, size: tuple[int, int] = (12, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (40, 90, 200)).save(path)


def _json(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content), encoding="utf-8")


def make_run(root: Path) -> Path:
    """A demo-layout run with every file the report reads; class names and captions carry HTML specials."""
    names = NASTY_CLASSES
    _png(root / "data/samples.png")
    _json(root / "data/dataset.json", {"spec": "folder <x>", "class_names": names, "image_size": 32,
                                       "class_counts": {"train": [4] * len(names), "test": [1] * len(names)}})
    _json(root / "classifier/classifier.json", {"arch": "smallcnn", "class_names": names, "image_size": 32,
                                                "channels": 1, "test_accuracy": 0.5})
    (root / "cae").mkdir()
    (root / "cae/log.jsonl").write_text("\n".join(json.dumps({"iter": i, "recon": 1 / i}) for i in range(1, 20)),
                                        encoding="utf-8")
    _png(root / "cae/samples/iter_0000019.png")
    for name in ("map_pca.png", "map_tsne.png", "paths.png"):
        _png(root / "manifold" / name)
    swap = [[None if i == j else 0.5 for j in range(len(names))] for i in range(len(names))]
    _json(root / "manifold/summary.json", {
        "class_names": names, "separability": {"class_codes": {"mean": 0.9, "std": 0.1, "folds": 4, "dims": 8}},
        "swap": {"matrix": swap, "mean": 0.5}, "smoothness": {"per_class": dict.fromkeys(names, 0.7)}})
    _png(root / "explain/00_a_saliency.png")
    _png(root / "explain/00_a_path.png")
    _json(root / "explain/explanations.json", {"steps": 4, "examples": [
        {"stem": "00_a", "title": f"{names[3]} towards {names[1]}", "flip_step": 2}]})
    for name in ("gallery.png", "curves.png"):
        _png(root / "evaluate" / name)
    _json(root / "evaluate/results.json", {"methods": [{"method": "cae", "aopc": 0.4, "mass_in_mask": 0.6},
                                                       {"method": "random", "aopc": 0.1, "mass_in_mask": 0.2}]})
    return root


def test_report_opens_offline_with_every_image_table_and_anchor(tmp_path: Path, browser: Any) -> None:
    view = OfflinePage(browser, build_report(make_run(tmp_path / "run")))
    page = view.page
    images = page.evaluate("Array.from(document.images, i => [i.complete, i.naturalWidth, i.src.slice(0, 22)])")
    # samples, curves, grid, 3 manifold figures, saliency + path, gallery + curves
    assert len(images) == 10
    assert all(complete and width > 0 and src == "data:image/png;base64," for complete, width, src in images)
    assert page.locator("section table").count() >= 6
    assert page.locator("#classifier table").inner_text().count(", ".join(NASTY_CLASSES)) == 1
    assert page.locator("#explanations figcaption").inner_text() == f"{NASTY_CLASSES[3]} towards {NASTY_CLASSES[1]}"
    assert page.locator("script").count() == 0
    links = page.locator("nav a")
    assert links.count() == 8
    for index in reversed(range(links.count())):  # bottom up, so every click has to scroll
        target = links.nth(index).get_attribute("href")
        assert target.startswith("#") and page.locator(target).count() == 1
        links.nth(index).click()
        assert page.evaluate("location.hash") == target
        # scrolled to the section, or as far as the page goes for the last ones
        top, at_end = page.evaluate(f"""[document.querySelector('{target}').getBoundingClientRect().top,
                                        scrollY + innerHeight >= document.documentElement.scrollHeight - 1]""")
        assert abs(top) < 50 or (at_end and 0 < top < 1000)
    view.assert_clean()


def test_both_pages_fit_a_400_px_phone_screen(tmp_path: Path, browser: Any) -> None:
    """The report's navigation could not wrap and its results table stuck out (page 1068 px wide at 400), and
    the map's canvas was a fixed 760 px: both pages now fit, the tables scrolling inside their own box."""
    report = OfflinePage(browser, build_report(make_run(tmp_path / "run")), viewport=(400, 800))
    assert report.page.evaluate("document.documentElement.scrollWidth") <= 400
    report.assert_clean()
    grid = np.array([[0, 0], [1, 1], [0, 1]])
    path = tmp_path / "maps.html"
    path.write_text(maps_html({"pca": grid}, np.array([0, 1, 0]), np.array([0, 1, 1]), ["train", "test", "train"],
                              ["a.png", "b.png", "c.png"], ["x", "y"]), encoding="utf-8")
    view = OfflinePage(browser, path, viewport=(400, 800))
    page = view.page
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    box = page.locator("#map").bounding_box()
    assert box["width"] <= 400 and abs(box["width"] - box["height"]) < 1  # scaled down, still square
    x, y = page.evaluate("positions[1]")  # canvas pixels: the hover maps them back through the scale
    page.mouse.move(box["x"] + x * box["width"] / 760, box["y"] + y * box["height"] / 760)
    assert page.locator("#tip").is_visible() and "b.png" in page.locator("#tip").inner_text()
    view.assert_clean()
