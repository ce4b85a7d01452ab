"""Pairs of images from different classes, balanced over class pairs (BBCFE, paper §III-C).

Every draw is a pure function of ``(seed, rank, iteration)``: there is no
sampler state to checkpoint, a resumed run sees exactly the batches the
uninterrupted run would have seen, and each DDP rank gets its own stream.
"""

from __future__ import annotations

import itertools

import torch

from caex.errors import DataError
from caex.utils.seed import keyed_generator


class PairSampler:
    """Draws index pairs ``(a, b)`` with ``labels[a] != labels[b]``.

    Each pair first picks an unordered pair of distinct classes, then a random
    orientation (which class is "A"), then a uniform image of each class. The
    class pairs are dealt from a shuffled deck of all ``K(K-1)/2`` pairs, so
    every run of ``K(K-1)/2`` consecutive draws uses each class pair exactly
    once, whatever the class sizes: multi-class is learned one-vs-one with all
    pairs equally often, and small classes are not drowned by large ones.
    """

    def __init__(self, labels: torch.Tensor, num_classes: int, *, seed: int = 0, rank: int = 0) -> None:
        labels = torch.as_tensor(labels, dtype=torch.long).cpu()
        counts = torch.bincount(labels, minlength=num_classes)
        present = torch.nonzero(counts).flatten().tolist()
        if len(present) < 2:
            raise DataError(f"training needs images of at least 2 classes, found class(es) {present}")
        self.seed, self.rank = seed, rank
        self.class_pairs = torch.tensor(list(itertools.combinations(present, 2)), dtype=torch.long)
        order = torch.argsort(labels, stable=True)
        self._members = order  # indices grouped by class
        self._offsets = torch.cumsum(counts, 0) - counts
        self._counts = counts

    @property
    def num_class_pairs(self) -> int:
        return len(self.class_pairs)

    def sample(self, iteration: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices ``(a [batch_size], b [batch_size])`` for one training iteration."""
        num_pairs = self.num_class_pairs
        draws = iteration * batch_size + torch.arange(batch_size)
        decks = draws // num_pairs
        pair_ids = torch.empty(batch_size, dtype=torch.long)
        for deck in decks.unique().tolist():  # a batch spans at most batch_size / K(K-1)/2 + 1 decks
            in_deck = decks == deck
            shuffled = torch.randperm(num_pairs, generator=keyed_generator(self.seed, self.rank, deck, 0))
            pair_ids[in_deck] = shuffled[draws[in_deck] % num_pairs]
        pairs = self.class_pairs[pair_ids]
        generator = keyed_generator(self.seed, self.rank, iteration, 1)
        flip = torch.rand(batch_size, generator=generator) < 0.5
        pairs = torch.where(flip[:, None], pairs.flip(1), pairs)
        uniform = torch.rand(batch_size, 2, generator=generator)
        within = (uniform * self._counts[pairs]).long()
        index = self._members[self._offsets[pairs] + within]
        return index[:, 0], index[:, 1]
