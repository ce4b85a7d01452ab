"""The BBCFE loss terms (paper eqs. 1-10) as pure functions of tensors, plus one the
paper does not have (:func:`pyramid_l1`, weight 0 unless a preset sets it).

The trainer feeds both directions of every pair through one batch (A->B in the
first half, B->A in the second), so each term below is the mean over both
directions, i.e. ``(L^A + L^B) / 2``; eqs. 7 and 10 are therefore the weighted
sums of :func:`weighted_sum` times two, a constant factor Adam does not see.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from caex.errors import TrainingError
from caex.utils.checks import check_number_fields
from caex.utils.overrides import parse_field_overrides

FAKE, REAL = 0, 1  # indices of the Dr logits (eq. 5: [1] is "real")


@dataclass
class LossWeights:
    """λ1..λ6 (generator, eq. 7) and φ1, φ2 (discriminator, eq. 10); defaults are the paper's."""

    recon_image: float = 10.0       # λ1, eq. 1
    recon_class: float = 1.0        # λ2, eq. 2
    recon_individual: float = 1.0   # λ3, eq. 3
    cycle: float = 10.0             # λ4, eq. 4
    adversarial: float = 1.0        # λ5, eq. 5
    classification: float = 1.0    # λ6, eq. 6
    recon_pyramid: float = 0.0      # not in the paper: eq. 1 on average-pooled copies (see pyramid_l1)
    individual_adversarial: float = 0.0  # not in the paper: Es confuses the IndividualCritic (0: no critic;
    #                                      helps local lesions, breaks digits: docs/EXPERIMENTS.md)
    code_classification: float = 0.0  # not in the paper: a linear probe, trained with Ec, reads the class from c
    #                                   (0: no probe; 5 in the small preset; see BBCFEForward)
    disc_adversarial: float = 1.0   # φ1, eq. 8
    disc_classification: float = 2.0  # φ2, eq. 9
    disc_individual: float = 1.0    # the IndividualCritic's own cross-entropy (used when the above is > 0)

    def __post_init__(self) -> None:
        check_number_fields(self, TrainingError, "loss weight ")  # "20" failed in the training step
        for name, value in self.as_dict().items():
            if not (math.isfinite(value) and value >= 0):
                raise TrainingError(f"loss weight {name}={value!r}: must be a finite number >= 0")

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def parse_overrides(cls, pairs: Iterable[str], *, option: str = "--loss") -> dict[str, float]:
        """``["adversarial=0.5"]`` -> ``{"adversarial": 0.5}``; a one-line error naming ``option`` and the
        pair for an unknown term or a value that is not a number."""
        return parse_field_overrides(cls, pairs, option=option, error=TrainingError)


def l1_distance(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference: eq. 1 (image), 2 (class code), 3 (individual code) and 4 (cycle)."""
    return (output.float() - target.float()).abs().mean()


def pyramid_l1(output: torch.Tensor, target: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """Eq. 1 on copies average-pooled by 2, 4, ... 2**levels, averaged over the levels.

    Per-pixel noise (speckle) averages out under pooling while structure a few
    pixels wide (a dark cyst) does not, so this term still pulls where the sign
    of the pixel-level L1 gradient is decided by the noise. Levels that would
    pool below one pixel are left out.
    """
    size = min(output.shape[-2:])
    factors = [2 ** level for level in range(1, levels + 1) if 2 ** level <= size]
    if not factors:
        return l1_distance(output, target)
    return _total(l1_distance(F.avg_pool2d(output.float(), k), F.avg_pool2d(target.float(), k))
                  for k in factors) / len(factors)


def classification_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of ``logits`` [B, K] against class indices: eq. 6 (fakes) and eq. 9 (reals)."""
    return F.cross_entropy(logits.float(), targets)


def uniform_class_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits`` [B, K] against the uniform distribution: smallest (``log K``) when they
    cannot tell the classes apart, which is what the individual encoder is trained for."""
    return -torch.log_softmax(logits.float(), dim=1).mean()


def _real_fake_loss(real_logits: torch.Tensor, label: int) -> torch.Tensor:
    targets = torch.full((len(real_logits),), label, dtype=torch.long, device=real_logits.device)
    return F.cross_entropy(real_logits.float(), targets)


def adversarial_generator_loss(fake_real_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 5: the generator wants ``Dr`` to call its swapped images real."""
    return _real_fake_loss(fake_real_logits, REAL)


def adversarial_discriminator_loss(fake_real_logits: torch.Tensor, real_real_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 8: ``Dr`` should call swapped images fake and training images real."""
    return _real_fake_loss(fake_real_logits, FAKE) + _real_fake_loss(real_real_logits, REAL)


def weighted_sum(terms: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    """Eq. 7 / eq. 10: the weighted sum of the named terms (names are :class:`LossWeights` fields)."""
    table = weights.as_dict()
    return _total(table[name] * value for name, value in terms.items())


def _total(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """The sum of one or more tensors, as a tensor: ``sum()`` starts from the int 0 (its type says ``Tensor | int``)."""
    return functools.reduce(operator.add, tensors)


def first_non_finite(terms: dict[str, torch.Tensor],
                     reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> str | None:
    """The name of the first non-finite term, or ``None``; one device sync for all terms.

    ``reduce`` combines the per-term "non-finite" mask with other processes' (e.g.
    :func:`caex.training.distributed.any_rank`), so all of them name the same term.
    """
    values = torch.stack([value.detach().float() for value in terms.values()])
    non_finite = ~torch.isfinite(values)
    if reduce is not None:
        non_finite = reduce(non_finite)
    if not bool(non_finite.any()):
        return None
    return list(terms)[int(non_finite.nonzero()[0])]
