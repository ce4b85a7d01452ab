"""Benchmark: CAE against the baselines (AOPC, PD, localisation, ms/image) — the paper's Tables II and V.

    python benchmarks/bench_evaluate.py [--data synthetic --data mnist:4,9] [--n-images 64] [--device auto]
    python benchmarks/bench_evaluate.py --cae-steps 2 --methods cae-centroid,cae-nearest,gradcam  # fast CAE maps
    python benchmarks/bench_evaluate.py --data synthetic --cae-target normal  # lesions explained by their removal
    python benchmarks/bench_evaluate.py --data synthetic --cae-run RUN --json FILE  # score a CAE of your own
    python benchmarks/bench_evaluate.py --methods lime,random --json FILE  # baselines alone: no CAE is trained

For each data set: a ``smallcnn`` target classifier and a ``small``-preset CAE
(``small`` training preset), cached under ``runs/bench/`` and reused when
present — the synthetic ones are the same folders ``bench_manifold.py`` uses,
other data sets get ``runs/bench/<spec>/``. Missing models are trained here
first (several minutes each on a 2-core CPU). Every method then explains the
same correctly classified test images; the tables are printed, the full
outputs (CSV/JSON/Markdown, curves.png, gallery.png) go to
``runs/bench/<spec>/evaluation/`` and a summary to ``bench_evaluate.json``
next to this script (``bench_evaluate_steps<N>.json`` and ``evaluation_steps<N>/``
when ``--cae-steps`` is not the default, 16; ``_target-<CLASS>`` is appended
with ``--cae-target``, ``_target-by-<BY>`` with ``--cae-target-by probability|all``, and
``_seed<N>`` comes first with ``--train-seed N``,
whose CAEs are cached as ``cae_small_seed<N>``). ``--cae-run`` scores a CAE trained
elsewhere (``caex train``, say with more ``--iters``) on the same classifier,
images and fills: its outputs go to ``RUN/evaluation<suffix>/`` and its figures to
``--json`` (required with it, so the committed files stay the benchmark's own).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from bench_manifold import CACHE, cached_cae, cached_classifier, seed_suffix  # same cache, same training recipe
from records import add_replace_argument, figures_file

from caex.data import load_dataset
from caex.evaluation import DEFAULT_METHODS, evaluate, is_cae_method
from caex.explain import ExplainerAttributor
from caex.explain.paths import DEFAULT_STEPS
from caex.utils import software_versions, write_json

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = ("synthetic", "mnist:4,9")
#: Every CAE path variant ("cae" alone is the guided one), then the baselines.
BENCH_METHODS = ("cae-guided", "cae-centroid", "cae-nearest",
                 *(name for name in DEFAULT_METHODS if not is_cae_method(name)))


def model_folders(spec: str, train_seed: int = 0) -> tuple[Path, Path, Path]:
    """(classifier, CAE run, evaluation output) folders of a data spec; other CAE seeds get ``_seed<N>``
    on the CAE folder (the output folder takes the run's suffix in :func:`main`)."""
    folder = CACHE if spec == "synthetic" else CACHE / re.sub(r"[^A-Za-z0-9]+", "-", spec).strip("-")
    return folder / "classifier_smallcnn", folder / f"cae_small{seed_suffix(train_seed)}", folder / "evaluation"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append",
                        help=f"data spec, repeatable (default: {' and '.join(DEFAULT_DATA)})")
    parser.add_argument("--methods", default=",".join(BENCH_METHODS))
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--cae-steps", type=int, default=DEFAULT_STEPS,
                        help=f"path length of the CAE methods (default: {DEFAULT_STEPS})")
    parser.add_argument("--cae-target", default=None, metavar="CLASS",
                        help="class every CAE counterfactual heads for (as caex evaluate --cae-target)")
    parser.add_argument("--cae-target-by", choices=ExplainerAttributor.COUNTER_BY,
                        default=ExplainerAttributor.COUNTER_BY[0],
                        help="how the CAE counterfactual's class is picked (as caex evaluate --cae-target-by)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-seed", type=int, default=0,
                        help="CAE training seed (as bench_manifold.py --train-seed); other seeds add _seed<N>")
    parser.add_argument("--cae-run", type=Path, default=None, metavar="RUN",
                        help="a trained CAE run folder to score instead of the cached benchmark CAE "
                             "(one --data, the run's; needs --json)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="figures file (default: bench_evaluate<suffix>.json next to this script)")
    add_replace_argument(parser)
    args = parser.parse_args()
    if args.cae_run is not None:
        if args.json is None or len(args.data or DEFAULT_DATA) != 1:
            parser.error("--cae-run needs exactly one --data (the run's) and a --json file for its figures")
        if not (args.cae_run / "config.json").is_file():
            parser.error(f"--cae-run {args.cae_run}: no finished CAE run there (config.json missing)")

    summary = {}
    methods = args.methods.split(",")
    suffix = seed_suffix(args.train_seed)
    suffix += "" if args.cae_steps == DEFAULT_STEPS else f"_steps{args.cae_steps}"
    suffix += f"_target-{args.cae_target}" if args.cae_target else ""
    suffix += "" if args.cae_target_by == ExplainerAttributor.COUNTER_BY[0] else f"_target-by-{args.cae_target_by}"
    json_path = figures_file(parser, args.json or HERE / f"bench_evaluate{suffix}.json", args.replace)
    for spec in args.data or DEFAULT_DATA:
        data = load_dataset(spec, seed=args.seed)
        classifier_dir, cae_dir, out_dir = model_folders(spec, args.train_seed)
        if args.cae_run is not None:
            cae_dir, out_dir = args.cae_run, args.cae_run / out_dir.name
        out_dir = out_dir.with_name(out_dir.name + suffix)
        classifier = cached_classifier(classifier_dir, data, args.device)
        counter_class = None if args.cae_target is None else data.class_index(args.cae_target)
        cae_options = {name: {"steps": args.cae_steps, "counter_class": counter_class,
                              "counter_by": args.cae_target_by}
                       for name in methods if is_cae_method(name)}
        # the baselines alone (--methods lime,random, say) need no CAE, whose training takes the most time
        cae = (cached_cae(cae_dir, data, args.device, classifier, seed=args.train_seed)
               if any(map(is_cae_method, methods)) else None)
        started = time.perf_counter()
        results = evaluate(cae, classifier, data, methods=methods, n_images=args.n_images, seed=args.seed,
                           out_dir=out_dir, batch_size=args.batch_size, verbose=True, method_options=cae_options)
        seconds = time.perf_counter() - started
        print(f"\n### {spec} ({data.image_size}x{data.image_size}, {data.num_classes} classes, "
              f"{len(data.train)} train / {len(data.test)} test; evaluation took {seconds:.0f} s)\n")
        print(results.to_markdown())
        summary[spec] = {"seconds": round(seconds, 1), **results.to_json()}
    write_json(json_path, {"versions": software_versions(), **summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
