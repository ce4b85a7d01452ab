"""One-line errors for a classifier whose outputs do not match its class names, a bundle that could not be
opened, and a file that is no classifier at all."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from caex import Explainer
from caex.classifier import (ClassifierInfo, OnnxClassifier, TorchClassifier, build_classifier_network, load_classifier,
                             save_bundle)
from caex.cli.main import main
from caex.errors import ClassifierError
from caex.model import CAE, CAEConfig

NAMES = ["a", "b", "c"]
SIZE = 32


class FlatLinear(nn.Module):
    """A user's own model: ``outputs`` logits for a flattened 1-channel image."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(SIZE * SIZE, outputs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.flatten(1))


class Squeezed(nn.Module):
    """A binary model's single score per image, squeezed to ``[B]``."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3))


def _images(count: int = 3) -> torch.Tensor:
    return torch.rand(count, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def _network(num_classes: int = 3) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_classifier_network("smallcnn", channels=1, num_classes=num_classes, image_size=SIZE).eval()


def _one_line(exc_info: pytest.ExceptionInfo) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- outputs against class names


@pytest.mark.parametrize("outputs", [4, 2])
@pytest.mark.parametrize("read_as", [None, "logits"])
def test_a_module_with_other_than_one_output_per_class_name_is_refused_when_it_predicts(outputs, read_as):
    """4 logits under 3 names predicted class 3, which has no name; 2 logits failed later as an index error."""
    classifier = TorchClassifier(FlatLinear(outputs), NAMES, SIZE, 1, outputs=read_as)
    with pytest.raises(ClassifierError) as exc_info:
        classifier.predict(_images())
    assert _one_line(exc_info) == (f"FlatLinear: the model gives {outputs} outputs per image but 3 class names were "
                                   "given (a, b, c)")


def test_the_logits_gradient_methods_read_are_checked_too():
    """Gradient methods index the logits module's output by class without a prediction first."""
    classifier = TorchClassifier(FlatLinear(2), NAMES, SIZE, 1, source="mine.pt")
    with pytest.raises(ClassifierError, match=r"^mine\.pt: the model gives 2 outputs per image but 3 class names"):
        classifier.logits_module(_images())


def test_outputs_that_are_not_one_row_per_image_are_named_with_their_shape():
    classifier = TorchClassifier(Squeezed(), ["no", "yes"], SIZE, 1)
    with pytest.raises(ClassifierError) as exc_info:
        classifier.predict_proba(_images())
    assert _one_line(exc_info) == ("Squeezed: the model gives outputs of shape (3,) for 3 images; caex needs logits "
                                   "[images, classes], here [3, 2]")


def test_a_caex_network_is_checked_against_its_class_names_when_wrapped():
    with pytest.raises(ClassifierError) as exc_info:
        TorchClassifier(_network(num_classes=4), NAMES, SIZE, 1)
    assert _one_line(exc_info) == "ClassifierNet: the model gives 4 outputs per image but 3 class names were given " \
                                  "(a, b, c)"


@pytest.mark.parametrize("outputs, target", [(2, 2), (4, None)])
def test_an_explainer_on_a_classifier_with_other_than_one_output_per_class_stops_before_explaining(outputs, target):
    """With 2 logits under 3 names explain(target=2) was a RuntimeError, index out of bounds; with 4 it succeeded,
    and saving the explanation failed in the figure."""
    cae = CAE(CAEConfig.preset("tiny", image_size=SIZE, channels=1, num_classes=3), NAMES)
    explainer = Explainer(cae, TorchClassifier(FlatLinear(outputs), NAMES, SIZE, 1))
    with pytest.raises(ClassifierError, match=f"the model gives {outputs} outputs per image but 3 class names"):
        explainer.explain(_images(2), target=target, path="reference", reference=_images(1), steps=2)


def test_a_module_with_one_output_per_class_name_predicts_as_before():
    module = FlatLinear(3)
    probabilities = TorchClassifier(module, NAMES, SIZE, 1).predict_proba(_images())
    with torch.no_grad():
        expected = torch.softmax(module(_images()), dim=1)
    torch.testing.assert_close(probabilities, expected)


# --------------------------------------------------------------------------- save_bundle


