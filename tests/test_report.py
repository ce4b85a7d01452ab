"""The HTML report: readings computed from the numbers, one self-contained page, graceful partial runs."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
import numpy as np
from PIL import Image

from caex.cli.main import main
from caex.classifier import build_classifier_network, load_classifier, save_bundle
from caex.errors import CaexError
from caex.evaluation.ranking import RANKING
from caex.evaluation.runner import markdown_cell
from caex.explain.render import FLIP_COLOUR, save_explanation
from caex.model import CAE, CAEConfig
from caex.report import build_report, readings
from caex.report import html as report_html
from caex.report.html import read_training_log, training_curves_png
from caex.report.schema import conform
from caex.utils.provenance import cae_digest, classifier_digest


# --------------------------------------------------------------------------- readings


def test_faithfulness_reading_compares_with_best_baseline_and_random():
    text = readings.read_faithfulness({"CAE": 0.41, "LIME": 0.31, "Grad-CAM": 0.20, "Random": 0.25})
    assert text.startswith("CAE's AOPC is 0.410, 1.3x the best baseline (LIME, 0.310)")
    assert "Grad-CAM does not beat the random map (0.250)" in text


def test_no_figure_reads_minus_zero():
    """An AOPC of -0.0001 read "-0.000" in the report's sentences, tables and headline figures (results.md
    already printed "0.000"); a value that rounds away from zero keeps its sign."""
    text = readings.read_faithfulness({"CAE": -0.0004, "Grad-CAM": 0.2, "Random": -0.0001})
    assert "-0.000" not in text and "CAE's AOPC is 0.000" in text and "random map (0.000)" in text
    assert [report_html.format_cell(value) for value in (-0.0004, -0.0006, -100.04, -0.04 - 100)] == [
        "0.000", "-0.001", "-100.0", "-100.0"]
    assert report_html.format_cell(-99.99996) == "-100.000"
    from caex.utils.numbers import fixed
    assert [fixed(value) for value in (-0.0, math.nan, -math.inf, -1e-9)] == ["0.000", "nan", "-inf", "0.000"]
    assert fixed(-0.04, ",.1f") == "0.0" and fixed(-1234.56, ",.1f") == "-1,234.6"


def test_faithfulness_reading_close_call_is_level():
    assert "0.740, level with the best baseline (Grad-CAM, 0.739)" in readings.read_faithfulness(
        {"CAE": 0.740, "Grad-CAM": 0.739}, metric="PD")


def test_faithfulness_reading_when_a_baseline_wins():
    text = readings.read_faithfulness({"CAE": 0.2, "Occlusion": 0.3, "Random": 0.1}, metric="PD")
    assert "CAE's PD is 0.200, below the best baseline (Occlusion, 0.300)" in text
    assert "covering the pixels Occlusion marks" in text
    assert "random" not in text.split(":")[-1]  # nobody loses to random here


def test_faithfulness_reading_finds_cae_variants_and_skips_nan():
    text = readings.read_faithfulness({"CAE-guided": 0.5, "LIME": math.nan, "Grad-CAM": 0.25})
    assert text.startswith("CAE-guided's AOPC is 0.500, 2.0x the best baseline (Grad-CAM, 0.250)")


def test_faithfulness_reading_never_calls_a_cae_variant_a_baseline():
    """With three CAE rows the sentence read 'level with the best baseline (CAE-nearest, 0.580)'."""
    scores = {"CAE-guided": 0.60, "CAE-nearest": 0.58, "Grad-CAM": 0.50, "Random": 0.2}
    text = readings.read_faithfulness(scores, subject="CAE-nearest")
    assert text.startswith("CAE-nearest's AOPC is 0.580, 1.2x the best baseline (Grad-CAM, 0.500)")
    assert "CAE-guided" not in text
    located = readings.read_localisation({"CAE-guided": 0.3, "CAE-nearest": 0.2, "IG": 0.25},
                                         {"CAE-nearest": 0.75}, subject="CAE-nearest", n_with_mask=24)
    assert located == ("CAE-nearest puts 20% of its saliency inside the lesion masks (best other method: IG, 25%), "
                       "and its top pixel falls inside the lesion for 75% of the 24 images with a lesion.")
    assert readings.read_time({"CAE-guided": 50.0, "CAE-nearest": 5.0, "LIME": 500.0, "Random": 0.031},
                              subject="CAE-nearest") == (
        "CAE-nearest takes 5.0 ms per saliency map, 100x faster than the slowest (LIME, 500 ms).")
    # The random map explains nothing: the quickest method named is the quickest explainer
    assert readings.read_time({"CAE": 57.1, "Grad-CAM": 1.2, "LIME": 542.0, "Random": 0.03}, subject="CAE") == (
        "CAE takes 57 ms per saliency map, 48x as slow as the quickest method (Grad-CAM, 1.2 ms) and 9.5x faster than "
        "the slowest (LIME, 542 ms).")


def test_faithfulness_reading_weighs_paired_differences_against_random():
    """Grad-CAM at 0.649 'beat' the random map at 0.648 on 32 images; within two standard errors of the paired
    differences it is not told apart from it. The images' own spread is shared, so a steady small lead counts."""
    random = [0.2, 0.9, 0.5, 0.6]  # the images differ a lot from each other
    per_image = {"Random": random,
                 "Grad-CAM": [r + d for r, d in zip(random, [0.05, -0.04, 0.03, -0.02])],  # mean +0.005, noisy
                 "CAE": [r + d for r, d in zip(random, [0.03, 0.04, 0.03, 0.04])],  # mean +0.035, steady
                 "LIME": [r - 0.01 for r in random]}
    scores = {name: sum(values) / 4 for name, values in per_image.items()}
    text = readings.read_faithfulness(scores, per_image=per_image)
    assert "LIME does not beat the random map (0.550)" in text
    assert "Grad-CAM is above the random map by less than two standard errors" in text
    assert "CAE is above" not in text  # paired: 0.035 against 2 x 0.0029
    assert readings.paired_standard_error([1.0, 2.0, 3.0], [0.5, 1.5, 2.5]) == 0.0
    assert math.isnan(readings.paired_standard_error([1.0], [0.5]))
    assert "standard errors" not in readings.read_faithfulness(scores)  # none given: only the plain comparison


