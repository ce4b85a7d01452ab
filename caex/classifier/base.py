"""The one interface every target classifier presents, whatever file it came from."""

from __future__ import annotations

import abc
import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import torch
from torch import nn

from caex.data.types import check_image_batch, names_preview
from caex.errors import ClassifierError


class Classifier(abc.ABC):
    """A black box to explain: images in the data range [0, 1] in, class probabilities out.

    Subclasses implement :meth:`_logits_batch` (a backend that returns probabilities returns their logarithm,
    as :class:`~caex.classifier.loaders.OnnxClassifier` does). Input checks, batching, device placement and
    ``no_grad`` live here, so every backend behaves the same.
    """

    #: True when :attr:`module` is a differentiable ``nn.Module`` (gradient explainers need it).
    has_gradients: bool = False

    def __init__(self, class_names: list[str], image_size: int | None, channels: int | None,
                 device: torch.device | str = "cpu", batch_size: int = 256) -> None:
        self.class_names = list(class_names)
        self.image_size = image_size
        self.channels = channels
        self.device = torch.device(device)
        self.batch_size = batch_size
        # Provenance, where known (load_classifier fills it from classifier.json): the file it came from, and
        # the data spec and split seed it was trained on, so that a test on its training images is warned about.
        self.source: str | None = None
        self.data_spec: str | None = None
        self.data_seed: int | None = None
        # The arguments load_classifier was called with, where it loaded this one: a model that does not pickle
        # (TorchScript, ONNX) is loaded again with them in another process.
        self.load_arguments: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        shape = f"[{self.channels or '?'}, {self.image_size or '?'}, {self.image_size or '?'}]"
        source = f", from {self.source}" if getattr(self, "source", None) else ""  # a user's subclass may not set it
        return (f"{type(self).__name__}({self.num_classes} classes ({names_preview(self.class_names)}), "
                f"images {shape}, {self.device}{source})")

    @property
    def _described(self) -> str:
        """How errors name the model: the file it came from where known, else its kind."""
        return getattr(self, "source", None) or type(self).__name__  # a user's subclass may not set source

    @property
    def module(self) -> nn.Module | None:
        """An ``nn.Module`` mapping data-range images to logits, or ``None`` for black boxes."""
        return None

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype :attr:`module` computes in, its first floating parameter's (float32 for a black box or a module
        without parameters): images go in cast to it, as a float16 or bfloat16 module refuses float32 inputs."""
        module = self.module
        parameters = () if module is None else module.parameters()
        return next((parameter.dtype for parameter in parameters if parameter.is_floating_point()), torch.float32)

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """:attr:`module` in eval mode for the block and as the caller left it afterwards (nothing to do for a
        black box): every prediction and every gradient map is the model's inference, never a dropout draw."""
        yield

    @property
    def logits_module(self) -> nn.Module | None:
        """:attr:`module` as gradient methods and the CAE's class critic call it: images to logits, whatever the
        module itself returns (``None`` for black boxes)."""
        return self.module

    @property
    def target_layer(self) -> nn.Module | None:
        """The last convolutional layer of :attr:`module` (Grad-CAM's target), or ``None`` if unknown."""
        return None

    def _features_batch(self, images: torch.Tensor) -> torch.Tensor | None:
        """Penultimate features ``[b, F]`` for one batch on :attr:`device`, or ``None`` if unreachable."""
        return None

    def features(self, images: torch.Tensor) -> torch.Tensor | None:
        """Penultimate features ``[B, F]`` (float32, on the input's device), or ``None`` for black boxes. An empty
        batch gives ``[0, F]``, one blank image telling ``F`` (it gave ``None``, as if the features were
        unreachable)."""
        features = self._batched(images, self._features_batch)
        if features is not None or len(images):
            return features
        probe = self._batched(images.new_zeros((1, *images.shape[1:])), self._features_batch)
        return None if probe is None else probe[:0]

    @abc.abstractmethod
    def _logits_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[b, K]`` for one batch already on :attr:`device`."""

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities ``[B, K]`` (float32, on the input's device), batched internally."""
        probs = self._batched(images, lambda batch: torch.softmax(self._checked_logits(batch).float(), dim=1))
        return images.new_zeros((0, self.num_classes)) if probs is None else probs

    def _checked_logits(self, images: torch.Tensor) -> torch.Tensor:
        """:meth:`_logits_batch`, refused unless it gives one logit per class name for each image: a model with
        more outputs than names predicted classes that have no name, and one with fewer failed deep in a
        figure or an explainer."""
        return check_logits(self._logits_batch(images), len(images), self.class_names, self._described)

    def _batched(self, images: torch.Tensor,
                 fn: Callable[[torch.Tensor], torch.Tensor | None]) -> torch.Tensor | None:
        """Run ``fn`` over ``batch_size`` chunks on :attr:`device` (in :attr:`input_dtype`) under ``no_grad``.

        ``None`` when ``fn`` gives none (an unreachable output) or ``images`` is empty.
        """
        check_image_batch(images, channels=self.channels, size=self.image_size, what="classifier input",
                          error=ClassifierError)
        outputs, dtype = [], self.input_dtype
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                output = fn(images[start:start + self.batch_size].to(self.device, dtype))
                if output is None:
                    return None
                outputs.append(output.float().to(images.device))
        return torch.cat(outputs) if outputs else None

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted class indices ``[B]``."""
        return self.predict_proba(images).argmax(dim=1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.predict_proba(images)


def check_output_count(found: int, class_names: Sequence[str], described: str) -> None:
    """A one-line error naming ``described`` (the model) unless it gives one output per class name."""
    if found != len(class_names):
        raise ClassifierError(f"{described}: the model gives {found} outputs per image but {len(class_names)} class "
                              f"names were given ({names_preview(class_names)})")


def check_logits(logits: torch.Tensor, count: int, class_names: Sequence[str], described: str) -> torch.Tensor:
    """``logits`` if they are ``[count, len(class_names)]``, else a one-line error naming ``described``."""
    if logits.ndim != 2 or len(logits) != count:
        raise ClassifierError(f"{described}: the model gives outputs of shape {tuple(logits.shape)} for {count} "
                              f"images; caex needs logits [images, classes], here [{count}, {len(class_names)}]")
    check_output_count(logits.shape[1], class_names, described)
    return logits


def require_classifier(classifier: object) -> Classifier:
    """``classifier`` unless it is a bare ``nn.Module`` (whose logits would be read as probabilities and whose
    classes and input are unknown) or lacks the :class:`Classifier` interface; the error says how to wrap it.

    An object that is no :class:`Classifier` subclass but has ``predict_proba``, ``class_names``, ``device`` and
    ``batch_size`` passes as one (duck typing): the rest of the interface is taken on trust."""
    if isinstance(classifier, nn.Module):
        raise ClassifierError(f"expected a caex Classifier, got the torch module {type(classifier).__name__}; wrap "
                              "it as caex.classifier.TorchClassifier(module, class_names, image_size, channels)")
    if not all(hasattr(classifier, name) for name in ("predict_proba", "class_names", "device", "batch_size")):
        raise ClassifierError(f"expected a caex Classifier, got {type(classifier).__name__}; load one with "
                              "caex.load_classifier(path) or wrap a torch module as caex.classifier.TorchClassifier")
    return cast(Classifier, classifier)  # a duck-typed one too, which no type can say: see the docstring


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode for the block, and every submodule in its own mode again afterwards
    (:func:`module_state_kept`): a model of the caller's that caex runs is the caller's still, in training or not.
    Threads sharing ``module`` share its hold: the last to leave gives the modes back, never one whose forward
    pass another thread is still in."""
    with _KEEPING.lock:
        held = module in _KEEPING.kept or _any_training(module)  # else all in eval already, and nobody holds it
        if held:
            _KEEPING.enter(module)
            module.eval()
    try:
        yield
    finally:
        if held:
            _KEEPING.leave(module)


