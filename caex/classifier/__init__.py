"""Target classifiers: the black boxes caex explains."""

from caex.classifier.base import Classifier

__all__ = ["Classifier"]