def test_swap_reading_names_weakest_direction_and_ignores_diagonal():
    matrix = [[None, 0.9, 1.0], [0.5, None, 0.8], [0.7, 0.95, math.nan]]
    text = readings.read_swap(matrix, ["a", "b", "c"])
    assert "81% of test pairs" in text  # mean of the six off-diagonal cells: 4.85 / 6
    assert "weakest direction: b → a, 50%" in text


def test_other_readings_use_the_numbers():
    assert "97% accuracy (10-fold cross-validation), against 60%" in readings.read_separability(
        0.97, dims=8, folds=10, pixel_accuracy=0.6, chance=readings.chance_text(4))
    assert "(chance with 4 classes: 25%)" in readings.read_separability(0.97, chance=readings.chance_text(4))
    assert readings.chance_text(2, [60, 2]) == "always naming the commonest class: 97%"  # 1/K read 97% as far above
    assert readings.chance_text(2, [30, 30]) == readings.chance_text(2) == "chance with 2 classes: 50%"
    assert readings.chance_text(4, [0, 0, 0, 0]) == readings.chance_text(4, []) == "chance with 4 classes: 25%"
    assert readings.read_separability(0.3, pixel_accuracy=0.4).endswith("better than raw pixels.")
    smooth = readings.read_smoothness({"normal": 0.95, "cnv": 0.85}, 0.8)
    assert "90% of the time (lowest: cnv, 85%)" in smooth and "80% of straight paths" in smooth
    local = readings.read_localisation({"CAE": 0.62, "Grad-CAM": 0.48, "Random": 0.09}, {"CAE": 0.9})
    assert "CAE puts 62%" in local and "Grad-CAM, 48%" in local and "random: 9.0%" in local and "90%" in local
    time = readings.read_time({"CAE": 25, "LIME": 18900, "Random": 0.3})
    assert "756x faster than the slowest (LIME, 18,900 ms)" in time and "Random" not in time
    # figures side by side share a precision, and tied weakest directions are all named
    assert "keep their class 99.4% of the time (lowest: normal, 97.6%)" in readings.read_smoothness(
        {"normal": 0.976, "cnv": 1.0, "dme": 1.0, "drusen": 1.0})
    tied = readings.read_swap([[0, 1, 1], [0.96, 0, 1], [0.96, 1, 0]], ["normal", "cnv", "dme"])
    assert "(weakest directions: cnv → normal and dme → normal, 96% each)" in tied
    flips = readings.read_flips([3, 0, -1, 5], 16)
    assert flips.startswith("The classifier's decision flips along 2 of the 4 paths within 16 steps; for 1 the")
    assert readings.read_flips([2, 4]).endswith("so the maps show what had to change.")
    assert readings.read_accuracy(0.975, 4) == ("The classifier being explained is right on 98% of held-out "
                                                "test images (chance with 4 classes: 25%).")
    assert readings.read_accuracy(1.0, 2, [60, 2]).endswith("(always naming the commonest class: 97%).")


# --------------------------------------------------------------------------- a fake run folder


def _png(path: Path, colour: tuple[int, int, int] = (40, 90, 200)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 8), colour).save(path)


def _write_json(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content), encoding="utf-8")


def make_run(root: Path) -> Path:
    """A demo-layout folder with every file the report reads (tiny PNGs, hand-made numbers)."""
    _png(root / "data/samples.png")
    _write_json(root / "data/dataset.json", {"spec": "synthetic:classes=2", "class_names": ["normal", "cnv"],
                                             "image_size": 32, "channels": 1,
                                             "class_counts": {"train": [8, 8], "test": [2, 2]}})
    _write_json(root / "classifier/classifier.json", {"arch": "smallcnn", "class_names": ["normal", "cnv"],
                                                      "image_size": 32, "channels": 1, "test_accuracy": 0.75})
    (root / "cae").mkdir()
    lines = [json.dumps({"iter": i, "recon_image": 1.0 / i, "cycle": 2.0 / i, "lr": 1e-3}) for i in range(1, 30)]
    (root / "cae/log.jsonl").write_text("\n".join(lines) + '\n{"iter": 30, "recon_', encoding="utf-8")
    _png(root / "cae/samples/iter_0000010.png")
    _png(root / "cae/samples/iter_0000020.png", (200, 30, 30))
    for name in ("map_pca.png", "map_tsne.png", "paths.png"):
        _png(root / "manifold" / name)
    (root / "manifold" / "codes.csv").write_text("split,file,label\n", encoding="utf-8")
    _write_json(root / "manifold/summary.json", {
        "class_names": ["normal", "cnv"], "data": "synthetic:classes=2",
        "counts": {"train_per_class": [30, 31], "test_per_class": [7, 8]},
        "separability": {"class_codes": {"mean": 0.95, "std": 0.02, "balanced": 0.94, "folds": 5, "dims": 8},
                         "pixel_pca": {"mean": 0.6, "std": 0.05, "folds": 5, "dims": 8},
                         "classifier_features": {"skipped": True, "note": "black box"}},
        "swap": {"matrix": [[None, 0.9], [0.7, None]], "mean": 0.8},
        "smoothness": {"per_class": {"normal": 0.96, "cnv": 0.88}},
        "paths": {"monotone_share": 0.75}})
    _png(root / "explain/00_normal_saliency.png")
    _png(root / "explain/00_normal_path.png")
    _write_json(root / "explain/explanations.json", {"steps": 8, "examples": [
        {"stem": "00_normal", "title": "normal towards cnv: flips at step 3", "flip_step": 3}]})
    for name in ("gallery.png", "curves.png"):
        _png(root / "evaluate" / name)
    _write_json(root / "evaluate/results.json", {
        "settings": {"n_images": 4, "patch": 7, "n_patches": 5, "fill": "uniform", "device": "cpu",
                     "ranking": RANKING},
        "methods": [
            {"method": "cae", "status": "ok", "aopc": 0.41, "peak_degradation": 0.5, "pointing": 0.9,
             "mass_in_mask": 0.62, "iou": 0.3, "ms_per_image": 25.0, "curve": [0.1, 0.2]},
            {"method": "lime", "status": "ok", "aopc": 0.31, "peak_degradation": 0.45, "pointing": 0.5,
             "mass_in_mask": 0.4, "iou": 0.2, "ms_per_image": 900.0, "curve": [0.1, 0.1]},
            {"method": "random", "status": "ok", "aopc": 0.05, "peak_degradation": 0.1, "pointing": 0.1,
             "mass_in_mask": 0.09, "iou": 0.05, "ms_per_image": 0.2, "curve": [0.0, 0.0]},
            {"method": "fullgrad", "status": "skipped", "reason": "skipped: no gradients"}]})
    return root


