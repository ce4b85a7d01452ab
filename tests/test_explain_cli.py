"""``caex explain`` end to end on a tiny saved CAE and classifier: files decode, errors are one line."""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import caex
from caex.classifier import build_classifier_network, load_classifier, save_bundle
from caex.explain.files import collect_images
from caex.explain.files import unique_stems
from caex.cli.main import main
from caex.data.sources import load_image
from caex.errors import CaexError
from caex.explain import Explainer, Explanation
from caex.explain.captions import strip_title
from caex.explain.render import STRIP_TITLE_SCALE, counterfactual_strip, path_animation
from caex.model import CAE, CAEConfig
from caex.utils.provenance import cae_digest, classifier_digest
from caex.utils.io import LOCK_FILE, folder_lock
from caex.utils.drawing import scaled_font

SIZE = 16
NAMES = ["normal", "lesion", "other"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CAE run folder, a classifier bundle and a few image files of mixed size and mode."""
    root = tmp_path_factory.mktemp("explain_cli")
    torch.manual_seed(0)
    cae = CAE(CAEConfig.preset("tiny", image_size=SIZE, channels=1, num_classes=3), NAMES)
    generator = torch.Generator().manual_seed(1)
    cae.set_train_codes(torch.randn(30, 8, generator=generator), torch.arange(30) % 3)
    cae.save(root / "run")
    net = build_classifier_network("smallcnn", channels=1, num_classes=3, image_size=SIZE)
    save_bundle(net, root / "clf", class_names=NAMES, image_size=SIZE)
    rng = np.random.default_rng(0)
    (root / "imgs" / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(root / "imgs" / "rgb.png")
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / "imgs" / "sub" / "grey.jpg")
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(root / "imgs" / "sub" / "rgb.bmp")
    (root / "imgs" / "notes.txt").write_text("not an image")
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    np.savez(root / "data.npz", train_images=np.zeros((2, 8, 8), np.uint8), train_labels=np.arange(2))
    return root


def run_cli(workspace: Path, *args: str) -> int:
    return main(["explain", str(workspace / "run"), *args, "--classifier", str(workspace / "clf"),
                 "--device", "cpu"])


def test_explain_writes_decodable_files_for_every_image(workspace: Path, capsys: pytest.CaptureFixture) -> None:
    out = workspace / "out"
    with pytest.warns(UserWarning, match=r"^3 of 3 path\(s\) never reached the target class \(first: .*rgb\.png\)"):
        assert run_cli(workspace, str(workspace / "imgs"), "--steps", "5", "--out", str(out)) == 0
    assert "wrote 3 explanation(s) of 3 image(s)" in capsys.readouterr().out
    for stem in ("rgb", "grey", "rgb-2"):   # the second rgb.* gets a distinct name
        summary = json.loads((out / f"{stem}.json").read_text())
        assert summary["path"] == "guided" and len(summary["target_probs"]) == 5
        assert summary["target"]["class"] != summary["prediction"]["class"]
        assert 0.0 <= summary["prediction"]["probability"] <= 1.0
        assert summary["flip_step"] == -1 and summary["flipped"] is False and summary["path_nodes"]  # untrained
        saliency = np.load(out / f"{stem}_saliency.npy")
        assert saliency.shape == (SIZE, SIZE) and saliency.min() >= 0.0 and saliency.max() <= 1.0
        with Image.open(out / f"{stem}_saliency.png") as overlay:
            assert overlay.format == "PNG" and overlay.size[0] >= SIZE
        with Image.open(out / f"{stem}_path.png") as strip:
            assert strip.format == "PNG" and strip.width > strip.height
        with Image.open(out / f"{stem}_path.gif") as gif:
            assert gif.format == "GIF" and gif.n_frames == summary["end_step"] + 1


def test_saved_map_and_prediction_probability_are_the_python_apis(workspace: Path, tmp_path: Path) -> None:
    """The .npy is the Explainer's map as is (not transposed); the json's probability is the predicted class's."""
    assert run_cli(workspace, str(workspace / "imgs" / "rgb.png"), "--steps", "5", "--out", str(tmp_path)) == 0
    summary = json.loads((tmp_path / "rgb.json").read_text())
    saved = np.load(tmp_path / "rgb_saliency.npy")
    classifier = load_classifier(workspace / "clf", device="cpu")
    pixels = load_image(workspace / "imgs" / "rgb.png", SIZE, 1)[None]
    explanation = Explainer(CAE.load(workspace / "run"), classifier, device="cpu", seed=0).explain(pixels, steps=5)
    expected = explanation.saliency[0].numpy()
    assert not np.allclose(expected, expected.T, atol=1e-3)  # a transposed map would show
    np.testing.assert_allclose(saved, expected, atol=1e-6)
    probs = classifier.predict_proba(pixels)[0]
    predicted, target = summary["prediction"]["index"], summary["target"]["index"]
    assert predicted == int(probs.argmax()) and abs(float(probs[predicted] - probs[target])) > 1e-4
    assert summary["prediction"]["probability"] == pytest.approx(float(probs[predicted]), abs=1e-6)
    assert summary["target"]["input_probability"] == pytest.approx(float(probs[target]), abs=1e-6)


def test_explain_options_target_reference_and_all_targets(workspace: Path) -> None:
    image = str(workspace / "imgs" / "rgb.png")
    out = workspace / "out_options"
    assert run_cli(workspace, image, "--target", "other", "--path", "centroid", "--steps", "4",
                   "--no-stop-at-flip", "--out", str(out)) == 0
    summary = json.loads((out / "rgb.json").read_text())
    assert summary["target"]["class"] == "other" and summary["end_step"] == 3 and summary["path_nodes"] is None
    # the summary alone records how the map was made: the models by content, the target asked for
    cae, classifier = CAE.load(workspace / "run"), load_classifier(workspace / "clf", device="cpu")
    assert summary["settings"] == {"cae": cae_digest(cae), "classifier": classifier_digest(classifier), "arch": None,
                                   "path": "centroid", "reference": None, "steps": 4, "target": "other",
                                   "all_targets": False, "target_by": None, "saliency": "weighted",
                                   "smoothing": 1.0, "stop_at_flip": False, "seed": 0}
    # and, never compared, where the models were and what ran them
    record = summary["provenance"]
    assert record["cae"] == {"source": str(workspace / "run"), "digest": cae_digest(cae)}
    assert record["classifier"]["source"] == str(workspace / "clf") and record["device"] == "cpu"
    assert record["software"]["caex"] == caex.__version__ and record["created"].endswith("+00:00")
    assert run_cli(workspace, image, "--target", "other", "--path", "centroid", "--steps", "4",
                   "--no-stop-at-flip", "--smoothing", "0", "--out", str(out / "sharp")) == 0
    smooth, sharp = np.load(out / "rgb_saliency.npy"), np.load(out / "sharp" / "rgb_saliency.npy")
    assert smooth.shape == sharp.shape and not np.allclose(smooth, sharp)
    # the blur spreads the map: fewer pixels keep exactly zero saliency
    assert (smooth > 1e-3).sum() >= (sharp > 1e-3).sum()
    assert run_cli(workspace, image, "--path", "reference", "--reference", str(workspace / "imgs" / "sub" /
                   "grey.jpg"), "--steps", "3", "--out", str(out / "ref")) == 0
    assert json.loads((out / "ref" / "rgb.json").read_text())["path"] == "reference"
    assert run_cli(workspace, image, "--all-targets", "--steps", "3", "--out", str(out / "all")) == 0
    assert len(list((out / "all").glob("rgb_to-*.json"))) == 2
    assert run_cli(workspace, image, "--target-by", "code", "--path", "centroid", "--steps", "3",
                   "--out", str(out / "code")) == 0
    by_code = json.loads((out / "code" / "rgb.json").read_text())
    cae = CAE.load(workspace / "run")
    pixels = load_image(workspace / "imgs" / "rgb.png", SIZE, 1)[None]
    distance = torch.cdist(cae.class_codes(pixels), cae.centroids)[0]
    distance[NAMES.index(by_code["prediction"]["class"])] = float("inf")
    assert by_code["settings"]["target_by"] == "code" and by_code["target"]["class"] == NAMES[int(distance.argmin())]


@pytest.mark.parametrize("images, message", [
    (["missing.png"], "missing.png: no such image file or folder"),
    (["*.nothing"], "no files match this pattern"),
    (["broken.png"], "broken.png: cannot read image"),
    (["imgs/rgb.png", "--reference", "imgs/sub/grey.jpg"], "--reference IMG goes with --path reference"),
    (["imgs/rgb.png", "--path", "reference"], "--reference IMG goes with --path reference"),
    (["data.npz"], "data.npz: caex explain reads image files, not .npz data sets"),
])
def test_bad_images_give_one_line_errors(workspace: Path, capsys: pytest.CaptureFixture, monkeypatch,
                                         images: list[str], message: str) -> None:
    monkeypatch.chdir(workspace)
    assert run_cli(workspace, *images, "--out", str(workspace / "never")) == 2
    error = capsys.readouterr().err.strip().split("\r")[-1]  # after the progress bar, if one was drawn
    assert error.startswith("caex explain: error:") and message in error and "\n" not in error


def test_a_bad_file_among_good_ones_stops_before_any_output(workspace: Path, capsys: pytest.CaptureFixture,
                                                             tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a_good.png").write_bytes((workspace / "imgs" / "rgb.png").read_bytes())
    (folder / "z_truncated.png").write_bytes((workspace / "imgs" / "rgb.png").read_bytes()[:-40])
    assert run_cli(workspace, str(folder), "--batch-size", "1", "--out", str(tmp_path / "out")) == 2
    assert "z_truncated.png: cannot read image" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_skip_bad_leaves_out_a_truncated_jpeg_and_hidden_files(workspace: Path, capsys: pytest.CaptureFixture,
                                                               tmp_path: Path) -> None:
    """A truncated JPEG passed Pillow's verify() and stopped the run halfway; ._x.png and checkpoints were read."""
    folder = tmp_path / "mixed"
    (folder / ".ipynb_checkpoints").mkdir(parents=True)
    (folder / "a_good.png").write_bytes((workspace / "imgs" / "rgb.png").read_bytes())
    (folder / ".ipynb_checkpoints" / "a_good-checkpoint.png").write_bytes((folder / "a_good.png").read_bytes())
    (folder / "._a_good.png").write_bytes(b"AppleDouble")
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    (folder / "b_truncated.jpg").write_bytes(jpeg.getvalue()[:len(jpeg.getvalue()) // 2])
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\), first: .*b_truncated\.jpg"):
        assert run_cli(workspace, str(folder), "--skip-bad", "--steps", "2", "--out", str(tmp_path / "out")) == 0
    assert "wrote 1 explanation(s) of 1 image(s)" in capsys.readouterr().out
    assert sorted(path.stem for path in (tmp_path / "out").glob("*.json")) == ["a_good"]


def test_bad_target_names_the_value(workspace: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_cli(workspace, str(workspace / "imgs" / "rgb.png"), "--target", "zebra",
                   "--out", str(workspace / "never")) == 2
    assert "target 'zebra': not a class" in capsys.readouterr().err
    assert run_cli(workspace, str(workspace / "imgs" / "rgb.png"), "--smoothing", "-1",
                   "--out", str(workspace / "never")) == 2
    assert ("argument --smoothing: must be 0 (off) or a positive finite sigma in pixels, got -1"
            in capsys.readouterr().err)
    assert run_cli(workspace, str(workspace / "imgs" / "rgb.png"), "--smoothing", "nan",
                   "--out", str(workspace / "never")) == 2
    assert ("argument --smoothing: must be 0 (off) or a positive finite sigma in pixels, got nan"
            in capsys.readouterr().err)
    for other in (["--all-targets"], ["--target-by", "code"]):
        assert run_cli(workspace, str(workspace / "imgs" / "rgb.png"), "--target", "other", *other,
                       "--out", str(workspace / "never")) == 2
        assert f"give either --target or {other[0]}, not both" in capsys.readouterr().err
        # the reference path heads for the reference's class: --target-by was ignored but recorded in every summary
        assert run_cli(workspace, str(workspace / "imgs" / "rgb.png"), "--path", "reference", "--reference",
                       str(workspace / "imgs" / "rgb.png"), *other, "--out", str(workspace / "never")) == 2
        assert capsys.readouterr().err.endswith("--path reference heads for the reference image's class (or "
                                                f"--target's), so it takes no {other[0]}\n")


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--batch-size", "0", "argument --batch-size: must be at least 1, got 0"),
    ("--batch-size", "-1", "argument --batch-size: must be at least 1, got -1"),
    ("--steps", "1", "--steps 1: a path needs 2 to 1000 steps"),
    ("--steps", "100000", "--steps 100000: a path needs 2 to 1000 steps"),  # kept 1.6 GB of frames per image
])
def test_a_count_out_of_range_is_a_one_line_error(workspace: Path, capsys: pytest.CaptureFixture, option: str,
                                                  value: str, message: str) -> None:
    assert run_cli(workspace, str(workspace / "imgs" / "rgb.png"), option, value,
                   "--out", str(workspace / "never")) == 2
    assert f"caex explain: error: {message}" in capsys.readouterr().err
    assert not (workspace / "never").exists()


def test_collect_images_expands_folders_and_globs_once(workspace: Path) -> None:
    folder = workspace / "imgs"
    found = collect_images([str(folder), str(folder / "*.png")])
    assert [p.name for p in found] == ["rgb.png", "grey.jpg", "rgb.bmp"]
    with pytest.raises(CaexError, match="folder contains no images"):
        collect_images([str(workspace / "run")])
    assert unique_stems([Path("a/x.png"), Path("b/x.png"), Path("x-2.png")]) == ["x", "x-2", "x-2-2"]


def test_an_output_folder_among_the_inputs_is_not_searched_and_one_holding_them_is_refused(tmp_path: Path) -> None:
    """A rerun explained its own overlays (x_saliency_saliency.png ...) when --out lay inside the input folder."""
    from PIL import Image

    (tmp_path / "scans" / "explained").mkdir(parents=True)
    for name in ("scans/a.png", "scans/explained/a_saliency.png"):
        Image.new("L", (8, 8)).save(tmp_path / name)
    out = str(tmp_path / "scans" / "explained")
    for pattern in ("scans", "scans/**/*.png"):
        assert collect_images([str(tmp_path / pattern)], out=out) == [tmp_path / "scans" / "a.png"]
    for holder in ("scans", "."):
        with pytest.raises(CaexError, match=r"output folder .*: holds the input folder .*scans; its results would"):
            collect_images([str(tmp_path / "scans")], out=str(tmp_path / holder))


def test_a_classifier_file_alone_or_weights_with_arch_explain(workspace: Path, tmp_path: Path) -> None:
    """A TorchScript file with no classifier.json beside it is probed at the CAE's image shape; --arch opens weights."""
    (tmp_path / "model.pt").write_bytes((workspace / "clf" / "classifier.torchscript.pt").read_bytes())
    (tmp_path / "weights.safetensors").write_bytes((workspace / "clf" / "classifier.safetensors").read_bytes())
    image = str(workspace / "imgs" / "rgb.png")
    for classifier in (["model.pt"], ["weights.safetensors", "--arch", "smallcnn"]):
        out = tmp_path / f"out_{classifier[0]}"
        assert main(["explain", str(workspace / "run"), image, "--classifier", str(tmp_path / classifier[0]),
                     *classifier[1:], "--steps", "3", "--device", "cpu", "--out", str(out)]) == 0
        assert json.loads((out / "rgb.json").read_text())["target"]["class"] in NAMES


def test_an_out_that_is_a_file_and_a_bad_target_are_refused_before_any_work(workspace: Path, tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    """Both used to surface only after the first batch was explained, behind its progress bar."""
    notes = tmp_path / "notes"
    notes.write_text("a file")
    image = str(workspace / "imgs" / "rgb.png")
    assert run_cli(workspace, image, "--out", str(notes)) == 2
    assert capsys.readouterr().err == f"caex explain: error: --out {notes}: {notes} is a file, not a folder\n"
    assert run_cli(workspace, image, "--target", "zebra", "--out", str(tmp_path / "out")) == 2
    assert capsys.readouterr().err == ("caex explain: error: --target 'zebra': not a class of this model "
                                       "(normal, lesion, other or 0..2)\n")
    assert not (tmp_path / "out").exists()


def test_a_target_the_image_already_has_is_warned_about(workspace: Path, tmp_path: Path) -> None:
    """Its json says "flipped" at step 0, which reads like a result; the user is told nothing flipped."""
    image = str(workspace / "imgs" / "rgb.png")
    assert run_cli(workspace, image, "--steps", "3", "--out", str(tmp_path / "first")) == 0
    predicted = json.loads((tmp_path / "first" / "rgb.json").read_text())["prediction"]["class"]
    with pytest.warns(UserWarning, match="1 image.s. are already classified as their target class"):
        assert run_cli(workspace, image, "--steps", "3", "--target", predicted, "--out", str(tmp_path / "same")) == 0


class _Fixed(torch.nn.Module):
    """Logits that ignore the image: class 0 always, or NaN (a model dividing by a blank image's spread)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.value, 0.0, 0.0]).expand(len(images), 3)


@pytest.mark.parametrize("value, message", [
    (5.0, r'^3 of 3 path\(s\) never reached the target class \(first: .*rgb.png\): their maps show changes that '
          r'did not flip the classifier, and their summaries say "flipped": false$'),
    (math.nan, r"^the classifier's outputs are not finite \(NaN or inf\) for 3 image\(s\) \(first: .*rgb.png\), ")])
def test_paths_that_never_flip_or_outputs_that_are_not_finite_are_warned_about(workspace: Path, tmp_path: Path,
                                                                                value: float, message: str) -> None:
    """Both were written as ordinary explanations, with full-contrast or empty maps, and not a word."""
    from caex.classifier import TorchClassifier
    from caex.explain import explain_files

    classifier = TorchClassifier(_Fixed(value), NAMES, image_size=SIZE, channels=1)
    with pytest.warns(UserWarning, match=message):
        explain_files(Explainer(CAE.load(workspace / "run"), classifier), workspace / "imgs", tmp_path, steps=3)
    summary = json.loads((tmp_path / "rgb.json").read_text())
    assert summary["flipped"] is False and (summary["prediction"]["probability"] is None) == math.isnan(value)
    assert (summary["prediction"]["class"] is None) == math.isnan(value)  # NaN's argmax, 0, is no prediction


def test_paths_whose_reconstruction_is_already_the_target_are_warned_about() -> None:
    """A class of one training image: every path "flipped" at step 0 (the reconstruction was already the target
    class, the input not), and the summaries said "flipped": true with full-contrast maps, without a word."""
    from types import SimpleNamespace

    from caex.explain.files import PathOutcomes

    rows = SimpleNamespace(flip_step=torch.tensor([0, 0, 3, -1]), target=torch.tensor([1, 1, 1, 1]),
                           prediction=torch.tensor([0, 1, 0, 0]), input_probs=torch.full((4, 2), 0.5))
    for name in ("predicted", "unflipped", "target_at_reconstruction"):
        setattr(rows, name, getattr(Explanation, name).fget(rows))
    assert rows.target_at_reconstruction.tolist() == [True, False, False, False]  # image 1 is at its target already
    outcomes = PathOutcomes()
    for index, source in enumerate(["a.png", "b.png", "c.png", "d.png"]):
        outcomes.add(rows, index, source)
    with pytest.warns(UserWarning) as caught:
        outcomes.warn()
    assert [str(w.message).split(" (first")[0] for w in caught] == ["1 of 4 path(s) never reached the target class",
                                                                     '1 of 4 path(s) "flipped" at step 0']
    assert "(first: a.png): the classifier already assigns the CAE's reconstruction to the target" in \
        str(caught[1].message)


def test_skip_bad_leaves_unreadable_files_out_with_a_warning(workspace: Path, tmp_path: Path) -> None:
    """Training takes --skip-bad for a folder with a corrupt scan; explain had no way past the same folder."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.png").write_bytes((workspace / "imgs" / "rgb.png").read_bytes())
    (folder / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        assert run_cli(workspace, str(folder), "--skip-bad", "--steps", "3", "--out", str(tmp_path / "out")) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.json")) == ["good.json"]


def test_a_path_that_does_not_move_keeps_one_gif_frame_per_step() -> None:
    """Pillow merges identical consecutive GIF frames: a path to the image's own reference collapsed to two."""
    frames = torch.full((5, 1, SIZE, SIZE), 0.4)
    animation = path_animation(frames, torch.full((5,), 0.7), flip_step=0)
    with Image.open(io.BytesIO(animation)) as gif:
        assert gif.n_frames == 5 and gif.info["loop"] == 0


def test_a_two_frame_strip_keeps_its_whole_title() -> None:
    """The title names the classes; a strip of two 16 px frames used to crop it after a few words."""
    title = strip_title("scans/patient_0042_OD_scan.png", "normal", "lesion")
    assert title == "patient_0042_OD_scan.png: normal -> lesion, p(lesion) per frame; x0 = reconstruction"
    strip = counterfactual_strip(torch.rand(2, 1, SIZE, SIZE), torch.tensor([0.2, 0.6]), 1, title=title)
    assert strip.width >= scaled_font(96, STRIP_TITLE_SCALE).getlength(title)


def test_non_ascii_class_names_are_drawn_not_boxed() -> None:
    """Pillow's built-in font has ASCII only: "drüsen" and "drösen" came out as the same boxes."""
    frames, probs = torch.zeros(2, 1, SIZE, SIZE), torch.tensor([0.2, 0.6])
    pictures = [np.asarray(counterfactual_strip(frames, probs, 1, title=f"normal -> dr{letter}sen"))
                for letter in "üö"]
    assert pictures[0].shape == pictures[1].shape and not np.array_equal(*pictures)


def test_an_out_with_explanations_of_an_earlier_run_is_warned_about(workspace: Path, tmp_path: Path) -> None:
    """caex report shows every explanation in the folder; stale ones would pass for this run's."""
    image = str(workspace / "imgs" / "rgb.png")
    assert run_cli(workspace, image, "--all-targets", "--steps", "3", "--out", str(tmp_path / "out")) == 0
    stale = r"holds 10 file\(s\) that this run did not write, .* \(first: rgb_to-\w+\.json\)"  # 2 explanations
    with pytest.warns(UserWarning, match=stale):
        assert run_cli(workspace, image, "--steps", "3", "--out", str(tmp_path / "out")) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same run again replaces every file it finds
        warnings.filterwarnings("ignore", "1 colour image", UserWarning)  # rgb.png, for a 1-channel CAE
        warnings.filterwarnings("ignore", r".* path\(s\) never reached", UserWarning)  # the untrained CAE's
        assert run_cli(workspace, image, "--steps", "3", "--out", str(tmp_path / "again")) == 0
        assert run_cli(workspace, image, "--steps", "3", "--out", str(tmp_path / "again")) == 0


@pytest.mark.parametrize("extra", [(), ("--all-targets",)])
def test_skip_done_finishes_an_interrupted_run_without_redoing_its_images(workspace: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture,
                                                                         extra: tuple[str, ...]) -> None:
    """A rerun redid every image; --skip-done keeps those whose files and settings are there already."""
    out = tmp_path / "out"
    images = [str(workspace / "imgs" / "rgb.png"), str(workspace / "imgs" / "sub")]
    assert run_cli(workspace, images[0], "--steps", "3", *extra, "--out", str(out)) == 0  # one of three done
    done = {path.name: path.stat().st_mtime_ns for path in out.iterdir() if path.name != LOCK_FILE}
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its files are this run's results, not an earlier run's stale ones
        warnings.filterwarnings("ignore", r".* path\(s\) never reached", UserWarning)  # the untrained CAE's
        assert run_cli(workspace, *images, "--steps", "3", *extra, "--skip-done", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "of 2 image(s)" in printed and "; 1 image(s) were done already" in printed
    assert {name: stamp for name, stamp in ((p.name, p.stat().st_mtime_ns) for p in out.iterdir())
            if name in done} == done  # not rewritten
    assert len(list(out.glob("*.json"))) == 3 * (2 if extra else 1)
    # other settings: nothing counts as done
    assert run_cli(workspace, *images, "--steps", "4", *extra, "--skip-done", "--out", str(out)) == 0
    assert all(path.stat().st_mtime_ns != done[path.name] for path in out.iterdir() if path.name in done)


def test_skip_done_knows_an_all_targets_run_of_a_cae_without_codes_of_a_class(workspace: Path, tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture) -> None:
    """With no stored codes of a class, --all-targets explains each image toward one class fewer than the others
    count; --skip-done expected one file per other class, so it never found those images done and redid them."""
    cae = CAE.load(workspace / "run")
    cae.set_train_codes(cae.train_codes[cae.train_labels < 2], cae.train_labels[cae.train_labels < 2])
    cae.save(tmp_path / "gapped")
    out = tmp_path / "out"
    argv = ["explain", str(tmp_path / "gapped"), str(workspace / "imgs" / "sub"), "--classifier",
            str(workspace / "clf"), "--device", "cpu", "--all-targets", "--path", "centroid", "--steps", "3",
            "--no-gif", "--out", str(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no codes of "other"; the untrained CAE's paths never flip
        assert main(argv) == 0
        written = sorted(path.name for path in out.glob("*.json"))
        assert main([*argv, "--skip-done"]) == 0
    assert len(written) == 2 and capsys.readouterr().out.rstrip().endswith("2 image(s) were done already")
    assert sorted(path.name for path in out.glob("*.json")) == written


def test_skip_done_compares_the_target_and_the_models_not_how_their_paths_are_typed(
        workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Explanations toward another --target, or by a classifier retrained into the same folder, counted as done;
    the same job typed from another folder, or with a trailing slash, redid everything."""
    import shutil

    shutil.copytree(workspace / "clf", tmp_path / "clf")
    out, image = tmp_path / "out", workspace / "imgs" / "rgb.png"

    def explain(*extra: str, classifier: str = str(tmp_path / "clf")) -> str:
        assert main(["explain", str(workspace / "run"), *extra, "--classifier", classifier, "--steps", "3",
                     "--skip-done", "--no-gif", "--device", "cpu", "--out", str(out)]) == 0
        return capsys.readouterr().out

    explain(str(image), "--target", "normal")
    assert "1 image(s) were done already" not in explain(str(image), "--target", "lesion")
    assert json.loads((out / "rgb.json").read_text())["target"]["class"] == "lesion"
    monkeypatch.chdir(workspace / "imgs" / "sub")  # the same job, typed from elsewhere
    assert "wrote 0 explanation(s) of 0 image(s)" in explain("../../imgs/rgb.png", "--target", "lesion",
                                                             classifier=str(tmp_path / "clf") + "/")
    # a reference image is compared by content: the same one typed otherwise is done, another one is not
    shutil.copy(workspace / "imgs" / "sub" / "grey.jpg", tmp_path / "reference.jpg")
    reference = ["--path", "reference", "--reference", str(tmp_path / "reference.jpg")]
    explain(str(image), "--target", "lesion", *reference)
    assert "wrote 0 explanation(s)" in explain(str(image), "--target", "lesion", "--path", "reference",
                                               "--reference", os.path.relpath(tmp_path / "reference.jpg"))
    shutil.copy(workspace / "imgs" / "sub" / "rgb.bmp", tmp_path / "reference.jpg")  # replaced in place
    assert "wrote 1 explanation(s)" in explain(str(image), "--target", "lesion", *reference)
    net = build_classifier_network("smallcnn", channels=1, num_classes=3, image_size=SIZE)  # other weights
    save_bundle(net, tmp_path / "clf", class_names=NAMES, image_size=SIZE)
    assert "wrote 1 explanation(s) of 1 image(s)" in explain(str(image), "--target", "lesion")


def test_an_interrupted_explain_says_how_to_finish_once_it_has_written(workspace: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """It said only 'caex explain: interrupted', though --skip-done finishes the run."""
    import caex.explain.files as files

    real, calls = files.save_explanation, []

    def interrupted_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(files, "save_explanation", interrupted_second)
    out = tmp_path / "out"
    assert run_cli(workspace, str(workspace / "imgs"), "--steps", "3", "--out", str(out)) == 130
    assert capsys.readouterr().err.splitlines()[-1] == ("caex explain: interrupted (finished explanations are kept; "
                                                        "rerun with --skip-done to explain the rest)")
    calls.clear()
    calls.append(1)  # the next call is the second: nothing written yet
    assert run_cli(workspace, str(workspace / "imgs"), "--steps", "3", "--out", str(tmp_path / "none")) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "caex explain: interrupted"


def test_explain_refuses_an_out_folder_another_run_is_writing(workspace: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    with folder_lock(tmp_path, "caex explain"):
        assert run_cli(workspace, str(workspace / "imgs" / "rgb.png"), "--out", str(tmp_path)) == 2
    assert f"{tmp_path}: in use by caex explain (pid" in capsys.readouterr().err
    assert not list(tmp_path.glob("rgb*"))


def test_explain_files_is_caex_explain_as_a_function(workspace: Path, tmp_path: Path) -> None:
    """What the CLI wrote could only be had through the CLI; explain_files writes the same, and finishes an
    interrupted run with skip_done."""
    from caex.explain import explain_files

    explainer = Explainer(CAE.load(workspace / "run"), load_classifier(workspace / "clf", device="cpu"))
    files = collect_images([str(workspace / "imgs")])
    first = explain_files(explainer, files[:1], tmp_path, settings={"a": 1}, steps=3)
    assert (first.written, first.explained, first.done_already) == (["rgb"], 1, 0)  # imgs/rgb.png sorts first
    summary = json.loads((tmp_path / "rgb.json").read_text())
    # the caller's settings, and the models by content, which a retrained model in the same folder changes
    assert summary["settings"] == {"cae": cae_digest(explainer.cae), "classifier": classifier_digest(
        explainer.classifier), "a": 1} and summary["steps"] == 3
    assert (tmp_path / summary["files"]["saliency"]).is_file()
    rest = explain_files(explainer, files, tmp_path, settings={"a": 1}, steps=3, skip_done=True, batch_size=2)
    assert (sorted(rest.written), rest.explained, rest.done_already) == (["grey", "rgb-2"], 2, 1)
    assert "rgb.json" in rest.kept


def test_explain_files_takes_one_path_a_folder_or_a_glob_as_the_cli_does(workspace: Path, tmp_path: Path) -> None:
    """A single path string was read as a list of characters ('i: cannot read image'), and a folder was refused."""
    from caex.explain import explain_files

    explainer = Explainer(CAE.load(workspace / "run"), load_classifier(workspace / "clf", device="cpu"))
    one = explain_files(explainer, str(workspace / "imgs" / "rgb.png"), tmp_path / "one", steps=2)
    assert one.written == ["rgb"]
    folder = explain_files(explainer, [workspace / "imgs"], tmp_path / "folder", steps=2)
    assert folder.written == ["rgb", "grey", "rgb-2"]  # imgs/rgb.png, grey.jpg, rgb.bmp
    glob = explain_files(explainer, str(workspace / "imgs" / "*.png"), tmp_path / "glob", steps=2)
    assert glob.written == ["rgb"]


def test_explain_files_skip_done_needs_the_settings_to_compare(workspace: Path, tmp_path: Path) -> None:
    """Without settings any earlier explanation, of other steps or targets, passed for this run's."""
    from caex.explain import ExplainError, explain_files

    explainer = Explainer(CAE.load(workspace / "run"), load_classifier(workspace / "clf", device="cpu"))
    with pytest.raises(ExplainError, match="skip_done needs settings"):
        explain_files(explainer, [workspace / "imgs" / "rgb.png"], tmp_path, skip_done=True)
    settings = {"steps": (3,)}  # a tuple comes back from JSON as a list, and still matches
    explain_files(explainer, [workspace / "imgs" / "rgb.png"], tmp_path, settings=settings, steps=3)
    again = explain_files(explainer, [workspace / "imgs" / "rgb.png"], tmp_path, settings=settings, steps=3,
                          skip_done=True)
    assert (again.explained, again.done_already) == (0, 1)


def test_explain_leaves_mask_folders_out_and_warns_once_about_8_bit_data_in_16_bit_files(
        workspace: Path, tmp_path: Path) -> None:
    """A folder's masks/ were explained as scans, and each 16-bit file holding 8-bit values got its own warning."""
    from PIL import Image

    from caex.explain import explain_files

    for name in ("scans/a.png", "scans/p1/b.png", "scans/p1/c.png", "scans/Masks/a.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16), 200, dtype=np.uint16)).save(tmp_path / name)
    with pytest.warns(UserWarning, match=r"scans: 1 file\(s\) in sub-folders named like masks or labels are not "
                                         r"read as images \(first: .*scans/Masks/a\.png\)"):
        files = collect_images([str(tmp_path / "scans")])
    assert [str(path.relative_to(tmp_path)) for path in files] == ["scans/a.png", "scans/p1/b.png", "scans/p1/c.png"]
    explainer = Explainer(CAE.load(workspace / "run"), load_classifier(workspace / "clf", device="cpu"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explain_files(explainer, files, tmp_path / "out", steps=2, batch_size=2)
    narrow = [str(w.message) for w in caught if "16-bit pixels" in str(w.message)]
    assert len(narrow) == 1 and narrow[0].startswith("3 image(s) hold 16-bit pixels no larger than 255")
    colour = tmp_path / "colour"
    colour.mkdir()
    for index, rgb in enumerate(((200, 40, 40), (40, 121, 40), (90, 90, 90))):  # the last is grey saved as RGB
        Image.new("RGB", (16, 16), rgb).save(colour / f"{index}.png")
    with warnings.catch_warnings(record=True) as caught:  # the CAE takes 1 channel: colour turned grey unsaid
        warnings.simplefilter("always")
        explain_files(explainer, colour, tmp_path / "out_colour", steps=2)
    greyed = [str(w.message) for w in caught if "converted to grey" in str(w.message)]
    assert greyed == [f"2 colour image(s) are converted to grey for a 1-channel model, which sees no colour "
                      f"(first: {colour / '0.png'})"]


def test_the_saliency_overlay_keeps_the_images_colour() -> None:
    """The overlay showed RGB inputs in grey, where the evaluation's gallery shows their colour."""
    from caex.explain.render import saliency_overlay

    red = torch.zeros(3, 8, 8)
    red[0] = 1.0
    pixels = np.asarray(saliency_overlay(red, torch.zeros(8, 8), alpha=0.5, min_size=8)).astype(int)
    blue = np.asarray(saliency_overlay(torch.zeros(1, 8, 8), torch.zeros(8, 8), alpha=0.5, min_size=8)).astype(int)
    # a zero map leaves each image as it is: red stays red, black stays black
    assert (pixels[..., 0] - blue[..., 0] == 255).all() and (pixels[..., 1:] == blue[..., 1:]).all()


def test_class_names_become_safe_distinct_file_names() -> None:
    """A class named ``../../x`` wrote outside --out, and two classes whose names differ only by a slash wrote
    one file name."""
    from caex.explain.files import class_slugs

    slugs = class_slugs(["../../esc", "a/b", "a_b", "A_B", ".hidden", "new\nline", "x" * 300])
    assert len({slug.casefold() for slug in slugs}) == len(slugs)
    assert all("/" not in slug and "\\" not in slug and "\n" not in slug and not slug.startswith(".")
               for slug in slugs)
    assert slugs[0] == "_._.._esc" and slugs[4] == "_hidden" and len(slugs[6].encode()) <= 64
    # names Windows refuses (a model trained on Linux, explained on Windows)
    assert class_slugs(["age>60", "T1:w", "dog?", 'a"b|c*']) == ["age_60", "T1_w", "dog_", "a_b_c_"]
    # a class name read under an ASCII locale ("naïve" as surrogates) raised UnicodeEncodeError, explaining nothing
    assert class_slugs(["na\udcc3\udcafve"]) == ["na\udcc3\udcafve"]


def test_stems_that_differ_only_in_case_get_files_of_their_own() -> None:
    """Case1.png and case1.png from two folders wrote Case1.json and case1.json: one file on a Mac's or Windows'
    disk, so the second image's results replaced the first's while both were reported written."""
    assert unique_stems([Path("l/Case1.png"), Path("r/case1.png"), Path("x/CASE1.png")]) == ["Case1", "case1-2",
                                                                                            "CASE1-3"]


def test_all_targets_with_unsafe_class_names_write_inside_out_only(workspace: Path, tmp_path: Path) -> None:
    """Class names reach file names through --all-targets; one named ../../x must not escape the output folder."""
    from caex.explain.files import explain_files

    names = ["../../escaped", "a/b", "a_b"]
    cae = CAE.load(workspace / "run")
    cae.class_names = names  # as an in-memory model may carry them; files read from disk refuse them
    classifier = load_classifier(workspace / "clf", device="cpu", class_names=names)
    out = tmp_path / "deep" / "er" / "out"
    result = explain_files(Explainer(cae, classifier, device="cpu"), workspace / "imgs" / "sub" / "grey.jpg", out,
                           steps=3, all_targets=True)
    assert len(result.written) == len(set(result.written)) == 2
    assert sorted(path.name for path in tmp_path.rglob("*.json")) == sorted(f"{stem}.json" for stem in result.written)
    assert all(path.parent == out for path in tmp_path.rglob("*") if path.is_file())


def test_a_newline_in_an_image_name_gives_a_one_line_title(workspace: Path, tmp_path: Path) -> None:
    """Pillow's text layout failed on the newline (raqm_layout() failed), leaving half-written output."""
    title = strip_title("/data/new\nline.png", "normal", "le\x00sion")
    assert "\n" not in title and "\x00" not in title and title.startswith("new line.png: normal -> le sion")
    frames, probs = torch.zeros(2, 1, SIZE, SIZE), torch.tensor([0.2, 0.6])
    counterfactual_strip(frames, probs, 1, title="two\nlines\u2028and a separator")
    image = tmp_path / "new\nline.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(image)
    assert run_cli(workspace, str(image), "--steps", "3", "--out", str(tmp_path / "out")) == 0
    assert (tmp_path / "out" / "new_line_path.png").is_file()


def test_very_long_image_names_are_cut_to_distinct_stems_that_fit(workspace: Path, tmp_path: Path) -> None:
    """A 244-byte stem stopped caex explain with 'File name too long'."""
    long = "é" * 122  # 244 bytes
    stems = unique_stems([Path(f"a/{long}.png"), Path(f"b/{long}.png"), Path(f"{long}x.png"), Path("short.png")])
    assert len(set(stems)) == 4 and stems[3] == "short"
    assert all(len(stem.encode()) <= 130 for stem in stems)
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "in" / f"{long}.png")
    out = tmp_path / "out"
    assert run_cli(workspace, str(tmp_path / "in"), "--steps", "3", "--all-targets", "--out", str(out)) == 0
    assert len(list(out.glob("*.json"))) == 2 and all(len(path.name.encode()) < 255 for path in out.iterdir())


def test_a_second_runs_inputs_leave_out_an_earlier_runs_explanations(workspace: Path, tmp_path: Path) -> None:
    """explain scans --out scans/run2 explained the overlays that explain scans --out scans/run1 had written."""
    from caex.explain import explain_files

    (tmp_path / "scans").mkdir()
    Image.new("L", (16, 16), 90).save(tmp_path / "scans" / "a.png")
    explainer = Explainer(CAE.load(workspace / "run"), load_classifier(workspace / "clf", device="cpu"))
    explain_files(explainer, tmp_path / "scans", tmp_path / "scans" / "run1", steps=2)
    message = r": \d file\(s\) in sub-folders holding caex explain outputs are not read as images \(first: .*run1/a"
    for pattern in ("scans", "scans/**/*.png"):
        with pytest.warns(UserWarning, match=message):
            found = collect_images([str(tmp_path / pattern)], out=str(tmp_path / "scans" / "run2"))
        assert found == [tmp_path / "scans" / "a.png"], pattern


def test_no_gif_leaves_out_the_animations_and_skip_done_still_finds_the_rest(workspace: Path, capsys) -> None:
    """The GIF was 86% of every image's output (16 GB for 100,000 images of 28 px) and could not be left out."""
    out = workspace / "lean"
    assert run_cli(workspace, str(workspace / "imgs"), "--steps", "3", "--no-gif", "--out", str(out)) == 0
    assert not list(out.glob("*.gif")) and len(list(out.glob("*_path.png"))) == 3
    summary = json.loads((out / "grey.json").read_text())
    assert "animation" not in summary["files"]
    assert run_cli(workspace, str(workspace / "imgs"), "--steps", "3", "--no-gif", "--skip-done",
                   "--out", str(out)) == 0  # the summaries name no GIF, so the images count as done
    assert "3 image(s) were done already" in capsys.readouterr().out and not list(out.glob("*.gif"))
