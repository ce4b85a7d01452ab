"""Target classifiers: architectures, the normalising wrapper, bundles, loaders and their errors, training."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from caex.classifier import (
    ClassifierInfo,
    ClassifierNet,
    OnnxClassifier,
    TorchClassifier,
    build_classifier_network,
    check_compatible,
    load_classifier,
    save_bundle,
    train_classifier,
)
from caex.classifier.train import channel_stats, random_shift
from caex.data import load_dataset
from caex.data.types import DataBundle, ImageSet
from caex.errors import CaexError, ClassifierError
from caex.utils.provenance import classifier_digest

NAMES = ["normal", "cnv", "dme"]
SIZE = 32


def _seeded_net(arch: str = "smallcnn", channels: int = 1, num_classes: int = 3, image_size: int = SIZE,
                mean: list[float] | None = None, std: list[float] | None = None) -> ClassifierNet:
    """A network with random weights *and* random BatchNorm statistics, so round trips test every tensor."""
    torch.manual_seed(0)
    net = build_classifier_network(arch, channels=channels, num_classes=num_classes, image_size=image_size,
                                   mean=mean, std=std)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _images(n: int = 5, channels: int = 1, size: int = SIZE, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _export_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path, **kwargs) -> Path:
    """``module`` as an ONNX file at ``path`` (the exporter's deprecation notices silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), dynamo=False, opset_version=17, **kwargs)
    return path


def _bundle(num_classes: int = 3, channels: int = 1, size: int = SIZE) -> DataBundle:
    images = _images(6, channels, size)
    split = ImageSet(images, torch.arange(6) % num_classes)
    return DataBundle(split, split, [str(k) for k in range(num_classes)], "random")


# --------------------------------------------------------------------------- architectures


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "smallcnn"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 64, 128])
def test_architectures_give_logits_and_features_for_any_size_and_channels(arch, channels, size):
    net = build_classifier_network(arch, channels=channels, num_classes=5, image_size=size).eval()
    with torch.no_grad():
        logits = net(_images(2, channels, size))
        features = net.features(_images(2, channels, size))
    assert logits.shape == (2, 5)
    assert features.shape == (2, net.head.in_features)
    if arch != "smallcnn":  # the small stem (3x3, stride 1, no max-pool) up to 64 px, the standard one above
        assert net.backbone.conv1.kernel_size == ((3, 3) if size <= 64 else (7, 7))
        assert net.backbone.conv1.in_channels == channels
        assert net.target_layer is net.backbone.layer4
    else:
        assert net.target_layer is net.backbone.stages


class _TinyVGG(torch.nn.Module):
    """A network caex does not ship: two conv stages and an ``fc`` head, as :class:`Architecture` asks."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.convs = torch.nn.Sequential(torch.nn.Conv2d(channels, 8, 5, padding=2), torch.nn.ReLU(),
                                         torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())
        self.fc = torch.nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x).mean(dim=(2, 3)))


@pytest.fixture
def tinyvgg():
    from caex.classifier import ARCHITECTURES, Architecture, register_architecture

    register_architecture("tinyvgg", Architecture(lambda channels, num_classes, small_stem: _TinyVGG(
        channels, num_classes), target_layer="convs", first_conv="convs.0.weight", epochs=1, lr=1e-2))
    yield
    del ARCHITECTURES["tinyvgg"]


class _BlurNet(torch.nn.Module):
    """A network with tensors beside its weights: a non-persistent buffer and a plain tensor attribute."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, 4, 3, padding=1)
        self.register_buffer("blur", torch.full((4, 1, 3, 3), 1 / 9), persistent=False)
        self.scale = torch.tensor(2.0)
        self.fc = torch.nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blurred = torch.nn.functional.conv2d(self.conv1(x), self.blur, padding=1, groups=4)
        return self.fc(blurred.mean(dim=(2, 3)) * self.scale)


def test_weights_load_into_a_network_with_tensors_beside_them_and_from_half_precision(tmp_path):
    """Built on the meta device to draw no initial weights, a registered network's non-persistent buffer stayed
    there ("Cannot copy out of meta tensor"), and a float16 file loaded as a float16 network that refused float32
    images."""
    from caex.classifier import ARCHITECTURES, Architecture, register_architecture
    from caex.classifier.arch import build_classifier_network

    register_architecture("blurnet", Architecture(lambda channels, num_classes, small_stem: _BlurNet(
        channels, num_classes), target_layer="conv1", first_conv="conv1.weight", epochs=1, lr=1e-2))
    try:
        torch.manual_seed(0)
        net = build_classifier_network("blurnet", channels=1, num_classes=3).eval()
        save_bundle(net, tmp_path / "clf", class_names=["a", "b", "c"], image_size=16)
        images = torch.rand(2, 1, 16, 16)
        expected = torch.softmax(net(images), dim=1)
        torch.testing.assert_close(load_classifier(tmp_path / "clf", device="cpu").predict_proba(images), expected)
    finally:
        del ARCHITECTURES["blurnet"]
    net = build_classifier_network("smallcnn", channels=1, num_classes=3).eval()
    save_file({key: value.half() if value.is_floating_point() else value for key, value in net.state_dict().items()},
              tmp_path / "half.safetensors")
    loaded = load_classifier(tmp_path / "half.safetensors", arch="smallcnn", device="cpu")
    assert {tensor.dtype for tensor in loaded.module.state_dict().values() if tensor.is_floating_point()} == {
        torch.float32}
    torch.testing.assert_close(loaded.predict_proba(images), torch.softmax(net.half().float()(images), dim=1))