class _PageParser(HTMLParser):
    """Collects what the self-containment checks need: every src/href, section ids, table count."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.sections: list[str] = []
        self.tables = 0
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append(tag)
        self.links += [value for key, value in attrs if key in ("src", "href") and value]
        if tag == "section":
            self.sections.append(attributes["id"])
        self.tables += tag == "table"


def parse(text: str) -> _PageParser:
    parser = _PageParser()
    parser.feed(text)
    parser.close()
    return parser


def assert_self_contained(text: str) -> _PageParser:
    page = parse(text)
    assert "http://" not in text and "https://" not in text and 'src="//' not in text
    assert "<script" not in text and "<link" not in text
    for link in page.links:
        assert link.startswith(("data:image/png;base64,", "#")), link[:40]
    return page


def test_the_classifiers_chance_is_read_against_its_own_test_split(tmp_path):
    """Without a manifold summary of its data, a classifier that always names the commonest of a 60-to-2 split
    (97%) read as far above 'chance with 2 classes: 50%'."""
    run = make_run(tmp_path / "run")
    info = json.loads((run / "classifier/classifier.json").read_text())
    _write_json(run / "classifier/classifier.json", {**info, "test_accuracy": 60 / 62, "test_class_counts": [60, 2]})
    text = build_report(run).read_text(encoding="utf-8")
    section = text.split('<section id="classifier"')[1].split("</section>")[0]
    assert "right on 97% of held-out test images (always naming the commonest class: 97%)." in section


def test_report_embeds_every_figure_and_table(tmp_path):
    run = make_run(tmp_path / "run")
    path = build_report(run)
    assert path == run / "report.html"
    text = path.read_text(encoding="utf-8")
    page = assert_self_contained(text)
    assert page.sections == ["overview", "data", "classifier", "training", "manifold", "explanations",
                             "evaluation", "settings"]
    # samples, curves, latest grid, 3 manifold figures, overlay + strip, gallery + curves
    images = [link for link in page.links if link.startswith("data:")]
    assert len(images) == 10
    assert "iter_0000020: one training image per class" in text and "iter_0000010" not in text  # the latest grid only
    # dataset, classifier, separability, swap, smoothness, results, settings (no stage markers)
    assert page.tables == 7
    settings = text.split('<section id="settings"')[1]
    assert "<td>classifier</td><td>architecture</td><td>smallcnn</td>" in settings  # as classifier.json says
    assert '<th scope="col">std</th><th scope="col">balanced accuracy</th>' in text and "<td>94.0%</td>" in text
    assert "not with another training run" in settings
    # the title names the data; the subtitle no longer shows the absolute local path
    assert "<title>caex report: run (synthetic:classes=2)</title>" in text and str(tmp_path) not in text
    assert "CAE&#x27;s AOPC is 0.410, 1.3x the best baseline (LIME, 0.310)" in text
    assert "Giving an image another class&#x27;s code" in text and "80% of test pairs" in text
    assert "Grad-CAM" not in text and "FullGrad: skipped: no gradients" in text
    assert "Not available" not in text


def test_a_report_over_results_of_different_models_says_so_instead_of_vouching_for_one(tmp_path):
    """It said "Every figure here comes from one trained CAE and one classifier" over an evaluation made by
    another CAE than the explanations' and the analysis'."""
    run = make_run(tmp_path / "run")

    def record(cae: str) -> dict:
        return {"provenance": {"cae": {"source": "/x", "digest": cae}, "classifier": {"digest": "c1"}}}

    summary = json.loads((run / "manifold/summary.json").read_text())
    _write_json(run / "manifold/summary.json", {**summary, **record("a1")})
    _write_json(run / "explain/00_normal.json", record("a1"))
    results = json.loads((run / "evaluate/results.json").read_text())
    _write_json(run / "evaluate/results.json", {**results, "settings": {**results["settings"], **record("a1")}})
    settings = build_report(run).read_text(encoding="utf-8").split('<section id="settings"')[1]
    for stage in ("global analysis", "explanations", "evaluation"):
        assert f"<td>{stage}</td><td>CAE weights (digest)</td><td>a1</td>" in settings
    assert "not with another training run" in settings and "Warning" not in settings
    _write_json(run / "evaluate/results.json", {**results, "settings": {**results["settings"], **record("b2")}})
    settings = build_report(run).read_text(encoding="utf-8").split('<section id="settings"')[1]
    assert "Warning: these results were made by more than one CAE (their weight digests differ" in settings
    assert "Every figure here comes from one trained CAE" not in settings
    # the run's own CAE counts too: results made by another one are not this run's
    _write_json(run / "evaluate/results.json", {**results, "settings": {**results["settings"], **record("a1")}})
    cae = CAE(CAEConfig.preset("tiny", image_size=32, channels=1, num_classes=2), ["normal", "cnv"])
    cae.save(run / "cae")
    settings = build_report(run).read_text(encoding="utf-8").split('<section id="settings"')[1]
    assert f"<td>CAE run</td><td>CAE weights (digest)</td><td>{cae_digest(cae)}</td>" in settings
    assert "Warning: these results were made by more than one CAE" in settings
    # explanations made with the bundle's own ONNX export are the bundle's classifier, not another one
    net = build_classifier_network("smallcnn", channels=1, num_classes=2, image_size=32)
    save_bundle(net, run / "classifier", class_names=["normal", "cnv"], image_size=32, onnx=True)
    bundle = classifier_digest(load_classifier(run / "classifier", device="cpu"))
    export = classifier_digest(load_classifier(run / "classifier" / "classifier.onnx"))
    records = {"cae": {"digest": cae_digest(cae)}}
    for folder, name, classifier in (("manifold", "summary.json", bundle), ("explain", "00_normal.json", export)):
        content = json.loads((run / folder / name).read_text())
        _write_json(run / folder / name, {**content, "provenance": {**records, "classifier": {"digest": classifier}}})
    _write_json(run / "evaluate/results.json", {**results, "settings": {**results["settings"], "provenance": {
        **records, "classifier": {"digest": bundle}}}})
    settings = build_report(run).read_text(encoding="utf-8").split('<section id="settings"')[1]
    assert export != bundle and f"<td>explanations (ONNX export)</td><td>classifier weights (digest)</td><td>{bundle}" \
        in settings
    assert "Warning" not in settings and "not with another training run" in settings


def test_report_with_cae_variants_names_one_of_them_everywhere(tmp_path):
    run = make_run(tmp_path / "run")
    results = json.loads((run / "evaluate/results.json").read_text())
    cae = results["methods"][0]
    results["methods"][:1] = [{**cae, "method": "cae-guided", "aopc": 0.38, "aopc_se": 0.02, "mass_in_mask": 0.7},
                              {**cae, "method": "cae-nearest", "aopc": 0.41, "aopc_se": 0.02}]
    results["settings"].update(has_masks=True, n_with_mask=3, cae={"cae-nearest": "16-step nearest paths"})
    _write_json(run / "evaluate/results.json", results)
    text = build_report(run).read_text(encoding="utf-8")
    assert "CAE-nearest&#x27;s AOPC is 0.410, 1.3x the best baseline (LIME, 0.310)" in text
    assert "CAE-nearest puts 62% of its saliency" in text and "of the 3 images with a lesion" in text
    assert "<b>0.410</b><span>CAE-nearest AOPC</span>" in text  # the headline follows the same row
    assert text.count('<tr class="highlight">') == 2 and "<td>0.410 ± 0.020</td>" in text
    assert "CAE maps (CAE-nearest: 16-step nearest paths)." in text


def test_report_of_an_interrupted_evaluation_says_so(tmp_path):
    run = make_run(tmp_path / "run")
    results = json.loads((run / "evaluate/results.json").read_text())
    results["settings"]["interrupted"] = True
    _write_json(run / "evaluate/results.json", results)
    assert "This evaluation was interrupted: only the methods in the table ran." in build_report(run).read_text()


def test_report_without_masks_says_so_instead_of_describing_them(tmp_path):
    run = make_run(tmp_path / "run")
    results = json.loads((run / "evaluate/results.json").read_text())
    for row in results["methods"]:
        for key in ("pointing", "mass_in_mask", "iou"):
            row.pop(key, None)
    results["settings"]["has_masks"] = False
    _write_json(run / "evaluate/results.json", results)
    text = build_report(run).read_text(encoding="utf-8")
    assert "green: ground-truth lesion" not in text
    assert "The data has no ground-truth lesion masks, so localisation was not measured." in text


def test_embedded_png_round_trips(tmp_path):
    run = make_run(tmp_path / "run")
    text = build_report(run, tmp_path / "out" / "page.html").read_text(encoding="utf-8")
    first = re.search(r'src="data:image/png;base64,([^"]+)"', text).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(first))).format == "PNG"


def test_explain_folder_of_many_images_embeds_only_the_first_examples(tmp_path):
    from caex.report.html import MAX_EXAMPLES

    run = make_run(tmp_path / "run")
    for index in range(1, MAX_EXAMPLES + 10):  # 00_normal exists: MAX_EXAMPLES + 10 explanations in all
        _png(run / f"explain/{index:03d}_cnv_saliency.png")
        _png(run / f"explain/{index:03d}_cnv_path.png")
    text = build_report(run).read_text(encoding="utf-8")
    explanations = text.split('<section id="explanations"')[1].split("</section>")[0]
    assert explanations.count('<figure class="example">') == MAX_EXAMPLES
    assert f"The first {MAX_EXAMPLES} of {MAX_EXAMPLES + 10} explanations" in explanations
    assert "023_cnv" in explanations and "024_cnv" not in explanations  # the first by file name


def test_partial_run_lists_missing_parts(tmp_path):
    run = make_run(tmp_path / "run")
    for name in ("manifold", "evaluate"):
        for file in (run / name).iterdir():
            file.unlink()
        (run / name).rmdir()
    text = build_report(run).read_text(encoding="utf-8")
    assert_self_contained(text)
    assert text.count("Not available") == 2
    assert "manifold tables" in text and "results table" in text
    assert "class-swap success" not in text  # no headline figure without its file


def test_cae_run_folder_with_separate_analysis_folders(tmp_path):
    demo = make_run(tmp_path / "demo")
    text = build_report(demo / "cae", tmp_path / "r.html", manifold=demo / "manifold",
                        evaluate=demo / "evaluate").read_text(encoding="utf-8")
    assert_self_contained(text)
    assert "loss terms against iteration" in text and "80% of test pairs" in text and "AOPC" in text
    # no data or classifier folder: one line each on where they come from, not one per missing file
    assert "only a `caex demo` folder holds data/samples.png; `caex data show DATA --out samples.png`" in text
    assert "not part of this run folder: give --classifier CLF (the output of `caex train-classifier`)" in text
    assert "classifier.json" not in text and "give --explain DIR (the output of `caex explain`)" in text
    # the data set as the manifold analysis counted it (it said "dataset.json not found" before 2026-12-07)
    assert "synthetic:classes=2: 61 training and 15 test images of" in text and "data set description" not in text


def test_cli_report_takes_the_classifier_bundle_of_a_separate_pipeline(tmp_path):
    """A CAE run made with `caex train` has no classifier/ folder: the Classifier section was always missing."""
    demo = make_run(tmp_path / "demo")
    assert main(["report", str(demo / "cae"), "--classifier", str(demo / "classifier"),
                 "--out", str(tmp_path / "r.html")]) == 0
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "smallcnn" in text and "give --classifier" not in text


def test_cli_report_takes_the_model_file_the_other_commands_took(tmp_path):
    """The README's ONNX walkthrough swaps the bundle folder for `my_model.onnx` in every command, report included:
    it stopped with "not a folder" after every other stage had run."""
    demo = make_run(tmp_path / "demo")
    model = demo / "classifier" / "model.onnx"
    model.write_bytes(b"")
    assert main(["report", str(demo / "cae"), "--classifier", str(model), "--out", str(tmp_path / "r.html")]) == 0
    assert "smallcnn" in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_a_given_folder_of_the_wrong_kind_is_an_error_not_a_missing_section(tmp_path, capsys):
    """Explicit --manifold/--evaluate/--classifier folders that were empty, swapped or corrupt gave exit 0 and a
    report of 'not available' sections."""
    demo = make_run(tmp_path / "demo")
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad_clf").mkdir()
    (tmp_path / "bad_clf" / "classifier.json").write_text("{torn")
    for option, folder, message in (("--manifold", tmp_path / "empty", "holds no codes.csv"),
                                    ("--manifold", demo / "cae", "holds no codes.csv"),  # its summary.json passed
                                    ("--explain", demo / "classifier", "holds no *_saliency.png"),  # its *.json did
                                    ("--evaluate", demo / "manifold", "holds no results.json"),
                                    ("--classifier", tmp_path / "bad_clf", "is missing or not a readable JSON object")):
        assert main(["report", str(demo / "cae"), option, str(folder), "--out", str(tmp_path / "r.html")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"caex report: error: {option} ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "r.html").exists()
    (tmp_path / "bare").mkdir()  # a bare model file records nothing: its section says so, the report is written
    (tmp_path / "bare" / "model.onnx").write_bytes(b"")
    assert main(["report", str(demo / "cae"), "--classifier", str(tmp_path / "bare" / "model.onnx"),
                 "--out", str(tmp_path / "r.html")]) == 0


def test_training_log_skips_torn_line_and_bookkeeping(tmp_path):
    run = make_run(tmp_path / "run")
    records = read_training_log(run / "cae/log.jsonl")
    assert len(records) == 29 and records[-1]["recon_image"] == pytest.approx(1 / 29)
    assert training_curves_png(records)[:8] == b"\x89PNG\r\n\x1a\n"
    assert training_curves_png([{"iter": 1.0, "lr": 0.1}]) is None  # nothing but bookkeeping


def test_training_curves_draw_a_term_with_dollar_signs_literally():
    """Matplotlib parsed ``$...$`` as math text and raised ValueError on what is not valid TeX."""
    records = [{"iter": float(step), r"$\nosuch$ term": 1.0 / step} for step in range(1, 5)]
    assert training_curves_png(records)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("make_bad", [lambda tmp: tmp / "absent", lambda tmp: tmp])
def test_bad_run_folder_is_one_line_error(tmp_path, make_bad):
    with pytest.raises(CaexError) as error:
        build_report(make_bad(tmp_path))
    assert "\n" not in str(error.value) and str(make_bad(tmp_path)) in str(error.value)


def test_cli_report_writes_file_and_reports_bad_path(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    assert main(["report", str(run), "--out", str(tmp_path / "x.html")]) == 0
    assert (tmp_path / "x.html").is_file() and str(tmp_path / "x.html") in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("caex report: error: RUN") and "no such folder" in err and "\n" not in err


def test_training_summary_with_missing_numbers_still_reports(tmp_path):
    run = make_run(tmp_path / "run")
    _write_json(run / "cae/summary.json", {"iters": 40, "seconds": None, "recon_l1": None})
    text = build_report(run).read_text(encoding="utf-8")
    assert "40 iterations" in text


def test_json_files_that_hold_no_object_count_as_missing(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "manifold/summary.json").write_text("[1, 2]")  # valid JSON, but not what caex writes
    text = build_report(run).read_text(encoding="utf-8")
    assert "manifold tables (" in text and "not found or unreadable" in text


def test_unwritable_report_target_is_one_line_error(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    with pytest.raises(CaexError, match="is a folder"):
        build_report(run, tmp_path)
    with pytest.raises(CaexError, match=r"r\.png: the report is an HTML file; name it \*\.html"):
        build_report(run, tmp_path / "r.png")  # the API refuses it too, not only the command
    (tmp_path / "file.txt").write_text("x")
    assert main(["report", str(run), "--out", str(tmp_path / "file.txt" / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"caex report: error: --out {tmp_path / 'file.txt' / 'r.html'}: {tmp_path / 'file.txt'} is a file, " \
                  "not a folder"  # before any work: it was "cannot write ... (File exists)", after rendering
    (tmp_path / "scan.png").write_bytes(b"keep")  # an HTML report written over an input image
    assert main(["report", str(run), "--out", str(tmp_path / "scan.png")]) == 2
    assert "the report is an HTML file" in capsys.readouterr().err and (tmp_path / "scan.png").read_bytes() == b"keep"


@pytest.mark.parametrize(("value", "text"), [(0.913, "91%"), (0.0456, "4.6%"), (0.986, "99%"), (0.994, "99.4%"),
                                             (0.9996, "99.9%"), (1.0, "100%"), (0.0, "0.0%"), (0.990625, "99.0%")])
def test_share_reads_imperfect_shares_below_100(value, text):
    assert readings.share(value) == text
    if 0.99 < value < 1:  # the table's cell says the same, to its one decimal
        assert report_html.percent(value) == text


# --------------------------------------------------------------------------- hand-edited JSON of the wrong types


def _edit_json(path: Path, where: list, value: object) -> None:
    """Set the value at ``where`` (keys and list indices) inside the JSON file ``path``."""
    content = json.loads(path.read_text(encoding="utf-8"))
    parent = content
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = value
    _write_json(path, content)


#: Hand edits that each crashed the report with a raw exception: (file, where, wrong value, still shown, gone).
WRONG_TYPES = [
    ("manifold/summary.json", ["swap"], "80%", "<h3>Smoothness", "<h3>Class-swap success"),  # string for a dict
    ("manifold/summary.json", ["swap", "matrix", 0], [None], "<h3>Smoothness", "<h3>Class-swap success"),  # short
    ("manifold/summary.json", ["swap", "matrix", 1], None, "80%", "<h3>Class-swap success"),  # null for a row
    ("manifold/summary.json", ["class_names"], 2, "<h3>Separability", "<h3>Class-swap success"),
    ("manifold/summary.json", ["separability", "class_codes"], [0.95], "raw pixels, PCA", "CAE class codes"),
    ("manifold/summary.json", ["smoothness", "per_class"], [0.96, 0.88], "75% of straight paths", "decoded mixtures"),
    ("evaluate/results.json", ["methods"], 3, "results table (", "<h3>Results"),
    ("evaluate/results.json", ["methods", 1, "method"], 7, "CAE&#x27;s AOPC is 0.410", "LIME"),  # number as a name
    ("evaluate/results.json", ["settings"], "cpu", "<h3>Results", "Measured on"),
    ("classifier/classifier.json", ["class_names"], [0, 1], "smallcnn", "normal, cnv"),  # numbers as class names
    ("data/dataset.json", ["class_counts", "train"], "8, 8", "0 training and 4 test images", "16 training"),
    ("explain/explanations.json", ["examples"], {"00_normal": 3}, "00_normal", "flips along"),  # dict for a list
    ("explain/explanations.json", ["examples", 0, "flip_step"], "3", "flips at step 3", "flips along"),
]


@pytest.mark.parametrize(("file", "where", "value", "shown", "gone"), WRONG_TYPES,
                         ids=[f"{file}:{'.'.join(map(str, where))}" for file, where, *_ in WRONG_TYPES])
def test_json_values_of_the_wrong_type_read_as_missing(tmp_path, file, where, value, shown, gone):
    """A value of the wrong type is left out like a missing one: its section shows the rest, nothing raises."""
    run = make_run(tmp_path / "run")
    _edit_json(run / file, where, value)
    text = build_report(run).read_text(encoding="utf-8")
    page = assert_self_contained(text)
    assert len(page.sections) == 8
    assert shown in text and gone not in text


def _json_paths(value: object, where: tuple = ()) -> Iterator[tuple]:
    """The position of every value inside a JSON document (not the document itself)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        yield (*where, key)
        yield from _json_paths(child, (*where, key))


