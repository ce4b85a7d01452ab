"""Training benchmark: the ``small`` preset on the default synthetic data (64x64, 4 classes).

Trains for at most ``--minutes`` of wall time (evaluation pauses excluded) and,
every ``--eval-every`` iterations, measures on the test split

* class-swap success: share of test pairs (A, B), y_A != y_B, for which an
  independently trained target classifier predicts y_B on decode(c_B, s_A);
* reconstruction L1 on the [-1, 1] scale, against the images and against the
  same images rendered without pixel noise (``synthetic:pixel_noise=0``); the
  L1 between those two renderings is the generator's noise floor, reported
  beside the figure;
* how well the class codes separate the classes (``code_accuracy``, ``code_gap``:
  ``caex.training.monitor.code_separation``), which shows a stall's cause.

Prints the figures (throughput, time to 90% swap success, final values) and
writes them to ``benchmarks/bench_training_<dc>.json``. Run::

    python benchmarks/bench_training.py [--minutes 10] [--threads 1] [--seed 0]
    python benchmarks/bench_training.py --model class_pool=avg --out bench_training_avgpool.json  # a variant
    python benchmarks/bench_training.py --score RUN [RUN ...] --out FILE  # score finished runs, train nothing
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caex.classifier import Classifier
from caex.classifier.loaders import TorchClassifier
from caex.classifier.train import train_classifier
from caex.data import load_dataset
from caex.errors import CaexError
from caex.manifold.swap import sample_swap_pairs, swap_predictions, swap_success_matrix
from caex.model import CAE, CAEConfig
from caex.training import LossWeights, TrainConfig, train_cae
from caex.training.monitor import code_separation
from caex.training.trainer import LAYOUTS, reconstruction_l1
from records import add_replace_argument, figures_file
from caex.utils import software_versions

DATA_SPEC = "synthetic"


@torch.no_grad()
def swap_matrix(cae: CAE, classifier: Classifier, images: torch.Tensor, labels: torch.Tensor,
                pairs_per_class_pair: int = 34, seed: int = 123) -> np.ndarray:
    """From-class x to-class share of balanced test pairs whose swap G(c_B, s_A) the classifier calls y_B
    (NaN diagonal); every ordered class pair has the same number of pairs, so its mean is the overall rate."""
    cae.eval()
    num_classes = int(labels.max()) + 1
    index_a, index_b = sample_swap_pairs(labels, num_classes, pairs_per_class_pair, seed=seed)
    predicted = swap_predictions(cae, classifier, images, cae.class_codes(images), index_a, index_b)
    return swap_success_matrix(labels[index_a], labels[index_b], predicted, num_classes)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--iters", type=int, default=None, help="iteration cap (default: the preset's)")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy box)")
    parser.add_argument("--classifier-arch", default="smallcnn")
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per iteration (default: the preset's)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    parser.add_argument("--loss", action="append", default=[], metavar="KEY=VALUE",
                        help="override a loss weight of the small preset, repeatable (as caex train --loss)")
    parser.add_argument("--seed", type=int, default=0,
                        help="CAE training seed (the classifiers and data stay fixed); other seeds write "
                             "bench_training_<dc>_seed<N>.json")
    parser.add_argument("--model", action="append", default=[], metavar="KEY=VALUE",
                        help="override a network size of the small preset, repeatable (as caex train --model)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file for the figures (default: bench_training_<dc>[_seed<N>].json here)")
    parser.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                        help="mirror training images at random (default: yes, the synthetic data is mirror-symmetric)")
    parser.add_argument("--max-shift", type=int, default=None, metavar="PIXELS",
                        help="shift training images by up to PIXELS (default: the preset's)")
    parser.add_argument("--ema", type=float, default=None, metavar="DECAY",
                        help="evaluate and keep a moving average of the weights (default: the preset's, none)")
    parser.add_argument("--cpu-bf16", action="store_const", const=True, default=None,
                        help="bf16 autocast where the CPU computes bf16 natively (default: fp32)")
    parser.add_argument("--layout", choices=LAYOUTS, default=None,
                        help="memory layout of the training (default: the preset's, auto)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="copy the trained run folder here (default: it is discarded)")
    parser.add_argument("--dc", choices=("discriminator", "classifier"), default="classifier",
                        help="class critic for eq. 6; 'classifier' uses a SECOND classifier (another seed), so "
                             "the one measuring swap success stays independent of training")
    parser.add_argument("--score", type=Path, nargs="+", default=None, metavar="RUN",
                        help="train nothing: score these finished CAE run folders (e.g. a longer `caex train`) "
                             "with the same judge and measures, printing one JSON line each (and --out if given)")
    add_replace_argument(parser)
    args = parser.parse_args()
    if args.out is None and not args.score:
        args.out = Path(__file__).with_name(f"bench_training_{args.dc}{f'_seed{args.seed}' if args.seed else ''}.json")
    if args.out is not None:
        figures_file(parser, args.out, args.replace)
    unfinished = [str(run) for run in args.score or [] if not (run / "config.json").is_file()]
    if unfinished:
        parser.error(f"--score {unfinished[0]}: no finished CAE run there (config.json missing)")
    try:
        model_overrides = CAEConfig.parse_overrides(args.model, option="--model")
        loss_overrides = LossWeights.parse_overrides(args.loss, option="--loss")
    except CaexError as exc:
        parser.error(str(exc))
    torch.set_num_threads(args.threads)
    load = os.getloadavg()

    bundle = load_dataset(DATA_SPEC)
    noise_free = load_dataset(f"{DATA_SPEC}:pixel_noise=0").test.images
    started = time.perf_counter()
    net, metrics = train_classifier(bundle, args.classifier_arch, seed=1, device="cpu")
    judge = TorchClassifier(net.eval(), bundle.class_names, bundle.image_size, bundle.channels)
    classifier_seconds = time.perf_counter() - started
    print(f"target classifier {args.classifier_arch}: test accuracy {metrics.test_accuracy:.3f} "
          f"({classifier_seconds:.0f} s)", flush=True)

    test_images, test_labels = bundle.test.images, bundle.test.labels
    noise_floor = 2.0 * float((test_images - noise_free).abs().mean())
    print(f"noise floor: L1 between the test images and their noise-free renderings {noise_floor:.4f}", flush=True)

    def figures(cae: CAE) -> dict[str, Any]:
        matrix = swap_matrix(cae, judge, test_images, test_labels)
        return {"swap_success": float(np.nanmean(matrix)), "swap_min_pair": float(np.nanmin(matrix)),
                "swap_into": dict(zip(bundle.class_names, np.nanmean(matrix, axis=0).round(3).tolist())),
                "swap_matrix": np.where(np.isnan(matrix), None, matrix.round(3)).tolist(),
                "recon_l1": reconstruction_l1(cae, test_images),
                "recon_l1_noise_free": reconstruction_l1(cae, test_images, noise_free),
                **code_separation(cae.class_codes(test_images), test_labels)}

    if args.score:  # finished runs, scored by the same judge, instead of a training run
        scores = {str(run): figures(CAE.load(run).eval()) for run in args.score}
        for run, row in scores.items():
            print(json.dumps({"run": run, **{k: v for k, v in row.items() if k != "swap_matrix"}}), flush=True)
        if args.out:
            args.out.write_text(json.dumps({"noise_floor_l1": noise_floor, "versions": software_versions(),
                                            "runs": scores}, indent=2) + "\n")
        return

    critic = None
    if args.dc == "classifier":
        critic_net, critic_metrics = train_classifier(bundle, args.classifier_arch, seed=2, device="cpu")
        critic = TorchClassifier(critic_net.eval(), bundle.class_names, bundle.image_size, bundle.channels)
        print(f"critic classifier (seed 2): test accuracy {critic_metrics.test_accuracy:.3f}", flush=True)
    history: list[dict[str, Any]] = []
    clock = {"paused": 0.0, "start": 0.0}

    def evaluate(iteration: int, cae: CAE) -> None:
        pause = time.perf_counter()
        elapsed = pause - clock["start"] - clock["paused"]
        row = {"iter": iteration, "train_seconds": round(elapsed, 1), **figures(cae)}
        history.append(row)
        print(json.dumps(row), flush=True)
        clock["paused"] += time.perf_counter() - pause

    config = CAEConfig.preset("small", image_size=bundle.image_size, channels=bundle.channels,
                              num_classes=bundle.num_classes, **model_overrides)
    overrides = dict(time_limit=args.minutes * 60, sample_every=args.eval_every, tensorboard=False, dc=args.dc,
                     seed=args.seed)
    for name in ("iters", "batch_size", "lr", "hflip", "max_shift", "ema", "cpu_bf16", "layout"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    train_config = TrainConfig.preset("small", loss=loss_overrides, **overrides)
    with tempfile.TemporaryDirectory() as run:
        clock["start"] = time.perf_counter()
        cae = train_cae(bundle, config, train_config, Path(run) / "run", classifier=critic, verbose=True,
                        callback=evaluate)
        summary = json.loads((Path(run) / "run" / "summary.json").read_text())
        if args.keep:
            shutil.copytree(Path(run) / "run", args.keep, dirs_exist_ok=True)
    final = figures(cae)
    reached = next((row["train_seconds"] for row in history if row["swap_success"] >= 0.9), None)
    result = {
        "load_average_at_start": [round(x, 2) for x in load], "threads": args.threads, "versions": software_versions(),
        "classifier": {"arch": args.classifier_arch, "test_accuracy": metrics.test_accuracy},
        "cae_config": config.to_dict(), "train_config": train_config.to_dict(),
        "iters": summary["iters"], "train_seconds": summary["seconds"],
        "images_per_second": summary["images_per_second"],
        "seconds_to_90pct_swap": reached, "noise_floor_l1": noise_floor, "final": final, "history": history,
    }
    print(f"load average at start {load[0]:.1f} (2 cores, shared); {summary['iters']} iters in "
          f"{summary['seconds']:.0f} s = {summary['images_per_second']:.1f} images/s")
    print(f"final: swap success {final['swap_success']:.1%} (bar >= 90%; by target class "
          f"{', '.join(f'{name} {rate:.0%}' for name, rate in final['swap_into'].items())}), "
          f"test recon L1 {final['recon_l1']:.4f} "
          f"on [-1,1] (bar <= 0.05; noise floor {noise_floor:.4f}; against the noise-free images "
          f"{final['recon_l1_noise_free']:.4f}); time to 90% swap: "
          f"{reached if reached is not None else 'not reached'} s")
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