@pytest.mark.filterwarnings("ignore:tinyvgg. balanced test accuracy")  # one epoch on 8 images: near chance, as said
def test_a_registered_architecture_trains_saves_reloads_and_explains_like_a_shipped_one(tmp_path, tinyvgg):
    """Its defaults, Grad-CAM layer and first convolution came from per-name tables: a registered network trained
    (KeyError for its epochs), then its bundle did not load ('no key backbone.conv1.weight')."""
    from caex.classifier.arch import ARCHITECTURES, register_architecture
    from caex.cli.main import main
    from caex.explain.attribution import make_attributor

    bundle = load_dataset("synthetic:classes=2,per_class=8,size=32")
    net, metrics = train_classifier(bundle, "tinyvgg", device="cpu")  # epochs and lr: the registered defaults
    assert metrics.test_class_counts == bundle.test.class_counts(2)
    assert net.target_layer is net.backbone.convs
    save_bundle(net, tmp_path / "clf", class_names=bundle.class_names, image_size=32, metrics=metrics)
    assert ClassifierInfo.read(tmp_path / "clf" / "classifier.json").test_class_counts == [2, 2]
    state = {key: value.clone() for key, value in net.state_dict().items()}
    loaded = load_classifier(tmp_path / "clf", device="cpu")
    assert all(torch.equal(value, loaded.module.state_dict()[key]) for key, value in state.items())
    maps = make_attributor("gradcam", loaded).saliency(bundle.test.images[:2], target=0)
    assert maps.shape == (2, 32, 32)
    save_file(net.state_dict(), tmp_path / "bare.safetensors")  # a bare state dict reads its shape off the weights
    assert load_classifier(tmp_path / "bare.safetensors", arch="tinyvgg", device="cpu").num_classes == 2
    assert main(["train-classifier", "synthetic:classes=2,per_class=8", "--size", "32", "--arch", "tinyvgg",
                 "--out", str(tmp_path / "cli")]) == 0
    with pytest.raises(ClassifierError, match=r"^architecture 'Tiny VGG': its name must be a lower-case Python "
                                              r"identifier"):
        register_architecture("Tiny VGG", None)
    with pytest.raises(ClassifierError, match=r"^architecture 'vgg': expected a caex.classifier.Architecture, got "
                                              r"NoneType$"):  # accepted, then "unexpected error" in --arch vgg
        register_architecture("vgg", None)
    with pytest.raises(ClassifierError, match=r"^architecture 'resnet18': the name is registered already; choose "
                                              r"another, or pass replace=True$"):  # it replaced the shipped one
        register_architecture("resnet18", ARCHITECTURES["tinyvgg"])
    spec = ARCHITECTURES["tinyvgg"]
    torch.manual_seed(0)
    register_architecture("tinyvgg", spec)  # the same again (a notebook cell rerun) is no clash
    drawn = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(drawn, torch.rand(3))  # its test build drew nothing from the caller's random stream
    for wrong, message in [  # each was accepted, then failed late or, for the layer, fell back without a word
            (dict(target_layer="conv"), r"_TinyVGG has no attribute `conv` \(the built network needs an `fc` head, "
                                        r"and target_layer 'conv' and first_conv 'convs.0.weight' as paths in it\)$"),
            (dict(first_conv="convs.0.bias"), r"needs a linear `fc` head and a first_conv weight \[out, channels, k, "
                                              r"k\] taking the channels given; got Linear and \(8,\)$"),
            (dict(epochs=1.5), r"epochs=1.5: must be a whole number, at least 1$"),
            (dict(epochs=0), r"epochs=0: must be a whole number, at least 1$"),
            (dict(build=lambda channels, num_classes, small_stem: _TinyVGG(3, num_classes)),
             r"needs a linear `fc` head .* taking the channels given; got Linear and \(8, 3, 5, 5\)$"),
            (dict(lr=0), r"lr=0: must be a positive finite number$"),
            (dict(lr=True), r"lr=True: must be a positive finite number$")]:
        with pytest.raises(ClassifierError, match=r"^architecture 'tinyvgg2': " + message):
            register_architecture("tinyvgg2", dataclasses.replace(spec, **wrong))
    (tmp_path / "clf" / "classifier.json").write_text((tmp_path / "clf" / "classifier.json").read_text().replace(
        '"tinyvgg"', '"tinyvgg2"'))
    with pytest.raises(ClassifierError, match=r"unknown arch 'tinyvgg2'; .*registered with caex.classifier."
                                              r"register_architecture loads where it is registered"):
        load_classifier(tmp_path / "clf", device="cpu")


def test_wrapper_normalises_data_range_images_with_its_buffers():
    mean, std = [0.2, 0.5, 0.7], [0.1, 0.2, 0.4]
    net = _seeded_net("smallcnn", channels=3, mean=mean, std=std)
    images = _images(4, 3)
    normalised = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    expected = net.head(net.backbone(normalised))
    torch.testing.assert_close(net(images), expected)
    assert {"mean", "std"} <= set(net.state_dict())  # normalisation travels with the weights
    unnormalised = _seeded_net("smallcnn", channels=3)
    assert not torch.allclose(unnormalised(images), net(images))


@pytest.mark.parametrize("images", [32, 128, 200])  # 1, 4 and 6 steps of 32: fewer than a one-cycle schedule needs
def test_a_run_of_only_a_few_steps_trains_at_a_constant_lr(images):
    """With 4 steps OneCycleLR's warm-up had length 0: 'unexpected error: ZeroDivisionError'."""
    from caex.classifier import train_classifier

    bundle = load_dataset(f"synthetic:classes=2,per_class={images // 2 + images // 8},size=32")
    bundle.train = bundle.train.subset(torch.arange(images))
    _, metrics = train_classifier(bundle, "smallcnn", epochs=1, batch_size=32, device="cpu")
    assert 0.0 <= metrics.test_accuracy <= 1.0


def test_training_metrics_a_non_finite_loss_a_callers_no_grad_and_random_stream(monkeypatch):
    """The loss and accuracy are summed on the device and read once per epoch (a read per step made a GPU wait)."""
    import caex.classifier.train as training
    from caex.classifier import train_classifier
    from caex.errors import TrainingError

    bundle = load_dataset("synthetic:classes=2,per_class=40,size=32")
    losses, batches = [], []
    cross_entropy = training.F.cross_entropy

    def recorded(logits, labels):
        loss = cross_entropy(logits, labels)
        losses.append(float(loss.detach()))
        batches.append(len(labels))
        return loss

    monkeypatch.setattr(training.F, "cross_entropy", recorded)
    _, metrics = train_classifier(bundle, "smallcnn", epochs=2, batch_size=16, device="cpu", augment=False)
    steps = len(bundle.train) // 16
    assert metrics.steps == 2 * steps and batches == [16] * (2 * steps)
    assert metrics.train_loss == pytest.approx(sum(losses[steps:]) / steps, rel=1e-5)  # the last epoch's mean
    assert 0.0 <= metrics.train_accuracy <= 1.0 and metrics.train_accuracy * 16 * steps == pytest.approx(
        round(metrics.train_accuracy * 16 * steps))
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with torch.no_grad():  # a notebook's: it left nothing to train; and the seed reset the caller's stream
        train_classifier(bundle, "smallcnn", epochs=1, batch_size=16, device="cpu")
    torch.testing.assert_close(torch.rand(3), expected)
    with pytest.raises(CaexError, match=r"^data: expected a DataBundle, got ImageSet"):  # was an AttributeError
        train_classifier(bundle.train, "smallcnn")
    monkeypatch.setattr(training.F, "cross_entropy", lambda logits, labels: logits.sum() * float("nan"))
    with pytest.raises(TrainingError, match=r"training smallcnn: the loss became nan in epoch 1; try a smaller --lr"):
        train_classifier(bundle, "smallcnn", epochs=2, batch_size=16, device="cpu")