def test_every_json_value_of_a_run_may_have_any_wrong_type(tmp_path, monkeypatch):
    """Every value of every JSON file the report reads, swapped for one of each other JSON type, still renders."""
    monkeypatch.setattr(report_html, "training_curves_png", lambda records: None)  # speed: the log is not edited
    run = make_run(tmp_path / "run")
    _write_json(run / "cae/summary.json", {"iters": 40, "seconds": 12.5, "images_per_second": 30.0, "recon_l1": 0.1})
    for name in report_html.STAGE_FOLDERS:
        _write_json(run / name / "stage.json", {"status": "done", "seconds": 1.5})
    sources = report_html.ReportSources.from_run(run)
    for path in sorted(run.rglob("*.json")):
        original = path.read_text(encoding="utf-8")
        for where in _json_paths(json.loads(original)):
            for value in ("x", 2, True, None, [0], {"x": 0}):
                path.write_text(original, encoding="utf-8")
                _edit_json(path, list(where), value)
                try:
                    report_html.render_report(sources)
                except Exception as error:  # name the edit that broke it
                    raise AssertionError(f"{path.relative_to(run)} {where} = {value!r}: {error!r}") from error
        path.write_text(original, encoding="utf-8")


def test_conform_keeps_what_matches_the_schema():
    schema = {"n": int, "x": float, "flag": bool, "names": [str], "cells": [(float, None)],
              "rows": [{"name": str}], "shares": {str: float}}
    content = {"n": True, "x": 3, "flag": 1, "names": ["a", 2], "cells": [None, 0.5], "unknown": 1,
               "rows": [{"name": "a", "extra": 1}, 5, {"name": 6}], "shares": {"a": 0.5, "b": "0.4"}}
    assert conform(content, schema) == {"x": 3, "cells": [None, 0.5], "rows": [{"name": "a"}, {}],
                                        "shares": {"a": 0.5}}
    assert conform([content], schema) is None and conform(None, [int]) is None
    # a float re-saved by jq or JavaScript as a whole number (0.0 -> 0) is a float again: the report printed "0"
    resaved = conform({"x": 0}, schema)["x"]
    assert conform({"x": 10 ** 400}, schema) == {}  # too large for a float: missing, not an OverflowError
    assert type(conform(content, schema)["x"]) is float and report_html.format_cell(resaved) == "0.000"


