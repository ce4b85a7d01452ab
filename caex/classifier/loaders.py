"""Load a target classifier from whatever the user has, behind the one :class:`Classifier` interface.

Backends: a bundle folder (from ``caex train-classifier``), a TorchScript file,
an architecture name plus a state-dict file (``.safetensors`` or ``.pt``/``.pth``
read with ``weights_only=True``), and an ONNX model run by onnxruntime as a pure
black box. Every failure a user can cause is a one-line :class:`ClassifierError`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import os
import re
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, SupportsIndex

import torch
from torch import nn

from caex.classifier.arch import (ARCHITECTURES, ClassifierNet, build_classifier_network, infer_network_shape,
                                  normalisation, to_wrapper_state_dict)
from caex.classifier.base import (Classifier, check_logits, check_output_count, evaluating, module_lock,
                                 require_classifier)
from caex.classifier.bundle import (
    INFO_FILE,
    ONNX_FILE,
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
    ClassifierInfo,
    bundle_folder,
)
from caex.data.types import DataBundle, require_bundle, warn_other_class_names
from caex.errors import ClassifierError
from caex.utils.device import module_device, resolve_device
from caex.utils.provenance import file_digest
from caex.utils.io import read_safetensors
from caex.utils.seed import global_rng_kept
from caex.utils.warn import quiet, warn

#: The model files caex reads, by name (a PyTorch zip archive, or a pickle of torch's older format, is read
#: whatever its name).
MODEL_SUFFIXES = (".pt", ".pth", ".safetensors", ".onnx")
#: How a file of torch.save's format before its zip archives begins: pickle protocol 2, then torch's magic number.
LEGACY_TORCH_SAVE_HEADER = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"

#: Keys under which training scripts commonly nest a state dict inside a checkpoint.
NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model")


#: What a model file's output may be (``None``: read row by row, logits unless a row is a probability vector).
OUTPUT_KINDS = (None, "logits", "probabilities", "sigmoid")


class OutputReader:
    """A model file's outputs as logits, whatever the exported graph ends with.

    caex explains single-label classifiers. ``kind`` says what the graph returns: ``"logits"``,
    ``"probabilities"`` (softmax) or ``"sigmoid"`` (per-class scores, divided by their sum, which keeps the
    model's ranking and the ratios of its scores; a softmax over them would report 0.88 as 0.47). Left
    ``None``, each row is read on its own, so an image's probabilities never depend on its batch: a row in
    [0, 1] summing to one is a probability vector, any other row logits. Sigmoid scores cannot be told from an
    unsure model's logits row by row, so they are never guessed: a batch that looks like them is warned about
    once, naming ``"outputs": "sigmoid"`` in the ``classifier.json`` beside the file. Differentiable, so
    gradient methods see log-probabilities where a graph ends in a softmax.
    """

    def __init__(self, kind: str | None, source: str) -> None:
        if kind not in OUTPUT_KINDS:
            raise ClassifierError(f"{source}: outputs {kind!r}: choose one of "
                                  f"{', '.join(option for option in OUTPUT_KINDS if option)}")
        self.kind, self.source, self._warned_sigmoid = kind, source, False

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if self.kind == "logits":
            return output
        if self.kind == "probabilities":
            return output.clamp_min(1e-12).log()
        sums = output.sum(dim=1, keepdim=True)
        if self.kind == "sigmoid":
            return (output / sums.clamp_min(1e-12)).clamp_min(1e-12).log()  # softmax(log p) == p
        with torch.no_grad():
            in_unit = ((output >= 0) & (output <= 1)).all(dim=1, keepdim=True)
            probability_rows = in_unit & ((sums - 1).abs() <= 1e-4)
        if len(output) > 1 and in_unit.all() and not probability_rows.any():
            self._warn_sigmoid()
        return torch.where(probability_rows, output.clamp_min(1e-12).log(), output)

    def _warn_sigmoid(self) -> None:
        if not self._warned_sigmoid:
            self._warned_sigmoid = True
            warn(f"{self.source}: every output of a batch lies in [0, 1] without summing to 1, as per-class "
                 "sigmoid scores do; caex reads them as logits (softmax); if they are sigmoid scores, put "
                 '"outputs": "sigmoid" in the classifier.json beside the file (load_classifier(outputs=...), '
                 'TorchClassifier(outputs=...))')


class LogitsOf(nn.Module):
    """A user's module as caex reads it, for every use alike (predictions, gradient methods, the CAE's class
    critic): data-range images to logits, whatever the module returns (a Hugging Face-style output's
    ``"logits"``; probabilities or sigmoid scores through :class:`OutputReader`), one per class name: the
    gradient methods index them by class without a prediction first."""

    def __init__(self, module: nn.Module, reader: OutputReader, class_names: Sequence[str]) -> None:
        super().__init__()
        self.inner, self.reader, self.class_names = module, reader, class_names

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        output = self.inner(images)
        if isinstance(output, Mapping) and "logits" in output:
            output = output["logits"]
        if not isinstance(output, torch.Tensor):
            raise ClassifierError(f"{self.reader.source}: the model returned a {type(output).__name__}; caex needs "
                                  "a tensor of logits [B, K] (wrap it in a module that returns those)")
        return self.reader(check_logits(output, len(images), self.class_names, self.reader.source))


class TorchClassifier(Classifier):
    """A differentiable PyTorch module (our wrapper, a TorchScript file or the user's own) mapping data-range
    images to logits. ``outputs`` says what it returns (:class:`OutputReader`; default: logits for caex's
    networks, read row by row for any other). It runs in eval mode for every prediction, whatever mode the
    caller left it in, on ``device`` (default: where its parameters are; ``"auto"`` as everywhere)."""

    has_gradients = True

    def __init__(self, module: nn.Module, class_names: list[str], image_size: int | None, channels: int | None,
                 device: torch.device | str | None = None, batch_size: int = 256, *, outputs: str | None = None,
                 source: str | os.PathLike = "") -> None:
        # None: where the module is, so wrapping a model never moves it (it is the caller's, used in place)
        device = module_device(module) if device is None else resolve_device(device)
        super().__init__(class_names, image_size, channels, device=device, batch_size=batch_size)
        self._name = str(source) or type(module).__name__
        if isinstance(module, ClassifierNet):  # its head says how many outputs it gives, without running it
            check_output_count(module.head.out_features, self.class_names, self._name)
        self._module = module.to(self.device)
        if outputs is None and isinstance(module, ClassifierNet):
            outputs = "logits"
        reader = OutputReader(outputs, self._name)
        self._logits_module = module if outputs == "logits" else LogitsOf(module, reader, self.class_names)

    @property
    def _described(self) -> str:
        return getattr(self, "source", None) or self._name

    @property
    def module(self) -> nn.Module:
        return self._module

    @property
    def logits_module(self) -> nn.Module:
        return self._logits_module

    @property
    def target_layer(self) -> nn.Module | None:
        return self._module.target_layer if isinstance(self._module, ClassifierNet) else None

    def _logits_batch(self, images: torch.Tensor) -> torch.Tensor:
        with module_lock(self._module), self.evaluating():  # no forward pass through another thread's hooks
            return self._logits_module(images)

    def _features_batch(self, images: torch.Tensor) -> torch.Tensor | None:
        features_of = getattr(self._module, "features", None)
        if not callable(features_of):  # none, or a tensor a user's module keeps under that name
            return None
        with module_lock(self._module), self.evaluating():
            features = features_of(images)
        # caex's networks (and their exports) give [b, F]; torchvision's VGG or DenseNet name their convolutional
        # trunk "features", whose maps are no feature vectors
        return features if isinstance(features, torch.Tensor) and features.ndim == 2 else None

    def __reduce_ex__(self, protocol: SupportsIndex) -> str | tuple[Any, ...]:
        """Pickled as any object, unless its module holds TorchScript, which does not pickle: then loaded again from
        its file in the other process (a spawn DataLoader worker, say), as :func:`load_classifier` loaded it."""
        if not any(isinstance(layer, torch.jit.ScriptModule) for layer in self._module.modules()):
            return super().__reduce_ex__(protocol)
        return _loaded_again(self, "a TorchScript module")

    def __deepcopy__(self, memo: dict[int, Any]) -> TorchClassifier:
        """A copy of everything, a TorchScript module too (which copies, though it does not pickle), as before
        :meth:`__reduce_ex__`."""
        copied = object.__new__(type(self))
        memo[id(self)] = copied
        copied.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return copied

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode for the block, each submodule's own mode after it: dropout and batch statistics would make
        every prediction a different draw, and the caller may be fine-tuning the module between calls
        (:func:`~caex.classifier.base.evaluating`, shared by threads)."""
        with evaluating(self._module):
            yield


class OnnxClassifier(Classifier):
    """An ONNX model run by onnxruntime: probabilities only, no gradients, no features; its outputs are read as
    :class:`OutputReader` says (``outputs``)."""

    has_gradients = False

    def __init__(self, session, class_names: list[str], image_size: int | None, channels: int | None,
                 batch_size: int = 256, fixed_batch: int | None = None, source: str | os.PathLike = "",
                 outputs: str | None = None) -> None:
        super().__init__(class_names, image_size, channels, device="cpu", batch_size=fixed_batch or batch_size)
        self._session = session
        self._input_name = session.get_inputs()[0].name
        self._fixed_batch = fixed_batch
        self._read = OutputReader(outputs, str(source) or "the ONNX model")
        self._model_file, self._outputs = (Path(source) if source else None), outputs

    @functools.cached_property
    def weights_digest(self) -> str | None:
        """Its files' content and how its outputs are read: the model, wherever the files lie (provenance); read
        when first asked (the weights may be gigabytes)."""
        files = _onnx_weight_files(self._model_file) if self._model_file and self._model_file.is_file() else None
        return file_digest(*files, salt=f"outputs={self._outputs}") if files else None

    def _logits_batch(self, images: torch.Tensor) -> torch.Tensor:
        count = len(images)
        if self._fixed_batch is not None and count < self._fixed_batch:  # a graph exported with a fixed batch axis
            images = torch.cat([images, images[-1:].expand(self._fixed_batch - count, -1, -1, -1)])
        output = torch.from_numpy(self._session.run(None, {self._input_name: images.cpu().numpy()})[0]).float()
        return self._read(output[:count])

    def __reduce__(self) -> tuple[Any, ...]:
        """Loaded again from its file in the other process (a spawn DataLoader worker, say), as
        :func:`load_classifier` loaded it: an onnxruntime session does not pickle."""
        return _loaded_again(self, "an onnxruntime session")


def _loaded_again(classifier: Classifier, what: str) -> tuple[Any, ...]:
    """``__reduce__``'s answer for a classifier whose model does not pickle: :func:`load_classifier` with the
    arguments it was loaded with, else a one-line error saying to load it in each process."""
    if classifier.load_arguments is None:
        raise ClassifierError(f"{classifier._described}: {what} cannot be pickled (to another process); load the "
                              "classifier in each process with caex.load_classifier(path)")
    return functools.partial(load_classifier, **classifier.load_arguments), ()


@torch.inference_mode(False)  # weights loaded in a notebook's inference_mode() cell still give gradients
def load_classifier(path: str | os.PathLike, *, arch: str | None = None, num_classes: int | None = None,
                    class_names: Sequence[str] | None = None, image_size: int | None = None,
                    channels: int | None = None, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None, device: str | torch.device = "auto",
                    batch_size: int = 256, probe_shape: tuple[int, int] | None = None,
                    outputs: str | None = None) -> Classifier:
    """Open a classifier from a bundle folder, TorchScript file, ``arch`` + state dict, or ONNX file.

    Metadata comes from the bundle's ``classifier.json`` (also when it sits next
    to a TorchScript/ONNX/weights file); the keyword arguments fill in or
    override it. ``mean``/``std`` apply only to bare state dicts without
    normalisation buffers (default: the json's, else none), so a network
    trained on normalised images sees them normalised. An ONNX or TorchScript
    model gets images in [0, 1] and must normalise inside its graph: mean/std
    given for one are refused, not silently dropped (its json may repeat only
    what the graph already holds, as a bundle's does). ``probe_shape``
    (image size, channels) stands in for a json that is not there: a bare
    model file records no input shape, so it is tried on the images it will get. ``outputs`` says what an ONNX
    or TorchScript export returns (default: the json's ``"outputs"``, else read row by row; see
    :class:`OutputReader`).
    """
    arguments = dict(locals())  # as given, to load it again in another process (pickle)
    if isinstance(path, nn.Module):  # a model in hand, not a file
        raise ClassifierError(f"load_classifier takes a file or folder, not the module {type(path).__name__}; wrap "
                              "it as caex.classifier.TorchClassifier(module, class_names, image_size, channels)")
    path = given = Path(path)
    if not path.exists():
        raise ClassifierError(f"{path}: no such file or folder")
    if not (path.is_dir() or _is_model_file(path)):  # an image or a json, say: torch's zip-reader errors said little
        raise ClassifierError(f"{path}: not a classifier file (expected a bundle folder, "
                              f"{', '.join(MODEL_SUFFIXES[:-1])} or {MODEL_SUFFIXES[-1]})")
    described = bundle_folder(path) / INFO_FILE
    info = ClassifierInfo.read(described) if described.is_file() else None
    if path.is_dir():
        if info is None:
            raise ClassifierError(f"{path}: not a classifier bundle (no {INFO_FILE})")
        path = next((path / name for name in (WEIGHTS_FILE, TORCHSCRIPT_FILE, ONNX_FILE) if (path / name).is_file()),
                    path / WEIGHTS_FILE)
        if not path.is_file():
            raise ClassifierError(f"{path.parent}: bundle has no weights ({WEIGHTS_FILE})")
    recorded = (info.image_size, info.channels) if info else (probe_shape or (None, None))
    image_size = image_size if image_size is not None else recorded[0]
    channels = channels if channels is not None else recorded[1]
    names = list(class_names) if class_names is not None else (info.class_names if info else None)

    if outputs is None and info is not None:  # a model file's; see OutputReader. caex's architectures give logits
        outputs = info.outputs if info.outputs is not None else ("logits" if info.arch is not None else None)
    if path.suffix.lower() == ".onnx":
        if arch is not None:  # an ONNX graph carries its own architecture; arch would be silently unused
            raise ClassifierError(f"{path}: an ONNX model, not a state dict; leave out arch= (--arch)")
        _refuse_normalisation_outside(path, mean, std, info, described, lambda: _onnx_constants(path))
        classifier: Classifier = _load_onnx(path, names, num_classes, image_size, channels, device, batch_size, info,
                                            described, outputs)
        return _with_provenance(classifier, given, info, arguments)
    device = resolve_device(device)
    if arch is None and (path.suffix.lower() == ".safetensors" or _torch_archive_kind(path) == "torch.save"
                         or _is_legacy_torch_save(path)):
        if info is None or info.arch is None:
            where = "" if info is None else f" (none in {described})"
            raise ClassifierError(f"{path}: a bare weights file needs an architecture (arch=, --arch){where}")
        if info.arch not in ARCHITECTURES:  # named here, where the json is known, not deep in the builder
            raise ClassifierError(f"{described}: unknown arch {info.arch!r}; choose one of "
                                  f"{', '.join(ARCHITECTURES)} (an architecture registered with "
                                  "caex.classifier.register_architecture loads where it is registered, as "
                                  "docs/ARCHITECTURE.md shows; classifier.torchscript.pt loads anywhere)")
        arch = info.arch
    if arch is not None:
        if outputs not in (None, "logits"):  # caex's architectures end in a linear layer
            raise ClassifierError(f"{path}: outputs={outputs!r} describes an exported model file's outputs; a "
                                  f"state dict for {arch} returns logits")
        mean = mean if mean is not None else (info.mean if info else None)
        std = std if std is not None else (info.std if info else None)
        net = _load_state_dict_network(path, arch, mean, std)
        classifier = TorchClassifier(net, _class_names(path, int(net.head.out_features), names, num_classes),
                                     image_size, int(net.mean.shape[1]), device=device, batch_size=batch_size)
        return _with_provenance(classifier, given, info, arguments)
    module = _load_torchscript(path)
    _refuse_normalisation_outside(path, mean, std, info, described,
                                  lambda: {name: getattr(module, name, None) for name in ("mean", "std")})
    found_classes = _probe_num_classes(path, lambda x: module(x), image_size, channels, names, num_classes)
    classifier = TorchClassifier(module, _class_names(path, found_classes, names, num_classes), image_size, channels,
                                 device=device, batch_size=batch_size, outputs=outputs, source=path)
    return _with_provenance(classifier, given, info, arguments)


def _with_provenance(classifier: Classifier, source: Path, info: ClassifierInfo | None,
                     arguments: dict[str, Any]) -> Classifier:
    """``classifier`` with where it came from, how it was loaded and, from its json, the data split it was trained
    on."""
    # the path made absolute: another process, or this one after os.chdir, finds the same file
    classifier.source, classifier.load_arguments = str(source), {**arguments, "path": os.path.abspath(source)}
    if info is not None:
        classifier.data_spec, classifier.data_seed = info.data_spec, info.data_seed
    return classifier


def _refuse_normalisation_outside(path: Path, mean: Sequence[float] | None, std: Sequence[float] | None,
                                  info: ClassifierInfo | None, described: Path,
                                  held: Callable[[], dict[str, object]]) -> None:
    """Refuse mean/std for an ONNX or TorchScript model, which caex runs on [0, 1] images as they are.

    Normalising outside the graph would make the export's results depend on a json beside it (and a bundle's
    exports already normalise inside: applying its json again would do it twice), so the rule is one for all
    exports: the normalisation belongs in the graph. A json may still record what the graph holds (a bundle's
    json describes its weights; ``held`` reads the export's ``mean``/``std`` constants) or the identity.
    """
    if mean is not None or std is not None:
        raise ClassifierError(f"{path}: mean=/std= are applied only to state dicts; an ONNX or TorchScript model "
                              "gets images in [0, 1], so bake the normalisation into the exported graph")
    identity = {"mean": 0.0, "std": 1.0}  # nothing to apply
    stated = {} if info is None else {name: values for name, values in (("mean", info.mean), ("std", info.std))
                                      if values is not None and any(v != identity[name] for v in values)}
    if not stated:
        return
    inside = held()
    for name, values in stated.items():
        constant = inside.get(name)
        if not (isinstance(constant, torch.Tensor) and constant.numel() == len(values)
                and torch.allclose(constant.flatten().float(), torch.tensor(values, dtype=torch.float32))):
            raise ClassifierError(f"{described}: {name} {values} would not be applied to {path.name}, which gets "
                                  "images in [0, 1]; bake the normalisation into the exported graph and drop mean "
                                  "and std from the json")


def check_compatible(classifier: Classifier, data: DataBundle) -> None:
    """Raise a one-line :class:`ClassifierError` when ``classifier`` cannot take ``data``'s images and labels."""
    require_classifier(classifier)
    require_bundle(data)
    if classifier.num_classes != data.num_classes:
        raise ClassifierError(f"the classifier has {classifier.num_classes} classes but data {data.spec!r} has "
                              f"{data.num_classes} ({', '.join(data.class_names)})")
    if classifier.channels is not None and classifier.channels != data.channels:
        raise ClassifierError(f"the classifier takes {classifier.channels}-channel images but data {data.spec!r} "
                              f"has {data.channels} (use --channels {classifier.channels})")
    if classifier.image_size is not None and classifier.image_size != data.image_size:
        raise ClassifierError(f"the classifier takes {classifier.image_size}px images but data {data.spec!r} is "
                              f"{data.image_size}px (use --size {classifier.image_size})")
    warn_other_class_names("the classifier", classifier.class_names, f"data {data.spec!r}", data.class_names)
    source = getattr(classifier, "source", None)  # duck-typed classifiers record no provenance
    who = "the classifier" if source is None else f"the classifier {source}"
    data.check_split(who, getattr(classifier, "data_spec", None), getattr(classifier, "data_seed", None))
    try:
        classifier.predict_proba(data.test.images[:1])
    except ClassifierError:  # the model's own fault (outputs that are not one per class name), said as it is
        raise
    except Exception as exc:  # noqa: BLE001 - an unrecorded size or channel count; onnxruntime's errors are no RuntimeError
        raise ClassifierError(f"the classifier cannot take data {data.spec!r}'s "
                              f"{tuple(data.test.images.shape[1:])} images ({_one_line(exc)})") from None


def _class_names(path: Path, found: int, names: list[str] | None, num_classes: int | None) -> list[str]:
    """Class names for a model with ``found`` outputs, checked against what the user or the json said."""
    for expected, what in ((num_classes, "num_classes"), (None if names is None else len(names), "class names")):
        if expected is not None and expected != found:
            raise ClassifierError(f"{path}: the model has {found} outputs but {expected} {what} were given")
    return names if names is not None else [str(index) for index in range(found)]


def _probe_num_classes(path: Path, forward, image_size: int | None, channels: int | None,
                       names: list[str] | None, num_classes: int | None) -> int:
    """The model's class count: from the metadata when known, else one forward pass on a blank image."""
    if image_size is None or channels is None:
        if names is not None:
            return len(names)
        if num_classes is not None:
            return num_classes
        raise ClassifierError(f"{path}: cannot tell the input shape; keep {INFO_FILE} next to it or pass "
                              "image_size= and channels=")
    try:
        with torch.no_grad():
            logits = forward(torch.zeros(1, channels, image_size, image_size))
    except Exception as exc:  # noqa: BLE001 - any backend failure on a blank image means the shape is wrong
        raise ClassifierError(f"{path}: does not take {channels}x{image_size}x{image_size} images "
                              f"({_one_line(exc)})") from None
    return int(torch.as_tensor(logits).shape[-1])


def _is_model_file(path: Path) -> bool:
    """Whether ``path`` may be a model caex reads: named as one (:data:`MODEL_SUFFIXES`), a PyTorch archive, or a
    pickle as ``torch.save`` wrote before its zip format (``model_best.pth.tar``; read only with ``arch=``, as
    weights, never unpickled as objects)."""
    if path.suffix.lower() in MODEL_SUFFIXES:
        return True
    return path.is_file() and (_is_legacy_torch_save(path) or _torch_archive_kind(path) is not None)


def _is_legacy_torch_save(path: Path) -> bool:
    """Whether ``path`` was written by torch.save before its zip format (``model_best.pth.tar``): read as weights
    like a zip one, never as TorchScript."""
    try:
        with path.open("rb") as handle:
            return handle.read(len(LEGACY_TORCH_SAVE_HEADER)) == LEGACY_TORCH_SAVE_HEADER
    except OSError:
        return False


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    try:
        with quiet(FutureWarning):  # deprecated upstream, still what users have
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/ValueError/zipfile errors alike
        raise ClassifierError(f"{path}: not a readable TorchScript file ({_first_sentence(_one_line(exc))}); for "
                              "a state dict pass arch= (--arch)") from None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a ``torch.save``d dict (never unpickling arbitrary objects)."""
    kind = _torch_archive_kind(path)
    if kind == "torchscript":
        raise ClassifierError(f"{path}: a TorchScript file, not a state dict; leave out arch= (--arch)")
    state: object  # what the file holds, checked below
    try:
        if path.suffix.lower() == ".safetensors":
            state = read_safetensors(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - safetensors/pickle/zip errors all mean "unreadable"
        raise ClassifierError(f"{path}: {_unreadable_weights(exc)}") from None
    if isinstance(state, dict):
        nested = [key for key in NESTED_STATE_KEYS if isinstance(state.get(key), dict)]
        state = state[nested[0]] if nested else state
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ClassifierError(f"{path}: does not hold a state dict (a mapping of names to tensors)")
    return state


def _unreadable_weights(exc: BaseException) -> str:
    """Why a weights file cannot be read, in one line. A refusal by ``torch.load(weights_only=True)`` (zip or legacy
    archive alike) is said in caex's words: torch's own advises ``weights_only=False``, which would run whatever
    the file holds."""
    text = str(exc)
    if "weights_only" not in text.lower().replace(" ", "_"):
        return f"not a readable weights file ({_one_line(exc)})"
    if "global" in text.lower():  # a class or function to import: an object, not a tensor
        return ("holds pickled Python objects besides tensors (a whole model saved with torch.save(model)?), which "
                "caex never unpickles; save model.state_dict() or a TorchScript export instead")
    return "not a readable weights file (no pickle of tensors that caex reads; caex never unpickles other objects)"


def _torch_archive_kind(path: Path) -> str | None:
    """``"torchscript"`` or ``"torch.save"`` for PyTorch's two zip formats (only TorchScript holds ``constants.pkl``),
    ``None`` for anything else, so a file handed to the wrong loader can be named for what it is."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = {name.split("/", 1)[-1] for name in archive.namelist()}
    except (OSError, zipfile.BadZipFile):
        return None
    if "constants.pkl" in names:
        return "torchscript"
    return "torch.save" if "data.pkl" in names else None


def _load_state_dict_network(path: Path, arch: str, mean: Sequence[float] | None,
                             std: Sequence[float] | None) -> ClassifierNet:
    """Rebuild ``arch`` around the weights in ``path``; shapes come from the weights themselves."""
    state = to_wrapper_state_dict(_read_state_dict(path))
    channels, num_classes, small_stem = infer_network_shape(arch, state, str(path))
    for name, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) != channels:
            raise ClassifierError(f"{path}: the weights take {channels}-channel images but {len(values)} {name} "
                                  "values were given (classifier.json, mean=/std=)")
    build = functools.partial(build_classifier_network, arch, channels=channels, num_classes=num_classes, mean=mean,
                              std=std, small_stem=small_stem)
    for buffer, values in zip(("mean", "std"), normalisation(channels, mean, std)):
        state.setdefault(buffer, ClassifierNet.normalisation_buffer(values))
    net = _built_on_meta(build)
    on_meta = net is not None
    if net is None:
        net = _built_on_cpu(build)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(key for key in set(state) & set(expected) if state[key].shape != expected[key].shape)
    for keys, problem in ((missing, "lacks"), (unexpected, "has unexpected"), (wrong_shape, "has a wrong shape for")):
        if keys:
            more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
            raise ClassifierError(f"{path}: weights do not match architecture {arch!r} ({problem} key "
                                  f"{keys[0]!r}{more})")
    # a float16 or bfloat16 file loads into the network's float32, as a copy into its parameters always did
    state = {key: value.to(expected[key].dtype) if value.is_floating_point() else value for key, value in state.items()}
    net.load_state_dict(state, assign=on_meta)
    if on_meta and _holds_meta(net):  # a tensor of the network's own beside its weights: build it for real
        net = _built_on_cpu(build)
        net.load_state_dict(state)
    return net.eval()  # built here, not the caller's: inference mode from the start


