"""``caex data show``: what a data spec loads to, as text and as a picture."""

from __future__ import annotations

import argparse
from pathlib import Path

from caex.cli.common import add_data_arguments, add_seed_argument, at_least, user_path, with_examples


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="inspect a data set (class counts, a grid of samples)",
        description="Inspect what a data spec loads to, before training on it.",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show",
        help="print classes and counts; write a PNG grid of samples with lesion masks outlined",
        description="Print class names with train/test counts, image size and channels, and write a "
                    "PNG grid (one row per class) with ground-truth lesion masks outlined (light line, dark edge).",
        **with_examples("caex data show synthetic --out synthetic.png",
                        "caex data show oct/ --size 128 --per-class 4 --out oct.png"),
    )
    add_data_arguments(show)
    add_seed_argument(show)
    show.add_argument("--out", required=True, metavar="FILE.png", type=user_path, help="where to write the sample grid")
    show.add_argument("--per-class", type=at_least(1), default=8, metavar="N",
                      help="samples per class in the grid (default: 8)")
    show.set_defaults(func=run_show)


def run_show(args: argparse.Namespace) -> int:
    from caex.cli.common import check_output_folder, load_data_from_args
    from caex.data import save_preview
    from caex.errors import CaexError

    if Path(args.out).is_dir():
        raise CaexError(f"--out {args.out}: is a folder; give the PNG file to write")
    if Path(args.out).suffix.lower() != ".png":
        raise CaexError(f"--out {args.out}: the grid is a PNG image; name the file *.png")
    check_output_folder(args.out, data=args.data, is_file=True)
    bundle = load_data_from_args(args)
    # written before the first line is printed: a reader that leaves early (`| head -1`) must not cost the grid
    path = save_preview(bundle, args.out, per_class=args.per_class, seed=args.seed)
    print(f"data: {bundle.spec}")
    print(f"images: {bundle.image_size}x{bundle.image_size}, {bundle.channels} channel(s); "
          f"lesion masks: {'yes' if bundle.has_masks else 'no'}")
    train_counts = bundle.train.class_counts(bundle.num_classes)
    test_counts = bundle.test.class_counts(bundle.num_classes)
    width = max(len("class"), *(len(name) for name in bundle.class_names))
    print(f"  {'class':<{width}}  {'train':>6}  {'test':>6}")
    for name, train, test in zip(bundle.class_names, train_counts, test_counts):
        print(f"  {name:<{width}}  {train:>6}  {test:>6}")
    print(f"  {'total':<{width}}  {sum(train_counts):>6}  {sum(test_counts):>6}")
    print(f"wrote {path}")
    return 0
