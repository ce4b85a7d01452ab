"""``caex report``: one self-contained HTML page from a demo or training run folder."""

from __future__ import annotations

import argparse

from caex.cli.common import user_path, with_examples


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="build a self-contained HTML report from a run folder",
        description="Collect the figures and tables of a run into ONE HTML file that opens offline (figures "
                    "inlined as PNG, no external resources): data samples, training curves, reconstructions "
                    "and swaps, the class-code manifold, explanations and the comparison with the baselines, "
                    "each table with a one-line reading. RUN is a `caex demo` output folder, or a CAE run "
                    "folder from `caex train` (add --classifier/--manifold/--explain/--evaluate for the other parts). "
                    "Parts whose files are missing are listed as not available.",
        **with_examples("caex report runs/demo",
                        "caex report runs/cae --classifier runs/clf --manifold manifold/ --explain explained/ "
                        "--evaluate eval/ --out report.html"),
    )
    parser.add_argument("run", metavar="RUN", type=user_path, help="demo output folder or CAE run folder")
    parser.add_argument("--out", metavar="FILE", type=user_path, default=None,
                        help="HTML file to write (default: RUN/report.html)")
    parser.add_argument("--classifier", metavar="CLF", type=user_path, default=None,
                        help="bundle folder of `caex train-classifier`, or the model file given to the other "
                             "commands (either way, the classifier.json it holds or that sits beside it)")
    parser.add_argument("--manifold", metavar="DIR", type=user_path, default=None,
                        help="output folder of `caex manifold` (default: a demo folder's RUN/manifold/, none for a "
                             "CAE run folder)")
    parser.add_argument("--explain", metavar="DIR", type=user_path, default=None,
                        help="output folder of `caex explain` (a large one is shown by its first explanations "
                             "in file-name order; default: a demo folder's RUN/explain/, none for a CAE run folder)")
    parser.add_argument("--evaluate", metavar="DIR", type=user_path, default=None,
                        help="output folder of `caex evaluate` (default: a demo folder's RUN/evaluate/, none for a "
                             "CAE run folder)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from caex.cli.common import check_output_folder
    from caex.report import build_report

    if args.out is not None:  # refused before the figures are rendered, in the words of every other command
        check_output_folder(args.out, is_file=True)
    path = build_report(args.run, args.out, manifold=args.manifold, explain=args.explain, evaluate=args.evaluate,
                        classifier=args.classifier)
    print(f"report: {path}")
    return 0
