"""Measured faithfulness: AOPC / PD, localisation, timing, and the side-by-side runner."""

from caex.evaluation.localisation import LocalisationMetric, mass_in_mask, pointing_game, topk_iou
from caex.evaluation.perturbation import (
    PerturbationMetric,
    PerturbationResult,
    aopc,
    aopc_per_image,
    aopc_standard_error,
    clean_probabilities,
    default_n_patches,
    degradation_curve,
    greedy_patches,
    make_fill,
    peak_degradation,
    perturbation_curve,
)
from caex.evaluation.runner import (
    DEFAULT_METHODS,
    EvaluationError,
    EvaluationResults,
    MethodResult,
    evaluate,
    is_cae_method,
    select_images,
)
from caex.evaluation.timing import timed_saliency

__all__ = [
    "DEFAULT_METHODS",
    "EvaluationError",
    "EvaluationResults",
    "LocalisationMetric",
    "MethodResult",
    "PerturbationMetric",
    "PerturbationResult",
    "aopc",
    "aopc_per_image",
    "aopc_standard_error",
    "clean_probabilities",
    "default_n_patches",
    "degradation_curve",
    "evaluate",
    "greedy_patches",
    "is_cae_method",
    "make_fill",
    "mass_in_mask",
    "peak_degradation",
    "perturbation_curve",
    "pointing_game",
    "select_images",
    "timed_saliency",
    "topk_iou",
]