def test_training_table_rounds_the_speed_and_says_what_its_seconds_count(tmp_path):
    run = make_run(tmp_path / "run")
    _write_json(run / "cae/summary.json", {"iters": 40, "seconds": 12.5, "images_per_second": 43.0104, "recon_l1": 0.1})
    text = build_report(run).read_text(encoding="utf-8")
    assert "<td>43.0</td>" in text and "43.010" not in text  # was three decimals
    assert "40 iterations in 12 s of training (its own clock: setup, sample grids and saving not counted)" in text
    assert "stopped by its time limit" not in text
    _write_json(run / "cae/summary.json", {"iters": 40, "iters_asked": 6000, "seconds": 12.5, "recon_l1": 0.1})
    assert ("40 iterations in 12 s of training (its own clock: setup, sample grids and saving not counted), "
            "stopped by its time limit before the 6,000 asked for;") in build_report(run).read_text(encoding="utf-8")


def test_aopc_per_class_is_tabled_where_the_images_span_several_classes(tmp_path):
    run = make_run(tmp_path / "run")
    results = json.loads((run / "evaluate/results.json").read_text())
    results["methods"][0]["aopc_per_class"] = {"normal": 0.52, "cnv": 0.30}
    results["methods"][1]["aopc_per_class"] = {"normal": 0.33, "cnv": "bad"}  # a bad value reads as missing
    results["methods"][2]["aopc_per_class"] = {"normal": 0.05}
    (run / "evaluate/results.json").write_text(json.dumps(results))
    evaluation = build_report(run).read_text(encoding="utf-8").split('<section id="evaluation"')[1]
    table = evaluation.split("<h3>AOPC per class</h3>")[1].split("</table>")[0]
    assert '<th scope="col">normal</th><th scope="col">cnv</th>' in table
    assert "<td>Random</td><td>0.050</td><td>—</td>" in table
    assert "<td>0.520</td><td>0.300</td>" in table and "<td>0.330</td><td>—</td>" in table
    results["settings"]["class_names"] = ["normal", "cnv"]
    results["settings"]["images_per_class"] = {"normal": 3, "cnv": 2}  # the headers give each class's images
    results["methods"][0]["aopc_per_class"] = {"cnv": 0.30}  # a null dropped: the columns keep the class order
    (run / "evaluate/results.json").write_text(json.dumps(results))
    evaluation = build_report(run).read_text(encoding="utf-8").split('<section id="evaluation"')[1]
    assert '<th scope="col">normal (n=3)</th><th scope="col">cnv (n=2)</th>' in evaluation
    for row in results["methods"]:
        row["aopc_per_class"] = {"normal": 0.1}  # the images of one class: no table
    (run / "evaluate/results.json").write_text(json.dumps(results))
    assert "AOPC per class" not in build_report(run).read_text(encoding="utf-8")


