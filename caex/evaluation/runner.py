"""Side-by-side evaluation: CAE and the baselines on the same images, fills, device and batch size.

:func:`evaluate` picks correctly classified test images (stratified over
classes, seeded), computes every method's saliency with timing, measures
AOPC/PD (and localisation where the data has masks), and writes the results in
the layout of the paper's Tables II and V plus the degradation curves and a
gallery in the layout of its Fig. 6.
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from caex.classifier.base import Classifier
from caex.classifier.loaders import check_compatible
from caex.data.spec import as_recorded
from caex.data.types import DataBundle, rank_within_class, readable
from caex.errors import EvaluationError, Interrupted, Terminated
from caex.evaluation.localisation import LocalisationMetric
from caex.evaluation.perturbation import PerturbationMetric, clean_probabilities, make_fill
from caex.evaluation.ranking import RANKING
from caex.evaluation.timing import timed_saliency
from caex.explain.attribution import (ALIASES, BASELINES, Attributor, AttributionError, ExplainerAttributor,
                                      OptionValueError, accepted_options, constructor_options, make_attributor)
from caex.utils.io import (atomic_write_bytes, atomic_write_text, folder_lock, json_safe, read_json,
                           replaced_together, write_json)
from caex.utils.drawing import one_line
from caex.utils.numbers import MISSING, fixed
from caex.utils.plotting import (SALIENCY_COLORMAP, figure_png, literal_text, outline_mask, rgb_array, saliency_blend,
                                 text_inches, wrap_label)
from caex.utils.overrides import CONVERTERS, typed_value
from caex.utils.progress import progress
from caex.utils.provenance import models_record, run_record
from caex.utils.rows import constant_rows, nonfinite_rows
from caex.utils.seed import torch_generator
from caex.utils.warn import warn

#: Path variants of the CAE explainer that the evaluation can compare (``cae`` alone = guided).
CAE_PATHS = ("guided", "centroid", "nearest")
DEFAULT_CAE_PATH = "guided"
DEFAULT_METHODS = ("cae", "gradcam", "fullgrad", "lime", "occlusion", "integrated_gradients", "random")
#: Constructor arguments :func:`evaluate` sets itself: the same for every method, and a CAE method's path, which
#: its name gives (``cae-centroid``; an option ``path`` was a TypeError, "got multiple values").
_SET_BY_EVALUATE = {"self", "classifier", "explainer", "kwargs", "batch_size", "seed", "name", "path"}
#: Images in the gallery: one per class (the selection takes the classes in turn) for up to 10 classes, and 6
#: at least.
GALLERY_ROWS = (6, 10)
#: The height added under the gallery for its saliency colour key, and the key's greatest length (inches).
GALLERY_KEY_INCHES, GALLERY_KEY_LENGTH = 0.4, 2.4


@dataclass
class MethodResult:
    """One row of the results table; metrics stay NaN for a skipped method or missing masks."""

    method: str
    status: str = "ok"  # "ok" or "skipped"
    reason: str = ""
    aopc: float = math.nan
    aopc_se: float = math.nan  # standard error of the AOPC over the images
    peak_degradation: float = math.nan
    pointing: float = math.nan
    mass_in_mask: float = math.nan
    iou: float = math.nan
    ms_per_image: float = math.nan
    curve: list[float] = field(default_factory=list)  # mean drop of F for p = 1..N
    aopc_per_image: list[float] = field(default_factory=list)  # paired across methods: same images, same fill
    aopc_per_class: dict[str, float] = field(default_factory=dict)  # class name -> mean AOPC of its images


@dataclass
class EvaluationResults:
    methods: list[MethodResult]
    settings: dict[str, Any]
    image_indices: list[int]  # rows of the test split that were evaluated
    maps: dict[str, torch.Tensor]  # method -> saliency [n, H, W] of the evaluated images
    # the same images by source (a file by its absolute path) and class name: a script outside Python could tie
    # the per-image figures to an image only by reloading the data with the same split
    image_sources: list[str] = field(default_factory=list)
    image_labels: list[str] = field(default_factory=list)

    def row(self, method: str) -> MethodResult:
        return next(result for result in self.methods if result.method == method)

    def __repr__(self) -> str:  # the dataclass's would print every map
        rows = ", ".join(f"{result.method} {fixed(result.aopc)}" if result.status == "ok"
                         else f"{result.method} skipped" for result in self.methods)
        return f"EvaluationResults({len(self.image_indices)} images; AOPC: {rows})"

    def to_json(self) -> dict[str, Any]:
        return {"settings": self.settings, "image_indices": self.image_indices, "image_sources": self.image_sources,
                "image_labels": self.image_labels, "methods": [json_safe(asdict(result)) for result in self.methods]}

    def to_markdown(self) -> str:
        """Rows = methods, columns = the paper's AOPC and PD, localisation, then Table V's time."""
        header = "| method | AOPC ↑ | PD ↑ | pointing ↑ | mass in mask ↑ | top-k IoU ↑ | ms/image ↓ |"
        lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
        for result in self.methods:
            if result.status != "ok":
                lines.append(f"| {result.method} | {markdown_cell(result.reason)} | | | | | |")
                continue
            values = (result.peak_degradation, result.pointing, result.mass_in_mask, result.iou)
            aopc = _format(result.aopc) + ("" if _is_nan(result.aopc_se) else f" ± {result.aopc_se:.3f}")
            cells = [aopc, *(_format(value) for value in values), _format(result.ms_per_image, ".1f")]
            lines.append(f"| {result.method} | " + " | ".join(cells) + " |")
        s = self.settings
        split = "" if s.get("split_seed") is None else f" split with seed {s['split_seed']}"
        lines += ["", f"K = {s['n_images']} correctly classified test images of `{s['data']}`{split} "
                      f"(stratified over classes, sampling seed {s['seed']}); classifier `{s['classifier']}`.",
                  f"Perturbation: N = {s['n_patches']} patches of {s['patch']}x{s['patch']} px (at most "
                  f"{100 * s['covered_share_max']:.1f}% of the {s['image_size']}x{s['image_size']} image), "
                  f"fill: {s['fill']}. F = softmax probability of the ground-truth class; AOPC ± its standard "
                  "error over the images.",
                  f"Timing: median ms per image over batches of {s['batch_size']} on {s['device']}, "
                  "the first (warm-up) batch not timed."]
        by_description: dict[str, list[str]] = {}
        for name, description in s.get("cae", {}).items():
            by_description.setdefault(description, []).append(name)
        lines += [f"CAE maps ({', '.join(names)}): {markdown_cell(description)}."  # class names are the user's
                  for description, names in by_description.items()]
        if s.get("method_options"):
            lines.append(f"Method options: {markdown_cell(options_text(s['method_options']))}.")
        table = _per_class_table(self.methods, s.get("images_per_class", {}))
        notes = []
        if s.get("interrupted"):
            notes.append("Interrupted: only the methods in the table ran.")
        if not s["has_masks"]:
            notes.append("Localisation: the data has no ground-truth masks (—).")
        elif "n_with_mask" in s:
            notes.append(f"Localisation: averaged over the {s['n_with_mask']} of the {s['n_images']} images whose "
                         "mask marks a lesion (the others have none to find).")
        # a line right after a table is read as one more of its rows
        lines += table + [""] * bool(table and notes) + notes
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        columns = ["method", "status", "reason", "aopc", "aopc_se", "peak_degradation", "pointing", "mass_in_mask",
                   "iou", "ms_per_image"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for result in self.methods:
            writer.writerow({key: "" if _is_nan(value) else value for key, value in asdict(result).items()})
        return buffer.getvalue()


def evaluate(explainer: Any, classifier: Classifier, data: DataBundle, *,
             methods: str | Sequence[str] = DEFAULT_METHODS, n_images: int = 32, seed: int = 0,
             out_dir: str | os.PathLike | None = None, batch_size: int = 16,
             metric: PerturbationMetric | None = None, localisation: LocalisationMetric | None = None,
             method_options: dict[str, dict[str, Any]] | None = None, classifier_name: str | None = None,
             verbose: bool = False) -> EvaluationResults:
    """Evaluate every method on the same ``n_images`` test images; write the outputs when ``out_dir`` is set.

    ``explainer`` is a CAE run folder, a ``CAE``, an ``Explainer``, or ``None``
    when only baselines are asked for. ``methods`` are names or one comma-separated
    string (``"cae,gradcam"``); the random map is added where they leave it out.
    ``method_options`` passes constructor arguments per method (e.g.
    ``{"lime": {"n_samples": 200}}``); ``classifier_name`` (default: the path it was loaded from) labels
    the tables.
    """
    if isinstance(methods, str):
        methods = methods.split(",")
    names = list(dict.fromkeys(canonical_method(name) for name in methods if name.strip()))  # each once
    if not names:
        raise EvaluationError("methods: name at least one method")
    if "random" not in names:  # the floor, always measured (it costs nothing): a method that does not beat it
        names.append("random")  # is not explaining, and no reading can say so without it
    if batch_size < 1:
        raise EvaluationError(f"batch_size={batch_size}: must be at least 1")
    # Held for the whole run, before any work: a second evaluation into the same folder stops at once instead
    # of overwriting this one's results minutes later.
    with folder_lock(out_dir, "caex evaluate"):
        check_compatible(classifier, data)  # shapes and classes; warns when it was trained on another split of data
        method_options = _checked_options(method_options or {})
        metric = metric or PerturbationMetric()
        localisation = localisation or LocalisationMetric()
        if localisation.patch is None:
            localisation = replace(localisation, patch=metric.patch)
        if localisation.patch != metric.patch:  # ties would rank by other squares than the deletion's patches
            raise EvaluationError(f"localisation.patch={localisation.patch} differs from metric.patch={metric.patch}; "
                                  f"give LocalisationMetric(patch={metric.patch}, ...)")
        # The CAE against the classifier and the data before the test images are classified (seconds to minutes)
        cae_explainer = _resolve_explainer(explainer, classifier, seed) if any(map(is_cae_method, names)) else None
        explainer_cae = getattr(cae_explainer, "cae", None)  # a user's explainer may hold no CAE
        check_split = getattr(explainer_cae, "check_split", None)
        if check_split is not None:
            check_split(data)
        indices = select_images(classifier, data, n_images, seed, verbose=verbose)
        test = data.test.subset(indices)
        images, labels = test.images, test.labels
        row_labels = [data.class_names[k] for k in labels.tolist()]  # the gallery's
        described = ([as_recorded(source) for source in test.sources], row_labels)  # each evaluated image
        fill = make_fill(images, seed)  # drawn once: every method covers the same pixels with the same values
        clean = clean_probabilities(classifier, images, labels)  # every curve's p = 0, classified once
        height, width = images.shape[-2:]
        models = models_record(explainer_cae, classifier)
        settings: dict[str, Any]  # of mixed values; "cae" gets an entry per CAE method below
        settings = {"data": data.spec, "split_seed": data.seed, "class_names": list(data.class_names),
                    "classifier": classifier_name or getattr(classifier, "source", None) or type(classifier).__name__,
                    "n_images": len(indices), "seed": seed, "batch_size": batch_size, "device": str(classifier.device),
                    "image_size": int(height), "has_masks": test.masks is not None, "share": metric.share,
                    "ranking": RANKING,
                    **metric.describe(height, width), "cae": {},
                    "images_per_class": {name: row_labels.count(name) for name in data.class_names
                                         if name in row_labels},
                    "provenance": run_record(classifier.device, **models),
                    "method_options": options_record(method_options, names)}
        methods_made = _make_methods(names, classifier, cae_explainer, batch_size, seed, method_options)
        results, maps = [], {}
        try:
            for name, attributor in methods_made.items():
                if isinstance(attributor, AttributionError):  # a method this classifier cannot run
                    results.append(_skipped(name, attributor))
                    continue
                if isinstance(attributor, ExplainerAttributor):
                    settings["cae"][name] = attributor.describe()
                try:
                    with progress(desc=name, total=len(images), unit="img", enabled=verbose) as bar:
                        timed = timed_saliency(attributor.saliency, images, labels, batch_size=batch_size,
                                               device=classifier.device, on_batch=bar.update)
                except AttributionError as exc:  # found only while it ran (attributions that are not finite)
                    results.append(_skipped(name, exc))
                    continue
                maps[name] = timed.maps
                _warn_constant_maps(name, timed.maps)
                scores = metric(classifier, images, labels, timed.maps, fill, clean=clean)
                located = localisation(timed.maps, test.masks) if test.masks is not None else {}
                if located:
                    settings["n_with_mask"] = located["n_with_mask"]  # the images localisation is averaged over
                results.append(MethodResult(
                    name, aopc=scores.aopc, aopc_se=scores.aopc_se, peak_degradation=scores.peak_degradation,
                    curve=scores.curve, aopc_per_image=scores.aopc_per_image,
                    aopc_per_class=per_class_means(scores.aopc_per_image, row_labels, data.class_names),
                    ms_per_image=timed.ms_per_image, pointing=located.get("pointing", math.nan),
                    mass_in_mask=located.get("mass_in_mask", math.nan), iou=located.get("iou", math.nan)))
        except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: keep what the finished methods measured
            done = [result for result in results if result.status == "ok"]
            if out_dir is None or not done:
                raise
            settings["interrupted"] = True
            partial = EvaluationResults(results, settings, indices.tolist(), maps, *described)
            where = _partial_results_folder(Path(out_dir))
            write_results(partial, test.images, test.masks, where, row_labels)
            terminated = isinstance(stop, Terminated)
            kept = "" if where == Path(out_dir) else f" (the complete earlier results in {out_dir} are kept)"
            raise Interrupted(f"stopped by {'SIGTERM' if terminated else 'an interrupt'} after {len(done)} of "
                              f"{len(names)} methods; their results are written to {where}{kept}",
                              exit_code=143 if terminated else 130) from None
        evaluation = EvaluationResults(results, settings, indices.tolist(), maps, *described)
        if out_dir is not None:
            write_results(evaluation, test.images, test.masks, out_dir, row_labels)
        return evaluation


def _skipped(name: str, reason: AttributionError) -> MethodResult:
    return MethodResult(name, status="skipped", reason=f"skipped: {reason}")


def options_record(method_options: dict[str, dict[str, Any]], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The options the methods ``names`` were made with, as results record them (NumPy numbers as numbers, a layer
    or a module by its type's name): a LIME of 50 samples was compared, and reported, as if it had the default
    1,000."""
    plain = (bool, int, float, str, type(None))

    def recorded(value: Any) -> Any:
        value = value.item() if isinstance(value, np.generic) else value
        return value if isinstance(value, plain) else type(value).__name__

    return {name: {key: recorded(value) for key, value in options.items()}
            for name, options in method_options.items() if options and name in names}


