"""Target-classifier networks: torchvision ResNets adapted to small images, and a compact CNN.

Every network is wrapped in :class:`ClassifierNet`, which takes data-range
images ``[B, C, H, W]`` in [0, 1], applies the per-channel normalisation it was
trained with (stored as buffers, so it travels with the weights and with
TorchScript/ONNX exports) and returns logits. The wrapper splits each network
into a ``backbone`` (images -> pooled penultimate features) and a linear
``head``, so explainers can reach the features and the last convolution.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torchvision
from torch import nn

from caex.errors import ClassifierError
from caex.utils.checks import check_counts, check_positive_finite, check_registry_name
from caex.utils.seed import global_rng_kept

#: Images at most this large get the CIFAR-style stem (3x3 stride-1 conv, no max-pool),
#: so a 64 px image still has an 8x8 map at the last stage instead of 2x2.
SMALL_STEM_MAX_SIZE = 64


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU stages with max-pooling in between, then global average pooling.

    Fast enough to train in seconds on a CPU; the last stage (``stages[-1]``) is
    the Grad-CAM target layer.
    """

    def __init__(self, channels: int, num_classes: int, widths: Sequence[int] = (32, 64, 128, 128)) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        in_width = channels
        for index, width in enumerate(widths):
            layers: list[nn.Module] = [] if index == 0 else [nn.MaxPool2d(2)]
            layers += [nn.Conv2d(in_width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            stages.append(nn.Sequential(*layers))
            in_width = width
        self.stages = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.stages(x)), 1))


def _torchvision_resnet(name: str) -> Callable[[int, int, bool], nn.Module]:
    """A builder for a torchvision ResNet with a ``channels``-wide first conv and an optional small stem."""

    def build(channels: int, num_classes: int, small_stem: bool) -> nn.Module:
        net = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        if small_stem:
            net.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif channels != 3:
            net.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return net

    return build


@dataclass(frozen=True)
class Architecture:
    """Everything caex needs to build, train and reload one kind of classifier network.

    ``build(channels, num_classes, small_stem)`` returns a bare network whose ``fc`` is its linear head;
    ``target_layer`` names its last convolutional stage (Grad-CAM's layer) and ``first_conv`` its first
    convolution's weight, both as the bare network's attribute paths (the loader reads the channel count, and
    from a 3x3 kernel the small stem, off that weight); ``epochs`` and ``lr`` are ``train-classifier``'s defaults.
    """

    build: Callable[[int, int, bool], nn.Module]
    target_layer: str
    first_conv: str
    epochs: int
    lr: float


#: Networks by name; :func:`register_architecture` adds one, which ``caex train-classifier --arch`` and the
#: loaders then take like these. Epochs and lr are chosen so that ``caex train-classifier synthetic`` reaches
#: >= 97% test accuracy in a few minutes on a 2-core CPU (see benchmarks/bench_classifier.py).
ARCHITECTURES: dict[str, Architecture] = {
    "resnet18": Architecture(_torchvision_resnet("resnet18"), "layer4", "conv1.weight", epochs=4, lr=2e-3),
    "resnet50": Architecture(_torchvision_resnet("resnet50"), "layer4", "conv1.weight", epochs=4, lr=1e-3),
    "smallcnn": Architecture(lambda channels, num_classes, small_stem: SmallCNN(channels, num_classes), "stages",
                             "stages.0.0.weight", epochs=8, lr=4e-3),
}


def register_architecture(name: str, architecture: Architecture, *, replace: bool = False) -> None:
    """Make ``name`` an architecture every caex command builds, trains, saves and reloads (in the same Python
    process: register it before calling caex's API or ``caex.cli.main.main``); ``replace`` lets it take a
    registered name."""
    check_registry_name(name, ARCHITECTURES, architecture, what="architecture", replace=replace,
                        error=ClassifierError)
    if not isinstance(architecture, Architecture):
        raise ClassifierError(f"architecture {name!r}: expected a caex.classifier.Architecture, got "
                              f"{type(architecture).__name__}")
    _check_architecture(name, architecture)
    ARCHITECTURES[name] = architecture


def _check_architecture(name: str, spec: Architecture) -> None:
    """Build a small instance of ``spec`` and check what caex will reach in it, so a mistake is named now: a wrong
    layer path made Grad-CAM fall back to another layer without a word, a wrong first convolution saved bundles
    that did not load, and a network without ``fc`` or fractional epochs failed as unexpected errors."""
    check_counts({"epochs": spec.epochs}, 1, ClassifierError, f"architecture {name!r}: ")
    check_positive_finite(f"architecture {name!r}: lr", spec.lr, ClassifierError)
    with global_rng_kept(torch.device("cpu")):  # the caller's random stream stays as it was, as do other threads'
        net = spec.build(1, 2, True)  # a builder's own error is its own
    try:
        head, conv = net.fc, net.get_parameter(spec.first_conv)
        net.get_submodule(spec.target_layer)
    except AttributeError as exc:
        raise ClassifierError(f"architecture {name!r}: {exc} (the built network needs an `fc` head, and target_layer "
                              f"{spec.target_layer!r} and first_conv {spec.first_conv!r} as paths in it)") from None
    if not isinstance(head, nn.Linear) or conv.ndim != 4 or conv.shape[1] != 1:
        raise ClassifierError(f"architecture {name!r}: needs a linear `fc` head and a first_conv weight "
                              f"[out, channels, k, k] taking the channels given; got {type(head).__name__} and "
                              f"{tuple(conv.shape)}")