def test_the_page_reads_on_a_phone_and_in_print_and_points_to_the_interactive_map(tmp_path):
    """Browser audit: a data spec widened a phone's page past the screen; strips shrank their frame labels to
    ~5 px; no print rules; the interactive map and a UMAP figure were never mentioned; '8-number' was fixed."""
    run = make_run(tmp_path / "run")
    summary = json.loads((run / "manifold/summary.json").read_text())
    (run / "manifold/summary.json").write_text(json.dumps({**summary, "code_dim": 16}))
    _png(run / "manifold/map_umap.png")
    (run / "manifold/maps.html").write_text("<html></html>")
    text = build_report(run).read_text(encoding="utf-8")
    assert "header h1, header p, p.reading" in text and "overflow-wrap: anywhere" in text and "@media print" in text
    assert '<div class="strip-scroll" tabindex="0" role="region" aria-label="counterfactual path of 00_normal, ' \
           'scrolls sideways"><img class="strip"' in text
    manifold = text.split('<section id="manifold"')[1].split("</section>")[0]
    assert "Every image&#x27;s 16-number class code" in manifold and "class codes, UMAP" in manifold
    assert f"<a href=\"manifold/maps.html\">{run / 'manifold' / 'maps.html'}</a> (opens offline)" in manifold


def test_integers_too_large_for_a_float_are_read_as_missing() -> None:
    """``"test_accuracy": 10**400`` in a hand-edited classifier.json stopped the report with an OverflowError."""
    huge = 10**400
    assert not readings.finite(huge) and readings.finite(10**300)
    assert readings.read_accuracy(huge, 2) == "The classifier's test accuracy was not recorded."
    assert readings.read_time({"CAE": huge, "random": 2.0}) == "random is quickest (2.0 ms per map), random slowest " \
                                                               "(2.0 ms)."