def options_text(record: dict[str, dict[str, Any]]) -> str:
    """``{"lime": {"n_samples": 50}}`` as ``lime n_samples=50``, methods apart by ``; ``."""
    return "; ".join(f"{name} " + ", ".join(f"{key}={value}" for key, value in options.items())
                     for name, options in record.items())


def method_name(method: str) -> str:
    """How a method is named in prose and figures: its attributor's title (``gradcam`` -> ``Grad-CAM``); CAE's
    path variants keep their suffix (``CAE-centroid``); a name no longer registered stays as it is."""
    if is_cae_method(method):
        return ExplainerAttributor.title + method[3:]
    return BASELINES[method].title if method in BASELINES else method


def is_cae_method(name: str) -> bool:
    """Whether a (canonical) method name is one of CAE's paths, which need a CAE run, not a baseline."""
    return name == "cae" or name.startswith("cae-")


def canonical_method(name: str) -> str:
    """Validate a method name and return its registry spelling (``ig`` -> ``integrated_gradients``)."""
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key in BASELINES or key == "cae" or (is_cae_method(key) and key[4:] in CAE_PATHS):
        return key
    raise EvaluationError(f"unknown method {name!r}; choose from {', '.join(known_methods())}")


def known_methods() -> list[str]:
    """Every method name :func:`evaluate` takes: CAE's paths, then the registered baselines."""
    return ["cae", *(f"cae-{path}" for path in CAE_PATHS), *BASELINES]


