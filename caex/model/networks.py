"""The four CAE networks (paper §III-B), sized by :class:`~caex.model.config.CAEConfig`.

All of them work on images in [-1, 1]; :class:`~caex.model.cae.CAE` does the
mapping from and to the data range.
"""

from __future__ import annotations

import torch
from torch import nn

from caex.model.blocks import MLP, AdaINResBlock, Conv2dBlock, Upsample2x, res_blocks
from caex.model.config import CAEConfig


class ClassEncoder(nn.Module):
    """Ec: image -> class-associated code ``[B, code_dim]``.

    No normalisation (it would wash out exactly the global statistics the class
    code must carry); strided convolutions, then a 1x1 projection and global
    pooling: average as in the paper, or max (``CAEConfig.class_pool``), where
    a lesion covering a few per cent of the image sets the code instead of
    being averaged down by the healthy rest.
    """

    def __init__(self, config: CAEConfig) -> None:
        super().__init__()
        width, cap = config.width, config.width * config.max_width_mult
        layers: list[nn.Module] = [Conv2dBlock(config.channels, width, 7, 1, 3, pad_type=config.pad_type)]
        for _ in range(config.n_down_class):
            layers.append(Conv2dBlock(width, min(2 * width, cap), 4, 2, 1, pad_type=config.pad_type))
            width = min(2 * width, cap)
        pool = nn.AdaptiveAvgPool2d(1) if config.class_pool == "avg" else nn.AdaptiveMaxPool2d(1)
        layers += [nn.Conv2d(width, config.code_dim, 1), pool, nn.Flatten()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class IndividualEncoder(nn.Module):
    """Es: image -> individual code ``[B, width * 2**n_down, H / 2**n_down, W / 2**n_down]``."""

    def __init__(self, config: CAEConfig) -> None:
        super().__init__()
        width, pad = config.width, config.pad_type
        layers: list[nn.Module] = [Conv2dBlock(config.channels, width, 7, 1, 3, norm="in", pad_type=pad)]
        for _ in range(config.n_down_individual):
            layers.append(Conv2dBlock(width, 2 * width, 4, 2, 1, norm="in", pad_type=pad))
            width *= 2
        layers.append(res_blocks(config.n_res, width, norm="in", pad_type=pad))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """G: (class code, individual code) -> image in [-1, 1].

    The class code enters only through the AdaIN parameters that :attr:`mlp`
    produces for the residual blocks; the up-sampling stages (nearest x2,
    conv5x5, LayerNorm, ReLU) and the final conv7x7 + tanh see only features.
    """

    def __init__(self, config: CAEConfig) -> None:
        super().__init__()
        width, pad = config.individual_channels, config.pad_type
        self.blocks = nn.ModuleList(AdaINResBlock(width, pad_type=pad) for _ in range(config.n_res))
        self.num_adain_params = AdaINResBlock.params_per_channel * width * config.n_res
        self.mlp = MLP(config.code_dim, self.num_adain_params, config.mlp_dim, config.mlp_layers)
        layers: list[nn.Module] = []
        for _ in range(config.n_down_individual):
            layers += [Upsample2x(),
                       Conv2dBlock(width, width // 2, 5, 1, 2, norm="ln", pad_type=pad)]
            width //= 2
        layers.append(Conv2dBlock(width, config.channels, 7, 1, 3, activation="tanh", pad_type=pad))
        self.upsample = nn.Sequential(*layers)

    def forward(self, class_code: torch.Tensor, individual_code: torch.Tensor) -> torch.Tensor:
        h = individual_code
        params = self.mlp(class_code).chunk(len(self.blocks), dim=1)  # CAEConfig guarantees n_res >= 1
        for block, block_params in zip(self.blocks, params):
            h = block(h, block_params)
        return self.upsample(h)


class Discriminator(nn.Module):
    """D: one shared trunk with two heads, ``Dr`` (2 logits: fake/real) and ``Dc`` (K class logits).

    Returns ``(real_logits [B, 2], class_logits [B, K])``; both are trained with
    softmax cross-entropy (eqs. 5, 6, 8, 9). With ``individual_critic`` it also
    owns :class:`IndividualCritic` (not in the paper), and ``forward(x, individual)``
    returns its class logits for the individual codes as a third element.
    """

    def __init__(self, config: CAEConfig, individual_critic: bool = False) -> None:
        super().__init__()
        width, pad = config.disc_width, config.pad_type
        cap = config.disc_width * 8
        layers: list[nn.Module] = [Conv2dBlock(config.channels, width, 4, 2, 1, activation="lrelu", pad_type=pad)]
        for _ in range(config.disc_n_down - 1):
            layers.append(Conv2dBlock(width, min(2 * width, cap), 4, 2, 1, activation="lrelu", pad_type=pad))
            width = min(2 * width, cap)
        layers += [res_blocks(config.disc_n_res, width, norm="none", activation="lrelu", pad_type=pad),
                   nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                   MLP(width, config.disc_mlp_dim, config.disc_mlp_dim, 2, activation="lrelu",
                       dropout=config.disc_dropout),
                   nn.LeakyReLU(0.2, inplace=True), nn.Dropout(config.disc_dropout)]
        self.trunk = nn.Sequential(*layers)
        self.real_head = nn.Linear(config.disc_mlp_dim, 2)
        self.class_head = nn.Linear(config.disc_mlp_dim, config.num_classes)
        self.individual_critic = IndividualCritic(config) if individual_critic else None

    def forward(self, x: torch.Tensor, individual: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """``(real_logits, class_logits)`` of images ``x``, plus the individual critic's class logits of
        ``individual`` when given (one forward, so DistributedDataParallel sees every parameter used)."""
        features = self.trunk(x)
        logits = self.real_head(features), self.class_head(features)
        if individual is None:
            return logits
        if self.individual_critic is None:
            raise ValueError("this Discriminator was built without individual_critic")
        return (*logits, self.individual_critic(individual))


class IndividualCritic(nn.Module):
    """Reads the class from an individual code ``s``: ``[B, C, h, w]`` -> ``[B, K]`` logits.

    Not in the paper. The swap losses only ask that ``G(c_B, s_A)`` look like
    class B; nothing stops ``s_A`` from also carrying A's lesion, and then the
    lesion stays put when the class code moves. Trained to tell the class from
    ``s`` while the encoder is trained to confuse it (``LossWeights.individual_adversarial``),
    it pushes that information into the class code. Max pooling, as a lesion
    is local. Where the class is the whole object's shape (digits), ``s`` then
    keeps too little to draw it: measured in docs/EXPERIMENTS.md.
    """

    def __init__(self, config: CAEConfig, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(config.individual_channels, width, 3, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, 2, 1), nn.LeakyReLU(0.2),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(width, config.num_classes))

    def forward(self, individual: torch.Tensor) -> torch.Tensor:
        return self.net(individual)
