"""BBCFE training: pair sampler, loss terms, checkpoints and resume, DDP, logging."""

from caex.training.losses import LossWeights
from caex.training.trainer import TrainConfig, train_cae

__all__ = ["LossWeights", "TrainConfig", "train_cae"]