def select_images(classifier: Classifier, data: DataBundle, n_images: int, seed: int = 0, *,
                  verbose: bool = False) -> torch.Tensor:
    """Indices of up to ``n_images`` test images the classifier gets right, classes taking turns.

    Within each class the order is a seeded shuffle; the classes are then
    interleaved, so any prefix of the selection is as balanced as it can be.
    """
    if n_images < 1:
        raise EvaluationError(f"n_images={n_images}: must be at least 1")
    labels = data.test.labels
    predictions = _predictions(classifier, data.test.images, verbose)
    unscored = int((predictions < 0).sum())
    if unscored:  # argmax of a NaN row is 0: counted as right for class 0, then NaN in every method's mean
        first = data.test.sources[int(torch.nonzero(predictions < 0)[0])]
        warn(f"the classifier's outputs are not finite (NaN or inf) for {unscored} test image(s) of {data.spec!r} "
             f"(the first: {first}), as a model that divides by an image's spread gives on a blank one; "
             "the evaluation leaves them out")
    correct = torch.nonzero(predictions == labels).squeeze(1)
    if len(correct) == 0:
        raise EvaluationError(f"the classifier gets no test image of {data.spec!r} right; nothing to explain")
    missed = sorted(set(labels.tolist()) - set(labels[correct].tolist()))
    if missed:  # the tables would otherwise read as covering every class
        names = ", ".join(data.class_names[k] for k in missed)
        warn(f"the classifier gets no test image of class(es) {names} right, so the evaluation leaves "
             "them out")
    shuffled = correct[torch.randperm(len(correct), generator=torch_generator(seed))]
    class_of = labels[shuffled]
    interleaved = shuffled[torch.argsort(rank_within_class(class_of) * data.num_classes + class_of)]
    classes = len(labels[correct].unique())
    if n_images < classes:  # the classes take turns in index order: the last ones would be left out unsaid
        warn(f"n_images={n_images} is fewer than the {classes} classes with correctly classified test images: the "
             f"evaluation covers only {n_images} of them (the lowest class indices); ask for at least {classes}")
    return interleaved[:n_images]


