"""Inputs that crashed where mypy found a type the code did not handle (each failed before its fix)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageFont
from torch import nn

from caex.errors import CaexError, ClassifierError
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
