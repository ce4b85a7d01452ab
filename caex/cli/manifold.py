"""``caex manifold``: the global analysis of a trained CAE's class-code manifold."""

from __future__ import annotations

import argparse

from caex.cli.common import (
    add_classifier_arguments,
    add_data_arguments,
    add_device_argument,
    add_seed_argument,
    add_threads_argument,
    at_least,
    check_output_folder,
    load_classifier_from_args,
    load_data_from_args,
    number,
    user_path,
    warn_stale_files,
    with_examples,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "manifold",
        help="global analysis of the class-code manifold: maps, separability, swaps, smoothness",
        description="Encode DATA with the CAE in RUN and write to --out: codes.csv (one row per image), 2-D maps "
                    "(map_pca.png, map_tsne.png, maps.html to browse offline), random-forest separability of the "
                    "test codes (vs pixel PCA and the classifier's features), the class-swap success matrix, "
                    "SMOTE smoothness per class, monotone straight paths (paths.png) and summary.json.",
        **with_examples("caex manifold runs/cae synthetic --classifier runs/clf --out manifold/",
                        "caex manifold runs/cae oct.npz --classifier runs/clf --no-tsne --threads 1 --out manifold/"),
    )
    parser.add_argument("run", metavar="RUN", type=user_path, help="CAE run folder (from caex train)")
    add_data_arguments(parser)
    add_classifier_arguments(parser, required=True,
                             help="the target classifier: bundle folder, TorchScript, .onnx or weights (--arch)")
    parser.add_argument("--out", required=True, metavar="DIR", type=user_path, help="output folder (created if needed)")
    add_seed_argument(parser)
    add_device_argument(parser)
    add_threads_argument(parser)
    parser.add_argument("--batch-size", type=at_least(1), default=128, help="images per batch (default: 128)")
    parser.add_argument("--smote-per-class", type=at_least(1), default=2000,
                        help="SMOTE codes decoded per class (default: 2000, as in the paper)")
    parser.add_argument("--swap-pairs", type=at_least(1), default=100,
                        help="test pairs per ordered class pair in the swap matrix (default: 100)")
    parser.add_argument("--paths", type=at_least(1), default=50, help="random straight inter-class paths (default: 50)")
    parser.add_argument("--path-steps", type=at_least(2), default=10, help="codes along each path (default: 10)")
    parser.add_argument("--tolerance", type=number("at least 0 and below 1", lambda value: 0 <= value < 1),
                        default=0.05,
                        help="a path counts as monotone when the target probability never drops by more "
                             "than this per step and rises by at least this overall (default: 0.05)")
    parser.add_argument("--folds", type=at_least(2), default=10, help="cross-validation folds (default: 10)")
    parser.add_argument("--map-points", type=at_least(2), default=2000,
                        help="at most this many points per split in the 2-D maps (default: 2000)")
    parser.add_argument("--no-tsne", action="store_true", help="skip the t-SNE map (the slowest stage)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from caex.manifold import analyse_manifold
    from caex.model import CAE
    from caex.utils import resolve_device

    check_output_folder(args.out, data=args.data, results=True)
    device = resolve_device(args.device)
    cae = CAE.load(args.run, device=device)
    classifier = load_classifier_from_args(args, image_size=cae.config.image_size, channels=cae.config.channels,
                                           device=device)
    data = load_data_from_args(args)
    with warn_stale_files(args.out):
        summary = analyse_manifold(
            cae, classifier, data, args.out, seed=args.seed, verbose=True, batch_size=args.batch_size,
            folds=args.folds, swap_pairs=args.swap_pairs, smote_per_class=args.smote_per_class, paths=args.paths,
            path_steps=args.path_steps, monotone_tolerance=args.tolerance, tsne=not args.no_tsne,
            map_points=args.map_points)
    separability = summary["separability"]
    lines = [f"RF accuracy ({label}): {_mean_std(separability[key])}"
             for key, label in (("class_codes", "class codes"), ("pixel_pca", "pixel PCA"),
                                ("classifier_features", "classifier features"))]
    lines += [f"swap success: mean {_percent(summary['swap']['mean'])}, min {_percent(summary['swap']['min'])}",
              "SMOTE smoothness: " + ", ".join(f"{name} {_percent(share)}"
                                               for name, share in summary["smoothness"]["per_class"].items()),
              f"monotone paths: {_percent(summary['paths']['monotone_share'])}",
              f"wrote {args.out}/ ({', '.join(summary['files'].values())}, summary.json)"]
    print("\n".join(lines))
    return 0


def _mean_std(figure: dict) -> str:
    if figure.get("skipped") or figure["mean"] is None:
        return f"n/a ({figure.get('note', '')})"
    balanced = f", balanced {figure['balanced']:.3f}" if figure.get("balanced") is not None else ""
    return f"{figure['mean']:.3f} ± {figure['std']:.3f}{balanced}" + (f" ({figure['note']})" if figure["note"] else "")


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