def _warn_constant_maps(method: str, maps: torch.Tensor) -> None:
    """Say when maps rank no pixel above another: their AOPC then scores the order in which ties are deleted
    (:mod:`caex.evaluation.ranking`'s), and their pointing game misses, whatever the method would have shown."""
    constant = int(constant_rows(maps).sum())
    if constant:
        warn(f"{constant} of {len(maps)} {method} maps are constant (e.g. a classifier that ignores those images, "
             "a path that never moves, or a signed method that found no evidence for the class, as its map is its "
             "positive part): they rank no pixel, so their AOPC measures the order in which tied pixels are deleted, "
             "not the method")


def _predictions(classifier: Classifier, images: torch.Tensor, verbose: bool) -> torch.Tensor:
    """Predicted classes on the CPU (-1 where the outputs are not finite), in the classifier's own batches so a
    big test set is no silent pause."""
    step = classifier.batch_size
    predictions = [torch.zeros(0, dtype=torch.long)]
    with progress(desc="classifying test images", total=len(images), unit="img", enabled=verbose) as bar:
        for start in range(0, len(images), step):
            probs = classifier.predict_proba(images[start:start + step]).cpu()
            predictions.append(torch.where(nonfinite_rows(probs), -1, probs.argmax(dim=1)))
            bar.update(len(probs))
    return torch.cat(predictions)


