"""The CAE bundle: Ec, Es and G behind a data-range API, plus the stored training codes.

A run folder holds ``config.json`` (format, :class:`CAEConfig`, class names, data spec),
``model.safetensors`` (the three networks) and ``codes.safetensors`` (the class
codes of the training set, their labels and the class centroids), so the
explainer and the manifold analysis never need the training images again.
Nothing is unpickled on load.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from caex.data.types import DataBundle, check_class_names, check_image_batch
from caex.errors import ModelError
from caex.model.config import CAEConfig
from caex.model.networks import ClassEncoder, Decoder, IndividualEncoder
from caex.utils.device import resolve_device
from caex.utils.io import atomic_write_bytes, newer_format, read_json, read_safetensors, write_json
from caex.utils.progress import progress

if TYPE_CHECKING:
    from caex.classifier.base import Classifier

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CODES_FILE = "codes.safetensors"
FORMAT = "caex-cae"
FORMAT_VERSION = 1


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """Data range [0, 1] -> the networks' range [-1, 1]."""
    return images * 2.0 - 1.0


def to_data_range(images: torch.Tensor) -> torch.Tensor:
    """The networks' range [-1, 1] -> data range [0, 1]."""
    return (images + 1.0) * 0.5


def class_centroids(codes: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean code [num_classes, D] of each class of ``codes [N, D]``; NaN rows for classes without codes."""
    sums = codes.new_zeros((num_classes, codes.shape[1])).index_add_(0, labels, codes)
    counts = torch.bincount(labels, minlength=num_classes).to(codes.dtype)
    return sums / counts[:, None]  # 0 / 0 -> NaN for empty classes, by design


def kaiming_init(module: nn.Module) -> None:
    """He-normal weights and zero biases for every conv and linear layer (MUNIT's generator init).

    PyTorch's default init shrinks activations at every layer of the
    normalisation-free class encoder, so after global pooling all images start
    with practically the same class code (spread ~1e-3); the decoder then learns
    to ignore it and the code collapses. He init keeps the spread ~100x larger
    from the first step, which is what lets BBCFE separate classes in minutes.
    """
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, a=0.0, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class CAE(nn.Module):
    """Class Association Embedding: ``x -> (c, s)`` and ``(c, s) -> x``, all in the data range.

    ``train_codes``, ``train_labels`` and ``centroids`` are non-persistent
    buffers (they follow ``.to(device)`` but live in ``codes.safetensors``, not
    in the weights); they are ``None`` until :meth:`set_train_codes` is called.
    """

    train_codes: torch.Tensor | None
    train_labels: torch.Tensor | None
    centroids: torch.Tensor | None

    def __init__(self, config: CAEConfig, class_names: list[str] | None = None,
                 data_spec: str | None = None, data_seed: int | None = None) -> None:
        super().__init__()
        self.config = config
        # What it was trained on (provenance; None when unknown): the data spec and the seed of its split, and
        # the run folder it was loaded from.
        self.data_spec, self.data_seed = data_spec, data_seed
        self.source: str | None = None
        names = list(class_names) if class_names is not None else [str(k) for k in range(config.num_classes)]
        if len(names) != config.num_classes:
            raise ModelError(f"{len(names)} class names given for a CAE with num_classes={config.num_classes}")
        self.class_names = names
        self.class_encoder = ClassEncoder(config)
        self.individual_encoder = IndividualEncoder(config)
        self.decoder = Decoder(config)
        self.apply(kaiming_init)
        for name in ("train_codes", "train_labels", "centroids"):
            self.register_buffer(name, None, persistent=False)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- differentiable core -------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, C, H, W] in [0, 1] -> (class code [B, D], individual code [B, Cs, h, w]). Differentiable, so
        the codes hold the graph that made them: keep them from ``torch.no_grad()``, or :meth:`class_codes`."""
        x = self._model_input(images)
        return self.class_encoder(x), self.individual_encoder(x)

    def encode_individual(self, images: torch.Tensor) -> torch.Tensor:
        """The individual codes alone (what swaps and decoded code mixtures need), without the class encoder."""
        return self.individual_encoder(self._model_input(images))

    def _model_input(self, images: torch.Tensor) -> torch.Tensor:
        """A checked batch in the networks' range and dtype (float64 is cast); a single ``[C, H, W]`` image is
        refused, because the convolutions would take it as unbatched and return a code of the wrong shape."""
        check_image_batch(images, channels=self.config.channels, size=self.config.image_size, what="CAE input",
                          error=ModelError)
        return to_model_range(images.to(next(self.parameters()).dtype))

    def decode(self, class_code: torch.Tensor, individual_code: torch.Tensor) -> torch.Tensor:
        """(class code [B, D], individual code [B, Cs, h, w] as :meth:`encode` gives them) -> images
        [B, C, H, W] in [0, 1]; codes of another float dtype are cast, as images are in :meth:`encode`."""
        config = self.config
        individual_shape = (config.individual_channels, config.individual_size, config.individual_size)
        if (class_code.ndim != 2 or class_code.shape[1] != config.code_dim or individual_code.ndim != 4
                or tuple(individual_code.shape[1:]) != individual_shape or len(class_code) != len(individual_code)):
            raise ModelError(f"decode: expected class codes [B, {config.code_dim}] and individual codes "
                             f"[B, {', '.join(map(str, individual_shape))}] for this CAE, got "
                             f"{tuple(class_code.shape)} and {tuple(individual_code.shape)}")
        dtype = next(self.parameters()).dtype
        return to_data_range(self.decoder(class_code.to(dtype), individual_code.to(dtype)))

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """``G(E(x))``, differentiable as :meth:`encode` and :meth:`decode` are."""
        return self.decode(*self.encode(images))

    def swap(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        """``G(c_B, s_A)``: each image of A with the class features of its partner in B (or of B's one image);
        differentiable as :meth:`encode` and :meth:`decode` are."""
        if len(images_b) not in (1, len(images_a)):
            raise ModelError(f"swap: {len(images_b)} images in B for {len(images_a)} in A; give 1 or {len(images_a)}")
        _, individual_a = self.encode(images_a)
        class_b = self.class_encoder(self._model_input(images_b))
        return self.decode(class_b.expand(len(images_a), -1), individual_a)

    def check_split(self, data: DataBundle) -> None:
        """Warn when ``data`` is the split of this CAE's training data with another seed: its test images would
        include training images."""
        data.check_split("the CAE" if self.source is None else f"the CAE in {self.source}", self.data_spec,
                         self.data_seed)

    # -- batched helpers -----------------------------------------------------------------
    @torch.no_grad()
    def class_codes(self, images: torch.Tensor, batch_size: int = 256, verbose: bool = False) -> torch.Tensor:
        """Class codes [N, D] of any number of images (tensor or array), in batches, on the images' device;
        ``verbose`` shows a progress bar (a whole training set of 100,000 images takes minutes on a CPU)."""
        images = torch.as_tensor(images)
        device, dtype = self.device, next(self.parameters()).dtype
        # cast on the way: a NumPy float64 array cannot even be moved to MPS, which has no float64
        to_device = dict(device=device, dtype=dtype) if images.is_floating_point() else dict(device=device)
        starts = range(0, len(images), batch_size)
        codes = [self.class_encoder(self._model_input(images[start:start + batch_size].to(**to_device)))
                 .float().to(images.device)
                 for start in progress(starts, desc="class codes", total=len(starts), unit="batch", enabled=verbose)]
        return torch.cat(codes) if codes else images.new_zeros((0, self.config.code_dim))

    def set_train_codes(self, codes: torch.Tensor, labels: torch.Tensor) -> None:
        """Store the training set's class codes and labels and derive the class centroids.

        A class without any training code gets a NaN centroid (there is nothing to average).
        """
        if codes.ndim != 2 or codes.shape[1] != self.config.code_dim or len(codes) != len(labels):
            raise ModelError(f"train codes must be [N, {self.config.code_dim}] with N labels, got "
                             f"{tuple(codes.shape)} and {tuple(labels.shape)}")
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < self.config.num_classes:
            raise ModelError(f"train labels must lie in 0..{self.config.num_classes - 1}, got "
                             f"{int(labels.min())}..{int(labels.max())}")
        codes = codes.detach().float().to(self.device)
        labels = labels.detach().long().to(self.device)
        self.train_codes, self.train_labels = codes, labels
        self.centroids = class_centroids(codes, labels, self.config.num_classes)

    # -- persistence ---------------------------------------------------------------------
    def save(self, run_dir: str | os.PathLike) -> Path:
        """Write ``config.json``, ``model.safetensors`` and (if set) ``codes.safetensors`` atomically."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        # An earlier bundle's config.json would vouch for a save cut short here (new weights, old codes).
        (run_dir / CONFIG_FILE).unlink(missing_ok=True)
        weights = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        atomic_write_bytes(run_dir / WEIGHTS_FILE, save(weights))
        if self.train_codes is not None and self.train_labels is not None and self.centroids is not None:
            codes = {"train_codes": self.train_codes, "train_labels": self.train_labels,
                     "centroids": self.centroids}
            atomic_write_bytes(run_dir / CODES_FILE, save({k: v.cpu().contiguous() for k, v in codes.items()}))
        else:  # an earlier run's codes would load as this CAE's (another model's centroids and paths)
            (run_dir / CODES_FILE).unlink(missing_ok=True)
        # config.json last: its presence marks a complete bundle.
        write_json(run_dir / CONFIG_FILE, {"format": FORMAT, "version": FORMAT_VERSION, "config": self.config.to_dict(),
                                           "class_names": self.class_names, "data_spec": self.data_spec,
                                           "data_seed": self.data_seed})
        return run_dir

    @classmethod
    @torch.inference_mode(False)  # weights loaded in a notebook's inference_mode() cell still give gradients
    def load(cls, run_dir: str | os.PathLike, device: str | torch.device = "auto") -> CAE:
        """Load a bundle written by :meth:`save` (or by training) onto ``device`` (``"auto"``: the accelerator if
        any, as :func:`caex.classifier.load_classifier`); errors name the file at fault."""
        run_dir = Path(run_dir)
        config_path, weights_path, codes_path = run_dir / CONFIG_FILE, run_dir / WEIGHTS_FILE, run_dir / CODES_FILE
        if not run_dir.is_dir():
            raise ModelError(f"{run_dir}: no such CAE run folder")
        if not config_path.is_file():
            raise ModelError(f"{config_path}: missing; {run_dir} is not a finished CAE run")
        try:  # only the reading: an error in building the networks is a bug to show, not a bad file
            meta = read_json(config_path)
            if meta.get("format") != FORMAT:
                raise ModelError(f"not a CAE config (format {meta.get('format')!r})")
            newer = newer_format(meta.get("version", 1), FORMAT_VERSION)
            if newer:
                raise ModelError(newer)
            config = CAEConfig.from_dict(meta["config"])
            names = meta.get("class_names")
        except ModelError as exc:
            raise ModelError(f"{config_path}: {exc}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # ValueError: bad JSON or field values
            raise ModelError(f"{config_path}: unreadable CAE config ({type(exc).__name__}: {exc})") from None
        if names is not None:  # they name output files and captions
            names = check_class_names(names, str(config_path), ModelError)
        if not weights_path.is_file():
            raise ModelError(f"{weights_path}: missing CAE weights")
        try:
            # Built on the meta device (no memory, no random draws), so that a config.json asking for a network
            # far larger than its weights (width: 1000000) is refused by the weights' header before anything is
            # allocated; to_empty then allocates exactly what the checked weights fill.
            with torch.device("meta"):
                model = cls(config, names, meta.get("data_spec"), meta.get("data_seed"))
        except ModelError as exc:  # a config that parses but describes no valid CAE: name the file
            raise ModelError(f"{config_path}: {exc}") from None
        model.source = str(run_dir)
        try:
            _check_stored_shapes(model, weights_path)
            model.to_empty(device="cpu")
            model.load_state_dict(_read_tensors(weights_path), strict=True, source=weights_path)
        except ModelError as exc:  # a field missing from config.json took its default, which the weights refute
            assumed = sorted({field.name for field in dataclasses.fields(CAEConfig)} - set(meta["config"]))
            if not assumed:
                raise
            raise ModelError(f"{exc}; {config_path} lacks {', '.join(assumed)}, so defaults were assumed") from None
        if codes_path.is_file():
            codes = _read_tensors(codes_path)
            try:
                model.set_train_codes(codes["train_codes"], codes["train_labels"])
            except KeyError as exc:
                raise ModelError(f"{codes_path}: missing tensor {exc}") from None
            except ModelError as exc:
                raise ModelError(f"{codes_path}: {exc}") from None
        return model.to(resolve_device(device)).eval()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False, *,
                        source: str | os.PathLike | None = None):
        """``nn.Module.load_state_dict`` with shape/key mismatches reported as one-line ModelErrors."""
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        except RuntimeError as exc:
            first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
            raise ModelError(f"{source or 'state dict'}: weights do not match the CAE config ({first})") from None


def as_cae(cae: CAE | str | os.PathLike, device: str | torch.device | None = None, *,
           classifier: Classifier | None = None) -> CAE:
    """``cae`` itself, or the CAE of a run folder: every stage that takes a CAE takes its run folder too, as
    :func:`caex.evaluation.evaluate` always did. A run folder loads onto ``device``, else beside a
    differentiable ``classifier``, else onto ``"auto"`` (an ONNX classifier runs on the CPU, but the CAE need
    not)."""
    if not isinstance(cae, (str, os.PathLike)):
        return cae
    if device is None:
        module = getattr(classifier, "module", None)  # None for a black box, and without a classifier
        device = classifier.device if classifier is not None and module is not None else "auto"
    return CAE.load(cae, device=device)


def _check_stored_shapes(model: CAE, path: Path) -> None:
    """Compare ``model``'s tensor shapes with those in the header of the safetensors file ``path`` (read without
    loading any data), so that a config.json describing a huge network is refused before it is allocated."""
    try:
        with safe_open(str(path), framework="pt") as stored:
            shapes = {name: tuple(stored.get_slice(name).get_shape()) for name in stored.keys()}  # noqa: SIM118 - no iterator
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from None
    for name, tensor in model.state_dict().items():
        if name in shapes and shapes[name] != tuple(tensor.shape):
            raise ModelError(f"{path}: weights do not match the CAE config (size mismatch for {name}: the weights "
                             f"hold {list(shapes[name])}, the config asks for {list(tensor.shape)})")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return read_safetensors(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from None
