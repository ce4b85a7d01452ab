"""Train a target classifier on a :class:`DataBundle`: one readable loop, seeded, CPU or GPU.

AdamW with a one-cycle learning-rate schedule converges in a handful of
epochs on the small data sets caex works with; light augmentation (random
shifts of a few pixels, label-preserving for every source, unlike flips for
digits) keeps the ResNets from memorising the training split.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from caex.classifier.arch import ClassifierNet, architecture, build_classifier_network
from caex.data.types import DataBundle, ImageSet, require_bundle
from caex.errors import TrainingError
from caex.utils import (autocast_context, global_rng_kept, progress, resolve_device, seed_weights, software_versions,
                        torch_generator)
from caex.utils.checks import check_counts, check_positive_finite
from caex.utils.device import autocast_dtype
from caex.utils.warn import warn

DEFAULT_BATCH_SIZE = 32
WEIGHT_DECAY = 0.05


@dataclass
class TrainMetrics:
    """What a training run reports (and the bundle records)."""

    test_accuracy: float
    train_accuracy: float  # running accuracy over the last epoch, on augmented images
    train_loss: float  # mean loss over the last epoch
    epochs: int
    steps: int
    seconds: float
    #: How the weights came about (seed, settings, precision, threads, versions): a seed gives the same weights
    #: only with the same settings, precision, thread count, processor and packages.
    recipe: dict[str, Any] = field(default_factory=dict)
    #: The test split's images per class: the accuracy's chance level is the commonest class's share of them.
    test_class_counts: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own random offset in ``[-max_shift, max_shift]``, edges replicated.

    One gather for the whole batch: pad once, then index per-image row and
    column windows.
    """
    batch, _, height, width = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="replicate").permute(0, 2, 3, 1)  # [B, H', W', C]
    offsets = torch.randint(0, 2 * max_shift + 1, (2, batch), generator=generator, device=generator.device)
    offsets = offsets.to(images.device)
    rows = offsets[0, :, None] + torch.arange(height, device=images.device)  # [B, H]
    cols = offsets[1, :, None] + torch.arange(width, device=images.device)  # [B, W]
    index = torch.arange(batch, device=images.device)[:, None, None]
    return padded[index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # [B, C, H, W], channels-last


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of ``[N, C, H, W]`` images (the wrapper's normalisation)."""
    mean = images.mean(dim=(0, 2, 3))
    std = images.std(dim=(0, 2, 3)).clamp_min(1e-3)  # a constant channel must not divide by zero
    return mean.tolist(), std.tolist()


def predict_split(net: ClassifierNet, images_set: ImageSet, device: torch.device, batch_size: int = 256
                  ) -> torch.Tensor:
    """``net``'s predicted classes ``[N]`` (on the CPU) for a split: eval mode, no grad, batched."""
    net.eval()
    predictions = [torch.zeros(0, dtype=torch.long)]  # an empty split gives an empty tensor
    with torch.no_grad():
        for start in range(0, len(images_set), batch_size):
            images = images_set.images[start:start + batch_size].to(device, memory_format=torch.channels_last)
            predictions.append(net(images).argmax(dim=1).cpu())
    return torch.cat(predictions)


def resolve_settings(arch: str, epochs: int | None, batch_size: int, lr: float | None) -> tuple[int, float]:
    """``(epochs, lr)`` with the architecture's defaults filled in; one-line errors for unusable values.

    Separate from training so the CLI can refuse bad settings before loading any data.
    """
    spec = architecture(arch)
    epochs = spec.epochs if epochs is None else epochs
    lr = spec.lr if lr is None else lr
    check_counts({"epochs": epochs, "batch_size": batch_size}, {"epochs": 1, "batch_size": 1}, TrainingError)
    check_positive_finite(f"training {arch}: lr", lr, TrainingError)
    return int(epochs), lr


#: Fewest steps a one-cycle schedule gets: with 4 its warm-up has length 0 and torch divides by zero, and
#: below 8 it is no warm-up and decay but a jump to near 0 and back.
MIN_ONE_CYCLE_STEPS = 8


def _one_cycle(optimizer: torch.optim.Optimizer, lr: float, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Warm up for a quarter of the steps, then anneal (one cycle); a constant ``lr`` for very short runs."""
    if total_steps < MIN_ONE_CYCLE_STEPS:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps, pct_start=0.25)


class NearChanceWarning(UserWarning):
    """A trained classifier does little better than chance, or never recognises a class its test split holds."""


def _warn_if_near_chance(arch: str, predictions: torch.Tensor, labels: torch.Tensor, class_names: list[str],
                         epochs: int) -> None:
    """Warn when the network does little better than chance on the classes the test split holds, or never
    recognises one of them: a classifier at chance is nothing to explain, and as a CAE's class critic it teaches
    noise. Judged by balanced accuracy (the mean of the per-class recalls), which plain accuracy against the
    commonest class's share is not: that told a perfect classifier of a rare class (5 images of 305) it had
    learned little, and hid a class it never predicted."""
    if not len(labels):  # nothing tested, nothing to compare
        return
    counts = torch.bincount(labels, minlength=len(class_names))
    hits = torch.bincount(labels[predictions == labels], minlength=len(class_names))
    tested = counts > 0
    recall = hits[tested] / counts[tested]
    classes = int(tested.sum())
    balanced, chance = float(recall.mean()), 1 / classes
    never = [class_names[k] for k in tested.nonzero().squeeze(1)[recall == 0].tolist()]
    blind = f"recognises no test image of class(es) {', '.join(never)}"
    if classes > 1 and balanced <= chance + 0.05:  # one class tested measures no choice: no chance level
        also = f"; it {blind}" if never else ""
        warn(f"{arch}: balanced test accuracy {balanced:.3f} (the mean of the per-class recalls) is near chance "
             f"({chance:.3f} for {classes} classes){also}; it learned little in {epochs} epoch(s): train longer "
             "(epochs=, --epochs) or on more images before explaining it", NearChanceWarning)
    elif never:
        warn(f"{arch}: {blind} (recall 0, which the overall accuracy hides); explanations of that class explain a "
             "model that never names it", NearChanceWarning)


#: Steps between reads of the running loss (the finite check and the progress bar): each read waits for the GPU.
READ_EVERY = 20


@torch.inference_mode(False)  # also inside a caller's torch.inference_mode() or torch.no_grad(), which left
@torch.enable_grad()  # nothing to train (enable_grad alone does not lift inference mode)
def train_classifier(bundle: DataBundle, arch: str = "resnet18", *, epochs: int | None = None,
                     batch_size: int = DEFAULT_BATCH_SIZE, lr: float | None = None, seed: int = 0,
                     device: str | torch.device = "auto", verbose: bool = False,
                     augment: bool = True) -> tuple[ClassifierNet, TrainMetrics]:
    """Train ``arch`` on ``bundle.train`` and measure it on ``bundle.test``.

    Returns the network (eval mode, on ``device``, normalisation fitted to the
    training images) and its :class:`TrainMetrics`. ``epochs``/``lr`` default
    per architecture (:data:`~caex.classifier.arch.ARCHITECTURES`). Trainings in threads of one process draw
    their seeded initial weights one at a time (:func:`~caex.utils.seed.global_rng_kept`), so each gets the weights
    it gets alone.
    """
    require_bundle(bundle)  # its test split measures the network
    epochs, lr = resolve_settings(arch, epochs, batch_size, lr)
    device = resolve_device(device)
    generator = torch_generator(seed)  # shuffling and augmentation
    started = time.perf_counter()

    mean, std = channel_stats(bundle.train.images)
    with global_rng_kept(device):
        seed_weights(seed)  # weight initialisation
        net = build_classifier_network(arch, channels=bundle.channels, num_classes=bundle.num_classes,
                                       image_size=bundle.image_size, mean=mean, std=std)
    net = net.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    images, labels = bundle.train.images.to(device), bundle.train.labels.to(device)
    steps_per_epoch = max(len(labels) // batch_size, 1)  # drop the ragged last batch: BatchNorm dislikes tiny ones
    scheduler = _one_cycle(optimizer, lr, epochs * steps_per_epoch)
    max_shift = max(bundle.image_size // 16, 1)

    bar = progress(total=epochs * steps_per_epoch, desc=f"train {arch}", unit="step", enabled=verbose)
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(labels), generator=generator).to(device)
        # Summed on the device and read every READ_EVERY steps: a read per step would make the GPU wait each time.
        loss_sum, correct = torch.zeros((), device=device), torch.zeros((), dtype=torch.long, device=device)
        for step in range(steps_per_epoch):
            index = order[step * batch_size:(step + 1) * batch_size]
            x, y = images[index], labels[index]
            x = random_shift(x, max_shift, generator) if augment else x.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, cpu_bf16=True):
                logits = net(x)
                loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(dim=1) == y).sum()
            bar.update()
            if (step + 1) % READ_EVERY == 0 or step + 1 == steps_per_epoch:
                seen = (step + 1) * min(batch_size, len(labels))
                train_loss, train_accuracy = float(loss_sum) / seen, int(correct) / seen
                if not math.isfinite(train_loss):  # NaN weights train on to no purpose: stop, naming the fix
                    raise TrainingError(f"training {arch}: the loss became {train_loss} in epoch {epoch + 1}; "
                                        "try a smaller --lr")
                bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{train_loss:.3f}",
                                acc=f"{train_accuracy:.3f}", refresh=False)  # drawn with the next update
    bar.close()

    predictions = predict_split(net, bundle.test, device)
    test_accuracy = int((predictions == bundle.test.labels).sum()) / max(len(predictions), 1)
    _warn_if_near_chance(arch, predictions, bundle.test.labels, bundle.class_names, epochs)
    net = net.to(memory_format=torch.contiguous_format).eval()
    recipe = {"arch": arch, "seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr, "augment": augment,
              "precision": str(autocast_dtype(device, cpu_bf16=True)).removeprefix("torch."), "device": device.type,
              "versions": software_versions()}
    metrics = TrainMetrics(test_accuracy=test_accuracy, train_accuracy=train_accuracy,
                           train_loss=train_loss, epochs=epochs, steps=epochs * steps_per_epoch,
                           seconds=time.perf_counter() - started, recipe=recipe,
                           test_class_counts=bundle.test.class_counts(bundle.num_classes))
    return net, metrics