@contextlib.contextmanager
def module_state_kept(module: nn.Module) -> Iterator[None]:
    """Give every submodule back its own train/eval mode and every parameter its ``requires_grad`` afterwards: a
    parent's ``train(mode)`` would set all children alike, undoing a user's frozen batch norm or dropout. Re-entrant
    across threads: the first to enter saves the state, the last to leave restores it (a second thread saved the
    first one's eval mode, or restored train mode under the first one's forward pass)."""
    with _KEEPING.lock:
        _KEEPING.enter(module)
    try:
        yield
    finally:
        _KEEPING.leave(module)


def module_lock(module: nn.Module) -> threading.RLock:
    """The lock of ``module``'s forward passes: held by a classifier's plain forward passes and by the attributions
    that hook its layers (Grad-CAM keeps one activation per layer), so no forward pass of one thread runs through
    another's hooks. Re-entrant: a hooked attribution may predict inside."""
    with _KEEPING.lock:
        lock = _KEEPING.forward_locks.get(module)
        if lock is None:
            lock = _KEEPING.forward_locks[module] = threading.RLock()
        return lock


def _any_training(module: nn.Module) -> bool:
    return any(getattr(child, "training", False) for child in module.modules())


class _SavedState:
    """A module's submodule modes and parameter flags as the first holder found them, and how many hold it."""

    def __init__(self, module: nn.Module) -> None:
        self.holders = 0
        self.modes = [(child, getattr(child, "training", False)) for child in module.modules()]  # parents first
        self.flags = [(parameter, parameter.requires_grad) for parameter in module.parameters()]

    def restore(self) -> None:
        for child, training in self.modes:  # each as it was (a child in eval under a training parent stays so)
            child.train(training)
        for parameter, flag in self.flags:
            if parameter.requires_grad != flag:  # weights made in inference mode refuse even an unchanged flag
                parameter.requires_grad_(flag)


class _Keeping:
    """The modules caex holds in its state (:func:`module_state_kept`) and their forward locks, process-wide."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kept: weakref.WeakKeyDictionary[nn.Module, _SavedState] = weakref.WeakKeyDictionary()
        self.forward_locks: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()

    def enter(self, module: nn.Module) -> None:
        """One more holder of ``module`` (under :attr:`lock`); the first saves its state."""
        saved = self.kept.get(module)
        if saved is None:
            saved = self.kept[module] = _SavedState(module)
        saved.holders += 1

    def leave(self, module: nn.Module) -> None:
        """One holder fewer; the last gives ``module`` its saved state back."""
        with self.lock:
            saved = self.kept[module]
            saved.holders -= 1
            if not saved.holders:
                del self.kept[module]
                saved.restore()

    def after_fork(self) -> None:
        """Fresh locks in a forked child: one held by a thread of the parent would be held there for good."""
        self.lock = threading.Lock()
        self.forward_locks = weakref.WeakKeyDictionary()


_KEEPING = _Keeping()
if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_KEEPING.after_fork)
