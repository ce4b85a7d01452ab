"""``caex train``: learn a CAE on a data set with BBCFE (a thin layer over :func:`caex.training.train_cae`)."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

from caex.cli.common import (add_classifier_arguments, add_data_arguments, add_device_argument,
                             add_threads_argument, at_least, named_by_flags, number, positive_finite, seed_number,
                             user_path, with_examples)
from caex.errors import CaexError, ModelError, TrainingError

if TYPE_CHECKING:
    from caex.data import DataBundle
    from caex.model import CAEConfig
    from caex.training import TrainConfig

#: ``--preset`` when none is given; the flag itself defaults to ``None`` so ``--resume`` can tell it was not given.
DEFAULT_PRESET = "small"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a Class Association Embedding (CAE) on a data set",
        description="Train the CAE encoders, decoder and discriminator with building-block coherency "
                    "feature extraction (pairs of images from different classes, class-code swaps). "
                    "RUN receives the CAE bundle (config.json, model.safetensors, codes.safetensors), "
                    "train_config.json, log.jsonl/log.csv, TensorBoard events (with the tensorboard extra), "
                    "samples/*.png and checkpoint.safetensors for --resume. SIGTERM or Ctrl-C stops it within a few "
                    "iterations with that checkpoint saved. Under torchrun --nproc-per-node N it trains "
                    "with DistributedDataParallel.",
        **with_examples("caex train synthetic --classifier runs/clf --out runs/cae",
                        "caex train synthetic --classifier runs/clf --out runs/cae --resume --iters 20000",
                        "caex train oct/ --size 128 --preset paper --classifier runs/oct-clf --time-limit 3600 "
                        "--out runs/oct-cae"),
    )
    add_data_arguments(parser)
    parser.add_argument("--out", metavar="RUN", type=user_path, required=True,
                        help="run folder to create (or to --resume)")
    parser.add_argument("--preset", choices=("tiny", "small", "paper"), default=None,
                        help="network sizes and training settings: tiny (tests), small (<= 64 px on a CPU, "
                             "default), paper (256 px, the official widths and optimiser)")
    parser.add_argument("--model", action="append", default=[], metavar="KEY=VALUE",
                        help="override a network size of the preset, repeatable (e.g. --model n_res=3 "
                             "--model class_pool=avg); KEY is a caex.model.CAEConfig field (default: none)")
    parser.add_argument("--loss", action="append", default=[], metavar="KEY=VALUE",
                        help="override a loss weight of the preset, repeatable (e.g. --loss adversarial=0.5); "
                             "KEY is a caex.training.LossWeights field (recon_image is the paper's λ1, eq. 1; "
                             "default: none)")
    parser.add_argument("--iters", type=at_least(1), default=None, help="training iterations (default: the preset's)")
    parser.add_argument("--batch-size", type=at_least(1), default=None,
                        help="image pairs per iteration, per process under torchrun (default: the preset's)")
    parser.add_argument("--lr", type=positive_finite, default=None,
                        help="Adam learning rate, halved evenly over the run as many times as the preset says "
                             "(lr_halvings in train_config.json; default: the preset's rate)")
    parser.add_argument("--time-limit", type=number("a positive number of seconds", lambda seconds: seconds > 0),
                        default=None, metavar="SECONDS",
                        help="stop after this much training time, still saving the model (default: none, train "
                             "all --iters)")
    add_classifier_arguments(parser, required=False,
                             help="target classifier (bundle folder, TorchScript, ONNX or weights with --arch), "
                                  "needed for --dc classifier and --labels predicted")
    parser.add_argument("--dc", choices=("discriminator", "classifier"), default=None,
                        help="class critic for swapped images: the frozen target classifier (default when a "
                             "differentiable --classifier is given; converges far faster) or the discriminator's "
                             "class head (default without --classifier, or with a black-box ONNX one)")
    parser.add_argument("--labels", choices=("dataset", "predicted"), default=None,
                        help="train on the data set's labels (default) or on the classifier's predictions "
                             "(explain the model rather than the data)")
    parser.add_argument("--critic-noise", type=number("in [0, 1)", lambda std: 0 <= std < 1), default=None,
                        metavar="STD",
                        help="experimental: Gaussian noise (std, on [0, 1] images) added to the swaps the "
                             "classifier critic sees, so faint texture cannot stand in for a lesion (default: 0)")
    parser.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                        help="mirror training images left-right at random, only where a mirror image keeps "
                             "its class (default: where the data declares it, i.e. the synthetic set; never "
                             "for digits or anatomy with laterality)")
    parser.add_argument("--max-shift", type=at_least(0), default=None, metavar="PIXELS",
                        help="shift training images by up to PIXELS along each axis (default: 4 for the small "
                             "preset, 0 for tiny and paper)")
    parser.add_argument("--ema", type=number("in [0, 1) (0 keeps no average)", lambda decay: 0 <= decay < 1),
                        default=None, metavar="DECAY",
                        help="keep an exponential moving average of the encoders' and decoder's weights with this "
                             "decay (e.g. 0.999) and save it as the CAE; samples show it too (default: none)")
    parser.add_argument("--cpu-bf16", action="store_const", const=True, default=None,
                        help="train in bf16 autocast and channels-last on a CPU with native bf16 units "
                             "(AVX512-BF16/AMX): 1.35x the iterations per second, but on the two benchmark seeds "
                             "measured it reached good swaps later (default: fp32 on CPUs, bf16 on accelerators)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast on GPUs and other accelerators (default: on); --no-amp trains in fp32 "
                             "everywhere, e.g. to compare, as a change of arithmetic changes the run's course")
    parser.add_argument("--layout", choices=("auto", "channels-last", "contiguous"), default=None,
                        help="memory layout of the networks and batches (default: auto, channels-last on CUDA and "
                             "with --cpu-bf16; channels-last alone gives a CPU 1.14x the iterations per second)")
    parser.add_argument("--sample-every", type=at_least(1), default=None,
                        help="iterations between sample grids (default: the preset's)")
    parser.add_argument("--ckpt-every", type=at_least(1), default=None,
                        help="iterations between checkpoints (default: the preset's)")
    add_threads_argument(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue the run in RUN from its checkpoint, with the run's own settings (flags "
                           "given now change only --iters, --time-limit, --device and the intervals; others "
                           "must agree); where RUN holds no run yet, start one (a requeued job's one command line)")
    mode.add_argument("--force", action="store_true", help="start over in a non-empty RUN")
    parser.add_argument("--seed", type=seed_number, default=None,
                        help="seed of the training's random choices: weights, pairs, augmentation (default: 0; "
                             "with --resume the run's own). The data split takes --split-seed")
    add_device_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from caex.cli.common import check_output_folder, load_data_from_args
    from caex.model import CAEConfig
    from caex.training import LossWeights, train_cae
    from caex.utils.device import torchrun_rank
    from caex.utils.io import read_json

    if args.arch is not None and args.classifier is None:
        raise CaexError(f"--arch {args.arch} describes the weights file given as --classifier, and none is given")
    model_overrides = CAEConfig.parse_overrides(args.model, option="--model")
    loss_overrides = LossWeights.parse_overrides(args.loss, option="--loss")
    for term, weight in loss_overrides.items():  # LossWeights refuses it too, naming its field, not the flag
        if not 0 <= weight < math.inf:
            raise CaexError(f"--loss {term}={weight:g}: must be a finite number >= 0")
    check_output_folder(args.out, data=args.data)
    saved = _saved_train_config(args)
    if args.seed is None:  # a resumed run keeps its own
        args.seed = saved.seed if saved is not None else 0
    bundle = load_data_from_args(args)
    classifier = None
    if args.classifier is not None:
        from caex.classifier import check_compatible
        from caex.cli.common import load_classifier_from_args
        from caex.training.distributed import local_device

        classifier = load_classifier_from_args(args, image_size=bundle.image_size, channels=bundle.channels,
                                               device=local_device(args.device))
        # A critic of another size or channel count fails late or silently, and one trained on another split of
        # this data has been tested on images the CAE would learn from (a warning).
        check_compatible(classifier, bundle)
    given = _given_settings(args)
    flags = ({f"CAEConfig.{name}=": f"--model {name}=" for name in model_overrides}
             | {f"{name}=": f"--{name.replace('_', '-')} " for name in given})
    with named_by_flags(flags, ModelError, TrainingError):
        train_config = _train_config(args, saved, loss_overrides, given)
        config = _networks(args, bundle, model_overrides)
        train_cae(bundle, config, train_config, args.out, classifier=classifier, resume=args.resume,
                  verbose=True, force=args.force)
    if torchrun_rank():  # under torchrun only rank 0 reports
        return 0
    summary = read_json(f"{args.out}/summary.json")
    if summary.get("trained_iters") == 0:
        print(f"caex train: the run is already at {summary['iters']} iterations, nothing was trained (ask for more "
              f"with --iters); CAE saved to {args.out}")
        return 0
    asked = summary.get("iters_asked", summary["iters"])
    stopped = (f"stopped by --time-limit after {summary['iters']:,} of {asked:,} iterations (rerun with --resume to "
               "continue): " if summary["iters"] < asked else "")
    # the result on stdout, as every command's; a script can tell a time-limit stop by that line or summary.json
    trained = summary.get("trained_iters", summary["iters"])
    resumed = f" ({summary['iters']:,} in all)" if trained != summary["iters"] else ""
    print(f"caex train: {stopped}{trained:,} iteration{'s' * (trained != 1)}{resumed} in {summary['seconds']:.1f} s "
          f"({summary['images_per_second']:.1f} images/s), final reconstruction L1 {summary['recon_l1']:.4f}; "
          f"CAE saved to {args.out}")
    return 0


def _networks(args: argparse.Namespace, bundle: DataBundle, overrides: dict[str, Any]) -> CAEConfig | None:
    """The networks to train: the preset with ``--model`` for a new run; for a resumed one ``None`` (the
    checkpoint's), or, with ``--model`` alone, its own networks so changed, which the trainer then refuses naming
    only that change. ``--preset`` given again is that preset, which must agree with the checkpoint's."""
    from caex.model import CAEConfig

    if args.resume and args.preset is None:
        if not overrides:
            return None
        saved = _checkpoint_networks(args.out, overrides)
        if saved is not None:
            return saved
    return CAEConfig.preset(args.preset or DEFAULT_PRESET, image_size=bundle.image_size, channels=bundle.channels,
                            num_classes=bundle.num_classes, **overrides)


def _checkpoint_networks(out: str, overrides: dict[str, Any]) -> CAEConfig | None:
    """The networks of the run in ``out`` with ``overrides`` applied (``None`` where it has no checkpoint yet), so
    that a resume given ``--model`` alone is refused naming only what ``--model`` changed."""
    import dataclasses
    from pathlib import Path

    from caex.training.checkpoint import CHECKPOINT_FILE, read_checkpoint_header
    from caex.training.trainer import checkpoint_networks

    path = Path(out) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    return dataclasses.replace(checkpoint_networks(read_checkpoint_header(path), str(path)), **overrides)


def _saved_train_config(args: argparse.Namespace) -> TrainConfig | None:
    """The settings of the run in ``--out`` when resuming it (``None`` for a new run)."""
    from pathlib import Path

    from caex.training import TrainConfig
    from caex.training.checkpoint import CHECKPOINT_FILE, TRAIN_CONFIG_FILE, read_checkpoint_header
    from caex.utils.io import read_json

    settings_file, checkpoint = Path(args.out) / TRAIN_CONFIG_FILE, Path(args.out) / CHECKPOINT_FILE
    if not args.resume:
        return None
    if settings_file.is_file():
        source, read = settings_file, lambda: read_json(settings_file)
    elif checkpoint.is_file():  # a checkpoint copied alone still records the run's settings
        header = read_checkpoint_header(checkpoint, required=("train_config",))  # its own faults named as such
        source, read = checkpoint, lambda: header["train_config"]
    else:
        return None
    try:
        return TrainConfig.from_dict(read())
    except (ValueError, TypeError, CaexError) as exc:  # bad JSON, unknown, mistyped or out-of-range fields
        raise CaexError(f"{source}: unreadable training settings ({exc})") from None


def _given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`TrainConfig` fields the user set by flag (the preset, or a resumed run, has the others)."""
    return {key: value for key, value in dict(
        iters=args.iters, batch_size=args.batch_size, lr=args.lr, sample_every=args.sample_every,
        ckpt_every=args.ckpt_every, critic_noise=args.critic_noise, hflip=args.hflip, max_shift=args.max_shift,
        ema=args.ema, amp=args.amp, cpu_bf16=args.cpu_bf16, layout=args.layout, dc=args.dc, labels=args.labels,
        seed=args.seed).items()
        if value is not None}


def _train_config(args: argparse.Namespace, saved: TrainConfig | None, loss_overrides: dict[str, float],
                  given: dict[str, Any]) -> TrainConfig:
    """The preset's training settings with the flags ``given``; when resuming, the run's own (``saved``).

    A resumed run must train as it began (the trainer refuses anything else), so it starts from the
    run's ``train_config.json`` rather than the preset, and flags given again must agree with it.
    """
    import dataclasses

    from caex.training import TrainConfig

    if saved is not None:
        weights = dataclasses.replace(saved.weights, **loss_overrides)
        return dataclasses.replace(saved, weights=weights, device=args.device, time_limit=args.time_limit, **given)
    return TrainConfig.preset(args.preset or DEFAULT_PRESET, loss=loss_overrides, device=args.device,
                              time_limit=args.time_limit, **given)