def test_results_of_an_earlier_ranking_say_so():
    """Results from before ties ranked by square and signed maps by their positive part read as comparable."""
    settings = {"n_images": 4, "n_patches": 5, "patch": 7}
    older = report_html._evaluation_setup(settings, with_errors=False)
    assert older.endswith("Measured by an earlier caex, which ranked tied pixels and signed maps (LIME, occlusion) "
                          "differently: rerun caex evaluate before comparing these with newer results.")
    assert "earlier caex" not in report_html._evaluation_setup({**settings, "ranking": "..."}, with_errors=False)


def test_the_manifold_section_shows_only_the_maps_its_analysis_wrote(tmp_path):
    """A rerun with --no-tsne into the same folder left the earlier t-SNE map there, shown beside the new numbers;
    a summary that lists no files (an older one) still shows whatever is there."""
    run = make_run(tmp_path / "run")
    summary = json.loads((run / "manifold/summary.json").read_text(encoding="utf-8"))

    def manifold_captions() -> list[str]:
        page = build_report(run).read_text(encoding="utf-8")
        return re.findall(r"<figcaption>([^<]*)</figcaption>", page.split('<section id="manifold"')[1].split(
            "</section>")[0])

    assert [caption[:17] for caption in manifold_captions()] == ["class codes, PCA", "class codes, t-SN",
                                                                  "straight paths be"]
    _write_json(run / "manifold/summary.json", {**summary, "files": {"map_pca": "map_pca.png", "paths": "paths.png"}})
    assert [caption[:17] for caption in manifold_captions()] == ["class codes, PCA", "straight paths be"]