def _built_on_meta(build: Callable[[], ClassifierNet]) -> ClassifierNet | None:
    """The network to load weights into, built on the meta device: no initial weights are drawn, from the caller's
    random stream or from a training's seeded one in another thread (whose lock is held for the whole training);
    ``None`` where a registered architecture's builder cannot be (it reads a tensor's values)."""
    try:
        with torch.device("meta"):
            return build()
    except Exception:  # noqa: BLE001 - built again on the CPU, where the builder's own error is raised
        return None


def _built_on_cpu(build: Callable[[], ClassifierNet]) -> ClassifierNet:
    """The network built for real; its initial weights, which the file's replace, leave the caller's stream as it
    was (:func:`~caex.utils.seed.global_rng_kept`, which waits for another thread's seeded section)."""
    with global_rng_kept(torch.device("cpu")):
        return build()


def _holds_meta(net: nn.Module) -> bool:
    """Whether a tensor that no state dict holds (a non-persistent buffer, a tensor attribute) is left on meta."""
    attributes = (value for module in net.modules() for value in vars(module).values())
    return any(isinstance(tensor, torch.Tensor) and tensor.is_meta
               for tensor in itertools.chain(net.parameters(), net.buffers(), attributes))


def _load_onnx(path: Path, names: list[str] | None, num_classes: int | None, image_size: int | None,
               channels: int | None, device: str | torch.device, batch_size: int, info: ClassifierInfo | None,
               described: Path, outputs: str | None = None) -> OnnxClassifier:
    onnxruntime = _import_onnx_module(path, "onnxruntime")
    providers = ["CPUExecutionProvider"]
    if resolve_device(device).type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = onnxruntime.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ClassifierError(f"{path}: not a readable ONNX model ({_one_line(exc)})") from None
    static_batch, static_channels, static_size = _onnx_input_axes(path, session.get_inputs()[0].shape)
    if info is not None:  # the json claims what the graph fixes: a contradiction is a wrong json, not a detail
        for name, claimed, fixed in (("channels", info.channels, static_channels),
                                     ("image_size", info.image_size, static_size)):
            if fixed is not None and claimed != fixed:
                raise ClassifierError(f"{described}: says {name} {claimed} but {path.name}'s input shape "
                                      f"{session.get_inputs()[0].shape} fixes it at {fixed}")
    channels = static_channels or channels  # the graph's own axes are facts; offered shapes fill only free ones
    image_size = static_size or image_size
    output_dim = session.get_outputs()[0].shape[-1]
    if isinstance(output_dim, int):
        found = output_dim
    else:
        input_name = session.get_inputs()[0].name
        found = _probe_num_classes(path, lambda x: session.run(None, {input_name: x.numpy()})[0],
                                   image_size, channels, names, num_classes)
    return OnnxClassifier(session, _class_names(path, found, names, num_classes), image_size, channels,
                          batch_size=batch_size, fixed_batch=static_batch, source=path, outputs=outputs)


