"""docs/FILES.md names every key and column of the files caex writes, checked against files of tiny runs, so the
document cannot fall behind a writer in silence."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import torch
from test_evaluation import SIZE, MaskExplainer, square_classifier, tiny_bundle
from test_manifold import K, coded_images, run_analysis
from test_training import _configs, _data

from caex.data.types import DataBundle
from caex.evaluation import PerturbationMetric, evaluate
from caex.explain import Explainer
from caex.model import CAE, CAEConfig
from caex.training import train_cae

FILES_DOC = Path(__file__).resolve().parents[1] / "docs" / "FILES.md"
#: A class code's columns, c0 .. c{D-1}, which the document names by their pattern.
CODE_COLUMN = re.compile(r"c\d+")


def section(command: str) -> str:
    """The text of the document's ``## `<command>` ...`` section, up to the next ``## `` heading."""
    text = FILES_DOC.read_text(encoding="utf-8")
    match = re.search(rf"^## `{re.escape(command)}`.*?(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"docs/FILES.md has no section for {command}"
    return match.group(0)


def undocumented(names: list[str], text: str) -> list[str]:
    """The names that ``text`` does not name in backticks (a code column counts as named by `c0`)."""
    return [name for name in names if f"`{'c0' if CODE_COLUMN.fullmatch(name) else name}`" not in text]


def csv_columns(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle))


def test_a_missing_name_is_found() -> None:
    """The check itself: a name the text lacks is reported, a documented one and a code column are not."""
    assert undocumented(["aopc", "c7", "no_such_key"], "| `aopc` | ... `c0` … `c{D−1}` |") == ["no_such_key"]


def test_evaluation_files_are_documented(tmp_path) -> None:
    evaluate(MaskExplainer(), square_classifier(), tiny_bundle(), methods=["cae-centroid"], n_images=4,
             out_dir=tmp_path, batch_size=4, metric=PerturbationMetric(patch=3, n_patches=2))
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    text = section("caex evaluate")
    assert {"image_sources", "image_labels"} <= set(results)  # the new keys, as the document describes them
    assert undocumented(list(results), text) == []
    assert undocumented(list(results["settings"]), text) == []  # n_with_mask included: the data has masks
    assert undocumented(list(results["methods"][0]), text) == []
    assert undocumented(csv_columns(tmp_path / "results.csv"), text) == []


def test_manifold_files_are_documented(tmp_path) -> None:
    data = DataBundle(coded_images(6, seed=1), coded_images(4, seed=2), [f"class{k}" for k in range(K)], spec="coded")
    summary = run_analysis(data, tmp_path, folds=2, n_estimators=5, swap_pairs=2, smote_per_class=4, paths=2,
                           path_steps=3, figure_paths=1, tsne=False)
    text = section("caex manifold")
    written = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert written == summary
    assert undocumented(list(written), text) == []
    for block in ("counts", "swap", "smoothness", "paths", "files"):
        assert undocumented(list(written[block]), text) == [], block
    assert undocumented(list(written["separability"]["class_codes"]), text) == []
    columns = csv_columns(tmp_path / "codes.csv")
    assert columns[-1] == f"c{K - 1}" and undocumented(columns, text) == []


def test_training_files_are_documented(tmp_path) -> None:
    images = _data(n=6, size=16)
    config, train_config = _configs(iters=2, sample_every=2, log_every=1)
    train_cae(DataBundle(images, images, ["x", "y", "z"], spec="test"), config, train_config, tmp_path)
    text = section("caex train")
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert undocumented(list(summary), text) == []
    assert undocumented(list(summary["history"][0]), text) == []
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert "code_gap" in records[-1]  # a sample step's record: every column a run of this preset writes
    assert undocumented(csv_columns(tmp_path / "log.csv"), text) == []
    config_json = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert undocumented(list(config_json), text) == [] and undocumented(list(config_json["config"]), text) == []


def test_explanation_summary_is_documented(tmp_path) -> None:
    data = tiny_bundle()
    torch.manual_seed(0)
    cae = CAE(CAEConfig.preset("tiny", image_size=SIZE, channels=1, num_classes=2), class_names=data.class_names)
    cae.set_train_codes(cae.class_codes(data.train.images), data.train.labels)
    explanation = Explainer(cae, square_classifier(), knn=7, candidates=0).explain(data.test.images[:1], steps=3)
    summary = explanation.save(data.test.images[:1], tmp_path, settings={"steps": 3})[0]
    text = section("caex explain")
    assert undocumented(list(summary), text) == []
    for block in ("prediction", "target", "files"):
        assert undocumented(list(summary[block]), text) == [], block
