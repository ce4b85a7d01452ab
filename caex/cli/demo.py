"""``caex demo``: the whole pipeline on the embedded synthetic data, ending in one HTML report."""

from __future__ import annotations

import argparse

from caex.cli.common import add_device_argument, add_seed_argument, add_threads_argument, user_path, with_examples


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on the synthetic data and write an HTML report (start here)",
        description="Generate the synthetic OCT-style data, train a classifier on it, train a CAE to explain "
                    "that classifier, analyse the class-code manifold, explain a few test images per class, "
                    "evaluate CAE against Grad-CAM, FullGrad, LIME, occlusion, integrated gradients and a "
                    "random map, and write OUT/report.html. Each stage has its own sub-folder of OUT and is "
                    "reused when rerun with the same settings, so an interrupted demo resumes where it "
                    "stopped. About 11-13 minutes on a 2-core CPU (at most 15); --fast under 3.",
        **with_examples("caex demo --out runs/demo", "caex demo --fast --out runs/demo-fast",
                        "caex demo --out runs/demo --force"),
    )
    parser.add_argument("--out", default="runs/demo", metavar="OUT", type=user_path,
                        help="output folder (default: runs/demo)")
    parser.add_argument("--fast", action="store_true",
                        help="smaller data, shorter training and fewer evaluated images (under 3 minutes)")
    parser.add_argument("--force", action="store_true", help="rerun every stage instead of reusing finished ones")
    add_seed_argument(parser)
    add_device_argument(parser)
    add_threads_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from caex.cli.common import check_output_folder
    from caex.demo import run_demo

    check_output_folder(args.out)

    result = run_demo(args.out, fast=args.fast, force=args.force, seed=args.seed, device=args.device,
                      verbose=True)
    print("\n".join(result.summary_lines()))
    return 0