def _onnx_input_axes(path: Path, shape: list) -> tuple[int | None, int | None, int | None]:
    """The fixed (batch, channels, size) of an NCHW input shape, ``None`` for free axes; one-line errors for a
    shape caex cannot feed (not 4-D, channels last, not 1 or 3 channels, not square)."""
    fixed = [dim if isinstance(dim, int) else None for dim in shape]
    if len(shape) != 4 or fixed[1] not in (None, 1, 3):
        last = " (channels last?)" if len(shape) == 4 and fixed[3] in (1, 3) else ""
        raise ClassifierError(f"{path}: the ONNX input has shape {shape}{last}; caex needs NCHW input "
                              "[batch, channels, height, width] with 1 or 3 channels")
    if None not in fixed[2:] and fixed[2] != fixed[3]:
        raise ClassifierError(f"{path}: the ONNX input has shape {shape}; caex needs square images (height = width)")
    return fixed[0], fixed[1], fixed[2] or fixed[3]


def _onnx_constants(path: Path) -> dict[str, object]:
    """The graph's constants (initializers) by name, read only to compare a json's mean/std with the export's."""
    onnx = _import_onnx_module(path, "onnx")
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # noqa: BLE001 - protobuf and onnx raise their own exception types
        raise ClassifierError(f"{path}: not a readable ONNX model ({_one_line(exc)})") from None
    return {tensor.name: torch.from_numpy(numpy_helper.to_array(tensor).copy()) for tensor in graph.initializer
            if tensor.name in ("mean", "std")}


