"""Baseline saliency methods behind one contract, so the evaluation treats CAE and its rivals alike.

The contract is Captum's: an :class:`Attributor` built on a classifier answers
``attribute(inputs [B,C,H,W], target [B])`` with raw attributions of the input's
spatial size, and ``saliency(inputs, target)`` with ``[B,H,W]`` maps in [0, 1].
Following pytorch-grad-cam's template-method layout, the base class owns the
mechanics every method shares (device, eval mode, batching, the gradient check,
channel reduction, resizing, normalisation); each method only says how to get
attributions for one batch.

Gradient methods need :attr:`Classifier.module`; on a black box (ONNX) they
raise :class:`GradientsUnavailableError`, which the evaluation reports as a
skipped method. LIME, occlusion and random only call ``predict_proba``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from caex.classifier.base import Classifier, module_lock, require_classifier
from caex.data.types import check_image_batch, class_index, classes_text
from caex.errors import CaexError
from caex.explain.paths import DEFAULT_STEPS, check_path_length
from caex.explain.targets import RANK_BY
from caex.utils.checks import (check_counts, check_positive_finite, check_registry_name, check_seed, check_share,
                               is_whole_number)
from caex.utils.rows import nonfinite_rows
from caex.utils.seed import keyed_generator, values_crc32
from caex.utils.warn import quiet

#: The keys beside the seed and the image of the random map's and LIME's draws (see :meth:`Attributor.generator_for`).
RANDOM_MAP_STREAM = 1
LIME_SAMPLES_STREAM = 2

#: A class index or name per image (``[B]`` tensor, list or array) or one for every image.
TargetLike = torch.Tensor | np.ndarray | Sequence[int] | Sequence[str] | int | str


class AttributionError(CaexError):
    """A saliency method cannot run on the given classifier or arguments."""


class GradientsUnavailableError(AttributionError):
    """A gradient method was asked to explain a classifier that exposes no gradients."""


class OptionValueError(AttributionError):
    """A method's option holds a value it cannot run with (``n_samples=0``): a mistake to fix before any work, where
    other attribution errors skip the method in a comparison. Raised by the constructor, so an evaluation that
    builds its methods first stops before it has computed a map, not after the methods before this one."""


def captum_attr() -> ModuleType:
    """``captum.attr``, imported on first use (seconds) with the interpreter's recursion limit and warning filters
    kept: captum imports IPython and jedi, which raised the limit to 3000 and added an "error" filter (for IPython's
    ProvisionalCompleterWarning) for the rest of the caller's session."""
    imported = sys.modules.get("captum.attr")
    if imported is not None:  # catch_warnings' exit would reset the filters' "once" memory on every call
        return imported
    limit = sys.getrecursionlimit()
    try:
        with quiet(Warning):  # what captum's imports say or filter is not the caller's
            import captum.attr
    finally:
        sys.setrecursionlimit(limit)
    return captum.attr


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each map of ``[B, ...]`` to [0, 1]; constant maps become all zeros."""
    flat = maps.flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(torch.finfo(flat.dtype).tiny), 0.0)
    return scaled.view_as(maps)


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[B, C, h, w]`` maps to ``size`` (a no-op when already there)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


class Attributor:
    """Base of every saliency method: mechanics here, the method in :meth:`_attribute_batch`.

    Subclasses set :attr:`name` (the registry's lower-case key), :attr:`title` (its name in figures and the report),
    :attr:`needs_gradients` and :attr:`absolute` (whether the sign of an attribution is noise, as for raw
    gradients, or meaning, as for LIME/occlusion where negative = evidence against the class), take their own
    options as keywords and pass ``**kwargs`` on to this constructor, and implement :meth:`_attribute_batch`;
    :func:`register_attributor` then makes one a method ``evaluate`` and ``caex evaluate --methods`` compare.
    """

    name: str = "attributor"  # a class attribute, but ExplainerAttributor names each instance by its path
    title: ClassVar[str] = "Attributor"
    needs_gradients: ClassVar[bool] = False
    absolute: ClassVar[bool] = False

    def __init__(self, classifier: Classifier, *, batch_size: int = 32, seed: int = 0) -> None:
        classifier = require_classifier(classifier)
        check_counts({"batch_size": batch_size}, 1, OptionValueError, prefix=f"{self.name}: ")
        check_seed(seed, OptionValueError, prefix=f"{self.name}: ")
        if self.needs_gradients:
            module = classifier.module if classifier.has_gradients else None
            if module is None:
                raise self._black_box(classifier)
            if any(tensor.is_inference() for tensor in module.state_dict().values()):
                raise GradientsUnavailableError(  # else torch's "Inference tensors cannot be saved for backward"
                    f"{self.name} needs gradients, which weights made inside torch.inference_mode() cannot give: "
                    "load the classifier outside torch.inference_mode()")
        self.classifier = classifier
        self.device = classifier.device
        self.batch_size = batch_size
        self.seed = seed

    def generator_for(self, image: torch.Tensor, stream: int) -> torch.Generator:
        """A private generator for the draws of one ``image``, keyed on the seed, the method's ``stream`` and the
        image's values: one stream per attributor, advanced across calls, gave an image another map beside other
        images, in another order or in a later call."""
        return keyed_generator(self.seed, stream, values_crc32(image))

    def _example(self) -> torch.Tensor | None:
        """A blank batch of one image of the classifier's shape, where known (to trace which layers run)."""
        size, channels = self.classifier.image_size, self.classifier.channels
        return None if size is None or channels is None else torch.full(
            (1, channels, size, size), 0.5, device=self.device, dtype=self.classifier.input_dtype)

    def _black_box(self, classifier: Classifier) -> GradientsUnavailableError:
        if self.needs_gradients:
            return GradientsUnavailableError(f"{self.name} needs gradients; {type(classifier).__name__} is a black box")
        return GradientsUnavailableError(f"{self.name}: {type(classifier).__name__} is a black box, with no "
                                         "differentiable module")

    @property
    def module(self) -> nn.Module:
        """The differentiable classifier (data-range images to logits, whatever the user's module returns);
        gradient methods only: a black box's is a :class:`GradientsUnavailableError`."""
        module = self.classifier.logits_module
        if module is None:
            raise self._black_box(self.classifier)
        return module

    def attribute(self, inputs: torch.Tensor, target: TargetLike) -> torch.Tensor:
        """Raw attributions ``[B, C', H, W]`` (``C'`` is C or 1), float32 whatever the inputs' dtype, on the inputs'
        device.

        ``target``: the class being explained (Captum's meaning; ``Explainer.explain``'s ``target`` is where its
        path heads instead), one index or name per image (``[B]`` tensor, list or array), or one for all.
        """
        chunks, forward_lock = [], self._forward_lock()
        # gradient methods need autograd, which a caller's inference_mode bars; and the model's inference mode
        with torch.inference_mode(False), self.classifier.evaluating():
            target = self._targets(inputs, target)
            height, width = inputs.shape[-2:]
            for start in range(0, len(inputs), self.batch_size):
                batch = inputs[start:start + self.batch_size].to(self.device, self.classifier.input_dtype)
                batch = batch.clone() if batch.is_inference() else batch  # inference tensors cannot enter autograd
                labels = target[start:start + self.batch_size].to(self.device, torch.long)
                with forward_lock:
                    attributions = self._attribute_batch(batch, labels).detach().float()
                chunks.append(resize_maps(attributions, (height, width)).to(inputs.device))
        return torch.cat(chunks)

    def _forward_lock(self) -> contextlib.AbstractContextManager[Any]:
        """The lock of the classifier module's forward passes (:func:`~caex.classifier.base.module_lock`) for a
        gradient method, which runs the module itself: Grad-CAM and FullGrad hook its layers, and any forward pass
        would run through another thread's hooks. Others predict, which takes it per batch."""
        module = self.classifier.module if self.needs_gradients else None
        return contextlib.nullcontext() if module is None else module_lock(module)

    def saliency(self, inputs: torch.Tensor, target: TargetLike) -> torch.Tensor:
        """Maps ``[B, H, W]`` in [0, 1]: attributions reduced over channels and normalised per image; a signed
        method's map is its positive part (the evidence for ``target``), an :attr:`absolute` one's the magnitude."""
        attributions = self.attribute(inputs, target)
        bad = nonfinite_rows(attributions)
        if bad.any():  # min-max scaling would turn each such map into zeros, scored as if it ranked pixels
            raise AttributionError(f"{self.name}: attributions hold NaN or inf values for {int(bad.sum())} of "
                                   f"{len(inputs)} images (the classifier's outputs or gradients are not finite)")
        if self.absolute:
            return normalise_maps(attributions.abs().sum(dim=1))
        # the evidence for the class: min-max scaling made "no evidence" pixels half-salient, and LIME's in-mask
        # mass read half of its positive part's
        return normalise_maps(attributions.sum(dim=1).clamp_min(0))

    def _attribute_batch(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Attributions ``[b, C' , h, w]`` for one batch already on :attr:`device`."""
        raise NotImplementedError

    def _targets(self, inputs: torch.Tensor, target: TargetLike) -> torch.Tensor:
        """``target`` as ``[B]`` int64 on the inputs' device (one index or class name is used for every image),
        after checking that ``inputs`` are images this classifier takes."""
        check_image_batch(inputs, channels=self.classifier.channels, size=self.classifier.image_size,
                          what=self.name, error=AttributionError)
        if not len(inputs):
            raise AttributionError(f"{self.name}: no images to explain (shape {tuple(inputs.shape)})")
        if target is None:  # Captum's default for single-output models; a classifier has one per class
            raise AttributionError(f"{self.name}: target=None; give the class to explain, one for every image or "
                                   "one per image (the predicted ones: classifier.predict(inputs))")
        array = np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target)
        if array.ndim == 0:
            array = np.full(len(inputs), array)
        if array.dtype.kind == "U":  # class names, read as everywhere else ("2" names class 2 unless names are numbers)
            names = self.classifier.class_names
            indices = [class_index(name, names) for name in array.tolist()]
            if None in indices:
                raise AttributionError(f"{self.name}: target {array.tolist()[indices.index(None)]!r} is not a class "
                                       f"of this classifier ({classes_text(names)})")
            array = np.array(indices)
        if array.ndim != 1 or len(array) != len(inputs) or array.dtype.kind not in "iu":
            raise AttributionError(f"{self.name}: expected one class index per image [{len(inputs)}], got "
                                   f"{array.dtype} {tuple(array.shape)}")
        outside = array[(array < 0) | (array >= self.classifier.num_classes)]
        if len(outside):  # else a deep IndexError, a silently wrapped -1, or (random) no error at all
            raise AttributionError(f"{self.name}: target {int(outside[0])} is not a class index of this classifier "
                                   f"(0..{self.classifier.num_classes - 1})")
        return torch.from_numpy(array.astype(np.int64)).to(inputs.device)


class RandomAttributor(Attributor):
    """Seeded uniform noise: the floor every real explanation must beat."""

    name = "random"
    title = "Random"

    def attribute(self, inputs: torch.Tensor, target: TargetLike) -> torch.Tensor:
        self._targets(inputs, target)  # the same input and target checks as every other method
        # Not the seed's plain stream, which draws the evaluation's perturbation fill: with one seed the map was
        # the fill itself, so its patches covered the brightest fill values first and the floor read low.
        noise = [torch.rand((1, *inputs.shape[-2:]), generator=self.generator_for(image, RANDOM_MAP_STREAM))
                 for image in inputs]
        return torch.stack(noise).to(inputs.device)


def _no_layers_why(module: nn.Module) -> str:
    """Why ``module`` shows a gradient method no layer of the types it hooks: a TorchScript module (or one
    holding one) hides its submodules' Python types."""
    if any(isinstance(layer, torch.jit.ScriptModule) for layer in module.modules()):  # modules() has module itself
        return ("a TorchScript module hides its layer types; give the weights with --arch (arch=), a bundle folder, "
                "or the eager module as a TorchClassifier")
    return "it has none"


def last_conv_layer(module: nn.Module, example: torch.Tensor | None = None) -> nn.Conv2d:
    """The ``Conv2d`` that runs last (one forward pass of ``example`` with hooks tells), Grad-CAM's usual layer;
    without an example, the last one registered (a stem registered after the body would pass for the deepest)."""
    convs = [layer for layer in module.modules() if isinstance(layer, nn.Conv2d)]
    if not convs:
        raise AttributionError(f"gradcam: no Conv2d layer to explain in {type(module).__name__} "
                               f"({_no_layers_why(module)})")
    if example is None:
        return convs[-1]
    ran: list[nn.Conv2d] = []
    hooks = [layer.register_forward_hook(lambda layer, _input, _output: ran.append(layer)) for layer in convs]
    try:
        with torch.no_grad():  # the caller runs it in eval mode: batch statistics stay as they are
            module(example)
    finally:
        for hook in hooks:
            hook.remove()
    return ran[-1] if ran else convs[-1]


class GradCamAttributor(Attributor):
    """Grad-CAM (Captum ``LayerGradCam``), ReLU'd; upsampled by the base.

    The layer is, in order: ``layer=``, the classifier's own ``target_layer``
    (its last convolutional stage), or the ``Conv2d`` that runs last (one forward
    pass of a blank image, in eval mode, tells).
    """

    name = "gradcam"
    title = "Grad-CAM"
    needs_gradients = True

    def __init__(self, classifier: Classifier, *, layer: nn.Module | None = None, **kwargs: Any) -> None:
        super().__init__(classifier, **kwargs)

        if layer is None:
            layer = getattr(classifier, "target_layer", None)  # a Sequential stage may be empty-falsy: test None
        if layer is None:
            with self._forward_lock(), classifier.evaluating():  # another thread's layers would be recorded too
                layer = last_conv_layer(self.module, self._example())
        self._method = captum_attr().LayerGradCam(self.module, layer)

    def _attribute_batch(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._method.attribute(inputs, target=target, relu_attributions=True)


def _bias_of(layer: nn.Module) -> torch.Tensor | None:
    """The additive bias a layer applies per channel at inference (folded for batch norm)."""
    if isinstance(layer, nn.Conv2d):
        return layer.bias
    if (isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.running_mean is not None
            and layer.running_var is not None):  # both, or neither (track_running_stats)
        scale = layer.weight if layer.weight is not None else torch.ones_like(layer.running_var)
        shift = layer.bias if layer.bias is not None else torch.zeros_like(layer.running_mean)
        return shift - layer.running_mean * scale / torch.sqrt(layer.running_var + layer.eps)
    return None


class FullGradAttributor(Attributor):
    """FullGrad (Srinivas & Fleuret 2019): |input-grad x input| plus |bias-grad| of every conv/BN.

    Each term is made positive, scaled to [0, 1] and upsampled before summing,
    as pytorch-grad-cam does. One backward pass per batch gives all gradients.
    """

    name = "fullgrad"
    title = "FullGrad"
    needs_gradients = True

    def __init__(self, classifier: Classifier, **kwargs: Any) -> None:
        super().__init__(classifier, **kwargs)
        self._biased = [(layer, bias) for layer in self.module.modules()
                        if (bias := _bias_of(layer)) is not None]
        if not self._biased:  # what remains would be |input-grad x input|, reported as FullGrad
            raise AttributionError(f"fullgrad: no convolution or batch norm with a bias in "
                                   f"{type(classifier.module).__name__} ({_no_layers_why(self.module)})")

    def _attribute_batch(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls: list[tuple[torch.Tensor, torch.Tensor]] = []  # (bias, output) per layer call, in order
        installer = threading.get_ident()

        def record(bias: torch.Tensor, output: torch.Tensor) -> None:
            if threading.get_ident() == installer:  # not another thread's forward pass through the shared layers
                calls.append((bias, output))

        hooks = [layer.register_forward_hook(lambda _module, _input, output, bias=bias: record(bias, output))
                 for layer, bias in self._biased]
        try:
            with torch.enable_grad():  # also under a caller's no_grad, as Captum's methods do
                inputs = inputs.detach().requires_grad_(True)
                score = self.module(inputs).gather(1, target[:, None]).sum()
                grads = torch.autograd.grad(score, [inputs, *(output for _, output in calls)], allow_unused=True)
        finally:
            for hook in hooks:
                hook.remove()
        height, width = inputs.shape[-2:]
        size = (height, width)
        total = self._term(grads[0] * inputs, size)
        for (bias, _), grad in zip(calls, grads[1:]):
            if grad is None:  # a layer whose output does not reach the logits
                continue
            total = total + self._term(grad * bias.detach().view(1, -1, 1, 1), size)
        return total

    @staticmethod
    def _term(values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return resize_maps(normalise_maps(values.abs().sum(dim=1, keepdim=True)), size)


class IntegratedGradientsAttributor(Attributor):
    """Integrated gradients (Captum) from an all-zero (black) baseline, Captum's default 50 steps."""

    name = "integrated_gradients"
    title = "Integrated gradients"
    needs_gradients = True
    absolute = True

    def __init__(self, classifier: Classifier, *, n_steps: int = 50, **kwargs: Any) -> None:
        super().__init__(classifier, **kwargs)
        check_counts({"n_steps": n_steps}, 1, OptionValueError, prefix=f"{self.name}: ")
        self._method = captum_attr().IntegratedGradients(self.module)
        self.n_steps = n_steps

    def _attribute_batch(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._method.attribute(inputs, target=target, n_steps=self.n_steps,
                                      internal_batch_size=self.batch_size * 8)


class OcclusionAttributor(Attributor):
    """Occlusion (Captum): a black square about 1/8 of the image, sliding by half its side."""

    name = "occlusion"
    title = "Occlusion"

    def __init__(self, classifier: Classifier, *, window_fraction: float = 1 / 8,
                 perturbations_per_eval: int = 64, **kwargs: Any) -> None:
        super().__init__(classifier, **kwargs)
        check_share(f"{self.name}: window_fraction", window_fraction, OptionValueError)
        check_counts({"perturbations_per_eval": perturbations_per_eval}, 1, OptionValueError, prefix=f"{self.name}: ")
        self._method = captum_attr().Occlusion(classifier.predict_proba)  # scores p_target, as the metrics do
        self.window_fraction = window_fraction
        self.perturbations_per_eval = perturbations_per_eval

    def _attribute_batch(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        channels, height, width = inputs.shape[1:]
        window = (max(1, round(height * self.window_fraction)), max(1, round(width * self.window_fraction)))
        strides = (channels, max(1, window[0] // 2), max(1, window[1] // 2))
        return self._method.attribute(inputs, sliding_window_shapes=(channels, *window), strides=strides,
                                      baselines=0.0, target=target,
                                      perturbations_per_eval=self.perturbations_per_eval)


def superpixels(image: torch.Tensor, n_segments: int = 50, compactness: float = 1.0) -> torch.Tensor:
    """SLIC superpixels of one data-range image ``[C, H, W]`` as integer labels ``[H, W]`` from 0.

    On [0, 1] intensities a compactness of 1 keeps segments whole on noisy
    textures; much lower values let SLIC's connectivity pass merge them into one.
    """
    from skimage.segmentation import slic

    array = image.detach().cpu().permute(1, 2, 0).double().numpy()
    labels = slic(array, n_segments=n_segments, compactness=compactness, start_label=0,
                  channel_axis=-1, convert2lab=False)
    return torch.from_numpy(np.ascontiguousarray(labels)).long()


class LimeAttributor(Attributor):
    """LIME (Captum ``Lime``) over SLIC superpixels, 1,000 seeded samples per image.

    The surrogate follows the reference ``lime`` package rather than Captum's
    defaults: weighted ridge regression (alpha 1), an exponential cosine kernel
    of width 0.25, and a switched-off superpixel takes its own mean colour, so
    the explanation asks "does this region's texture matter" rather than "does
    a black hole here matter".
    """

    name = "lime"
    title = "LIME"

    def __init__(self, classifier: Classifier, *, n_samples: int = 1000, n_segments: int = 50,
                 compactness: float = 1.0, perturbations_per_eval: int = 250, **kwargs: Any) -> None:
        super().__init__(classifier, **kwargs)
        counts = {"n_samples": n_samples, "n_segments": n_segments, "perturbations_per_eval": perturbations_per_eval}
        check_counts(counts, 1, OptionValueError, prefix=f"{self.name}: ")
        check_positive_finite(f"{self.name}: compactness", compactness, OptionValueError)
        self.n_samples = n_samples
        self.n_segments = n_segments
        self.compactness = compactness
        self.perturbations_per_eval = perturbations_per_eval

    def _attribute_batch(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        lime = captum_attr().Lime  # first: it imports captum with the recursion limit kept
        from captum.attr._core.lime import get_exp_kernel_similarity_function

        similarity = get_exp_kernel_similarity_function("cosine", kernel_width=0.25)
        maps = []
        for image, label in zip(inputs, target.tolist()):  # LIME fits one surrogate model per image
            method = lime(self.classifier.predict_proba, interpretable_model=_private_seed_ridge()(alpha=1.0),
                          similarity_func=similarity,
                          perturb_func=self._sampler(self.generator_for(image, LIME_SAMPLES_STREAM)))
            segments = superpixels(image, self.n_segments, self.compactness).to(image.device)
            maps.append(method.attribute(
                image[None], target=label, n_samples=self.n_samples, feature_mask=segments[None, None],
                baselines=superpixel_means(image, segments)[None],
                perturbations_per_eval=self.perturbations_per_eval))
        return torch.cat(maps)

    @staticmethod
    def _sampler(generator: torch.Generator) -> Callable[..., torch.Tensor]:
        """LIME's coin flip per superpixel, drawn from a private generator (Captum's uses the global one)."""
        def sample(original: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            probs = torch.full((1, int(kwargs["num_interp_features"])), 0.5)
            return torch.bernoulli(probs, generator=generator).long().to(original.device)
        return sample


@functools.cache
def _private_seed_ridge() -> type:
    """Captum's ``SkLearnRidge``, fitted without a draw from torch's global generator, which would shift every
    other thread's stream (putting the stream back afterwards, ``fork_rng``, rewound it for them instead). Defined
    on first use, as captum is imported then."""
    from captum._utils.models.linear_model import SkLearnRidge
    from torch.utils.data import DataLoader

    class PrivateSeedRidge(SkLearnRidge):
        def fit(self, train_data: DataLoader, **kwargs: Any) -> Any:
            """Lime's loader has no generator of its own, so iterating it drew its (unused) seed from the global one."""
            loader = DataLoader(train_data.dataset, batch_size=train_data.batch_size, generator=torch.Generator())
            return super().fit(loader, **kwargs)

        def _construct_model_params(self, *, weight_values: torch.Tensor, bias_value: torch.Tensor,
                                    **kwargs: Any) -> None:
            """The fitted weights in captum's linear layer, built on the meta device: its initialisation, which
            the fit's weights replace, drew from the global generator."""
            with torch.device("meta"):
                super()._construct_model_params(weight_values=weight_values.to("meta"),
                                                bias_value=bias_value.to("meta"), **kwargs)
            self.linear.weight, self.linear.bias = nn.Parameter(weight_values), nn.Parameter(bias_value)

    return PrivateSeedRidge


def superpixel_means(image: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """Each pixel of ``image [C,H,W]`` replaced by the mean of its superpixel ``segments [H,W]``."""
    flat = segments.flatten()
    count = torch.bincount(flat).clamp_min(1).to(image.dtype)
    sums = torch.zeros(image.shape[0], len(count), dtype=image.dtype, device=image.device)
    sums.index_add_(1, flat, image.flatten(1))
    return (sums / count)[:, flat].view_as(image)


class ExplainerAttributor(Attributor):
    """CAE's counterfactual saliency in the Attributor contract, for side-by-side evaluation.

    ``target`` is the class being explained (ground truth); the path runs from
    the image towards another class (``counter_by``), and the saliency marks
    what had to change to leave ``target``. ``counter_class`` fixes that
    destination instead (a healthy reference class, say), so a lesion is
    explained by its removal rather than by a swap to another lesion; images of
    that class still head for another class by ``counter_by``. ``steps`` is
    the path length (2 = the straight contrast of the end frame with the
    reconstruction).

    ``counter_by`` says how the other class is picked when there are more than
    two. ``"code"`` (default) takes the class whose class-code centroid is
    nearest to the image's class code, the nearest region on the CAE's own
    manifold, from the codes the map's path starts from, so a 2-step map never
    runs the classifier. ``"probability"`` asks the classifier for its most probable
    other class, one forward pass per image. On the synthetic benchmark the
    code's choice gave 16-step maps of higher AOPC on 9 of 9 path x seed pairs
    of one processor's draws and lower AOPC on 6 of 6 of another's (+0.011 on
    average; README, Results): the default for its cost, not for faithfulness.
    ``"all"`` heads for every other class and averages the K-1 maps: what sets
    the image's class apart from all the others, at K-1 times the path frames
    (one encoding and one reconstruction per image, the paths in the same
    batches: ``Explainer.saliency`` with a ``[B, K-1]`` target). On the
    benchmark recipe's three draws of the second processor it raised AOPC over
    the code's single class in 24 of 24 comparisons, and on the demo's two
    models it lowered it on 5 of 6 paths (README, Results): no choice of
    destination dominates.
    """

    title = "CAE"

    #: How ``counter_by`` picks the other class: ranked (``RANK_BY``; "code" needs an Explainer's CAE with
    #: stored centroids), or "all" of them, their maps averaged.
    COUNTER_BY = (*RANK_BY, "all")

    def __init__(self, classifier: Classifier, explainer: Any, *, path: str = "guided", steps: int = DEFAULT_STEPS,
                 counter_class: int | None = None, counter_by: str = "code", name: str | None = None,
                 **kwargs: Any) -> None:
        self.name = name or f"cae-{path}"  # first: the base's checks name the method
        super().__init__(classifier, **kwargs)
        check_path_length(steps, f"{self.name}: steps=", OptionValueError)  # before any work, as every option
        if counter_class is not None and not (is_whole_number(counter_class)
                                              and 0 <= counter_class < classifier.num_classes):
            raise OptionValueError(f"{self.name}: counter_class={counter_class!r}: not a class index of this "
                                   f"classifier (0..{classifier.num_classes - 1})")
        if counter_by not in self.COUNTER_BY:
            raise OptionValueError(f"{self.name}: counter_by={counter_by!r}: choose from {', '.join(self.COUNTER_BY)}")
        self.explainer = explainer
        if counter_by == "code" and classifier.num_classes > 2 and not self._has_centroids:
            raise AttributionError("counter_by='code' needs an Explainer whose CAE has stored class centroids "
                                   "(a run folder from `caex train` has them); or pass counter_by='probability'")
        self.path, self.steps, self.counter_class, self.counter_by = path, steps, counter_class, counter_by

    @property
    def _has_centroids(self) -> bool:
        """Whether the explainer's CAE has stored class centroids (a user's explainer may hold no CAE)."""
        return getattr(getattr(self.explainer, "cae", None), "centroids", None) is not None

    def _attribute_batch(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Images whose destination is known head there (the other of two classes, or :attr:`counter_class`);
        the rest leave ``target`` for the best other class by :attr:`counter_by`, which the Explainer picks
        from the class codes it encodes anyway (and asks the classifier only for ``"probability"``)."""
        if self.classifier.num_classes == 2:
            destination = 1 - target
        elif self.counter_class is not None:
            destination = torch.where(target != self.counter_class, self.counter_class, -1)
        else:
            destination = torch.full_like(target, -1)
        known = destination >= 0
        maps = torch.empty(len(inputs), *inputs.shape[2:], device=inputs.device)
        if known.any():
            maps[known] = self._maps(inputs[known], target=destination[known])
        choose = ~known
        if choose.any():
            maps[choose] = (self._mean_over_other_classes(inputs[choose], target[choose]) if self.counter_by == "all"
                            else self._maps(inputs[choose], leaving=target[choose], target_by=self.counter_by))
        return maps[:, None]

    def _maps(self, inputs: torch.Tensor, **request: Any) -> torch.Tensor:
        """The Explainer's maps of ``inputs`` on this attributor's path, on the inputs' device."""
        return self.explainer.saliency(inputs, path=self.path, steps=self.steps, **request).to(inputs.device)

    def _mean_over_other_classes(self, inputs: torch.Tensor, leaving: torch.Tensor) -> torch.Tensor:
        """The normalised mean of each image's maps toward the classes other than ``leaving`` that a path can reach
        (one encoding each): :meth:`Explainer.target_count` of them, all of them but for an image leaving a class
        the CAE has no codes of, which drops its last. The ranking only orders them, so by code where the CAE has
        centroids (no classifier pass)."""
        by = "code" if self._has_centroids else "probability"
        return normalise_maps(self._maps(inputs, leaving=leaving, all_targets=True, target_by=by).sum(dim=1))

    def describe(self) -> str:
        """Where its counterfactuals head, in words, for the evaluation's tables."""
        if self.classifier.num_classes == 2:
            other = "the other class"
        elif self.counter_by == "code":
            other = "the other class with the nearest class-code centroid"
        elif self.counter_by == "all":
            other = "every other class, their maps averaged"
        else:
            other = "the classifier's most probable other class"
        if self.counter_class is not None:
            other = f"class {self.classifier.class_names[self.counter_class]} ({other} for its own images)"
        return f"{self.steps}-step {self.path} paths toward {other}"


#: The baselines by name: what :func:`make_attributor`, ``evaluate`` and ``caex evaluate --methods`` take (CAE's
#: own methods, which need a CAE run, are named ``cae``/``cae-<path>`` beside them).
BASELINES: dict[str, type[Attributor]] = {}
#: Other spellings the method names are taken in (``ig``), so no method may be registered under one.
ALIASES = {"ig": "integrated_gradients", "integrated-gradients": "integrated_gradients", "grad-cam": "gradcam"}


def register_attributor(cls: type[Attributor], *, replace: bool = False) -> type[Attributor]:
    """Add ``cls`` to :data:`BASELINES` under its :attr:`~Attributor.name` (usable as a class decorator), so
    ``evaluate`` and the CLI (called in the same Python process) compare it with the others. A class without a
    :attr:`~Attributor.title` of its own is titled by its name (an inherited one would name two methods alike);
    ``replace`` lets it take a registered name."""
    if not (isinstance(cls, type) and issubclass(cls, Attributor)):
        raise AttributionError(f"register_attributor: {cls!r} is no Attributor subclass")
    if "name" not in vars(cls):  # an inherited one registered it as "attributor", or in its parent's place
        raise AttributionError(f"{cls.__name__}: give the method a name of its own (a class attribute `name`)")
    name = cls.name
    check_registry_name(name, BASELINES, cls, what=f"method {cls.__name__}", replace=replace, error=AttributionError)
    if name.startswith("cae"):
        raise AttributionError(f"method {cls.__name__} {name!r}: names starting with 'cae' are CAE's own methods; "
                               "choose another")
    if name in ALIASES:
        raise AttributionError(f"method {cls.__name__} {name!r}: another spelling of {ALIASES[name]}; choose another")
    cls.title = vars(cls).get("title", name)
    BASELINES[name] = cls
    return cls


for _baseline in (RandomAttributor, GradCamAttributor, FullGradAttributor, LimeAttributor, OcclusionAttributor,
                  IntegratedGradientsAttributor):
    register_attributor(_baseline)


def constructor_options(cls: type[Attributor]) -> dict[str, Any]:
    """The keyword arguments an attributor's constructor takes, with their annotations, in order: its own, and its
    base classes' as far as each constructor passes ``**kwargs`` on (one that does not would refuse them)."""
    options: dict[str, Any] = {}
    for klass in cls.__mro__:
        if not (issubclass(klass, Attributor) and "__init__" in vars(klass)):
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        for parameter in parameters:
            if parameter.name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                options.setdefault(parameter.name, parameter.annotation)  # a subclass's annotation wins
        if not any(parameter.kind == parameter.VAR_KEYWORD for parameter in parameters):
            break
    return options


def accepted_options(cls: type[Attributor]) -> set[str]:
    """The names of :func:`constructor_options`."""
    return set(constructor_options(cls))


def make_attributor(name: str, classifier: Classifier, **kwargs: Any) -> Attributor:
    """A baseline by its registry name (``gradcam``, ``lime``, ...) or an alias (``ig``); keyword arguments go to its
    constructor."""
    name = ALIASES.get(name, name)
    try:
        cls = BASELINES[name]
    except KeyError:
        raise AttributionError(f"unknown saliency method {name!r}; choose from {', '.join(BASELINES)}") from None
    unknown = sorted(set(kwargs) - accepted_options(cls))
    if unknown:  # a TypeError from deep in the constructor chain otherwise
        base = "its __init__ must take **kwargs and pass them on to Attributor's; " \
            if unknown[0] in accepted_options(Attributor) else ""
        taken = ", ".join(sorted(accepted_options(cls) - {"classifier"})) or "none"
        raise AttributionError(f"{name} takes no option {unknown[0]!r} ({base}it takes {taken})")
    return cls(classifier, **kwargs)