def _checked_options(method_options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``method_options`` keyed by canonical method names, every option one its method's constructor takes (a
    typo would otherwise end the whole run in a TypeError after the methods before it had run)."""
    checked = {}
    for name, options in method_options.items():
        key = canonical_method(name)
        method = ExplainerAttributor if is_cae_method(key) else BASELINES[key]
        accepted = accepted_options(method) - _SET_BY_EVALUATE
        unknown = sorted(set(options) - accepted)
        if unknown:
            every = "evaluate sets it for every method: pass it to evaluate itself; "
            given = {"batch_size": every, "seed": every}.get(unknown[0], "")
            if unknown[0] == "path" and is_cae_method(key):
                given = f"the method's name sets it: {', '.join(f'cae-{path}' for path in CAE_PATHS)}; "
            raise EvaluationError(f"method_options[{name!r}]: {key} takes no option {unknown[0]!r} ({given}it "
                                  f"takes {', '.join(sorted(accepted)) or 'none'})")
        checked[key] = dict(options)
    return checked


def parse_method_options(pairs: Sequence[str], option: str = "--method-option") -> dict[str, dict[str, Any]]:
    """``["lime.n_samples=200"]`` -> ``{"lime": {"n_samples": 200}}``, each value converted by the annotation of
    its method's constructor (its int, float and text options: a layer or a module cannot be typed), for
    ``evaluate``'s ``method_options``; a one-line error naming ``option`` for anything else."""
    parsed: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        target, equals, text = pair.partition("=")
        method, dot, key = target.strip().partition(".")
        key = key.replace("-", "_")  # as every KEY=VALUE option takes it
        if not (equals and dot and method and key):
            raise EvaluationError(f"{option} {pair!r}: expected METHOD.OPTION=VALUE, e.g. lime.n_samples=200")
        name = canonical_method(method)
        settable = _settable_options(name)
        if key not in settable:
            raise EvaluationError(f"{option} {pair!r}: {name} takes no option {key!r} here (it takes "
                                  f"{', '.join(settable) or 'none'})")
        value = typed_value(text, settable[key], what=f"{option} {pair!r}: {key}", error=EvaluationError)
        parsed.setdefault(name, {})[key] = value
    return parsed


