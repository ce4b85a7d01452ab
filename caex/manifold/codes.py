"""Encode a data set into its class codes: the table every global analysis starts from."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from caex.data.spec import as_recorded
from caex.data.types import DataBundle, ImageSet
from caex.utils import atomic_write_text, module_device, progress

if TYPE_CHECKING:
    from caex.classifier import Classifier
    from caex.model import CAE


def individual_codes(cae: CAE, images: torch.Tensor) -> torch.Tensor:
    """Individual codes of one batch of images (no grad, fp32 like every inference here, on the CAE's device)."""
    device = module_device(cae)
    with torch.no_grad():
        return cae.encode_individual(images.to(device))


def decode_codes(cae: CAE, class_codes: torch.Tensor, individual: torch.Tensor) -> torch.Tensor:
    """Float32 images of one batch of (class code, individual code) pairs (no grad, on the CAE's device)."""
    device = module_device(cae)
    with torch.no_grad():
        return cae.decode(class_codes.to(device), individual.to(device)).float()


@dataclass
class CodesTable:
    """One row per image: where it came from, its label, the classifier's prediction and its class code."""

    codes: torch.Tensor  # [N, D] float32, CPU
    labels: torch.Tensor  # [N] int64
    predictions: torch.Tensor  # [N] int64, the target classifier's argmax
    splits: list[str]  # "train" / "test" per row
    sources: list[str]
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def code_dim(self) -> int:
        return int(self.codes.shape[1])

    def split(self, name: str) -> CodesTable:
        """The rows of one split, in their original order."""
        rows = [i for i, split in enumerate(self.splits) if split == name]
        index = torch.as_tensor(rows, dtype=torch.long)
        return CodesTable(self.codes[index], self.labels[index], self.predictions[index],
                          [name] * len(rows), [self.sources[i] for i in rows], self.class_names)


def encode_image_set(cae: CAE, classifier: Classifier, images: ImageSet, *, split: str, class_names: list[str],
                     batch_size: int = 256, verbose: bool = False) -> CodesTable:
    """Class codes (via ``cae.class_codes``) and predictions for every image, one batch at a time."""
    device = module_device(cae)
    codes, predictions = [], []
    batches = range(0, len(images), batch_size)
    for start in progress(batches, desc=f"encoding {split}", total=len(batches), unit="batch", enabled=verbose):
        batch = images.images[start:start + batch_size]
        codes.append(cae.class_codes(batch.to(device), batch_size=batch_size).float().cpu())
        predictions.append(classifier.predict(batch).cpu())
    code_dim = codes[0].shape[1] if codes else 0
    return CodesTable(
        codes=torch.cat(codes) if codes else torch.zeros(0, code_dim),
        labels=images.labels.clone(),
        predictions=torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long),
        splits=[split] * len(images),
        sources=list(images.sources),
        class_names=list(class_names),
    )


def encode_bundle(cae: CAE, classifier: Classifier, data: DataBundle, *, batch_size: int = 256,
                  verbose: bool = False) -> CodesTable:
    """Train rows then test rows of a data bundle in one table."""
    parts = [encode_image_set(cae, classifier, getattr(data, split), split=split, class_names=data.class_names,
                              batch_size=batch_size, verbose=verbose) for split in ("train", "test")]
    return CodesTable(
        codes=torch.cat([part.codes for part in parts]),
        labels=torch.cat([part.labels for part in parts]),
        predictions=torch.cat([part.predictions for part in parts]),
        splits=[split for part in parts for split in part.splits],
        sources=[source for part in parts for source in part.sources],
        class_names=list(data.class_names),
    )


def codes_csv_text(table: CodesTable) -> str:
    """CSV text with columns source, split, label, label_name, prediction, prediction_name, c0..c{D-1}; a source
    file by its absolute path (:func:`~caex.data.spec.as_recorded`), as explanations record theirs, so rows join."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    code_columns = [f"c{i}" for i in range(table.code_dim)]
    writer.writerow(["source", "split", "label", "label_name", "prediction", "prediction_name", *code_columns])
    codes = table.codes.double().tolist()  # Python values once, not a tensor index per cell
    for source, split, label, prediction, code in zip(table.sources, table.splits, table.labels.tolist(),
                                                      table.predictions.tolist(), codes, strict=True):
        writer.writerow([as_recorded(source), split, label, table.class_names[label], prediction,
                         table.class_names[prediction], *(f"{value:.6g}" for value in code)])
    return buffer.getvalue()


def write_codes_csv(path: str | os.PathLike, table: CodesTable) -> Path:
    """``table`` as ``codes.csv`` (:func:`codes_csv_text`), written atomically: a reader never sees half a file."""
    return atomic_write_text(path, codes_csv_text(table))
