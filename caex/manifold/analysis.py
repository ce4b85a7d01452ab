"""``analyse_manifold``: every global analysis of the class-code manifold in one call, into one folder.

Outputs (in ``out_dir``): ``codes.csv``, ``map_pca.png``, ``map_tsne.png``
(``map_umap.png`` when umap is installed), ``maps.html``, ``paths.png`` and
``summary.json`` holding every figure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from caex.classifier import check_compatible as check_classifier_compatible
from caex.data.types import DataBundle, warn_other_class_names
from caex.errors import CaexError, DataError, ModelError
from caex.manifold.codes import CodesTable, encode_bundle, write_codes_csv
from caex.manifold.maps import (PROJECTION_NAMES, plot_map, project_2d, subsample_rows, umap_available,
                               write_maps_html)
from caex.manifold.separability import Separability, pixel_pca, random_forest_accuracy
from caex.manifold.smoothness import (monotone_paths, plot_paths, sample_path_pairs, smote_smoothness,
                                      straight_path_probabilities)
from caex.manifold.swap import sample_swap_pairs, swap_predictions, swap_success_matrix
from caex.model.cae import as_cae
from caex.utils import write_json
from caex.utils.checks import check_counts, check_seed
from caex.utils.io import folder_lock, json_safe, replaced_together
from caex.utils.device import module_device
from caex.utils.numbers import significant
from caex.utils.provenance import models_record, run_record

if TYPE_CHECKING:
    from caex.classifier import Classifier
    from caex.model import CAE


#: The least value of each count argument of :func:`analyse_manifold`: the CLI's ``at_least`` limits, plus
#: ``smote_neighbours`` (0 makes every mixture the real code) and ``n_estimators`` (a forest of no trees).
LEAST_COUNTS = {"batch_size": 1, "folds": 2, "n_estimators": 1, "swap_pairs": 1, "smote_per_class": 1,
                "smote_neighbours": 1, "smote_individuals": 1, "paths": 1, "path_steps": 2, "figure_paths": 0,
                "map_points": 2}


def check_settings(*, monotone_tolerance: float = 0.05, **counts: int) -> None:
    """One-line errors for counts below :data:`LEAST_COUNTS` or not whole numbers, and for a tolerance outside
    [0, 1), before any work: sklearn's own errors came after minutes of encoding and decoding."""
    check_counts(counts, LEAST_COUNTS)
    if not 0 <= monotone_tolerance < 1:  # also refuses NaN
        raise CaexError(f"monotone_tolerance={monotone_tolerance!r}: must be at least 0 and below 1")


def check_inputs(cae: CAE, classifier: Classifier, data: DataBundle) -> None:
    """One-line errors when the CAE, the classifier and the data disagree on shape or classes; a warning when
    either model was trained on another split of this data."""
    check_classifier_compatible(classifier, data)
    if hasattr(cae, "check_split"):  # stand-ins without provenance have nothing to check
        cae.check_split(data)
    config = cae.config
    if (config.num_classes, config.channels, config.image_size) != (data.num_classes, data.channels,
                                                                    data.image_size):
        raise ModelError(f"the CAE was trained for {config.num_classes} classes of {config.channels}-channel "
                         f"{config.image_size}px images but data {data.spec!r} has {data.num_classes} classes of "
                         f"{data.channels}-channel {data.image_size}px images")
    warn_other_class_names("the CAE", cae.class_names, f"data {data.spec!r}", data.class_names)
    if len(data.test) < 2:
        raise DataError(f"data {data.spec!r}: the test split has {len(data.test)} images; at least 2 are needed")


def _smote_caps(counts: list[int], class_names: list[str], neighbours: int, individuals: int
                ) -> dict[str, dict[str, int]]:
    """The neighbours and individual codes a class of few test images could give (:func:`smote_smoothness` takes
    what there is), where fewer than asked: the summary's settings alone told of a sample that was never drawn.
    A class of fewer than 2 images has no share (null) and is left out."""
    return {name: {"neighbours": min(neighbours, count - 1), "individual_codes": min(individuals, count)}
            for name, count in zip(class_names, counts, strict=True)
            if count >= 2 and (count - 1 < neighbours or count < individuals)}