def test_a_classifier_prints_what_it_classifies_and_where_it_came_from(saved):
    folder, _ = saved
    classifier = load_classifier(folder, device="cpu")
    assert repr(classifier) == (f"TorchClassifier(3 classes (normal, cnv, dme), images [1, {SIZE}, {SIZE}], cpu, "
                                f"from {folder})")


def test_wrapping_a_module_leaves_it_on_its_device():
    """TorchClassifier's device defaulted to "cpu", so wrapping a GPU model moved the caller's model to the CPU
    (shown with the meta device, which no copy can leave)."""
    net = build_classifier_network("smallcnn", channels=1, num_classes=3, image_size=SIZE).to("meta")
    classifier = TorchClassifier(net, NAMES, SIZE, 1)
    assert classifier.device == torch.device("meta") and next(net.parameters()).device == torch.device("meta")


def test_a_classifier_near_chance_or_blind_to_a_class_is_warned_about():
    """A resnet18 at 0.56 on two classes was saved, and accepted as a CAE's critic, without a word; then the rule
    (accuracy against the commonest class's share) told a perfect classifier of a rare class that it had learned
    little, and said nothing of a class it never predicted."""
    import warnings

    from caex.classifier.train import _warn_if_near_chance

    names = ["normal", "rare", "other"]
    labels = torch.tensor([0] * 6 + [1] * 2 + [2] * 2)
    with pytest.warns(UserWarning, match=r"^resnet18: balanced test accuracy 0.333 \(the mean of the per-class "
                                         r"recalls\) is near chance \(0.333 for 3 classes\); it recognises no test "
                                         r"image of class\(es\) rare, other; it learned little in 4 epoch\(s\)"):
        _warn_if_near_chance("resnet18", torch.zeros(10, dtype=torch.long), labels, names, 4)  # accuracy 0.6
    with pytest.warns(UserWarning, match=r"^resnet18: balanced test accuracy 0.500 .* \(0.500 for 2 classes\); it "
                                         r"recognises no test image of class\(es\) rare; it learned little"):
        # the class was left unnamed
        _warn_if_near_chance("resnet18", torch.zeros(8, dtype=torch.long), labels[:8].clamp(max=1), names[:2], 4)
    blind = labels.clone()
    blind[6:8] = 0  # never "rare": accuracy 0.8, balanced 0.667
    with pytest.warns(UserWarning, match=r"^resnet18: recognises no test image of class\(es\) rare \(recall 0, "
                                         r"which the overall accuracy hides\)"):
        _warn_if_near_chance("resnet18", blind, labels, names, 4)
    rare = torch.tensor([0] * 300 + [1] * 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_if_near_chance("resnet18", rare, rare, names[:2], 4)  # perfect under 98% imbalance: no warning
        _warn_if_near_chance("resnet18", labels, labels, names, 4)
        _warn_if_near_chance("resnet18", labels[:0], labels[:0], names, 4)  # no test images: nothing to compare
        _warn_if_near_chance("resnet18", labels[:6], labels[:6], names, 4)  # one class tested: "1.000 is near chance"
    with pytest.warns(UserWarning, match=r"^resnet18: recognises no test image of class\(es\) normal \(recall 0"):
        _warn_if_near_chance("resnet18", labels[:6] + 1, labels[:6], names, 4)  # one class, never right: still said


def test_random_shift_moves_each_image_by_at_most_max_shift():
    images = torch.zeros(8, 1, 16, 16)
    images[:, :, 8, 8] = 1.0
    shifted = random_shift(images, 2, torch.Generator().manual_seed(0))
    peaks = shifted.flatten(1).argmax(dim=1)
    rows, cols = peaks // 16, peaks % 16
    assert shifted.shape == images.shape and shifted.sum().item() == 8.0
    assert ((rows - 8).abs() <= 2).all() and ((cols - 8).abs() <= 2).all()
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 1  # offsets differ per image


def test_channel_stats_known_values_and_a_floor_for_a_constant_channel():
    """The wrapper normalises by the (unbiased, like torch.std) standard deviation, not the variance."""
    images = torch.stack([torch.tensor([[0.0, 1.0, 2.0, 3.0]]), torch.full((1, 4), 0.5)])[None]  # [1, 2, 1, 4]
    mean, std = channel_stats(images)
    assert mean == pytest.approx([1.5, 0.5])
    assert std == pytest.approx([(5 / 3) ** 0.5, 1e-3])  # a constant channel must not divide by zero


# --------------------------------------------------------------------------- bundles and loaders


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, ClassifierNet]:
    folder = tmp_path_factory.mktemp("bundle") / "clf"
    net = _seeded_net("smallcnn", mean=[0.4], std=[0.3])
    save_bundle(net, folder, class_names=NAMES, image_size=SIZE, test_accuracy=0.5, data_spec="random", onnx=True)
    return folder, net


def test_a_bundle_that_fails_to_replace_another_leaves_the_old_one_whole(saved, tmp_path, monkeypatch):
    """A full disk while --force replaced a bundle left new weights under the old json and TorchScript, which
    later commands used without a word."""
    import errno

    import caex.classifier.bundle as bundle

    folder = tmp_path / "clf"
    shutil.copytree(saved[0], folder)
    before = {path.name: path.read_bytes() for path in folder.iterdir()}

    def full(net):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bundle, "torchscript_bytes", full)
    with pytest.raises(OSError, match="No space left"):
        save_bundle(_seeded_net("smallcnn", mean=[0.1], std=[0.9]), folder, class_names=NAMES, image_size=SIZE)
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


def test_train_classifier_holds_its_output_folder(tmp_path, capsys):
    """Two runs into one folder both wrote 'bundle written', one bundle mixing the other's weights and json."""
    from caex.cli.main import main
    from caex.utils.io import folder_lock

    with folder_lock(tmp_path / "clf", "caex train-classifier"):
        code = main(["train-classifier", "synthetic:classes=2,per_class=4,size=32", "--arch", "smallcnn",
                     "--out", str(tmp_path / "clf")])
    assert code == 2 and "clf: in use by caex train-classifier (pid" in capsys.readouterr().err


def test_a_bundle_saved_without_onnx_over_one_with_it_drops_the_old_export(saved, tmp_path):
    """A retrain into the same folder left the old classifier.onnx (other weights, perhaps other classes)."""
    folder = tmp_path / "clf"
    shutil.copytree(saved[0], folder)
    save_bundle(_seeded_net("smallcnn"), folder, class_names=NAMES, image_size=SIZE, data_spec="random", data_seed=3)
    assert not (folder / "classifier.onnx").exists()
    assert ClassifierInfo.read(folder / "classifier.json").data_seed == 3


