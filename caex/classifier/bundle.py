"""The classifier bundle folder: weights, metadata and ready-to-run exports side by side.

A bundle holds ``classifier.safetensors`` (the :class:`ClassifierNet` state,
normalisation buffers included), ``classifier.json`` (:class:`ClassifierInfo`),
``classifier.torchscript.pt`` (a scripted wrapper taking data-range images) and,
optionally, ``classifier.onnx``. Every file is written atomically.
"""

from __future__ import annotations

import copy
import importlib.util
import operator
import io
import json
import os
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save as safetensors_bytes

from caex.classifier.arch import ClassifierNet
from caex.classifier.base import check_output_count
from caex.data.spec import as_recorded
from caex.data.types import check_class_names
from caex.errors import ClassifierError
from caex.utils.checks import check_counts
from caex.utils.io import atomic_write_bytes, newer_format, replaced_together, write_json
from caex.utils.warn import quiet

if TYPE_CHECKING:
    from caex.classifier.train import TrainMetrics

WEIGHTS_FILE = "classifier.safetensors"
INFO_FILE = "classifier.json"
TORCHSCRIPT_FILE = "classifier.torchscript.pt"
ONNX_FILE = "classifier.onnx"

#: Fixed export opset so bundles from different machines read the same everywhere.
ONNX_OPSET = 17


def bundle_folder(path: Path) -> Path:
    """The folder whose ``classifier.json`` describes ``path``: a bundle folder itself, or the folder holding a
    model file (TorchScript, ONNX, weights), so an export copied out with its json keeps its metadata."""
    return path.parent if path.is_file() else path


#: The newest ``classifier.json`` format this caex reads (:attr:`ClassifierInfo.version`).
INFO_VERSION = 1


