"""BBCFE training: loss terms, pair sampler, checkpoints/resume, crash safety, non-finite losses."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import signal
import warnings
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import torch

from caex.classifier import Classifier, TorchClassifier
from caex.data import DataBundle, ImageSet
from caex.errors import CaexError, DataError, Interrupted, ModelError, TrainingError
from caex.model import CAE, CAEConfig, Discriminator
from caex.training import TrainConfig, losses, train_cae
from caex.training.checkpoint import CHECKPOINT_FILE, load_checkpoint, read_checkpoint_header
from caex.training.distributed import init_distributed
from caex.training.monitor import code_separation
from caex.training.pairs import PairSampler
from caex.training.trainer import BBCFETrainer, reconstruction_l1
from caex.utils.device import cpu_has_native_bf16
from caex.utils.io import folder_lock
from caex.utils.provenance import cae_digest


#: The terms every run logs: the paper's eq. 1-10 and the pooled reconstruction (optional ones come on top).
GENERATOR_TERMS = ("recon_image", "recon_class", "recon_individual", "cycle", "adversarial", "classification",
                   "recon_pyramid")
DISCRIMINATOR_TERMS = ("disc_adversarial", "disc_classification")


def _data(n: int = 24, classes: int = 3, size: int = 16) -> ImageSet:
    generator = torch.Generator().manual_seed(0)
    return ImageSet(torch.rand(n, 1, size, size, generator=generator), torch.arange(n) % classes)


def _configs(classes: int = 3, size: int = 16, **train) -> tuple[CAEConfig, TrainConfig]:
    config = CAEConfig.preset("tiny", image_size=size, channels=1, num_classes=classes)
    return config, TrainConfig.preset("tiny", tensorboard=False, **train)


def test_the_trainer_keeps_every_module_on_the_cae_s_device() -> None:
    """The code probe (on in the ``small`` preset) was made on the CPU beside a CAE already moved to the training
    device: the first step on any GPU failed with "Expected all tensors to be on the same device". ``meta`` stands
    in for an accelerator on a CPU-only machine."""
    config = CAEConfig.preset("tiny", image_size=16, channels=1, num_classes=3)
    train_config = TrainConfig.preset("small", tensorboard=False)
    assert train_config.weights.code_classification > 0  # the default preset has the probe
    cae, discriminator = CAE(config).to("meta"), Discriminator(config).to("meta")
    trainer = BBCFETrainer(cae, discriminator, torch.zeros(6, 1, 16, 16), torch.arange(6) % 3, train_config,
                           init_distributed("cpu"))
    assert trainer.forward_module.code_probe is not None
    assert {parameter.device.type for parameter in trainer.forward_module.parameters()} == {"meta"}


def _two_iteration_run(run: Path) -> tuple[ImageSet, CAEConfig, TrainConfig]:
    """A finished 2-iteration tiny run in ``run`` (checkpoint at iteration 2): the start of every resume test."""
    data = _data()
    config, train_config = _configs(iters=2, ckpt_every=2, sample_every=100)
    train_cae(data, config, train_config, run)
    return data, config, train_config


# -- loss terms ------------------------------------------------------------------------------
def test_l1_terms_known_values() -> None:
    x = torch.rand(2, 1, 4, 4)
    assert losses.l1_distance(x, x) == 0  # exact reconstruction -> eq. 1 (and 2-4) vanish
    assert torch.isclose(losses.l1_distance(x, x + 0.25), torch.tensor(0.25))


def test_reconstruction_l1_is_on_the_minus_one_to_one_scale_against_a_chosen_reference() -> None:
    torch.manual_seed(0)
    cae = CAE(_configs()[0], ["a", "b", "c"]).eval()
    images = _data(n=5).images
    with torch.no_grad():
        reconstruction = cae.reconstruct(images)
    assert reconstruction_l1(cae, images, reference=reconstruction, batch_size=2) == pytest.approx(0.0, abs=1e-6)
    expected = 2 * float((reconstruction - images).abs().mean())
    assert reconstruction_l1(cae, images, batch_size=2) == pytest.approx(expected, rel=1e-5)
    assert reconstruction_l1(cae, images, reference=reconstruction + 0.1) == pytest.approx(0.2, rel=1e-4)


def test_cross_entropy_terms_known_values() -> None:
    confident_real = torch.tensor([[-50.0, 50.0]])
    confident_fake = torch.tensor([[50.0, -50.0]])
    undecided = torch.zeros(3, 2)
    assert losses.adversarial_generator_loss(confident_real) < 1e-6  # eq. 5: fooled D
    assert torch.isclose(losses.adversarial_generator_loss(confident_fake), torch.tensor(100.0))
    assert torch.isclose(losses.adversarial_generator_loss(undecided), torch.log(torch.tensor(2.0)))
    assert losses.adversarial_discriminator_loss(confident_fake, confident_real) < 1e-6  # eq. 8: perfect D
    assert torch.isclose(losses.adversarial_discriminator_loss(undecided, undecided), 2 * torch.log(torch.tensor(2.0)))
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 30.0, 0.0, 0.0]])
    assert torch.isclose(losses.classification_loss(logits[:1], torch.tensor([2])), torch.log(torch.tensor(4.0)))
    assert losses.classification_loss(logits[1:], torch.tensor([1])) < 1e-6


def test_pyramid_l1_ignores_pixel_noise_but_not_structure() -> None:
    target = torch.zeros(2, 1, 16, 16)
    checkerboard = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2.0 - 1.0  # +-1, zero mean per 2x2
    noisy = target + checkerboard
    assert losses.l1_distance(noisy, target) == 1.0
    assert losses.pyramid_l1(noisy, target) == 0.0  # every pooled copy averages the noise away
    assert torch.isclose(losses.pyramid_l1(target + 0.25, target), torch.tensor(0.25))
    blob = target.clone()
    blob[..., 4:8, 4:8] = -1.0  # a 4x4 dark "cyst": 1/16 of the pixels
    # factors 2 and 4 see it whole (1/16); at factor 8 it is a quarter of one of the four cells (1/16 again)
    assert torch.isclose(losses.pyramid_l1(blob, target), torch.tensor(1 / 16))
    assert losses.pyramid_l1(target[..., :1, :1] + 0.5, target[..., :1, :1]) == 0.5  # too small to pool: plain L1
    blocks = (torch.arange(16)[:, None] // 4 + torch.arange(16)[None, :] // 4) % 2 * 2.0 - 1.0  # +-1 in 4x4 blocks
    # factors 2 and 4 keep the blocks (L1 1 each); factor 8 pools two of each sign into every cell (0)
    assert torch.isclose(losses.pyramid_l1(target + blocks, target), torch.tensor(2 / 3))


def test_weighted_sum_uses_paper_weights() -> None:
    weights = losses.LossWeights()
    assert (weights.recon_image, weights.recon_class, weights.recon_individual, weights.cycle,
            weights.adversarial, weights.classification) == (10, 1, 1, 10, 1, 1)
    assert weights.recon_pyramid == 0  # not a paper term: off unless a preset asks for it
    assert (weights.disc_adversarial, weights.disc_classification) == (1, 2)
    terms = {name: torch.tensor(1.0) for name in GENERATOR_TERMS}
    assert losses.weighted_sum(terms, weights) == 24
    assert losses.weighted_sum({"disc_adversarial": torch.tensor(1.0), "disc_classification": torch.tensor(1.0)},
                               weights) == 3


def test_first_non_finite_names_the_term() -> None:
    assert losses.first_non_finite({"a": torch.tensor(1.0), "b": torch.tensor(2.0)}) is None
    assert losses.first_non_finite({"a": torch.tensor(1.0), "b": torch.tensor(float("inf"))}) == "b"


# -- pair sampler ----------------------------------------------------------------------------
def test_pair_sampler_balanced_over_class_pairs_with_imbalanced_classes() -> None:
    labels = torch.tensor([0] * 50 + [1] * 3 + [2] * 10 + [3] * 1)
    sampler = PairSampler(labels, 4, seed=7)
    assert sampler.num_class_pairs == 6
    counts = dict.fromkeys(combinations(range(4), 2), 0)
    for iteration in range(10):
        a, b = sampler.sample(iteration, 6)  # 60 draws = 10 full decks of the 6 class pairs
        assert (labels[a] != labels[b]).all()
        for pair in zip(labels[a].tolist(), labels[b].tolist()):
            counts[tuple(sorted(pair))] += 1
    assert set(counts.values()) == {10}
    a, b = sampler.sample(3, 6)
    assert torch.equal(torch.stack(sampler.sample(3, 6)), torch.stack([a, b]))  # a pure function of the iteration
    assert not torch.equal(torch.stack(PairSampler(labels, 4, seed=7, rank=1).sample(3, 6)), torch.stack([a, b]))


def test_pair_sampler_both_orientations_and_missing_class() -> None:
    labels = torch.tensor([0, 0, 2, 2, 2])  # class 1 absent
    a, b = PairSampler(labels, 3, seed=0).sample(0, 64)
    assert set(labels[a].tolist()) == {0, 2} and set(labels[b].tolist()) == {0, 2}
    with pytest.raises(DataError, match="at least 2 classes"):
        PairSampler(torch.zeros(5, dtype=torch.long), 2)


def test_pair_sampler_draws_every_image_and_each_orientation_half_the_time() -> None:
    """With one class pair only the within-class and orientation draws vary, and each rank draws its own."""
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    a, b = PairSampler(labels, 2, seed=0).sample(0, 2000)
    assert set(a.tolist()) | set(b.tolist()) == set(range(6))  # the last image of each class too
    assert abs(float((labels[a] == 0).float().mean()) - 0.5) < 0.05
    other_rank = PairSampler(labels, 2, seed=0, rank=1).sample(0, 2000)
    assert not torch.equal(torch.stack(other_rank), torch.stack([a, b]))


def test_pair_sampler_deals_each_rank_its_own_order_of_class_pairs() -> None:
    """Ranks sharing one deck order would train every class pair in lockstep across DDP processes."""
    labels = torch.arange(5).repeat_interleave(2)  # 5 classes: decks of 10 class pairs

    def class_pairs(rank: int) -> list[tuple[int, int]]:
        sampler = PairSampler(labels, 5, seed=3, rank=rank)
        draws = [sampler.sample(iteration, 5) for iteration in range(4)]  # 20 draws = 2 whole decks
        return [tuple(sorted(pair)) for a, b in draws for pair in zip(labels[a].tolist(), labels[b].tolist())]

    first, second = class_pairs(0), class_pairs(1)
    for pairs in (first, second):  # each rank still deals every class pair once per deck
        assert sorted(pairs[:10]) == sorted(pairs[10:]) == list(combinations(range(5), 2))
    assert first != second and first[:10] != second[:10]


# -- one training step -----------------------------------------------------------------------
def test_one_step_logs_every_term_of_the_spec_table_on_the_right_tensors() -> None:
    """Each logged term compares the tensors SPEC §3 names, for A->B (first half of the batch) and B->A.

    Recomputed from copies of the networks: eqs. 8-9 with the discriminator before its update, eqs. 5-6
    with it after (the generator plays against the updated one); dropout is off so every pass agrees. The
    classes differ in brightness, so even untrained heads tell the images apart: with near-equal logits for
    all, eq. 6 against the wrong half's labels (a permutation of the right ones) would score the same.
    """
    config, train_config = _configs()
    labels = torch.arange(24) % 3
    noise = torch.rand(24, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    images = 0.45 * labels[:, None, None, None] + 0.1 * noise
    torch.manual_seed(0)
    cae, discriminator = CAE(config), Discriminator(config).eval()
    trainer = BBCFETrainer(cae, discriminator, images, labels, train_config, init_distributed("cpu"))
    cae_before, discriminator_before = copy.deepcopy(cae), copy.deepcopy(discriminator)
    x, y = trainer.batch(0)
    terms = trainer.step(0)
    half, cross_entropy = len(x) // 2, torch.nn.functional.cross_entropy
    with torch.no_grad():
        c, s = cae_before.class_encoder(x), cae_before.individual_encoder(x)
        c_partner, y_partner = torch.cat([c[half:], c[:half]]), torch.cat([y[half:], y[:half]])
        swapped = cae_before.decoder(c_partner, s)
        real, fake = torch.ones_like(y), torch.zeros_like(y)
        d_real, d_class = discriminator_before(x)[:2]
        g_real, g_class = discriminator(swapped)[:2]
        expected = {
            "recon_image": (cae_before.decoder(c, s) - x).abs().mean(),
            "recon_class": (cae_before.class_encoder(swapped) - c_partner).abs().mean(),
            "recon_individual": (cae_before.individual_encoder(swapped) - s).abs().mean(),
            "cycle": (cae_before.decoder(c, cae_before.individual_encoder(swapped)) - x).abs().mean(),
            "adversarial": cross_entropy(g_real, real),
            "classification": cross_entropy(g_class, y_partner),
            "disc_adversarial": cross_entropy(discriminator_before(swapped)[0], fake) + cross_entropy(d_real, real),
            "disc_classification": cross_entropy(d_class, y),
        }
    assert (y[:half] != y[half:]).all()
    for name, value in expected.items():
        assert terms[name] == pytest.approx(float(value), rel=1e-4), name


@pytest.mark.parametrize(("cpu_bf16", "layout", "expected"), [
    (False, "auto", torch.contiguous_format), (True, "auto", torch.channels_last),
    (False, "channels-last", torch.channels_last), (True, "contiguous", torch.contiguous_format)])
def test_cpu_training_runs_channels_last_and_in_bf16_only_when_asked_where_the_cpu_has_it(
        cpu_bf16: bool, layout: str, expected: torch.memory_format) -> None:
    """The default reproduces the committed fp32 figures; the opt-in is bf16 and channels-last, 1.35x faster;
    ``layout`` pins the layout either way."""
    config, train_config = _configs(cpu_bf16=cpu_bf16, layout=layout)
    data = _data()
    trainer = BBCFETrainer(CAE(config), Discriminator(config), data.images, data.labels, train_config,
                           init_distributed("cpu"))
    assert trainer.memory_format == expected and trainer.batch(0)[0].is_contiguous(memory_format=expected)
    seen = []
    trainer.cae.decoder.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    terms = trainer.step(0)
    assert all(math.isfinite(value) for value in terms.values())
    assert set(seen) == {torch.bfloat16 if cpu_bf16 and cpu_has_native_bf16() else torch.float32}
    assert all(p.dtype == torch.float32 for p in trainer.cae.parameters())  # autocast, not a bf16 model


# -- configuration ---------------------------------------------------------------------------
def test_train_config_round_trip_and_errors() -> None:
    config = TrainConfig.preset("small", lr=3e-4)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    paper = TrainConfig.preset("paper")
    assert (paper.lr, paper.betas, paper.weight_decay, paper.lr_halvings) == (1e-4, (0.5, 0.999), 1e-4, 10)
    with pytest.raises(TrainingError, match="dc='critic'"):
        TrainConfig(dc="critic")
    with pytest.raises(TrainingError, match="unknown training preset"):
        TrainConfig.preset("huge")
    with pytest.raises(TrainingError, match=r"layout='nhwc': choose one of auto, channels-last, contiguous"):
        TrainConfig(layout="nhwc")
    with pytest.raises(TrainingError, match="cpu_bf16=True asks for bf16 autocast, which amp=False turns off"):
        TrainConfig(amp=False, cpu_bf16=True)


@pytest.mark.parametrize("field, value", [("iters", 1e1), ("batch_size", 2.0), ("seed", "a"), ("max_shift", True),
                                          ("lr_halvings", "2"), ("ckpt_every", None)])
def test_train_config_refuses_integer_fields_that_are_not_whole_numbers(field: str, value: Any, tmp_path) -> None:
    """iters=1e1 passed the old int(value) check and failed in the trainer after train_config.json was written."""
    with pytest.raises(TrainingError, match=rf"^{field}={re.escape(repr(value))}: must be a whole number$"):
        TrainConfig.preset("tiny", **{field: value})
    saved = json.loads(json.dumps(TrainConfig.preset("tiny", iters=10).to_dict()))
    assert TrainConfig.from_dict(saved).iters == 10  # a saved config's ints stay ints


def test_numpy_integers_are_whole_numbers_stored_as_ints() -> None:
    """A sweep over np.arange passed the old checks; the first whole-number check refused it."""
    import numpy as np

    from caex.evaluation import LocalisationMetric, PerturbationMetric

    config = TrainConfig.preset("tiny", iters=np.int64(10), seed=np.int32(2))
    assert type(config.iters) is int and type(config.seed) is int and json.dumps(config.to_dict())
    assert type(CAEConfig.preset("tiny", image_size=np.int64(32), channels=1, num_classes=2).image_size) is int
    assert type(PerturbationMetric(patch=np.int64(5)).patch) is int and LocalisationMetric(k=np.float32(0.1)).k
    assert type(TrainConfig.preset("tiny", lr=np.float32(1e-3)).lr) is float
    with pytest.raises(TrainingError, match=r"^lr='1e-3': must be a number$"):  # a raw TypeError in a comparison
        TrainConfig.preset("tiny", lr="1e-3")
    with pytest.raises(TrainingError, match=r"^time_limit='600': must be a number$"):
        TrainConfig.preset("tiny", time_limit="600")
    with pytest.raises(TrainingError, match=r"^loss weight recon_image='20': must be a number$"):
        TrainConfig.preset("tiny", loss={"recon_image": "20"})
    with pytest.raises(TrainingError, match=r"^lr=1000.*: must be a number$"):  # an OverflowError otherwise
        TrainConfig.preset("tiny", lr=10**400)


def test_train_config_saved_before_layout_loads_with_the_layout_it_trained_in() -> None:
    """Runs saved with the former ``channels_last`` flag (True: what "auto" does) resume in the same layout."""
    saved = {key: value for key, value in TrainConfig().to_dict().items() if key != "layout"}
    assert TrainConfig.from_dict({**saved, "channels_last": True}).layout == "auto"
    assert TrainConfig.from_dict({**saved, "channels_last": False}).layout == "contiguous"


def test_preset_loss_overrides_keep_the_other_weights() -> None:
    small = TrainConfig.preset("small").weights
    assert TrainConfig.preset("small", loss={"adversarial": 0.5}).weights == dataclasses.replace(small, adversarial=0.5)
    assert TrainConfig.preset("paper", loss={"cycle": 2.0}).weights == losses.LossWeights(cycle=2.0)
    given = TrainConfig.preset("small", weights={"recon_image": 3.0}, loss={"cycle": 4.0}).weights
    assert given == losses.LossWeights(recon_image=3.0, cycle=4.0)  # on top of explicitly given weights
    with pytest.raises(TrainingError, match="loss weight cycle=-1"):
        TrainConfig.preset("small", loss={"cycle": -1.0})


def test_small_preset_is_the_measured_recipe() -> None:
    """Every README figure for the small preset was measured with exactly these settings."""
    small = TrainConfig.preset("small")
    assert (small.iters, small.batch_size, small.lr, small.lr_halvings, small.critic_noise) == (6000, 4, 1e-3, 2, 0.0)
    assert (small.max_shift, small.hflip) == (4, None)  # flips where the data is mirror-symmetric
    changed = {name: value for name, value in dataclasses.asdict(small.weights).items()
               if value != getattr(losses.LossWeights(), name)}
    assert changed == {"recon_image": 20.0, "classification": 10.0, "recon_pyramid": 20.0, "code_classification": 5.0}
    assert CAEConfig.preset("small", image_size=64, channels=1, num_classes=4).class_pool == "max"


def test_uniform_class_loss_is_smallest_when_the_classes_cannot_be_told_apart() -> None:
    assert torch.isclose(losses.uniform_class_loss(torch.zeros(3, 4)), torch.log(torch.tensor(4.0)))
    confident = torch.tensor([[10.0, 0.0, 0.0, 0.0]])  # -mean log_softmax = logsumexp - 10/4
    expected = torch.logsumexp(confident, dim=1) - 2.5
    assert torch.isclose(losses.uniform_class_loss(confident), expected)
    assert losses.uniform_class_loss(confident) > losses.uniform_class_loss(torch.zeros(1, 4))


def test_individual_critic_learns_the_class_and_the_encoder_learns_to_confuse_it() -> None:
    """With individual_adversarial > 0 the discriminator owns the critic; the discriminator step trains it
    on detached codes, the generator step trains Es (not the critic) against it. Off: no critic at all."""
    config, train_config = _configs(loss={"individual_adversarial": 1.0})
    images, labels = torch.rand(8, 1, 16, 16), torch.arange(8) % 3
    torch.manual_seed(0)
    trainer = BBCFETrainer(CAE(config), Discriminator(config, individual_critic=True), images, labels,
                           train_config, init_distributed("cpu"))
    critic = trainer.discriminator.individual_critic
    before = [p.detach().clone() for p in critic.parameters()]
    calls = []
    critic.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].requires_grad))
    terms = trainer.step(0)
    assert {"individual_adversarial", "disc_individual"} <= set(terms)
    assert terms["individual_adversarial"] >= math.log(3) - 1e-6  # never below the uniform bound log K
    assert calls == [False, True]  # discriminator step: detached codes; generator step: codes with gradients
    assert any(not torch.equal(a, b) for a, b in zip(before, critic.parameters()))  # trained in the D step
    real, fake_class, individual = trainer.discriminator(images, individual=torch.rand(8, 16, 8, 8))
    assert real.shape == (8, 2) and fake_class.shape == individual.shape == (8, 3)
    assert Discriminator(config).individual_critic is None
    with pytest.raises(ValueError, match="without individual_critic"):
        Discriminator(config)(images, individual=torch.rand(8, 16, 8, 8))


def test_code_probe_reads_the_class_from_the_class_code_and_trains_with_the_encoders() -> None:
    """code_classification > 0: a linear probe on c, in the generator's optimiser; its term is the
    cross-entropy of its logits for the batch's class codes, and alone it moves the probe and Ec, nothing
    else. Off: no probe."""
    only_probe = dict.fromkeys(GENERATOR_TERMS, 0.0) | {"code_classification": 1.0}
    config, train_config = _configs(loss=only_probe, weight_decay=0.0)
    images, labels = torch.rand(8, 1, 16, 16), torch.arange(8) % 3
    torch.manual_seed(0)
    trainer = BBCFETrainer(CAE(config), Discriminator(config), images, labels, train_config,
                           init_distributed("cpu"))
    probe = trainer.forward_module.code_probe
    assert (probe.in_features, probe.out_features) == (config.code_dim, 3)
    x, y = trainer.batch(0)
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(probe(trainer.cae.class_encoder(x)), y)
    before = {name: p.detach().clone() for name, p in trainer.forward_module.named_parameters()}
    terms = trainer.step(0)
    assert terms["code_classification"] == pytest.approx(float(expected), rel=1e-5)
    moved = {name for name, p in trainer.forward_module.named_parameters() if not torch.equal(p, before[name])}
    assert {"code_probe.weight", "code_probe.bias"} <= moved
    assert {name.split(".")[1] for name in moved - {"code_probe.weight", "code_probe.bias"}} == {"class_encoder"}
    assert BBCFETrainer(CAE(config), Discriminator(config), images, labels, _configs()[1],
                        init_distributed("cpu")).forward_module.code_probe is None  # off by default


def test_runs_without_the_critic_log_no_critic_terms_and_resume_old_checkpoints(tmp_path) -> None:
    data, config, train_config = _two_iteration_run(tmp_path / "run")
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert "individual_adversarial" not in record and "disc_individual" not in record
    # A checkpoint written before these weights existed resumes (missing weights mean their defaults).
    checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    for name in ("individual_adversarial", "disc_individual"):
        del checkpoint.meta["train_config"]["weights"][name]
    resolved = dataclasses.replace(train_config, hflip=False, dc="discriminator")  # as train_cae resolves them
    trainer = BBCFETrainer(CAE(config), Discriminator(config), data.images, data.labels, resolved,
                           init_distributed("cpu"))
    trainer._check_same_trajectory(checkpoint.meta["train_config"], checkpoint.source)  # no error
    checkpoint.meta["train_config"]["weights"]["individual_adversarial"] = 1.0
    with pytest.raises(TrainingError, match="the run was trained with weights="):
        trainer._check_same_trajectory(checkpoint.meta["train_config"], checkpoint.source)


def test_code_separation_known_values() -> None:
    """Centroids (0, 0) and (6, 0), every code 1 from its centroid: all nearest their own, gap 6 radii."""
    codes = torch.tensor([[0.0, 1.0], [0.0, -1.0], [6.0, 1.0], [6.0, -1.0]])
    assert code_separation(codes, torch.tensor([0, 0, 2, 2])) == {"code_accuracy": 1.0, "code_gap": 6.0}
    collapsed = code_separation(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))  # a stall: one code for two classes
    assert collapsed == {"code_accuracy": 0.5, "code_gap": 0.0}
    mislabelled = code_separation(codes, torch.tensor([0, 2, 2, 2]))  # (0, 1) lies nearer class 2's mean
    assert mislabelled["code_accuracy"] == 0.75
    assert code_separation(codes, torch.zeros(4, dtype=torch.long)) == {"code_accuracy": 1.0}  # no pair, no gap


def test_cpu_model_reads_cpuinfo_and_falls_back_to_platform(monkeypatch, tmp_path) -> None:
    from caex.utils import versions

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t: fpu\n")
    real_path = versions.Path
    monkeypatch.setattr(versions, "Path", lambda name: cpuinfo if name == "/proc/cpuinfo" else real_path(name))
    assert versions.cpu_model() == "Test CPU 9000"
    monkeypatch.setattr(versions, "Path", lambda name: tmp_path / "missing")
    monkeypatch.setattr(versions.platform, "processor", lambda: "")
    monkeypatch.setattr(versions.platform, "machine", lambda: "riscv64")
    assert versions.cpu_model() == "riscv64"


# -- training runs ---------------------------------------------------------------------------
def test_training_run_writes_bundle_and_logs(tmp_path) -> None:
    data = _data()
    bundle = DataBundle(train=data, test=data.subset([0, 1, 2]), class_names=["x", "y", "z"], spec="test")
    config, train_config = _configs(iters=4, sample_every=2, ckpt_every=2, log_every=1)
    cae = train_cae(bundle, config, train_config, tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.json", "model.safetensors", "codes.safetensors", "train_config.json", "log.jsonl",
                 "log.csv", "summary.json", CHECKPOINT_FILE, "samples/iter_0000002.png", "samples/iter_0000004.png"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [1, 2, 3, 4]
    assert set(GENERATOR_TERMS + DISCRIMINATOR_TERMS) <= set(records[0])
    assert [("code_accuracy" in r, "code_gap" in r) for r in records] == [(False, False), (True, True)] * 2
    assert 0.0 <= records[3]["code_accuracy"] <= 1.0 and records[3]["code_gap"] >= 0.0  # at the sample steps
    summary = json.loads((run / "summary.json").read_text())
    assert summary["code_accuracy"] == round(code_separation(cae.class_codes(bundle.test.images),
                                                             bundle.test.labels)["code_accuracy"], 5)
    assert summary["versions"]["torch"] == torch.__version__  # a seed gives these weights on this torch
    assert summary["versions"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # ... and processor
    assert summary["versions"]["cpu"]
    # what a bundle kept without its checkpoint must still say: where and how it computed, on which data
    assert summary["device"] == "cpu" and summary["arithmetic"] == {"precision": "float32", "layout": "contiguous"}
    assert summary["data"]["spec"] == "test" and len(summary["data"]["digest"]) == 16
    assert summary["classifier_digest"] is None  # no critic
    assert summary["cae_digest"] == cae_digest(CAE.load(run))  # the model itself, as results name it
    assert [segment["iters"] for segment in summary["history"]] == [[0, 4]]
    # The code monitor only reads: a run without a folder (no monitor) ends with the same weights.
    unmonitored = train_cae(bundle, config, train_config)
    for (name, a), (_, b) in zip(cae.state_dict().items(), unmonitored.state_dict().items()):
        assert torch.equal(a, b), name
    loaded = CAE.load(run)
    assert loaded.class_names == ["x", "y", "z"] and loaded.train_codes.shape == (24, 8)
    assert loaded.data_spec == "test"  # provenance: what the bundle was trained on
    assert torch.equal(loaded.class_codes(data.images), cae.class_codes(data.images))
    assert torch.allclose(loaded.centroids[1], loaded.train_codes[data.labels == 1].mean(0))
    assert json.loads((run / "summary.json").read_text())["iters"] == 4
    with pytest.raises(TrainingError, match=r"folder is not empty; continue it \(--resume, resume=True\)"):
        train_cae(bundle, config, train_config, run)
    train_cae(bundle, config, dataclasses.replace(train_config, iters=6), run, resume=True)
    history = json.loads((run / "summary.json").read_text())["history"]
    assert [segment["iters"] for segment in history] == [[0, 4], [4, 6]]  # a resume no longer hides the first
    assert history[1]["torch_threads"] == torch.get_num_threads() and history[1]["device"] == "cpu"
    train_cae(bundle, config, train_config, run, force=True)
    assert [segment["iters"] for segment in json.loads((run / "summary.json").read_text())["history"]] == [[0, 4]]


def _interrupt_at(monkeypatch, stop: int) -> None:
    """Make the trainer die like a killed process when it starts iteration ``stop``."""
    original = BBCFETrainer.step

    def step(self, iteration):
        if iteration == stop:
            raise KeyboardInterrupt
        return original(self, iteration)

    monkeypatch.setattr(BBCFETrainer, "step", step)


@pytest.mark.parametrize(("ema", "loss"), [(0.0, {}), (0.9, {}), (0.0, {"individual_adversarial": 1.0}),
                                         (0.0, {"code_classification": 1.0})])
def test_resume_is_exact(tmp_path, monkeypatch, ema: float, loss: dict[str, float]) -> None:
    """The moving average, the individual critic and the code probe are restored too: were one not, the
    encoders it trains would take another course after the resume."""
    data = _data()
    config, train_config = _configs(iters=6, ckpt_every=3, sample_every=100, ema=ema, loss=loss)
    straight = train_cae(data, config, train_config, tmp_path / "straight")
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 4)  # dies one iteration after the checkpoint at 3
        with pytest.raises(KeyboardInterrupt):
            train_cae(data, config, train_config, tmp_path / "resumed")
    assert load_checkpoint(tmp_path / "resumed" / CHECKPOINT_FILE).iteration == 3
    resumed = train_cae(data, config, train_config, tmp_path / "resumed", resume=True)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    lines = (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["iter"] for line in lines] == [1, 2, 3, 4, 5, 6]


def test_a_resume_that_trains_nothing_keeps_the_summarys_timing_and_terms(tmp_path) -> None:
    """Resuming a finished run (as the demo does to finish a save) used to record 0 s, 0 images/s and no terms."""
    data, config, train_config = _two_iteration_run(tmp_path / "run")
    before = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert before["final_terms"] and before["trained_iters"] == 2
    train_cae(data, config, train_config, tmp_path / "run", resume=True)
    after = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert after == {**before, "trained_iters": 0}  # what this call trained; the demo reads its resume point from it
    # a summary left from an earlier call (the final one was killed while written) lends neither history nor times
    (tmp_path / "run" / "summary.json").write_text(json.dumps({**before, "iters": 1, "history": [], "seconds": 99}))
    train_cae(data, config, train_config, tmp_path / "run", resume=True)
    again = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert again["history"] == before["history"] and again["seconds"] != 99


def test_resume_with_another_ema_setting_is_refused(tmp_path) -> None:
    data, config, train_config = _two_iteration_run(tmp_path / "run")
    with pytest.raises(TrainingError, match="saved without a moving average of the weights; resume with the run's ema"):
        train_cae(data, config, dataclasses.replace(train_config, iters=4, ema=0.9), tmp_path / "run", resume=True)


def test_moving_average_of_the_weights_is_what_training_returns() -> None:
    """ema=d: the first step copies the weights, then average <- d * average + (1 - d) * weights."""
    config, train_config = _configs(ema=0.75)
    trainer = BBCFETrainer(CAE(config), Discriminator(config), torch.rand(8, 1, 16, 16), torch.arange(8) % 3,
                           train_config, init_distributed("cpu"))
    expected = None
    for iteration in range(3):
        trainer.step(iteration)
        live = {name: value.detach().clone() for name, value in trainer.cae.named_parameters()}
        expected = live if expected is None else {name: 0.75 * expected[name] + 0.25 * live[name] for name in live}
    averaged = dict(trainer.result.named_parameters())
    assert trainer.result is not trainer.cae
    for name, value in expected.items():
        torch.testing.assert_close(averaged[name], value, rtol=1e-6, atol=1e-7)
    assert not all(torch.equal(averaged[name], live[name]) for name in live)  # the average lags the live weights
    with pytest.raises(TrainingError, match=r"ema=1.0: must be in \[0, 1\)"):
        TrainConfig.preset("tiny", ema=1.0)
    assert BBCFETrainer(CAE(config), Discriminator(config), torch.rand(8, 1, 16, 16), torch.arange(8) % 3,
                        _configs()[1], init_distributed("cpu")).average is None  # off by default


def test_kill_during_checkpoint_write_keeps_previous(tmp_path, monkeypatch) -> None:
    data = _data()
    config, train_config = _configs(iters=4, ckpt_every=2, sample_every=100)
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        if str(dst).endswith(CHECKPOINT_FILE):
            calls.append(dst)
            if len(calls) == 2:
                raise OSError("disk pulled")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk pulled"):
        train_cae(data, config, train_config, tmp_path / "run")
    checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    assert checkpoint.iteration == 2 and "cae.decoder.mlp.net.0.weight" in checkpoint.tensors
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP])
def test_a_stop_signal_saves_a_checkpoint_at_the_next_check_and_the_run_resumes_exactly(tmp_path, signum,
                                                                                         monkeypatch) -> None:
    """SLURM's SIGTERM (or its early warning SIGUSR1, which killed the run with no checkpoint), a closed terminal's
    SIGHUP or a Ctrl-C keeps every iteration done, not only those up to the last periodic checkpoint,
    and draws the stopped model's sample grid (it had none between two periodic grids)."""
    data = _data()
    config, train_config = _configs(iters=12, ckpt_every=100, sample_every=4, log_every=2)

    step = BBCFETrainer.step

    def signal_in_iteration_5(trainer: BBCFETrainer, iteration: int) -> dict[str, float]:
        if iteration == 4:  # zero-based: the fifth
            os.kill(os.getpid(), signum)
        return step(trainer, iteration)

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP)}
    with monkeypatch.context() as patch, pytest.raises(
            Interrupted, match=rf"^stopped by {signal.Signals(signum).name} after iteration 5, "
                               r"checkpoint saved$") as caught:  # alone: checked every iteration
        patch.setattr(BBCFETrainer, "step", signal_in_iteration_5)
        train_cae(data, config, train_config, tmp_path / "run")
    assert caught.value.exit_code == 128 + signum
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # the caller's handlers are back
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE).iteration == 5  # the iteration of the signal
    assert not (tmp_path / "run" / "config.json").exists()  # not a finished model
    assert sorted(path.name for path in (tmp_path / "run" / "samples").iterdir()) == ["iter_0000004.png",
                                                                                      "iter_0000005.png"]
    resumed = train_cae(data, config, train_config, tmp_path / "run", resume=True)
    straight = train_cae(data, config, train_config, tmp_path / "straight")
    for ours, theirs in zip(resumed.state_dict().values(), straight.state_dict().values()):
        assert torch.equal(ours, theirs)
    # the stopped call wrote no summary, and its history was lost; its checkpoint carries it
    history = json.loads((tmp_path / "run" / "summary.json").read_text())["history"]
    assert [call["iters"] for call in history] == [[0, 5], [5, 12]] and history[0]["processes"] == 1


