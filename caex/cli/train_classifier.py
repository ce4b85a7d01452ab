"""``caex train-classifier``: train a target classifier on a data set and save its bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from caex.cli.common import (add_data_arguments, add_device_argument, add_seed_argument, add_threads_argument,
                             at_least, positive_finite, user_path, with_examples)


def register(subparsers: argparse._SubParsersAction) -> None:
    from caex.classifier.arch import ARCHITECTURES  # with any the user registered before calling main()

    parser = subparsers.add_parser(
        "train-classifier",
        help=f"train a target classifier ({', '.join(ARCHITECTURES)}) and save its bundle",
        description="Train a classifier on DATA, print its test accuracy and save a bundle folder: "
                    "classifier.safetensors, classifier.json, classifier.torchscript.pt (and classifier.onnx "
                    "with --onnx). Every saved model takes data-range [0, 1] images; the normalisation is "
                    "inside. Epochs and learning rate default per architecture.",
        **with_examples("caex train-classifier synthetic --arch smallcnn --out runs/clf",
                        "caex train-classifier mnist:4,9 --arch resnet18 --epochs 3 --onnx --out runs/mnist-clf"),
    )
    add_data_arguments(parser)
    parser.add_argument("--arch", choices=tuple(ARCHITECTURES), default="resnet18",
                        help="network architecture (default: resnet18)")
    parser.add_argument("--out", required=True, metavar="DIR", type=user_path,
                        help="bundle folder to write (created as needed)")
    parser.add_argument("--epochs", type=at_least(1), default=None,
                        help="training epochs (default: per architecture)")
    parser.add_argument("--batch-size", type=at_least(1), default=None, help="training batch size (default: 32)")
    parser.add_argument("--lr", type=positive_finite, default=None,
                        help="peak learning rate (default: per architecture)")
    parser.add_argument("--no-augment", dest="augment", action="store_false",
                        help="train without random shifts")
    parser.add_argument("--onnx", action="store_true", help="also export classifier.onnx")
    parser.add_argument("--force", action="store_true", help="replace a bundle already in --out")
    add_seed_argument(parser)
    add_threads_argument(parser)
    add_device_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from caex.classifier import NearChanceWarning, save_bundle, train_classifier
    from caex.classifier.bundle import check_onnx_export
    from caex.classifier.train import DEFAULT_BATCH_SIZE, resolve_settings
    from caex.cli.common import check_output_folder, load_data_from_args, model_folder_kind
    from caex.errors import CaexError
    from caex.utils.device import resolve_device
    from caex.utils.io import folder_lock
    from caex.utils.warn import warnings_deferred

    batch_size = DEFAULT_BATCH_SIZE if args.batch_size is None else args.batch_size
    resolve_settings(args.arch, args.epochs, batch_size, args.lr)  # refuse bad values before loading data
    if args.onnx:
        check_onnx_export()
    check_output_folder(args.out, data=args.data)
    device = resolve_device(args.device)
    model = model_folder_kind(Path(args.out))  # before the lock, which would leave its file in a CAE run's folder
    if model == "CAE run":  # another model's folder: --force replaces a bundle, never a CAE
        raise CaexError(f"--out {args.out}: is a CAE run folder; a classifier bundle needs an --out of its own "
                        "(--force replaces only a bundle)")
    if model is not None and not args.force:  # as caex train refuses a finished run
        raise CaexError(f"--out {args.out}: holds a classifier bundle already; pass --force to replace it")
    with folder_lock(args.out, "caex train-classifier"):  # a second run into it would mix two bundles
        data = load_data_from_args(args)
        print(f"data {data.spec!r}: {len(data.train)} train / {len(data.test)} test images, "
              f"{data.num_classes} classes, {data.channels}x{data.image_size}x{data.image_size}", file=sys.stderr)
        with warnings_deferred(NearChanceWarning):  # turned into an error, it must not lose the network
            net, metrics = train_classifier(data, arch=args.arch, epochs=args.epochs,
                                            batch_size=batch_size, lr=args.lr, seed=args.seed,
                                            device=device, verbose=True, augment=args.augment)
            save_bundle(net, args.out, class_names=data.class_names, image_size=data.image_size,
                        metrics=metrics, data_spec=data.spec, data_seed=data.seed, onnx=args.onnx)
    epochs = f"{metrics.epochs} epoch{'s' if metrics.epochs != 1 else ''}"
    print(f"{args.arch}: test accuracy {metrics.test_accuracy:.4f} ({epochs}, {metrics.seconds:.1f} s); "
          f"bundle written to {args.out}")
    return 0