@pytest.mark.parametrize("make_net, names, size, expected", [
    (lambda: _network(3), ["a", "b"], SIZE,
     "save_bundle: the model gives 3 outputs per image but 2 class names were given (a, b)"),
    (lambda: _network(3), ["a", "b", "a"], SIZE, "save_bundle: class name 'a' is given twice in class_names"),
    (lambda: _network(3), ["a", "b/c", "d"], SIZE, "save_bundle: class name 'b/c' in class_names contains '/'"),
    (lambda: _network(3), NAMES, -3, "save_bundle: image_size=-3: must be a whole number, at least 1"),
    (lambda: _network(3), NAMES, 32.0, "save_bundle: image_size=32.0: must be a whole number, at least 1"),
    (lambda: FlatLinear(3), NAMES, SIZE, "save_bundle: expected a caex ClassifierNet (from build_classifier_network "
                                         "or train_classifier), got FlatLinear; save another model as a TorchScript "
                                         "or ONNX file with a classifier.json beside it"),
])
def test_save_bundle_refuses_what_would_not_load_and_writes_nothing(tmp_path, make_net, names, size, expected):
    out = tmp_path / "bundle"
    with pytest.raises(ClassifierError) as exc_info:
        save_bundle(make_net(), out, class_names=names, image_size=size)
    assert _one_line(exc_info).startswith(expected)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("errors") / "bundle"
    save_bundle(_network(3), out, class_names=NAMES, image_size=SIZE)
    return out


@pytest.mark.parametrize("field, value", [("image_size", -3), ("image_size", 0), ("channels", 0)])
def test_a_classifier_json_with_a_size_or_channel_count_below_one_is_refused(bundle, tmp_path, field, value):
    """image_size -3 loaded as a classifier of [1, -3, -3] images."""
    folder = tmp_path / "edited"
    shutil.copytree(bundle, folder)
    info = json.loads((folder / "classifier.json").read_text())
    (folder / "classifier.json").write_text(json.dumps({**info, field: value}))
    with pytest.raises(ClassifierError) as exc_info:
        load_classifier(folder)
    assert _one_line(exc_info) == f"{folder / 'classifier.json'}: {field}={value}: must be a whole number, at least 1"
    with pytest.raises(ClassifierError, match=f"{field}={value}: must be"):
        ClassifierInfo.read(folder / "classifier.json")


# --------------------------------------------------------------------------- files that are no classifier


@pytest.mark.parametrize("name", ["scan.png", "classifier.json", "notes"])
def test_a_file_that_is_no_classifier_is_named_so_in_one_line(bundle, tmp_path, name):
    """A PNG given as --classifier read as ~430 characters of torch's zip reader and advice to pass --arch."""
    path = tmp_path / name
    if name == "scan.png":
        Image.new("L", (8, 8)).save(path)
    elif name == "classifier.json":
        shutil.copy(bundle / name, path)
    else:
        path.write_text("some text")
    with pytest.raises(ClassifierError) as exc_info:
        load_classifier(path)
    assert _one_line(exc_info) == (f"{path}: not a classifier file (expected a bundle folder, .pt, .pth, "
                                   ".safetensors or .onnx)")


def test_an_image_given_as_the_classifier_is_one_short_line_through_the_cli(tmp_path, capsys):
    image = tmp_path / "scan.png"
    Image.new("L", (8, 8)).save(image)
    assert main(["evaluate", "none", "synthetic:classes=2,per_class=4", "--size", "32", "--methods", "random",
                 "--classifier", str(image), "--out", str(tmp_path / "eval")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"caex evaluate: error: {image}: not a classifier file (expected a bundle folder, .pt, .pth, .safetensors "
        "or .onnx)"]


def test_a_pt_file_that_is_no_zip_gets_the_first_sentence_of_torchs_error(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a model")
    with pytest.raises(ClassifierError) as exc_info:
        load_classifier(path)
    assert _one_line(exc_info) == (f"{path}: not a readable TorchScript file (PytorchStreamReader failed reading zip "
                                   "archive: not a ZIP archive); for a state dict pass arch= (--arch)")


def test_a_torchscript_archive_under_another_name_or_an_upper_case_suffix_still_loads(bundle, tmp_path):
    """Refusing by name alone would lock out TorchScript files saved as model.ts; the kind is read too."""
    for name in ("model.ts", "MODEL.PT"):
        shutil.copy(bundle / "classifier.torchscript.pt", tmp_path / name)
        classifier = load_classifier(tmp_path / name, class_names=NAMES, image_size=SIZE, channels=1)
        assert classifier.num_classes == 3 and classifier.predict(_images()).shape == (3,)


def test_an_onnx_model_with_an_upper_case_suffix_is_read_as_one(tmp_path):
    """``.ONNX`` passed the name check but went to the TorchScript reader."""
    path, net = tmp_path / "MODEL.ONNX", _network(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(1, 1, SIZE, SIZE),), str(path), dynamo=False, opset_version=17)
    classifier = load_classifier(path, class_names=NAMES)
    assert isinstance(classifier, OnnxClassifier)
    with torch.no_grad():
        expected = torch.softmax(net(_images()), dim=1)
    torch.testing.assert_close(classifier.predict_proba(_images()), expected, atol=1e-5, rtol=1e-4)


def test_an_onnx_export_without_the_onnx_package_is_refused_before_training(tmp_path, monkeypatch, capsys) -> None:
    """torch's exporter failed for want of onnx only after the whole training, as an unexpected error."""
    import importlib.util

    from caex.cli.main import main

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "onnx" else
                        find_spec(name, *args))
    assert main(["train-classifier", "synthetic:classes=2,per_class=4", "--size", "32", "--epochs", "1", "--onnx",
                 "--out", str(tmp_path / "clf")]) == 2
    assert capsys.readouterr().err == ("caex train-classifier: error: an ONNX export (--onnx, onnx=True) needs the "
                                       "onnx package; install the extra: pip install 'caex[onnx]'\n")
    assert not (tmp_path / "clf").exists()