def test_a_time_limit_is_checked_every_iteration_and_the_last_model_gets_its_grid(tmp_path) -> None:
    """Checked every log_every iterations, a 38 s iteration overshot --time-limit 20 by minutes; and a run it
    stopped before sample_every left no picture of its model."""
    config, train_config = _configs(iters=40, log_every=10, sample_every=30, ckpt_every=100, time_limit=1e-9)
    train_cae(_data(), config, train_config, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["iters"] == 1
    assert [path.name for path in (tmp_path / "run" / "samples").iterdir()] == ["iter_0000001.png"]


def test_a_run_projected_to_take_hours_is_warned_about_once_timed() -> None:
    from caex.training.trainer import _duration, _warn_if_long

    config = TrainConfig.preset("small")  # 6,000 iterations
    assert not _warn_if_long(config, done=2, start=0, seconds=30.0)  # too few timed yet
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _warn_if_long(config, done=20, start=0, seconds=6.0)  # 0.3 s/it: 30 min, no warning
    with pytest.warns(UserWarning, match=r"^at 1.06 s per iteration the remaining 5,980 iterations take about "
                                         r"1 h 46 min; time_limit \(--time-limit SECONDS\) stops sooner"):
        assert _warn_if_long(config, done=20, start=0, seconds=21.2)
    assert (_duration(59 * 60), _duration(30 * 3600 + 125), _duration(88 * 86400)) == ("59 min", "30 h 2 min",
                                                                                          "88 days")


def test_a_stop_signal_during_the_final_save_waits_for_it(tmp_path, monkeypatch) -> None:
    """The handler ended with the loop, so a SIGTERM while saving left a model without summary.json, and the
    resume that finished it recorded 0 iterations trained in 0 s."""
    data = _data()
    config, train_config = _configs(iters=2)
    save = CAE.save

    def signalled_save(self, run_dir):
        os.kill(os.getpid(), signal.SIGTERM)
        return save(self, run_dir)

    def outer(signum, frame):  # what an unguarded SIGTERM does here: end the run before its summary
        raise RuntimeError("SIGTERM reached the caller")

    monkeypatch.setattr(CAE, "save", signalled_save)
    previous = signal.signal(signal.SIGTERM, outer)
    try:
        train_cae(data, config, train_config, tmp_path / "run")
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["trained_iters"] == 2 and summary["seconds"] > 0


def test_a_second_ctrl_c_aborts_at_once(tmp_path) -> None:
    data = _data()
    config, train_config = _configs(iters=12, ckpt_every=100, sample_every=5)

    def twice(iteration: int, cae: CAE) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train_cae(data, config, train_config, tmp_path / "run", callback=twice)
    assert not (tmp_path / "run" / CHECKPOINT_FILE).exists()


def test_a_run_folder_in_use_by_another_training_is_refused_and_freed_when_it_ends(tmp_path) -> None:
    """Two trainings resuming one folder would overwrite each other's checkpoints; the lock dies with its holder."""
    data = _data()
    config, train_config = _configs(iters=2, ckpt_every=2, sample_every=100)
    run = tmp_path / "run"
    train_cae(data, config, train_config, run)
    longer = dataclasses.replace(train_config, iters=4)
    in_use = rf"^{re.escape(str(run))}: in use by caex train \(pid {os.getpid()}\); wait for it to finish or choose"
    # flock treats a second open of the lock file as another holder, even in this process
    with folder_lock(run, "caex train"), pytest.raises(CaexError, match=in_use):
        train_cae(data, config, longer, run, resume=True)
    assert load_checkpoint(run / CHECKPOINT_FILE).iteration == 2  # untouched
    train_cae(data, config, longer, run, resume=True)
    assert load_checkpoint(run / CHECKPOINT_FILE).iteration == 4
    notes = tmp_path / "notes.txt"
    notes.write_text("a file")
    with pytest.raises(TrainingError, match=rf"^{re.escape(str(notes))}: exists and is not a folder$"):
        train_cae(data, config, train_config, notes)  # the lock leaves it alone; the run's own check names it
    assert notes.read_text() == "a file"
    # a run refused before any work leaves no folder behind, nor parents it made
    with pytest.raises(DataError, match=r"^training images are \(1, 16, 16\), the CAE config expects \(1, 32, 32\) "
                                        r"\(load the data with --size 32 --channels 1\)$"):
        train_cae(data, CAEConfig.preset("tiny", image_size=32, channels=1, num_classes=3), train_config,
                  tmp_path / "missing" / "deeper" / "run")
    assert not (tmp_path / "missing").exists()


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path, monkeypatch) -> None:
    data = _data()
    config, train_config = _configs(iters=6, ckpt_every=2, sample_every=100)
    original, calls = losses.adversarial_generator_loss, []

    def poisoned(logits):
        calls.append(1)
        return original(logits) * (float("nan") if len(calls) == 3 else 1.0)

    monkeypatch.setattr(losses, "adversarial_generator_loss", poisoned)
    with pytest.raises(TrainingError, match="loss term 'adversarial' became non-finite .* at iteration 3"):
        train_cae(data, config, train_config, tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE).iteration == 2