def _settable_options(name: str) -> dict[str, str]:
    """A method's constructor options that text can give, by name, with their annotations."""
    method = ExplainerAttributor if is_cae_method(name) else BASELINES[name]
    return {key: kind for key, kind in constructor_options(method).items()
            if key not in _SET_BY_EVALUATE and kind in CONVERTERS}


def _make_methods(names: Sequence[str], classifier: Classifier, cae_explainer: Any, batch_size: int, seed: int,
                  method_options: dict[str, dict[str, Any]]) -> dict[str, Attributor | AttributionError]:
    """Every method made before any of them runs, or the reason it cannot run on this classifier (a black box
    gives no gradients: the method is skipped). An option it cannot run with stops the evaluation here, before
    any work, rather than after the methods before it had run."""
    made: dict[str, Attributor | AttributionError] = {}
    for name in names:
        try:
            made[name] = _make_method(name, classifier, cae_explainer, batch_size, seed, method_options.get(name, {}))
        except OptionValueError:
            raise
        except AttributionError as exc:
            made[name] = exc
    return made


def _make_method(name: str, classifier: Classifier, cae_explainer: Any, batch_size: int, seed: int,
                 options: dict[str, Any]) -> Attributor:
    if is_cae_method(name):
        path = name[4:] or DEFAULT_CAE_PATH
        return ExplainerAttributor(classifier, cae_explainer, path=path, name=name, batch_size=batch_size, seed=seed,
                                   **options)
    return make_attributor(name, classifier, batch_size=batch_size, seed=seed, **options)


def _resolve_explainer(source: Any, classifier: Classifier, seed: int) -> Any:
    """An object with ``saliency(images, target=, path=, steps=)`` (and, for more than two classes,
    ``leaving=`` and ``target_by=``) from a run folder, a CAE or an Explainer."""
    if source is None:
        raise EvaluationError("the cae methods need a CAE run folder; pass one or leave the cae methods out")
    if hasattr(source, "saliency"):
        return source
    from caex.explain.explainer import Explainer

    return Explainer(source, classifier, seed=seed)  # its code graph's subsample draws from the same seed


#: Where an interrupted evaluation writes its finished methods when its folder holds a complete earlier set.
PARTIAL_FOLDER = "interrupted"


def _partial_results_folder(out: Path) -> Path:
    """``out``, unless it holds a complete earlier evaluation, which a partial one must not replace: then its
    :data:`PARTIAL_FOLDER` sub-folder."""
    try:
        earlier = read_json(out / "results.json")
    except (OSError, ValueError):
        return out
    complete = isinstance(earlier, dict) and not earlier.get("settings", {}).get("interrupted")
    return out / PARTIAL_FOLDER if complete else out