@dataclass(kw_only=True)
class ClassifierInfo:
    """What a bundle records about its classifier (the contents of ``classifier.json``).

    ``class_names``, ``image_size`` and ``channels`` describe any model. ``arch``, ``mean``, ``std`` and
    ``small_stem`` describe a PyTorch state dict (a bundle writes them all); an ONNX or TorchScript export
    carries its architecture and normalisation inside its graph, so the json beside one may leave them out.
    """

    arch: str | None = None
    class_names: list[str]
    image_size: int
    channels: int
    mean: list[float] | None = None
    std: list[float] | None = None
    small_stem: bool | None = None
    test_accuracy: float | None = None
    test_class_counts: list[int] | None = None  # the test split's images per class: what the accuracy is against
    data_spec: str | None = None
    data_seed: int | None = None  # the seed of the data's train/test split (DataBundle.seed)
    caex_version: str = ""
    training: dict[str, Any] | None = None  # TrainMetrics.recipe: seed, settings, precision, threads, versions
    outputs: str | None = None  # an export's outputs: "logits", "probabilities" or "sigmoid" (None: read by row)
    #: Raised when a field changes meaning; a json without one (a user's own, beside an export) reads as 1.
    version: int = INFO_VERSION

    @classmethod
    def read(cls, path: str | os.PathLike) -> ClassifierInfo:
        """Parse a ``classifier.json``, with one-line errors for a missing, corrupt or incomplete file."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ClassifierError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ClassifierError(f"{path}: not a readable classifier.json ({exc})") from None
        known = {field.name for field in fields(cls)}
        if not isinstance(raw, dict):
            raise ClassifierError(f"{path}: not a classifier.json (expected a JSON object)")
        newer = newer_format(raw.get("version", 1), INFO_VERSION)
        if newer:
            raise ClassifierError(f"{path}: {newer}")
        missing = [field.name for field in fields(cls) if field.default is MISSING and field.name not in raw]
        if missing:
            raise ClassifierError(f"{path}: classifier.json lacks {', '.join(missing)}")
        info = cls(**{key: value for key, value in raw.items() if key in known})
        info.check(path)
        return info

    def check(self, path: str | os.PathLike) -> None:
        """One-line errors naming ``path`` for fields of the wrong kind (a hand-edited json, say)."""
        optional = {"arch", "mean", "std"}  # absent (None) in the json beside an ONNX or TorchScript export
        wrong = [name for name, value, kind in (
            ("arch", self.arch, str), ("image_size", self.image_size, int), ("channels", self.channels, int),
            ("class_names", self.class_names, list), ("mean", self.mean, list), ("std", self.std, list))
            if not (value is None and name in optional) and (not isinstance(value, kind) or isinstance(value, bool))]
        wrong += [name for name, values in (("mean", self.mean), ("std", self.std)) if isinstance(values, list)
                  and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)]
        if wrong:
            raise ClassifierError(f"{path}: classifier.json has a wrong kind of value for {', '.join(wrong)}")
        check_counts({"image_size": self.image_size, "channels": self.channels}, 1, ClassifierError,
                     prefix=f"{path}: ")
        check_class_names(self.class_names, str(path), ClassifierError)  # they name output files and captions


def check_onnx_export() -> None:
    """A one-line error where an ONNX export cannot run: it needs the onnx package (the ``onnx`` extra), and
    without it failed only after the training, as an unexpected error."""
    if importlib.util.find_spec("onnx") is None:
        raise ClassifierError("an ONNX export (--onnx, onnx=True) needs the onnx package; install the extra: "
                              "pip install 'caex[onnx]'")


def save_bundle(net: ClassifierNet, out_dir: str | os.PathLike, *, class_names: list[str], image_size: int,
                test_accuracy: float | None = None, data_spec: str | None = None,
                data_seed: int | None = None, training: dict[str, Any] | None = None,
                onnx: bool = False, test_class_counts: list[int] | None = None,
                metrics: TrainMetrics | None = None) -> ClassifierInfo:
    """Write the bundle of a trained ``net`` into ``out_dir`` (created as needed); returns its info.

    ``metrics``, :func:`~caex.classifier.train_classifier`'s, records what the training measured: the test
    accuracy, ``test_class_counts`` (the test split's images per class, without which an accuracy reads against
    1/K) and ``training`` (how it was trained, its ``recipe``); each may also be given alone.
    """
    from caex import __version__

    _check_bundle_arguments(net, class_names, image_size)
    if onnx:
        check_onnx_export()
    if metrics is not None:
        test_accuracy = metrics.test_accuracy if test_accuracy is None else test_accuracy
        test_class_counts = metrics.test_class_counts if test_class_counts is None else test_class_counts
        training = metrics.recipe if training is None else training

    out_dir = Path(out_dir)
    net = copy.deepcopy(net).to("cpu").to(memory_format=torch.contiguous_format).eval()
    info = ClassifierInfo(arch=net.arch, class_names=list(class_names), image_size=operator.index(image_size),
                          channels=int(net.mean.shape[1]), mean=net.mean.flatten().tolist(),
                          std=net.std.flatten().tolist(), small_stem=net.small_stem,
                          test_accuracy=test_accuracy, test_class_counts=test_class_counts,
                          data_spec=as_recorded(data_spec),
                          data_seed=data_seed,
                          caex_version=__version__, training=training, outputs="logits")
    state = {key: value.contiguous() for key, value in net.state_dict().items()}
    # Staged and moved in together, the json last: a full disk or a crash while replacing a bundle leaves the
    # old one whole, never new weights under the old json (which later commands used without a word).
    with replaced_together(out_dir, marker=INFO_FILE) as staging:
        atomic_write_bytes(staging / WEIGHTS_FILE, safetensors_bytes(state))
        atomic_write_bytes(staging / TORCHSCRIPT_FILE, torchscript_bytes(net))
        if onnx:
            example = torch.full((2, info.channels, image_size, image_size), 0.5)  # traced, not drawn: no RNG
            atomic_write_bytes(staging / ONNX_FILE, onnx_bytes(net, example))
        write_json(staging / INFO_FILE, asdict(info))
        if not onnx:  # written: an earlier bundle's export must not pass for one of these weights beside the json
            (out_dir / ONNX_FILE).unlink(missing_ok=True)
    return info


def _check_bundle_arguments(net: object, class_names: object, image_size: object) -> None:
    """One-line errors before anything is written: a bundle that only :func:`load_classifier` refuses (or, with a
    negative image size, loads and takes no image) is found out after the training, by whoever opens it."""
    if not isinstance(net, ClassifierNet):
        raise ClassifierError("save_bundle: expected a caex ClassifierNet (from build_classifier_network or "
                              f"train_classifier), got {type(net).__name__}; save another model as a TorchScript "
                              f"or ONNX file with a {INFO_FILE} beside it")
    names = check_class_names(class_names, "save_bundle", ClassifierError)
    check_output_count(net.head.out_features, names, "save_bundle")
    check_counts({"image_size": image_size}, 1, ClassifierError, prefix="save_bundle: ")


def torchscript_bytes(net: ClassifierNet) -> bytes:
    """The scripted wrapper (``forward`` and ``features``) as bytes for ``torch.jit.load``."""
    buffer = io.BytesIO()
    with quiet(FutureWarning):  # deprecated upstream, still the portable format
        torch.jit.save(torch.jit.script(net), buffer)
    return buffer.getvalue()


def onnx_bytes(net: ClassifierNet, example: torch.Tensor) -> bytes:
    """An ONNX graph ``images [batch, C, H, W] in [0, 1] -> logits [batch, K]`` with a dynamic batch axis."""
    buffer = io.BytesIO()
    with quiet():  # the TorchScript-based exporter announces its deprecation
        # torch types f as a path alone; its TorchScript-based exporter (dynamo=False) writes to a file object too
        torch.onnx.export(net, (example,), buffer, dynamo=False, opset_version=ONNX_OPSET,  # type: ignore[arg-type]
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    return buffer.getvalue()
