"""Inputs that crashed where mypy found a type the code did not handle (each failed before its fix)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageFont
from torch import nn

from caex.classifier import TorchClassifier
from caex.errors import CaexError, ClassifierError
from caex.model import CAE, CAEConfig
from caex.utils.drawing import MARGIN, caption_font


def test_features_of_a_module_whose_features_is_a_tensor_are_unreachable() -> None:
    """A module keeping a tensor named ``features`` (a buffer, here) has no feature extractor to call: it gave None
    only when no attribute had the name, and 'Tensor' object is not callable otherwise (analyse_manifold's
    separability of the classifier's features asks for them)."""
    from caex.classifier import TorchClassifier

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3 * 8 * 8, 2)
            self.register_buffer("features", torch.zeros(4))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.fc(images.flatten(1))

    classifier = TorchClassifier(Net(), ["a", "b"], 8, 3)
    assert classifier.features(torch.rand(2, 3, 8, 8)) is None
    assert classifier.predict_proba(torch.rand(2, 3, 8, 8)).shape == (2, 2)


def test_title_band_takes_a_font_of_fractional_size() -> None:
    """Pillow opens a font at 12.5 px; the band's height was 12.5 + margins, which Image.new refused."""
    from matplotlib import get_data_path

    from caex.utils.drawing import banded

    path = caption_font(12).path
    assert get_data_path() in path  # the font caex captions with, at another size
    font = ImageFont.truetype(path, 12.5)
    picture = Image.new("RGB", (40, 30))
    titled = banded(picture, ["one", "two"], font)
    assert titled.height == 30 + 2 * (13 + MARGIN) + MARGIN  # two lines of ceil(12.5) px and their margins
    assert titled.crop((0, titled.height - 30, 40, titled.height)).tobytes() == picture.tobytes()


def test_demo_profile_replace_refuses_a_class_as_a_block() -> None:
    """``__class__`` is an attribute that is a dataclass (the class itself): dataclasses.replace then raised its
    own TypeError instead of naming the unknown block."""
    from caex.demo.profiles import get_profile

    with pytest.raises(CaexError, match="unknown settings block '__class__'"):
        get_profile("fast").replace(__class__={})


def test_architecture_without_a_linear_head_is_refused_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """An architecture put into ARCHITECTURES without register_architecture's checks, whose ``fc`` is no linear
    layer, built a network that failed later as an AttributeError (``head.out_features``)."""
    from caex.classifier import arch
    from caex.classifier.arch import Architecture, SmallCNN, build_classifier_network

    def build(channels: int, num_classes: int, small_stem: bool) -> nn.Module:
        net = SmallCNN(channels, num_classes)
        net.fc = nn.Sequential(net.fc)
        return net

    monkeypatch.setitem(arch.ARCHITECTURES, "wrapped-head", Architecture(build, "stages", "stages.0.0.weight", 1, 1e-3))
    with pytest.raises(ClassifierError, match="'wrapped-head'.*`fc` is a Sequential"):
        build_classifier_network("wrapped-head", channels=1, num_classes=2, image_size=16)


def test_load_image_names_an_unreadable_file_given_as_text(tmp_path) -> None:
    """``load_image`` takes a path as text, but the reader asked it for ``.suffix`` (is it a TIFF?) when Pillow
    could not identify the file: AttributeError, not the one-line DataError a Path got."""
    from caex.data import load_image
    from caex.errors import DataError

    (tmp_path / "scan.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"scan\.png: cannot read image \(UnidentifiedImageError"):
        load_image(str(tmp_path / "scan.png"), 16, 1)


def test_the_deletion_metric_names_ragged_labels() -> None:
    """Labels of uneven lengths failed as NumPy's "inhomogeneous shape" ValueError while reading their shape."""
    from caex.errors import EvaluationError
    from caex.evaluation import PerturbationMetric

    def model(images: torch.Tensor) -> torch.Tensor:
        return torch.full((len(images), 2), 0.5)

    images = torch.rand(2, 1, 8, 8)
    with pytest.raises(EvaluationError, match="^labels: expected one class index per image, got a ragged list$"):
        PerturbationMetric(patch=2, n_patches=2)(model, images, [[0, 1], [1]], torch.rand(2, 8, 8), images)


def tiny_cae(centroids: bool = True) -> CAE:
    """A tiny untrained CAE of 16 px grey images of two classes, with stored codes of six images (``centroids``:
    stored as training stores them; else the codes and labels alone, as a user may set them)."""
    torch.manual_seed(0)
    cae = CAE(CAEConfig.preset("tiny", image_size=16, channels=1, num_classes=2), class_names=["a", "b"])
    codes, labels = cae.class_codes(torch.rand(6, 1, 16, 16)), torch.tensor([0, 1] * 3)
    if centroids:
        cae.set_train_codes(codes, labels)
    else:
        cae.train_codes, cae.train_labels = codes, labels
    return cae


def linear_classifier() -> TorchClassifier:
    return TorchClassifier(nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 2)), ["a", "b"], 16, 1)


