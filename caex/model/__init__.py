"""The CAE model: MUNIT-style networks, their configuration and the saved bundle."""

from caex.model.cae import CAE, to_data_range, to_model_range
from caex.model.config import PRESETS, CAEConfig
from caex.model.networks import ClassEncoder, Decoder, Discriminator, IndividualEncoder

__all__ = ["CAE", "PRESETS", "CAEConfig", "ClassEncoder", "Decoder", "Discriminator", "IndividualEncoder",
           "to_data_range", "to_model_range"]
