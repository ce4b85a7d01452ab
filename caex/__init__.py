"""caex: explain image classifiers with Class Association Embedding (CAE).

The public API mirrors the pipeline; every ``caex`` command is a thin layer over it::

    from caex.data import load_dataset            # data
    from caex.classifier import load_classifier   # the black box to explain
    from caex.model import CAE                    # the embedding (networks + bundle)
    from caex.training import train_cae           # BBCFE training
    from caex.explain import Explainer            # counterfactual paths and saliency
    from caex.manifold import analyse_manifold    # global analysis
    from caex.evaluation import evaluate          # AOPC / PD / localisation / timing
    from caex.demo import run_demo                # the whole pipeline, staged and resumable
    from caex.report import build_report          # one self-contained HTML report

The names are imported lazily, so ``import caex`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers see the lazy names' real types; at run time __getattr__ imports them on use
    from caex.classifier import load_classifier, train_classifier
    from caex.data import load_dataset
    from caex.demo import run_demo
    from caex.evaluation import evaluate
    from caex.explain import Explainer, explain_files
    from caex.manifold import analyse_manifold
    from caex.model import CAE, CAEConfig
    from caex.report import build_report
    from caex.training import TrainConfig, train_cae

__version__ = "0.1.0"

_EXPORTS = {
    "load_dataset": "caex.data",
    "load_classifier": "caex.classifier",
    "train_classifier": "caex.classifier",
    "CAE": "caex.model",
    "CAEConfig": "caex.model",
    "train_cae": "caex.training",
    "TrainConfig": "caex.training",
    "Explainer": "caex.explain",
    "explain_files": "caex.explain",
    "analyse_manifold": "caex.manifold",
    "evaluate": "caex.evaluation",
    "run_demo": "caex.demo",
    "build_report": "caex.report",
}

__all__ = [
    "CAE",
    "CAEConfig",
    "Explainer",
    "TrainConfig",
    "__version__",
    "analyse_manifold",
    "build_report",
    "evaluate",
    "explain_files",
    "load_classifier",
    "load_dataset",
    "run_demo",
    "train_cae",
    "train_classifier",
]


def __dir__() -> list[str]:  # tab completion and help() see the lazy names too
    return sorted({*globals(), *_EXPORTS})


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'caex' has no attribute {name!r}")