def _reduce(values: np.ndarray, reduce) -> float | None:
    """``reduce`` over the finite entries (None when there are none)."""
    finite = values[np.isfinite(values)]
    return float(reduce(finite)) if len(finite) else None


def _stage(message: str, verbose: bool) -> None:
    if verbose:
        print(f"[manifold] {message}", file=sys.stderr, flush=True)


def separability_figures(codes: CodesTable, images: torch.Tensor, classifier: Classifier, *, folds: int,
                         n_estimators: int, seed: int,
                         train_images: torch.Tensor | None = None) -> dict[str, dict[str, Any]]:
    """RF accuracy on the test class codes, on a pixel PCA of the same size (fitted on ``train_images``)
    and on the classifier's penultimate features (skipped with a note for black boxes)."""
    labels = codes.labels

    def measure(features) -> dict[str, Any]:
        result: Separability = random_forest_accuracy(features, labels, folds=folds, n_estimators=n_estimators,
                                                      seed=seed)
        return result.as_dict()

    figures = {"class_codes": measure(codes.codes),
               "pixel_pca": measure(pixel_pca(images, codes.code_dim, seed=seed, fit_images=train_images))}
    features = classifier.features(images)
    if features is None:
        figures["classifier_features"] = {"skipped": True,
                                          "note": "the classifier is a black box: its penultimate features "
                                                  "are not reachable"}
    else:
        figures["classifier_features"] = measure(features)
    return figures


def write_maps(table: CodesTable, rows: np.ndarray, out: Path, *, tsne: bool, seed: int) -> dict[str, str]:
    """PNG maps per projection (PCA, t-SNE, UMAP where available) and ``maps.html`` of the chosen rows."""
    codes, labels = table.codes.numpy()[rows], table.labels.numpy()[rows]
    splits = [table.splits[i] for i in rows]
    methods = ["pca"] + (["tsne"] if tsne else []) + (["umap"] if umap_available() else [])
    projections, files = {}, {}
    for method in methods:
        projections[method] = project_2d(codes, method, seed=seed)
        files[f"map_{method}"] = plot_map(out / f"map_{method}.png", projections[method], labels, splits,
                                          table.class_names, f"class codes, {PROJECTION_NAMES[method]}",
                                          totals={split: table.splits.count(split) for split in set(splits)}).name
    files["maps"] = write_maps_html(out / "maps.html", projections, labels, table.predictions.numpy()[rows],
                                    splits, [table.sources[i] for i in rows], table.class_names).name
    return files


