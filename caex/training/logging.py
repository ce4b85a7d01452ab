"""Training records: every loss term per logged step to ``log.jsonl`` / ``log.csv`` / TensorBoard,
and PNG grids of originals, reconstructions and class swaps in ``samples/``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision.utils import make_grid

from caex.utils.drawing import banded, scaled_font
from caex.utils.io import atomic_write_bytes, atomic_write_text
from caex.utils.numbers import significant

LOG_JSONL = "log.jsonl"
LOG_CSV = "log.csv"
TENSORBOARD_FOLDER = "tensorboard"
#: The smallest side of an image in the sample grids, reached by whole-pixel (nearest-neighbour) enlargement:
#: 32 px images made a 70 x 138 px grid.
GRID_TILE = 96
#: Pixels between the images of a sample grid.
GRID_PADDING = 2
#: A grid's row names at 1/8 of a row's height (12 px beside 96 px images): the size of ``caex explain``'s frame
#: captions, so the band stays narrow beside the grid ("reconstruction" is 87 px wide).
ROW_LABEL_SCALE = 8
#: A row name longer than this many images is wrapped between words.
ROW_LABEL_TILES = 2


class RunLogger:
    """Appends one record per logged step; on resume, drops records past the checkpoint.

    ``log.jsonl`` is appended and flushed line by line (``tail -f`` works);
    ``log.csv`` is rewritten atomically from the same records at every
    :meth:`flush`, so both always agree.
    """

    def __init__(self, run_dir: Path, *, resume_from: int | None = None, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self.records: list[dict[str, Any]] = []
        jsonl = run_dir / LOG_JSONL
        if resume_from is not None and jsonl.is_file():
            lines = jsonl.read_text(encoding="utf-8").splitlines()
            self.records = [r for r in map(_parse_record, lines) if r is not None and r["iter"] <= resume_from]
        atomic_write_text(jsonl, "".join(json.dumps(r) + "\n" for r in self.records))
        self._jsonl = jsonl.open("a", encoding="utf-8")
        self._tensorboard = _summary_writer(run_dir / TENSORBOARD_FOLDER, resume_from) if tensorboard else None

    def log(self, iteration: int, values: dict[str, float]) -> None:
        record = {"iter": iteration, **{k: significant(float(v)) for k, v in values.items()}}
        self.records.append(record)
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tensorboard is not None:
            for name, value in values.items():
                self._tensorboard.add_scalar(f"train/{name}", value, iteration)

    def flush(self) -> None:
        """Rewrite ``log.csv`` from all records so far."""
        if not self.records:
            return
        columns = list(dict.fromkeys(key for record in self.records for key in record))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")  # as every other CSV caex writes
        writer.writeheader()
        writer.writerows(self.records)
        atomic_write_text(self.run_dir / LOG_CSV, buffer.getvalue())
        if self._tensorboard is not None:
            self._tensorboard.flush()

    def close(self) -> None:
        self.flush()
        self._jsonl.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def _parse_record(line: str) -> dict[str, Any] | None:
    """One ``log.jsonl`` record, or ``None`` for a blank line or one a kill cut short."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("iter"), int) else None


def _summary_writer(folder: Path, resume_from: int | None):
    """A TensorBoard writer when ``torch.utils.tensorboard`` imports, else ``None`` (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder), purge_step=resume_from)


def save_image_grid(path: Path, rows: list[torch.Tensor], row_labels: Sequence[str] = ()) -> Path:
    """Stack equally long rows of data-range images [n, C, H, W] into one PNG, atomically: each image enlarged to
    at least :data:`GRID_TILE` px, each row named by its entry of ``row_labels`` (if given) in a band on the left,
    wrapped at :data:`ROW_LABEL_TILES` images' width."""
    images = torch.cat(rows).detach().float().clamp(0, 1).cpu()
    factor = -(-GRID_TILE // min(images.shape[-2:]))  # ceiling division; 1 for large images
    images = images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    grid = make_grid(images, nrow=len(rows[0]), padding=GRID_PADDING, pad_value=1.0)
    array = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        array = array[:, :, 0]
    picture = Image.fromarray(array)
    if row_labels:
        pitch = images.shape[-2] + GRID_PADDING
        picture = banded(picture, row_labels, scaled_font(pitch, ROW_LABEL_SCALE),
                         row_centres=[GRID_PADDING + row * pitch + pitch // 2 for row in range(len(row_labels))],
                         wrap_width=ROW_LABEL_TILES * images.shape[-1])
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
