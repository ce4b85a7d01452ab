"""Local explanations: counterfactual paths on the class-code manifold and their saliency maps."""

from caex.explain.explainer import Explainer, ExplainError, Explanation

__all__ = ["ExplainError", "Explainer", "Explanation"]