@literal_text
def write_results(results: EvaluationResults, images: torch.Tensor, masks: torch.Tensor | None,
                  out_dir: str | os.PathLike, row_labels: Sequence[str] = ()) -> Path:
    """``results.{csv,json,md}``, ``curves.png`` and ``gallery.png`` under ``out_dir``; ``row_labels`` (each
    image's class name) label the gallery's rows."""
    out = Path(out_dir)
    with replaced_together(out) as staging:  # the five files replace an earlier set together, or not at all
        atomic_write_text(staging / "results.csv", results.to_csv())
        write_json(staging / "results.json", results.to_json())
        atomic_write_text(staging / "results.md", results.to_markdown())
        atomic_write_bytes(staging / "curves.png", figure_png(_curves_figure(results), dpi=120))
        atomic_write_bytes(staging / "gallery.png", figure_png(_gallery_figure(results, images, masks, row_labels),
                                                                   dpi=120))
    if not results.settings.get("interrupted"):  # written: it supersedes a partial set kept beside an earlier
        shutil.rmtree(out / PARTIAL_FOLDER, ignore_errors=True)
    return out


class LineStyle(NamedTuple):
    """How a method's curve is drawn: matplotlib's ``color``, ``marker`` and ``linestyle`` (a name or an
    ``(offset, (on, off, ...))`` dash pattern)."""

    color: str
    marker: str
    linestyle: str | tuple[float, tuple[float, ...]]


#: Each shipped method's line in ``curves.png``, by its canonical name (:func:`known_methods`): colour, marker and
#: dash, so a method looks the same in every run whatever its place in ``--methods``, and CAE's nearly equal path
#: variants stay apart (``cae-guided``, ``cae``'s own path, in ``cae``'s colour). CAE, Grad-CAM and occlusion, the
#: usual comparison, print as nearly the same grey: the latter two have dash patterns (dash-dot-dot, long dashes)
#: no other method uses.
METHOD_STYLES = {
    "cae": LineStyle("#1f77b4", "o", "-"), "cae-guided": LineStyle("#1f77b4", "d", "-."),
    "cae-centroid": LineStyle("#17becf", "s", "--"), "cae-nearest": LineStyle("#9467bd", "^", ":"),
    "gradcam": LineStyle("#d62728", "v", (0, (5, 1.5, 1, 1.5, 1, 1.5))), "fullgrad": LineStyle("#ff7f0e", "D", "--"),
    "lime": LineStyle("#2ca02c", "P", "-."), "occlusion": LineStyle("#8c564b", "X", (0, (8, 3))),
    "integrated_gradients": LineStyle("#e377c2", "*", "--"), "random": LineStyle("#7f7f7f", "x", ":"),
}
#: What a registered method's line is drawn from, picked by a stable hash of its name.
OTHER_STYLES = (("#bcbd22", "#393b79", "#843c39", "#637939", "#7b4173", "#3182bd"), ("h", "p", "d", "<", ">", "8"),
                ("-", "--", "-.", ":"))


def method_style(method: str) -> LineStyle:
    """``method``'s colour, marker and line style in the curves: a shipped method's from :data:`METHOD_STYLES`, a
    registered one's from :data:`OTHER_STYLES` by a hash of its name that is the same in every process."""
    if method in METHOD_STYLES:
        return METHOD_STYLES[method]
    key = zlib.crc32(method.encode())
    return LineStyle(*(options[key % len(options)] for options in OTHER_STYLES))


def _curves_figure(results: EvaluationResults):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    for result in results.methods:
        if result.status == "ok":
            axes.plot(range(1, len(result.curve) + 1), result.curve, markersize=4,
                      **method_style(result.method)._asdict(),
                      label=f"{method_name(result.method)} (AOPC {fixed(result.aopc)})")
    s = results.settings
    axes.set_xlabel(f"patches covered p ({s['patch']}x{s['patch']} px each)")
    axes.set_ylabel("mean drop of p(ground-truth class)")
    axes.set_title(readable(f"Degradation curves\n{s['n_images']} images of {s['data']}"), fontsize=10)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:  # every method skipped: no curve to name
        axes.legend(fontsize=8)
    return figure


