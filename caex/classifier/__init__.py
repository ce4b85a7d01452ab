"""Target classifiers: the black boxes caex explains, and the tools to train, save and open them."""

from caex.classifier.arch import (ARCHITECTURES, Architecture, ClassifierNet, SmallCNN, build_classifier_network,
                                  register_architecture)
from caex.classifier.base import Classifier, require_classifier
from caex.classifier.bundle import ClassifierInfo, save_bundle
from caex.classifier.loaders import OnnxClassifier, TorchClassifier, check_compatible, load_classifier
from caex.classifier.train import NearChanceWarning, TrainMetrics, train_classifier

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "Classifier",
    "ClassifierInfo",
    "ClassifierNet",
    "NearChanceWarning",
    "OnnxClassifier",
    "SmallCNN",
    "TorchClassifier",
    "TrainMetrics",
    "build_classifier_network",
    "check_compatible",
    "load_classifier",
    "register_architecture",
    "require_classifier",
    "save_bundle",
    "train_classifier",
]