def test_bundle_writes_all_files_and_metadata(saved):
    folder, _ = saved
    assert {p.name for p in folder.iterdir()} == {"classifier.safetensors", "classifier.json",
                                                  "classifier.torchscript.pt", "classifier.onnx"}
    info = ClassifierInfo.read(folder / "classifier.json")
    assert (info.arch, info.class_names, info.image_size, info.channels) == ("smallcnn", NAMES, SIZE, 1)
    assert info.mean == pytest.approx([0.4]) and info.std == pytest.approx([0.3])
    assert info.test_accuracy == 0.5 and info.data_spec == "random" and info.caex_version


def test_bundle_files_follow_the_umask_like_any_other_file(tmp_path):
    """Atomic writes went through mkstemp, which makes files private (0600): colleagues could not open a bundle."""
    import os

    previous = os.umask(0o022)
    try:
        save_bundle(_seeded_net(), tmp_path / "clf", class_names=NAMES, image_size=SIZE)
    finally:
        os.umask(previous)
    assert {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "clf").iterdir()} == {oct(0o644)}


def test_a_write_leaves_the_umask_alone_while_it_runs(tmp_path, monkeypatch):
    """Reading the umask to widen mkstemp's 0600 meant setting it, so another thread's file made in that moment got
    0o022 instead of the caller's mask; the kernel applies it now, and no thread sees it change."""
    import os

    from caex.utils.io import atomic_write_bytes

    previous = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", lambda mask: pytest.fail(f"umask set to {mask:o} during a write"))
        atomic_write_bytes(tmp_path / "results.json", b"{}")
    finally:
        monkeypatch.undo()
        os.umask(previous)
    assert oct((tmp_path / "results.json").stat().st_mode & 0o777) == oct(0o640)
    assert [path.name for path in tmp_path.iterdir()] == ["results.json"]


def test_every_backend_gives_the_same_probabilities(saved, tmp_path):
    folder, net = saved
    images = _images(7)
    with torch.no_grad():
        expected = torch.softmax(net(images), dim=1)
    save_file(net.state_dict(), tmp_path / "weights.safetensors")
    loaded = {
        "bundle": load_classifier(folder, device="cpu", batch_size=3),
        "torchscript": load_classifier(folder / "classifier.torchscript.pt", device="cpu"),
        "onnx": load_classifier(folder / "classifier.onnx", device="cpu"),
        "state dict": load_classifier(tmp_path / "weights.safetensors", arch="smallcnn", class_names=NAMES),
    }
    for name, classifier in loaded.items():
        torch.testing.assert_close(classifier.predict_proba(images), expected, atol=1e-4, rtol=0, msg=name)
        assert classifier.class_names == NAMES, name
        assert torch.equal(classifier.predict(images), expected.argmax(dim=1)), name
    assert isinstance(loaded["onnx"], OnnxClassifier)
    assert not loaded["onnx"].has_gradients and loaded["onnx"].module is None
    assert loaded["onnx"].features(images) is None and loaded["onnx"].image_size == SIZE
    # a black box is known by its file's content, wherever it lies (explain --skip-done compares it)
    shutil.copy(folder / "classifier.onnx", tmp_path / "moved.onnx")
    moved = load_classifier(tmp_path / "moved.onnx", device="cpu", class_names=NAMES, outputs="logits")  # as json
    assert len(classifier_digest(loaded["onnx"])) == 16 and classifier_digest(moved) == classifier_digest(
        loaded["onnx"]) != classifier_digest(load_classifier(tmp_path / "moved.onnx", class_names=NAMES,
                                                             outputs="probabilities"))
    for name in ("bundle", "torchscript"):
        assert loaded[name].has_gradients and loaded[name].module is not None
        torch.testing.assert_close(loaded[name].features(images), net.features(images).detach(), atol=1e-5, rtol=0)
    assert loaded["bundle"].target_layer is loaded["bundle"].module.backbone.stages


def test_torchvision_style_state_dict_loads_with_arch(tmp_path):
    net = _seeded_net("resnet18", channels=3, num_classes=4)
    bare = {**net.backbone.state_dict(),
            **{f"fc.{key}": value for key, value in net.head.state_dict().items()}}
    torch.save({"state_dict": bare}, tmp_path / "resnet.pth")
    classifier = load_classifier(tmp_path / "resnet.pth", arch="resnet18", image_size=SIZE, device="cpu")
    images = _images(3, 3)
    torch.testing.assert_close(classifier.predict_proba(images), torch.softmax(net(images), 1).detach(), atol=1e-4,
                               rtol=0)
    assert classifier.class_names == ["0", "1", "2", "3"] and classifier.channels == 3


def test_a_classifier_json_beside_a_state_dict_supplies_arch_and_normalisation(tmp_path):
    """A network trained outside caex on ImageNet-normalised images: the json's mean/std were ignored (every
    prediction of such a model was wrong) and a ``.pth`` beside a json naming the arch was read as TorchScript."""
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    net = _seeded_net("resnet18", channels=3, num_classes=3, mean=mean, std=std)
    bare = {**{f"module.{key}": value for key, value in net.backbone.state_dict().items()},
            **{f"module.fc.{key}": value for key, value in net.head.state_dict().items()}}
    torch.save({"model": bare}, tmp_path / "resnet.pth")
    info = {"arch": "resnet18", "class_names": NAMES, "image_size": SIZE, "channels": 3, "mean": mean, "std": std,
            "small_stem": True}
    (tmp_path / "classifier.json").write_text(json.dumps(info))
    classifier = load_classifier(tmp_path / "resnet.pth", device="cpu")
    images = _images(4, 3)
    torch.testing.assert_close(classifier.predict_proba(images), torch.softmax(net(images), 1).detach(), atol=1e-4,
                               rtol=0)
    (tmp_path / "classifier.json").write_text(json.dumps({**info, "mean": [0.5], "std": [0.25]}))
    with pytest.raises(ClassifierError, match="take 3-channel images but 1 mean values") as exc_info:
        load_classifier(tmp_path / "resnet.pth")
    _one_line(exc_info)


def test_a_whole_pickled_model_is_refused_without_unpickling_it(tmp_path):
    """torch.save(model) needs arbitrary unpickling; the message was weights_only's advice to load it anyway."""
    torch.save(_seeded_net(), tmp_path / "whole.pth")
    with pytest.raises(ClassifierError, match=r"pickled Python objects.*save model.state_dict\(\)") as exc_info:
        load_classifier(tmp_path / "whole.pth", arch="smallcnn")
    assert "trust" not in _one_line(exc_info)


