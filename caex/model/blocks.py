"""Compact MUNIT-style building blocks shared by every CAE network.

One configurable :class:`Conv2dBlock` (padding, convolution, normalisation,
activation) covers all encoder, decoder and discriminator stages, so the
networks in :mod:`caex.model.networks` read as lists of stages instead of
copy-pasted layers (one of the official code's failings).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from caex.model.config import PADDINGS, PadType

NORMS = ("none", "in", "ln")
ACTIVATIONS = ("none", "relu", "lrelu", "tanh")


class LayerNorm(nn.Module):
    """Per-sample normalisation over (C, H, W) with a per-channel affine, as in MUNIT's decoder.

    Unlike InstanceNorm it keeps the relative energy of channels, which the
    up-sampling stages need after AdaIN has set the class-specific statistics.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x, x.shape[1:], eps=self.eps)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class Upsample2x(nn.Module):
    """Nearest-neighbour 2x up-sampling as one broadcast copy.

    The same values as ``nn.Upsample(scale_factor=2, mode="nearest")``, but
    PyTorch's CPU kernel for that is slow on NCHW tensors (7x slower than this
    copy at the decoder's sizes), and it was a third of a CAE map's cost.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        return x[:, :, :, None, :, None].expand(-1, -1, -1, 2, -1, 2).reshape(batch, channels, 2 * height, 2 * width)


def adaptive_instance_norm(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                           eps: float = 1e-5) -> torch.Tensor:
    """AdaIN: instance-normalise ``x`` [B, C, H, W], then apply per-sample ``(1 + scale)``, ``shift`` [B, C].

    The ``1 +`` makes a freshly initialised MLP (outputs near 0) an identity
    affine, so the decoder starts as a plain residual stack and training does
    not first have to learn to un-shrink every feature map.
    """
    x = F.instance_norm(x, eps=eps)
    return x * (1.0 + scale[:, :, None, None]) + shift[:, :, None, None]


def _norm(name: str, channels: int) -> nn.Module:
    if name == "in":
        return nn.InstanceNorm2d(channels, affine=False)
    if name == "ln":
        return LayerNorm(channels)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {name!r}")


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "lrelu":
        return nn.LeakyReLU(0.2, inplace=True)
    if name == "tanh":
        return nn.Tanh()
    if name == "none":
        return nn.Identity()
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def _padding_mode(pad_type: str) -> PadType:
    """``pad_type`` once it is known to be one of :data:`PADDINGS` (the type ``nn.Conv2d`` takes)."""
    if pad_type not in PADDINGS:
        raise ValueError(f"pad_type must be one of {PADDINGS}, got {pad_type!r}")
    return pad_type


class Conv2dBlock(nn.Module):
    """Convolution + normalisation + activation, with explicit (default reflect) padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, *, norm: str = "none", activation: str = "relu",
                 pad_type: str = "reflect") -> None:
        super().__init__()
        # A following normalisation removes any constant, so the bias would be dead weight.
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                              padding_mode=_padding_mode(pad_type), bias=norm == "none")
        self.norm = _norm(norm, out_channels)
        self.activation = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(x)))


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection; the second has no activation (MUNIT)."""

    def __init__(self, channels: int, *, norm: str = "in", activation: str = "relu",
                 pad_type: str = "reflect") -> None:
        super().__init__()
        self.body = nn.Sequential(
            Conv2dBlock(channels, channels, 3, 1, 1, norm=norm, activation=activation, pad_type=pad_type),
            Conv2dBlock(channels, channels, 3, 1, 1, norm=norm, activation="none", pad_type=pad_type),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def res_blocks(count: int, channels: int, *, norm: str = "in", activation: str = "relu",
               pad_type: str = "reflect") -> nn.Sequential:
    """``count`` residual blocks of constant width (an empty Sequential for 0)."""
    return nn.Sequential(*(ResBlock(channels, norm=norm, activation=activation, pad_type=pad_type)
                           for _ in range(count)))


class AdaINResBlock(nn.Module):
    """A residual block whose two normalisations take their affine from outside (the class code).

    The parameters arrive as an argument instead of being written into module
    attributes before each call (MUNIT's way), so the block is stateless and
    safe under DDP, ``torch.compile`` and concurrent use.
    """

    def __init__(self, channels: int, *, pad_type: str = "reflect") -> None:
        super().__init__()
        self.channels = channels
        padding_mode = _padding_mode(pad_type)
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, padding_mode=padding_mode, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, padding_mode=padding_mode, bias=False)

    #: scale and shift for each of the two normalisations
    params_per_channel = 4

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``params`` [B, 4 * channels]: (scale1, shift1, scale2, shift2)."""
        scale1, shift1, scale2, shift2 = params.chunk(4, dim=1)
        h = F.relu(adaptive_instance_norm(self.conv1(x), scale1, shift1))
        h = adaptive_instance_norm(self.conv2(h), scale2, shift2)
        return x + h


class MLP(nn.Module):
    """``layers`` linear layers (``in -> hidden -> ... -> out``) with activations in between."""

    def __init__(self, in_features: int, out_features: int, hidden: int, layers: int = 3, *,
                 activation: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"an MLP needs at least one layer, got {layers}")
        widths = [in_features] + [hidden] * (layers - 1) + [out_features]
        modules: list[nn.Module] = []
        for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
            modules.append(nn.Linear(width_in, width_out))
            if index < layers - 1:
                modules.append(_activation(activation))
                if dropout > 0:
                    modules.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
