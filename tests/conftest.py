"""Shared test fixtures. Keep them tiny: the whole suite must run in minutes on 2 CPU cores.

* ``tiny_synthetic`` — a small synthetic :class:`~caex.data.DataBundle`
  (4 classes x 10 images, 32x32, one channel, with lesion masks; 8 train / 2 test
  per class). Session-scoped and shared: do not modify its tensors in place.
* ``single_thread`` (autouse) — one intra-op torch thread for every test: the
  suite's tensors are tiny, and on a 2-core machine a second thread only adds
  synchronisation (and spins badly when the machine is shared).
* ``bars_not_silenced`` (autouse) — clears ``TQDM_DISABLE`` and ``TQDM_MININTERVAL``: a shell that sets them
  (as a CI log might) would silence or thin the progress bars the tests read.
* ``one_path_explanation`` — a hand-made :class:`~caex.explain.Explanation` of one 16 px image (a path of 4
  steps from class ``cnv``), for the rendering and report tests that need no model.
* ``make_image_folder`` — writes ``root/<class>/*.png`` (optionally under
  ``train/`` and ``test/``) in ``tmp_path`` and returns the root.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from caex.data import DataBundle, load_dataset


@pytest.fixture(autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def bars_not_silenced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)


@pytest.fixture(scope="session")
def tiny_synthetic() -> DataBundle:
    return load_dataset("synthetic:classes=4,per_class=10,size=32", seed=0)


@pytest.fixture
def make_image_folder(tmp_path: Path) -> Callable[..., Path]:
    """``make(classes={"a": 5, "b": 5}, mode="L", size=(30, 40), splits=None)`` -> folder root.

    Each class gets a different mean brightness so the classes are distinguishable;
    ``splits={"train": 4, "test": 1}`` writes per-class counts under train/ and test/.
    """

    def make(classes: dict[str, int] | None = None, *, mode: str = "L", size: tuple[int, int] = (30, 40),
             splits: dict[str, int] | None = None, root: Path | None = None) -> Path:
        classes = classes or {"a": 5, "b": 5}
        root = root or tmp_path / "images"
        rng = np.random.default_rng(0)
        layout = {split: dict.fromkeys(classes, count) for split, count in splits.items()} if splits \
            else {"": classes}
        for split, counts in layout.items():
            for label, (name, count) in enumerate(counts.items()):
                folder = root / split / name
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
                    pixels = rng.integers(0, 60, shape) + 120 * label
                    Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
        return root

    return make


@pytest.fixture
def one_path_explanation() -> Callable[..., SimpleNamespace]:
    """``make(target=, flip_step=, unflipped=, probability=)``: what
    :func:`caex.explain.render.save_explanation` reads of an Explanation, for one image predicted ``cnv`` whose
    4-step path heads for class ``target`` (0: ``cnv`` itself, 1: ``dme``)."""

    def make(*, target: int, flip_step: int, unflipped: bool, probability: float) -> SimpleNamespace:
        steps = 4
        return SimpleNamespace(
            class_names=["cnv", "dme"], prediction=torch.tensor([0]), target=torch.tensor([target]),
            flip_step=torch.tensor([flip_step]), end_step=torch.tensor([steps - 1]),
            frames=torch.rand(1, steps, 1, 16, 16), target_probs=torch.full((1, steps), probability),
            saliency=torch.rand(1, 16, 16), predicted=torch.tensor([True]), unflipped=torch.tensor([unflipped]),
            input_probs=torch.tensor([[0.9, 0.1]]), path="guided", path_nodes=None, saliency_method="weighted")

    return make
