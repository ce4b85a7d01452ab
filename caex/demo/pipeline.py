"""``run_demo``: the whole caex pipeline on the embedded synthetic data, staged and resumable.

Six stages, each in its own sub-folder of the output folder, then the report (seven steps in its progress)::

    data/        dataset.safetensors (the generated images, labels, masks), dataset.json, samples.png
    classifier/  the target classifier bundle (classifier.json records its test accuracy)
    cae/         the CAE training run (config.json, model.safetensors, log.jsonl, samples/, checkpoint)
    manifold/    codes.csv, 2-D maps, paths.png, summary.json
    explain/     counterfactual strips, saliency overlays and GIFs of a few test images per class
    evaluate/    results.{csv,json,md}, curves.png, gallery.png
    report.html  everything above in one self-contained page

Each stage ends with a ``stage.json`` marker (see :mod:`caex.demo.stages`), so a
rerun reuses finished stages, an interrupted run resumes where it stopped (the
CAE trainer from its own checkpoint) and changed settings rerun only what they
affect. The report is always rebuilt: it takes a second and reflects what the
stages hold now.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from caex.data.types import DataBundle, ImageSet
from caex.demo.profiles import DemoProfile, get_profile
from caex.demo.stages import Stage, StageOutcome, run_stage, stage_key
from caex.errors import DataError
from caex.evaluation.runner import method_name
from caex.utils import atomic_write_bytes, progress, read_json, resolve_device, write_json
from caex.utils.io import folder_lock
from caex.utils.numbers import fixed

DATASET_FILE = "dataset.safetensors"


@dataclass
class DemoResult:
    """What a demo run produced: where, how long each stage took, and the headline figures."""

    out_dir: Path
    report: Path
    profile: str
    outcomes: list[StageOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self, name: str) -> dict[str, Any]:
        return next((o.summary for o in self.outcomes if o.name == name), {})

    def summary_lines(self) -> list[str]:
        """The final summary the CLI prints: key figures and where the report is."""
        lines = [f"caex demo ({self.profile} profile) finished in {self.seconds:.0f} s "
                 f"({sum(o.reused for o in self.outcomes)} of {len(self.outcomes)} stages reused)"]
        accuracy = self.summary("classifier").get("test_accuracy")
        if accuracy is not None:
            lines.append(f"  classifier test accuracy   {100 * accuracy:.1f}%")
        manifold = self.summary("manifold")
        if manifold.get("swap_success") is not None:
            lines.append(f"  class-swap success         {100 * manifold['swap_success']:.1f}%")
        if manifold.get("separability") is not None:
            lines.append(f"  code separability (RF)     {100 * manifold['separability']:.1f}%")
        ranking = self.summary("evaluate").get("aopc_ranking", [])
        if ranking:
            lines.append("  AOPC (higher = more faithful):")
            lines += [f"    {rank}. {method_name(method):<22} {fixed(value)}"  # every method: where CAE stands
                      for rank, (method, value) in enumerate(ranking, start=1)]
        lines.append(f"  report: {self.report}")
        return lines


class DemoArtefacts:
    """Lazily loaded products of finished stages, shared by the stages that need them."""

    def __init__(self, out_dir: Path, device: torch.device) -> None:
        self.out_dir = out_dir
        self.device = device

    @cached_property
    def bundle(self) -> DataBundle:
        return load_dataset_file(self.out_dir / "data" / DATASET_FILE)

    @cached_property
    def classifier(self):
        from caex.classifier import load_classifier

        return load_classifier(str(self.out_dir / "classifier"), device=self.device)

    @cached_property
    def cae(self):
        from caex.model import CAE

        return CAE.load(self.out_dir / "cae", device=self.device)


# --------------------------------------------------------------------------- dataset file


def save_dataset_file(bundle: DataBundle, path: Path) -> Path:
    """The generated data as one safetensors file, so later stages (and reruns) read rather than regenerate."""
    tensors: dict[str, torch.Tensor] = {}
    for split in ("train", "test"):
        part: ImageSet = getattr(bundle, split)
        tensors[f"{split}.images"] = part.images.contiguous()
        tensors[f"{split}.labels"] = part.labels.contiguous()
        if part.masks is not None:
            tensors[f"{split}.masks"] = part.masks.contiguous()
    metadata = {"spec": bundle.spec, "class_names": json.dumps(bundle.class_names),
                "mirror_symmetric": json.dumps(bundle.mirror_symmetric), "seed": json.dumps(bundle.seed),
                "sources": json.dumps({"train": bundle.train.sources, "test": bundle.test.sources})}
    return atomic_write_bytes(path, save(tensors, metadata=metadata))


def load_dataset_file(path: Path) -> DataBundle:
    """Inverse of :func:`save_dataset_file`."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 - safe_open is no mapping
        sources = json.loads(metadata["sources"])
        splits = {split: ImageSet(images=tensors[f"{split}.images"], labels=tensors[f"{split}.labels"],
                                  masks=tensors.get(f"{split}.masks"), sources=sources[split])
                  for split in ("train", "test")}
        return DataBundle(train=splits["train"], test=splits["test"],
                          class_names=json.loads(metadata["class_names"]), spec=metadata["spec"],
                          mirror_symmetric=json.loads(metadata.get("mirror_symmetric", "false")) is True,
                          seed=json.loads(metadata.get("seed", "0")))
    except (OSError, SafetensorError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable demo data set ({type(exc).__name__}: {exc})") from None


# --------------------------------------------------------------------------- stages


def _data_stage(profile: DemoProfile, seed: int) -> Stage:
    settings = profile.data

    def run(folder: Path) -> dict[str, Any]:
        from caex.data import load_dataset
        from caex.data.preview import save_preview

        bundle = load_dataset(settings.spec, seed=seed)
        save_dataset_file(bundle, folder / DATASET_FILE)
        save_preview(bundle, folder / "samples.png", per_class=6, seed=seed)
        counts = {"train": bundle.train.class_counts(bundle.num_classes),
                  "test": bundle.test.class_counts(bundle.num_classes)}
        write_json(folder / "dataset.json", {"spec": bundle.spec, "class_names": bundle.class_names,
                                             "image_size": bundle.image_size, "channels": bundle.channels,
                                             "class_counts": counts})
        return {"train": len(bundle.train), "test": len(bundle.test)}

    title = (f"Generating the synthetic data ({settings.classes} classes x {settings.per_class} images, "
             f"{settings.size} px)")
    return Stage("data", title, {**asdict(settings), "seed": seed}, run,
                 outputs=(DATASET_FILE, "dataset.json", "samples.png"))


def _classifier_stage(profile: DemoProfile, seed: int, artefacts: DemoArtefacts, verbose: bool) -> Stage:
    settings = profile.classifier

    def run(folder: Path) -> dict[str, Any]:
        from caex.classifier import save_bundle, train_classifier

        bundle = artefacts.bundle
        net, metrics = train_classifier(bundle, arch=settings.arch, epochs=settings.epochs, seed=seed,
                                        device=artefacts.device, verbose=verbose)
        save_bundle(net, folder, class_names=bundle.class_names, image_size=bundle.image_size,
                    metrics=metrics, data_spec=bundle.spec, data_seed=bundle.seed)
        return {"test_accuracy": metrics.test_accuracy}

    epochs = "default epochs" if settings.epochs is None else f"{settings.epochs} epoch{'s' * (settings.epochs != 1)}"
    return Stage("classifier", f"Training the target classifier ({settings.arch}, {epochs})",
                 {**asdict(settings), "seed": seed}, run, outputs=("classifier.json", "classifier.safetensors"),
                 depends=("data",))


def _cae_stage(profile: DemoProfile, seed: int, artefacts: DemoArtefacts, verbose: bool) -> Stage:
    settings = profile.cae

    def run(folder: Path) -> dict[str, Any]:
        from caex.model import CAEConfig
        from caex.training import TrainConfig, train_cae
        from caex.training.checkpoint import CHECKPOINT_FILE

        bundle = artefacts.bundle
        config = CAEConfig.preset(settings.preset, image_size=bundle.image_size, channels=bundle.channels,
                                  num_classes=bundle.num_classes)
        shift: dict[str, Any] = {} if settings.max_shift is None else {"max_shift": settings.max_shift}
        train_config = TrainConfig.preset(settings.preset, iters=settings.iterations,
                                          batch_size=settings.batch_size, sample_every=settings.sample_every,
                                          dc=settings.dc, seed=seed, device=str(artefacts.device),
                                          tensorboard=False, **shift)
        # An interrupted stage continues from the trainer's checkpoint; otherwise the folder holds
        # only this stage's marker (and perhaps logs from before the first checkpoint) to overwrite.
        resume = (folder / CHECKPOINT_FILE).is_file()
        classifier = artefacts.classifier if settings.dc == "classifier" else None
        train_cae(bundle, config, train_config, out_dir=folder, classifier=classifier, resume=resume,
                  force=not resume, verbose=verbose)
        summary = read_json(folder / "summary.json")
        return {"iterations": summary["iters"], "recon_l1": summary["recon_l1"],
                "resumed_from": summary["iters"] - summary["trained_iters"]}

    return Stage("cae", f"Training the CAE ({settings.preset} preset, {settings.iterations} iterations)",
                 {**asdict(settings), "seed": seed}, run,
                 outputs=("config.json", "model.safetensors", "codes.safetensors", "log.jsonl", "summary.json"),
                 depends=("data", "classifier") if settings.dc == "classifier" else ("data",))


def _manifold_stage(profile: DemoProfile, seed: int, artefacts: DemoArtefacts, verbose: bool) -> Stage:
    settings = profile.manifold

    def run(folder: Path) -> dict[str, Any]:
        from caex.manifold import analyse_manifold

        summary = analyse_manifold(
            artefacts.cae, artefacts.classifier, artefacts.bundle, folder, seed=seed, verbose=verbose,
            folds=settings.folds, n_estimators=settings.n_estimators, swap_pairs=settings.swap_pairs,
            smote_per_class=settings.smote_per_class, paths=settings.paths, path_steps=settings.path_steps,
            tsne=settings.tsne, map_points=settings.map_points)
        return {"swap_success": summary["swap"]["mean"],
                "separability": summary["separability"]["class_codes"]["mean"],
                "smoothness_min": summary["smoothness"]["min"],
                "monotone_paths": summary["paths"]["monotone_share"]}

    return Stage("manifold", "Analysing the class-code manifold (maps, separability, swaps, smoothness)",
                 {**asdict(settings), "seed": seed}, run, outputs=("summary.json", "codes.csv", "map_pca.png"),
                 depends=("data", "classifier", "cae"))


def _explain_stage(profile: DemoProfile, seed: int, artefacts: DemoArtefacts, verbose: bool) -> Stage:
    settings = profile.explain

    def run(folder: Path) -> dict[str, Any]:
        return explain_examples(artefacts, folder, per_class=settings.per_class, steps=settings.steps,
                                seed=seed, verbose=verbose)

    return Stage("explain", f"Explaining {settings.per_class} test image(s) per class (guided paths, "
                            f"{settings.steps} steps)",
                 {**asdict(settings), "seed": seed}, run, outputs=("explanations.json",),
                 depends=("data", "classifier", "cae"))


def _evaluate_stage(profile: DemoProfile, seed: int, artefacts: DemoArtefacts, verbose: bool) -> Stage:
    from caex.evaluation import is_cae_method

    settings = profile.evaluate

    def run(folder: Path) -> dict[str, Any]:
        from caex.evaluation import evaluate
        from caex.explain import Explainer

        results = evaluate(Explainer(artefacts.cae, artefacts.classifier, seed=seed), artefacts.classifier,
                           artefacts.bundle, methods=settings.methods, n_images=settings.n_images, seed=seed,
                           out_dir=folder, method_options={"lime": {"n_samples": settings.lime_samples}},
                           verbose=verbose)
        ranking = sorted(((r.method, r.aopc) for r in results.methods if r.status == "ok"),
                         key=lambda item: item[1], reverse=True)
        return {"aopc_ranking": ranking, "n_images": len(results.image_indices)}

    baselines = ", ".join(method for method in settings.methods if not is_cae_method(method))
    return Stage("evaluate", f"Evaluating CAE against {baselines} on {settings.n_images} test images "
                             "(AOPC, PD, localisation, time)",
                 {**asdict(settings), "seed": seed}, run, outputs=("results.json", "gallery.png", "curves.png"),
                 depends=("data", "classifier", "cae"))


def explain_examples(artefacts: DemoArtefacts, folder: Path, *, per_class: int, steps: int, seed: int,
                     verbose: bool) -> dict[str, Any]:
    """Explain ``per_class`` seeded test images of every class into ``folder``.

    Files per example are ``caex explain``'s (:func:`caex.explain.render.save_explanation`), so the report
    reads either; ``explanations.json`` adds what each example shows.
    """
    from caex.data.preview import sample_grid_indices
    from caex.explain import Explainer
    from caex.explain.captions import flip_words
    from caex.explain.files import map_settings, with_models
    from caex.explain.render import save_explanation
    from caex.utils.provenance import models_record, run_record

    bundle = artefacts.bundle
    names = bundle.class_names
    rows = [index for indices in sample_grid_indices(bundle.test.labels, bundle.num_classes, per_class, seed)
            for index in indices]
    images = bundle.test.images[rows]
    explainer = Explainer(artefacts.cae, artefacts.classifier, seed=seed)
    explanation = explainer.explain(images, steps=steps)
    models = models_record(artefacts.cae, artefacts.classifier)
    provenance = run_record(explainer.device, **models)
    # recorded as caex explain records its own, so a script reads either
    settings = with_models(map_settings(path=explanation.path, steps=steps, seed=seed, smoothing=explainer.smoothing),
                           models)
    examples = []
    for i in progress(range(len(rows)), desc="rendering explanations", unit="img", enabled=verbose):
        label, prediction, target = (int(bundle.test.labels[rows[i]]), int(explanation.prediction[i]),
                                     int(explanation.target[i]))
        flip = int(explanation.flip_step[i])
        stem = f"{i:02d}_{names[label]}"
        title = (f"{names[label]} (classified {names[prediction]}) towards {names[target]}: "
                 + (flip_words(flip) if flip >= 0 else "never flips"))
        save_explanation(explanation, i, images[i], folder, stem, bundle.test.sources[rows[i]], settings,
                         title=title, provenance=provenance)
        examples.append({"test_index": rows[i], "source": bundle.test.sources[rows[i]], "label": names[label],
                         "prediction": names[prediction], "target": names[target], "flip_step": flip,
                         "title": title, "stem": stem})
    write_json(folder / "explanations.json", {"steps": steps, "path": explanation.path, "examples": examples})
    flipped = sum(example["flip_step"] >= 0 for example in examples)
    return {"images": len(examples), "flipped": flipped}


# --------------------------------------------------------------------------- the pipeline


def build_stages(profile: DemoProfile, seed: int, artefacts: DemoArtefacts, verbose: bool) -> list[Stage]:
    """The six computing stages in pipeline order (the report is built after them)."""
    return [
        _data_stage(profile, seed),
        _classifier_stage(profile, seed, artefacts, verbose),
        _cae_stage(profile, seed, artefacts, verbose),
        _manifold_stage(profile, seed, artefacts, verbose),
        _explain_stage(profile, seed, artefacts, verbose),
        _evaluate_stage(profile, seed, artefacts, verbose),
    ]


def _announce(message: str, verbose: bool) -> None:
    if verbose:
        print(message, file=sys.stderr, flush=True)


def run_demo(out_dir: str | os.PathLike = "runs/demo", *, fast: bool = False, force: bool = False, seed: int = 0,
             verbose: bool = True, device: str | torch.device = "auto",
             profile: DemoProfile | str | None = None) -> DemoResult:
    """Run (or resume) the demo pipeline into ``out_dir``; returns the paths and headline figures.

    ``profile`` overrides ``fast`` (``"default"``, ``"fast"``, ``"tiny"`` or a
    :class:`DemoProfile`, e.g. ``get_profile("tiny").replace(cae={"iterations": 2})``).
    A stage is reused unless ``force``, its settings changed, its outputs are
    incomplete or a stage it reads from was recomputed in this run.
    """
    if profile is None:
        profile = "fast" if fast else "default"
    if isinstance(profile, str):
        profile = get_profile(profile)
    device = resolve_device(device)  # a bad --device fails before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # One demo per folder: a second (say with --force) would delete the stage folders, locks included, that the
    # first is writing, and both would then train into one CAE folder.
    with folder_lock(out, "caex demo"):
        return _run_stages(out, profile, seed, force, device, verbose)


def _run_stages(out: Path, profile: DemoProfile, seed: int, force: bool, device: torch.device,
                verbose: bool) -> DemoResult:
    """The body of :func:`run_demo`, under its folder lock."""
    from caex.report import build_report

    artefacts = DemoArtefacts(out, device)
    stages = build_stages(profile, seed, artefacts, verbose)
    total = len(stages) + 1
    started = time.perf_counter()
    result = DemoResult(out_dir=out, report=out / "report.html", profile=profile.name)
    keys: dict[str, str] = {}
    recomputed: set[str] = set()
    for number, stage in enumerate(stages, 1):
        keys[stage.name] = stage_key(stage.settings, [keys[name] for name in stage.depends])
        _announce(f"[{number}/{total}] {stage.title}…", verbose)
        # A stage that reads a recomputed stage's outputs must not keep results made from the old ones.
        stale = force or any(name in recomputed for name in stage.depends)
        outcome = run_stage(stage, out / stage.name, keys[stage.name], force=stale)
        if not outcome.reused:
            recomputed.add(stage.name)
        _announce("      reused (finished earlier; --force reruns it)" if outcome.reused
                  else f"      done in {outcome.seconds:.1f} s", verbose)
        result.outcomes.append(outcome)
    _announce(f"[{total}/{total}] Writing the report…", verbose)
    build_report(out, result.report)
    result.seconds = time.perf_counter() - started
    return result
