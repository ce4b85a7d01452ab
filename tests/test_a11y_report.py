"""The HTML report for assistive technology: table captions and row headers, short alt texts, keyboard-scrollable
strips, arrows read as words, a link to the interactive map, and no meaning carried by a colour's name alone."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from caex.report import build_report, readings
from caex.report.html import ReportSources, render_report, table_html


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 8), (40, 90, 200)).save(path)


def _json(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content), encoding="utf-8")


def make_run(root: Path) -> Path:
    """A demo-layout folder with a table of every kind, the figures, two explanations (one the demo's index
    describes, one only its ``caex explain`` summary) and the interactive map."""
    _json(root / "data/stage.json", {"status": "done", "seconds": 1.5})
    _png(root / "data/samples.png")
    _json(root / "data/dataset.json", {"spec": "synthetic", "class_names": ["normal", "cnv"], "image_size": 32,
                                       "class_counts": {"train": [8, 8], "test": [2, 2]}})
    _json(root / "classifier/classifier.json", {"arch": "smallcnn", "class_names": ["normal", "cnv"],
                                                "test_accuracy": 0.75})
    _json(root / "cae/summary.json", {"iters": 20, "seconds": 3.0})
    (root / "cae/log.jsonl").write_text("\n".join(json.dumps({"iter": i, "recon": 1 / i}) for i in range(1, 5)),
                                        encoding="utf-8")
    _png(root / "cae/samples/iter_0000020.png")
    for name in ("map_pca.png", "map_tsne.png", "paths.png"):
        _png(root / "manifold" / name)
    (root / "manifold/maps.html").write_text("<html></html>", encoding="utf-8")
    _json(root / "manifold/summary.json", {
        "class_names": ["normal", "cnv"], "separability": {"class_codes": {"mean": 0.95, "folds": 5, "dims": 8}},
        "swap": {"matrix": [[None, 0.9], [0.7, None]], "mean": 0.8},
        "smoothness": {"per_class": {"normal": 0.96, "cnv": 0.88}}})
    for stem in ("00_normal", "01_other"):
        _png(root / f"explain/{stem}_saliency.png")
        _png(root / f"explain/{stem}_path.png")
    _json(root / "explain/explanations.json", {"steps": 8, "examples": [
        {"stem": "00_normal", "source": "/data/test/scan 7.png", "flip_step": 3,
         "title": "normal (classified normal) towards cnv: flips at step 3"}]})
    _json(root / "explain/01_other.json", {"source": "/data/test/other.png", "caption": "cnv -> normal (never flips)",
                                           "flip_step": -1})
    for name in ("gallery.png", "curves.png"):
        _png(root / "evaluate" / name)
    _json(root / "evaluate/results.json", {
        "settings": {"n_images": 4, "class_names": ["normal", "cnv"]},
        "methods": [{"method": "cae", "aopc": 0.41, "mass_in_mask": 0.6, "ms_per_image": 25.0,
                     "aopc_per_class": {"normal": 0.5, "cnv": 0.3}},
                    {"method": "random", "aopc": 0.05, "mass_in_mask": 0.1, "ms_per_image": 0.2,
                     "aopc_per_class": {"normal": 0.04, "cnv": 0.06}}]})
    return root


class _Elements(HTMLParser):
    """Every start tag with its attributes, and the text of every caption, figcaption and header cell."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: dict[str, list[str]] = {"caption": [], "figcaption": [], "th": []}
        self._open: str | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in self.texts:
            self._open = tag
            self.texts[tag].append("")

    def handle_endtag(self, tag):
        if tag == self._open:
            self._open = None

    def handle_data(self, data):
        if self._open:
            self.texts[self._open][-1] += data

    def attributes(self, tag: str) -> list[dict[str, str | None]]:
        return [attributes for name, attributes in self.tags if name == tag]


def _section(text: str, anchor: str) -> str:
    return text.split(f'<section id="{anchor}"')[1].split("</section>")[0]