def test_a_run_that_failed_before_its_first_checkpoint_is_started_again_not_resumed(tmp_path) -> None:
    """A callback that raised at the first sample step left a folder whose error said to resume, and resuming
    said there was no checkpoint: only force=True, never named for it, could reuse the folder."""
    config, train_config = _configs(iters=4, ckpt_every=4, sample_every=1)

    def failing(iteration: int, cae: CAE) -> None:
        raise RuntimeError("a notebook's bug")

    with pytest.raises(RuntimeError, match="a notebook's bug"):
        train_cae(_data(), config, train_config, tmp_path / "run", callback=failing)
    assert not (tmp_path / "run" / CHECKPOINT_FILE).exists() and any((tmp_path / "run").iterdir())
    with pytest.raises(TrainingError, match=r"run: folder is not empty but holds no checkpoint to continue \(a run "
                                            r"that stopped before its first, or other files\); overwrite it \(--force"):
        train_cae(_data(), config, train_config, tmp_path / "run")
    # A requeued job (--resume from its first launch) killed before its first checkpoint must not be stuck: only
    # the run's own start files are there, so resuming starts it again.
    (tmp_path / "other").mkdir()
    for name in ("train_config.json", "log.jsonl", "notes.txt"):
        (tmp_path / "other" / name).write_text("{}")
    with pytest.raises(TrainingError, match=r"other: no checkpoint to resume from, and files that are not a run's; "
                                            r"start it again \(--force, force=True\)"):
        train_cae(_data(), config, train_config, tmp_path / "other", resume=True)
    (tmp_path / "run" / ".checkpoint.safetensors.x1y2.tmp").write_text("a save cut short")  # hidden: no matter
    (tmp_path / "run" / "Thumbs.db").write_bytes(b"Windows' Explorer looked")  # system metadata: no matter either
    with pytest.raises(TrainingError, match=r"run: the run stopped before its first checkpoint, which would have "
                                            r"recorded its networks; give the --preset"):
        train_cae(_data(), None, train_config, tmp_path / "run", resume=True)  # the default could differ
    with pytest.warns(UserWarning, match=r"run: the run stopped before its first checkpoint, so resuming starts it "
                                         r"again \(replacing its logs and sample grids\)$"):
        train_cae(_data(), config, train_config, tmp_path / "run", resume=True)
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE).iteration == 4
    train_cae(_data(), config, train_config, tmp_path / "run", force=True)