def test_a_centroid_path_without_stored_centroids_is_refused_naming_them() -> None:
    """Stored codes and labels without centroids passed the check for stored codes, and the path failed as
    'NoneType' object has no attribute 'to'."""
    from caex.errors import ModelError
    from caex.explain import Explainer

    explainer = Explainer(tiny_cae(centroids=False), linear_classifier())
    with pytest.raises(ModelError, match=r"^path 'centroid' needs the CAE's stored class centroids; this CAE has "
                                         r"none \(load a finished run folder\)$"):
        explainer.explain(torch.rand(2, 1, 16, 16), target=1, path="centroid", steps=2)


def test_the_explainer_runs_the_callers_cae_in_eval_mode_and_leaves_its_modes_as_they_were() -> None:
    """``Explainer(cae, ...)`` put the caller's CAE into eval mode for good: one still in training, or with a part
    the caller froze in eval, came back all in eval."""
    from caex.explain import Explainer

    cae = tiny_cae()
    parts = [module for module in cae.modules() if module is not cae]
    parts[1].eval()  # a part the caller keeps in eval under a training parent
    modes = [module.training for module in cae.modules()]
    seen: list[bool] = []
    hooks = [part.register_forward_pre_hook(lambda part, _inputs: seen.append(part.training)) for part in parts]
    explainer = Explainer(cae, linear_classifier())
    assert [module.training for module in cae.modules()] == modes and cae.training
    explanation = explainer.explain(torch.rand(2, 1, 16, 16), path="guided", steps=3)
    saliency = explainer.saliency(torch.rand(2, 1, 16, 16), path="centroid", steps=3)
    for hook in hooks:
        hook.remove()
    assert seen and not any(seen)  # every part ran in eval mode, encoder and decoder alike
    assert [module.training for module in cae.modules()] == modes
    assert explanation.saliency.shape == saliency.shape == (2, 16, 16)


def test_features_of_an_empty_batch_are_an_empty_batch_of_features() -> None:
    """An empty batch gave ``None``, which reads as "this model has no features"; predict_proba gives [0, K]."""
    from caex.classifier import build_classifier_network

    net = build_classifier_network("smallcnn", channels=1, num_classes=2, image_size=16)
    classifier = TorchClassifier(net, ["a", "b"], 16, 1)
    width = classifier.features(torch.rand(2, 1, 16, 16)).shape[1]
    empty = classifier.features(torch.rand(0, 1, 16, 16))
    assert empty is not None and empty.shape == (0, width) and empty.dtype == torch.float32
    assert linear_classifier().features(torch.rand(0, 1, 16, 16)) is None  # none to reach, empty batch or not


def test_a_gradient_methods_module_of_a_black_box_is_gradients_unavailable() -> None:
    """``Attributor.module`` is typed ``nn.Module`` but gave ``None`` for a black box, failing later in the method."""
    from caex.classifier import Classifier
    from caex.explain.attribution import GradientsUnavailableError, RandomAttributor

    class BlackBox(Classifier):
        def _logits_batch(self, images: torch.Tensor) -> torch.Tensor:
            return images.new_zeros((len(images), 2))

    attributor = RandomAttributor(BlackBox(["a", "b"], 16, 1))
    with pytest.raises(GradientsUnavailableError, match="^random: BlackBox is a black box, with no differentiable "
                                                       "module$"):
        attributor.module  # noqa: B018 - the property is the test


@pytest.mark.slow
def test_the_first_gradient_method_leaves_the_callers_warning_filters_as_they_were() -> None:
    """captum imports IPython, which added an "error" filter (its ProvisionalCompleterWarning) to the caller's
    warning filters for the rest of the session."""
    import subprocess
    import sys

    check = """
import sys, warnings
import torch
from torch import nn
from caex.classifier import TorchClassifier
from caex.explain import make_attributor

net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 8 * 8, 2))
classifier = TorchClassifier(net, ["a", "b"], 8, 1)
before = list(warnings.filters)
imported = "captum.attr" in sys.modules
maps = make_attributor("gradcam", classifier).saliency(torch.rand(2, 1, 8, 8), [0, 1])
print(imported, "captum.attr" in sys.modules, tuple(maps.shape), warnings.filters == before)
"""
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True", "(2,", "8,", "8)", "True"], result.stdout
