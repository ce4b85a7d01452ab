"""Local explanations: counterfactual paths on the class-code manifold and their saliency maps."""

from caex.explain.attribution import (BASELINES, Attributor, ExplainerAttributor, GradientsUnavailableError,
                                      OptionValueError, make_attributor)
from caex.explain.explainer import AlreadyAtTargetWarning, Explainer, ExplainError, Explanation
from caex.explain.files import FilesResult, explain_files

__all__ = ["BASELINES", "AlreadyAtTargetWarning", "Attributor", "ExplainError", "Explainer", "ExplainerAttributor",
           "Explanation", "FilesResult", "GradientsUnavailableError", "OptionValueError", "explain_files",
           "make_attributor"]
