"""Local explanations: counterfactual paths on the class-code manifold and their saliency maps."""

from caex.explain.attribution import (BASELINES, Attributor, ExplainerAttributor, GradientsUnavailableError,
                                      make_attributor)
from caex.explain.explainer import AlreadyAtTargetWarning, Explainer, ExplainError, Explanation

__all__ = ["BASELINES", "AlreadyAtTargetWarning", "Attributor", "ExplainError", "Explainer", "ExplainerAttributor",
           "Explanation", "GradientsUnavailableError", "make_attributor"]
