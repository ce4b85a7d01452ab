"""``caex evaluate`` end to end: argument validation and a baselines-only run that writes every output."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import torch

from caex.classifier import build_classifier_network, save_bundle
from caex.cli.main import main
from caex.model import CAE, CAEConfig


#: The untrained classifiers below call every image one class, and the evaluation says it leaves the other out.
UNTRAINED = "the classifier gets no test image of class"


def test_help_lists_the_methods(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    assert "cae-guided" in text and "integrated_gradients" in text and "--n-images" in text



def test_help_says_the_cae_maps_take_explains_defaults_and_fits_the_terminal(capsys):
    """explain's --smoothing, --saliency and --no-stop-at-flip have no evaluate counterpart, and its help did not
    say which the cae maps use; one description line (88 columns) was printed unwrapped."""
    import inspect

    from caex.cli.evaluate import DESCRIPTION
    from caex.cli.main import build_parser
    from caex.explain import Explainer

    explain = build_parser().parse_args(["explain", "run", "x.png", "--classifier", "clf", "--out", "o"])
    assert (explain.smoothing, explain.saliency, explain.stop_at_flip) == (1.0, "weighted", True)
    used = inspect.signature(Explainer.saliency).parameters  # what evaluate's cae methods leave at its default
    assert (used["saliency"].default, used["stop_at_flip"].default) == ("weighted", True)
    assert inspect.signature(Explainer).parameters["smoothing"].default == 1.0
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert ("the cae maps use caex explain's defaults otherwise: smoothing 1, weighted saliency, stopping at the "
            "flip") in " ".join(capsys.readouterr().out.split())
    assert max(map(len, DESCRIPTION.splitlines())) <= 79

@pytest.mark.parametrize(("argv", "message"), [
    (["none", "synthetic", "--methods", "cae,gradcam"], "RUN is 'none' but --methods asks for cae"),
    (["no/such/run", "synthetic"], "RUN no/such/run: no such CAE run folder"),
    (["none", "synthetic", "--methods", "gradcam,smoothgrad"], "unknown method 'smoothgrad'"),
    (["none", "synthetic", "--methods", "random", "--share", "2"], "argument --share: must be in (0, 1], got 2"),
    (["none", "synthetic", "--methods", "random", "--n-patches", "0"],
     "argument --n-patches: must be at least 1, got 0"),
    (["none", "synthetic", "--methods", "random", "--n-images", "0"], "argument --n-images: must be at least 1, got 0"),
    (["none", "synthetic", "--methods", " , "], "--methods: name at least one method"),
    (["none", "synthetic", "--methods", "random", "--cae-steps", "1"], "--cae-steps 1: a path needs 2 to 1000 steps"),
    (["none", "synthetic", "--methods", "random", "--cae-steps", "100000"], "--cae-steps 100000: a path needs 2 to"),
    (["none", "synthetic", "--methods", "random", "--batch-size", "0"],
     "argument --batch-size: must be at least 1, got 0"),
    (["none", "synthetic", "--methods", "random", "--batch-size", "-2"],
     "argument --batch-size: must be at least 1, got -2"),
    (["none", "synthetic:size=32,per_class=4", "--methods", "random", "--cae-target", "healthy"],
     "--cae-target 'healthy': not a class of synthetic:size=32,per_class=4 (normal, cnv, dme, drusen or 0..3)"),
    (["none", "synthetic:size=32,per_class=4", "--methods", "random", "--cae-target", "4"],
     "--cae-target '4': not a class of synthetic"),
    (["none", "synthetic:size=32,per_class=4", "--methods", "random", "--cae-target", "normal"],
     "--cae-target steers the cae methods, and none is evaluated"),
    (["none", "synthetic", "--methods", "lime", "--method-option", "lime.n_samples"],
     "--method-option 'lime.n_samples': expected METHOD.OPTION=VALUE, e.g. lime.n_samples=200"),
    (["none", "synthetic", "--methods", "lime", "--method-option", "lime.samples=20"],
     "--method-option 'lime.samples=20': lime takes no option 'samples' here (it takes n_samples, n_segments, "
     "compactness, perturbations_per_eval)"),
    (["none", "synthetic", "--methods", "lime", "--method-option", "lime.n_samples=many"],
     "--method-option 'lime.n_samples=many': n_samples must be an integer"),
    (["none", "synthetic", "--methods", "gradcam", "--method-option", "gradcam.layer=layer3"],
     "gradcam takes no option 'layer' here (it takes none)"),  # a module: no text names it
    (["none", "synthetic", "--methods", "gradcam", "--method-option", "lime.n_samples=20"],
     "--method-option sets lime, which --methods does not evaluate"),
])
def test_bad_arguments_are_one_line_errors(argv, message, tmp_path, capsys):
    code = main(["evaluate", *argv, "--classifier", str(tmp_path), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2 and error.startswith("caex evaluate: error: ") and message in error
    assert error.count("\n") == 1


def test_an_out_folder_under_a_file_is_refused_before_any_work(tmp_path, capsys):
    """It used to fail only when the results were written, after the whole evaluation had run."""
    (tmp_path / "notes").write_text("a file")
    out = tmp_path / "notes" / "eval"
    code = main(["evaluate", "none", "synthetic", "--methods", "random", "--classifier", str(tmp_path),
                 "--out", str(out)])
    error = capsys.readouterr().err
    assert code == 2 and error == f"caex evaluate: error: --out {out}: {out.parent} is a file, not a folder\n"


@pytest.mark.filterwarnings(f"ignore:{UNTRAINED}")
@pytest.mark.filterwarnings("ignore:2 of 2 gradcam maps are constant")  # an untrained net's, on noise images
def test_baselines_only_run_writes_every_output(tmp_path, capsys):
    generator = np.random.default_rng(0)
    arrays = {f"{split}_{kind}": value for split in ("train", "test") for kind, value in (
        ("images", generator.integers(0, 256, (12, 16, 16), dtype=np.uint8)), ("labels", np.arange(12) % 2))}
    np.savez(tmp_path / "tiny.npz", **arrays)
    torch.manual_seed(0)
    net = build_classifier_network("smallcnn", channels=1, num_classes=2, image_size=16)
    save_bundle(net, tmp_path / "clf", class_names=["0", "1"], image_size=16)
    out = tmp_path / "eval"
    code = main(["evaluate", "none", str(tmp_path / "tiny.npz"), "--classifier", str(tmp_path / "clf"),
                 "--methods", "gradcam,random", "--n-images", "2", "--device", "cpu", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "| gradcam | " in printed.out and "skipped" not in printed.out and "N = 1 patches of 7x7" in printed.out
    rows = json.loads((out / "results.json").read_text())["methods"]
    assert [row["method"] for row in rows] == ["gradcam", "random"]
    assert all((out / name).is_file() for name in ("results.csv", "results.md", "curves.png", "gallery.png"))
    # a scripted module names no Grad-CAM layer: when every method is skipped, the results say why, and the exit
    # status says that nothing was evaluated (no legend warning from an empty curves figure either)
    scripted = str(tmp_path / "clf" / "classifier.torchscript.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", UNTRAINED)
        code = main(["evaluate", "none", str(tmp_path / "tiny.npz"), "--classifier", scripted, "--methods",
                     "gradcam", "--n-images", "2", "--device", "cpu", "--out", str(tmp_path / "skipped")])
    printed = capsys.readouterr()
    assert code == 2 and "| gradcam | skipped" in printed.out and "| random | " in printed.out  # always added
    assert printed.err.strip().endswith("caex evaluate: error: every method was skipped (see the table's reasons); "
                                        "nothing was evaluated")
    # sizes checked against the loaded images are named by their flags, not the metric's fields (patch=64: ...)
    for extra, message in ((["--patch", "64"], "--patch 64: larger than the 16x16 images"),
                           (["--n-patches", "5000"], "--n-patches 5000: more than the 256 pixels")):
        code = main(["evaluate", "none", str(tmp_path / "tiny.npz"), "--classifier", str(tmp_path / "clf"),
                     "--methods", "random", "--device", "cpu", "--out", str(tmp_path / "sized"), *extra])
        assert code == 2 and capsys.readouterr().err.splitlines()[-1].startswith(f"caex evaluate: error: {message}")


def test_files_an_evaluation_did_not_write_are_warned_about_once(tmp_path):
    """An earlier run's files next to the new results passed for this run's; they are named, never deleted."""
    generator = np.random.default_rng(0)
    arrays = {f"{split}_{kind}": value for split in ("train", "test") for kind, value in (
        ("images", generator.integers(0, 256, (8, 16, 16), dtype=np.uint8)), ("labels", np.arange(8) % 2))}
    np.savez(tmp_path / "tiny.npz", **arrays)
    net = build_classifier_network("smallcnn", channels=1, num_classes=2, image_size=16)
    save_bundle(net, tmp_path / "clf", class_names=["0", "1"], image_size=16)
    out = tmp_path / "eval"
    out.mkdir()
    for name in ("gallery_old.png", "curves_old.png"):
        (out / name).write_bytes(b"an earlier run's figure")
    argv = ["evaluate", "none", str(tmp_path / "tiny.npz"), "--classifier", str(tmp_path / "clf"), "--methods",
            "random", "--n-images", "2", "--device", "cpu", "--out", str(out)]
    with pytest.warns(UserWarning) as caught:
        assert main(argv) == 0
    assert [str(warning.message) for warning in caught if not re.match(UNTRAINED, str(warning.message))] == [
        f"{out} also holds 2 file(s) that this run did not write, e.g. of an earlier run (first: curves_old.png); "
        "use a fresh --out to keep runs apart"]
    assert (out / "curves_old.png").exists()
    (out / "curves_old.png").unlink()
    (out / "gallery_old.png").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same run again rewrites every file it finds
        warnings.filterwarnings("ignore", UNTRAINED)
        assert main(argv) == 0


def test_cae_target_and_target_by_reach_every_cae_method(tmp_path, capsys, monkeypatch):
    import caex.evaluation.runner
    from caex.errors import CaexError

    seen = {}

    def fake_evaluate(*args, method_options, **kwargs):
        seen.update(method_options)
        raise CaexError("stopped after the options were built")

    monkeypatch.setattr(caex.evaluation.runner, "evaluate", fake_evaluate)
    torch.manual_seed(0)
    net = build_classifier_network("smallcnn", channels=1, num_classes=4, image_size=32)
    save_bundle(net, tmp_path / "clf", class_names=["normal", "cnv", "dme", "drusen"], image_size=32)
    CAE(CAEConfig.preset("tiny", image_size=32, channels=1, num_classes=4)).save(tmp_path / "run")
    code = main(["evaluate", str(tmp_path / "run"), "synthetic:size=32,per_class=4", "--classifier",
                 str(tmp_path / "clf"), "--methods", "cae-nearest,cae-centroid,random", "--cae-target", "normal",
                 "--cae-target-by", "code", "--cae-steps", "2", "--device", "cpu", "--out", str(tmp_path / "out")])
    assert code == 2 and "stopped after the options were built" in capsys.readouterr().err
    assert seen == {name: {"steps": 2, "counter_class": 0, "counter_by": "code"}
                    for name in ("cae-nearest", "cae-centroid")}
    seen.clear()  # a method's own settings, typed by its constructor, beside the cae ones (which they override)
    code = main(["evaluate", str(tmp_path / "run"), "synthetic:size=32,per_class=4", "--classifier",
                 str(tmp_path / "clf"), "--methods", "cae-nearest,lime,ig", "--cae-steps", "2", "--method-option",
                 "LIME.n_samples=20", "--method-option", "ig.n-steps=8", "--method-option", "cae-nearest.steps=3",
                 "--method-option", "lime.compactness=2", "--device", "cpu", "--out", str(tmp_path / "out")])
    assert code == 2 and seen == {"cae-nearest": {"steps": 3, "counter_class": None, "counter_by": "code"},
                                  "lime": {"n_samples": 20, "compactness": 2.0},
                                  "integrated_gradients": {"n_steps": 8}}


def test_a_model_file_is_probed_with_the_cae_images_so_a_wrong_size_is_the_datas(tmp_path, capsys):
    """Probed with the data's 48 px, a TorchScript file without classifier.json "took 48px images" and the error
    blamed the classifier against the CAE's 32 px, when --size was what had to change."""
    net = build_classifier_network("smallcnn", channels=1, num_classes=4, image_size=32)
    save_bundle(net, tmp_path / "clf", class_names=["normal", "cnv", "dme", "drusen"], image_size=32)
    (tmp_path / "model.pt").write_bytes((tmp_path / "clf" / "classifier.torchscript.pt").read_bytes())
    CAE(CAEConfig.preset("tiny", image_size=32, channels=1, num_classes=4)).save(tmp_path / "run")
    code = main(["evaluate", str(tmp_path / "run"), "synthetic:size=48,per_class=4", "--classifier",
                 str(tmp_path / "model.pt"), "--methods", "cae", "--device", "cpu", "--out", str(tmp_path / "out")])
    assert code == 2
    assert capsys.readouterr().err == ("caex evaluate: error: the classifier takes 32px images but data "
                                       "'synthetic:size=48,per_class=4' is 48px (use --size 32)\n")
