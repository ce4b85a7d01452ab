"""Benchmark: the global analysis of the class-code manifold on the embedded synthetic data.

    python benchmarks/bench_manifold.py [--cae-run DIR] [--classifier DIR] [--out DIR] [--json FILE]
    python benchmarks/bench_manifold.py --train-seed 1   # another training draw of the same recipe

Uses the synthetic default data set, a ``smallcnn`` target classifier and a
``small``-preset CAE trained with the ``small`` training preset and the
classifier as its class critic (``dc="classifier"``). Both are
cached under ``runs/bench/`` and reused when present (pass ``--cae-run`` /
``--classifier`` to reuse other folders); otherwise they are trained here first
(several minutes on a 2-core CPU). Prints the paper's Table III/IV figures and
the smoothness checks, checks them against the bars below and writes
``bench_manifold.json`` next to this script.

Bars: RF accuracy on the class codes >= 0.95 and above both comparison
embeddings; class-swap success >= 90% for every ordered class pair; SMOTE
smoothness >= 93% for every class.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from caex.classifier import load_classifier, save_bundle, train_classifier
from caex.data import load_dataset
from caex.manifold import analyse_manifold
from caex.model import CAE, CAEConfig
from caex.training import TrainConfig, train_cae
from caex.training.checkpoint import CHECKPOINT_FILE
from caex.utils import software_versions, write_json
from records import add_replace_argument, figures_file

HERE = Path(__file__).resolve().parent
CACHE = HERE.parent / "runs" / "bench"
DATA_SPEC = "synthetic"
BARS = {"rf_codes": 0.95, "swap_min": 0.90, "smoothness_min": 0.93}


def seed_suffix(train_seed: int) -> str:
    """``_seed<N>`` for a CAE training seed other than 0: the cache folders and JSON files of that draw
    (``cae_small_seed1``), shared with ``bench_evaluate.py`` so both find the same model."""
    return f"_seed{train_seed}" if train_seed else ""


def cached_classifier(folder: Path, data, device: str):
    """The benchmark's target classifier, trained and saved on first use."""
    if not (folder / "classifier.json").is_file():
        print(f"training the smallcnn classifier into {folder} ...", file=sys.stderr)
        net, metrics = train_classifier(data, "smallcnn", device=device, verbose=True)
        save_bundle(net, folder, class_names=data.class_names, image_size=data.image_size,
                    metrics=metrics, data_spec=data.spec, data_seed=data.seed)
    return load_classifier(str(folder), device=device)


def cached_cae(folder: Path, data, device: str, classifier, seed: int = 0) -> CAE:
    """The benchmark's CAE (small presets, the target classifier as class critic, training ``seed``), trained
    on first use."""
    if not (folder / "config.json").is_file():
        print(f"training the small CAE into {folder} ...", file=sys.stderr)
        config = CAEConfig.preset("small", image_size=data.image_size, channels=data.channels,
                                  num_classes=data.num_classes)
        train_config = TrainConfig.preset("small", device=device, dc="classifier", seed=seed)
        resume = (folder / CHECKPOINT_FILE).is_file()
        train_cae(data, config, train_config, out_dir=folder, classifier=classifier, verbose=True, resume=resume,
                  force=not resume)
    return CAE.load(folder, device=device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cae-run", type=Path, default=None,
                        help="CAE run folder (default: runs/bench/cae_small, or cae_small_seed<N> with --train-seed)")
    parser.add_argument("--classifier", type=Path, default=CACHE / "classifier_smallcnn")
    parser.add_argument("--out", type=Path, default=None,
                        help="analysis folder (default: runs/bench/manifold[_seed<N>])")
    parser.add_argument("--json", type=Path, default=None,
                        help="figures file (default: bench_manifold[_seed<N>].json next to this script; "
                             "give another path when analysing a --cae-run of your own)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--smote-per-class", type=int, default=2000)
    parser.add_argument("--swap-pairs", type=int, default=100)
    parser.add_argument("--paths", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="data split and analysis seed")
    parser.add_argument("--train-seed", type=int, default=0,
                        help="CAE training seed; other seeds write bench_manifold_seed<N>.json")
    add_replace_argument(parser)
    args = parser.parse_args()
    suffix = seed_suffix(args.train_seed)
    json_path = figures_file(parser, args.json or HERE / f"bench_manifold{suffix}.json", args.replace)
    cae_run = args.cae_run or CACHE / f"cae_small{suffix}"
    out_dir = args.out or CACHE / f"manifold{suffix}"

    data = load_dataset(DATA_SPEC, seed=args.seed)
    classifier = cached_classifier(args.classifier, data, args.device)
    cae = cached_cae(cae_run, data, args.device, classifier, seed=args.train_seed)
    started = time.perf_counter()
    summary = analyse_manifold(cae, classifier, data, out_dir, seed=args.seed, verbose=True,
                               smote_per_class=args.smote_per_class, swap_pairs=args.swap_pairs, paths=args.paths)
    seconds = time.perf_counter() - started

    separability = summary["separability"]
    rf = {key: entry.get("mean") for key, entry in separability.items()}
    names = summary["class_names"]
    print(f"data {data.spec}: {len(data.train)} train / {len(data.test)} test images, {len(names)} classes; "
          f"classifier test accuracy {summary['classifier_test_accuracy']:.3f}; analysis took {seconds:.0f} s")
    print("RF accuracy, 10-fold CV on the test split (mean ± std):")
    for key, entry in separability.items():
        text = (entry["note"] if entry.get("skipped")
                else f"{entry['mean']:.3f} ± {entry['std']:.3f} ({entry['dims']} dims)")
        print(f"  {key:<20} {text}")
    print("class-swap success (rows: from class, columns: to class):")
    print("  " + " " * 12 + "".join(f"{name[:10]:>11}" for name in names))
    for name, row in zip(names, summary["swap"]["matrix"]):
        print(f"  {name[:12]:<12}" + "".join(f"{'—' if v is None else f'{100 * v:.1f}%':>11}" for v in row))
    print(f"  mean {100 * summary['swap']['mean']:.1f}%, min {100 * summary['swap']['min']:.1f}%")
    print("SMOTE smoothness (" + f"{args.smote_per_class} codes per class): "
          + ", ".join(f"{name} {100 * v:.1f}%" for name, v in summary["smoothness"]["per_class"].items()))
    print(f"monotone straight paths: {100 * summary['paths']['monotone_share']:.1f}% of {summary['paths']['count']}")

    comparisons = [v for key, v in rf.items() if key != "class_codes" and v is not None]
    checks = {
        "rf_codes >= 0.95 and above both comparisons": rf["class_codes"] >= BARS["rf_codes"]
        and all(rf["class_codes"] > v for v in comparisons),
        "swap success >= 90% for every class pair": summary["swap"]["min"] >= BARS["swap_min"],
        "smoothness >= 93% for every class": summary["smoothness"]["min"] >= BARS["smoothness_min"],
    }
    for bar, passed in checks.items():
        print(f"[{'PASS' if passed else 'MISS'}] {bar}")
    write_json(json_path,
               {"seconds": round(seconds, 1), "versions": software_versions(), "checks": checks, "summary": summary})
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