def test_a_torchscript_file_given_an_arch_is_named_as_such(saved):
    """torch.load's answer advised weights_only=False, which caex never does, and a warning came with it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ClassifierError, match="a TorchScript file, not a state dict; leave out arch=") as exc_info:
            load_classifier(saved[0] / "classifier.torchscript.pt", arch="smallcnn")
    assert "weights_only" not in _one_line(exc_info)


def test_an_onnx_file_given_an_arch_is_refused(saved):
    """The architecture of an ONNX model is in the file; an --arch given with it was silently ignored."""
    with pytest.raises(ClassifierError, match="an ONNX model, not a state dict; leave out arch=") as exc_info:
        load_classifier(saved[0] / "classifier.onnx", arch="smallcnn")
    _one_line(exc_info)


def test_a_torchscript_failure_names_the_error_not_the_interpreter(saved, tmp_path):
    """TorchScript's message starts with its own traceback, so its first line never said what was wrong."""
    lone = tmp_path / "model.pt"
    lone.write_bytes((saved[0] / "classifier.torchscript.pt").read_bytes())
    with pytest.raises(ClassifierError, match="does not take 3x32x32 images .*channels") as exc_info:
        load_classifier(lone, image_size=SIZE, channels=3)
    assert "TorchScript interpreter" not in _one_line(exc_info)


def test_torchscript_without_metadata_is_probed_for_its_class_count(saved, tmp_path):
    folder, _ = saved
    lone = tmp_path / "model.pt"
    lone.write_bytes((folder / "classifier.torchscript.pt").read_bytes())
    with pytest.raises(ClassifierError, match="cannot tell the input shape.*image_size="):
        load_classifier(lone)
    classifier = load_classifier(lone, image_size=SIZE, channels=1)
    assert classifier.class_names == ["0", "1", "2"]
    # probe_shape stands in for the missing json only: the arguments win over it, a json beside the file too
    probed = load_classifier(lone, probe_shape=(SIZE, 1))
    assert (probed.image_size, probed.channels, probed.num_classes) == (SIZE, 1, 3)
    assert load_classifier(lone, image_size=SIZE, channels=1, probe_shape=(SIZE + 8, 3)).channels == 1
    described = load_classifier(folder / "classifier.torchscript.pt", probe_shape=(SIZE + 8, 3))
    assert (described.image_size, described.channels) == (SIZE, 1)


# --------------------------------------------------------------------------- errors


def _one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name, content, kwargs, expected", [
    ("missing.pt", None, {}, "no such file"),
    ("garbage.pt", b"not a model", {}, "not a readable TorchScript file"),
    ("garbage.pth", b"not a model", {"arch": "resnet18"}, "not a readable weights file"),
    ("garbage.safetensors", b"\x00" * 64, {"arch": "smallcnn"}, "not a readable weights file"),
    ("garbage.onnx", b"not a model", {}, "not a readable ONNX model"),
])
def test_unreadable_files_raise_one_line(tmp_path, name, content, kwargs, expected):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ClassifierError, match=expected) as exc_info:
        load_classifier(path, **kwargs)
    assert name in _one_line(exc_info)


@pytest.mark.parametrize("weights_arch, arch, expected", [
    ("smallcnn", "resnet18", "do not match architecture 'resnet18'.*'backbone.conv1.weight'"),
    ("resnet18", "resnet50", "do not match architecture 'resnet50'.*key 'backbone"),
    ("resnet18", "vgg11", "unknown architecture 'vgg11'"),
])
def test_weights_of_another_architecture_are_refused(tmp_path, weights_arch, arch, expected):
    path = tmp_path / "weights.safetensors"
    save_file(_seeded_net(weights_arch).state_dict(), path)
    with pytest.raises(ClassifierError, match=expected) as exc_info:
        load_classifier(path, arch=arch)
    _one_line(exc_info)


def test_bundle_problems_are_named(saved, tmp_path):
    folder, _ = saved
    with pytest.raises(ClassifierError, match="not a classifier bundle"):
        load_classifier(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "classifier.json").write_text("{not json")
    with pytest.raises(ClassifierError, match="not a readable classifier.json"):
        load_classifier(broken)
    (broken / "classifier.json").write_text('{"arch": "smallcnn"}')
    with pytest.raises(ClassifierError, match="lacks class_names"):
        load_classifier(broken)
    info = json.loads((folder / "classifier.json").read_text())
    assert info["version"] == 1  # a newer caex's bundle, whose fields may mean more, is refused, not misread
    shutil.copy(folder / "classifier.safetensors", broken / "classifier.safetensors")
    for edit, message in (({"image_size": "big"}, "a wrong kind of value for image_size"),
                          ({"class_names": "abc", "channels": 1.5}, "wrong kind of value for channels, class_names"),
                          ({"arch": "vgg"}, "unknown arch 'vgg'; choose one of"),
                          ({"version": 2}, "written by a newer caex (format version 2, this caex reads 1); upgrade")):
        (broken / "classifier.json").write_text(json.dumps({**info, **edit}))
        with pytest.raises(ClassifierError, match=f"{broken / 'classifier.json'}.*{re.escape(message)}"):
            load_classifier(broken)
    with pytest.raises(ClassifierError, match="the model has 3 outputs but 5 num_classes"):
        load_classifier(folder, num_classes=5)


