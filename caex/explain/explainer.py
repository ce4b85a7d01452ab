"""Local explanations: guided counterfactual paths on the class-code manifold, and their saliency.

For each exemplar ``x`` (paper §III-E): encode ``(c, s) = E(x)``, pick a target class
``t``, build a path of ``T`` class codes from ``c`` to an end code of class
``t`` (:mod:`caex.explain.paths`), decode every step with the exemplar's own
individual code ``x_k = G(c_k, s)``, classify every frame, find the first step
the classifier says ``t`` and turn the frame-to-frame changes into a saliency
map (:mod:`caex.explain.saliency`).

Everything is batched: all exemplars x all steps go through the decoder and
the classifier as ``[B*T, C, H, W]`` chunks of ``batch_size``; "stop at the
flip" is a mask applied afterwards, never a per-image loop. Only
``predict_proba`` is called on the classifier and everything runs under
``torch.no_grad``, so an ONNX black box works unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import operator
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
import torch

from caex.classifier.base import Classifier, evaluating, require_classifier
from caex.data.types import (check_image_batch, class_index, classes_text, rank_within_class,
                              warn_other_class_names)
from caex.errors import CaexError, ModelError
from caex.explain.paths import (DEFAULT_STEPS, CodeGraph, check_path_length, guided_paths, nearest_in_class,
                               straight_paths)
from caex.explain.saliency import SALIENCY_METHODS, contrast_saliency, end_steps, flip_steps, gaussian_smooth
from caex.explain.targets import RANK_BY, other_classes_by_distance, other_classes_by_probability
from caex.model.cae import CAE, as_cae
from caex.utils.checks import check_counts
from caex.utils.device import module_device, resolve_device
from caex.utils.rows import nonfinite_rows
from caex.utils.seed import torch_generator
from caex.utils.warn import warn

PATHS = ("guided", "centroid", "nearest", "reference")
#: Images as the Explainer takes them: a tensor or array ``[B, C, H, W]`` or ``[C, H, W]``, or a list or tuple of
#: ``[C, H, W]`` ones (see :func:`as_image_batch`).
ImagesLike = torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray]
#: One class for every image (an index, a name, a NumPy integer), or one per image (a ``[B]`` tensor or array, a list).
OneTarget = int | str | np.integer | Sequence[int | str | np.integer]
#: A target as :meth:`Explainer.explain` takes it: one per image, ``M`` per image (a ``[B, M]`` tensor or array), or
#: ``None`` for the default.
TargetSpec = OneTarget | torch.Tensor | np.ndarray | None


class ExplainError(CaexError):
    """An explanation request that cannot be served (bad target, path or reference)."""


class AlreadyAtTargetWarning(UserWarning):
    """Images were explained toward the class they are already given: nothing flips, and the map shows what
    makes them more so rather than what would change the decision."""


#: Whether :meth:`Explainer.explain` gives :class:`AlreadyAtTargetWarning` in this thread (see
#: :func:`at_target_counted`).
_WARN_AT_TARGET: contextvars.ContextVar[bool] = contextvars.ContextVar("caex_warn_at_target", default=True)


@contextlib.contextmanager
def at_target_counted() -> Iterator[None]:
    """No :class:`AlreadyAtTargetWarning` from :meth:`Explainer.explain` in this thread while the block runs: a
    caller that explains in batches counts such images and warns once. ``warnings.catch_warnings`` would do it for
    every thread, and threads leaving it in another order than they entered left the filter for good."""
    token = _WARN_AT_TARGET.set(False)
    try:
        yield
    finally:
        _WARN_AT_TARGET.reset(token)


def check_steps(steps: int, label: str = "steps=") -> None:
    """A one-line error for a path length out of range; ``label`` names the value (``"--steps "`` in the CLI)."""
    check_path_length(steps, label, ExplainError)


def check_smoothing(sigma: float) -> None:
    """A one-line error for a blur that is negative or not finite."""
    if not 0 <= sigma < math.inf:
        raise ExplainError(f"smoothing={sigma}: must be 0 (off) or a positive finite sigma in pixels")


@dataclass
class Explanation:
    """Counterfactual paths and saliency maps for a batch of exemplars (one target each).

    Step 0 of every path is the exemplar's own class code, so ``frames[:, 0]``
    is the reconstruction ``x0 = G(c, s)`` the maps are measured against.
    All tensors are on the CPU.
    """

    saliency: torch.Tensor        # [B, H, W] in [0, 1]
    frames: torch.Tensor          # [B, T, C, H, W] decoded path, data range
    probs: torch.Tensor           # [B, T, K] classifier probabilities of every frame
    target_probs: torch.Tensor    # [B, T] probability of the target class along the path
    flip_step: torch.Tensor       # [B] first step classified as the target, -1 when never
    end_step: torch.Tensor        # [B] last step the saliency uses (the flip, or T-1)
    target: torch.Tensor          # [B] target class index
    prediction: torch.Tensor      # [B] the classifier's class for the input image
    input_probs: torch.Tensor     # [B, K] the classifier's probabilities for the input image
    codes: torch.Tensor           # [B, T, D] class codes along the path
    reconstruction: torch.Tensor  # [B, C, H, W] x0 = G(c, s)
    path: str                     # guided | centroid | nearest | reference
    path_nodes: list[list[int]] | None  # guided: stored training-code indices visited (last = end code)
    class_names: list[str]
    saliency_method: str = "weighted"

    def __len__(self) -> int:
        return len(self.target)

    @property
    def predicted(self) -> torch.Tensor:
        """``[B]`` bool: whether the classifier's outputs for the input are finite (NaN's argmax, 0, is no class)."""
        return ~nonfinite_rows(self.input_probs)

    @property
    def unflipped(self) -> torch.Tensor:
        """``[B]`` bool: paths that never reach their target, where it is another class than the input's: their
        maps show changes that did not flip the classifier."""
        return (self.flip_step < 0) & (self.target != self.prediction)

    @property
    def target_at_reconstruction(self) -> torch.Tensor:
        """``[B]`` bool: paths "flipped" at step 0, whose CAE reconstruction the classifier already assigns to the
        target while the input is another class: the CAE does not reproduce what made the image its class, so the
        map shows no change that flips the classifier."""
        return (self.flip_step == 0) & (self.target != self.prediction)

    def __repr__(self) -> str:  # the dataclass default printed every tensor (thousands of characters)
        flipped = int((self.flip_step >= 0).sum())
        return (f"Explanation({len(self)} image(s), path={self.path!r}, {self.frames.shape[1]} steps, "
                f"saliency={self.saliency_method!r}, flipped: {flipped} of {len(self)})")

    def save(self, images: ImagesLike, out_dir: str | os.PathLike, stems: Sequence[str] | None = None,
             settings: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Write what ``caex explain`` writes for each exemplar: overlay PNG on its input in ``images``, the map
        ``.npy`` (in [0, 1]), counterfactual strip PNG, GIF and JSON summary, named ``<stem>_…`` (default ``image<i>``)
        in ``out_dir``; returns the summaries. Stems that are no file name of their own (a path, two that a Mac's
        disk takes for one, too long) are refused before anything is written
        (:func:`caex.explain.files.check_stems`), as is an ``out_dir`` another save or ``caex explain`` is writing
        (:func:`caex.utils.io.folder_lock`: two at once left maps beside another explanation's summaries)."""
        from caex.explain.files import check_stems
        from caex.explain.render import save_explanation
        from caex.utils.io import folder_lock

        channels, size = self.frames.shape[2], self.frames.shape[-1]
        images = as_image_batch(images, channels, size, "save: images")  # the overlays' base: as explained
        stems = [f"image{index}" for index in range(len(self))] if stems is None else list(stems)
        if len(images) != len(self) or len(stems) != len(self):
            raise ExplainError(f"save: {len(images)} images and {len(stems)} stems for {len(self)} explanations")
        check_stems(stems)
        with folder_lock(out_dir, "Explanation.save", tidy=False):  # any folder: other programs' .tmp files stay
            return [save_explanation(self, index, images[index].cpu(), out_dir, stem, stem, settings)
                    for index, stem in enumerate(stems)]

    def __getitem__(self, index: int | slice | torch.Tensor | list[int]) -> Explanation:
        """The explanations of a subset of exemplars (``exp[3]`` keeps a batch axis of 1)."""
        if isinstance(index, torch.Tensor):  # an index made beside GPU inputs; the explanation's tensors are on the CPU
            index = index.cpu()
        rows = torch.arange(len(self))[index].reshape(-1)
        fields = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        for name, value in fields.items():
            if isinstance(value, torch.Tensor):
                fields[name] = value[rows]
        if self.path_nodes is not None:
            fields["path_nodes"] = [self.path_nodes[i] for i in rows.tolist()]
        return Explanation(**fields)


