"""Every baseline saliency method: the Attributor contract, determinism, and black-box handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from caex.classifier import Classifier, TorchClassifier
from caex.data.types import DataBundle, ImageSet
from caex.errors import CaexError
from caex.evaluation import evaluate
from caex.explain.attribution import (
    BASELINES,
    AttributionError,
    FullGradAttributor,
    GradientsUnavailableError,
    last_conv_layer,
    Attributor,
    make_attributor,
    normalise_maps,
    register_attributor,
    superpixel_means,
)

SIZE = 16
FAST = {"lime": {"n_samples": 100}}  # LIME's 1,000 samples are the default; the contract needs fewer
#: Every registered method that needs the classifier's gradients (a new one is tested with them unlisted).
GRADIENT_METHODS = sorted(name for name, cls in BASELINES.items() if cls.needs_gradients)


def tiny_net(channels: int) -> nn.Module:
    """Logits 2 lower than initialised (softmax ignores it): near integrated gradients' black baseline they lay
    in [0, 1], read as sigmoid scores and warned about."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 6, 3, padding=1, stride=2), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()
    with torch.no_grad():
        net[-1].bias -= 2
    return net


def tiny_classifier(channels: int) -> TorchClassifier:
    return TorchClassifier(tiny_net(channels), ["a", "b", "c"], SIZE, channels)


class BlackBox(Classifier):
    """Probabilities only, like an ONNX model: no module, no gradients."""

    def __init__(self, channels: int):
        super().__init__(["a", "b", "c"], SIZE, channels)
        self._net = tiny_net(channels)

    def _logits_batch(self, images):
        return self._net(images)


