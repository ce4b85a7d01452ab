"""What produced a result: the models it used, by content, and the software, machine and time.

A path says where a model was, not what it was: a classifier retrained into the same folder, or a run
folder moved to another machine, would make a path compare wrongly both ways. A digest of the weights
tells the models apart wherever they lie, so results record both, and ``--skip-done`` compares digests.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from typing import Any

import torch
from torch import nn

from caex.utils.versions import software_versions


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """A tensor's memory as bytes for hashing, whatever its dtype (NumPy has no bfloat16), without a copy on CPU."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data


def tensor_digest(*tensors: torch.Tensor) -> str:
    """A short hash of the tensors' values, in order (an input image; a training set's images and labels)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor_bytes(tensor))
    return digest.hexdigest()[:16]


def module_digest(module: nn.Module, *extra: torch.Tensor | None, salt: bytes = b"") -> str:
    """A short hash of ``module``'s weights and buffers (by name), of the ``extra`` tensors given and of ``salt``
    (how the module is used), in that order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor_bytes(tensor))
    for tensor in extra:
        digest.update(b"none" if tensor is None else tensor_bytes(tensor))
    digest.update(salt)
    return digest.hexdigest()[:16]


def file_digest(*paths: str | os.PathLike, salt: str = "") -> str:
    """A short hash of the files' bytes, in order (and ``salt``: how they are read), read in 1 MB pieces."""
    digest = hashlib.sha256(salt.encode())
    for path in paths:
        with open(path, "rb") as handle:
            for piece in iter(lambda: handle.read(1 << 20), b""):
                digest.update(piece)
    return digest.hexdigest()[:16]


def classifier_digest(classifier: object) -> str | None:
    """A short hash of a classifier module's weights; whether its outputs are read as logits in between is part of
    it (a critic read otherwise is another critic). A black box without a module (an ONNX model) gives the digest
    it was loaded with (``weights_digest``: of its file), or ``None`` where it has none."""
    module = getattr(classifier, "module", None)
    if not isinstance(module, nn.Module):
        return getattr(classifier, "weights_digest", None)
    # the salt appended last, as the resume check always hashed it: older checkpoints' digests stay valid
    return module_digest(module, salt=b"read as logits" if getattr(classifier, "logits_module", module) is not module
                         else b"")


def cae_digest(cae: Any) -> str | None:
    """A short hash of a CAE's weights and stored training codes (its guided paths run through them); ``None`` for
    anything that is no module (a user's own explainer may hold none)."""
    if not isinstance(cae, nn.Module):
        return None
    return module_digest(cae, getattr(cae, "train_codes", None), getattr(cae, "train_labels", None))


def model_record(model: object, digest: str | None) -> dict[str, str | None]:
    """Where a model was loaded from (an absolute path, so the record resolves from anywhere) and its digest."""
    source = getattr(model, "source", None)
    return {"source": None if source is None else os.path.abspath(source), "digest": digest}


def run_record(device: torch.device | str, **inputs: Any) -> dict[str, Any]:
    """The record a result carries beside its settings: when, on what device and software, from which inputs (the
    models' :func:`model_record`, a reference image's path, ...)."""
    return {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": str(device),
            "software": software_versions(), **inputs}


def models_record(cae: Any, classifier: object) -> dict[str, dict[str, str | None]]:
    """``model_record`` of a CAE and a classifier, keyed ``cae`` and ``classifier``, for :func:`run_record`."""
    return {"cae": model_record(cae, cae_digest(cae)), "classifier": model_record(classifier,
                                                                                  classifier_digest(classifier))}
