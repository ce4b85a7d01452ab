"""``caex explain``: counterfactual paths and saliency maps for image files."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from caex.cli.common import (add_classifier_arguments, add_device_argument, add_seed_argument, add_threads_argument,
                             at_least, blur_sigma, user_path, with_examples)
from caex.errors import CaexError


def register(subparsers: argparse._SubParsersAction) -> None:
    from caex.explain.paths import DEFAULT_STEPS
    from caex.explain.targets import RANK_BY

    parser = subparsers.add_parser(
        "explain",
        help="explain a classifier's decisions on image files (counterfactual paths + saliency maps)",
        description="For each image: morph its class code toward another class along a path on the "
                    "CAE's class-code manifold, decode every step with the image's own individual "
                    "code, classify each frame, and build a saliency map from the changes that moved "
                    "the classifier. Writes per image: <stem>_saliency.png (overlay), "
                    "<stem>_saliency.npy (the map, scaled to [0, 1]), <stem>_path.png (strip with the target "
                    "probability per frame), <stem>_path.gif and <stem>.json (summary).",
        **with_examples("caex explain runs/cae scans/ --classifier runs/clf --out explained/",
                        "caex explain runs/cae 'scans/*.png' --classifier runs/clf --target normal --path centroid "
                        "--out explained-normal/",
                        "caex explain runs/cae scans/ --classifier runs/clf --out explained/ --skip-done"),
    )
    parser.add_argument("run", metavar="RUN", type=user_path, help="CAE run folder (from caex train)")
    parser.add_argument("images", metavar="IMAGES", type=user_path, nargs="+",
                        help="image files, folders (searched recursively) or glob patterns; any size and "
                             "format Pillow reads (resized and centre-cropped to the CAE's size and converted to "
                             "its channels: colour turns grey for a 1-channel CAE, with a warning)")
    add_classifier_arguments(parser, required=True,
                             help="the classifier to explain: bundle folder, TorchScript, ONNX or weights file "
                                  "(with --arch)")
    parser.add_argument("--target", metavar="CLASS", default=None,
                        help="class name or index to move toward (default: the best other class by --target-by)")
    parser.add_argument("--target-by", choices=RANK_BY, default=None,
                        help="without --target, how the other class is picked among more than two: probability "
                             "= the classifier's most probable other class; code = the other class whose "
                             "class-code centroid is nearest to the image's code (default: probability; note that "
                             "caex evaluate --cae-target-by defaults to code)")
    parser.add_argument("--path", choices=("guided", "centroid", "nearest", "reference"), default="guided",
                        help="guided: shortest path through the graph of training codes (default); centroid / "
                             "nearest: straight to the target class centroid / nearest training code; "
                             "reference: straight to the code of --reference")
    parser.add_argument("--reference", metavar="IMG", type=user_path, default=None,
                        help="reference image for --path reference (its predicted class is the default target)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"codes sampled along the path (default: {DEFAULT_STEPS})")
    parser.add_argument("--no-stop-at-flip", dest="stop_at_flip", action="store_false",
                        help="build the map from the whole path, not only up to the step the prediction flips")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable image files with a warning instead of stopping")
    parser.add_argument("--skip-done", action="store_true",
                        help="skip images whose results --out already holds from the same settings and target, "
                             "by the same models (compared by their weights, not their paths): to finish an "
                             "interrupted run")
    parser.add_argument("--no-gif", dest="gif", action="store_false",
                        help="leave out the animated <stem>_path.gif, most of each image's bytes (about 140 of "
                             "163 KB at 28 px; default: written)")
    parser.add_argument("--all-targets", action="store_true",
                        help="one explanation per other class (files get a _to-<class> suffix)")
    parser.add_argument("--saliency", choices=("weighted", "contrast"), default="weighted",
                        help="weighted: frame changes weighted by the change in target probability "
                             "(default); contrast: |flip frame - reconstruction|")
    parser.add_argument("--smoothing", type=blur_sigma, default=1.0, metavar="SIGMA",
                        help="Gaussian blur of the maps in pixels, 0 = off (default: 1)")
    parser.add_argument("--batch-size", type=at_least(1), default=16,
                        help="images explained together; each brings STEPS decoded frames (default: 16)")
    add_device_argument(parser)
    add_threads_argument(parser)
    add_seed_argument(parser)
    parser.add_argument("--out", metavar="DIR", type=user_path, required=True, help="output folder (created as needed)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from caex.cli.common import check_output_folder, load_classifier_from_args, warn_stale_files
    from caex.data.sources import check_image, load_image, readable_images
    from caex.explain import Explainer, ExplainError
    from caex.explain.explainer import check_steps
    from caex.explain.files import collect_images, explain_files, map_settings
    from caex.model import CAE
    from caex.utils.device import resolve_device
    from caex.utils.provenance import tensor_digest

    check_steps(args.steps, "--steps ")
    if (args.reference is not None) != (args.path == "reference"):
        raise CaexError("--reference IMG goes with --path reference (and that path needs one)")
    if args.target is not None and (args.all_targets or args.target_by is not None):
        raise CaexError(f"give either --target or {'--all-targets' if args.all_targets else '--target-by'}, not both")
    if args.reference is not None and (args.all_targets or args.target_by is not None):
        raise CaexError(f"--path reference heads for the reference image's class (or --target's), so it takes no "
                        f"{'--all-targets' if args.all_targets else '--target-by'}")
    target_by = args.target_by or "probability"
    check_output_folder(args.out, results=True)
    sources = readable_images(collect_images(args.images, out=args.out), skip_bad=args.skip_bad)
    if args.reference is not None:
        check_image(Path(args.reference))
    device = resolve_device(args.device)
    cae = CAE.load(args.run, device=device)
    size, channels = cae.config.image_size, cae.config.channels
    classifier = load_classifier_from_args(args, image_size=size, channels=channels, device=device)
    explainer = Explainer(cae, classifier, device=device, seed=args.seed, smoothing=args.smoothing)
    try:  # refused before the first batch is explained
        target = None if args.target is None else explainer.class_index(args.target)
    except ExplainError as exc:
        raise CaexError(f"--{exc}") from None  # "--target 'x': not a class of this model (...)"
    reference = None if args.reference is None else load_image(Path(args.reference), size, channels)
    # What the maps depend on, compared by --skip-done (explain_files adds the models' digests): the reference
    # image by its pixels, the target actually asked for.
    settings = map_settings(arch=args.arch, path=args.path,
                            reference=None if reference is None else tensor_digest(reference), steps=args.steps,
                            target=None if target is None else explainer.class_names[target],
                            all_targets=args.all_targets, target_by=target_by, saliency=args.saliency,
                            smoothing=args.smoothing, stop_at_flip=args.stop_at_flip, seed=args.seed)
    inputs = {"reference": None if args.reference is None else os.path.abspath(args.reference)}
    with warn_stale_files(args.out, kept := set()):
        result = explain_files(explainer, sources, args.out, settings=settings, inputs=inputs,
                               batch_size=args.batch_size, skip_done=args.skip_done, gif=args.gif, verbose=True,
                               target=target, path=args.path, steps=args.steps, stop_at_flip=args.stop_at_flip,
                               reference=reference, all_targets=args.all_targets, saliency=args.saliency,
                               target_by=target_by)
        kept.update(result.kept)  # an earlier run's finished explanations are this run's results too
    done = f"; {result.done_already} image(s) were done already" if result.done_already else ""
    print(f"wrote {len(result.written)} explanation(s) of {result.explained} image(s) to {args.out}{done}")
    return 0