def test_a_new_run_folder_holding_only_system_files_is_empty(tmp_path) -> None:
    """A folder a Mac's Finder or Windows' Explorer had looked into (.DS_Store, Thumbs.db) was refused as "not
    empty but holds no checkpoint", and --resume then warned of a run that had never started."""
    config, train_config = _configs(iters=2)
    (tmp_path / "run").mkdir()
    for name in (".DS_Store", "Thumbs.db", "desktop.ini"):
        (tmp_path / "run" / name).write_bytes(b"")
    train_cae(_data(), config, train_config, tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE).iteration == 2


def test_resume_where_there_is_no_run_yet_starts_one(tmp_path) -> None:
    """A requeued batch job runs one command line, --resume included, from its first launch; it was refused with
    "no checkpoint to resume from" on the missing (or empty) folder."""
    config, train_config = _configs(iters=2)
    (tmp_path / "empty").mkdir()
    for run in (tmp_path / "missing", tmp_path / "empty"):
        with pytest.warns(UserWarning, match=rf"^{re.escape(str(run))}: holds no run yet, so resuming starts one"):
            train_cae(_data(), config, train_config, run, resume=True)
        assert json.loads((run / "summary.json").read_text())["iters"] == 2


def test_bad_inputs_raise_clear_errors(tmp_path) -> None:
    data = _data()
    config, train_config = _configs()
    with pytest.raises(DataError, match=r"training images are \(1, 16, 16\), the CAE config expects \(1, 32, 32\) "
                                        r"\(load the data with --size 32 --channels 1\)$"):
        train_cae(data, CAEConfig.preset("tiny", image_size=32, channels=1, num_classes=3), train_config)
    with pytest.raises(TrainingError, match="no checkpoint to resume from"):
        train_cae(data, config, train_config, tmp_path / "file" / "run", resume=True) if (tmp_path / "file").touch() \
            else train_cae(data, config, train_config, tmp_path / "file", resume=True)  # a file: nothing to resume
    with pytest.raises(TrainingError, match="needs the target classifier"):
        train_cae(data, config, TrainConfig.preset("tiny", dc="classifier"))