def _onnx_weight_files(path: Path) -> list[Path] | None:
    """The model file and the external data files its weights lie in (torch's exporter writes them to
    ``<name>.onnx.data`` by default), or ``None`` where ``onnx`` cannot list them (then no digest: paths compare)."""
    try:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - no onnx, or protobuf's own exception types
        return None
    locations = {entry.value for tensor in graph.initializer for entry in tensor.external_data
                 if entry.key == "location"}
    return [path, *(path.parent / location for location in sorted(locations))]


def _import_onnx_module(path: Path, name: str):
    """``onnxruntime`` or ``onnx``, or a one-line error naming the extra that installs both."""
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise ClassifierError(f"{path}: reading ONNX models needs {name}; install the extra: "
                              "pip install 'caex[onnx]'") from None


def _first_sentence(text: str) -> str:
    """``text`` up to its first full stop: torch's zip reader follows its reason with four sentences of
    speculation about corrupted checkpoints."""
    return re.split(r"(?<=\.)\s+(?=[A-Z])", text, maxsplit=1)[0].rstrip(".")


def _one_line(exc: BaseException) -> str:
    """The gist of ``exc`` in one line; TorchScript prints its own traceback first and the actual error last."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return lines[-1] if lines[0].startswith("The following operation failed in the TorchScript") else lines[0]