def analyse_manifold(cae: CAE | str | os.PathLike, classifier: Classifier, data: DataBundle,
                     out_dir: str | os.PathLike, *, seed: int = 0,
                     verbose: bool = False, batch_size: int = 128, folds: int = 10, n_estimators: int = 150,
                     swap_pairs: int = 100, smote_per_class: int = 2000, smote_neighbours: int = 5,
                     smote_individuals: int = 8, paths: int = 50, path_steps: int = 10,
                     monotone_tolerance: float = 0.05, figure_paths: int = 8, tsne: bool = True,
                     map_points: int = 2000) -> dict[str, Any]:
    """Run the codes export, 2-D maps, separability, swap, SMOTE and path analyses; return the summary.

    ``swap_pairs`` is the number of test pairs per ordered class pair;
    ``map_points`` caps the points per split in the maps (t-SNE is quadratic).
    Everything random is drawn from ``seed``; the summary is also written to
    ``out_dir/summary.json``.
    """
    check_seed(seed)
    check_settings(batch_size=batch_size, folds=folds, n_estimators=n_estimators, swap_pairs=swap_pairs,
                   smote_per_class=smote_per_class, smote_neighbours=smote_neighbours,
                   smote_individuals=smote_individuals, paths=paths, path_steps=path_steps,
                   figure_paths=figure_paths, map_points=map_points, monotone_tolerance=monotone_tolerance)
    cae = as_cae(cae, classifier=classifier)
    check_inputs(cae, classifier, data)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CaexError(f"{out}: exists and is not a folder")
    # Locked against a second analysis into the same folder, written into a staging folder and moved in
    # together: an interrupted rerun leaves the previous set whole.
    with folder_lock(out, "caex manifold"), replaced_together(out) as staging:
        num_classes, class_names = data.num_classes, list(data.class_names)
        files: dict[str, str] = {}

        _stage("encoding the data set", verbose)
        table = encode_bundle(cae, classifier, data, batch_size=batch_size, verbose=verbose)
        files["codes"] = write_codes_csv(staging / "codes.csv", table).name
        test = table.split("test")
        test_images = data.test.images

        _stage("drawing the 2-D maps", verbose)
        rows = subsample_rows(table.splits, map_points, seed=seed)
        files.update(write_maps(table, rows, staging, tsne=tsne, seed=seed))

        _stage("measuring separability (random forest, cross-validated)", verbose)
        separability = separability_figures(test, test_images, classifier, folds=folds, n_estimators=n_estimators,
                                            seed=seed, train_images=data.train.images)

        _stage("swapping class codes between test images", verbose)
        index_a, index_b = sample_swap_pairs(test.labels, num_classes, swap_pairs, seed=seed)
        predictions = swap_predictions(cae, classifier, test_images, test.codes, index_a, index_b,
                                       batch_size=batch_size, verbose=verbose)
        success, counts = swap_success_matrix(test.labels[index_a], test.labels[index_b], predictions, num_classes)

        _stage("decoding SMOTE samples of the class codes", verbose)
        smote = smote_smoothness(cae, classifier, test_images, test.codes, test.labels, num_classes,
                                 per_class=smote_per_class, neighbours=smote_neighbours,
                                 individuals=smote_individuals, batch_size=batch_size, seed=seed, verbose=verbose)

        _stage("walking straight inter-class paths", verbose)
        path_a, path_b = sample_path_pairs(test.labels, paths, seed=seed)
        targets = test.labels[path_b]
        probabilities, frames = straight_path_probabilities(
            cae, classifier, test_images, test.codes, path_a, path_b, targets, steps=path_steps,
            keep_frames=figure_paths, batch_size=batch_size, verbose=verbose)
        monotone = monotone_paths(probabilities, tolerance=monotone_tolerance)
        if len(frames):
            titles = [f"{class_names[int(test.labels[a])]} → {class_names[int(test.labels[b])]}"
                      for a, b in zip(path_a[:len(frames)].tolist(), path_b[:len(frames)].tolist())]
            files["paths"] = plot_paths(staging / "paths.png", frames, probabilities[:len(frames)], titles).name

        summary = {
            "seed": seed,
            "data": data.spec,
            "split_seed": data.seed,
            "provenance": run_record(module_device(cae), **models_record(cae, classifier)),
            "class_names": class_names,
            "code_dim": table.code_dim,
            "counts": {"train": len(data.train), "test": len(data.test),
                       "train_per_class": data.train.class_counts(num_classes),
                       "test_per_class": data.test.class_counts(num_classes),
                       "map_points": len(rows)},
            "classifier_test_accuracy": int((test.predictions == test.labels).sum()) / len(test.labels),  # exact
            "separability": separability,
            "swap": {"matrix": success.tolist(), "pairs": counts.tolist(), "mean": _reduce(success, np.mean),
                     "min": _reduce(success, np.min), "pairs_per_class_pair": swap_pairs},
            "smoothness": {"per_class": dict(zip(class_names, smote.tolist())),
                           "min": _reduce(smote, np.min), "samples_per_class": smote_per_class,
                           "neighbours": smote_neighbours, "individual_codes_per_class": smote_individuals,
                           "fewer_in_small_classes": _smote_caps(data.test.class_counts(num_classes), class_names,
                                                                 smote_neighbours, smote_individuals)},
            "paths": {"count": len(probabilities), "steps": path_steps, "tolerance": monotone_tolerance,
                      "monotone_share": _reduce(monotone.float().numpy(), np.mean),
                      "target_probabilities": [[significant(float(p)) for p in row] for row in probabilities]},
            "files": files,
        }
        summary = json_safe(summary)  # undefined figures (empty class pairs, the swap diagonal) are null
        write_json(staging / "summary.json", summary)
    _stage(f"wrote {out}", verbose)
    return summary