@pytest.mark.parametrize("name", ["model_best.pth.tar", "weights.ckpt"])
def test_weights_in_torchs_older_pickle_format_still_load_with_an_architecture(tmp_path, name):
    """The not-a-model check refused a pre-zip torch.save file under a name other than .pt/.pth."""
    path = tmp_path / name
    torch.save(_network(2).state_dict(), path, _use_new_zipfile_serialization=False)
    classifier = load_classifier(path, arch="smallcnn", class_names=["a", "b"], image_size=SIZE, channels=1)
    assert torch.allclose(classifier.predict_proba(_images()), TorchClassifier(_network(2), ["a", "b"], SIZE, 1)
                          .predict_proba(_images()))


def test_a_wrong_output_count_is_named_as_the_models_fault_when_checked_against_data():
    """check_compatible wrapped it as "the classifier cannot take data ...'s images", pointing at the data."""
    from caex.classifier import check_compatible
    from caex.data import load_dataset

    data = load_dataset(f"synthetic:classes=2,per_class=4,size={SIZE}")
    classifier = TorchClassifier(FlatLinear(3), data.class_names, SIZE, 1)
    with pytest.raises(ClassifierError, match=r"^FlatLinear: the model gives 3 outputs per image but 2 class names"):
        check_compatible(classifier, data)


def test_save_bundle_stores_a_numpy_image_size_as_a_number(tmp_path):
    """np.int64(32) passed the check and failed in json ("not JSON serializable"), leaving an empty folder."""
    import numpy as np

    save_bundle(_network(2), tmp_path / "clf", class_names=["a", "b"], image_size=np.int64(SIZE))
    assert json.loads((tmp_path / "clf" / "classifier.json").read_text())["image_size"] == SIZE


def test_a_pickle_that_is_no_torch_file_is_no_classifier_and_a_legacy_one_reads_its_json(bundle, tmp_path):
    """Any file starting with a pickle's first byte passed for an old torch.save file, told to add --arch; a real
    one beside a classifier.json naming its architecture was read as TorchScript."""
    import pickle

    (tmp_path / "features.pkl").write_bytes(pickle.dumps({"x": [1, 2]}, protocol=4))
    with pytest.raises(ClassifierError, match=r"features\.pkl: not a classifier file \(expected a bundle folder"):
        load_classifier(tmp_path / "features.pkl")
    folder = tmp_path / "legacy"
    shutil.copytree(bundle, folder)
    state = load_classifier(bundle).module.state_dict()
    torch.save(state, folder / "weights.pth.tar", _use_new_zipfile_serialization=False)
    assert isinstance(load_classifier(folder / "weights.pth.tar"), TorchClassifier)  # its arch from the json


def test_a_classifier_subclass_that_sets_no_source_prints():
    from caex.classifier import Classifier

    class Mine(Classifier):
        def __init__(self) -> None:  # a user's subclass that skips Classifier.__init__
            self.class_names, self.image_size, self.channels, self.device = ["a", "b"], SIZE, 1, torch.device("cpu")

        def _logits_batch(self, images):
            return images.flatten(1)[:, :2]

    assert repr(Mine()).startswith("Mine(2 classes (a, b), images [1, 32, 32], cpu")
