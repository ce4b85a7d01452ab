"""Training-batch augmentation: exact mirrors and whole-pixel shifts, seeded, wired into the trainer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from caex.data import DataBundle, ImageSet, load_dataset
from caex.errors import TrainingError
from caex.model import CAE, CAEConfig, Discriminator
from caex.training import TrainConfig, train_cae
from caex.training.augment import augment_batch, symmetric_index
from caex.training.distributed import init_distributed
from caex.training.trainer import BBCFETrainer
from caex.utils.seed import keyed_generator


def _shifted(image: torch.Tensor, dy: int, dx: int, mirror: bool) -> torch.Tensor:
    """The reference: mirror, then move the content by (dy, dx) with padding and slicing."""
    if mirror:
        image = image.flip(-1)
    height, width = image.shape[-2:]
    padded = torch.nn.functional.pad(image[None], (abs(dx),) * 2 + (abs(dy),) * 2, mode="replicate")[0]
    # replicate equals symmetric padding for pads of one pixel, which is all the reference needs
    return padded[..., abs(dy) - dy: abs(dy) - dy + height, abs(dx) - dx: abs(dx) - dx + width]


def test_symmetric_index_mirrors_about_the_border() -> None:
    assert symmetric_index(torch.arange(-3, 9), 5).tolist() == [2, 1, 0, 0, 1, 2, 3, 4, 4, 3, 2, 1]


def test_off_is_the_identity_and_draws_are_seeded() -> None:
    images = torch.rand(6, 2, 8, 10)
    assert augment_batch(images, keyed_generator(0), hflip=False, max_shift=0) is images
    first = augment_batch(images, keyed_generator(3, 0, 7), hflip=True, max_shift=2)
    assert torch.equal(first, augment_batch(images, keyed_generator(3, 0, 7), hflip=True, max_shift=2))
    assert not torch.equal(first, augment_batch(images, keyed_generator(3, 0, 8), hflip=True, max_shift=2))


def test_each_image_is_an_exact_mirror_and_shift_of_itself() -> None:
    images = torch.rand(64, 3, 9, 11)
    out = augment_batch(images, keyed_generator(1), hflip=True, max_shift=1)
    assert out.shape == images.shape
    found = []
    for image, moved in zip(images, out):  # exactly one move per image reproduces it
        moves = [(dy, dx, mirror) for dy in (-1, 0, 1) for dx in (-1, 0, 1) for mirror in (False, True)
                 if torch.equal(_shifted(image, dy, dx, mirror), moved)]
        assert len(moves) == 1
        found.append(moves[0])
    assert {mirror for *_, mirror in found} == {False, True}
    assert {dy for dy, *_ in found} == {-1, 0, 1} and {dx for _, dx, _ in found} == {-1, 0, 1}


def test_a_shift_moves_content_by_whole_pixels() -> None:
    image = torch.zeros(1, 1, 8, 8)
    image[..., 3, 4] = 1.0
    out = augment_batch(image.expand(200, -1, -1, -1), keyed_generator(2), hflip=False, max_shift=2)
    brightest = out[:, 0].flatten(1).argmax(1)
    rows, columns = brightest.div(8, rounding_mode="floor"), brightest % 8
    assert torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(200))  # moved, never blurred or duplicated
    assert set((rows - 3).tolist()) == {-2, -1, 0, 1, 2} and set((columns - 4).tolist()) == {-2, -1, 0, 1, 2}


def test_the_trainer_augments_its_batches_reproducibly() -> None:
    config = CAEConfig.preset("tiny", image_size=16, channels=1, num_classes=2)
    images, labels = torch.rand(8, 1, 16, 16), torch.arange(8) % 2

    def batch(**augment) -> torch.Tensor:
        train_config = TrainConfig.preset("tiny", tensorboard=False, **augment)
        trainer = BBCFETrainer(CAE(config), Discriminator(config), images, labels, train_config,
                               init_distributed("cpu"))
        return trainer.batch(5)[0]

    plain, augmented = batch(), batch(hflip=True, max_shift=3)
    assert torch.equal(augmented, batch(hflip=True, max_shift=3))  # a resumed run sees the same batch
    assert not torch.equal(plain, augmented)
    # mirrors and shifts only move pixels: each image keeps (at most) its own values
    for before, after in zip(plain, augmented):
        assert set(after.unique().tolist()) <= set(before.unique().tolist())


@pytest.mark.parametrize("mirror_symmetric, requested, expected", [
    (True, None, True), (False, None, False), (True, False, False), (False, True, True)])
def test_flips_follow_the_data_unless_asked(tmp_path, mirror_symmetric, requested, expected) -> None:
    images = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    split = ImageSet(images, torch.arange(8) % 2)
    data = DataBundle(split, split, ["a", "b"], spec="test", mirror_symmetric=mirror_symmetric)
    config = CAEConfig.preset("tiny", image_size=16, channels=1, num_classes=2)
    train_cae(data, config, TrainConfig.preset("tiny", iters=1, tensorboard=False, hflip=requested), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["hflip"] is expected


def test_only_the_synthetic_source_declares_mirror_symmetry(tmp_path) -> None:
    assert load_dataset("synthetic:per_class=4,size=32").mirror_symmetric
    npz = tmp_path / "data.npz"
    np.savez(npz, train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.array([0, 1, 0, 1]))
    assert not load_dataset(str(npz)).mirror_symmetric


def test_negative_shift_is_named() -> None:
    with pytest.raises(TrainingError, match="max_shift=-1"):
        TrainConfig.preset("tiny", max_shift=-1)
