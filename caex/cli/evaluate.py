"""``caex evaluate``: CAE against the standard baselines on the same classifier, images and fills."""

from __future__ import annotations

import argparse
from pathlib import Path

from caex.cli.common import (add_classifier_arguments, add_data_arguments, add_device_argument, add_seed_argument,
                             add_threads_argument, at_least, image_share, named_by_flags, user_path)
from caex.errors import CaexError, EvaluationError

DESCRIPTION = """\
Measure how faithful each saliency method is to the classifier (the paper's
AOPC and peak degradation), how well it localises ground-truth masks where the
data has them (pointing game, saliency mass in the mask, top-k IoU), and how
long it takes per image. Every method explains the same correctly classified
test images, and the perturbation covers them with the same random fill.

Writes results.csv, results.json, results.md (the comparison table, and AOPC
per class), curves.png (degradation curves) and gallery.png (maps side by side)
to --out. Gradient methods are reported as skipped on black-box (ONNX)
classifiers.
"""

EPILOG = """\
examples:
  caex evaluate runs/oct oct.npz --classifier clf/ --out eval/
  caex evaluate runs/syn synthetic --classifier clf/ --methods cae-guided,cae-centroid,gradcam,random --out eval/
  caex evaluate none mnist:4,9 --classifier clf.onnx --methods lime,occlusion,random --out eval/
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from caex.evaluation.perturbation import DEFAULT_SHARE
    from caex.evaluation.ranking import DEFAULT_PATCH
    from caex.evaluation.runner import DEFAULT_METHODS, known_methods
    from caex.explain.attribution import ExplainerAttributor
    from caex.explain.paths import DEFAULT_STEPS

    parser = subparsers.add_parser(
        "evaluate", help="compare CAE with Grad-CAM, FullGrad, LIME, ... (AOPC, PD, localisation, time)",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", metavar="RUN", type=user_path,
                        help="a CAE run folder (from `caex train`), or 'none' to evaluate baselines only")
    add_data_arguments(parser)
    add_classifier_arguments(parser, required=True,
                             help="the classifier to explain: bundle folder, TorchScript, .onnx or weights (--arch)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated: {', '.join(known_methods())} (cae: the guided path); the random "
                             f"map, the floor, is always added (default: {','.join(DEFAULT_METHODS)})")
    parser.add_argument("--cae-steps", type=int, default=DEFAULT_STEPS,
                        help=f"path length of the cae methods (default: {DEFAULT_STEPS}; 2 = end frame against "
                             "the reconstruction only, about 7x faster); the cae maps use caex explain's defaults "
                             "otherwise: smoothing 1, weighted saliency, stopping at the flip")
    parser.add_argument("--cae-target", default=None, metavar="CLASS",
                        help="class name or index every cae counterfactual heads for, e.g. a healthy class "
                             "(its own images head for another class by --cae-target-by; default: another "
                             "class by --cae-target-by for every image)")
    parser.add_argument("--cae-target-by", choices=ExplainerAttributor.COUNTER_BY,
                        default=ExplainerAttributor.COUNTER_BY[0],
                        help="how a cae counterfactual's class is picked among more than two (default: code, "
                             "the other class whose class-code centroid is nearest: no classifier pass; "
                             "probability: the classifier's most probable other class; all: every other class, "
                             "the maps averaged, at K-1 times the path frames; note that caex explain --target-by "
                             "defaults to probability)")
    parser.add_argument("--method-option", action="append", default=[], metavar="METHOD.OPTION=VALUE",
                        help="a method's own setting, e.g. lime.n_samples=200, integrated_gradients.n_steps=20 or "
                             "occlusion.window_fraction=0.25 (repeatable; an unknown one is refused, naming those "
                             "its method takes)")
    parser.add_argument("--n-images", type=at_least(1), default=32,
                        help="correctly classified test images to explain, stratified over classes (default: 32)")
    parser.add_argument("--batch-size", type=at_least(1), default=16,
                        help="images per saliency batch, the same for every method (default: 16)")
    parser.add_argument("--patch", type=at_least(1), default=DEFAULT_PATCH,
                        help=f"side of each perturbation patch in pixels (default: {DEFAULT_PATCH}, as in the paper)")
    parser.add_argument("--share", type=image_share, default=DEFAULT_SHARE,
                        help="image share that N patches cover, which sets N "
                             f"(default: {DEFAULT_SHARE}); not used with --n-patches")
    parser.add_argument("--n-patches", type=at_least(1), default=None,
                        help="number N of patches covered (default: from --share)")
    add_seed_argument(parser)
    add_device_argument(parser)
    add_threads_argument(parser)
    parser.add_argument("--out", required=True, metavar="DIR", type=user_path, help="output folder (created if needed)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from caex.cli.common import check_output_folder, load_classifier_from_args, load_data_from_args, warn_stale_files
    from caex.evaluation.perturbation import PerturbationMetric
    from caex.evaluation.runner import canonical_method, evaluate, is_cae_method, parse_method_options
    from caex.explain.explainer import check_steps
    from caex.model import CAE

    methods = [canonical_method(name) for name in args.methods.split(",") if name.strip()]
    if not methods:
        raise CaexError("--methods: name at least one method")
    check_steps(args.cae_steps, "--cae-steps ")
    given = parse_method_options(args.method_option)  # refused before any work
    unused = sorted(set(given) - set(methods))
    if unused:  # a typo in --methods, or an option that would change nothing
        raise CaexError(f"--method-option sets {unused[0]}, which --methods does not evaluate")
    check_output_folder(args.out, data=args.data, results=True)
    run_dir = _run_folder(args.run, wants_cae=any(map(is_cae_method, methods)))
    data = load_data_from_args(args)
    try:
        counter_class = None if args.cae_target is None else data.class_index(args.cae_target)
    except CaexError as exc:
        raise CaexError(f"--cae-target {exc}") from None
    if run_dir is None and counter_class is not None:
        raise CaexError("--cae-target steers the cae methods, and none is evaluated; leave it out or add a cae "
                        "method (with a CAE run)")
    cae_options = {"steps": args.cae_steps, "counter_class": counter_class, "counter_by": args.cae_target_by}
    cae = None if run_dir is None else CAE.load(run_dir, device=args.device)
    # a model file without classifier.json is probed with the images it will classify, so a --size or --channels
    # that differs from the CAE's is blamed on the data, not on the classifier
    shape = (data.image_size, data.channels) if cae is None else (cae.config.image_size, cae.config.channels)
    classifier = load_classifier_from_args(args, image_size=shape[0], channels=shape[1], device=args.device)
    metric = PerturbationMetric(patch=args.patch, share=args.share, n_patches=args.n_patches)
    method_options = {name: dict(cae_options) for name in methods if is_cae_method(name)}
    for name, options in given.items():  # a cae method's --method-option overrides its --cae-* settings
        method_options.setdefault(name, {}).update(options)
    # the metric's sizes are checked against the images once they are loaded, in its fields' names
    sizes = {"patch=": "--patch ", **({"n_patches=": "--n-patches "} if args.n_patches is not None else {})}
    with warn_stale_files(args.out), named_by_flags(sizes, EvaluationError):
        results = evaluate(cae, classifier, data, methods=methods, n_images=args.n_images, seed=args.seed,
                           out_dir=args.out, batch_size=args.batch_size, metric=metric,
                           method_options=method_options,
                           classifier_name=args.classifier, verbose=True)
    print(results.to_markdown())
    print(f"wrote results.csv, results.json, results.md, curves.png and gallery.png to {args.out}")
    asked = [result for result in results.methods if result.method != "random" or "random" in methods]
    if not any(result.status == "ok" for result in asked):  # the random map, added to every run, aside
        raise CaexError("every method was skipped (see the table's reasons); nothing was evaluated")
    return 0


def _run_folder(run: str, *, wants_cae: bool) -> Path | None:
    """RUN as a folder, or ``None`` for 'none'; a clear error when the methods and RUN disagree."""
    if run.lower() == "none":
        if wants_cae:
            raise CaexError("RUN is 'none' but --methods asks for cae; give a CAE run folder "
                            "or leave the cae methods out")
        return None
    path = Path(run)
    if not path.is_dir():
        raise CaexError(f"RUN {run}: no such CAE run folder (use 'none' to evaluate baselines only)")
    return path if wants_cae else None
