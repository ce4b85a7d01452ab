"""``caex train-classifier`` end to end, and classifier errors as one line through the CLI."""

from __future__ import annotations

import io
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from caex.classifier import load_classifier
from caex.cli.main import main
from caex.data import load_dataset

TINY = "synthetic:classes=2,per_class=12"
SIZE = ["--size", "32"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "clf"
    threads = torch.get_num_threads()
    try:
        code = main(["train-classifier", TINY, *SIZE, "--arch", "smallcnn", "--epochs", "1", "--batch-size", "8",
                     "--out", str(out), "--onnx", "--device", "cpu", "--threads", "1", "--seed", "3"])
    finally:
        torch.set_num_threads(threads)
    return code, out


def test_a_bundle_in_out_is_replaced_only_with_force(trained, tmp_path, capsys):
    """train-classifier overwrote a bundle silently where caex train refuses a finished run."""
    out = tmp_path / "clf"
    shutil.copytree(trained[1], out)
    argv = ["train-classifier", TINY, *SIZE, "--arch", "smallcnn", "--epochs", "1", "--out", str(out),
            "--device", "cpu"]
    line = _error_line(capsys, argv)
    assert line == (f"caex train-classifier: error: --out {out}: holds a classifier bundle already; pass --force "
                    "to replace it")
    assert main([*argv, "--force"]) == 0 and not (out / "classifier.onnx").exists()  # the stale export went too


def test_train_classifier_writes_every_bundle_file(trained, capsys):
    code, out = trained
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"classifier.safetensors", "classifier.json",
                                               "classifier.torchscript.pt", "classifier.onnx"}
    info = json.loads((out / "classifier.json").read_text())
    assert info["arch"] == "smallcnn" and info["class_names"] == ["normal", "cnv"]
    assert (info["image_size"], info["channels"], info["data_spec"]) == (32, 1, TINY)
    assert 0.0 <= info["test_accuracy"] <= 1.0 and len(info["mean"]) == len(info["std"]) == 1
    recipe = info["training"]  # what else a seed needs to give these weights again
    assert {key: recipe[key] for key in ("arch", "seed", "epochs", "batch_size", "augment", "device")} == {
        "arch": "smallcnn", "seed": 3, "epochs": 1, "batch_size": 8, "augment": True, "device": "cpu"}
    assert recipe["precision"] in ("bfloat16", "float32") and recipe["lr"] > 0
    assert recipe["versions"]["torch_threads"] == 1 and recipe["versions"]["torch"] == torch.__version__


def test_saved_bundle_reproduces_the_reported_accuracy(trained):
    _, out = trained
    data = load_dataset(TINY, size=32)
    info = json.loads((out / "classifier.json").read_text())
    for path in (out, out / "classifier.torchscript.pt", out / "classifier.onnx"):
        predictions = load_classifier(path, device="cpu").predict(data.test.images)
        assert (predictions == data.test.labels).float().mean().item() == pytest.approx(info["test_accuracy"])


def _error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_an_out_that_is_a_file_is_refused_before_training(tmp_path, capsys):
    """It used to fail only when the bundle was saved, losing the training."""
    (tmp_path / "clf").write_text("a file")
    line = _error_line(capsys, ["train-classifier", TINY, *SIZE, "--arch", "smallcnn", "--epochs", "1",
                                "--out", str(tmp_path / "clf")])
    assert line == f"caex train-classifier: error: --out {tmp_path / 'clf'}: {tmp_path / 'clf'} is a file, not a folder"


