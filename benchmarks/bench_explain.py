"""Time per saliency map on CPU at 64x64: CAE (batched paths) vs Grad-CAM vs LIME.

All three explain the same classifier on the same synthetic test images, through
the same call: ``Attributor.saliency(images, target)``, the class to explain in,
maps out (CAE's path runs to the other class). CAE and Grad-CAM run on the same
batch of images with the same batch size; LIME (1,000 samples per image, one
surrogate fit per image) runs on a few images only, since it takes seconds each.
CAE is timed in several settings (``PATH:STEPS``): the default (guided, 16
steps), the official demo's 6 steps, and the fast straight contrast (nearest
stored code, 2 steps: one decoded frame beside the reconstruction, as faithful
on the synthetic benchmark; see the README). A map alone needs the classifier
only where the map depends on it (``Explainer.saliency``), so the 2-step map
costs one encoder and two decoder passes whatever the classifier; each setting
is also timed as a full ``Explainer.explain`` (every frame classified, the flip
step found), for reference. Prints ms/image and the ratios CAE/Grad-CAM and
LIME/CAE, and writes them to ``bench_explain.json`` here (or ``--out``).

    python benchmarks/bench_explain.py                          # fresh small CAE, untrained ResNet-18
    python benchmarks/bench_explain.py --run RUN --classifier CLF  # trained ones (same cost per image)

A freshly initialised network costs what a trained one does, so the default
needs no training; the one exception makes the guided path dearer, not
cheaper: an untrained CAE never confirms its first candidate end code, so the
guided path decodes all 4 candidates (a trained one about 1).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from caex.classifier import Classifier, TorchClassifier, build_classifier_network, load_classifier
from caex.data import load_dataset
from caex.explain import Explainer, ExplainerAttributor
from caex.explain.attribution import make_attributor
from caex.model import CAE, CAEConfig
from caex.utils import software_versions, write_json
from records import add_replace_argument, figures_file


def seconds_per_image(fn: Callable[[], object], count: int, repeats: int, warm_up: bool = True) -> float:
    """Best wall time of ``repeats`` calls (after one warm-up call), divided by ``count`` images."""
    if warm_up:
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / count


def parse_setting(text: str) -> tuple[str, int, str]:
    """``"guided:16"`` -> ``("guided", 16, "code")`` (the default choice of the counterfactual class),
    ``"nearest:2:probability"`` -> ``("nearest", 2, "probability")``; a clear error for anything else."""
    fields = text.split(":")
    if len(fields) == 2:
        fields.append(ExplainerAttributor.COUNTER_BY[0])
    path, steps, counter_by = fields if len(fields) == 3 else ("", "", "")
    if (path not in ("guided", "centroid", "nearest") or not steps.isdigit() or int(steps) < 2
            or counter_by not in ExplainerAttributor.COUNTER_BY):
        raise SystemExit(f"--cae {text!r}: expected PATH:STEPS[:BY] with PATH guided|centroid|nearest, STEPS >= 2 "
                         f"and BY {'|'.join(ExplainerAttributor.COUNTER_BY)}")
    return path, int(steps), counter_by


def build_models(args: argparse.Namespace, data) -> tuple[CAE, Classifier]:
    """The CAE and classifier to time: loaded from files, or fresh ones of the same shape."""
    size, channels, classes = data.image_size, data.channels, data.num_classes
    if args.run:
        cae = CAE.load(args.run, device="cpu")
    else:
        torch.manual_seed(args.seed)
        cae = CAE(CAEConfig.preset(args.preset, image_size=size, channels=channels, num_classes=classes),
                  data.class_names).eval()
        cae.set_train_codes(cae.class_codes(data.train.images), data.train.labels)
    if args.classifier:
        classifier = load_classifier(args.classifier, device="cpu", batch_size=args.batch_size)
    else:
        net = build_classifier_network(args.arch, channels=channels, num_classes=classes, image_size=size)
        classifier = TorchClassifier(net, data.class_names, size, channels, batch_size=args.batch_size)
    return cae, classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained CAE run folder (default: a fresh CAE of --preset)")
    parser.add_argument("--classifier", help="a classifier file or bundle (default: a fresh --arch)")
    parser.add_argument("--preset", default="small", help="CAE preset when no --run (default: small)")
    parser.add_argument("--classes", type=int, default=2,
                        help="classes of the synthetic data and the fresh models (default: 2)")
    parser.add_argument("--arch", default="resnet18", help="classifier architecture when no --classifier")
    parser.add_argument("--images", type=int, default=64, help="images timed for CAE and Grad-CAM")
    parser.add_argument("--lime-images", type=int, default=3, help="images timed for LIME")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cae", nargs="+", default=["guided:16", "guided:6", "nearest:2"], metavar="PATH:STEPS[:BY]",
                        help="CAE settings to time (default: guided:16 = caex's default, guided:6 = the official "
                             "demo's, nearest:2 = the fast straight contrast); BY = code (default: no classifier "
                             "pass for a 2-step map), probability or all (every other class, the maps averaged) "
                             "picks the counterfactual class among more than two")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target machine has 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"),
                        help="JSON file for the figures (default: bench_explain.json beside this script)")
    add_replace_argument(parser)
    args = parser.parse_args()
    figures_file(parser, args.out, args.replace)
    default_by = ExplainerAttributor.COUNTER_BY[0]
    settings = {f"cae_{path}{steps}" + ("" if by == default_by else f"_by-{by}"): (path, steps, by)
                for path, steps, by in map(parse_setting, args.cae)}
    torch.set_num_threads(args.threads)

    data = load_dataset(f"synthetic:classes={args.classes},per_class=200,size=64", seed=args.seed)
    cae, classifier = build_models(args, data)
    images = data.test.images[:args.images]
    target = classifier.predict(images)
    explainer = Explainer(cae, classifier, batch_size=args.batch_size, device="cpu", seed=args.seed)
    gradcam = make_attributor("gradcam", classifier, batch_size=args.batch_size)
    lime = make_attributor("lime", classifier, seed=args.seed)

    timings = {}
    for name, (path, steps, counter_by) in settings.items():
        cae_maps = ExplainerAttributor(classifier, explainer, path=path, steps=steps, counter_by=counter_by,
                                       batch_size=args.batch_size)
        timings[name] = seconds_per_image(lambda m=cae_maps: m.saliency(images, target), len(images), args.repeats)
        timings[f"{name}_explain"] = seconds_per_image(
            lambda path=path, steps=steps: explainer.explain(images, path=path, steps=steps), len(images), args.repeats)
    timings["gradcam"] = seconds_per_image(lambda: gradcam.saliency(images, target), len(images), args.repeats)
    few = images[:args.lime_images]
    # The classifier is warm from the runs above, and LIME's cost is 1,000 forward passes per image.
    timings["lime"] = seconds_per_image(lambda: lime.saliency(few, target[:len(few)]), len(few), 1, warm_up=False)

    milliseconds = {name: 1000 * value for name, value in timings.items()}
    default = next(iter(settings))
    fastest = min(settings, key=milliseconds.get)
    ratios = {f"{name}/gradcam": milliseconds[name] / milliseconds["gradcam"] for name in milliseconds
              if name.startswith("cae")}
    ratios.update({f"lime/{name}": milliseconds["lime"] / milliseconds[name] for name in settings})
    print(f"CPU, {args.threads} threads, 64x64x{data.channels}, CAE {'run ' + args.run if args.run else args.preset}, "
          f"classifier {args.classifier or args.arch}, batch {args.batch_size} "
          "(cae_*: the map alone; cae_*_explain: the full explanation)")
    for name, value in milliseconds.items():
        print(f"  {name:>20}: {value:10.2f} ms/image")
    for name, value in ratios.items():
        print(f"  {name:>28}: {value:8.2f}x")
    for name in dict.fromkeys([default, fastest]):
        print(f"bar ({name}): CAE <= Grad-CAM: {ratios[name + '/gradcam'] <= 1.0}; "
              f"LIME >= 100x CAE: {ratios['lime/' + name] >= 100}")
    write_json(args.out, {
        "device": "cpu", "threads": args.threads, "versions": software_versions(), "image_size": 64,
        "batch_size": args.batch_size,
        "cae": args.run or f"fresh {args.preset}", "classifier": args.classifier or f"fresh {args.arch}",
        "images": len(images), "lime_images": len(few), "ms_per_image": milliseconds, "ratios": ratios})


if __name__ == "__main__":
    main()