class _MeanBrightness(Classifier):
    """A differentiable toy classifier: class 1 iff the image is brighter than 0.5 on average."""

    def __init__(self) -> None:
        super().__init__(["dark", "bright"], image_size=16, channels=1)
        self._net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 2))
        with torch.no_grad():  # logit(bright) - logit(dark) = 80 * (mean - 0.5)
            self._net[1].weight.copy_(torch.stack([-torch.ones(256), torch.ones(256)]) * 40 / 256)
            self._net[1].bias.copy_(torch.tensor([20.0, -20.0]))

    @property
    def module(self) -> torch.nn.Module:
        return self._net

    def _logits_batch(self, images: torch.Tensor) -> torch.Tensor:
        return self._net(images)


def test_classifier_as_critic_and_predicted_labels() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(20, 1, 16, 16, generator=generator) * 0.5 + torch.linspace(0, 0.5, 20).view(-1, 1, 1, 1)
    data = ImageSet(images, torch.zeros(20, dtype=torch.long).index_fill(0, torch.arange(10), 1))  # wrong labels
    classifier = _MeanBrightness()
    expected = classifier.predict(images)
    assert 0 < int(expected.sum()) < 20
    config, train_config = _configs(classes=2, iters=2, dc="classifier", labels="predicted")
    cae = train_cae(data, config, train_config, classifier=classifier)
    assert torch.equal(cae.train_labels, expected)  # trained (and coded) on the classifier's view