def test_ctrl_c_during_training_ends_on_a_line_of_its_own(tmp_path, capsys, monkeypatch):
    """The loop's progress bar stayed open, so the message was printed at the end of the bar's line."""
    from caex.classifier import train as training

    shift, calls = training.random_shift, []

    def interrupted_second_step(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return shift(*args)

    monkeypatch.setattr(training, "random_shift", interrupted_second_step)
    assert main(["train-classifier", TINY, *SIZE, "--arch", "smallcnn", "--epochs", "1", "--batch-size", "4",
                 "--out", str(tmp_path / "clf"), "--device", "cpu"]) == 130
    err = capsys.readouterr().err
    assert "train smallcnn" in err  # the bar was shown
    assert err.splitlines()[-1] == "caex train-classifier: interrupted"  # nothing to resume: no false promise
    assert not (tmp_path / "clf").exists()


@pytest.mark.parametrize("option", ["--epochs", "--batch-size"])
def test_counts_below_one_are_refused_while_parsing(tmp_path, capsys, option):
    """They were refused only once the command ran ("training smallcnn: epochs 0 must be at least 1"), in words
    other than every other count option's."""
    line = _error_line(capsys, ["train-classifier", TINY, *SIZE, "--arch", "smallcnn", option, "0",
                                "--out", str(tmp_path / "x")])
    assert line == (f"caex train-classifier: error: argument {option}: must be at least 1, got 0 "
                    "(see caex train-classifier --help)")
    assert not (tmp_path / "x").exists()


def test_a_bad_device_is_refused_before_the_data_loads(tmp_path, capsys, monkeypatch):
    """It was refused only after the data line was printed; the other commands refuse it at once."""
    import caex.cli.common

    monkeypatch.setattr(caex.cli.common, "load_data_from_args", lambda args: pytest.fail("the data was loaded"))
    line = _error_line(capsys, ["train-classifier", TINY, *SIZE, "--arch", "smallcnn", "--device", "bogus",
                                "--out", str(tmp_path / "x")])
    assert line.startswith("caex train-classifier: error: device 'bogus': not a device name")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_a_cae_run_folder_as_out_is_refused_even_with_force(tmp_path, capsys, monkeypatch, force):
    """A bundle was written among a CAE run's files without a word (caex train refuses a bundle's folder); then
    the refusal came from inside the folder's lock, so a training run holding it got a 'locked' error instead."""
    import caex.utils.io

    monkeypatch.setattr(caex.utils.io, "folder_lock", lambda *args: pytest.fail("locked the CAE run's folder"))
    names = ("config.json", "model.safetensors")
    for name in names:
        (tmp_path / name).write_text(name)
    line = _error_line(capsys, ["train-classifier", TINY, *SIZE, "--arch", "smallcnn", "--epochs", "1",
                                "--out", str(tmp_path), *force])
    assert line == (f"caex train-classifier: error: --out {tmp_path}: is a CAE run folder; a classifier bundle "
                    "needs an --out of its own (--force replaces only a bundle)")
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(names)


@pytest.mark.parametrize("option, value, expected", [
    ("--lr", "nan", "argument --lr: must be a positive finite number, got nan"),
    ("--lr", "inf", "argument --lr: must be a positive finite number, got inf"),
    ("--threads", "0", "argument --threads: must be at least 1, got 0"),
])
def test_unusable_lr_or_threads_is_one_line(tmp_path, capsys, option, value, expected):
    line = _error_line(capsys, ["train-classifier", TINY, *SIZE, "--arch", "smallcnn", option, value,
                                "--out", str(tmp_path / "x")])
    assert line.startswith("caex train-classifier: error:") and expected in line
    assert not (tmp_path / "x").exists()


def test_unknown_arch_is_refused_by_the_parser(capsys):
    assert main(["train-classifier", TINY, "--arch", "vgg11", "--out", "x"]) == 2
    assert "invalid choice: 'vgg11'" in capsys.readouterr().err


@pytest.mark.parametrize("make_classifier, extra, expected", [
    (lambda root, out: root / "missing", SIZE, "missing: no such file or folder"),
    (lambda root, out: _write(root / "bad.pt", b"garbage"), SIZE, "bad.pt: not a readable TorchScript file"),
    (lambda root, out: _write(root / "w.pth", torch_bytes(out)), [*SIZE, "--arch", "resnet18"],
     "do not match architecture 'resnet18'"),
    (lambda root, out: out, ["--size", "48"], "takes 32px images but data"),
    (lambda root, out: out, [*SIZE, "--channels", "3"], "takes 1-channel images"),
])
def test_classifier_errors_through_the_cli_are_one_line(trained, tmp_path, capsys, make_classifier, extra, expected):
    """``caex evaluate`` is a command that loads a classifier and checks it against data."""
    _, out = trained
    classifier = make_classifier(tmp_path, out)
    line = _error_line(capsys, ["evaluate", "none", TINY, *extra, "--methods", "random",
                                "--classifier", str(classifier), "--out", str(tmp_path / "eval")])
    assert line.startswith("caex evaluate: error:") and expected in line


def _write(path, content: bytes):
    path.write_bytes(content)
    return path


def torch_bytes(bundle) -> bytes:
    """The bundle's weights as a ``torch.save``d state dict (a .pth a user might have)."""
    buffer = io.BytesIO()
    torch.save(load_file(bundle / "classifier.safetensors"), buffer)
    return buffer.getvalue()


def test_a_warning_turned_error_stops_train_classifier_after_the_bundle_is_saved(tmp_path, capsys, monkeypatch):
    """Under PYTHONWARNINGS=error the "near chance" warning, given inside the training, stopped the command before
    save_bundle: the trained network was lost. It is now given after the save, and still ends the command."""
    import warnings

    import caex.classifier.train as training
    from caex.utils.warn import warn

    monkeypatch.setattr(training, "_warn_if_near_chance",
                        lambda arch, *_: warn(f"{arch}: near chance", training.NearChanceWarning))
    out = tmp_path / "clf"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code = main(["train-classifier", TINY, *SIZE, "--arch", "smallcnn", "--epochs", "1", "--out", str(out),
                     "--device", "cpu"])
    assert code == 2 and capsys.readouterr().err.endswith("caex train-classifier: error: smallcnn: near chance\n")
    assert load_classifier(out).class_names == ["normal", "cnv"]  # the bundle is there, whole
