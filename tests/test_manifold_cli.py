"""``caex manifold`` end to end on real (tiny, untrained) CAE and classifier files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from caex.classifier import build_classifier_network, save_bundle
from caex.cli.main import main
from caex.model import CAE, CAEConfig

SIZE, CLASSES, PER_CLASS = 16, 3, 8


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """A MedMNIST-style .npz, a fresh tiny CAE run folder and fresh classifier bundles (3 and 2 classes)."""
    root = tmp_path_factory.mktemp("manifold_cli")
    rng = np.random.default_rng(0)

    def split() -> tuple[np.ndarray, np.ndarray]:
        return (rng.integers(0, 256, size=(CLASSES * PER_CLASS, SIZE, SIZE), dtype=np.uint8),
                np.repeat(np.arange(CLASSES), PER_CLASS))

    (train_x, train_y), (test_x, test_y) = split(), split()
    np.savez(root / "data.npz", train_images=train_x, train_labels=train_y, test_images=test_x, test_labels=test_y)
    torch.manual_seed(0)
    CAE(CAEConfig.preset("tiny", image_size=SIZE, channels=1, num_classes=CLASSES)).save(root / "run")
    for classes in (CLASSES, 2):
        net = build_classifier_network("smallcnn", channels=1, num_classes=classes, image_size=SIZE)
        save_bundle(net, root / f"clf{classes}", class_names=[str(k) for k in range(classes)], image_size=SIZE)
    return {"root": str(root), "data": str(root / "data.npz"), "run": str(root / "run"),
            "clf": str(root / f"clf{CLASSES}"), "clf2": str(root / "clf2")}


FAST = ["--smote-per-class", "16", "--swap-pairs", "3", "--paths", "3", "--path-steps", "4", "--folds", "3",
        "--no-tsne"]


def test_manifold_command_writes_the_analysis(inputs: dict[str, str], capsys) -> None:
    out = f"{inputs['root']}/out"
    code = main(["manifold", inputs["run"], inputs["data"], "--classifier", inputs["clf"], "--out", out,
                 "--device", "cpu", *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "RF accuracy (class codes):" in captured.out and "monotone paths:" in captured.out
    assert "[manifold] encoding the data set" in captured.err
    summary = json.loads(Path(out, "summary.json").read_text())
    assert summary["counts"]["test"] == CLASSES * PER_CLASS and summary["code_dim"] == 8
    assert summary["separability"]["classifier_features"]["folds"] == 3  # TorchScript exposes its features
    assert len(summary["swap"]["matrix"]) == CLASSES and summary["swap"]["pairs"][0][1] == 3
    assert summary["paths"]["count"] == 3 and len(summary["paths"]["target_probabilities"][0]) == 4
    assert set(summary["files"]) == {"codes", "map_pca", "maps", "paths"}


def test_an_earlier_runs_map_left_in_out_is_warned_about(inputs: dict[str, str], tmp_path: Path) -> None:
    """An old map_tsne.png next to a --no-tsne run's maps passed for this run's: named, never deleted."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "map_tsne.png").write_bytes(b"an earlier run's map")
    (out / ".DS_Store").write_bytes(b"not a result")
    stale = rf"{re.escape(str(out))} also holds 1 file\(s\) .*\(first: map_tsne\.png\); use a fresh --out"
    with pytest.warns(UserWarning, match=stale):
        assert main(["manifold", inputs["run"], inputs["data"], "--classifier", inputs["clf"], "--out", str(out),
                     "--device", "cpu", *FAST]) == 0
    assert (out / "map_tsne.png").read_bytes() == b"an earlier run's map"


@pytest.mark.parametrize(("change", "message"), [
    ({"run": "/nonexistent/run"}, "no such CAE run folder"),
    ({"clf": "clf2"}, "the classifier has 2 classes but data"),
    ({"extra": ["--paths", "0"]}, "argument --paths: must be at least 1, got 0"),
    ({"extra": ["--tolerance", "-0.1"]}, "argument --tolerance: must be at least 0 and below 1, got -0.1"),
    ({"extra": ["--tolerance", "nan"]}, "argument --tolerance: must be at least 0 and below 1, got nan"),
    pytest.param({"extra": ["--device", "mps"]}, "device 'mps': MPS is not available",
                 marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")),
    ({"extra": ["--device", "meta"]}, "device 'meta': not available on this machine"),
])
def test_manifold_command_reports_bad_input_in_one_line(inputs: dict[str, str], tmp_path, capsys,
                                                        change: dict, message: str) -> None:
    run = change.get("run", inputs["run"])
    classifier = inputs[change.get("clf", "clf")]
    code = main(["manifold", run, inputs["data"], "--classifier", classifier, "--out", str(tmp_path), *FAST,
                 *change.get("extra", [])])
    error = capsys.readouterr().err.strip()
    assert code == 2 and message in error and len(error.splitlines()) == 1