def test_explain_outputs_are_captioned_by_their_source_files(tmp_path):
    """A `caex explain` folder was captioned by its stems, "001" and "001-2", not saying which 001.png was which;
    and "my_scan_01" read "my scan 01"."""
    run = make_run(tmp_path / "run")
    folder = tmp_path / "explained"
    for stem, source, caption in (("001", "/scans/a/001.png", "cnv -> dme, flips at step 3"),
                                  ("001-2", "/scans/b/001.png", "cnv -> normal (never flips)"),
                                  ("my_scan_01", "/scans/b/my_scan_01.png", "cnv -> dme, flips at step 0"),
                                  ("older", "/scans/b/older.png", None)):
        _png(folder / f"{stem}_saliency.png")
        _png(folder / f"{stem}_path.png")
        summary = {"source": source, "prediction": {"class": "cnv"}, "target": {"class": "dme"}, "flip_step": 3}
        _write_json(folder / f"{stem}.json", summary if caption is None else {**summary, "caption": caption})
    # Summaries saved before they held captions, of a path to the input's own class (flip step 0, as they
    # recorded it) and of an input the classifier gave no finite outputs for ("class": null)
    for stem, prediction, flip in (("own", "dme", 0), ("unread", None, 2)):
        _png(folder / f"{stem}_saliency.png")
        _write_json(folder / f"{stem}.json", {"source": f"/scans/b/{stem}.png", "prediction": {"class": prediction},
                                              "target": {"class": "dme"}, "flip_step": flip})
    _png(folder / "x_saliency.png")  # no summary: captioned by its stem
    assert _figcaptions(build_report(run, explain=folder)) == [  # by file name: "001-2" sorts first
        "b/001.png: cnv -&gt; normal (never flips)", "a/001.png: cnv -&gt; dme, flips at step 3",
        "b/my_scan_01.png: cnv -&gt; dme, flips at step 0",
        "b/older.png: cnv -&gt; dme, flips at step 3",  # a summary saved before they held captions: rebuilt
        "b/own.png: dme, already the target: no flip",  # not "..., flips at step 0"
        "b/unread.png: no class (outputs not finite) -&gt; dme, flips at step 2",  # not its bare stem
        "x"]


def _figcaptions(report: Path) -> list[str]:
    section = report.read_text(encoding="utf-8").split('<section id="explanations"')[1].split("</section>")[0]
    return re.findall(r"<figcaption>([^<]*)</figcaption>", section)


def test_the_report_captions_an_explanation_as_its_overlay_does(tmp_path, one_path_explanation):
    """A path to the input's own class that never reached it was "cnv -> cnv" on the overlay but "cnv -> cnv
    (never flips)" in the report, which judged by the flip step alone; one that stayed there "flips at step 0"."""
    explanation = one_path_explanation(target=0, flip_step=-1, unflipped=False, probability=0.4)
    folder = tmp_path / "explained"
    summary = save_explanation(explanation, 0, torch.rand(1, 16, 16), folder, "x", "/data/scan.png", gif=False)
    caption = "cnv, already the target: no flip"
    assert (summary["caption"], summary["flipped"]) == (caption, False)  # "flipped" stays flip_step >= 0
    assert json.loads((folder / "x.json").read_text(encoding="utf-8"))["caption"] == caption
    assert _figcaptions(build_report(make_run(tmp_path / "run"), explain=folder)) == [f"scan.png: {caption}"]
    explanation.flip_step = torch.tensor([0])  # the reconstruction is its own class: "flips at step 0" read as a result
    summary = save_explanation(explanation, 0, torch.rand(1, 16, 16), folder, "y", "/data/scan.png", gif=False)
    assert (summary["caption"], summary["flip_step"], summary["flipped"]) == (caption, 0, False)
    strip = np.asarray(Image.open(folder / "y_path.png").convert("RGB"))
    assert not (strip == FLIP_COLOUR).all(axis=-1).any()  # no frame marked as the flip


def test_a_markdown_cell_is_one_line_with_html_and_pipes_escaped():
    """An & was left as it was, so a class named "&lt;b&gt;" showed as "<b>"; a control character was kept."""
    assert markdown_cell("a|b\n <i>\x00&lt;b&gt; & c ") == r"a\|b &lt;i&gt; &amp;lt;b&amp;gt; &amp; c"