def test_every_table_has_a_caption_and_the_swap_matrix_row_headers(tmp_path):
    """Tables had only column headers: no caption to find them by, and the swap matrix's "from X" cells were
    plain cells under an empty corner, so a cell read "90%" without the class it swaps from."""
    assert table_html(["a", "b"], [["x", 1]], caption="what <this> is", row_headers=True) == (
        '<div class="table-scroll"><table><caption>what &lt;this&gt; is</caption><thead><tr><th scope="col">a</th>'
        '<th scope="col">b</th></tr></thead><tbody><tr><th scope="row">x</th><td>1</td></tr></tbody></table></div>')
    assert "<caption>" not in table_html(["a"], [[1]]) and "<td>1</td>" in table_html(["a"], [[1]])
    text = build_report(make_run(tmp_path / "run")).read_text(encoding="utf-8")
    page = _Elements(text)
    assert len(page.attributes("table")) == len(page.texts["caption"]) == 10
    assert all(caption.strip() for caption in page.texts["caption"])
    matrix = _section(text, "manifold").split("<h3>Class-swap success</h3>")[1].split("</table>")[0]
    assert '<th scope="col">from \\ to</th><th scope="col">to normal</th><th scope="col">to cnv</th>' in matrix
    assert '<tr><th scope="row">from normal</th><td>—</td><td>90.0%</td></tr>' in matrix
    assert '<tr><th scope="row">from cnv</th><td>70.0%</td><td>—</td></tr>' in matrix


def test_images_have_short_alt_texts_of_their_own(tmp_path):
    """Every image's alt repeated its visible caption, and an explanation's title was read three times (the
    caption, then "saliency map: <title>" and "counterfactual path: <title>")."""
    text = build_report(make_run(tmp_path / "run")).read_text(encoding="utf-8")
    page = _Elements(text)
    alts = [attributes["alt"] for attributes in page.attributes("img")]
    assert len(alts) == 12 and all(alts) and not set(alts) & set(page.texts["figcaption"])
    assert max(map(len, alts)) <= 60
    assert "class-code map, PCA" in alts and "class-code map, t-SNE" in alts
    explanations = _Elements(_section(text, "explanations"))
    assert [attributes["alt"] for attributes in explanations.attributes("img")] == [
        "saliency map of scan 7.png", "counterfactual path of scan 7.png, flips at step 3",
        "saliency map of other.png", "counterfactual path of other.png"]  # it never flips: no step to name
    assert explanations.texts["figcaption"] == ["normal (classified normal) towards cnv: flips at step 3",
                                                "other.png: cnv -> normal (never flips)"]
    assert _section(text, "explanations").count("towards cnv") == 1


def test_the_alt_texts_of_one_images_paths_name_their_targets_and_agree_with_their_captions(tmp_path):
    """--all-targets gave every path of one image the same alt text, and a path that starts at its target read
    "flips at step 0" in its older summary's alt text while its caption said "no flip"."""
    folder = tmp_path / "explained"
    for stem, target, flip in (("00_to-cnv", "cnv", 0), ("00_to-normal", "normal", 0), ("00_to-dme", "dme", 2)):
        _png(folder / f"{stem}_saliency.png")
        _png(folder / f"{stem}_path.png")
        _json(folder / f"{stem}.json", {"source": "/data/00.png", "prediction": {"class": "normal"},
                                        "target": {"class": target}, "flip_step": flip})
    text = build_report(make_run(tmp_path / "run"), explain=folder).read_text(encoding="utf-8")
    strips = [attributes["alt"] for attributes in _Elements(_section(text, "explanations")).attributes("img")][1::2]
    assert strips == ["counterfactual path of 00.png toward cnv, flips at step 0 (the reconstruction)",
                      "counterfactual path of 00.png toward dme, flips at step 2",
                      "counterfactual path of 00.png toward normal"]  # already the target: no flip, as captioned


