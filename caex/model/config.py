"""The CAE network configuration: every size the networks need, plus named presets.

Presets
-------
``tiny``
    For tests: a few thousand parameters, runs in milliseconds.
``small``
    For images up to 64 px on a 2-core CPU (the project's CPU budget). Narrow (8 channels),
    only one down-sampling in the individual encoder (at 64 px its code is a
    32x32 map, which keeps reconstructions sharp without wide layers), two
    residual blocks, a 64-wide AdaIN MLP; a 16-wide discriminator without dropout
    (dropout only slows its class head down in a run of a few hundred steps).
    Its class encoder max-pools instead of averaging: a lesion covering a few
    per cent of the image is diluted by a global average, so with it the class
    code learned too slowly for a 10-minute CPU run (docs/EXPERIMENTS.md).
``paper``
    The official implementation at 256 px: base width 64, 2 down-samplings in
    Es and 4 in Ec, 6 residual blocks, 256-wide MLP, code size 8.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from caex.errors import ModelError
from caex.utils.checks import check_counts, check_number_fields
from caex.utils.overrides import parse_field_overrides

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(width=8, n_down_class=2, n_down_individual=1, n_res=1, mlp_dim=16,
                 disc_width=8, disc_n_down=2, disc_n_res=0, disc_mlp_dim=16),
    "small": dict(width=8, n_down_class=3, n_down_individual=1, n_res=2, mlp_dim=64,
                  disc_width=16, disc_n_down=3, disc_n_res=1, disc_mlp_dim=64, disc_dropout=0.0,
                  class_pool="max"),
    "paper": dict(width=64, n_down_class=4, n_down_individual=2, n_res=6, mlp_dim=256,
                  disc_width=64, disc_n_down=4, disc_n_res=2, disc_mlp_dim=256),
}

#: CAEConfig fields the data decides (overrides cannot set them).
DATA_FIELDS = ("image_size", "channels", "num_classes")

#: Padding modes of the networks' convolutions (``PadType``: one of them, as ``nn.Conv2d`` is typed to take it).
PadType = Literal["reflect", "zeros", "replicate"]
PADDINGS: tuple[PadType, ...] = get_args(PadType)


@dataclass
class CAEConfig:
    """Sizes of the class encoder Ec, individual encoder Es, decoder G and discriminator D."""

    image_size: int = 64
    channels: int = 1
    num_classes: int = 2
    code_dim: int = 8              # length of the class-associated code c
    width: int = 16                # channels after the first 7x7 convolution of Ec and Es
    n_down_class: int = 3          # stride-2 stages in Ec (global pooling follows)
    n_down_individual: int = 1     # stride-2 stages in Es (= up-sampling stages in G)
    n_res: int = 2                 # residual blocks in Es and AdaIN residual blocks in G
    mlp_dim: int = 64              # hidden width of the code -> AdaIN parameter MLP
    mlp_layers: int = 3            # linear layers of that MLP (8 -> 256 -> 256 -> params in the paper)
    max_width_mult: int = 4        # Ec widths stop doubling at width * this (256 = 64 * 4 in the paper)
    class_pool: str = "avg"        # Ec's global pooling: avg (the paper) or max
    pad_type: str = "reflect"
    disc_width: int = 16
    disc_n_down: int = 3
    disc_n_res: int = 1
    disc_mlp_dim: int = 64
    disc_dropout: float = 0.3

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Reject sizes the networks cannot run, naming the offending value."""
        check_number_fields(self, ModelError, "CAEConfig.")  # width=8.0 or image_size="64" fail inside the networks
        check_counts({name: getattr(self, name) for name in (
            "image_size", "channels", "code_dim", "width", "mlp_dim", "mlp_layers", "max_width_mult", "disc_width",
            "disc_n_down", "disc_mlp_dim")}, 1, ModelError, "CAEConfig.")
        check_counts({name: getattr(self, name) for name in ("n_down_class", "n_down_individual", "disc_n_res")}, 0,
                     ModelError, "CAEConfig.")
        if self.n_res < 1:
            raise ModelError(f"CAEConfig.n_res={self.n_res!r}: must be >= 1 (the class code reaches the decoder "
                             "only through its AdaIN residual blocks)")
        if self.num_classes < 2:
            raise ModelError(f"CAEConfig.num_classes={self.num_classes}: CAE needs at least 2 classes")
        factor = 2 ** self.n_down_individual
        if self.image_size % factor:
            # the multiples of the factor on either side that also leave the code 2 pixels at least
            below = self.image_size // factor * factor
            above = max(below + factor, 2 * factor)
            sizes = f"{below} or {above}" if below >= 2 * factor else f"{above}"
            raise ModelError(f"CAEConfig.image_size={self.image_size}: must be divisible by "
                             f"2**n_down_individual={factor} so the decoder restores the size (--size {sizes})")
        for name in ("n_down_class", "n_down_individual", "disc_n_down"):
            if self.image_size // 2 ** getattr(self, name) < 2:  # padded convs and instance norms need >= 2 pixels
                raise ModelError(f"CAEConfig.{name}={getattr(self, name)}: too many down-samplings "
                                 f"for image_size={self.image_size} (--size {2 * 2 ** getattr(self, name)} at least)")
        if self.pad_type not in PADDINGS:
            raise ModelError(f"CAEConfig.pad_type={self.pad_type!r}: must be one of {', '.join(PADDINGS)}")
        if self.class_pool not in ("avg", "max"):
            raise ModelError(f"CAEConfig.class_pool={self.class_pool!r}: must be 'avg' or 'max'")
        if not 0.0 <= self.disc_dropout < 1.0:
            raise ModelError(f"CAEConfig.disc_dropout={self.disc_dropout}: must be in [0, 1)")

    @property
    def individual_channels(self) -> int:
        """Channels of the individual code ``s`` (``width * 2**n_down_individual``)."""
        return self.width * 2 ** self.n_down_individual

    @property
    def individual_size(self) -> int:
        """Spatial size of the individual code ``s``."""
        return self.image_size // 2 ** self.n_down_individual

    @classmethod
    def preset(cls, name: str, *, image_size: int, channels: int, num_classes: int,
               **overrides: Any) -> CAEConfig:
        """A named preset (``tiny``, ``small``, ``paper``) fitted to the data, with field overrides."""
        if name not in PRESETS:
            raise ModelError(f"unknown CAE preset {name!r}; choose one of {', '.join(PRESETS)}")
        fields = {**PRESETS[name], **overrides}
        unknown = set(fields) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ModelError(f"unknown CAEConfig field(s): {', '.join(sorted(unknown))}")
        return cls(image_size=image_size, channels=channels, num_classes=num_classes, **fields)

    @classmethod
    def parse_overrides(cls, pairs: Iterable[str], *, option: str = "override") -> dict[str, Any]:
        """``["n_res=3", "class_pool=max"]`` -> :meth:`preset` overrides typed by their field; a one-line
        error, prefixed with ``option``, for a malformed pair, an unknown or data-decided key, or an
        unconvertible value."""
        return parse_field_overrides(cls, pairs, option=option, error=ModelError, exclude=DATA_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CAEConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, so typos in a config.json show up."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModelError(f"CAE config has unknown field(s): {', '.join(sorted(unknown))} (a typo, or written by "
                             "a newer caex)")
        return cls(**data)
