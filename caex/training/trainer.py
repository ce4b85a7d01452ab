"""BBCFE training of a CAE (paper §III-C/D): pairs from different classes, all eight loss
terms both ways, a discriminator step then a generator step, checkpoints, resume and DDP."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import itertools
import json
import math
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from caex.classifier.base import Classifier, module_lock, module_state_kept, require_classifier
from caex.data.sources import is_hidden
from caex.data.spec import as_recorded
from caex.data.types import DataBundle, ImageSet
from caex.errors import DataError, ModelError, TrainingError
from caex.model import CAE, CAEConfig, Discriminator, to_data_range, to_model_range
from caex.model.cae import CODES_FILE as CAE_CODES_FILE
from caex.model.cae import CONFIG_FILE as CAE_CONFIG_FILE
from caex.model.cae import WEIGHTS_FILE as CAE_WEIGHTS_FILE
from caex.training import losses
from caex.training.augment import augment_batch
from caex.training.checkpoint import (CHECKPOINT_FILE, TRAIN_CONFIG_FILE, Checkpoint, capture_rng, load_checkpoint,
                                      restore_optimizer, restore_rng, save_checkpoint)
from caex.training.distributed import (DistContext, any_rank, barrier, gather_objects, init_distributed,
                                       max_over_ranks, mean_over_ranks, raise_together, shutdown)
from caex.training.logging import LOG_CSV, LOG_JSONL, TENSORBOARD_FOLDER, RunLogger, save_image_grid
from caex.training.monitor import code_separation
from caex.training.pairs import PairSampler
from caex.training.stopping import stop_requests
from caex.utils.checks import check_counts, check_number_fields, check_positive_finite
from caex.utils.device import autocast_context, autocast_dtype
from caex.utils.io import LOCK_FILE, folder_lock, read_json, write_json
from caex.utils.progress import progress
from caex.utils.provenance import cae_digest, classifier_digest, tensor_digest
from caex.utils.seed import global_rng_kept, keyed_generator, seed_weights
from caex.utils.versions import software_versions
from caex.utils.warn import warn

SUMMARY_FILE = "summary.json"
SAMPLES_FOLDER = "samples"
#: Key of the augmentation draws, beside the pair sampler's streams 0 and 1 (caex.training.pairs).
AUGMENT_STREAM = 2

#: TrainConfig fields a resumed run must share with its checkpoint (they decide the batches, the losses
#: or the optimiser; the others only change how long the run goes and what it records).
TRAJECTORY_FIELDS = ("batch_size", "lr", "betas", "weight_decay", "lr_halvings", "weights", "dc", "labels",
                     "critic_noise", "hflip", "max_shift", "ema", "amp", "cpu_bf16", "layout", "seed")

#: Checkpoint header entries a resume reads (beside the optimiser and scheduler states every checkpoint holds).
RESUME_META = ("cae_config", "train_config", "class_names")

#: Memory layouts of the training tensors and networks (TrainConfig.layout).
LAYOUTS = ("auto", "channels-last", "contiguous")

TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(iters=20, batch_size=4, lr=1e-3, lr_halvings=0, log_every=1, sample_every=10, ckpt_every=10),
    "small": dict(iters=6000, batch_size=4, lr=1e-3, lr_halvings=2, log_every=10, sample_every=250,
                  ckpt_every=250, max_shift=4,
                  weights=losses.LossWeights(recon_image=20.0, classification=10.0, recon_pyramid=20.0,
                                            code_classification=5.0)),
    "paper": dict(),
}


@dataclass
class TrainConfig:
    """How to train. The defaults are the paper's (Adam lr 1e-4, betas (0.5, 0.999), weight decay
    1e-4, lr halved 10 times over 200k iterations of batch 1).

    The ``small`` preset departs from them on purpose: on a 2-core CPU the
    paper's lr and 200k iterations do not fit a 10-minute budget, so it uses
    lr 1e-3, 4 pairs per iteration (8 images, each trained both ways; batch 8
    halved the iterations per minute without learning faster per minute),
    only 2 halvings over 6,000 iterations (10-12 minutes on 2 cores, by load), so
    the lr stays high for most of the short run, and a 10x class-loss weight
    (λ6 = 10, eq. 6): with the paper's λ6 = 1 the reconstruction terms
    (λ1 = λ4 = 10) dominate the short run and swap success rose about half as
    fast. Against that strong class signal the image reconstruction weight is
    doubled (λ1 = 20, eq. 1), and a term the paper does not have is added:
    eq. 1 on 2x/4x/8x average-pooled copies (``recon_pyramid`` = 20, see
    :func:`losses.pyramid_l1`). Without it some seeds' reconstructions dropped
    the small dark dme cysts: the speckle noise decides the sign of the
    pixel-level L1 gradient and a cyst is a few per cent of the pixels, so the
    class term was met by texture the classifier reads as dme instead of by
    cysts (seed 2: worst swap pair 37%, dme SMOTE 46%; with the term 85% and
    93%). Over 3 seeds it lifts the worst swap pair from 70% to 83% on
    average, but seed 1 still loses the cysts; docs/EXPERIMENTS.md has
    every figure. Finally the preset augments its batches: each image is
    shifted by up to 4 pixels and, where the data is mirror-symmetric (the
    synthetic set), mirrored at random (``max_shift``, ``hflip``; see
    :mod:`caex.training.augment`). With 320 images per class the class encoder
    otherwise could separate the training set by memorising it: one seed
    reached 99% swap success on training pairs and 72% on test pairs; with
    shifts 94%, with both augmentations 97%. Last, a linear probe reads the
    class from the class code (``code_classification`` = 5, see
    :class:`BBCFEForward`): without it, fresh draws of the recipe kept the codes
    of two classes together for up to 3,000 iterations, and one never reached
    90% swap success in 10 minutes; with it, every draw measured did. The preset
    is meant to be used with ``dc="classifier"`` (the target classifier as the
    class critic), which is what reaches high swap success within minutes; a
    discriminator class head must first learn the classes itself.

    ``cpu_bf16`` trains on a CPU with native bf16 units in bf16 autocast and
    channels-last tensors: 1.35x the iterations per second of the default
    (fp32, default layout) in interleaved runs on 2 cores. It is off because
    it did not reach a good model sooner: on seeds 0 and 1 of the training
    benchmark it needed 3,300 and 3,600 iterations to reach 90% swap success
    where the default (before the probe) needed 2,100 and 1,500 (later in wall time too). Any
    round-off-level change of the arithmetic did the same (5 runs, one never
    reached 90%): the recipe was tuned on the default's trajectories, which a
    checkout reproduces bit for bit (docs/EXPERIMENTS.md).

    ``layout`` pins the memory layout of the networks and batches instead of
    the "auto" choice above: "channels-last" alone runs a CPU in fp32 at 1.14x
    the iterations per second, "contiguous" keeps bf16 in the default layout.
    Both change the arithmetic at round-off level, so a run follows another
    trajectory; this is how the benchmark's sensitivity was measured.

    ``ema`` (off in every preset) keeps an exponential moving average of Ec,
    Es and G beside the weights the optimiser updates, and saves the average as
    the CAE: on the synthetic benchmark 0.999 reconstructed 0.004-0.005 better
    over 2 seeds and reached 90% swap success 100-180 s later
    (docs/EXPERIMENTS.md).
    """

    iters: int = 200_000
    batch_size: int = 1            # pairs per iteration (each pair is trained A->B and B->A)
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 1e-4
    lr_halvings: int = 10          # lr is halved this many times, evenly over the run
    weights: losses.LossWeights = field(default_factory=losses.LossWeights)
    dc: str | None = None          # eq. 6 class logits from "discriminator" (Dc) or the frozen "classifier";
    #                                None: the classifier when one with gradients is given, else the discriminator
    labels: str = "dataset"        # train on "dataset" labels or the classifier's "predicted" labels
    critic_noise: float = 0.0      # std of Gaussian noise on the swaps the frozen classifier critic sees ([0, 1])
    hflip: bool | None = None      # mirror training images at random; None: if the data is mirror-symmetric
    max_shift: int = 0             # shift training images by up to this many pixels along each axis
    ema: float = 0.0               # decay of a moving average of Ec, Es and G, saved as the CAE; 0: no average
    seed: int = 0
    device: str = "auto"
    amp: bool = True               # bf16 autocast on accelerators
    cpu_bf16: bool = False         # with amp, also on CPUs with native bf16 units, channels-last (see above)
    layout: str = "auto"           # "auto" (channels-last on CUDA and with cpu_bf16), "channels-last", "contiguous"
    log_every: int = 10
    sample_every: int = 500
    ckpt_every: int = 1000
    tensorboard: bool = True
    time_limit: float | None = None  # seconds of training after which to stop early (None: run all iters)

    def __post_init__(self) -> None:
        if isinstance(self.weights, dict):
            self.weights = losses.LossWeights(**self.weights)
        if not isinstance(self.weights, losses.LossWeights):  # a hand-edited train_config.json, say
            raise TrainingError(f"weights={self.weights!r}: must map loss terms to weights")
        if not (isinstance(self.betas, (list, tuple)) and len(self.betas) == 2
                and all(isinstance(beta, (int, float)) and 0 <= beta < 1 for beta in self.betas)):
            raise TrainingError(f"betas={self.betas!r}: must be two numbers in [0, 1)")
        self.betas = (self.betas[0], self.betas[1])  # a JSON file's list as the pair it is
        if self.dc not in (None, "discriminator", "classifier"):
            raise TrainingError(f"dc={self.dc!r}: choose 'discriminator' or 'classifier'")
        if self.labels not in ("dataset", "predicted"):
            raise TrainingError(f"labels={self.labels!r}: choose 'dataset' or 'predicted'")
        check_number_fields(self, TrainingError)  # a float or a string would fail deep inside a started run
        check_counts({name: getattr(self, name) for name in ("iters", "batch_size", "log_every", "sample_every",
                                                             "ckpt_every")}, 1, TrainingError)
        check_counts({"lr_halvings": self.lr_halvings, "max_shift": self.max_shift}, 0, TrainingError)
        check_positive_finite("lr", self.lr, TrainingError)
        if self.time_limit is not None and not self.time_limit > 0:
            raise TrainingError(f"time_limit={self.time_limit!r}: must be a positive number of seconds")
        if not 0.0 <= self.ema < 1.0:
            raise TrainingError(f"ema={self.ema!r}: must be in [0, 1) (0 keeps no average)")
        if not 0.0 <= self.critic_noise < 1.0:
            raise TrainingError(f"critic_noise={self.critic_noise!r}: must be in [0, 1)")
        if self.cpu_bf16 and not self.amp:
            raise TrainingError("cpu_bf16=True asks for bf16 autocast, which amp=False turns off; choose one")
        if self.layout not in LAYOUTS:
            raise TrainingError(f"layout={self.layout!r}: choose one of {', '.join(LAYOUTS)}")
        if self.critic_noise and self.dc == "discriminator":
            raise TrainingError(f"critic_noise={self.critic_noise!r} noises what the classifier critic sees; "
                                f"it needs dc='classifier' (--dc classifier, with --classifier CLF; got {self.dc!r})")

    @classmethod
    def preset(cls, name: str, *, loss: dict[str, float] | None = None, **overrides: Any) -> TrainConfig:
        """The training settings that go with a :class:`CAEConfig` preset, with overrides; ``loss`` changes
        single :class:`losses.LossWeights` fields and keeps the preset's other weights (``weights`` replaces
        them all)."""
        if name not in TRAIN_PRESETS:
            raise TrainingError(f"unknown training preset {name!r}; choose one of {', '.join(TRAIN_PRESETS)}")
        for given, kind in ((overrides, cls), (loss or {}, losses.LossWeights)):
            unknown = set(given) - {field.name for field in dataclasses.fields(kind)}
            if unknown:
                raise TrainingError(f"unknown {kind.__name__} field(s): {', '.join(sorted(unknown))}")
        fields = {**TRAIN_PRESETS[name], **overrides}
        if loss:
            weights = fields.get("weights", losses.LossWeights())
            weights = losses.LossWeights(**weights) if isinstance(weights, dict) else weights
            fields["weights"] = dataclasses.replace(weights, **loss)
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        if "channels_last" in data:  # runs saved before 2026-12-02: True meant what "auto" means now
            data.setdefault("layout", "auto" if data.pop("channels_last") else "contiguous")
        return cls(**data)


def memory_format(config: TrainConfig, device: torch.device) -> torch.memory_format:
    """The ``layout`` asked for; "auto" is channels-last on CUDA and on a CPU with ``cpu_bf16``, else the default.

    "auto" keeps a CPU in fp32 in the default layout: channels-last alone gained 1.14x in short interleaved
    runs and nothing measurable over a 10-minute benchmark, and its benchmark runs learned the swaps as
    slowly as the bf16 ones (see :class:`TrainConfig`).
    """
    if config.layout == "auto":
        fast = device.type == "cuda" or (device.type == "cpu" and config.cpu_bf16)
        return torch.channels_last if fast else torch.contiguous_format
    return torch.channels_last if config.layout == "channels-last" else torch.contiguous_format


class BBCFEForward(nn.Module):
    """Everything the generator step needs from one pass of Ec, Es and G over a batch of pairs.

    The batch is ``[x_A; x_B]``: rolling the class codes by half the batch
    hands every image its partner's code, so ``G(c_B, s_A)`` and ``G(c_A, s_B)``
    come out of one decoder call. One module (and one forward) is what
    DistributedDataParallel needs to synchronise the gradients.

    With ``code_probe`` it also owns a linear read-out of the class from the
    class code, trained with the encoders (``LossWeights.code_classification``;
    not in the paper). Nothing else asks Ec to tell the classes apart directly:
    eq. 1 is met through the spatial individual code, and eq. 6 reaches Ec only
    through the decoder. A fresh benchmark draw kept the codes of ``normal`` and
    ``dme`` on top of each other for 2,000 iterations, and its swaps between the
    two see-sawed (docs/EXPERIMENTS.md).
    """

    def __init__(self, cae: CAE, code_probe: bool = False) -> None:
        super().__init__()
        self.cae = cae
        # Made on the CPU (its initial weights the same draws on any device), then put beside the CAE: left on the
        # CPU it broke the default preset's first step on every accelerator.
        self.code_probe = (nn.Linear(cae.config.code_dim, cae.config.num_classes).to(cae.device) if code_probe
                           else None)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        cae, half = self.cae, len(x) // 2
        class_code, individual_code = cae.class_encoder(x), cae.individual_encoder(x)
        partner_code = class_code.roll(half, dims=0)
        decoded = cae.decoder(torch.cat([class_code, partner_code]), torch.cat([individual_code, individual_code]))
        reconstruction, swapped = decoded.split(len(x))
        swapped_class, swapped_individual = cae.class_encoder(swapped), cae.individual_encoder(swapped)
        cycled = cae.decoder(class_code, swapped_individual)
        out = dict(reconstruction=reconstruction, swapped=swapped, cycled=cycled,
                   class_code=class_code, partner_code=partner_code, individual_code=individual_code,
                   swapped_class=swapped_class, swapped_individual=swapped_individual)
        if self.code_probe is not None:
            out["code_logits"] = self.code_probe(class_code)
        return out


class BBCFETrainer:
    """One discriminator step and one generator step per iteration on freshly sampled pairs."""

    def __init__(self, cae: CAE, discriminator: Discriminator, images: torch.Tensor, labels: torch.Tensor,
                 config: TrainConfig, context: DistContext, class_critic: nn.Module | None = None) -> None:
        self.cae, self.discriminator = cae, discriminator
        self.images, self.labels = images, labels
        self.config, self.context = config, context
        self.class_critic = class_critic  # the frozen classifier standing in for Dc in eq. 6
        self.sampler = PairSampler(labels, cae.config.num_classes, seed=config.seed, rank=context.rank)
        self.forward_module = BBCFEForward(cae, code_probe=config.weights.code_classification > 0)
        self.forward_pass: nn.Module = self.forward_module
        self.disc_step_module: nn.Module = discriminator
        if context.distributed:
            device_ids = [context.device.index] if context.device.type == "cuda" else None
            self.forward_pass = DistributedDataParallel(self.forward_pass, device_ids=device_ids)
            self.disc_step_module = DistributedDataParallel(discriminator, device_ids=device_ids)
        adam = functools.partial(torch.optim.Adam, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
        self.gen_optimizer = adam(self.forward_module.parameters())  # the CAE's, then the probe's
        self.disc_optimizer = adam(discriminator.parameters())
        step = max(1, math.ceil(config.iters / (config.lr_halvings + 1)))
        gamma = 0.5 if config.lr_halvings else 1.0
        self.gen_scheduler = torch.optim.lr_scheduler.StepLR(self.gen_optimizer, step, gamma=gamma)
        self.disc_scheduler = torch.optim.lr_scheduler.StepLR(self.disc_optimizer, step, gamma=gamma)
        self.memory_format = memory_format(config, context.device)
        # DDP keeps the live weights identical on every rank, so their averages stay identical too.
        self.average = (AveragedModel(cae, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
                        if config.ema else None)

    @property
    def result(self) -> CAE:
        """The CAE to sample, evaluate and save: the moving average when ``ema`` is set, else the live one."""
        # cast: AveragedModel holds a copy of the module it was given, the CAE, but types it as any nn.Module
        return self.cae if self.average is None else cast(CAE, self.average.module)

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``[x_A; x_B]`` in [-1, 1] on the device and their labels."""
        index_a, index_b = self.sampler.sample(iteration, self.config.batch_size)
        index = torch.cat([index_a, index_b])
        images = self.images[index].to(self.context.device, non_blocking=True)
        generator = keyed_generator(self.config.seed, self.context.rank, iteration, AUGMENT_STREAM)
        x = to_model_range(augment_batch(images, generator, hflip=bool(self.config.hflip),
                                         max_shift=self.config.max_shift))
        return x.contiguous(memory_format=self.memory_format), self.labels[index].to(self.context.device)

    def step(self, iteration: int) -> dict[str, float]:
        """Train one iteration; returns every loss term. Raises TrainingError on a non-finite term."""
        x, y = self.batch(iteration)
        y_partner = y.roll(len(y) // 2)
        with self._autocast():
            out = self.forward_pass(x)

        # Discriminator (eq. 10): real and swapped images through one trunk pass (and the individual critic).
        critic = self.discriminator.individual_critic is not None
        self.discriminator.requires_grad_(True)
        with self._autocast():
            real_logits, class_logits, *individual_logits = self.disc_step_module(
                torch.cat([x, out["swapped"].detach()]),
                individual=out["individual_code"].detach() if critic else None)
        n = len(x)
        disc_terms = {
            "disc_adversarial": losses.adversarial_discriminator_loss(real_logits[n:], real_logits[:n]),
            "disc_classification": losses.classification_loss(class_logits[:n], y),
        }
        if critic:
            disc_terms["disc_individual"] = losses.classification_loss(individual_logits[0], y)
        self._check_finite(disc_terms, iteration)
        self.disc_optimizer.zero_grad(set_to_none=True)
        losses.weighted_sum(disc_terms, self.config.weights).backward()
        self.disc_optimizer.step()

        # Generator (eq. 7) against the updated, frozen discriminator.
        self.discriminator.requires_grad_(False)
        with self._autocast():
            fake_real_logits, fake_class_logits, *individual_logits = self.discriminator(
                out["swapped"], individual=out["individual_code"] if critic else None)
            if self.class_critic is not None:
                fake_class_logits = self.class_critic(self._critic_input(out["swapped"]))
        gen_terms = {
            "recon_image": losses.l1_distance(out["reconstruction"], x),
            "recon_class": losses.l1_distance(out["swapped_class"], out["partner_code"]),
            "recon_individual": losses.l1_distance(out["swapped_individual"], out["individual_code"]),
            "cycle": losses.l1_distance(out["cycled"], x),
            "adversarial": losses.adversarial_generator_loss(fake_real_logits),
            "classification": losses.classification_loss(fake_class_logits, y_partner),
            "recon_pyramid": losses.pyramid_l1(out["reconstruction"], x),
        }
        if critic:
            gen_terms["individual_adversarial"] = losses.uniform_class_loss(individual_logits[0])
        if "code_logits" in out:
            gen_terms["code_classification"] = losses.classification_loss(out["code_logits"], y)
        self._check_finite(gen_terms, iteration)
        self.gen_optimizer.zero_grad(set_to_none=True)
        losses.weighted_sum(gen_terms, self.config.weights).backward()
        self.gen_optimizer.step()
        if self.average is not None:
            self.average.update_parameters(self.cae)
        lr = self.gen_scheduler.get_last_lr()[0]  # the lr this step used
        self.gen_scheduler.step()
        self.disc_scheduler.step()
        terms = {**gen_terms, **disc_terms}
        # One read, not K; under DDP the mean over the ranks' batches, which the averaged gradients followed.
        values = mean_over_ranks(torch.stack([value.detach().float() for value in terms.values()]),
                                 self.context).tolist()
        return dict(zip(terms, values)) | {"lr": lr}

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast with ``amp`` on accelerators, and on a CPU with native bf16 when ``cpu_bf16`` asks."""
        return autocast_context(self.context.device, self.config.amp, cpu_bf16=self.config.cpu_bf16)

    def _critic_input(self, swapped: torch.Tensor) -> torch.Tensor:
        """The swaps in the classifier's [0, 1] range, noised when ``critic_noise`` is set.

        Noise the classifier is robust to leaves a drawn lesion readable but
        masks faint texture, so the generator cannot meet eq. 6 with texture
        the classifier happens to read as the class. Experimental and off in
        every preset: of three seeds measured it helped one and hurt two
        (docs/EXPERIMENTS.md).
        """
        images = to_data_range(swapped)
        if not self.config.critic_noise:
            return images
        return (images + self.config.critic_noise * torch.randn_like(images)).clamp(0.0, 1.0)

    def _check_finite(self, terms: dict[str, torch.Tensor], iteration: int) -> None:
        """Raise on a non-finite term; under DDP on every rank at once, as a lone rank leaving would leave the
        others waiting in the gradient all-reduce."""
        bad = losses.first_non_finite(terms, reduce=lambda mask: any_rank(mask, self.context))  # alone: no-op
        if bad is not None:
            value = float(terms[bad].detach())
            where = f"({value})" if not math.isfinite(value) else "(on another rank)"
            raise TrainingError(f"loss term {bad!r} became non-finite {where} at iteration "
                                f"{iteration + 1}; stopped (a checkpoint written before it is kept; the "
                                "first comes after ckpt_every iterations)")

    def _check_same_trajectory(self, saved: dict[str, Any], source: str) -> None:
        """Refuse to resume with settings that would make the continued run differ from an uninterrupted one."""
        current = json.loads(json.dumps(self.config.to_dict()))  # the JSON form the checkpoint holds
        if isinstance(saved.get("weights"), dict):  # weights added since the run began keep their defaults
            try:
                saved = {**saved, "weights": losses.LossWeights(**saved["weights"]).as_dict()}
            except TypeError as exc:  # a loss weight this caex does not know: a newer caex's run
                raise TrainingError(f"{source}: unreadable loss weights ({exc}); written by a newer caex?") from None
        changed = _changed_settings(saved, current, TRAJECTORY_FIELDS)
        if changed:
            was, now = changed
            raise TrainingError(f"{source}: the run was trained with {was} (now {now}); resume with "
                                "the run's settings (only iters, time_limit, device and the log/sample/"
                                "checkpoint intervals may change)")

    def arithmetic(self) -> dict[str, str]:
        """The precision and memory layout the steps compute in on this device (recorded in checkpoints: a resume
        on another kind of device computes otherwise, though every setting is the same)."""
        precision = autocast_dtype(self.context.device, self.config.amp, cpu_bf16=self.config.cpu_bf16)
        layout = "channels-last" if self.memory_format == torch.channels_last else "contiguous"
        return {"precision": str(precision).removeprefix("torch."), "layout": layout}

    # -- checkpoints ---------------------------------------------------------------------
    def save(self, path: Path, iteration: int, meta: dict[str, Any]) -> None:
        """Collective (every rank contributes its RNG state); only rank 0 writes."""
        rng_states = gather_objects(capture_rng(self.context.device), self.context)
        if self.context.is_main:
            modules = {"cae": self.cae, "disc": self.discriminator}
            if self.average is not None:
                modules["cae_average"] = self.average
            if self.forward_module.code_probe is not None:
                modules["code_probe"] = self.forward_module.code_probe
            save_checkpoint(path, iteration=iteration, modules=modules,
                            optimizers={"opt_gen": self.gen_optimizer, "opt_disc": self.disc_optimizer},
                            schedulers={"gen": self.gen_scheduler, "disc": self.disc_scheduler},
                            rng_states=rng_states, meta=meta)

    def restore(self, checkpoint: Checkpoint) -> None:
        self.cae.load_state_dict(checkpoint.module_state("cae"), source=checkpoint.source)
        self.discriminator.load_state_dict(checkpoint.module_state("disc"))
        average = checkpoint.module_state("cae_average")
        if bool(average) != (self.average is not None):
            raise TrainingError(f"{checkpoint.source}: saved {'with' if average else 'without'} a moving average of "
                                f"the weights; resume with the run's ema setting")
        if self.average is not None:
            self.average.load_state_dict(average)
        self._check_same_trajectory(checkpoint.meta.get("train_config") or {}, checkpoint.source)
        if self.forward_module.code_probe is not None:
            self.forward_module.code_probe.load_state_dict(checkpoint.module_state("code_probe"))
        restore_optimizer(checkpoint, "opt_gen", self.gen_optimizer)
        restore_optimizer(checkpoint, "opt_disc", self.disc_optimizer)
        self.gen_scheduler.load_state_dict(checkpoint.meta["schedulers"]["gen"])
        self.disc_scheduler.load_state_dict(checkpoint.meta["schedulers"]["disc"])
        restore_rng(checkpoint, self.context.rank, self.context.device)
        saved, now = checkpoint.meta.get("arithmetic"), self.arithmetic()
        if saved not in (None, now):  # e.g. a GPU run resumed on a CPU: fp32 instead of bf16, another layout
            warn(f"{checkpoint.source}: the run was trained in {saved['precision']} with {saved['layout']} memory, "
                 f"it resumes in {now['precision']} with {now['layout']} memory (--device {self.context.device}): "
                 "it continues, but not as an uninterrupted run would")
        ranks = checkpoint.meta.get("ranks")
        if ranks not in (None, self.context.world_size) and self.context.is_main:
            # Allowed (a cluster may give fewer GPUs after preemption), but each rank's share of the pairs moves.
            warn(f"{checkpoint.source}: the run was trained on {ranks} process(es), it resumes on "
                 f"{self.context.world_size}: it continues, but not as an uninterrupted run would")


# -- the public entry point ----------------------------------------------------------------
def train_cae(data: DataBundle | ImageSet, config: CAEConfig | None = None, train_config: TrainConfig | None = None,
              out_dir: str | Path | None = None, classifier: Classifier | None = None, resume: bool = False,
              verbose: bool = False, *, force: bool = False, class_names: list[str] | None = None,
              callback: Callable[[int, CAE], None] | None = None) -> CAE:
    """Train a CAE with BBCFE and return it (with the training set's class codes stored).

    ``data`` is a DataBundle (its test split measures the final reconstruction
    error) or a bare ImageSet. ``config`` defaults to the ``small`` preset fitted
    to the data. With ``out_dir`` the run folder receives the bundle
    (config.json, model.safetensors, codes.safetensors), train_config.json,
    log.jsonl/log.csv, TensorBoard events, samples/*.png, summary.json and
    checkpoint.safetensors every ``ckpt_every`` iterations; ``resume=True``
    continues from that checkpoint exactly (the CAE config is the checkpoint's; a different
    ``config`` is refused).
    ``callback(iteration, cae)`` runs on rank 0 at every sample step (benchmarks
    use it for periodic evaluation). Under ``torchrun`` every rank calls this.
    With ``out_dir``, SIGINT (Ctrl-C, a notebook's interrupt), SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 (a batch
    scheduler's warnings before its kill) stop the run within ``log_every`` iterations, checkpoint saved, by raising
    :class:`caex.errors.Interrupted`; the caller's handlers of these signals are set back afterwards, and one the
    process ignores stays ignored. ``out_dir`` is locked meanwhile, so a second training into it is refused.
    """
    if classifier is not None:
        require_classifier(classifier)  # a bare nn.Module: how to wrap it, not an AttributeError deep inside
    train_config = train_config or TrainConfig.preset("small")
    if train_config.hflip is None:  # as the data declares; recorded resolved in train_config.json
        train_config = dataclasses.replace(train_config,
                                           hflip=isinstance(data, DataBundle) and data.mirror_symmetric)
    train_set, test_set, names = _split(data, class_names)
    run_dir = Path(out_dir) if out_dir is not None else None
    # The process group first, so that a refusal on one rank (rank 0 alone checks and locks the folder) ends
    # every rank at once: a rank left waiting to join could be stopped only by torchrun's SIGKILL.
    context = init_distributed(train_config.device)
    try:
        with contextlib.ExitStack() as held:
            error = None
            try:  # only rank 0 writes, so only it guards the folder (other ranks would see its fresh files)
                held.enter_context(folder_lock(run_dir if context.is_main else None, "caex train",
                                               create=True))
                checkpoint, train_config, networks, names, to_clear = _prepare(
                    run_dir, resume, force, context.is_main, train_config, config, classifier, train_set, names)
            except Exception as exc:  # noqa: BLE001 - whatever it is, every rank must learn of it, or they wait
                error = exc
            raise_together(error, context)
            try:  # only now: a forced run refused on any rank leaves the previous model as it was
                if to_clear is not None:
                    _clear_previous_run(to_clear)
            except OSError as exc:
                error = exc
            raise_together(error, context)
            # _train seeds torch's global generator, and a caller's torch.no_grad() or inference_mode() (which
            # enable_grad does not lift) would leave nothing to train
            with _classifier_state_kept(classifier), global_rng_kept(context.device), torch.inference_mode(False), \
                    torch.enable_grad():
                return _train(train_set, test_set, names, networks, train_config, run_dir, classifier, checkpoint,
                              context, verbose, callback, _data_record(data, train_set))
    finally:
        shutdown(context)


def _prepare(run_dir: Path | None, resume: bool, force: bool, writer: bool, train_config: TrainConfig,
             config: CAEConfig | None, classifier: Classifier | None, train_set: ImageSet,
             names: list[str]) -> tuple[Checkpoint | None, TrainConfig, CAEConfig, list[str], Path | None]:
    """The run's checkpoint (when resuming), settings, network config and class names, checked, and the folder
    whose previous results a forced run clears (by the ``writer`` alone, once every rank agreed), if any."""
    checkpoint, to_clear = _prepare_run_dir(run_dir, resume, force, check_empty=writer,
                                            networks_given=config is not None)
    if train_config.dc is None:  # a resumed run's own critic; else a given classifier where it can be one
        dc = checkpoint.meta["train_config"].get("dc") if checkpoint is not None else None
        train_config = dataclasses.replace(train_config, dc=dc or _default_critic(classifier))
    if checkpoint is not None:
        config = _checkpoint_config(checkpoint, asked=config)
        names = checkpoint.meta["class_names"]
    config = config or CAEConfig.preset("small", image_size=train_set.images.shape[-1],
                                        channels=train_set.images.shape[1], num_classes=len(names))
    _check_data(train_set, config, names,
                expects="the resumed run's networks expect" if checkpoint is not None else "the CAE config expects")
    if train_config.max_shift >= config.image_size:
        raise TrainingError(f"max_shift={train_config.max_shift}: must be smaller than the "
                            f"{config.image_size}px images")
    return checkpoint, train_config, config, names, to_clear


@contextlib.contextmanager
def _classifier_state_kept(classifier: Classifier | None) -> Iterator[None]:
    """Give the caller's classifier module back as it came: the class critic freezes it in place (no copy on the
    same device), which left a user's own network untrainable after :func:`train_cae`."""
    module = classifier.module if classifier is not None else None
    if not isinstance(module, nn.Module):
        yield
        return
    with module_state_kept(module):  # each submodule's own mode: a user's frozen batch norm stays frozen
        yield


def _train(train_set: ImageSet, test_set: ImageSet | None, names: list[str], config: CAEConfig,
           train_config: TrainConfig, run_dir: Path | None, classifier: Classifier | None,
           checkpoint: Checkpoint | None, context: DistContext, verbose: bool,
           callback: Callable[[int, CAE], None] | None, data_record: dict[str, Any]) -> CAE:
    device = context.device
    writes_to = run_dir if context.is_main else None  # where this process writes the run's files: rank 0 alone
    class_critic = _class_critic(classifier, train_config, len(names), device)
    labels = _training_labels(train_set, classifier if train_config.labels == "predicted" else None)
    seed_weights(train_config.seed)  # weight init; DDP then broadcasts rank 0's weights anyway
    layout = memory_format(train_config, device)
    cae = CAE(config, names, data_record["spec"], data_record["seed"]).to(device).to(memory_format=layout)
    discriminator = Discriminator(config, individual_critic=train_config.weights.individual_adversarial > 0)
    discriminator = discriminator.to(device).to(memory_format=layout)
    trainer = BBCFETrainer(cae, discriminator, train_set.images, labels, train_config, context, class_critic)
    seed_weights(train_config.seed + context.rank, device)  # per-rank dropout streams
    start = 0
    uses_classifier = class_critic is not None or train_config.labels == "predicted"
    critic_digest = classifier_digest(classifier) if uses_classifier else None
    if checkpoint is not None:
        _check_same_data(checkpoint, data_record)
        _check_same_classifier(checkpoint, critic_digest)
        trainer.restore(checkpoint)
        start = checkpoint.iteration
    meta = {"cae_config": config.to_dict(), "train_config": train_config.to_dict(), "class_names": names,
            "data": data_record, "classifier_digest": critic_digest, "arithmetic": trainer.arithmetic()}
    logger = RunLogger(writes_to, resume_from=start if checkpoint else None,
                       tensorboard=train_config.tensorboard) if writes_to is not None else None
    if writes_to is not None:
        write_json(writes_to / TRAIN_CONFIG_FILE, train_config.to_dict())
    exemplars = _first_of_each_class(labels, len(names))[:SAMPLE_CLASSES]
    exemplar_classes = [names[int(labels[i])] for i in exemplars]
    monitored = _first_of_each_class(labels, len(names), per_class=64)  # code_separation's images
    separation: dict[str, float] = {}
    bar = progress(total=train_config.iters, initial=start, desc="train CAE", unit="it",
                   enabled=verbose and context.is_main)
    began, done, terms, paused = time.perf_counter(), start, {}, 0.0  # paused: samples + callback time
    # every call that trained the run, carried in its checkpoints: a stop by signal writes no summary.json
    earlier_calls = checkpoint.meta.get("history", []) if checkpoint is not None else []
    this_call = _call_record(context)
    calls = earlier_calls  # as the last checkpoint records them (the run always ends on one)

    def history(seconds: float) -> list[dict[str, Any]]:
        return [*earlier_calls, {"iters": [start, done], "seconds": round(seconds, 2), **this_call,
                                 "ended": datetime.now(timezone.utc).isoformat(timespec="seconds")}]
    warned_length = train_config.time_limit is not None  # a time limit says how long already

    def save_samples(folder: Path) -> None:
        _save_samples(trainer.result, train_set.images[exemplars], exemplar_classes,
                      folder / SAMPLES_FOLDER / f"iter_{done:07d}.png")

    def save_last_samples() -> None:
        """The grid of a run that ends between sample grids (a time limit, a stop signal): its last model's too."""
        if writes_to is not None and done > start and done % train_config.sample_every:
            save_samples(writes_to)

    cae.train()
    discriminator.train()
    # A stop signal ends the run at the next check, checkpoint saved; without a run folder nothing could be kept.
    with stop_requests(enabled=run_dir is not None) as stop:
        try:
            for iteration in range(start, train_config.iters):
                terms = trainer.step(iteration)
                done = iteration + 1
                bar.update(1)
                at_check = done % train_config.log_every == 0
                at_sample = done % train_config.sample_every == 0 and context.is_main
                if at_sample:
                    pause = time.perf_counter()
                    if writes_to is not None:
                        save_samples(writes_to)
                    if callback is not None:
                        callback(done, trainer.result)
                    if writes_to is not None or verbose:
                        separation = code_separation(trainer.result.eval().class_codes(train_set.images[monitored]),
                                                     labels[monitored])
                    cae.train()
                    paused += time.perf_counter() - pause
                if at_check or at_sample or done == train_config.iters:
                    bar.set_postfix(recon=f"{terms['recon_image']:.3f}", cls=f"{terms['classification']:.3f}",
                                    adv=f"{terms['adversarial']:.3f}", d=f"{terms['disc_adversarial']:.3f}",
                                    **({"codes": f"{separation['code_accuracy']:.2f}"} if separation else {}),
                                    refresh=False)  # drawn with the next update: a forced redraw ignores the interval
                    if logger is not None:
                        logger.log(done, {**terms, **separation} if at_sample else terms)
                if not warned_length and context.is_main:
                    warned_length = _warn_if_long(train_config, done, start, time.perf_counter() - began - paused)
                out_of_time = stopped = False
                # Alone, every iteration (a 38 s iteration overshot a time limit by minutes); under DDP at each
                # check, rank 0's clock deciding the time limit and a signal to any rank stopping all of them,
                # so every rank leaves the loop at the same iteration.
                if at_check or not context.distributed:
                    over_time = (context.is_main and train_config.time_limit is not None
                                 and time.perf_counter() - began - paused > train_config.time_limit)
                    out_of_time, signum = max_over_ranks(torch.tensor([over_time, stop.signum or 0]),
                                                         context).tolist()
                    stopped = signum != 0
                if run_dir is not None and (done % train_config.ckpt_every == 0 or done == train_config.iters
                                            or out_of_time or stopped):
                    calls = history(time.perf_counter() - began - paused)
                    trainer.save(run_dir / CHECKPOINT_FILE, done, {**meta, "history": calls})
                    if logger is not None:
                        logger.flush()
                if stopped:
                    save_last_samples()  # after the checkpoint: the work is kept first
                    raise stop.error(done, signum)
                if out_of_time:
                    break
        finally:
            bar.close()
            if logger is not None:
                logger.close()
        # Still under the stop handler: a signal during the final save waits for it (seconds), where it
        # would leave a model without its summary.json.
        seconds = time.perf_counter() - began - paused
        save_last_samples()
        # The default layout again, so the returned CAE computes exactly what the saved one loads as.
        cae = trainer.result.eval().to(memory_format=torch.contiguous_format)
        cae.set_train_codes(cae.class_codes(train_set.images, verbose=verbose and context.is_main), labels)
        if writes_to is not None:
            summary_path = writes_to / SUMMARY_FILE
            previous = _previous_summary(summary_path) if done == start else {}
            # The earlier call's summary would describe this model if the save were cut short (its iterations,
            # its reconstruction error): it goes before the model files and comes back after them.
            summary_path.unlink(missing_ok=True)
            cae.save(writes_to)
            evaluation = test_set if test_set is not None and len(test_set) else train_set
            images_per_second = (done - start) * 2 * train_config.batch_size * context.world_size / max(seconds, 1e-9)
            _write_summary(summary_path, cae, evaluation, done=done, start=start, seconds=seconds,
                           images_per_second=images_per_second, terms=terms, asked=train_config.iters,
                           processes=context.world_size, history=calls, previous=previous,
                           provenance={"device": str(context.device),
                                       **{key: meta[key] for key in ("arithmetic", "data", "classifier_digest")}})
    barrier(context)
    return cae


#: Projected training longer than this (seconds), with no time limit, is warned about once measured.
LONG_RUN_SECONDS = 3600


def _warn_if_long(config: TrainConfig, done: int, start: int, seconds: float) -> bool:
    """Once a few iterations are timed, warn when the rest will take over :data:`LONG_RUN_SECONDS`: the
    ``small`` preset at 256 px, or ``paper`` on a CPU, runs for hours to months. True once decided."""
    trained = done - start
    if trained < 3 or (trained < 20 and seconds < 10):
        return False
    remaining = (config.iters - done) * seconds / trained
    if remaining > LONG_RUN_SECONDS:
        warn(f"at {seconds / trained:.2f} s per iteration the remaining {config.iters - done:,} iterations take "
             f"about {_duration(remaining)}; time_limit (--time-limit SECONDS) stops sooner and still saves the "
             "model, and fewer iterations (--iters), a smaller --size or preset, or a GPU are faster")
    return True


def _duration(seconds: float) -> str:
    """``'1 h 46 min'``, ``'88 days'``: a projection's precision."""
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{round(seconds / 86400)} days"


def _write_summary(path: Path, cae: CAE, evaluation: ImageSet, *, done: int, start: int, seconds: float,
                   images_per_second: float, terms: dict[str, float], asked: int, processes: int,
                   history: list[dict[str, Any]], provenance: dict[str, Any],
                   previous: dict[str, Any]) -> None:
    """``summary.json``: how far (of the ``asked`` iterations: fewer where the time limit stopped it) and fast
    the run trained, on how many processes (each drew its own batch), and the finished CAE's reconstruction and
    code separation on (up to 512 of) the test images; ``provenance`` (device, arithmetic, the data and critic
    digests) and the ``history`` of every call that trained it (a resumed run's summary describes the last).
    ``previous`` is the summary a call that trained nothing found (else empty), read before the save removed it."""
    summary = {"iters": done, "iters_asked": asked, "trained_iters": done - start, "processes": processes,
               "seconds": round(seconds, 2),
               "images_per_second": round(images_per_second, 2),
               "recon_l1": round(reconstruction_l1(cae, evaluation.images[:512]), 5),
               **{name: round(value, 5) for name, value in code_separation(
                   cae.class_codes(evaluation.images[:512]), evaluation.labels[:512]).items()},
               "final_terms": terms, "versions": software_versions(), "cae_digest": cae_digest(cae), **provenance,
               "history": history}
    if previous.get("iters") == done:  # a resume that only finishes an interrupted save: keep what training measured
        keys = ("seconds", "images_per_second", "final_terms")  # not trained_iters (it trained none), nor the
        summary.update({key: previous[key] for key in keys if key in previous})  # history: the checkpoint's is whole
    write_json(path, summary)


def _call_record(context: DistContext) -> dict[str, Any]:
    """What one training call ran on, for the run's history: a seed reproduces weights only on the same."""
    versions = software_versions()
    return {"processes": context.world_size, "device": str(context.device),
            **{key: versions[key] for key in ("torch_threads", "caex", "torch", "cpu_capability")}}


def _previous_summary(path: Path) -> dict[str, Any]:
    """An earlier ``summary.json`` of the run, or an empty dict when there is no readable one."""
    try:
        previous = read_json(path)
    except (OSError, ValueError):
        return {}
    return previous if isinstance(previous, dict) else {}


@torch.no_grad()
def reconstruction_l1(cae: CAE, images: torch.Tensor, reference: torch.Tensor | None = None,
                      batch_size: int = 256) -> float:
    """Mean |G(E(x)) - x| on the [-1, 1] scale the paper's eq. 1 uses.

    ``reference``: compare against these instead of ``images`` (e.g. the same
    images rendered without pixel noise, to separate noise from lost structure).
    """
    reference = images if reference is None else reference
    total = 0.0
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(cae.device)
        target = reference[start:start + batch_size].to(cae.device)
        total += float((cae.reconstruct(x) - target).abs().sum()) * 2.0  # data-range error x 2 = [-1, 1] error
    return total / max(images.numel(), 1)


def _split(data: DataBundle | ImageSet, class_names: list[str] | None) -> tuple[ImageSet, ImageSet | None, list[str]]:
    if isinstance(data, DataBundle):
        return data.train, data.test, list(class_names or data.class_names)
    if isinstance(data, ImageSet):
        count = int(data.labels.max()) + 1 if len(data) else 0
        return data, None, list(class_names or [str(k) for k in range(count)])
    raise DataError(f"train_cae needs a DataBundle or an ImageSet, got {type(data).__name__}")


def _data_record(data: DataBundle | ImageSet, train_set: ImageSet) -> dict[str, Any]:
    """Where the training images came from (spec and split seed, when known) and a digest of them and their
    labels: the CAE keeps the first two as provenance, the checkpoint all three for an exact resume."""
    bundle = data if isinstance(data, DataBundle) else None
    return {"spec": as_recorded(bundle.spec) if bundle is not None else None,
            "seed": bundle.seed if bundle is not None else None,
            "digest": tensor_digest(train_set.images, train_set.labels)}


def _check_same_data(checkpoint: Checkpoint, record: dict[str, Any]) -> None:
    """Refuse to resume on other training images (another DATA or split seed), which would silently change the
    run; checkpoints older than the record are resumed unchecked."""
    saved = checkpoint.meta.get("data")
    if isinstance(saved, dict) and saved.get("digest") not in (None, record["digest"]):
        raise TrainingError(f"{checkpoint.source}: the run began on other training images ({saved.get('spec')}, split "
                            f"seed {saved.get('seed')}; now {record['spec']}, split seed {record['seed']}); resume "
                            "with the run's DATA and --split-seed")


def _check_same_classifier(checkpoint: Checkpoint, digest: str | None) -> None:
    saved = checkpoint.meta.get("classifier_digest")
    if saved is not None and digest is not None and saved != digest:
        raise TrainingError(f"{checkpoint.source}: the run began with another classifier (other weights); resume "
                            "with the --classifier it was trained with")


def _check_data(train_set: ImageSet, config: CAEConfig, names: list[str], expects: str) -> None:
    """Refuse data the networks cannot train on; ``expects`` says where their shape comes from (a resumed run's
    is its checkpoint's, whatever the new call's options say)."""
    images = train_set.images
    shape = (config.channels, config.image_size, config.image_size)
    if tuple(images.shape[1:]) != shape:
        raise DataError(f"training images are {tuple(images.shape[1:])}, {expects} {shape} "
                        f"(load the data with --size {config.image_size} --channels {config.channels})")
    if len(names) != config.num_classes:
        raise DataError(f"{len(names)} class names for a CAE config with {config.num_classes} classes")
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise DataError("training images must be finite and in the data range [0, 1]")
    if len(train_set) and (train_set.labels.min() < 0 or train_set.labels.max() >= config.num_classes):
        raise DataError(f"training labels must lie in 0..{config.num_classes - 1}, the {config.num_classes} classes "
                        f"of the CAE's networks; got {int(train_set.labels.min())}..{int(train_set.labels.max())}")


def checkpoint_networks(meta: dict[str, Any], source: str) -> CAEConfig:
    """The networks config a checkpoint's header (``meta``, read from ``source``) records; a one-line error naming
    the file where it is not one this caex reads."""
    try:
        return CAEConfig.from_dict(meta["cae_config"])
    except (ModelError, KeyError, TypeError, ValueError) as exc:
        raise TrainingError(f"{source}: unreadable networks config ({exc})") from None


def _checkpoint_config(checkpoint: Checkpoint, asked: CAEConfig | None) -> CAEConfig:
    """The networks a resumed run was built with; a different ``asked`` config is refused, not ignored."""
    saved = checkpoint_networks(checkpoint.meta, checkpoint.source)
    fields = saved.to_dict()
    changed = None if asked is None else _changed_settings(fields, asked.to_dict(), fields)
    if changed:
        was, now = changed
        raise TrainingError(f"{checkpoint.source}: the run's networks have {was} (asked for {now}); resume "
                            "without a network config (the CLI: without --preset and --model)")
    return saved


def _changed_settings(saved: dict[str, Any], current: dict[str, Any], names: Iterable[str]) -> tuple[str, str] | None:
    """The ``names`` (present in ``saved``) whose values differ, as ``"a=1, b=2"`` then and now; ``None`` if none."""
    changed = [name for name in names if name in saved and saved[name] != current[name]]
    if not changed:
        return None
    was, now = (", ".join(f"{name}={values[name]!r}" for name in changed) for values in (saved, current))
    return was, now


def _prepare_run_dir(run_dir: Path | None, resume: bool, force: bool, check_empty: bool,
                     networks_given: bool = True) -> tuple[Checkpoint | None, Path | None]:
    """Refuse to clobber a run by accident; load the checkpoint when resuming. Also returns the folder whose
    previous run must be cleared (``force``; else ``None``), which the caller does once the new run's data and
    settings passed."""
    if run_dir is None:
        if resume:
            raise TrainingError("resume needs the run folder (out_dir) of the run to continue")
        return None, None
    if resume:
        if not run_dir.exists() or (run_dir.is_dir() and not _has_files(run_dir)):
            if check_empty:  # the writer (rank 0) says it, once
                warn(f"{run_dir}: holds no run yet, so resuming starts one (a requeued batch job can pass --resume "
                     "from its first launch)")
            return None, None
        if run_dir.is_dir() and not (run_dir / CHECKPOINT_FILE).exists() and _has_files(run_dir):
            if _only_start_files(run_dir):  # e.g. killed before ckpt_every iterations: nothing to keep
                if not networks_given:  # only a checkpoint records them, and a default could differ
                    raise TrainingError(f"{run_dir}: the run stopped before its first checkpoint, which would have "
                                        "recorded its networks; give the --preset (and --model) it began with to "
                                        "start it again")
                if check_empty:
                    warn(f"{run_dir}: the run stopped before its first checkpoint, so resuming starts it again "
                         "(replacing its logs and sample grids)")
                return None, run_dir if check_empty else None
            raise TrainingError(f"{run_dir}: no checkpoint to resume from, and files that are not a run's; "
                                "start it again (--force, force=True) or choose another folder")
        return load_checkpoint(run_dir / CHECKPOINT_FILE, required=RESUME_META), None
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainingError(f"{run_dir}: exists and is not a folder")
    if check_empty and run_dir.is_dir() and _has_files(run_dir):
        if force:
            return None, run_dir
        if (run_dir / CHECKPOINT_FILE).exists() or (run_dir / CAE_CONFIG_FILE).exists():
            raise TrainingError(f"{run_dir}: folder is not empty; continue it (--resume, resume=True) or "
                                "overwrite it (--force, force=True)")
        raise TrainingError(f"{run_dir}: folder is not empty but holds no checkpoint to continue (a run that "
                            "stopped before its first, or other files); overwrite it (--force, force=True) or "
                            "choose another folder")
    return None, None


#: What a run writes before its first checkpoint (its settings, logs, sample grids, TensorBoard events).
START_FILES = frozenset({TRAIN_CONFIG_FILE, LOG_JSONL, LOG_CSV, SAMPLES_FOLDER, TENSORBOARD_FOLDER, LOCK_FILE})


def _only_start_files(run_dir: Path) -> bool:
    """Nothing but what a run writes before its first checkpoint (hidden files and system metadata aside: a
    temporary file of a save that was killed, a .DS_Store, a Thumbs.db) and the report ``caex report`` writes into
    it by default, which made a run killed early refuse to resume once looked at."""
    from caex.report.html import REPORT_FILE  # here: the report module imports this one

    allowed = START_FILES | {REPORT_FILE}
    return all(path.name in allowed or is_hidden(path.name) for path in run_dir.iterdir())


def _has_files(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds anything but its lock, hidden files and system metadata (a Thumbs.db)."""
    return any(path.name != LOCK_FILE and not is_hidden(path.name) for path in run_dir.iterdir())


def _clear_previous_run(run_dir: Path) -> None:
    """Delete a previous run's results, config.json first: without it the folder no longer reads as a finished
    CAE run, so a forced run that dies early cannot leave the old model looking like its result. Its report goes
    too, which would describe the run this one replaces."""
    from caex.report.html import REPORT_FILE  # here: the report module imports this one

    for name in (CAE_CONFIG_FILE, CAE_WEIGHTS_FILE, CAE_CODES_FILE, CHECKPOINT_FILE, LOG_JSONL, LOG_CSV, SUMMARY_FILE,
                 REPORT_FILE):
        (run_dir / name).unlink(missing_ok=True)
    for folder in (SAMPLES_FOLDER, TENSORBOARD_FOLDER):
        shutil.rmtree(run_dir / folder, ignore_errors=True)


def _default_critic(classifier: Classifier | None) -> str:
    """``dc`` when none is chosen: a classifier with gradients converges far faster than Dc's own class head."""
    if classifier is not None and classifier.has_gradients:
        return "classifier"
    if classifier is not None:
        warn(f"the classifier ({type(classifier).__name__}) is a black box (no gradients), so the "
             "discriminator's class head is the class critic (dc='discriminator'); it trains more slowly "
             "than a classifier critic")
    return "discriminator"


def _class_critic(classifier: Classifier | None, config: TrainConfig, num_classes: int,
                  device: torch.device) -> nn.Module | None:
    """The frozen classifier module used as Dc in eq. 6 when ``dc="classifier"``."""
    if classifier is None:
        if config.dc == "classifier" or config.labels == "predicted":  # name only the setting that needs one
            wanted = ("dc='classifier' (--dc classifier)" if config.dc == "classifier"
                      else "labels='predicted' (--labels predicted)")
            raise TrainingError(f"{wanted} needs the target classifier: give --classifier CLF (when resuming, "
                                "the one the run began with)")
        return None
    if classifier.num_classes != num_classes:
        raise TrainingError(f"the classifier has {classifier.num_classes} classes, the data {num_classes}")
    if config.dc != "classifier":
        return None
    module = classifier.logits_module  # logits, whatever the user's module returns; None for a black box
    if module is None:
        raise TrainingError("dc='classifier' needs a differentiable classifier (PyTorch/TorchScript), "
                            "this one is a black box; use dc='discriminator' (--dc discriminator)")
    shared = _on_device(module, device) and _trainable_through(module)
    if not shared:  # a copy: moving or casting the user's module would change classifier.predict
        module = copy.deepcopy(module).to(device, torch.float32)
    module = module.eval()
    for parameter in module.parameters():  # not module.requires_grad_: TorchScript modules do not support it
        parameter.requires_grad_(False)
    return _TakingTurns(module, classifier.module or module) if shared else module


class _TakingTurns(nn.Module):
    """The caller's own classifier module as the critic, each forward pass under the module's lock
    (:func:`~caex.classifier.base.module_lock`): Grad-CAM in another thread would record the critic's pass."""

    def __init__(self, critic: nn.Module, owner: nn.Module) -> None:
        super().__init__()
        self.critic = critic
        self._lock = module_lock(owner)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with self._lock:
            return self.critic(images)


def _trainable_through(module: nn.Module) -> bool:
    """Whether gradients can flow through ``module`` from the CAE's float32 images: not for weights in half
    precision (a dtype mismatch) or made inside ``torch.inference_mode()`` (which autograd cannot save)."""
    return not any((tensor.is_floating_point() and tensor.dtype != torch.float32) or tensor.is_inference()
                   for tensor in itertools.chain(module.parameters(), module.buffers()))


def _on_device(module: nn.Module, device: torch.device) -> bool:
    """True when every parameter and buffer of ``module`` lives on ``device`` (``cuda`` matches any index)."""
    return all(t.device.type == device.type and device.index in (None, t.device.index)
               for t in itertools.chain(module.parameters(), module.buffers()))


def _training_labels(train_set: ImageSet, labeller: Classifier | None) -> torch.Tensor:
    """The classes BBCFE pairs images by: ``labeller``'s predictions (``labels="predicted"``), else the data's."""
    if labeller is not None:
        predicted = labeller.predict(train_set.images).cpu().long()
        if predicted.unique().numel() == 1:  # the usual cause is input the model was not trained on
            raise TrainingError(f"labels='predicted' (--labels predicted): the classifier predicts "
                                f"{labeller.class_names[int(predicted[0])]!r} for all {len(predicted)} training "
                                "images, so no pair of classes is left to learn from; does it get its images as it "
                                "was trained (size, channels, normalisation)?")
        return predicted
    return train_set.labels.long()


def _first_of_each_class(labels: torch.Tensor, num_classes: int, per_class: int = 1) -> torch.Tensor:
    """Indices of the first ``per_class`` images of each class, class by class: a fixed set that needs no
    random draw (the sample grids and the code monitor must not move the training's RNG streams)."""
    return torch.cat([torch.nonzero(labels == k).flatten()[:per_class] for k in range(num_classes)])


#: Classes in the sample grids, one column each (and one swap row each): all of them up to 16, so that a
#: 10-class grid still shows every class while a 100-class one stays a readable size.
SAMPLE_CLASSES = 16


@torch.no_grad()
def _save_samples(cae: CAE, exemplars: torch.Tensor, classes: Sequence[str], path: Path) -> None:
    """Rows: originals, reconstructions, then each original with exemplar k's class code (k = row - 2), named
    by ``classes``, the exemplars' class names."""
    cae.eval()
    x = exemplars.to(cae.device)
    class_code, individual_code = cae.encode(x)
    rows = [x, cae.decode(class_code, individual_code)]
    rows += [cae.decode(code.expand_as(class_code), individual_code) for code in class_code.split(1)]
    save_image_grid(path, rows, ["input", "reconstruction", *(f"→ {name}" for name in classes)])