def test_an_onnx_models_digest_covers_weights_in_an_external_data_file(saved, tmp_path):
    """torch's exporter writes the weights to <name>.onnx.data by default: changing them left the digest, and so
    explain --skip-done, unchanged."""
    import onnx

    model = onnx.load(str(saved[0] / "classifier.onnx"))
    onnx.save_model(model, str(tmp_path / "a.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="a.onnx.data", size_threshold=0)
    before = classifier_digest(load_classifier(tmp_path / "a.onnx", class_names=NAMES))
    data = bytearray((tmp_path / "a.onnx.data").read_bytes())
    data[-1] ^= 1  # one bit of one weight
    (tmp_path / "a.onnx.data").write_bytes(bytes(data))
    assert len(before) == 16 and classifier_digest(load_classifier(tmp_path / "a.onnx", class_names=NAMES)) != before


def test_onnx_without_onnxruntime_names_the_extra(saved, monkeypatch):
    folder, _ = saved
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(ClassifierError, match=r"caex\[onnx\]"):
        load_classifier(folder / "classifier.onnx")


@pytest.mark.parametrize("num_classes, channels, size, expected", [
    (4, 1, SIZE, "has 3 classes but data 'random' has 4"),
    (3, 3, SIZE, "takes 1-channel images.*--channels 1"),
    (3, 1, 48, "takes 32px images.*--size 32"),
])
def test_check_compatible_names_the_mismatch(saved, num_classes, channels, size, expected):
    classifier = load_classifier(saved[0], device="cpu")
    with pytest.raises(ClassifierError, match=expected) as exc_info:
        check_compatible(classifier, _bundle(num_classes, channels, size))
    _one_line(exc_info)
    check_compatible(classifier, _bundle(3, 1, SIZE))


def test_check_compatible_uses_shapes_read_off_weights_or_a_probe(saved, tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file(_seeded_net("smallcnn", channels=3).state_dict(), path)
    classifier = load_classifier(path, arch="smallcnn")  # no metadata: channels come from the first conv
    assert classifier.channels == 3 and classifier.image_size is None
    with pytest.raises(ClassifierError, match="takes 3-channel images"):
        check_compatible(classifier, _bundle(3, 1, SIZE))
    lone = tmp_path / "model.pt"  # TorchScript without metadata: nothing known until it runs
    lone.write_bytes((saved[0] / "classifier.torchscript.pt").read_bytes())
    classifier = load_classifier(lone, num_classes=3)
    with pytest.raises(ClassifierError, match="cannot take data 'random'.*3, 32, 32") as exc_info:
        check_compatible(classifier, _bundle(3, 3, SIZE))
    _one_line(exc_info)
    check_compatible(classifier, _bundle(3, 1, SIZE))


# --------------------------------------------------------------------------- training


@pytest.mark.slow
def test_smallcnn_learns_synthetic_data():
    data = load_dataset("synthetic:per_class=150,size=32")
    net, metrics = train_classifier(data, arch="smallcnn", epochs=8, seed=0, device="cpu")
    assert metrics.test_accuracy >= 0.95, metrics
    assert metrics.train_loss < 0.5 and metrics.steps == 8 * (len(data.train) // 32)
    classifier = TorchClassifier(net, data.class_names, data.image_size, data.channels)
    accuracy = (classifier.predict(data.test.images) == data.test.labels).float().mean().item()
    assert accuracy == pytest.approx(metrics.test_accuracy)


def test_an_onnx_models_fixed_axes_win_over_the_shape_it_is_offered(saved, tmp_path):
    """The CLI offers the data's shape to a model file with no classifier.json; a fixed ONNX axis is a fact, so a
    mismatch is named ("takes 32px images") instead of failing inside onnxruntime."""
    folder, _ = saved
    (tmp_path / "model.onnx").write_bytes((folder / "classifier.onnx").read_bytes())
    classifier = load_classifier(tmp_path / "model.onnx", image_size=48, channels=3)
    assert (classifier.image_size, classifier.channels) == (SIZE, 1)
    with pytest.raises(ClassifierError, match="takes 32px images but data 'random' is 48px"):
        check_compatible(classifier, _bundle(3, 1, 48))


def test_check_compatible_reports_an_onnx_runtime_failure_as_one_line(tmp_path):
    """onnxruntime's exceptions are no RuntimeError; a model with free spatial axes that only runs at one size
    used to escape check_compatible as an unexpected error."""
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIZE * SIZE, 3))
    path = _export_onnx(net, _images(2), tmp_path / "fixed.onnx", input_names=["images"],
                        dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}})
    classifier = load_classifier(path, num_classes=3, channels=1)
    assert classifier.image_size is None
    check_compatible(classifier, _bundle(3, 1, SIZE))
    with pytest.raises(ClassifierError, match=r"cannot take data 'random'.*\(1, 48, 48\)") as exc_info:
        check_compatible(classifier, _bundle(3, 1, 48))
    _one_line(exc_info)


def test_an_onnx_model_with_a_fixed_batch_axis_takes_any_number_of_images(saved, tmp_path):
    """torch.onnx.export without dynamic_axes fixes the batch to the example's; 5 images in batches of 2 failed
    inside onnxruntime on the last, smaller one (a multi-line "unexpected error" in every command)."""
    _, net = saved
    path = _export_onnx(net, _images(2), tmp_path / "batch2.onnx")
    classifier = load_classifier(path, class_names=NAMES)
    images = _images(5)
    torch.testing.assert_close(classifier.predict_proba(images), torch.softmax(net(images), 1).detach(), atol=1e-4,
                               rtol=0)


# --------------------------------------------------------------------------- ONNX and TorchScript metadata


def _constant_head(scores: list[float], last: torch.nn.Module) -> torch.nn.Sequential:
    """A network that ignores its image and returns ``last`` of fixed pre-activations: a known answer."""
    linear = torch.nn.Linear(SIZE * SIZE, len(scores))
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.tensor(scores))
    return torch.nn.Sequential(torch.nn.Flatten(), linear, last)


def _exports(saved, folder: Path) -> dict[str, Path]:
    """Copies of the bundle's ONNX and TorchScript exports in ``folder``, away from the bundle's json."""
    folder.mkdir(exist_ok=True)
    copies = {"onnx": folder / "model.onnx", "torchscript": folder / "model.pt"}
    shutil.copy(saved[0] / "classifier.onnx", copies["onnx"])
    shutil.copy(saved[0] / "classifier.torchscript.pt", copies["torchscript"])
    return copies