def test_predicted_labels_of_a_single_class_name_the_classifier() -> None:
    """A wrongly normalised model predicts one class for everything; the error spoke of the data's classes."""
    images = torch.rand(20, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.4  # all "dark"
    data = ImageSet(images, torch.arange(20) % 2)
    config, train_config = _configs(classes=2, iters=2, dc="discriminator", labels="predicted")
    with pytest.raises(TrainingError, match="the classifier predicts 'dark' for all 20 training images.*normalisation"):
        train_cae(data, config, train_config, classifier=_MeanBrightness())


def test_a_torchscript_classifier_can_be_the_critic() -> None:
    """ScriptModules refuse ``requires_grad_``; freezing the critic once crashed every run with a TorchScript file."""
    from caex.classifier import TorchClassifier

    scripted = torch.jit.script(_MeanBrightness().module)
    classifier = TorchClassifier(scripted, ["dark", "bright"], image_size=16, channels=1)
    images = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    config, train_config = _configs(classes=2, iters=1, dc="classifier")
    train_cae(ImageSet(images, torch.arange(8) % 2), config, train_config, classifier=classifier)
    assert all(p.requires_grad for p in scripted.parameters())  # frozen for training only


@pytest.mark.parametrize("made", ["in inference mode", "in half precision"])
def test_a_critic_that_autograd_cannot_train_through_is_copied(made: str) -> None:
    """A classifier whose weights were made inside torch.inference_mode() ("Inference tensors cannot be saved for
    backward") or in float16 (a dtype mismatch with the float32 images) crashed train_cae as its critic."""
    from caex.classifier import TorchClassifier

    with torch.inference_mode(made == "in inference mode"):
        net = _MeanBrightness().module
    net = net.half() if made == "in half precision" else net
    before = {name: tensor.clone() for name, tensor in net.state_dict().items()}
    classifier = TorchClassifier(net, ["dark", "bright"], image_size=16, channels=1)
    config, train_config = _configs(classes=2, iters=2, dc="classifier")
    cae = train_cae(_data(classes=2), config, train_config, classifier=classifier)
    assert all(torch.isfinite(p).all() for p in cae.parameters())
    assert all(torch.equal(net.state_dict()[name], tensor) for name, tensor in before.items())  # the user's, as it was


@pytest.mark.parametrize("training", [True, False])
def test_the_users_classifier_module_comes_back_trainable_and_in_its_mode(training: bool) -> None:
    """The critic is frozen in place on the training device: the caller's own network stayed frozen (and in
    eval mode) after train_cae, so fine-tuning it afterwards silently trained nothing."""
    classifier = _MeanBrightness()
    classifier.module.train(training)
    classifier.module[0].eval()  # a submodule the caller froze (say a batch norm) stays so: train() reset it
    classifier.module[1].bias.requires_grad_(False)  # a flag the caller set is kept too
    seen = []
    config, train_config = _configs(classes=2, iters=1, dc="classifier", sample_every=1)
    train_cae(_data(classes=2), config, train_config, classifier=classifier,
              callback=lambda *_: seen.append(any(p.requires_grad for p in classifier.module.parameters())))
    assert seen == [False]  # frozen while training
    assert classifier.module[1].weight.requires_grad and not classifier.module[1].bias.requires_grad
    assert classifier.module.training == training and not classifier.module[0].training


def test_a_notebook_call_keeps_its_random_stream_and_may_come_from_inside_no_grad() -> None:
    """Training seeded torch's global generator, so a notebook's next torch.rand repeated after every run; and
    a call inside torch.no_grad() failed with 'element 0 of tensors does not require grad'."""
    config, train_config = _configs(iters=2)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with torch.no_grad():
        cae = train_cae(_data(), config, train_config)
    torch.testing.assert_close(torch.rand(3), expected)
    again = train_cae(_data(), config, train_config)  # the run's own draws still come from its seed
    for ours, theirs in zip(cae.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_a_critic_whose_outputs_are_read_as_logits_is_another_critic_for_a_resume() -> None:
    """Runs begun before a softmax-ending critic's outputs were read as log-probabilities trained against its raw
    probabilities: resuming one with the corrected reading would change its loss unnoticed."""
    from caex.classifier import TorchClassifier
    from caex.utils.provenance import classifier_digest

    net = _MeanBrightness().module
    as_logits = TorchClassifier(net, ["dark", "bright"], 16, 1, outputs="logits")
    read = TorchClassifier(net, ["dark", "bright"], 16, 1, outputs="probabilities")
    assert classifier_digest(as_logits) != classifier_digest(read)
    assert classifier_digest(as_logits) == classifier_digest(TorchClassifier(net, ["dark", "bright"], 16, 1,
                                                                               outputs="logits"))


def test_a_bare_module_as_classifier_and_unknown_config_fields_are_named() -> None:
    with pytest.raises(CaexError, match=r"expected a caex Classifier, got the torch module Sequential; wrap it as "
                                        r"caex.classifier.TorchClassifier"):
        train_cae(_data(classes=2), *_configs(classes=2, iters=1), classifier=_MeanBrightness().module)
    with pytest.raises(TrainingError, match=r"^unknown TrainConfig field\(s\): iter$"):
        TrainConfig.preset("tiny", iter=3)
    with pytest.raises(TrainingError, match=r"^unknown LossWeights field\(s\): advers, cyc$"):
        TrainConfig.preset("tiny", loss={"advers": 1.0, "cyc": 2.0})


@pytest.mark.parametrize("noise", [0.0, 0.2])
def test_critic_noise_changes_only_what_the_classifier_critic_sees(noise: float) -> None:
    config, train_config = _configs(classes=2, critic_noise=noise, dc="classifier")
    trainer = BBCFETrainer(CAE(config), Discriminator(config), torch.rand(8, 1, 16, 16), torch.arange(8) % 2,
                           train_config, init_distributed("cpu"))
    swapped = torch.zeros(64, 1, 16, 16)  # mid-grey in the model's [-1, 1] range
    seen = trainer._critic_input(swapped)
    if noise == 0.0:
        assert torch.equal(seen, torch.full_like(swapped, 0.5))  # off: exactly the data-range image
    else:
        assert float(seen.min()) >= 0.0 and float(seen.max()) <= 1.0
        assert abs(float(seen.std()) - noise) < 0.02 and abs(float(seen.mean()) - 0.5) < 0.01


def test_critic_noise_reaches_the_generator_step() -> None:
    images = torch.rand(20, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    data = ImageSet(images, (images.mean(dim=(1, 2, 3)) > 0.5).long())

    def trained(noise: float) -> dict[str, torch.Tensor]:
        config, train_config = _configs(classes=2, iters=2, dc="classifier", critic_noise=noise)
        return train_cae(data, config, train_config, classifier=_MeanBrightness()).state_dict()

    quiet, again, noisy = trained(0.0), trained(0.0), trained(0.3)
    assert all(torch.equal(quiet[name], again[name]) for name in quiet)  # deterministic without noise
    assert not all(torch.equal(quiet[name], noisy[name]) for name in quiet)  # the noise changed eq. 6


def test_critic_noise_out_of_range_is_named() -> None:
    with pytest.raises(TrainingError, match="critic_noise=-0.1"):
        TrainConfig.preset("tiny", critic_noise=-0.1)


def test_classifier_critic_on_another_device_leaves_the_users_classifier_usable() -> None:
    """The critic is copied to the training device: moving the user's module broke classifier.predict (and so
    labels="predicted") whenever the classifier was loaded on another device than the CAE trains on."""
    from caex.training.trainer import _class_critic

    classifier = _MeanBrightness()
    config = TrainConfig.preset("tiny", dc="classifier", labels="predicted", tensorboard=False)
    critic = _class_critic(classifier, config, 2, torch.device("meta"))
    assert {p.device.type for p in critic.parameters()} == {"meta"} and not critic.training
    assert not any(p.requires_grad for p in critic.parameters())
    assert {p.device.type for p in classifier.module.parameters()} == {"cpu"}
    assert classifier.predict(torch.full((2, 1, 16, 16), 0.9)).tolist() == [1, 1]
    assert _class_critic(classifier, config, 2, torch.device("cpu")).critic is classifier.module  # same device: no copy


def test_resume_with_other_training_settings_is_refused(tmp_path) -> None:
    data, config, train_config = _two_iteration_run(tmp_path / "run")
    changed = dataclasses.replace(train_config, iters=4, seed=3, weights=losses.LossWeights(cycle=2.0))
    with pytest.raises(TrainingError, match=r"trained with weights=.*seed=0 \(now weights=.*seed=3\); resume with"):
        train_cae(data, config, changed, tmp_path / "run", resume=True)
    with pytest.raises(TrainingError, match=r"trained with cpu_bf16=False \(now cpu_bf16=True\)"):
        train_cae(data, config, dataclasses.replace(train_config, iters=4, cpu_bf16=True), tmp_path / "run",
                  resume=True)
    with pytest.raises(TrainingError, match=r"trained with layout='auto' \(now layout='channels-last'\)"):
        train_cae(data, config, dataclasses.replace(train_config, iters=4, layout="channels-last"),
                  tmp_path / "run", resume=True)
    longer = dataclasses.replace(train_config, iters=4, sample_every=1, ckpt_every=1, log_every=2, time_limit=60.0)
    train_cae(data, config, longer, tmp_path / "run", resume=True)  # length and records may change
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["iters"] == 4


def _edit_checkpoint_header(path: Path, **changes: Any) -> dict[str, Any]:
    """Rewrite a checkpoint with ``changes`` to its JSON header (as another caex or a hand edit would); returns
    the header as it was."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["caex"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open is no mapping
    save_file(tensors, str(path), metadata={"caex": json.dumps({**header, **changes})})
    return header


def test_resume_of_a_newer_caexs_settings_is_refused_naming_the_checkpoint(tmp_path) -> None:
    """A loss weight or a network field this caex does not know ended in TypeError or an unnamed ModelError."""
    data, config, train_config = _two_iteration_run(tmp_path / "run")
    path = tmp_path / "run" / CHECKPOINT_FILE
    header = read_checkpoint_header(path)
    longer = dataclasses.replace(train_config, iters=3)
    _edit_checkpoint_header(path, train_config={**header["train_config"],
                                                "weights": {**header["train_config"]["weights"], "new_loss": 1.0}})
    with pytest.raises(TrainingError, match=rf"^{re.escape(str(path))}: unreadable loss weights \(.*new_loss.*\); "
                                            r"written by a newer caex\?$"):
        train_cae(data, config, longer, tmp_path / "run", resume=True)
    _edit_checkpoint_header(path, train_config=header["train_config"], cae_config={**header["cae_config"], "new": 1})
    with pytest.raises(TrainingError, match=rf"^{re.escape(str(path))}: unreadable networks config \(CAE config "
                                            r"has unknown field\(s\): new \(a typo, or written by a newer caex\)\)$"):
        train_cae(data, None, longer, tmp_path / "run", resume=True)


def test_resume_on_another_number_of_processes_or_arithmetic_is_allowed_with_a_warning(tmp_path) -> None:
    """A cluster may give fewer GPUs after a preemption, so it is not refused; but each rank's share of the pairs
    moves, so the run no longer matches an uninterrupted one, and it says so."""
    data, config, train_config = _two_iteration_run(tmp_path / "run")
    path = tmp_path / "run" / CHECKPOINT_FILE
    assert _edit_checkpoint_header(path, ranks=2)["ranks"] == 1
    with pytest.warns(UserWarning, match=r"trained on 2 process\(es\), it resumes on 1: it continues, but not as"):
        train_cae(data, config, dataclasses.replace(train_config, iters=3), tmp_path / "run", resume=True)
    # A GPU run (bf16, channels-last) resumed with --device cpu computes in fp32: allowed, and said (it was silent).
    gpu = {"precision": "bfloat16", "layout": "channels-last"}
    assert _edit_checkpoint_header(path, arithmetic=gpu)["arithmetic"] == {"precision": "float32",
                                                                           "layout": "contiguous"}
    with pytest.warns(UserWarning, match=r"trained in bfloat16 with channels-last memory, it resumes in float32 with "
                                         r"contiguous memory \(--device cpu\): it continues, but not as"):
        train_cae(data, config, dataclasses.replace(train_config, iters=4), tmp_path / "run", resume=True)


@pytest.mark.parametrize("header, message", [
    ([1], "not a caex checkpoint"),
    ({"iteration": "ten"}, r"its iteration \('ten'\) is not a count"),
    ({"iteration": 3, "version": 2}, r"written by a newer caex \(checkpoint version 2, this caex reads 1\); "
                                     r"upgrade caex$"),
    ({"iteration": 3, "schedulers": {}}, r"lacks optimizers, cae_config; not a checkpoint this caex can resume$")])
def test_a_checkpoint_with_a_mistyped_header_is_one_line(tmp_path, header, message: str) -> None:
    """A header that is no object, or an iteration that is no number, were AttributeError and ValueError; a newer
    caex's checkpoint resumed without a word, and one without an entry the resume reads raised a KeyError."""
    from safetensors.torch import save_file

    from caex.training.checkpoint import FORMAT

    path = tmp_path / CHECKPOINT_FILE
    header = {**header, "format": FORMAT} if isinstance(header, dict) else header
    save_file({"x": torch.zeros(1)}, str(path), metadata={"caex": json.dumps(header)})
    with pytest.raises(TrainingError, match=rf"^{re.escape(str(path))}: {message}"):
        load_checkpoint(path, required=("cae_config",))


def test_resume_with_another_classifier_as_critic_is_refused(tmp_path) -> None:
    data = _data(classes=2)
    config, train_config = _configs(classes=2, iters=2, ckpt_every=2, sample_every=100, dc="classifier")
    train_cae(data, config, train_config, tmp_path / "run", classifier=_MeanBrightness())
    other = _MeanBrightness()
    with torch.no_grad():
        other.module[1].bias.add_(1.0)
    longer = dataclasses.replace(train_config, iters=3)
    with pytest.raises(TrainingError, match=r"run/checkpoint\.safetensors: the run began with another classifier"):
        train_cae(data, config, longer, tmp_path / "run", resume=True, classifier=other)
    train_cae(data, config, longer, tmp_path / "run", resume=True, classifier=_MeanBrightness())


def test_the_resume_digests_take_any_dtype_and_see_any_change() -> None:
    """NumPy has no bfloat16: hashing a bf16 critic's weights must work, and one changed weight must show."""
    from caex.utils.provenance import classifier_digest

    critic = _MeanBrightness()
    critic.module.to(torch.bfloat16)
    before = classifier_digest(critic)
    with torch.no_grad():
        critic.module[1].bias[0] += 1.0
    assert len(before) == 16 and classifier_digest(critic) != before
    assert classifier_digest(None) is None
    # the value itself: checkpoints written before the digest moved to caex.utils.provenance must still resume
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.arange(8.0).view(2, 4))
        net[1].bias.copy_(torch.tensor([0.5, -0.5]))
    assert classifier_digest(TorchClassifier(net, ["a", "b"], 2, 1)) == "84e427914d81ece8"


def test_resume_on_other_training_images_is_refused(tmp_path) -> None:
    data, config, train_config = _two_iteration_run(tmp_path / "run")
    other = ImageSet(data.images.flip(-1), data.labels)
    with pytest.raises(TrainingError, match=r"the run began on other training images \(None, split seed None"):
        train_cae(other, config, dataclasses.replace(train_config, iters=3), tmp_path / "run", resume=True)
    more_classes = ImageSet(data.images, torch.arange(len(data)) % 4)  # the run has 3 classes: said now
    with pytest.raises(DataError, match=r"^training labels must lie in 0\.\.2, the 3 classes of the CAE's networks; "
                                        r"got 0\.\.3$"):
        train_cae(more_classes, None, dataclasses.replace(train_config, iters=3), tmp_path / "run", resume=True)
    with pytest.raises(DataError, match=r"^training images are \(1, 32, 32\), the resumed run's networks expect "
                                        r"\(1, 16, 16\) \(load the data with --size 16 --channels 1\)$"):
        train_cae(_data(size=32), None, dataclasses.replace(train_config, iters=3), tmp_path / "run", resume=True)


def test_resume_with_other_networks_is_refused(tmp_path) -> None:
    data, config, train_config = _two_iteration_run(tmp_path / "run")
    longer = dataclasses.replace(train_config, iters=3)
    wider = dataclasses.replace(config, width=config.width * 2)
    with pytest.raises(TrainingError, match=rf"networks have width={config.width} \(asked for "
                                            rf"width={config.width * 2}\)"):
        train_cae(data, wider, longer, tmp_path / "run", resume=True)
    assert train_cae(data, None, longer, tmp_path / "run", resume=True).config == config  # None: the run's own


def test_a_forced_run_refused_for_its_data_or_settings_keeps_the_previous_model(tmp_path) -> None:
    """--force deleted the finished run first; a new run then refused (here for its shift, or its images' size)
    left nothing behind."""
    data, config, train_config = _two_iteration_run(tmp_path / "run")
    with pytest.raises(TrainingError, match="max_shift=16: must be smaller than the 16px images"):
        train_cae(data, config, dataclasses.replace(train_config, max_shift=16), tmp_path / "run", force=True)
    with pytest.raises(DataError, match="training images are"):
        train_cae(_data(size=32), config, train_config, tmp_path / "run", force=True)
    assert CAE.load(tmp_path / "run").config == config
    with pytest.raises(TrainingError, match="lr=inf: must be a positive finite number"):
        dataclasses.replace(train_config, lr=math.inf)


def test_force_removes_the_previous_model_before_training(tmp_path, monkeypatch) -> None:
    data, config, train_config = _two_iteration_run(tmp_path / "run")
    CAE.load(tmp_path / "run")
    _interrupt_at(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train_cae(data, config, train_config, tmp_path / "run", force=True)
    with pytest.raises(ModelError, match="not a finished CAE run"):  # the old model does not pass for its result
        CAE.load(tmp_path / "run")


def test_resume_survives_a_log_line_cut_short_by_a_kill(tmp_path, monkeypatch) -> None:
    data = _data()
    config, train_config = _configs(iters=4, ckpt_every=2, sample_every=100)
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            train_cae(data, config, train_config, tmp_path / "run")
    log = tmp_path / "run" / "log.jsonl"
    log.write_text(log.read_text() + '{"iter": 4, "recon_im')
    train_cae(data, config, train_config, tmp_path / "run", resume=True)
    assert [json.loads(line)["iter"] for line in log.read_text().splitlines()] == [1, 2, 3, 4]


@pytest.mark.parametrize("field, value, message", [
    ("lr_halvings", -1, "lr_halvings=-1: must be a whole number, at least 0"),
    ("time_limit", 0.0, "time_limit=0.0: must be a positive number of seconds"),
    ("time_limit", float("nan"), "time_limit=nan: must be a positive"),
])
def test_schedule_settings_out_of_range_are_named(field: str, value, message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        TrainConfig.preset("tiny", **{field: value})


def test_sample_grids_show_every_class_up_to_sixteen(tmp_path, monkeypatch) -> None:
    """A 10-class run's grids stopped at the 8th class, so the report never showed digits 8 and 9."""
    import caex.training.trainer as trainer

    shown = []
    monkeypatch.setattr(trainer, "_save_samples", lambda cae, exemplars, classes, path: shown.append(classes))
    for classes, expected in ((10, 10), (20, trainer.SAMPLE_CLASSES)):
        config, train_config = _configs(classes=classes, iters=1, sample_every=1)
        train_cae(_data(n=2 * classes, classes=classes), config, train_config, tmp_path / str(classes))
        assert shown.pop() == [str(k) for k in range(expected)]  # each swap row named by its exemplar's class


def test_a_classifier_given_to_train_cae_is_the_class_critic_unless_told_otherwise(tmp_path) -> None:
    """train_cae(classifier=...) trained with the discriminator's class head and ignored the classifier."""
    from caex.classifier import TorchClassifier, build_classifier_network

    data = _data()
    net = build_classifier_network("smallcnn", channels=1, num_classes=3, image_size=16)
    classifier = TorchClassifier(net, ["0", "1", "2"], 16, 1)
    config, train_config = _configs(iters=1)
    assert train_config.dc is None  # the preset leaves it to train_cae
    for given, expected in ((classifier, "classifier"), (None, "discriminator")):
        run = tmp_path / expected
        train_cae(data, config, train_config, run, classifier=given)
        assert json.loads((run / "train_config.json").read_text())["dc"] == expected
    with pytest.raises(CaexError, match="critic_noise=0.1 noises what the classifier critic sees"):
        train_cae(data, config, dataclasses.replace(train_config, critic_noise=0.1), tmp_path / "noise")
    # a run begun with the discriminator (as every run was before dc=None) resumes with its own critic
    begun = dataclasses.replace(train_config, dc="discriminator", ckpt_every=1)
    train_cae(data, config, begun, tmp_path / "old", classifier=classifier)
    train_cae(data, config, dataclasses.replace(train_config, iters=2), tmp_path / "old", classifier=classifier,
              resume=True)
    assert json.loads((tmp_path / "old" / "train_config.json").read_text())["dc"] == "discriminator"


def test_the_stop_notice_offers_ctrl_c_only_to_someone_who_pressed_it(capsys) -> None:
    """A scheduler that sends SIGTERM cannot press Ctrl-C again."""
    import signal

    from caex.training.stopping import StopRequest

    for signum, offered in ((signal.SIGTERM, False), (signal.SIGINT, True)):
        StopRequest()(signum, None)
        assert ("Ctrl-C again" in capsys.readouterr().err) == offered


def test_a_signal_the_process_ignores_stays_ignored_during_training() -> None:
    """`nohup caex train` ignores SIGHUP; the stop handler took it over, so closing the terminal stopped the run."""
    from caex.training.stopping import stop_requests

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with stop_requests() as request:
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGUSR1) is request  # the others are handled
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_the_training_log_keeps_small_values(tmp_path) -> None:
    """Six decimals logged the paper preset's late learning rates (and any value below 5e-7) as 0.0."""
    from caex.training.logging import LOG_JSONL, RunLogger
    from caex.utils.numbers import significant

    logger = RunLogger(tmp_path, tensorboard=False)
    logger.log(1, {"lr": 3e-7, "recon": torch.tensor(0.1234567891).item()})
    logger.close()
    assert json.loads((tmp_path / LOG_JSONL).read_text(encoding="utf-8")) == {"iter": 1, "lr": 3e-7, "recon": 0.1234568}
    assert (tmp_path / "log.csv").read_bytes() == b"iter,lr,recon\n1,3e-07,0.1234568\n"  # LF, as every CSV caex writes
    assert [significant(value) for value in (1 / 3, 123456789.0, 0.30000001192092896)] == [0.3333333, 123456800.0, 0.3]


def test_training_inside_a_callers_inference_mode_trains(tmp_path) -> None:
    """A notebook cell under torch.inference_mode(), which enable_grad does not lift, failed with autograd's
    "element 0 of tensors does not require grad" after the run folder was begun, which then refused a retry."""
    from caex.classifier import train_classifier
    from caex.data import load_dataset

    from caex.classifier import load_classifier, save_bundle

    with torch.inference_mode():
        data = load_dataset("synthetic:classes=2,per_class=6,size=32")  # inference tensors too
        net, metrics = train_classifier(data, "smallcnn", epochs=1, batch_size=4, device="cpu")
        save_bundle(net, tmp_path / "clf", class_names=data.class_names, image_size=32)
        classifier = load_classifier(tmp_path / "clf", device="cpu")  # its weights autograd can go through
        cae = train_cae(data, CAEConfig.preset("tiny", image_size=32, channels=1, num_classes=2),
                        TrainConfig.preset("tiny", iters=2, device="cpu", tensorboard=False, dc="classifier"),
                        tmp_path / "run", classifier=classifier)
        loaded = CAE.load(tmp_path / "run")
    assert metrics.steps == len(data.train) // 4 and math.isfinite(metrics.train_loss)
    assert not any(p.is_inference() for p in [*net.parameters(), *cae.parameters(), *loaded.parameters()])
    assert not any(tensor.is_inference() for tensor in classifier.module.state_dict().values())
    assert loaded.config == cae.config