def inputs(channels: int, count: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(count, channels, SIZE, SIZE, generator=torch.Generator().manual_seed(channels))
    return images, torch.arange(count) % 3


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_baseline_gives_normalised_maps_of_the_input_size(name, channels):
    images, target = inputs(channels)
    attributor = make_attributor(name, tiny_classifier(channels), batch_size=2, **FAST.get(name, {}))
    attributions = attributor.attribute(images, target)
    assert attributions.shape[0] == 3 and attributions.shape[1] in (1, channels)
    assert attributions.shape[-2:] == (SIZE, SIZE)
    maps = attributor.saliency(images, target)
    assert maps.shape == (3, SIZE, SIZE) and maps.dtype == torch.float32
    assert float(maps.min()) == 0.0 and float(maps.max()) == 1.0  # informative, scaled per image


@pytest.mark.parametrize("name", ["random", "lime"])
def test_seeded_methods_are_reproducible(name):
    images, target = inputs(1)
    attributor = make_attributor(name, tiny_classifier(1), seed=4, **FAST.get(name, {}))
    first = attributor.saliency(images, target)
    again = make_attributor(name, tiny_classifier(1), seed=4, **FAST.get(name, {})).saliency(images, target)
    other = make_attributor(name, tiny_classifier(1), seed=5, **FAST.get(name, {})).saliency(images, target)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(first[0], first[1])  # each image its own draws, not one noise repeated


@pytest.mark.parametrize("name", ["random", "lime"])
def test_a_seeded_map_of_an_image_does_not_depend_on_the_other_images_or_earlier_calls(name):
    """One stream per attributor, advanced image after image, gave an image another map alone than beside
    others, in reversed order or in a later call (LIME's maps moved by up to 0.35, the random map's by 0.99)."""
    images, target = inputs(1, count=4)
    attributor = make_attributor(name, tiny_classifier(1), seed=4, **FAST.get(name, {}))
    together = attributor.saliency(images, target)
    alone = torch.cat([attributor.saliency(images[i:i + 1], target[i:i + 1]) for i in range(4)])
    reversed_order = attributor.saliency(images.flip(0), target.flip(0)).flip(0)
    again = attributor.saliency(images, target)
    assert torch.equal(alone, together) and torch.equal(reversed_order, together) and torch.equal(again, together)


def test_occlusion_finds_the_only_region_the_model_reads():
    class CornerReader(nn.Module):
        def forward(self, images):
            score = images[:, :, :4, :4].mean(dim=(1, 2, 3))
            return torch.stack([-score, score], dim=1) * 10

    classifier = TorchClassifier(CornerReader(), ["off", "on"], SIZE, 1)
    maps = make_attributor("occlusion", classifier).saliency(torch.ones(1, 1, SIZE, SIZE), torch.tensor([1]))
    assert maps[0, :4, :4].mean() > 0.5 and float(maps[0, 8:, 8:].max()) == 0.0


def test_fullgrad_includes_conv_and_folded_batchnorm_biases():
    attributor = FullGradAttributor(tiny_classifier(1))
    kinds = sorted(type(layer).__name__ for layer, _ in attributor._biased)
    assert kinds == ["BatchNorm2d", "Conv2d", "Conv2d"]
    # On a black image the input term (gradient x input) is zero: all that is left is the bias terms.
    assert float(attributor.attribute(torch.zeros(2, 1, SIZE, SIZE), 0).abs().sum()) > 0


class ExpOfLinear(nn.Module):
    """Class 0's logit is exp(w . x): integrated gradients from a black baseline have the closed form
    w_i x_i (e^s - 1) / s with s = w . x, and a coarse integral misses it (2 steps: about 20% at s = 4)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.linspace(-1.0, 1.0, SIZE * SIZE).view(1, 1, SIZE, SIZE) * 0.1

    def forward(self, images):
        return torch.stack([torch.exp((images * self.weight).sum(dim=(1, 2, 3))), torch.zeros(len(images))], dim=1)


def test_integrated_gradients_has_the_closed_form_answer_and_takes_magnitudes():
    model = ExpOfLinear()
    images = torch.zeros(2, 1, SIZE, SIZE)
    images[:, :, SIZE // 2:] = torch.tensor([1.0, 0.5]).view(2, 1, 1, 1)  # s = 3.7 and 1.9: the positive half
    s = (images * model.weight).sum(dim=(1, 2, 3)).view(2, 1, 1, 1)
    expected = model.weight * images * (torch.exp(s) - 1) / s
    attributor = make_attributor("integrated_gradients", TorchClassifier(model, ["exp", "zero"], SIZE, 1))
    torch.testing.assert_close(attributor.attribute(images, 0), expected, rtol=1e-3, atol=1e-6)
    images[:, :, :2] = 1.0  # now some pixels push against the class: the map keeps their magnitude
    attributions = attributor.attribute(images, 0)
    assert float(attributions.min()) < 0
    torch.testing.assert_close(attributor.saliency(images, 0), normalise_maps(attributions.abs()[:, 0]))


def test_gradcam_keeps_only_positive_evidence():
    from captum.attr import LayerGradCam

    classifier = tiny_classifier(1)
    images, target = inputs(1)
    signed = LayerGradCam(classifier.module, last_conv_layer(classifier.module)).attribute(images, target=target)
    assert float(signed.detach().min()) < 0  # this network has negative evidence to drop
    attributions = make_attributor("gradcam", classifier).attribute(images, target)
    assert float(attributions.min()) == 0.0 and float(attributions.max()) > 0


def test_occlusion_equals_a_brute_force_sliding_window():
    """2x2 black windows (1/8 of 16 px) moved 1 px at a time; each pixel gets the mean probability drop of the
    windows that cover it."""
    classifier, image = tiny_classifier(1), inputs(1)[0][:1]
    clean = float(classifier.predict_proba(image)[0, 1])
    drops, counts = torch.zeros(SIZE, SIZE), torch.zeros(SIZE, SIZE)
    for top in range(SIZE - 1):
        for left in range(SIZE - 1):
            covered = image.clone()
            covered[..., top:top + 2, left:left + 2] = 0.0
            drops[top:top + 2, left:left + 2] += clean - float(classifier.predict_proba(covered)[0, 1])
            counts[top:top + 2, left:left + 2] += 1
    attributions = make_attributor("occlusion", classifier).attribute(image, 1)
    torch.testing.assert_close(attributions[0, 0], drops / counts, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_gradient_methods_refuse_black_boxes(name):
    with pytest.raises(GradientsUnavailableError, match=f"^{name} needs gradients; BlackBox is a black box$"):
        make_attributor(name, BlackBox(1))


class CornerBlackBox(Classifier):
    """Probabilities only, read from the top-left 4x4 corner alone: the region a black-box method must find."""

    def __init__(self, reading):
        super().__init__(["off", "on"], SIZE, 3)
        self.reading = reading

    def _logits_batch(self, images):
        score = self.reading(images[:, :, :4, :4].flatten(1))
        return torch.stack([-score, score], dim=1) * 10


# Occlusion blanks a window, so a brightness reader shows it; LIME flattens a superpixel to its own mean
# colour (the reference lime's choice), which only a texture reader notices.
@pytest.mark.parametrize(("name", "reading"), [("occlusion", lambda corner: corner.mean(dim=1)),
                                               ("lime", lambda corner: corner.std(dim=1))])
def test_perturbation_methods_find_what_a_black_box_reads(name, reading):
    images, _ = inputs(3)
    maps = make_attributor(name, CornerBlackBox(reading), **FAST.get(name, {})).saliency(images, torch.ones(3).long())
    assert maps.shape == (3, SIZE, SIZE)
    corner, far = maps[:, :4, :4].mean(dim=(1, 2)), maps[:, 8:, 8:].mean(dim=(1, 2))
    assert bool((corner > 2 * far).all()) and bool((corner > 0.3).all())


def test_runner_reports_gradient_methods_as_skipped_on_black_boxes(tmp_path):
    images, labels = inputs(1, count=9)
    labels = BlackBox(1).predict(images)  # every image counts as correctly classified
    split = ImageSet(images, labels)
    data = DataBundle(train=split, test=split, class_names=["a", "b", "c"], spec="tiny")
    results = evaluate(None, BlackBox(1), data, methods=["gradcam", "random"], n_images=3, out_dir=tmp_path)
    assert results.row("gradcam").status == "skipped"
    assert results.row("gradcam").reason == "skipped: gradcam needs gradients; BlackBox is a black box"
    assert results.row("random").status == "ok"
    assert "| gradcam | skipped: gradcam needs gradients; BlackBox is a black box |" in (
        tmp_path / "results.md").read_text()


def test_unknown_baseline_and_bad_shapes_are_one_line_errors():
    with pytest.raises(AttributionError, match="unknown saliency method 'smoothgrad'"):
        make_attributor("smoothgrad", tiny_classifier(1))
    with pytest.raises(AttributionError, match=r"gradcam: expected a tensor batch \[B, 1, 16, 16\].*images\[None\]"):
        make_attributor("gradcam", tiny_classifier(1)).attribute(torch.rand(1, SIZE, SIZE), torch.tensor([0]))


def _with_nan(images: torch.Tensor) -> torch.Tensor:
    images = images.clone()
    images[0, 0, 3, 3] = float("nan")
    return images


@pytest.mark.parametrize("name", ["gradcam", "random", "lime"])
@pytest.mark.parametrize("spoil, message", [
    (lambda x: (x * 255).to(torch.uint8), r"float pixels in \[0, 1\], got torch.uint8 \(divide 8-bit"),
    (lambda x: x * 255, r"values span \[0.*, 25\d.*\]; expected the data range \[0, 1\]"),
    (_with_nan, "NaN or infinite pixels"),
    (lambda x: torch.rand(3, 1, 2 * SIZE, 2 * SIZE), r"expected \[B, 1, 16, 16\] images, got shape \(3, 1, 32, 32\)"),
    (lambda x: x.repeat(1, 3, 1, 1), r"expected \[B, 1, 16, 16\] images, got shape \(3, 3, 16, 16\)"),
    (lambda x: x[:0], r"no images to explain"),
])
def test_baselines_refuse_images_the_classifier_cannot_take(name, spoil, message):
    """Each of these gave a normal-looking [0, 1] map (or a deep torch error) before 2026-12-07."""
    images, target = inputs(1)
    bad = spoil(images)
    with pytest.raises(AttributionError, match=f"^{name}: .*{message}"):
        make_attributor(name, tiny_classifier(1), **FAST.get(name, {})).saliency(bad, target[:len(bad)])


def test_baseline_targets_may_be_class_names():
    images, target = inputs(1)
    attributor = make_attributor("gradcam", tiny_classifier(1))
    names = [["a", "b", "c"][t] for t in target.tolist()]
    torch.testing.assert_close(attributor.saliency(images, names), attributor.saliency(images, target))
    with pytest.raises(AttributionError, match=r"gradcam: target 'z' is not a class of this classifier \(a, b, c "
                                               r"or 0\.\.2\)"):
        attributor.saliency(images, "z")
    # a number in a string names a class as in the Explainer and the data ("2" is index 2 unless names are numbers)
    torch.testing.assert_close(attributor.saliency(images, [str(t) for t in target.tolist()]),
                               attributor.saliency(images, target))


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_gradient_methods_work_inside_a_callers_no_grad(name):
    images, target = inputs(1)
    expected = make_attributor(name, tiny_classifier(1)).saliency(images, target)
    with torch.no_grad():
        maps = make_attributor(name, tiny_classifier(1)).saliency(images, target)
    torch.testing.assert_close(maps, expected)


@pytest.mark.parametrize("name", ["gradcam", "occlusion", "random"])
def test_target_may_be_one_index_a_list_or_an_array(name):
    images, _ = inputs(1)
    expected = make_attributor(name, tiny_classifier(1)).saliency(images, torch.tensor([2, 2, 2]))
    for target in (2, torch.tensor(2), [2, 2, 2], np.array([2, 2, 2]), np.int64(2)):
        torch.testing.assert_close(make_attributor(name, tiny_classifier(1)).saliency(images, target), expected)
    for bad in ([0, 1], torch.tensor([0.0, 1.0, 2.0]), torch.zeros(3, 1, dtype=torch.long)):
        with pytest.raises(AttributionError, match=rf"^{name}: expected one class index per image \[3\], got"):
            make_attributor(name, tiny_classifier(1)).saliency(images, bad)


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_gradient_methods_work_inside_a_callers_inference_mode(name):
    """inference_mode, unlike no_grad, cannot be undone by enable_grad: the methods raised torch's RuntimeError."""
    images, target = inputs(1)
    attributor = make_attributor(name, tiny_classifier(1))  # a model built in inference mode has no autograd at all
    expected = attributor.saliency(images, target)
    with torch.inference_mode():
        maps = attributor.saliency(images, target)
    torch.testing.assert_close(maps, expected)


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("bad", [3, -1, [0, 1, 5]])
def test_a_target_outside_the_classes_is_named(name, bad):
    """Before: a deep IndexError, Captum silently reading -1 as the last class, or (random) no error at all."""
    images, _ = inputs(1)
    wrong = bad if isinstance(bad, int) else bad[-1]
    with pytest.raises(AttributionError, match=rf"{name}: target {wrong} is not a class index .*\(0\.\.2\)"):
        make_attributor(name, tiny_classifier(1), **FAST.get(name, {})).attribute(images, bad)


def test_numpy_inputs_are_named_not_an_attribute_error():
    images, target = inputs(1)
    with pytest.raises(AttributionError, match=r"gradcam: expected a tensor batch .* got ndarray of shape \(3, 1, 16"):
        make_attributor("gradcam", tiny_classifier(1)).attribute(images.numpy(), target)
    with pytest.raises(AttributionError, match=r"gradcam: expected a tensor batch \[B, 1, 16, 16\], got list$"):
        make_attributor("gradcam", tiny_classifier(1)).attribute(images.tolist(), target)


def test_lime_leaves_the_global_rng_alone():
    """Captum's surrogate fit drew a DataLoader seed from the global generator, shifting the caller's stream."""
    images, target = inputs(1, count=1)
    state = torch.random.get_rng_state()
    make_attributor("lime", tiny_classifier(1), n_samples=20).attribute(images, target)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_superpixel_means_replace_each_segment_by_its_mean():
    image = torch.tensor([[[1.0, 3.0], [5.0, 7.0]]])
    segments = torch.tensor([[0, 0], [1, 1]])
    assert superpixel_means(image, segments).tolist() == [[[2.0, 2.0], [6.0, 6.0]]]


# -- a researcher's own model ----------------------------------------------------------------


def test_gradient_methods_and_predictions_read_a_model_ending_in_softmax_as_log_probabilities() -> None:
    """predict_proba read such a model right, but the gradient methods (and the CAE's critic) got its raw
    probabilities; and TorchClassifier softmaxed them a second time (0.99997 reported as 0.731)."""
    net = tiny_net(1)
    images = torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    ending_in_softmax = TorchClassifier(torch.jit.script(nn.Sequential(net, nn.Softmax(dim=1))), ["a", "b", "c"],
                                        SIZE, 1)
    log_softmax = TorchClassifier(nn.Sequential(net, nn.LogSoftmax(dim=1)), ["a", "b", "c"], SIZE, 1,
                                  outputs="logits")
    torch.testing.assert_close(ending_in_softmax.predict_proba(images), torch.softmax(net(images), 1).detach())
    target = torch.tensor([0, 1, 2, 0])
    ours, theirs = (make_attributor("integrated_gradients", clf).attribute(images, target)
                    for clf in (ending_in_softmax, log_softmax))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_a_model_returning_a_dict_of_logits_works_and_a_tuple_is_named() -> None:
    class HuggingFaceStyle(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = tiny_net(1)

        def forward(self, images):
            return {"logits": self.net(images), "hidden": None}

    class Pair(HuggingFaceStyle):
        def forward(self, images):
            return self.net(images), None

    images = torch.rand(2, 1, SIZE, SIZE)
    model = HuggingFaceStyle()
    classifier = TorchClassifier(model, ["a", "b", "c"], SIZE, 1)
    torch.testing.assert_close(classifier.predict_proba(images), torch.softmax(model.net(images), 1).detach())
    assert make_attributor("gradcam", classifier).saliency(images, 0).shape == (2, SIZE, SIZE)
    with pytest.raises(CaexError, match=r"Pair: the model returned a tuple; caex needs a tensor of logits"):
        TorchClassifier(Pair(), ["a", "b", "c"], SIZE, 1).predict_proba(images)


def test_grad_cam_hooks_the_convolution_that_runs_last_not_the_one_registered_last() -> None:
    class StemRegisteredLast(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten(), nn.Linear(6, 3))
            self.stem = nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, images):
            return self.body(self.stem(images))

    model = StemRegisteredLast()
    attributor = make_attributor("gradcam", TorchClassifier(model, ["a", "b", "c"], SIZE, 1))
    assert attributor._method.layer is model.body[0]
    assert last_conv_layer(model) is model.stem  # without an example: registration order


def test_torchscript_skips_the_methods_that_hook_layers_by_type_saying_why() -> None:
    """FullGrad on a TorchScript model found no biases and reported |grad x input| as FullGrad."""
    scripted = TorchClassifier(torch.jit.script(tiny_net(1)), ["a", "b", "c"], SIZE, 1)
    for name in ("gradcam", "fullgrad"):
        with pytest.raises(AttributionError, match=rf"^{name}: no .* \(a TorchScript module hides its layer types; "
                                                   r"give the weights with --arch"):
            make_attributor(name, scripted)
    assert make_attributor("integrated_gradients", scripted).saliency(torch.rand(1, 1, SIZE, SIZE), 0).shape[0] == 1


def test_a_model_left_in_train_mode_predicts_in_eval_mode_and_keeps_its_mode() -> None:
    model = nn.Sequential(tiny_net(1), nn.Dropout(0.5))
    classifier = TorchClassifier(model, ["a", "b", "c"], SIZE, 1, device="auto")
    model.train()  # a caller fine-tuning it between calls, its batch norm frozen
    model[0][1].eval()
    images = torch.rand(4, 1, SIZE, SIZE)
    torch.testing.assert_close(classifier.predict_proba(images), classifier.predict_proba(images), rtol=0, atol=0)
    assert model.training and model[1].training and not model[0][1].training  # every module's mode kept
    for name in ("gradcam", "fullgrad", "integrated_gradients"):  # they switched the model to eval for good
        maps = make_attributor(name, classifier).saliency(images, 0)
        torch.testing.assert_close(maps, make_attributor(name, classifier).saliency(images, 0), rtol=0, atol=0)
        assert model.training and model[1].training and not model[0][1].training, name


def test_a_frozen_torchscript_model_predicts(tmp_path) -> None:
    """torch.jit.freeze leaves modules without a training attribute: every prediction was an AttributeError."""
    from caex.classifier import load_classifier

    net = tiny_net(1)
    torch.jit.save(torch.jit.freeze(torch.jit.script(net)), str(tmp_path / "frozen.pt"))
    frozen = load_classifier(tmp_path / "frozen.pt", class_names=["a", "b", "c"], image_size=SIZE, channels=1)
    images = torch.rand(2, 1, SIZE, SIZE)
    torch.testing.assert_close(frozen.predict_proba(images), torch.softmax(net(images), 1).detach())


def test_a_module_given_to_load_classifier_and_a_custom_state_dict_say_what_to_do(tmp_path) -> None:
    from caex.classifier import load_classifier

    with pytest.raises(CaexError, match=r"^load_classifier takes a file or folder, not the module Sequential; "
                                        r"wrap it as caex.classifier.TorchClassifier"):
        load_classifier(tiny_net(1))
    torch.save(tiny_net(1).state_dict(), tmp_path / "custom.pth")
    with pytest.raises(CaexError, match=r"state dicts load for resnet18, resnet50, smallcnn only: export another "
                                        r"network as TorchScript or ONNX"):
        load_classifier(tmp_path / "custom.pth", arch="smallcnn", image_size=SIZE, channels=1)


def test_a_features_trunk_of_feature_maps_is_not_taken_for_feature_vectors() -> None:
    """torchvision's VGG names its convolutional trunk `features`: its [B, C, h, w] maps passed for the
    penultimate features the manifold analysis compares the codes with."""
    class VggLike(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
            self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

        def forward(self, images):
            return self.classifier(self.features(images))

    classifier = TorchClassifier(VggLike(), ["a", "b", "c"], SIZE, 1)
    assert classifier.features(torch.rand(2, 1, SIZE, SIZE)) is None
    assert tiny_classifier(1).features(torch.rand(2, 1, SIZE, SIZE)) is None  # no features at all


@pytest.mark.slow
def test_the_first_captum_method_leaves_the_recursion_limit_alone() -> None:
    """captum imports jedi, which raised the caller's recursion limit to 3000 for the rest of the session."""
    import subprocess
    import sys

    check = ("import sys; from caex.explain.attribution import captum_attr; sys.setrecursionlimit(1234); "
             "captum_attr(); print(sys.getrecursionlimit(), 'captum.attr' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          check=True).stdout.split() == ["1234", "True"]


class GradientTimesInput(Attributor):
    """A method a user adds: |gradient x input|, with an option of its own."""

    name = "gradient_x_input"
    title = "Gradient x input"
    needs_gradients = True
    absolute = True

    def __init__(self, classifier: Classifier, *, scale: float = 1.0, **kwargs) -> None:
        super().__init__(classifier, **kwargs)
        self.scale = scale

    def _attribute_batch(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        inputs = inputs.detach().requires_grad_(True)
        score = self.module(inputs).gather(1, target[:, None]).sum()
        return torch.autograd.grad(score, inputs)[0] * inputs * self.scale


@pytest.fixture
def registered():
    """``GradientTimesInput`` in the registry for one test."""
    yield register_attributor(GradientTimesInput)
    del BASELINES[GradientTimesInput.name]


def test_a_registered_method_is_evaluated_named_and_listed_like_a_shipped_one(registered, capsys):
    from caex.cli.main import main
    from caex.evaluation.runner import canonical_method, method_name

    images, target = inputs(1)
    maps = make_attributor("gradient_x_input", tiny_classifier(1), scale=2.0).saliency(images, target)
    assert maps.shape == (3, SIZE, SIZE) and float(maps.max()) == 1.0
    bundle = DataBundle(ImageSet(images, target), ImageSet(images, target), ["a", "b", "c"], "random")
    predicted = tiny_classifier(1).predict_proba(images).argmax(dim=1)
    bundle.test = ImageSet(images, predicted)  # every image "correct", so the evaluation takes them all
    results = evaluate(None, tiny_classifier(1), bundle, methods="Gradient_X_Input", n_images=3)
    assert [row.method for row in results.methods] == ["gradient_x_input", "random"]
    assert canonical_method(" GRADIENT_X_INPUT ") == "gradient_x_input"
    assert method_name("gradient_x_input") == "Gradient x input"  # "-"-joined names kept whole: not CAE's paths
    with pytest.raises(GradientsUnavailableError, match="^gradient_x_input needs gradients"):
        make_attributor("gradient_x_input", BlackBox(1))
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "gradient_x_input" in " ".join(capsys.readouterr().out.split())


def test_registering_a_method_checks_its_name_and_its_constructor_chain():
    """A constructor without **kwargs took evaluate's batch_size into a raw TypeError: the options its base
    classes take were counted as its own."""

    class NoKwargs(GradientTimesInput):
        name = "no_kwargs"

        def __init__(self, classifier: Classifier, *, scale: float = 1.0) -> None:
            super().__init__(classifier, scale=scale)

    register_attributor(NoKwargs)
    try:
        with pytest.raises(AttributionError, match=r"^no_kwargs takes no option 'batch_size' \(its __init__ must "
                                                   r"take \*\*kwargs and pass them on to Attributor's; "
                                                   r"it takes scale\)$"):
            make_attributor("no_kwargs", tiny_classifier(1), batch_size=2)
    finally:
        del BASELINES["no_kwargs"]
    for bad in ("cae-lite", "GxI", "grad x input"):
        named = type("Named", (GradientTimesInput,), {"name": bad})
        with pytest.raises(AttributionError, match=rf"^method Named '{bad}': its name must be a lower-case Python "
                                                   r"identifier"):
            register_attributor(named)
    assert "cae-lite" not in BASELINES
    with pytest.raises(AttributionError, match=r"^method Clash 'gradcam': the name is registered already; choose "
                                               r"another, or pass replace=True$"):  # it replaced the shipped one
        register_attributor(type("Clash", (GradientTimesInput,), {"name": "gradcam"}))
    with pytest.raises(AttributionError, match=r"^register_attributor: <function .*> is no Attributor subclass$"):
        register_attributor(make_attributor)
    with pytest.raises(AttributionError, match=r"^method CaeLike 'caelite': names starting with 'cae' are CAE's own "
                                               r"methods"):  # evaluate would take it for CAE's own
        register_attributor(type("CaeLike", (GradientTimesInput,), {"name": "caelite"}))

    class Bare(Attributor):
        name = "bare"

        def __init__(self, classifier: Classifier) -> None:
            super().__init__(classifier)

    register_attributor(Bare)
    try:
        with pytest.raises(AttributionError, match=r"^bare takes no option 'scale' \(it takes none\)$"):
            make_attributor("bare", tiny_classifier(1), scale=2)
    finally:
        del BASELINES["bare"]
    with pytest.raises(AttributionError, match=r"^Unnamed: give the method a name of its own"):  # was "attributor"
        register_attributor(type("Unnamed", (Attributor,), {}))
    assert isinstance(make_attributor("ig", tiny_classifier(1)), BASELINES["integrated_gradients"])  # as evaluate
    with pytest.raises(AttributionError, match=r"^method Alias 'ig': another spelling of integrated_gradients"):
        register_attributor(type("Alias", (GradientTimesInput,), {"name": "ig"}))  # listed, but ran IG


def test_a_registered_method_without_a_title_of_its_own_is_titled_by_its_name(registered):
    """It inherited its parent's: a Grad-CAM variant was 'Grad-CAM' beside Grad-CAM in every figure and table."""
    from caex.evaluation.runner import method_name

    variant = register_attributor(type("LayerThree", (GradientTimesInput,), {"name": "gxi_three"}))
    try:
        assert method_name("gxi_three") == "gxi_three" and method_name("gradient_x_input") == "Gradient x input"
    finally:
        del BASELINES[variant.name]


@pytest.mark.parametrize("absolute, expected", [(False, [0.0, 0.0, 1 / 3, 1.0]), (True, [2 / 3, 0.0, 1 / 3, 1.0])])
def test_a_signed_methods_map_is_its_positive_part(absolute, expected):
    """Min-max scaling put a signed map's zero (no evidence) at 2/5: LIME's in-mask mass read half its positive
    part's."""
    class Fixed(Attributor):
        name = "fixed"

        def _attribute_batch(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return torch.tensor([-2.0, 0.0, 1.0, 3.0]).view(1, 1, 2, 2).expand(len(inputs), 1, 2, 2)

    Fixed.absolute = absolute
    classifier = TorchClassifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)), ["a", "b"], 2, 1)
    maps = Fixed(classifier).saliency(torch.rand(3, 1, 2, 2), target=0)
    torch.testing.assert_close(maps, torch.tensor(expected).view(1, 2, 2).expand(3, 2, 2))


@pytest.mark.parametrize(("name", "options", "message"), [
    ("lime", {"n_samples": 0}, r"^lime: n_samples=0: must be a whole number, at least 1$"),
    ("lime", {"n_segments": 0}, r"^lime: n_segments=0: must be a whole number, at least 1$"),
    ("lime", {"compactness": float("nan")}, r"^lime: compactness=nan: must be a positive finite number$"),
    ("integrated_gradients", {"n_steps": 0}, r"^integrated_gradients: n_steps=0: must be a whole number, at least 1$"),
    ("occlusion", {"window_fraction": 5.0}, r"^occlusion: window_fraction=5.0: must be in \(0, 1\]$"),
    ("occlusion", {"window_fraction": float("nan")}, r"^occlusion: window_fraction=nan: must be in \(0, 1\]$"),
    ("occlusion", {"perturbations_per_eval": 0}, r"^occlusion: perturbations_per_eval=0: must be a whole number"),
    ("gradcam", {"batch_size": 0}, r"^gradcam: batch_size=0: must be a whole number, at least 1$"),
    ("random", {"seed": -1}, r"^random: seed=-1: must be a whole number from 0 to "),
])
def test_an_option_a_method_cannot_run_with_is_refused_when_it_is_made(name, options, message):
    """LIME's n_samples=0 was taken, and failed deep in Captum (torch.cat of nothing), IG's n_steps=0 in an assert
    that `python -O` strips, occlusion's NaN window in int(): each after the evaluation's earlier methods had run."""
    from caex.explain import OptionValueError

    with pytest.raises(OptionValueError, match=message):
        make_attributor(name, tiny_classifier(1), **options)


def test_a_cae_methods_option_errors_name_the_method() -> None:
    """batch_size=0 read "attributor: batch_size=0", the base's name, as the CAE method named itself later."""
    from caex.explain import ExplainerAttributor, OptionValueError

    with pytest.raises(OptionValueError, match=r"^cae-centroid: batch_size=0: must be a whole number, at least 1$"):
        ExplainerAttributor(tiny_classifier(1), object(), path="centroid", batch_size=0)