def test_sigmoid_scores_of_an_onnx_model_are_read_as_declared_and_warned_about_otherwise(tmp_path):
    """Per-class sigmoid scores were taken for logits and softmaxed again: 0.88 was reported as 0.50. They cannot
    be told from an unsure model's logits row by row, so they are declared, and a batch like them is warned about."""
    scores = torch.tensor([0.88, 0.30, 0.02])
    path = _export_onnx(_constant_head(torch.logit(scores).tolist(), torch.nn.Sigmoid()), _images(2),
                        tmp_path / "sigmoid.onnx", dynamic_axes={"input": {0: "batch"}}, input_names=["input"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        guessed = load_classifier(path, class_names=NAMES)
        guessed.predict_proba(_images(4))
        read_as_logits = guessed.predict_proba(_images(3))
    torch.testing.assert_close(read_as_logits, torch.softmax(scores, 0).expand(3, 3), atol=1e-5, rtol=0)
    assert len(caught) == 1 and str(caught[0].message).startswith(
        f"{path}: every output of a batch lies in [0, 1] without summing to 1, as per-class sigmoid scores do; caex "
        'reads them as logits (softmax); if they are sigmoid scores, put "outputs": "sigmoid" in the classifier.json')
    declared = load_classifier(path, class_names=NAMES, outputs="sigmoid")
    torch.testing.assert_close(declared.predict_proba(_images(4)), (scores / 1.2).expand(4, 3), atol=1e-5, rtol=0)
    (tmp_path / "classifier.json").write_text(json.dumps({"class_names": NAMES, "image_size": SIZE, "channels": 1,
                                                          "outputs": "sigmoid"}))
    torch.testing.assert_close(load_classifier(path).predict_proba(_images(1))[0], scores / 1.2, atol=1e-5, rtol=0)
    with pytest.raises(ClassifierError, match=r"outputs 'odds': choose one of logits, probabilities, sigmoid"):
        load_classifier(path, outputs="odds")


@pytest.mark.parametrize("last, expected", [
    (torch.nn.Softmax(dim=1), torch.softmax(torch.tensor([2.0, 0.5, -1.0]), 0)),  # probabilities: unchanged
    (torch.nn.Identity(), torch.softmax(torch.tensor([2.0, 0.5, -1.0]), 0)),  # logits: softmaxed
])
def test_onnx_probabilities_and_logits_give_the_softmax_without_a_warning(tmp_path, last, expected):
    path = _export_onnx(_constant_head([2.0, 0.5, -1.0], last), _images(2), tmp_path / "model.onnx")
    classifier = load_classifier(path, class_names=NAMES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(classifier.predict_proba(_images(2)), expected.expand(2, 3), atol=1e-5, rtol=0)


def test_a_torchscript_model_ending_in_softmax_or_sigmoid_is_read_as_an_onnx_one(saved, tmp_path):
    """A TorchScript model's outputs were always taken for logits: one ending in a softmax was softmaxed again
    (0.79 reported as 0.55), and sigmoid scores could not be declared as they can for ONNX."""
    logits = torch.tensor([2.0, 0.5, -1.0])
    scores = torch.sigmoid(logits)
    for last, declared, expected in ((torch.nn.Softmax(dim=1), None, torch.softmax(logits, 0)),
                                     (torch.nn.Identity(), None, torch.softmax(logits, 0)),
                                     (torch.nn.Sigmoid(), "sigmoid", scores / scores.sum())):
        path = tmp_path / f"{type(last).__name__}.pt"
        torch.jit.script(_constant_head(logits.tolist(), last)).save(str(path))
        classifier = load_classifier(path, class_names=NAMES, image_size=SIZE, channels=1, device="cpu",
                                     outputs=declared)
        torch.testing.assert_close(classifier.predict_proba(_images(2)), expected.expand(2, 3), atol=1e-5, rtol=0,
                                   msg=str(last))
    folder, _ = saved
    with pytest.raises(ClassifierError, match=r"classifier.safetensors: outputs='sigmoid' describes an exported "
                                              r"model file's outputs; a state dict for smallcnn returns logits"):
        load_classifier(folder, outputs="sigmoid")


def test_a_bundles_own_exports_are_read_as_the_logits_they_are(saved, tmp_path):
    """Read row by row, an unsure bundle's TorchScript logits [0.3, 0.7] passed for probabilities."""
    folder, _ = saved
    assert json.loads((folder / "classifier.json").read_text())["outputs"] == "logits"
    older = tmp_path / "older"  # a bundle saved before outputs were recorded: its arch says what it returns
    shutil.copytree(folder, older)
    info = json.loads((older / "classifier.json").read_text())
    del info["outputs"]
    (older / "classifier.json").write_text(json.dumps(info))
    for bundle in (folder, older):
        scripted = load_classifier(bundle / "classifier.torchscript.pt", device="cpu")
        assert scripted.logits_module is scripted.module, bundle  # read as logits: nothing in between
        assert load_classifier(bundle / "classifier.onnx", device="cpu")._read.kind == "logits", bundle


def test_a_json_of_only_names_and_shape_describes_an_onnx_or_torchscript_model(saved, tmp_path):
    """Naming the classes of an ONNX model took the PyTorch-only arch, mean, std and small_stem too."""
    folder, net = saved
    copies = _exports(saved, tmp_path / "exports")
    (tmp_path / "exports" / "classifier.json").write_text(json.dumps({"class_names": NAMES, "image_size": SIZE,
                                                                      "channels": 1}))
    images = _images(3)
    for name, path in copies.items():
        classifier = load_classifier(path, device="cpu")
        assert (classifier.class_names, classifier.image_size, classifier.channels) == (NAMES, SIZE, 1), name
        torch.testing.assert_close(classifier.predict_proba(images), torch.softmax(net(images), 1).detach(),
                                   atol=1e-4, rtol=0, msg=name)
    weights = tmp_path / "exports" / "weights.safetensors"
    shutil.copy(folder / "classifier.safetensors", weights)
    with pytest.raises(ClassifierError) as exc_info:
        load_classifier(weights)
    assert _one_line(exc_info) == (f"{weights}: a bare weights file needs an architecture (arch=, --arch) "
                                   f"(none in {tmp_path / 'exports' / 'classifier.json'})")
    assert load_classifier(weights, arch="smallcnn").class_names == NAMES


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_mean_and_std_an_export_does_not_hold_are_refused(saved, tmp_path, kind):
    """The json's mean/std were applied to state dicts only: beside an export they were silently dropped."""
    path = _exports(saved, tmp_path)[kind]
    described = tmp_path / "classifier.json"
    minimal = {"class_names": NAMES, "image_size": SIZE, "channels": 1}
    described.write_text(json.dumps({**minimal, "mean": [0.5], "std": [0.25]}))
    with pytest.raises(ClassifierError) as exc_info:
        load_classifier(path)
    assert _one_line(exc_info) == (f"{described}: mean [0.5] would not be applied to {path.name}, which gets images "
                                   "in [0, 1]; bake the normalisation into the exported graph and drop mean and std "
                                   "from the json")
    described.write_text(json.dumps({**minimal, "mean": [0.4], "std": [0.25]}))  # the export's mean, not its std
    with pytest.raises(ClassifierError, match=r"std \[0\.25\] would not be applied"):
        load_classifier(path)
    for held in ({"mean": [0.4], "std": [0.3]}, {"mean": [0.0], "std": [1.0]}):  # the export's own, the identity
        described.write_text(json.dumps({**minimal, **held}))
        assert load_classifier(path).class_names == NAMES
    with pytest.raises(ClassifierError) as exc_info:
        load_classifier(path, std=[0.3])
    assert _one_line(exc_info) == (f"{path}: mean=/std= are applied only to state dicts; an ONNX or TorchScript "
                                   "model gets images in [0, 1], so bake the normalisation into the exported graph")


@pytest.mark.parametrize("name, claimed", [("image_size", 48), ("channels", 3)])
def test_a_json_contradicting_the_onnx_input_shape_is_refused(saved, tmp_path, name, claimed):
    """The graph's fixed axes silently won over the json's image_size/channels."""
    path = _exports(saved, tmp_path)["onnx"]
    described = tmp_path / "classifier.json"
    described.write_text(json.dumps({"class_names": NAMES, "image_size": SIZE, "channels": 1, name: claimed}))
    with pytest.raises(ClassifierError) as exc_info:
        load_classifier(path)
    fixed = {"image_size": SIZE, "channels": 1}[name]
    assert _one_line(exc_info) == (f"{described}: says {name} {claimed} but model.onnx's input shape "
                                   f"['batch', 1, {SIZE}, {SIZE}] fixes it at {fixed}")


@pytest.mark.parametrize("shape, expected", [
    ((1, SIZE, SIZE, 1), "[1, 32, 32, 1] (channels last?); caex needs NCHW input [batch, channels, height, width] "
                         "with 1 or 3 channels"),
    ((1, 1, SIZE, 48), "[1, 1, 32, 48]; caex needs square images (height = width)"),
])
def test_an_onnx_input_caex_cannot_feed_is_named_with_its_shape(tmp_path, shape, expected):
    """A channels-last model was told it "takes 32-channel images" and to "use --channels 32", which no
    option accepts."""
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(shape[1] * shape[2] * shape[3], 3))
    path = _export_onnx(net, torch.zeros(shape), tmp_path / "model.onnx")
    with pytest.raises(ClassifierError) as exc_info:
        load_classifier(path, class_names=NAMES)
    assert _one_line(exc_info) == f"{path}: the ONNX input has shape {expected}"


def test_a_single_image_or_an_array_is_a_classifier_error():
    """Both escaped as ValueError / AttributeError ('ndarray' has no attribute 'to'), not as caex errors."""
    classifier = TorchClassifier(_seeded_net(), NAMES, SIZE, 1)
    images = _images(2)
    with pytest.raises(ClassifierError, match=r"got Tensor of shape \(1, 32, 32\) \(one image: images\[None\]\)"):
        classifier.predict(images[0])
    with pytest.raises(ClassifierError, match=r"got ndarray of shape \(2, 1, 32, 32\)"):
        classifier.predict_proba(images.numpy())
    assert classifier.predict(images[:1]).shape == (1,)


def test_an_onnx_images_probabilities_do_not_depend_on_its_batch(tmp_path):
    """Outputs were read as scores or logits per batch: an image's 0.82 became 0.67 beside another image. Logits
    that happen to lie in [0, 1] stay logits."""
    linear = torch.nn.Linear(SIZE * SIZE, 2)
    with torch.no_grad():  # a black image gives logits [0.2, 0.9] (all in [0, 1]), a white one [3, -1]
        linear.bias.copy_(torch.tensor([0.2, 0.9]))
        linear.weight.copy_((torch.tensor([[3.0], [-1.0]]) - linear.bias[:, None]).expand(2, SIZE * SIZE)
                            / (SIZE * SIZE))
    path = _export_onnx(torch.nn.Sequential(torch.nn.Flatten(), linear), _images(2), tmp_path / "m.onnx",
                        dynamic_axes={"input": {0: "batch"}}, input_names=["input"])
    classifier = load_classifier(path, class_names=["a", "b"])
    black, white = torch.zeros(1, 1, SIZE, SIZE), torch.ones(1, 1, SIZE, SIZE)
    alone = classifier.predict_proba(black)
    together = classifier.predict_proba(torch.cat([black, white]))
    torch.testing.assert_close(alone[0], torch.softmax(torch.tensor([0.2, 0.9]), 0), atol=1e-5, rtol=0)
    torch.testing.assert_close(together, torch.softmax(torch.tensor([[0.2, 0.9], [3.0, -1.0]]), 1), atol=1e-5,
                               rtol=0)


@pytest.mark.parametrize(("names", "message"), [
    ([0, 1, 2], "class name 0 in class_names is not a non-empty string"),  # was "unexpected error: TypeError"
    (["a", "b", "a"], "class name 'a' is given twice in class_names"),  # one class's files overwrote another's
    (["../../x", "b", "c"], "class name '../../x' in class_names contains '/'"),  # wrote outside --out
    (["a", "new\nline", "c"], r"class name 'new\nline' in class_names contains '\n'"),
])
def test_classifier_json_class_names_that_cannot_name_files_are_refused(saved, tmp_path, names, message):
    folder, _ = saved
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    info = json.loads((broken / "classifier.json").read_text())
    (broken / "classifier.json").write_text(json.dumps({**info, "class_names": names}))
    with pytest.raises(ClassifierError, match=f"^{re.escape(str(broken / 'classifier.json'))}: "
                                              f"{re.escape(message)}"):
        load_classifier(broken)


@pytest.mark.parametrize("legacy", [False, True])
def test_pickled_objects_in_weights_are_refused_without_torchs_unsafe_advice(tmp_path, legacy):
    """A legacy (non-zip) torch.save file passed on torch's advice to set weights_only=False."""
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": Path("anything")}, path, _use_new_zipfile_serialization=not legacy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ClassifierError) as caught:
            load_classifier(path, arch="smallcnn", device="cpu")
    message = str(caught.value)
    assert "which caex never unpickles" in message and "weights_only" not in message and "\n" not in message


def test_a_state_dict_tells_its_stem_by_its_first_kernel_and_settings_come_back_as_ints() -> None:
    """The small stem is read off the first convolution's kernel (3x3), for every architecture alike."""
    import numpy as np

    from caex.classifier.arch import infer_network_shape, to_wrapper_state_dict
    from caex.classifier.train import resolve_settings
    from caex.errors import TrainingError

    for small_stem in (True, False):
        net = build_classifier_network("resnet18", channels=3, num_classes=4, small_stem=small_stem)
        state = to_wrapper_state_dict({key.removeprefix("backbone."): value for key, value in
                                       net.state_dict().items() if key.startswith("backbone.")} |
                                      {"fc." + key[5:]: value for key, value in net.state_dict().items()
                                       if key.startswith("head.")})
        assert infer_network_shape("resnet18", state, "x") == (3, 4, small_stem)
    epochs, lr = resolve_settings("smallcnn", np.int64(2), 32, None)
    assert type(epochs) is int and epochs == 2 and lr == 4e-3
    for lr in (0.0, "1e-3"):  # the string was a raw TypeError in a comparison
        with pytest.raises(TrainingError, match=rf"^training smallcnn: lr={lr!r}: must be a positive finite number$"):
            resolve_settings("smallcnn", None, 32, lr)

