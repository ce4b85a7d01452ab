"""caex: explain image classifiers with Class Association Embedding (CAE).

The public API mirrors the pipeline::

    from caex.data import load_dataset            # data
    from caex.classifier import load_classifier   # the black box to explain
    from caex.model import CAE                    # the embedding (networks + bundle)
    from caex.training import train_cae           # BBCFE training
    from caex.explain import Explainer            # counterfactual paths and saliency
    from caex.manifold import analyse_manifold    # global analysis
    from caex.evaluation import evaluate          # AOPC / PD / localisation / timing
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