def _gallery_figure(results: EvaluationResults, images: torch.Tensor, masks: torch.Tensor | None,
                    row_labels: Sequence[str] = ()):
    """Rows = images (labelled by ``row_labels``, their classes, written across and wrapped, the figure widened
    to hold them), columns = input then one saliency map per method, with a colour key under the maps; lesion
    masks outlined."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.figure import Figure

    methods = list(results.maps)
    fewest, most = GALLERY_ROWS
    rows = min(len(images), max(fewest, min(len(set(row_labels)), most)))
    columns = 1 + len(methods)
    labels = [wrap_label(label) for label in row_labels[:rows]]
    key_inches = GALLERY_KEY_INCHES if methods else 0.0
    figure = Figure(figsize=(1.6 * columns + text_inches(labels, 8), 1.6 * rows + 0.3 + key_inches),
                    layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    pictures = rgb_array(images[:rows])
    shown = [pictures, *(saliency_blend(pictures, results.maps[method][:rows].cpu().numpy()) for method in methods)]
    for row in range(rows):
        for column, axes in enumerate(grid[row]):
            axes.imshow(shown[column][row])
            if masks is not None and masks[row].any():
                outline_mask(axes, masks[row].cpu().numpy())
            axes.set_xticks([])
            axes.set_yticks([])
            if row == 0:
                axes.set_title("input" if column == 0 else method_name(methods[column - 1]), fontsize=8)
        if labels:
            grid[row][0].set_ylabel(labels[row], fontsize=8, rotation=0, ha="right", va="center")
    if methods:  # what the colours mean: in grey the blend's brightness follows the image as much as the saliency
        maps_width = 1.6 * len(methods)
        length, thickness, maps_height = min(maps_width, GALLERY_KEY_LENGTH), 0.12, 1.6 * rows  # inches
        key = figure.colorbar(ScalarMappable(cmap=SALIENCY_COLORMAP), ax=grid[:, 1:], location="bottom",
                              fraction=thickness / maps_height, pad=0.08 / maps_height, shrink=length / maps_width,
                              aspect=length / thickness)
        key.set_ticks([])
        key.set_label("low → high saliency", fontsize=8)
    return figure


def per_class_means(values: Sequence[float], classes: Sequence[str], class_names: Sequence[str]) -> dict[str, float]:
    """The mean of ``values`` over the items of each class (``classes[i]`` is item i's), in ``class_names``
    order, classes without items left out: where a method fails on one class is lost in the mean over all."""
    groups: dict[str, list[float]] = {}
    for value, name in zip(values, classes, strict=True):
        groups.setdefault(name, []).append(value)
    return {name: math.fsum(groups[name]) / len(groups[name]) for name in class_names if name in groups}


def _per_class_table(methods: Sequence[MethodResult], counts: dict[str, int]) -> list[str]:
    """Markdown lines: AOPC per class (rows = methods, columns = classes with their image ``counts``), where the
    images span several classes."""
    ran = [result for result in methods if result.status == "ok" and len(result.aopc_per_class) > 1]
    if not ran:
        return []
    names = list(ran[0].aopc_per_class)
    lines = ["", "AOPC per class of the evaluated images:", "",
             "| method | " + " | ".join(markdown_cell(with_count(name, counts)) for name in names) + " |",
             "|---|" + "---:|" * len(names)]
    lines += [f"| {result.method} | " + " | ".join(_format(result.aopc_per_class.get(name, math.nan))
                                                   for name in names) + " |" for result in ran]
    return lines


def with_count(name: str, counts: dict[str, int]) -> str:
    """A class's column header with its number of images, where known ("cnv (n=5)"): a mean over few is loose."""
    return f"{name} (n={counts[name]})" if name in counts else name


def markdown_cell(text: str) -> str:
    """``text`` safe in a Markdown table cell: a ``|`` in a class name split its header into two columns, and
    HTML in it, or an entity (``&lt;``), was rendered."""
    return html.escape(one_line(text), quote=False).replace("|", r"\|")


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _format(value: float, spec: str = ".3f") -> str:
    if _is_nan(value):
        return MISSING
    return fixed(value, spec)