def as_image_batch(images: ImagesLike, channels: int, size: int, what: str) -> torch.Tensor:
    """``[C,H,W]`` or ``[B,C,H,W]`` images (tensor or array, any float dtype, or a list of ``[C,H,W]`` ones) of
    ``channels`` x ``size`` px, as a float32 batch in [0, 1]; an :class:`ExplainError` naming ``what`` otherwise.

    A PIL image is refused with how to convert it, as 8-bit tensors are: its mode (8-bit, 16-bit, palette, alpha)
    decides its range and channels, which caex does not guess (torch failed as "Could not infer dtype of Image").
    So is a file name, which :func:`caex.explain.explain_files` reads as the CAE's training images were."""
    given = images if isinstance(images, (list, tuple)) else [images]
    if any(type(image).__module__.startswith("PIL.") for image in given):
        raise ExplainError(f"{what}: a PIL image; give float tensors [C, H, W] in [0, 1]: "
                           "torchvision.transforms.functional.to_tensor(image) converts an 8-bit one")
    named = [image for image in given if isinstance(image, (str, os.PathLike))]
    if named:
        raise ExplainError(f"{what}: a file name ({named[0]!s}); give image tensors, or explain files with "
                           "caex.explain.explain_files(explainer, paths, out_dir) (caex explain)")
    if isinstance(images, (list, tuple)):
        shapes = {tuple(np.shape(image)) for image in images}
        if not images:
            raise ExplainError(f"{what}: no images to explain (an empty list)")
        if len(shapes) > 1:
            raise ExplainError(f"{what}: a list of images of different shapes ({', '.join(map(str, shapes))}); "
                               "resize them alike first")
        images = torch.stack([torch.as_tensor(image) for image in images])
    images = torch.as_tensor(images)
    if images.ndim == 3:
        images = images[None]
    if images.is_floating_point():
        images = images.float()
    images = check_image_batch(images, channels=channels, size=size, what=what, error=ExplainError)
    if not len(images):  # would fail deep inside as torch.cat of nothing
        raise ExplainError(f"{what}: no images to explain (shape {tuple(images.shape)})")
    return images