def test_timing_sentence_says_level_with_and_which_way():
    """Equal times read "1.0x faster than the slowest", and "1.1x the quickest method" did not say slower."""
    assert readings.read_time({"CAE": 12.0, "Grad-CAM": 12.0}, subject="CAE") == (
        "CAE takes 12 ms per saliency map, level with the slowest (Grad-CAM, 12 ms).")
    assert readings.read_time({"CAE": 12.0, "Grad-CAM": 11.0, "LIME": 12.04}, subject="CAE") == (
        "CAE takes 12 ms per saliency map, 1.1x as slow as the quickest method (Grad-CAM, 11 ms) and level with "
        "the slowest (LIME, 12 ms).")
    assert readings.read_time({"CAE": 12.0, "Grad-CAM": 11.5, "LIME": 13.0}, subject="CAE") == (  # 4% and 8%
        "CAE takes 12 ms per saliency map, level with the quickest method (Grad-CAM, 12 ms) and 1.1x faster than "
        "the slowest (LIME, 13 ms).")


def test_strips_scroll_from_the_keyboard(tmp_path):
    """The sideways-scrolling strip boxes could not take the focus, so a keyboard could not scroll them."""
    text = build_report(make_run(tmp_path / "run")).read_text(encoding="utf-8")
    strips = [attributes for attributes in _Elements(text).attributes("div")
              if attributes.get("class") == "strip-scroll"]
    assert strips == [{"class": "strip-scroll", "tabindex": "0", "role": "region",
                       "aria-label": f"counterfactual path of {name}, scrolls sideways"}
                      for name in ("scan 7.png", "other.png")]


def test_arrows_in_headings_are_read_as_words_and_explained(tmp_path):
    """'AOPC ↑' was read "AOPC up arrow"; nothing on the page said what the arrows mean."""
    text = build_report(make_run(tmp_path / "run")).read_text(encoding="utf-8")
    evaluation = _section(text, "evaluation")
    higher = '<span role="img" aria-label="higher is better" title="higher is better">↑</span>'
    lower = '<span role="img" aria-label="lower is better" title="lower is better">↓</span>'
    assert f'<th scope="col">AOPC {higher}</th>' in evaluation
    assert f'<th scope="col">ms / image {lower}</th>' in evaluation
    assert "↑ marks a column where higher is better, ↓ one where lower is better" in evaluation.split("</p>")[0]
    assert '<th scope="col">a &lt;↑&gt;</th>' in table_html(["a <↑>"], [])  # an arrow inside a name is text


def test_the_interactive_map_is_a_relative_link_where_the_report_knows_its_place(tmp_path):
    """The path to maps.html was plain text, to be copied into the browser by hand."""
    run = make_run(tmp_path / "run")
    maps = run / "manifold" / "maps.html"
    beside = _section(build_report(run).read_text(encoding="utf-8"), "manifold")
    assert f'<a href="manifold/maps.html">{maps}</a> (opens offline)' in beside
    elsewhere = _section(build_report(run, tmp_path / "my reports" / "r.html").read_text(encoding="utf-8"),
                         "manifold")
    assert f'<a href="../run/manifold/maps.html">{maps}</a>' in elsewhere
    spaced = tmp_path / "a run #1"
    run.rename(spaced)
    quoted = _section(build_report(spaced, tmp_path / "r.html").read_text(encoding="utf-8"), "manifold")
    assert '<a href="a%20run%20%231/manifold/maps.html">' in quoted
    unplaced = _section(render_report(ReportSources.from_run(spaced)), "manifold")  # where it will be: unknown
    assert f"each point named on hover: {spaced / 'manifold' / 'maps.html'} (opens offline)" in unplaced


def test_the_mask_outline_and_the_flip_are_not_told_by_colour_alone(tmp_path):
    """The text called the mask outline "green" (lime reads as inferno's yellow under deuteranopia) and the flip
    frame "red", though the frame's caption also says "flip"."""
    text = build_report(make_run(tmp_path / "run")).read_text(encoding="utf-8")
    assert "green" not in text
    assert "lesion masks, where the data has them, drawn as a light outline with a dark edge" in _section(text, "data")
    assert "<figcaption>saliency maps of every method; ground-truth lesion outlined (light line, dark edge)" in text
    assert "its caption ends in &quot;flip&quot;" in _section(text, "explanations").split("</p>")[0]