def architecture(arch: str) -> Architecture:
    """The registered :class:`Architecture` ``arch``, or a one-line :class:`ClassifierError` naming the known ones."""
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise ClassifierError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}") from None


class ClassifierNet(nn.Module):
    """Data-range images in, logits out: ``head(backbone((x - mean) / std))``."""

    __jit_unused_properties__ = ["target_layer"]  # noqa: RUF012 - TorchScript reads this exact name; Grad-CAM handle
    # The normalisation buffers [1, C, 1, 1], declared for type checkers alone: TorchScript reads class annotations
    # and cannot resolve the strings `from __future__ import annotations` makes of them.
    if TYPE_CHECKING:
        mean: torch.Tensor
        std: torch.Tensor

    def __init__(self, arch: str, backbone: nn.Module, head: nn.Linear, mean: Sequence[float],
                 std: Sequence[float], small_stem: bool, target_layer_name: str) -> None:
        super().__init__()
        self.arch = arch
        self.small_stem = small_stem
        self.backbone = backbone
        self.head = head
        self.register_buffer("mean", self.normalisation_buffer(mean))
        self.register_buffer("std", self.normalisation_buffer(std))
        self.target_layer_name = target_layer_name

    @staticmethod
    def normalisation_buffer(values: Sequence[float]) -> torch.Tensor:
        """``mean`` or ``std`` per channel as the buffer ``[1, C, 1, 1]`` the network holds."""
        return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    @torch.jit.export
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate (globally pooled) features ``[B, F]`` of data-range images."""
        return self.backbone((images - self.mean) / self.std)

    @property
    def target_layer(self) -> nn.Module:
        """The last convolutional stage, whose activations Grad-CAM weighs."""
        return self.backbone.get_submodule(self.target_layer_name)


def build_classifier_network(arch: str, *, channels: int, num_classes: int, image_size: int | None = None,
                             mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                             small_stem: bool | None = None) -> ClassifierNet:
    """A fresh (randomly initialised) :class:`ClassifierNet`.

    ``small_stem`` defaults to ``image_size <= 64`` (ResNets only); ``mean``/``std``
    default to no normalisation (0 and 1 per channel).
    """
    spec = architecture(arch)
    if small_stem is None:
        small_stem = image_size is None or image_size <= SMALL_STEM_MAX_SIZE
    net = spec.build(channels, num_classes, small_stem)
    head = net.fc
    if not isinstance(head, nn.Linear):  # register_architecture checks it; an entry put in ARCHITECTURES is not
        raise ClassifierError(f"architecture {arch!r}: its network's `fc` is a {type(head).__name__}, not the "
                              "linear head caex needs")
    net.fc = nn.Identity()
    mean, std = normalisation(channels, mean, std)
    return ClassifierNet(arch, net, head, mean=mean, std=std, small_stem=small_stem,
                         target_layer_name=spec.target_layer)


def normalisation(channels: int, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None) -> tuple[Sequence[float], Sequence[float]]:
    """``mean`` and ``std`` per channel, none (0 and 1) where not given."""
    return [0.0] * channels if mean is None else mean, [1.0] * channels if std is None else std


def to_wrapper_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a bare (torchvision-style) state dict onto :class:`ClassifierNet` keys; wrapper keys pass through.

    ``fc.*`` becomes ``head.*``, everything else moves under ``backbone.``; a
    leading ``module.`` (from DataParallel/DDP checkpoints) is dropped.
    """
    state = {key.removeprefix("module."): value for key, value in state.items()}
    if any(key.startswith(("backbone.", "head.")) for key in state):
        return dict(state)
    return {(f"head.{key[3:]}" if key.startswith("fc.") else f"backbone.{key}"): value
            for key, value in state.items()}


def infer_network_shape(arch: str, state: Mapping[str, torch.Tensor], source: str) -> tuple[int, int, bool]:
    """``(channels, num_classes, small_stem)`` read off a wrapper-keyed state dict of ``arch``.

    The first conv gives the channel count (and the stem: a 3x3
    kernel is the small stem), the head gives the class count. ``source`` names
    the file in errors.
    """
    first_conv = f"backbone.{architecture(arch).first_conv}"
    for key in (first_conv, "head.weight"):
        if key not in state:
            raise ClassifierError(f"{source}: weights do not match architecture {arch!r} (no key {key!r}); state "
                                  f"dicts load for {', '.join(ARCHITECTURES)} only: export another network as "
                                  "TorchScript or ONNX, or wrap it as a TorchClassifier in Python")
    conv = state[first_conv]
    if conv.ndim != 4 or state["head.weight"].ndim != 2:
        raise ClassifierError(f"{source}: weights do not match architecture {arch!r} "
                              f"({first_conv!r} has shape {tuple(conv.shape)})")
    return int(conv.shape[1]), int(state["head.weight"].shape[0]), conv.shape[-1] == 3