class Explainer:
    """Explains a classifier's decisions with counterfactual paths decoded by a trained CAE.

    Args:
        cae: a :class:`caex.model.CAE` (or any module with its interface) whose
            ``train_codes``/``train_labels``/``centroids`` are set (loaded bundles have them), or its run folder.
            The Explainer runs it in eval mode and gives it back in the modes it had after every call, so a CAE
            still in training is left so.
        classifier: the black box; only ``predict_proba`` is used.
        batch_size: images per decoder/classifier call.
        device: where the CAE runs (default: where its parameters are; a run folder loads as
            :func:`caex.model.cae.as_cae` says, beside a differentiable classifier). A CAE given as a module is
            moved there itself, in place (``nn.Module.to``), not copied.
        knn: neighbours per node of the guided path's code graph.
        seed: drives the subsample of stored codes when there are more than ``max_graph_nodes``.
        candidates: guided paths decode the ``candidates`` nearest-by-graph target-class codes
            with the exemplar's individual code and end at the first the classifier assigns to
            the target (0 or 1: end at the nearest target-labelled code, no extra decoding).
        smoothing: Gaussian sigma in pixels applied to the maps (0 = off; why 1 by default: saliency module).
        max_graph_nodes: cap on stored codes in the graph (a seeded random subset beyond it).
    """

    def __init__(self, cae: CAE | str | os.PathLike, classifier: Classifier, *, batch_size: int = 256,
                 device: str | torch.device | None = None, knn: int = 10, seed: int = 0,
                 candidates: int = 4, smoothing: float = 1.0, max_graph_nodes: int = 20_000) -> None:
        check_smoothing(smoothing)
        check_counts({"batch_size": batch_size, "knn": knn, "candidates": candidates,
                      "max_graph_nodes": max_graph_nodes},
                     {"batch_size": 1, "knn": 1, "candidates": 0, "max_graph_nodes": 1}, ExplainError)
        classifier = require_classifier(classifier)
        cae = as_cae(cae, device, classifier=classifier)
        if classifier.num_classes != len(cae.class_names):
            raise ExplainError(f"the classifier has {classifier.num_classes} classes but the CAE was "
                               f"trained on {len(cae.class_names)} ({', '.join(cae.class_names)})")
        for unit, theirs, ours in (("-channel", classifier.channels, cae.config.channels),
                                   ("px", classifier.image_size, cae.config.image_size)):
            if theirs is not None and theirs != ours:  # it would classify frames it was never made for
                raise ExplainError(f"the classifier takes {theirs}{unit} images but the CAE makes {ours}{unit} ones")
        warn_other_class_names("the classifier", classifier.class_names, "the CAE", cae.class_names)
        self.device = resolve_device(device) if device is not None else module_device(cae)
        self.cae = cae.to(self.device)
        self.classifier = classifier
        self.class_names = list(cae.class_names)
        self.batch_size = batch_size
        self.knn = knn
        self.seed = seed
        self.candidates = candidates
        self.smoothing = smoothing
        self.max_graph_nodes = max_graph_nodes
        self._graph: CodeGraph | None = None
        self._graph_rows: torch.Tensor | None = None  # stored-code index of every graph node
        self._graph_source: tuple[torch.Tensor, torch.Tensor] | None = None  # the stored codes and labels it has

    # -- public API ----------------------------------------------------------------------
    @overload
    def explain(self, images: ImagesLike, target: OneTarget | None = None, path: str = "guided",
                steps: int = DEFAULT_STEPS, stop_at_flip: bool = True, reference: ImagesLike | None = None,
                all_targets: Literal[False] = False, saliency: str = "weighted",
                target_by: str = "probability") -> Explanation: ...

    @overload
    def explain(self, images: ImagesLike, target: TargetSpec = None, path: str = "guided", steps: int = DEFAULT_STEPS,
                stop_at_flip: bool = True, reference: ImagesLike | None = None, all_targets: bool = False,
                saliency: str = "weighted", target_by: str = "probability") -> Explanation | list[Explanation]: ...

    @torch.no_grad()
    def explain(self, images: ImagesLike, target: TargetSpec = None, path: str = "guided", steps: int = DEFAULT_STEPS,
                stop_at_flip: bool = True, reference: ImagesLike | None = None, all_targets: bool = False,
                saliency: str = "weighted", target_by: str = "probability") -> Explanation | list[Explanation]:
        """Explain ``images`` ``[B, C, H, W]`` (or one ``[C, H, W]``) in the data range.

        ``target``: the class the path heads *for* (the class being explained is
        the one the image leaves; an :class:`~caex.explain.attribution.Attributor`'s
        ``target``, Captum's, is that one): a class index, a class name, or one per
        image (``[B]`` tensor or list). Default: the best class other than the prediction (the other
        class for binary tasks) by ``target_by``: ``"probability"`` (default),
        the classifier's most probable other class, or ``"code"``, the other
        class whose class-code centroid is nearest to the image's class code.
        For ``path="reference"`` it is the classifier's class for the reference
        image(s).

        ``target`` may also be a ``[B, M]`` tensor or array, ``M`` classes per
        image: the result is then a list of ``M`` :class:`Explanation` s, element
        ``j`` toward ``target[:, j]``, from one encoding of the images.
        ``all_targets=True`` is that with every other class: element ``j``
        targets, for each image, its ``j``-th best class other than the
        prediction by ``target_by``, so element 0 is the default explanation.
        All paths are decoded in the same batches.
        """
        self._check_request(path, steps, saliency, reference, target, all_targets, target_by)
        images = self._as_batch(images, "images")
        input_probs = self.classifier.predict_proba(images).cpu()
        prediction = input_probs.argmax(dim=1)
        end_codes, target = self._reference_ends(reference, target, len(images))
        chosen = None if target is None else self._parse_targets(target, len(images))  # fails before encoding
        codes, individual = self._encode(images)
        if chosen is None:
            ranked = self._other_classes(target_by, prediction, codes, images, input_probs)  # [B, K-1]
            chosen = ranked if all_targets else ranked[:, 0]
        owner, targets, per_image = self._path_rows(chosen)
        path_codes, path_nodes, frames, probs = self._decode_paths(
            codes, individual, owner, targets, path=path, steps=steps,
            end_codes=None if end_codes is None else end_codes[owner], classify=True)
        maps, target_probs, flip_step, end_step = self._maps(frames, probs, targets, stop_at_flip, saliency)
        already = owner[targets == prediction[owner]].unique().tolist()
        if already and _WARN_AT_TARGET.get():
            warn(f"image(s) {', '.join(map(str, already[:10]))}{' …' if len(already) > 10 else ''} "
                 "already classified as the target class: nothing flips, and the map shows what makes "
                 "the image more so", AlreadyAtTargetWarning)
        explanation = Explanation(
            saliency=maps, frames=frames, probs=probs, target_probs=target_probs, flip_step=flip_step,
            end_step=end_step, target=targets, prediction=prediction[owner], input_probs=input_probs[owner],
            codes=path_codes.cpu(), reconstruction=frames[:, 0], path=path, path_nodes=path_nodes,
            class_names=self.class_names, saliency_method=saliency)
        if per_image is None:
            return explanation
        return [explanation[rows] for rows in torch.arange(len(owner)).view(per_image, len(images))]

    @torch.no_grad()
    def saliency(self, images: ImagesLike, target: TargetSpec = None, path: str = "guided",
                 steps: int = DEFAULT_STEPS, stop_at_flip: bool = True, reference: ImagesLike | None = None,
                 saliency: str = "weighted", target_by: str = "probability", all_targets: bool = False,
                 leaving: TargetSpec = None) -> torch.Tensor:
        """Only the maps ``[B, H, W]`` of :meth:`explain` (same arguments), at the least classifier cost.

        Images go through ``batch_size // steps`` at a time, their frames reduced to maps before the next, so
        any number of images fits in memory (:meth:`explain` keeps every frame: they are its result).

        Several targets per image (a ``[B, M]`` target, or ``all_targets``) give
        ``[B, M, H, W]``, every image encoded once for all its paths.

        ``leaving`` names the class each image's path leaves when ``target`` is
        not given (default: the classifier's prediction); the target is then the
        best other class by ``target_by``. The evaluation passes the class being
        explained here.

        The classifier runs only where a map depends on it: for the prediction
        and for ``target_by="probability"`` among more than two classes, for the
        guided path's end check, and on the frames of paths longer than two
        steps. A two-step straight path (``nearest``, ``centroid``,
        ``reference``) to a given target, or leaving a given class by
        ``target_by="code"``, never calls it, because its map is the end frame
        against the reconstruction whatever the probabilities. Then a map costs
        one encoder and two decoder passes, whatever the size of the classifier.
        (The one case where it differs from :meth:`explain`: if the classifier gives
        both frames of such a path exactly the same target probability, the weighted
        map of :meth:`explain` is all zeros, while this one is still the contrast.)
        """
        self._check_request(path, steps, saliency, reference, target, all_targets, target_by)
        if leaving is not None and (target is not None or reference is not None):
            raise ExplainError("leaving= picks the target among the other classes; it takes no target or reference")
        images = self._as_batch(images, "images")
        end_codes, target = self._reference_ends(reference, target, len(images))
        chosen = None if target is None else self._parse_targets(target, len(images))
        if leaving is not None:
            leaving = self._parse_target(leaving, len(images), "leaving")
        codes, individual = self._encode(images)
        if chosen is None:
            input_probs = None
            if leaving is None:
                input_probs = self.classifier.predict_proba(images).cpu()
                leaving = input_probs.argmax(dim=1)
            ranked = self._other_classes(target_by, leaving, codes, images, input_probs)
            chosen = ranked if all_targets else ranked[:, 0]
        owner, targets, per_image = self._path_rows(chosen)
        classify = steps > 2 and (saliency == "weighted" or stop_at_flip)
        maps = torch.empty(len(owner), *images.shape[-2:])
        chunk = max(1, self.batch_size // steps)  # images whose frames are decoded, kept and reduced at once
        for begin in range(0, len(images), chunk):
            rows = ((owner >= begin) & (owner < begin + chunk)).nonzero().squeeze(1)
            local = slice(begin, begin + chunk)
            *_, frames, probs = self._decode_paths(codes[local], individual[local], owner[rows] - begin,
                                                   targets[rows], path=path, steps=steps, classify=classify,
                                                   end_codes=None if end_codes is None else end_codes[owner[rows]])
            maps[rows] = self._maps(frames, probs, targets[rows], stop_at_flip, saliency)[0]
        return maps if per_image is None else maps.view(per_image, len(images), *maps.shape[1:]).transpose(0, 1)

    @staticmethod
    def _path_rows(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int | None]:
        """One path per row for valid class indices ``[B]`` or ``[B, M]``: the image ``owner[r]``, the class
        ``target[r]`` it heads for, and the targets per image (``None`` for one each). ``[B, M]`` gives ``M * B``
        rows, target by target (``targets[:, 0]`` for every image first)."""
        if targets.ndim == 1:
            return torch.arange(len(targets)), targets, None
        count, per_image = targets.shape
        return torch.arange(count).repeat(per_image), targets.T.reshape(-1), per_image

    def _other_classes(self, by: str, leaving: torch.Tensor, codes: torch.Tensor, images: torch.Tensor,
                       probs: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, K-1]`` classes other than ``leaving``, best first by ``by`` (see :data:`RANK_BY`); the
        classifier runs on ``images`` only when ranking by probability among more than two classes without
        ``probs``."""
        if len(self.class_names) == 2:
            return (1 - leaving)[:, None]
        if by == "code":
            centroids = self._stored_centroids("target_by='code'", ", or rank by 'probability'")
            return self._reachable(other_classes_by_distance(codes, centroids, leaving).cpu())
        if probs is None:
            probs = self.classifier.predict_proba(images).cpu()
        return self._reachable(other_classes_by_probability(probs, leaving))

    def reachable_classes(self) -> torch.Tensor:
        """``[K]`` bool, on the CPU: the classes a path can head for, those the CAE stored training codes of (all
        where it stored none: the paths that need codes say so)."""
        labels = self.cae.train_labels
        if labels is None:
            return torch.ones(len(self.class_names), dtype=torch.bool)
        return torch.bincount(labels.cpu(), minlength=len(self.class_names)) > 0

    def _reachable(self, ranked: torch.Tensor) -> torch.Tensor:
        """``ranked`` ``[B, K-1]`` without the classes the CAE stored no training code of (its data had no image
        of them), which no path can head for: as a default target they refused the whole batch. Every row keeps
        :meth:`target_count` classes, the best first: an image leaving such a class has one more, its last one
        cut, so that an image's targets are the same alone as in any batch (the fewest any row of the batch had
        left made them depend on its batch-mates)."""
        present = self.reachable_classes()
        width = self.target_count()
        if present.all() or width == 0:  # width 0: nothing to head for, which _require_codes names
            return ranked
        absent = [name for name, seen in zip(self.class_names, present.tolist(), strict=True) if not seen]
        cut = bool(present[ranked].all(dim=1).any())  # an image leaving such a class could head for one more
        warn(f"the CAE stored no training codes of class(es) {', '.join(absent)} (its training data had no "
             "images of them): no default path heads there" + (
                 f"; an image of {'them' if len(absent) > 1 else 'it'} is explained toward its best {width} "
                 "other class(es), as many as every other image, not all it could reach" if cut else ""))
        reachable_first = (~present[ranked]).to(torch.uint8).argsort(dim=1, stable=True)  # each row's order kept
        return ranked.gather(1, reachable_first)[:, :width]

    def target_count(self) -> int:
        """How many classes ``all_targets=True`` explains each image toward: every class a path can reach (see
        :meth:`reachable_classes`) but one, the image's own where the CAE has codes of it."""
        return int(self.reachable_classes().sum()) - 1

    # -- core ----------------------------------------------------------------------------
    @overload
    def _decode_paths(self, codes: torch.Tensor, individual: torch.Tensor, owner: torch.Tensor, target: torch.Tensor,
                      *, path: str, steps: int, end_codes: torch.Tensor | None, classify: Literal[True]
                      ) -> tuple[torch.Tensor, list[list[int]] | None, torch.Tensor, torch.Tensor]: ...

    @overload
    def _decode_paths(self, codes: torch.Tensor, individual: torch.Tensor, owner: torch.Tensor, target: torch.Tensor,
                      *, path: str, steps: int, end_codes: torch.Tensor | None, classify: bool
                      ) -> tuple[torch.Tensor, list[list[int]] | None, torch.Tensor, torch.Tensor | None]: ...

    def _decode_paths(self, codes: torch.Tensor, individual: torch.Tensor, owner: torch.Tensor, target: torch.Tensor,
                      *, path: str, steps: int, end_codes: torch.Tensor | None, classify: bool
                      ) -> tuple[torch.Tensor, list[list[int]] | None, torch.Tensor, torch.Tensor | None]:
        """One path per row, exemplar ``owner[r]`` towards class ``target[r]``: its codes ``[R, T, D]``, the
        guided path's graph nodes, the decoded frames ``[R, T, C, H, W]`` and (if ``classify``) their
        probabilities ``[R, T, K]``."""
        start = codes[owner]
        path_nodes = None
        if path == "guided":
            path_codes, path_nodes = self._guided(codes, individual, owner, target, steps)
        else:
            if path == "centroid":
                self._require_codes("centroid", target)
                centroids = self._stored_centroids("path 'centroid'")
                end_codes = centroids.to(start.device, start.dtype)[target.to(start.device)]
            elif path == "nearest":
                bank, labels = self._require_codes("nearest", target)
                bank = bank.to(start.device, start.dtype)
                end_codes = bank[nearest_in_class(start, bank, labels.to(start.device), target.to(start.device))]
            elif end_codes is None:  # the reference path ends at the reference's codes (_check_request asks for it)
                raise ExplainError(f"path {path!r} needs a reference image")
            path_codes = straight_paths(start, end_codes.to(start.device, start.dtype), steps)

        frames, probs = self._decode_path_frames(path_codes, codes, individual, owner, classify)
        return path_codes, path_nodes, frames, probs

    def _decode_path_frames(self, path_codes: torch.Tensor, codes: torch.Tensor, individual: torch.Tensor,
                            owner: torch.Tensor, classify: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Frames ``[R, T, C, H, W]`` (and probabilities ``[R, T, K]``) of paths ``[R, T, D]``. Every path starts
        at its image's own code, so with several paths per image their first frame, the reconstruction, is
        decoded once per image rather than once per path (a third of the work for 2-step paths to 3 classes)."""
        rows, length = path_codes.shape[:2]
        shared = rows > len(codes) and length > 1
        later = path_codes[:, 1:] if shared else path_codes
        frames, probs = self._decode_and_classify(later.reshape(-1, later.shape[-1]), individual,
                                                  owner.repeat_interleave(later.shape[1]), classify=classify)
        frames = frames.view(rows, later.shape[1], *frames.shape[1:])
        probs = None if probs is None else probs.view(rows, later.shape[1], -1)
        if shared:
            first, first_probs = self._decode_and_classify(codes, individual, torch.arange(len(codes)), classify)
            frames = torch.cat([first[owner, None], frames], dim=1)
            if probs is not None and first_probs is not None:  # both or neither, as classify says
                probs = torch.cat([first_probs[owner, None], probs], dim=1)
        return frames, probs

    @overload
    def _maps(self, frames: torch.Tensor, probs: torch.Tensor, target: torch.Tensor, stop_at_flip: bool,
              saliency: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]: ...

    @overload
    def _maps(self, frames: torch.Tensor, probs: torch.Tensor | None, target: torch.Tensor, stop_at_flip: bool,
              saliency: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]: ...

    def _maps(self, frames: torch.Tensor, probs: torch.Tensor | None, target: torch.Tensor, stop_at_flip: bool,
              saliency: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """Smoothed saliency maps, target probabilities, flip and end steps of decoded paths.

        Without probabilities (only asked for where they cannot change the map,
        see :meth:`saliency`) every path ends at its last frame and the map is
        the contrast; with two frames the weighted map is that contrast too.

        Computed with autocast off: inside a caller's ``torch.autocast`` the blur's convolution gave bfloat16 maps,
        which a float32 batch of maps refused and ``Explanation.save`` could not write.
        """
        length = frames.shape[1]
        with torch.autocast(frames.device.type, enabled=False):
            if probs is None:
                end_step = torch.full((len(frames),), length - 1)
                return gaussian_smooth(contrast_saliency(frames, None, end_step), self.smoothing), None, None, end_step
            target_probs = probs.gather(2, target.view(-1, 1, 1).expand(-1, length, 1)).squeeze(2)
            flip_step = flip_steps(probs, target)
            end_step = end_steps(flip_step, length, stop_at_flip)
            maps = SALIENCY_METHODS[saliency](frames, target_probs, end_step)
            return gaussian_smooth(maps, self.smoothing), target_probs, flip_step, end_step

    def _guided(self, codes: torch.Tensor, individual: torch.Tensor, owner: torch.Tensor,
                target: torch.Tensor, steps: int) -> tuple[torch.Tensor, list[list[int]]]:
        """Graph paths whose end the classifier confirms: see :attr:`candidates` in the class docstring."""
        self._require_codes("guided", target)
        graph, graph_rows = self._code_graph()
        search = graph.search(codes).select(owner)
        candidates = search.candidates(graph.region(target), max(self.candidates, 1))      # [R, M]
        ends = candidates[:, 0]
        if self.candidates > 1:
            ends = self._confirmed_ends(candidates, graph.bank.to(self.device), individual, owner, target)
        guided = guided_paths(graph, codes[owner], target, steps, search=search, ends=ends)
        nodes = [graph_rows[route].tolist() for route in guided.nodes]
        return guided.codes, nodes

    def _confirmed_ends(self, candidates: torch.Tensor, bank: torch.Tensor, individual: torch.Tensor,
                        owner: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per row, the first candidate end code (``-1`` = none) whose decoding the classifier assigns to the
        target, else the one it scores highest. Candidates are decoded one column at a time, and only for
        rows not yet confirmed, so a well-trained CAE costs about one extra pass instead of ``candidates``."""
        score = torch.full(candidates.shape, -1.0)
        confirmed = torch.full((len(candidates),), -1, dtype=torch.long)  # the confirming column
        for column in range(candidates.shape[1]):
            rows = ((confirmed < 0) & (candidates[:, column] >= 0)).nonzero().squeeze(1)
            if len(rows) == 0:
                continue
            _, probs = self._decode_and_classify(bank[candidates[rows, column].to(self.device)], individual,
                                                 owner[rows])
            score[rows, column] = probs.gather(1, target[rows][:, None]).squeeze(1)
            confirmed[rows[probs.argmax(dim=1) == target[rows]]] = column
        chosen = torch.where(confirmed >= 0, confirmed, score.argmax(dim=1))
        return candidates.gather(1, chosen[:, None]).squeeze(1)

    @overload
    def _decode_and_classify(self, codes: torch.Tensor, individual: torch.Tensor, owner: torch.Tensor,
                             classify: Literal[True] = True) -> tuple[torch.Tensor, torch.Tensor]: ...

    @overload
    def _decode_and_classify(self, codes: torch.Tensor, individual: torch.Tensor, owner: torch.Tensor,
                             classify: bool) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def _decode_and_classify(self, codes: torch.Tensor, individual: torch.Tensor, owner: torch.Tensor,
                             classify: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decode ``G(codes[i], individual[owner[i]])`` and (if ``classify``) classify, ``batch_size`` rows at a
        time (CPU out; ``None`` for unasked probabilities)."""
        frames, probs = [], []
        with evaluating(self.cae):
            for begin in range(0, len(codes), self.batch_size):
                chunk = slice(begin, begin + self.batch_size)
                decoded = self.cae.decode(codes[chunk].to(self.device),
                                          individual[owner[chunk].to(individual.device)]).float().clamp(0.0, 1.0)
                self._check_finite(decoded, "decoder", "images")
                if classify:
                    probs.append(self.classifier.predict_proba(decoded).cpu())
                frames.append(decoded.cpu())
        return torch.cat(frames), torch.cat(probs) if classify else None

    def _encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class and individual codes, ``batch_size`` images at a time, kept on :attr:`device`."""
        with evaluating(self.cae):
            pairs = [self.cae.encode(images[begin:begin + self.batch_size].to(self.device))
                     for begin in range(0, len(images), self.batch_size)]
        codes, individual = torch.cat([c.float() for c, _ in pairs]), torch.cat([s for _, s in pairs])
        self._check_finite(codes, "encoder", "class codes")
        self._check_finite(individual, "encoder", "individual codes")
        return codes, individual

    def _check_finite(self, batch: torch.Tensor, part: str, what: str) -> None:
        """Refuse NaN or inf out of the CAE itself (its inputs are checked finite): a CAE with NaN weights was
        reported as the classifier's fault ("classifier input: holds NaN or infinite pixels")."""
        bad = nonfinite_rows(batch)
        if bad.any():
            source = getattr(self.cae, "source", None)
            raise ModelError(f"{'the CAE' if source is None else f'the CAE in {source}'}: its {part} gives NaN or "
                             f"infinite {what} for {int(bad.sum())} of {len(batch)} rows (are its weights finite? "
                             "retrain it, or resume from an earlier checkpoint)")

    def _code_graph(self) -> tuple[CodeGraph, torch.Tensor]:
        """The kNN graph over the stored codes and the stored-code index of each of its nodes, built on first use
        (a seeded subset above the cap), and again after :meth:`CAE.set_train_codes` replaced them.

        The subset takes up to ``knn`` codes of every class first, so a rare class still has a
        region to end in (:meth:`_require_codes` only checked the full set of stored codes).
        """
        bank, labels = self._stored_codes("guided")
        if (self._graph is None or self._graph_rows is None or self._graph_source is None
                or self._graph_source[0] is not bank or self._graph_source[1] is not labels):
            self._graph_source = (bank, labels)
            count = len(bank)
            rows = torch.arange(count)
            if count > self.max_graph_nodes:
                shuffled = torch.randperm(count, generator=torch_generator(self.seed))
                turn = rank_within_class(labels.cpu()[shuffled])
                priority = (turn >= max(1, self.knn)).long() * count + torch.arange(count)
                rows = shuffled[priority.argsort()[:self.max_graph_nodes]].sort().values
                warn(f"guided paths run through {self.max_graph_nodes:,} of the {count:,} stored training codes (a "
                     f"seeded subset, seed {self.seed}; in Python Explainer(max_graph_nodes=) raises it, at a cost "
                     "that grows with its square; the CLI has no flag for it)")
            self._graph_rows = rows
            self._graph = CodeGraph(bank.float().cpu()[rows], labels.cpu()[rows], k=self.knn)
        return self._graph, self._graph_rows

    # -- checks --------------------------------------------------------------------------
    @staticmethod
    def _check_request(path: str, steps: int, saliency: str, reference: ImagesLike | None, target: TargetSpec,
                       all_targets: bool, target_by: str) -> None:
        """Reject option combinations :meth:`explain` and :meth:`saliency` cannot serve, before any work."""
        if target_by not in RANK_BY:
            raise ExplainError(f"target_by={target_by!r}: choose one of {', '.join(RANK_BY)}")
        if path not in PATHS:
            raise ExplainError(f"unknown path {path!r}; choose one of {', '.join(PATHS)}")
        if saliency not in SALIENCY_METHODS:
            raise ExplainError(f"unknown saliency {saliency!r}; choose one of {', '.join(SALIENCY_METHODS)}")
        check_steps(steps)
        if (reference is not None) != (path == "reference"):
            raise ExplainError("a reference image goes with path='reference' (and that path needs one)")
        if all_targets and (target is not None or path == "reference"):
            raise ExplainError("all_targets=True picks the targets itself; it takes no target or reference")

    def _reference_ends(self, reference: ImagesLike | None, target: TargetSpec,
                        count: int) -> tuple[torch.Tensor | None, TargetSpec]:
        """For the reference path: the reference codes ``[B, D]`` and, by default, the reference's class."""
        if reference is None:
            return None, target
        reference = self._as_batch(reference, "reference")
        if len(reference) not in (1, count):
            raise ExplainError(f"{len(reference)} reference images for {count} images; give 1 or {count}")
        if target is None:
            target = self.classifier.predict(reference).cpu().expand(count)
        return self._encode(reference)[0].expand(count, -1), target

    def _stored_codes(self, path: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The CAE's stored training codes and their labels, which ``path`` needs."""
        codes, labels = self.cae.train_codes, self.cae.train_labels
        if codes is None or labels is None:
            source = getattr(self.cae, "source", None)
            where = (f"its run folder {source} has no codes.safetensors" if source is not None
                     else "train it, or load a finished run folder")
            raise ModelError(f"path {path!r} needs the CAE's stored training codes; this CAE has none ({where})")
        return codes, labels

    def _require_codes(self, path: str, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored training codes and labels a path needs, once they are known to cover every target class."""
        stored = self._stored_codes(path)
        present = self.reachable_classes()
        missing = sorted({self.class_names[t] for t in target.tolist() if not present[t]})
        if missing:
            raise ExplainError(f"path {path!r}: no stored training codes of class(es) {', '.join(missing)}")
        return stored

    def _stored_centroids(self, needed_by: str, advice: str = "") -> torch.Tensor:
        """The CAE's stored class centroids, which ``needed_by`` needs (``advice`` ends the error's hint)."""
        if self.cae.centroids is None:
            raise ModelError(f"{needed_by} needs the CAE's stored class centroids; this CAE has none (load a "
                             f"finished run folder{advice})")
        return self.cae.centroids

    def _as_batch(self, images: ImagesLike, what: str) -> torch.Tensor:
        return as_image_batch(images, self.cae.config.channels, self.cae.config.image_size, what)

    def _parse_targets(self, target: OneTarget | torch.Tensor | np.ndarray, count: int) -> torch.Tensor:
        """:meth:`_parse_target`, and also a ``[B, M]`` tensor or array of ``M`` classes per image."""
        if isinstance(target, (torch.Tensor, np.ndarray)) and target.ndim == 2:
            if target.shape[0] != count or target.shape[1] == 0:
                raise ExplainError(f"target of shape {tuple(target.shape)} for {count} images: expected "
                                   f"one class per image ([{count}]) or M >= 1 per image ([{count}, M])")
            return self._parse_target(target.reshape(-1), target.shape[0] * target.shape[1]).view(count, -1)
        return self._parse_target(target, count)

    def _parse_target(self, target: OneTarget | torch.Tensor | np.ndarray, count: int,
                      what: str = "target") -> torch.Tensor:
        """A class index, class name or one per image -> ``[B]`` int64 indices, validated (errors say ``what``)."""
        values: list[Any]  # each checked by class_index
        if isinstance(target, (torch.Tensor, np.ndarray, np.generic)):  # Python numbers from here on
            if target.ndim > 1:  # flattened, a [2, 2] leaving passed for 4 images
                raise ExplainError(f"{what} of shape {tuple(target.shape)} for {count} images: expected one class "
                                   f"per image ([{count}])")
            values = [target.item()] * count if isinstance(target, np.generic) or not target.ndim else target.tolist()
        elif isinstance(target, (int, float, str)):  # a float is refused by class_index, naming it
            values = [target] * count
        else:
            values = list(target)
        if len(values) != count:
            raise ExplainError(f"{len(values)} {what} classes for {count} images")
        return torch.tensor([self.class_index(value, what) for value in values], dtype=torch.long)

    def class_index(self, value: int | str | np.integer | torch.Tensor, what: str = "target") -> int:
        """A class given by name or index (``"lesion"``, ``2``, ``"2"``, a NumPy or 0-d tensor integer) as its index;
        an :class:`ExplainError` naming ``what`` it was given as and the classes otherwise."""
        if not isinstance(value, (str, bool)):  # a bool stays one, which class_index refuses (True would read as 1)
            with contextlib.suppress(TypeError):
                value = operator.index(value)  # NumPy and 0-d tensor integers too
        index = class_index(value, self.class_names) if isinstance(value, (int, str)) else None
        if index is not None:
            return index
        raise ExplainError(f"{what} {value!r}: not a class of this model ({classes_text(self.class_names)})")


