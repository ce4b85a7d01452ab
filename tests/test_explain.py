"""Explainer, paths and saliency: known answers on a hand-built CAE, path geometry, batching, black boxes."""

from __future__ import annotations

import itertools
import json
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from caex.classifier import Classifier, TorchClassifier, build_classifier_network
from caex.errors import CaexError, ModelError
from caex.explain import Explainer, ExplainerAttributor, ExplainError, Explanation
from caex.explain.attribution import normalise_maps
from caex.explain.paths import CodeGraph, guided_paths, resample_polylines, straight_paths
from caex.explain.targets import other_classes_by_distance, other_classes_by_probability
from caex.explain.saliency import contrast_saliency, end_steps, flip_steps, gaussian_smooth, weighted_saliency
from caex.model import CAE, CAEConfig

SIZE = 16
#: Float noise between batch compositions: with several paths per image the shared reconstruction is decoded in
#: a batch of its own, and a fresh CAE's frames differ so little that the normalised maps show it (~4e-6).
NOISE = 2e-5
LESION = (slice(4, 8), slice(4, 8))        # the region the classifier reads
DISTRACTOR = (slice(10, 14), slice(9, 13))  # changes along the path, ignored by the classifier


def region_mask(region: tuple[slice, slice]) -> torch.Tensor:
    mask = torch.zeros(SIZE, SIZE)
    mask[region] = 1.0
    return mask


class PaintingCAE(nn.Module):
    """A CAE stand-in with a known answer: code[0] paints the lesion, code[1] the distractor.

    The distractor only appears once code[1] passes 0.6, i.e. after a path along
    the diagonal from (0, 0) has already flipped the lesion classifier (at code[0] > 0.5).
    """

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(channels=1, image_size=SIZE, code_dim=2)
        self.class_names = ["healthy", "lesion"]
        self.register_buffer("lesion", region_mask(LESION))
        self.register_buffer("distractor", region_mask(DISTRACTOR))
        diagonal = torch.linspace(0, 1, 41)
        self.train_codes = torch.stack([diagonal, diagonal], dim=1)  # a connected chain of codes
        self.train_labels = (diagonal > 0.5).long()
        self.centroids = torch.stack([self.train_codes[self.train_labels == k].mean(0) for k in (0, 1)])

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lesion = (images[:, 0] * self.lesion).sum((1, 2)) / self.lesion.sum()
        distractor = (images[:, 0] * self.distractor).sum((1, 2)) / self.distractor.sum()
        individual = images * (1 - self.lesion - self.distractor)
        return torch.stack([lesion, distractor], dim=1), individual

    def decode(self, codes: torch.Tensor, individual: torch.Tensor) -> torch.Tensor:
        distractor = ((codes[:, 1] - 0.6) / 0.4).clamp(0, 1)
        return (individual + codes[:, 0, None, None, None] * self.lesion
                + distractor[:, None, None, None] * self.distractor)


class LesionBlackBox(Classifier):
    """A probabilities-only classifier computed in NumPy (like ONNX): p(lesion) = sigmoid(40 (mean - 0.5))."""

    def __init__(self) -> None:
        super().__init__(["healthy", "lesion"], SIZE, 1)
        self.calls_with_grad = 0
        self.images_seen = 0

    def _logits_batch(self, images: torch.Tensor) -> torch.Tensor:
        self.calls_with_grad += int(torch.is_grad_enabled())
        self.images_seen += len(images)
        pixels = images.numpy()[:, 0, LESION[0], LESION[1]]
        score = 40.0 * (pixels.mean(axis=(1, 2)) - 0.5)
        return torch.from_numpy(np.stack([np.zeros_like(score), score], axis=1))


def healthy_images(count: int, seed: int = 0) -> torch.Tensor:
    """Noise backgrounds with an empty lesion and an empty distractor (codes = (0, 0))."""
    generator = torch.Generator().manual_seed(seed)
    images = 0.3 * torch.rand(count, 1, SIZE, SIZE, generator=generator)
    return images * (1 - region_mask(LESION) - region_mask(DISTRACTOR))


@pytest.fixture
def painted() -> Explainer:
    return Explainer(PaintingCAE(), LesionBlackBox(), batch_size=7, knn=3, smoothing=0.0)  # pixel-exact answer


def mass_in(maps: torch.Tensor, region: tuple[slice, slice]) -> torch.Tensor:
    return (maps * region_mask(region)).sum((1, 2)) / maps.sum((1, 2))


# -- saliency: known answers -----------------------------------------------------------------
def test_weighted_saliency_finds_the_lesion_and_ignores_the_distractor(painted: Explainer) -> None:
    explanation = painted.explain(healthy_images(3), path="centroid", steps=16)
    assert explanation.target.tolist() == [1, 1, 1] and explanation.prediction.tolist() == [0, 0, 0]
    assert explanation.saliency.shape == (3, SIZE, SIZE)
    assert explanation.saliency.min() >= 0 and torch.allclose(explanation.saliency.amax((1, 2)), torch.ones(3))
    assert torch.all(mass_in(explanation.saliency, LESION) > 0.999)
    # The flip comes where the lesion code passes 0.5 on the path to the class-1 centroid.
    codes_at_flip = explanation.codes[torch.arange(3), explanation.flip_step, 0]
    codes_before = explanation.codes[torch.arange(3), explanation.flip_step - 1, 0]
    assert torch.all(codes_at_flip > 0.5) and torch.all(codes_before <= 0.5)


def test_contrast_map_credits_the_distractor_that_weighting_discounts(painted: Explainer) -> None:
    images = healthy_images(2)
    contrast = painted.explain(images, path="centroid", stop_at_flip=False, saliency="contrast")
    weighted = painted.explain(images, path="centroid", stop_at_flip=False)
    assert torch.all(mass_in(contrast.saliency, DISTRACTOR) > 0.2)
    assert torch.all(mass_in(weighted.saliency, LESION) > mass_in(contrast.saliency, LESION) + 0.2)
    assert torch.equal(weighted.end_step, torch.full((2,), 15))


def test_frames_are_compared_with_the_reconstruction_not_the_input(painted: Explainer) -> None:
    images = healthy_images(2)
    images[:, :, 0, 0] = 0.9  # something the stand-in CAE cannot reconstruct...
    painted.cae.decode = lambda codes, individual: PaintingCAE.decode(painted.cae, codes, individual * 0.5)
    explanation = painted.explain(images, path="centroid")
    assert torch.allclose(explanation.reconstruction, explanation.frames[:, 0])
    assert not torch.allclose(explanation.reconstruction, images)
    assert explanation.saliency[:, 0, 0].max() == 0  # ...so its error does not leak into the map


def test_flip_steps_and_end_steps_on_constructed_probabilities() -> None:
    p = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])     # flips at step 2
    never = torch.tensor([[0.9, 0.1]] * 4)
    at_start = torch.tensor([[0.1, 0.9]] * 4)
    probs = torch.stack([p, never, at_start])
    flips = flip_steps(probs, torch.tensor([1, 1, 1]))
    assert flips.tolist() == [2, -1, 0]
    assert flip_steps(probs, torch.tensor([0, 0, 0])).tolist() == [0, 0, -1]
    assert end_steps(flips, 4, stop_at_flip=True).tolist() == [2, 3, 3]
    assert end_steps(flips, 4, stop_at_flip=False).tolist() == [3, 3, 3]


def test_other_classes_are_ranked_by_probability_without_the_excluded_one() -> None:
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.5, 0.25, 0.25]])
    ranked = other_classes_by_probability(probs, torch.tensor([1, 2, 0]))
    assert ranked.tolist() == [[2, 0], [0, 1], [1, 2]]  # ties keep class order
    scores = torch.tensor([[-5.0, -2.0, -9.0]])  # any scores: the excluded class never comes back, however low
    assert other_classes_by_probability(scores, torch.tensor([1])).tolist() == [[0, 2]]


def test_other_classes_are_ranked_by_centroid_distance_without_the_excluded_one() -> None:
    centroids = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 3.0], [float("nan"), float("nan")]])
    codes = torch.tensor([[0.0, 0.5], [9.0, 0.0], [0.0, 2.0]])
    ranked = other_classes_by_distance(codes, centroids, torch.tensor([0, 1, 2]))
    # the excluded class is left out even when it is the nearest; the class without codes (NaN) comes last
    assert ranked.tolist() == [[2, 1, 3], [0, 2, 3], [0, 1, 3]]


def test_weighted_saliency_uses_only_steps_up_to_the_end() -> None:
    frames = torch.zeros(1, 4, 1, 2, 2)
    frames[0, 1:, 0, 0, 0] = 1.0   # pixel (0,0) changes at step 1
    frames[0, 3:, 0, 1, 1] = 1.0   # pixel (1,1) changes at step 3
    target_probs = torch.tensor([[0.0, 0.5, 0.6, 1.0]])
    early = weighted_saliency(frames, target_probs, torch.tensor([2]))
    late = weighted_saliency(frames, target_probs, torch.tensor([3]))
    assert early[0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert torch.allclose(late[0], torch.tensor([[1.0, 0.0], [0.0, 0.8]]))  # 0.4 / 0.5
    assert contrast_saliency(frames, target_probs, torch.tensor([3]))[0].tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_saliency_takes_absolute_changes_and_averages_channels() -> None:
    """A step that lowers p_t or darkens a pixel still counts; a change in one of two channels counts half,
    and channels changing in opposite directions do not cancel."""
    frames = torch.zeros(1, 4, 2, 2, 3)
    frames[0, 1:, :, 0, 0] = 1.0                      # (0,0): both channels brighten at step 1
    frames[0, 2:, 0, 0, 1] = -1.0                     # (0,1): one channel darkens at step 2
    frames[0, 2:, :, 0, 2] = torch.tensor([-1.0, 1.0])  # (0,2): one darkens, one brightens at step 2
    frames[0, 3:, :, 1, 0] = 1.0                      # (1,0): both channels at step 3
    target_probs = torch.tensor([[0.0, 0.6, 0.4, 1.0]])  # the middle step lowers p_t by 0.2
    weighted = weighted_saliency(frames, target_probs, torch.tensor([3]))
    torch.testing.assert_close(weighted[0], torch.tensor([[1.0, 0.1 / 0.6, 0.2 / 0.6], [1.0, 0.0, 0.0]]))
    contrast = contrast_saliency(frames, target_probs, torch.tensor([3]))
    torch.testing.assert_close(contrast[0], torch.tensor([[1.0, 0.5, 1.0], [1.0, 0.0, 0.0]]))


def test_gaussian_smoothing_spreads_a_point_and_stays_normalised() -> None:
    point = torch.zeros(1, 9, 9)
    point[0, 4, 4] = 1.0
    smooth = gaussian_smooth(point, sigma=1.0)
    assert smooth[0, 4, 4] == 1.0 and 0 < smooth[0, 4, 5] < 1 and smooth[0, 0, 0] < smooth[0, 4, 6]
    # a separable Gaussian of sigma 1 relative to its peak; (0, 0) lies beyond the radius 3 and stays 0
    offsets = torch.tensor([[0, 1], [0, 2], [1, 1], [0, 3], [3, 3]])
    expected = torch.exp(-0.5 * (offsets**2).sum(dim=1).float())
    torch.testing.assert_close(smooth[0, 4 + offsets[:, 0], 4 + offsets[:, 1]], expected)
    assert torch.equal(gaussian_smooth(point, 0.0), point)


def test_gaussian_smoothing_pads_by_repeating_the_edge() -> None:
    """A corner point keeps the mass that zero padding would lose off the image: compared with NumPy's edge pad."""
    corner = torch.zeros(1, 7, 7)
    corner[0, 0, 0] = 1.0
    radius = 3  # ceil(3 sigma)
    kernel = np.exp(-0.5 * np.arange(-radius, radius + 1) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(corner[0].numpy().astype(np.float64), radius, mode="edge")
    rows = np.stack([np.convolve(row, kernel, mode="valid") for row in padded])
    blurred = np.stack([np.convolve(column, kernel, mode="valid") for column in rows.T]).T
    expected = (blurred - blurred.min()) / (blurred.max() - blurred.min())
    np.testing.assert_allclose(gaussian_smooth(corner, sigma=1.0)[0].numpy(), expected, atol=1e-6)


# -- paths ---------------------------------------------------------------------------------------
def test_straight_paths_are_exact_at_both_ends() -> None:
    start, end = torch.randn(3, 8, generator=torch.Generator().manual_seed(1)), torch.randn(3, 8)
    path = straight_paths(start, end, 7)
    assert path.shape == (3, 7, 8)
    assert torch.equal(path[:, 0], start) and torch.equal(path[:, -1], end)
    assert torch.allclose(path[:, 3], (start + end) / 2, atol=1e-6)


def test_resampling_is_even_in_arc_length_across_ragged_polylines() -> None:
    corner = torch.tensor([[0.0, 0.0], [3.0, 0.0], [3.0, 1.0]])   # length 4
    line = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    points = resample_polylines([corner, line], steps=5)
    expected_corner = torch.tensor([[0, 0], [1, 0], [2, 0], [3, 0], [3, 1]], dtype=torch.float32)
    assert torch.allclose(points[0], expected_corner, atol=1e-6)
    assert torch.allclose(points[1], torch.tensor([[0.0, 0.0], [0, 0.5], [0, 1], [0, 1.5], [0, 2]]), atol=1e-6)
    assert torch.equal(resample_polylines([corner[:1]], 3), corner[:1].expand(1, 3, 2))


def u_shaped_codes(count: int = 150, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes along a U in 8-D (left arm class 0, right arm class 1, joined at the bottom).

    The straight line between the arm tips crosses empty code space; the data
    only connect the classes through the bottom of the U.
    """
    generator = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 3, count)
    x = torch.where(t < 1, 0.0, torch.where(t < 2, t - 1, 1.0))
    y = torch.where(t < 1, 1 - t, torch.where(t < 2, 0.0, t - 2))
    codes = 0.005 * torch.randn(count, 8, generator=generator)
    codes[:, 0] += x
    codes[:, 1] += y
    return codes, (t > 1.5).long()


def test_guided_path_follows_graph_edges_and_ends_on_a_target_code() -> None:
    bank, labels = u_shaped_codes()
    graph = CodeGraph(bank, labels, k=6)
    exemplars = bank[:5] + 0.001                                  # near the tip of the class-0 arm
    target = torch.ones(5, dtype=torch.long)
    guided = guided_paths(graph, exemplars, target, steps=12)
    adjacency = graph.graph.toarray() > 0
    for b, route in enumerate(guided.nodes):
        assert labels[route[-1]] == 1 and all(labels[node] == 0 for node in route[:-1])
        assert bank[route[-1], 1] < 0.05                          # it went round the U, not across
        assert all(adjacency[a, c] for a, c in itertools.pairwise(route))
        assert torch.equal(guided.codes[b, 0], exemplars[b]) and torch.equal(guided.codes[b, -1], bank[route[-1]])
        polyline = torch.cat([exemplars[b:b + 1], bank[route]])
        length = (polyline[1:] - polyline[:-1]).norm(dim=1).sum()
        spacing = (guided.codes[b, 1:] - guided.codes[b, :-1]).norm(dim=1)
        assert torch.all(spacing <= length / 11 + 1e-5)          # even steps along the polyline...
        assert spacing.sum() <= length + 1e-5                     # ...never overshooting it
        assert torch.all(spacing > 0.5 * length / 11)            # ...and always moving forward


def test_disconnected_classes_are_joined_at_their_closest_pair_of_codes() -> None:
    """Two clusters far apart: the 2-NN graph alone has no route between them."""
    bank = torch.cat([torch.zeros(5, 2), torch.full((5, 2), 10.0)]) + torch.arange(10.0)[:, None] * 0.01
    labels = torch.tensor([0] * 5 + [1] * 5)
    graph = CodeGraph(bank, labels, k=2)
    adjacency = graph.graph.toarray() > 0
    across = np.argwhere(adjacency[:5, 5:])
    assert across.tolist() == [[4, 0]] and adjacency[5, 4]      # one bridge, 4 <-> 5, both directions
    assert graph.graph[4, 5] == pytest.approx(float((bank[4] - bank[5]).norm()))
    guided = guided_paths(graph, torch.zeros(1, 2), torch.tensor([1]), steps=4)
    assert guided.nodes[0][-2:] == [4, 5] and all(node < 5 for node in guided.nodes[0][:-1])
    assert torch.equal(guided.codes[0, -1], bank[5])


def test_every_pair_of_pieces_gets_one_bridge() -> None:
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]).repeat_interleave(4, dim=0)
    graph = CodeGraph(centres + torch.rand(12, 2, generator=torch.Generator().manual_seed(0)),
                      torch.arange(3).repeat_interleave(4), k=2)
    cluster = torch.arange(12) // 4
    rows, cols = graph.graph.nonzero()
    assert sorted({(int(cluster[a]), int(cluster[b])) for a, b in zip(rows, cols) if cluster[a] < cluster[b]}) == [
        (0, 1), (0, 2), (1, 2)]
    assert sum(int(cluster[a] != cluster[b]) for a, b in zip(rows, cols)) == 6  # 3 bridges, both directions


def test_a_target_class_without_stored_codes_is_an_error() -> None:
    graph = CodeGraph(torch.rand(6, 2), torch.zeros(6, dtype=torch.long), k=2)
    with pytest.raises(ValueError, match=r"no stored code of target class\(es\) \[1\]"):
        guided_paths(graph, torch.zeros(1, 2), torch.tensor([1]), steps=4)


def test_every_path_type_starts_at_the_exemplar_and_ends_at_its_end_code(painted: Explainer) -> None:
    images, cae = healthy_images(3), painted.cae
    start = cae.encode(images)[0]
    reference = healthy_images(1, seed=5)
    reference[:, :, LESION[0], LESION[1]] = 1.0
    ends = {
        "centroid": cae.centroids[1].expand(3, -1),
        "nearest": cae.train_codes[cae.train_labels == 1][0].expand(3, -1),  # the chain's first class-1 code
        "reference": cae.encode(reference)[0].expand(3, -1),
    }
    for path, end in ends.items():
        explanation = painted.explain(images, path=path, reference=reference if path == "reference" else None)
        assert torch.equal(explanation.codes[:, 0], start) and torch.equal(explanation.codes[:, -1], end), path
        assert explanation.target.tolist() == [1, 1, 1]
    guided = painted.explain(images, path="guided")
    assert torch.equal(guided.codes[:, 0], start)
    for b, route in enumerate(guided.path_nodes):
        assert torch.equal(guided.codes[b, -1], cae.train_codes[route[-1]]) and cae.train_labels[route[-1]] == 1


# -- the Explainer on a real (tiny, untrained) CAE ----------------------------------------------
@pytest.fixture(scope="module")
def tiny() -> tuple[Explainer, torch.Tensor]:
    torch.manual_seed(0)
    names = ["a", "b", "c"]
    cae = CAE(CAEConfig.preset("tiny", image_size=SIZE, channels=1, num_classes=3), names)
    images = torch.rand(45, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    # An untrained encoder maps everything to nearly one code; spread stored codes keep graph
    # distances free of near-ties, so paths do not hinge on float noise.
    codes = cae.class_codes(images)
    spread = codes.mean(0) + codes.std() * torch.randn(45, 8, generator=torch.Generator().manual_seed(3))
    cae.set_train_codes(spread, torch.arange(45) % 3)
    net = build_classifier_network("smallcnn", channels=1, num_classes=3, image_size=SIZE)
    with torch.no_grad():
        net.head.weight.mul_(100.0)  # confident outputs, so probabilities really change along a path
    classifier = TorchClassifier(net, names, SIZE, 1, batch_size=16)
    return Explainer(cae, classifier, batch_size=16, knn=4), images


def test_a_class_without_stored_codes_is_left_out_of_default_targets_not_the_whole_batch(
        tiny: tuple[Explainer, torch.Tensor]) -> None:
    """A data set with an empty class (a name no image had) refused every default explanation: "no stored
    training codes of class(es) c", whichever class the paths would have headed for."""
    explainer, images = tiny
    cae = explainer.cae
    codes, labels = cae.train_codes.clone(), cae.train_labels.clone()
    try:
        cae.set_train_codes(codes[labels < 2], labels[labels < 2])  # class c: no image, no code, no centroid
        gapped = Explainer(cae, explainer.classifier, batch_size=16, knn=4)
        for by in ("probability", "code"):
            with pytest.warns(UserWarning, match=r"^the CAE stored no training codes of class\(es\) c \(its "):
                one = gapped.explain(images[:6], path="centroid", steps=3, target_by=by)
            assert 2 not in one.target.tolist() and (one.target != one.prediction).all()
            with pytest.warns(UserWarning, match="no default path heads there"):
                every = gapped.explain(images[:6], path="centroid", steps=3, all_targets=True, target_by=by)
            assert len(every) == 1 and torch.equal(every[0].target, one.target)
            with pytest.warns(UserWarning, match="no default path heads there"):
                maps = gapped.saliency(images[:6], path="centroid", steps=2, leaving=torch.zeros(6, dtype=torch.long),
                                       all_targets=True, target_by=by)
            assert maps.shape == (6, 1, SIZE, SIZE)  # leaving a: b alone is reachable
            expected = gapped.saliency(images[:6], target=1, path="centroid", steps=2)
            torch.testing.assert_close(maps[:, 0], expected)
        with pytest.raises(ExplainError, match=r"^path 'centroid': no stored training codes of class\(es\) c$"):
            gapped.explain(images[:2], target="c", path="centroid", steps=3)  # asked for by name: still refused
        # evaluate's "all": an image of class c has two classes to head for, the others one; in one call its
        # maps were cut to one class, so they depended on the batch it came in
        attributor = ExplainerAttributor(gapped.classifier, gapped, path="centroid", steps=2, counter_by="all")
        explained = torch.tensor([0, 2, 1, 2])
        with pytest.warns(UserWarning, match="no default path heads there"):
            together = attributor.saliency(images[:4], explained)
            alone = torch.cat([attributor.saliency(images[i:i + 1], explained[i:i + 1]) for i in range(4)])
        torch.testing.assert_close(together, alone)
        assert gapped.reachable_classes().tolist() == [True, True, False] and gapped.target_count() == 1
        # an image leaving c can head for a and b: alone it got both, beside an image of a or b only one, so its
        # explanations (and the files caex explain --all-targets wrote of it) depended on its batch-mates
        leaving = torch.tensor([2, 0, 1])
        with pytest.warns(UserWarning, match="no default path heads there; an image of it is explained toward its "
                                             r"best 1 other class\(es\), as many as every other image"):
            alone = gapped.saliency(images[:1], path="centroid", steps=2, leaving=leaving[:1], all_targets=True)
        with pytest.warns(UserWarning, match="no default path heads there"):
            together = gapped.saliency(images[:3], path="centroid", steps=2, leaving=leaving, all_targets=True)
        assert alone.shape == (1, 1, SIZE, SIZE) and together.shape == (3, 1, SIZE, SIZE)
        torch.testing.assert_close(alone[0], together[0])
        cae.set_train_codes(codes[labels == 0], labels[labels == 0])  # leaving a, nothing else is reachable
        with pytest.raises(ExplainError, match=r"^path 'centroid': no stored training codes of class\(es\) [bc]$"):
            Explainer(cae, explainer.classifier, batch_size=16, knn=4).saliency(
                images[:2], path="centroid", steps=2, leaving=torch.zeros(2, dtype=torch.long))
    finally:
        cae.set_train_codes(codes, labels)


def test_a_path_toward_the_predicted_class_warns_naming_the_images(tiny: tuple[Explainer, torch.Tensor]) -> None:
    """Its flip step 0 and full-range map read like a result; only the CLI said so before 2026-12-07."""
    from caex.explain import AlreadyAtTargetWarning

    explainer, images = tiny
    prediction = explainer.classifier.predict(images[:4])
    target = prediction.clone()
    target[1] = (prediction[1] + 1) % 3  # image 1 really leaves its class
    with pytest.warns(AlreadyAtTargetWarning, match=r"^image\(s\) 0, 2, 3 already classified as the target class") \
            as caught:
        explanation = explainer.explain(images[:4], target=target, path="centroid", steps=3)
    assert explanation.flip_step.tolist()[0] == 0
    assert caught[0].filename == __file__  # not torch's @no_grad wrapper around explain
    with warnings.catch_warnings():
        warnings.simplefilter("error", AlreadyAtTargetWarning)
        explainer.explain(images[1:2], target=target[1:2], path="centroid", steps=3)  # no warning


def test_explaining_in_batches_holds_the_at_target_warning_in_its_own_thread_only(
        tiny: tuple[Explainer, torch.Tensor]) -> None:
    """explain_files held the warning with warnings.catch_warnings, which is process-wide: threads explaining at
    once left an "ignore AlreadyAtTargetWarning" filter behind for good, and the warning never came again."""
    import threading

    from caex.explain import AlreadyAtTargetWarning
    from caex.explain.explainer import at_target_counted

    explainer, images = tiny
    own = explainer.classifier.predict(images[:1])
    filters = list(warnings.filters)
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with at_target_counted():
            explainer.explain(images[:1], target=own, path="centroid", steps=2)  # no warning here
            inside.set()
            leave.wait(30)

    holder = threading.Thread(target=hold)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        holder.start()
        assert inside.wait(30)
        explainer.explain(images[:1], target=own, path="centroid", steps=2)  # another thread: still warned
        leave.set()
        holder.join()
    assert [warning.category for warning in caught] == [AlreadyAtTargetWarning]
    assert warnings.filters == filters


def test_a_bare_module_or_swapped_arguments_say_what_to_pass(tiny: tuple[Explainer, torch.Tensor]) -> None:
    """Each was an AttributeError ('ClassifierNet' object has no attribute 'num_classes')."""
    from caex.errors import ClassifierError
    from caex.explain import make_attributor

    explainer, _ = tiny
    net = explainer.classifier.module
    wrap = r"wrap it as caex.classifier.TorchClassifier\(module, class_names, image_size, channels\)"
    with pytest.raises(ClassifierError, match=f"got the torch module ClassifierNet; {wrap}"):
        Explainer(explainer.cae, net)
    with pytest.raises(ClassifierError, match=f"got the torch module CAE; {wrap}"):
        Explainer(explainer.classifier, explainer.cae)
    with pytest.raises(ClassifierError, match=f"got the torch module ClassifierNet; {wrap}"):
        make_attributor("gradcam", net)


def test_a_notebooks_natural_arguments_work_or_are_named(tiny: tuple[Explainer, torch.Tensor], tmp_path) -> None:
    """A run folder for the CAE, an option's typo and target=None each ended in a raw AttributeError,
    TypeError or 'expected one class index per image [4], got object (4,)'."""
    from caex.explain import make_attributor
    from caex.explain.attribution import AttributionError

    explainer, images = tiny
    explainer.cae.save(tmp_path / "run")
    from_folder = Explainer(str(tmp_path / "run"), explainer.classifier, device="cpu")
    torch.testing.assert_close(from_folder.saliency(images[:2], target=1, path="centroid", steps=3),
                               explainer.saliency(images[:2], target=1, path="centroid", steps=3))
    with pytest.raises(AttributionError, match=r"^lime takes no option 'nsamples' \(it takes .*n_samples"):
        make_attributor("lime", explainer.classifier, nsamples=3)
    with pytest.raises(AttributionError, match=r"target=None; give the class to explain"):
        make_attributor("random", explainer.classifier).attribute(images[:2], target=None)


@pytest.mark.parametrize("steps", [1, 1001, 2.5, "4", True])
def test_path_lengths_must_be_whole_numbers_from_2_to_1000(tiny: tuple[Explainer, torch.Tensor], steps) -> None:
    """2.5 and "4" were raw TypeErrors from linspace and a comparison."""
    explainer, images = tiny
    with pytest.raises(CaexError, match=rf"^steps={steps!r}: a path needs 2 to 1000 steps \(a whole number\)$"):
        explainer.saliency(images[:1], path="centroid", steps=steps)


@pytest.mark.parametrize("option, value, least", [("batch_size", 0, 1), ("knn", 0, 1), ("candidates", -3, 0),
                                                   ("max_graph_nodes", 0, 1), ("knn", 2.0, 1)])
def test_explainer_settings_are_checked(tiny: tuple[Explainer, torch.Tensor], option, value, least) -> None:
    """batch_size=0 was range()'s 'arg 3 must not be zero'; knn=0 a misleading 'no stored code' error."""
    explainer, _ = tiny
    with pytest.raises(CaexError, match=rf"^{option}={value!r}: must be a whole number, at least {least}$"):
        Explainer(explainer.cae, explainer.classifier, **{option: value})


def test_explanation_repr_is_one_line_and_save_writes_what_the_cli_writes(tiny: tuple[Explainer, torch.Tensor],
                                                                          tmp_path) -> None:
    explainer, images = tiny
    explanation = explainer.explain(images[:2], path="centroid", steps=3)
    flipped = int((explanation.flip_step >= 0).sum())
    assert repr(explanation) == (f"Explanation(2 image(s), path='centroid', 3 steps, saliency='weighted', "
                                 f"flipped: {flipped} of 2)")
    summaries = explanation.save(images[:2], tmp_path / "out", stems=["left", "right"])
    assert [summary["target"]["index"] for summary in summaries] == explanation.target.tolist()
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(
        f"{stem}{suffix}" for stem in ("left", "right")
        for suffix in ("_saliency.png", "_saliency.npy", "_path.png", "_path.gif", ".json"))
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "right_saliency.npy"), explanation.saliency[1].numpy())
    with pytest.raises(CaexError, match="save: 1 images and 2 stems for 2 explanations"):
        explanation.save(images[:1], tmp_path / "x")
    # Overlays on 0..255 or uint8 images were saturated white, a repeated stem overwrote the first image's files
    for wrong, message in ((images[:2] * 255, r"save: images: values span \[.*\]; expected the data range"),
                           ((images[:2] * 255).to(torch.uint8), r"save: images: expected float pixels in \[0, 1\]")):
        with pytest.raises(CaexError, match=message):
            explanation.save(wrong, tmp_path / "x")
    with pytest.raises(CaexError, match=r"^save: stems 'a' are given more than once$"):
        explanation.save(images[:2], tmp_path / "x", stems=["a", "a"])
    assert not (tmp_path / "x").exists()
    explanation.save(images[:2].numpy(), tmp_path / "array")  # as explain takes them
    assert (tmp_path / "array" / "image1.json").is_file()
    list_of_two = explainer.explain([images[0], images[1]], path="centroid", steps=3)  # was a ValueError
    torch.testing.assert_close(list_of_two.saliency, explanation.saliency)


def test_a_path_that_flips_is_saved_with_its_flip_step_and_its_pictures_end_there(painted: Explainer,
                                                                                   tmp_path) -> None:
    """The saved flip step was checked only on paths that never flip. The lesion code passes 0.5, and the
    classifier flips, at step 10 of 16 on the straight path to the lesion centroid (0.7625 * 10 / 15 = 0.508)."""
    images = healthy_images(1)
    summary, = painted.explain(images, path="centroid", steps=16).save(images, tmp_path / "stop")
    assert (summary["flip_step"], summary["flipped"], summary["end_step"]) == (10, True, 10)
    assert json.loads((tmp_path / "stop" / "image0.json").read_text()) == summary
    with Image.open(tmp_path / "stop" / "image0_path.gif") as gif:
        assert gif.n_frames == 11  # x0 to x10, the flip
    whole, = painted.explain(images, path="centroid", steps=16, stop_at_flip=False).save(images, tmp_path / "whole")
    assert (whole["flip_step"], whole["flipped"], whole["end_step"]) == (10, True, 15)
    with Image.open(tmp_path / "stop" / "image0_path.png") as stop, \
            Image.open(tmp_path / "whole" / "image0_path.png") as full:
        assert stop.width * 16 == full.width * 11  # the strip too: 11 of the 16 frames


def test_dir_of_caex_lists_its_lazy_exports() -> None:
    import caex

    assert {"Explainer", "CAE", "evaluate", "load_dataset", "__version__"} <= set(dir(caex))


@pytest.mark.parametrize("path", ["guided", "nearest"])
def test_saliency_in_chunks_of_images_equals_one_pass(tiny: tuple[Explainer, torch.Tensor], path: str) -> None:
    """saliency() held every frame of every image at once (9.6 GB for 1,000 RGB 224 px images at 16 steps); a
    batch_size of 4 at 4 steps now reduces one image's frames to maps before decoding the next."""
    explainer, images = tiny
    chunked = Explainer(explainer.cae, explainer.classifier, batch_size=4, knn=4)
    for request in ({"all_targets": True}, {"leaving": torch.arange(7) % 3, "target_by": "code"}):
        expected = explainer.saliency(images[:7], path=path, steps=4, **request)
        torch.testing.assert_close(chunked.saliency(images[:7], path=path, steps=4, **request), expected,
                                   atol=1e-5, rtol=1e-4)


def test_explanation_fields_have_the_documented_shapes(tiny: tuple[Explainer, torch.Tensor]) -> None:
    explainer, images = tiny
    explanation = explainer.explain(images[:5], steps=6)
    assert isinstance(explanation, Explanation) and len(explanation) == 5
    shapes = {"saliency": (5, SIZE, SIZE), "frames": (5, 6, 1, SIZE, SIZE), "target_probs": (5, 6),
              "probs": (5, 6, 3), "flip_step": (5,), "target": (5,), "prediction": (5,), "codes": (5, 6, 8),
              "reconstruction": (5, 1, SIZE, SIZE)}
    for name, shape in shapes.items():
        assert tuple(getattr(explanation, name).shape) == shape, name
    assert torch.all(explanation.target != explanation.prediction)
    assert torch.allclose(explanation.probs.sum(-1), torch.ones(5, 6), atol=1e-5)
    assert not explanation.frames.requires_grad and not explanation.saliency.requires_grad


def test_batched_results_equal_one_by_one(tiny: tuple[Explainer, torch.Tensor]) -> None:
    explainer, images = tiny
    batch = explainer.explain(images[:4], steps=5)
    for i in range(4):
        single = explainer.explain(images[i:i + 1], steps=5)
        assert single.path_nodes == batch.path_nodes[i:i + 1]
        for name in ("codes", "frames", "probs", "flip_step", "target"):
            assert torch.allclose(getattr(single, name), getattr(batch, name)[i:i + 1], atol=1e-5), name
        # An untrained decoder changes frames by ~1e-3 per step, so float noise of 1e-6 between
        # batch sizes becomes ~1e-3 after the per-image normalisation.
        assert torch.allclose(single.saliency, batch.saliency[i:i + 1], atol=1e-2)


def test_all_targets_gives_one_explanation_per_other_class(tiny: tuple[Explainer, torch.Tensor]) -> None:
    explainer, images = tiny
    default = explainer.explain(images[:3], path="centroid", steps=4)
    every = explainer.explain(images[:3], path="centroid", steps=4, all_targets=True)
    assert isinstance(every, list) and len(every) == 2
    assert torch.equal(every[0].target, default.target) and torch.allclose(every[0].saliency, default.saliency,
                                                                            atol=NOISE)
    targets = torch.stack([e.target for e in every])
    assert torch.all(targets != default.prediction) and torch.all(targets[0] != targets[1])


@pytest.mark.filterwarnings("ignore::caex.explain.AlreadyAtTargetWarning")  # any class, own included
def test_several_targets_per_image_share_one_encoding(tiny: tuple[Explainer, torch.Tensor], monkeypatch) -> None:
    """A ``[B, M]`` target: M paths per image from one encoder pass, each equal to asking for that target alone."""
    explainer, images = tiny
    targets = torch.tensor([[1, 2], [0, 2], [0, 1]])
    alone = [explainer.saliency(images[:3], target=targets[:, j], path="centroid", steps=4) for j in range(2)]
    encoded = []
    encode = explainer.cae.encode
    monkeypatch.setattr(explainer.cae, "encode", lambda batch: encoded.append(len(batch)) or encode(batch))
    maps = explainer.saliency(images[:3], target=targets, path="centroid", steps=4)
    assert encoded == [3] and maps.shape == (3, 2, SIZE, SIZE)
    assert all(torch.allclose(maps[:, j], alone[j], atol=NOISE) for j in range(2))
    every = explainer.explain(images[:3], target=targets.numpy(), path="centroid", steps=4)
    assert [e.target.tolist() for e in every] == targets.T.tolist()
    assert all(torch.allclose(every[j].saliency, alone[j], atol=NOISE) for j in range(2))
    ranked = explainer.saliency(images[:3], path="centroid", steps=4, all_targets=True)
    by_explain = explainer.explain(images[:3], path="centroid", steps=4, all_targets=True)
    assert torch.allclose(ranked, torch.stack([e.saliency for e in by_explain], dim=1), atol=1e-6)
    with pytest.raises(CaexError, match=r"target of shape \(2, 2\) for 3 images: expected one class per image"):
        explainer.saliency(images[:3], target=targets[:2])
    with pytest.raises(CaexError, match="target 5: not a class of this model"):
        explainer.saliency(images[:3], target=torch.tensor([[1, 5], [0, 2], [0, 1]]))


@pytest.mark.filterwarnings("ignore::caex.explain.AlreadyAtTargetWarning")  # any class, own included
def test_several_paths_per_image_decode_its_reconstruction_once(tiny: tuple[Explainer, torch.Tensor],
                                                               monkeypatch) -> None:
    """Every path starts at the image's own code: 3 images x 2 two-step paths decode 3 + 6 frames, not 12, and the
    first frame of each path is that image's reconstruction."""
    explainer, images = tiny
    decoded = []
    decode = explainer.cae.decode
    monkeypatch.setattr(explainer.cae, "decode", lambda c, s: decoded.append(len(c)) or decode(c, s))
    every = explainer.explain(images[:3], target=torch.tensor([[1, 2], [0, 2], [0, 1]]), path="centroid", steps=2)
    assert sum(decoded) == 9
    assert torch.equal(every[0].frames[:, 0], every[1].frames[:, 0])
    reconstruction = explainer.cae.reconstruct(images[:3]).clamp(0, 1)
    assert torch.allclose(every[0].frames[:, 0], reconstruction, atol=1e-5)


def test_targets_by_code_rank_the_other_class_centroids(tiny: tuple[Explainer, torch.Tensor], monkeypatch) -> None:
    """target_by="code": the other class (than the prediction, or than ``leaving``) with the nearest class-code
    centroid, every other class in that order with all_targets; leaving a given class needs no classifier pass."""
    explainer, images = tiny
    distance = torch.cdist(explainer.cae.class_codes(images[:3]), explainer.cae.centroids)
    prediction = explainer.classifier.predict(images[:3])
    by_code = distance.scatter(1, prediction[:, None], float("inf")).argsort(dim=1)[:, :2]
    every = explainer.explain(images[:3], path="centroid", steps=3, all_targets=True, target_by="code")
    assert torch.equal(torch.stack([e.target for e in every], dim=1), by_code)
    single = explainer.explain(images[:3], path="centroid", steps=3, target_by="code")
    assert torch.equal(single.target, by_code[:, 0]) and torch.allclose(single.saliency, every[0].saliency,
                                                                        atol=NOISE)

    seen = []
    predict_proba = explainer.classifier.predict_proba
    monkeypatch.setattr(explainer.classifier, "predict_proba",
                        lambda batch: seen.append(len(batch)) or predict_proba(batch))
    leaving = torch.tensor([0, 1, 2])
    nearest_other = distance.scatter(1, leaving[:, None], float("inf")).argmin(dim=1)
    maps = explainer.saliency(images[:3], path="centroid", steps=2, target_by="code", leaving=leaving)
    assert seen == []
    assert torch.allclose(maps, explainer.saliency(images[:3], target=nearest_other, path="centroid", steps=2))
    explainer.saliency(images[:3], path="centroid", steps=2, target_by="code")
    assert seen == [3]  # leaving the prediction: one classifier pass for it, none for the choice
    with pytest.raises(CaexError, match="target_by='nearest': choose one of code, probability"):
        explainer.explain(images[:2], target_by="nearest")
    with pytest.raises(CaexError, match="leaving= picks the target among the other classes"):
        explainer.saliency(images[:2], target=1, leaving=0)
    with pytest.raises(CaexError, match="leaving 'zebra': not a class of this model"):
        explainer.saliency(images[:2], leaving="zebra", target_by="code")
    with pytest.raises(CaexError, match="3 leaving classes for 2 images"):
        explainer.saliency(images[:2], leaving=[0, 1, 2], target_by="code")
    bare = Explainer(CAE(CAEConfig.preset("tiny", image_size=SIZE, channels=1, num_classes=3), ["a", "b", "c"]),
                     explainer.classifier)
    with pytest.raises(CaexError, match="target_by='code' needs the CAE's stored class centroids"):
        bare.saliency(images[:2], target_by="code", leaving=0, path="centroid", steps=2)


@pytest.mark.filterwarnings("ignore::caex.explain.AlreadyAtTargetWarning")  # any class, own included
def test_targets_by_index_name_and_tensor(tiny: tuple[Explainer, torch.Tensor]) -> None:
    explainer, images = tiny
    assert explainer.explain(images[:2], target="c", path="centroid", steps=3).target.tolist() == [2, 2]
    assert explainer.explain(images[:2], target=1, path="centroid", steps=3).target.tolist() == [1, 1]
    per_image = explainer.explain(images[:2], target=torch.tensor([0, 2]), path="centroid", steps=3)
    assert per_image.target.tolist() == [0, 2]
    with pytest.raises(CaexError, match="target 'zebra': not a class"):
        explainer.explain(images[:2], target="zebra")
    with pytest.raises(CaexError, match="3 target classes for 2 images"):
        explainer.explain(images[:2], target=[0, 1, 2])
    with pytest.raises(CaexError, match="unknown path 'curvy'"):
        explainer.explain(images[:2], path="curvy")
    with pytest.raises(CaexError, match="reference"):
        explainer.explain(images[:2], path="reference")


@pytest.mark.filterwarnings("ignore::caex.explain.AlreadyAtTargetWarning")  # any class, own included
def test_targets_as_numpy_values_and_arrays(tiny: tuple[Explainer, torch.Tensor]) -> None:
    explainer, images = tiny
    for target, expected in ((np.int64(2), [2, 2]), (np.array([0, 2]), [0, 2]), (np.array(1), [1, 1]),
                             ([np.int32(2), "a"], [2, 0]), (torch.tensor(1), [1, 1])):
        assert explainer.saliency(images[:2], target=target, path="centroid", steps=2).shape == (2, SIZE, SIZE)
        assert explainer.explain(images[:2], target=target, path="centroid", steps=3).target.tolist() == expected
    for bad in (np.array([1.5, 0.0]), torch.tensor(1.5), np.float64(1.5)):
        with pytest.raises(CaexError, match="target 1.5: not a class"):
            explainer.explain(images[:2], target=bad)


def test_images_the_cae_was_not_made_for_are_refused(tiny: tuple[Explainer, torch.Tensor]) -> None:
    """Another size would run through the convolutions and give maps of a scale the CAE never saw."""
    explainer, images = tiny
    with pytest.raises(CaexError, match=rf"images: expected \[B, 1, {SIZE}, {SIZE}\] images, "
                                        rf"got shape \(2, 1, 20, 20\)"):
        explainer.explain(torch.rand(2, 1, 20, 20))
    with pytest.raises(CaexError, match=r"images: expected float pixels in \[0, 1\], got torch.uint8 \(divide 8-bit"):
        explainer.saliency((images[:2] * 255).round().to(torch.uint8), target=1, path="centroid", steps=2)
    with pytest.raises(CaexError, match=r"images: values span \[[\d.]+, 25[\d.]*\]; expected the data range \[0, 1\]"):
        explainer.saliency(images[:2] * 255, target=1, path="centroid", steps=2)
    with pytest.raises(CaexError, match="reference: values span"):
        explainer.explain(images[:2], path="reference", reference=images[:1] * 2 - 1)
    explainer.explain(images[:1].clamp(0, 1) * (1 + 1e-6), path="centroid", steps=2)  # round-off is fine


def test_an_empty_batch_and_a_bool_target_are_named(tiny: tuple[Explainer, torch.Tensor]) -> None:
    """An empty batch failed as torch.cat of nothing; True was read as class 1 (the attributors refuse bools)."""
    explainer, images = tiny
    with pytest.raises(CaexError, match=r"images: no images to explain \(shape \(0, 1, 16, 16\)\)"):
        explainer.explain(images[:0])
    with pytest.raises(CaexError, match=r"images: no images"):
        explainer.saliency(images[:0], target=1)
    for bad in (True, torch.tensor([True, False])):
        with pytest.raises(CaexError, match="target True: not a class"):
            explainer.explain(images[:2], target=bad)


@pytest.mark.parametrize(("channels", "size", "message"), [
    (3, SIZE, "3-channel images but the CAE makes 1-channel ones"),
    (1, 32, "32px images but the CAE makes 16px ones"),
])
def test_a_classifier_for_other_images_than_the_cae_makes_is_refused(channels: int, size: int, message: str) -> None:
    classifier = TorchClassifier(build_classifier_network("smallcnn", channels=channels, num_classes=2,
                                                          image_size=size), ["healthy", "lesion"], size, channels)
    with pytest.raises(CaexError, match=f"the classifier takes {message}"):
        Explainer(PaintingCAE(), classifier)


def test_a_black_box_runs_without_gradients(painted: Explainer) -> None:
    assert painted.classifier.module is None
    explanation = painted.explain(healthy_images(4), path="guided", steps=8)
    assert painted.classifier.calls_with_grad == 0
    assert torch.all(explanation.flip_step > 0) and torch.all(mass_in(explanation.saliency, LESION) > 0.99)


def test_guided_ends_are_confirmed_lazily(painted: Explainer) -> None:
    """Every first candidate end flips here, so only one of the 4 candidates per image is decoded."""
    images = healthy_images(4)
    explanation = painted.explain(images, path="guided", steps=8)
    assert painted.candidates == 4 and torch.all(explanation.flip_step > 0)
    assert painted.classifier.images_seen == 4 + 4 + 4 * 8  # inputs, one candidate each, path frames


@pytest.mark.parametrize(("options", "classified_per_image"), [
    ({"path": "centroid", "steps": 2}, 0),   # a two-step straight path: the map cannot depend on probabilities
    ({"path": "nearest", "steps": 2}, 0),
    ({"path": "centroid", "steps": 8, "saliency": "contrast", "stop_at_flip": False}, 0),
    ({"path": "centroid", "steps": 8}, 8),   # weights and the flip step need every frame's probabilities
    ({"path": "guided", "steps": 8}, 1 + 8),  # plus the end check (the first candidate confirms here)
    ({"path": "centroid", "steps": 2, "target": None}, 1),  # the default target needs the input's class
])
def test_saliency_alone_equals_the_explanation_maps_with_only_the_classifier_passes_they_need(
        painted: Explainer, options: dict, classified_per_image: int) -> None:
    images = healthy_images(4)
    options = {"target": 1, **options}
    maps = painted.saliency(images, **options)
    assert painted.classifier.images_seen == 4 * classified_per_image
    assert maps.shape == (4, SIZE, SIZE)
    assert maps.amax(dim=(1, 2)).eq(1).all()  # real maps, not the zeros of a path that changed nothing
    assert torch.allclose(maps, painted.explain(images, **options).saliency, atol=1e-6)


@pytest.mark.parametrize(("candidates", "end_code", "decoded_per_image"), [
    (4, 0.525, 4),  # 0.45, 0.475 and 0.5 stay healthy; the fourth candidate is the first to flip
    (3, 0.5, 3),    # none flips: the end is the candidate with the highest lesion probability
])
def test_guided_ends_at_the_first_candidate_the_classifier_confirms(candidates: int, end_code: float,
                                                                    decoded_per_image: int) -> None:
    cae = PaintingCAE()
    cae.train_labels = (cae.train_codes[:, 0] > 0.44).long()  # codes 0.45..0.5 are labelled lesion but paint too little
    explainer = Explainer(cae, LesionBlackBox(), knn=3, candidates=candidates, smoothing=0.0)
    explanation = explainer.explain(healthy_images(2), path="guided", steps=6)
    assert torch.allclose(explanation.codes[:, -1], torch.full((2, 2), end_code))
    assert explainer.classifier.images_seen == 2 + 2 * decoded_per_image + 2 * 6


@pytest.mark.parametrize("seed", range(6))
def test_a_capped_code_graph_keeps_a_rare_target_class(seed: int) -> None:
    """Two lesion codes of 41, a graph of 10: a plain random subset drops both for some seeds."""
    cae = PaintingCAE()
    cae.train_labels = (cae.train_codes[:, 0] > 0.95).long()
    explainer = Explainer(cae, LesionBlackBox(), knn=3, max_graph_nodes=10, seed=seed, smoothing=0.0)
    with pytest.warns(UserWarning, match=rf"^guided paths run through 10 of the 41 stored training codes \(a seeded "
                                         rf"subset, seed {seed}; in Python Explainer\(max_graph_nodes=\) raises it"):
        explanation = explainer.explain(healthy_images(2), path="guided", steps=4)
    assert explainer._graph.size == 10 and int(explainer._graph.labels.sum()) == 2
    assert all(cae.train_labels[route[-1]] == 1 for route in explanation.path_nodes)
    again = Explainer(cae, LesionBlackBox(), knn=3, max_graph_nodes=10, seed=seed)
    with pytest.warns(UserWarning, match="stored training codes"):
        again._code_graph()
    assert torch.equal(again._graph_rows, explainer._graph_rows)  # seeded


def test_negative_or_non_finite_smoothing_is_refused() -> None:
    for sigma in (-0.5, math.nan, math.inf):
        with pytest.raises(CaexError, match=rf"smoothing={sigma}: must be 0 \(off\)"):
            Explainer(PaintingCAE(), LesionBlackBox(), smoothing=sigma)


def test_a_huge_smoothing_sigma_costs_no_more_than_the_map_size() -> None:
    """sigma 1e9 built a kernel of 6e9 taps (24 GB, then the OOM killer); it now spans at most the map, and a
    point blurred that wide is flat (a flat map normalises to zeros)."""
    point = torch.zeros(1, 9, 9)
    point[0, 4, 4] = 1.0
    assert torch.equal(gaussian_smooth(point, sigma=1e9), torch.zeros(1, 9, 9))
    assert gaussian_smooth(point, sigma=3.0)[0, 4, 8] > 0  # a wide but finite blur still reaches the edge


def test_smoothing_spreads_a_sharp_known_answer_beyond_its_region() -> None:
    """What the default smoothing costs: on a pixel-exact lesion it only moves mass outside the region."""
    images = healthy_images(2)
    sharp = Explainer(PaintingCAE(), LesionBlackBox(), smoothing=0.0).explain(images, path="centroid")
    blurred = Explainer(PaintingCAE(), LesionBlackBox()).explain(images, path="centroid")
    assert torch.all(mass_in(blurred.saliency, LESION) < mass_in(sharp.saliency, LESION) - 0.2)


def test_cae_attributor_explains_leaving_the_given_class(painted: Explainer,
                                                         tiny: tuple[Explainer, torch.Tensor]) -> None:
    """The Attributor contract's target is the class explained; the path runs to another class (by the
    classifier's probabilities here)."""
    images = healthy_images(3)
    maps = ExplainerAttributor(painted.classifier, painted, path="centroid", steps=2).saliency(
        images, torch.zeros(3, dtype=torch.long))
    assert painted.classifier.images_seen == 0  # two classes: the other one needs no classifier pass
    assert torch.allclose(maps, painted.saliency(images, target=1, path="centroid", steps=2))

    explainer, images = tiny
    explained = torch.tensor([0, 1, 2, 0])
    probs = explainer.classifier.predict_proba(images[:4])
    counter = probs.scatter(1, explained[:, None], -1.0).argmax(dim=1)
    attributor = ExplainerAttributor(explainer.classifier, explainer, path="centroid", steps=3,
                                     counter_by="probability")
    maps = attributor.saliency(images[:4], explained)
    assert torch.all(counter != explained)
    assert torch.allclose(maps, explainer.saliency(images[:4], target=counter, path="centroid", steps=3), atol=1e-6)


def test_cae_attributor_can_average_the_maps_toward_every_other_class(tiny: tuple[Explainer, torch.Tensor],
                                                                       monkeypatch) -> None:
    """counter_by="all": the renormalised mean of the K-1 maps toward each other class (no classifier pass for
    2-step straight paths); a fixed counter_class still wins for the images that can leave for it."""
    explainer, images = tiny
    classifier, seen = explainer.classifier, []
    predict_proba = classifier.predict_proba
    monkeypatch.setattr(classifier, "predict_proba", lambda batch: seen.append(len(batch)) or predict_proba(batch))
    explained = torch.tensor([0, 1, 2, 0])
    toward = [explainer.saliency(images[:4], target=other, path="centroid", steps=2) for other in range(3)]
    expected = normalise_maps(sum(torch.where((explained != other)[:, None, None], maps, 0.0)
                                  for other, maps in enumerate(toward)))
    attributor = ExplainerAttributor(classifier, explainer, path="centroid", steps=2, counter_by="all")
    assert attributor.describe() == "2-step centroid paths toward every other class, their maps averaged"
    encoded = []
    encode = explainer.cae.encode
    monkeypatch.setattr(explainer.cae, "encode", lambda batch: encoded.append(len(batch)) or encode(batch))
    assert torch.allclose(attributor.saliency(images[:4], explained), expected, atol=1e-6)
    assert seen == [] and encoded == [4]  # each image encoded once for its K-1 paths
    fixed = ExplainerAttributor(classifier, explainer, path="centroid", steps=2, counter_by="all", counter_class=0)
    maps = fixed.saliency(images[:4], explained)
    assert torch.allclose(maps[1:3], toward[0][1:3]) and torch.allclose(maps[[0, 3]], expected[[0, 3]], atol=1e-6)


def test_cae_attributor_heads_for_a_fixed_counter_class(tiny: tuple[Explainer, torch.Tensor], monkeypatch) -> None:
    """Every image leaves for class 0 (a healthy class, say) except class 0's own, which takes its best other."""
    explainer, images = tiny
    classifier, seen = explainer.classifier, []
    best_other = classifier.predict_proba(images[:4]).scatter(1, torch.tensor([[0], [1], [2], [0]]), -1.0).argmax(1)
    predict_proba = classifier.predict_proba
    monkeypatch.setattr(classifier, "predict_proba", lambda batch: seen.append(len(batch)) or predict_proba(batch))
    attributor = ExplainerAttributor(classifier, explainer, path="centroid", steps=2, counter_class=0,
                                     counter_by="probability")
    maps = attributor.saliency(images[:3], torch.tensor([1, 2, 1]))
    assert seen == []  # nobody is of class 0: no classifier pass
    assert torch.allclose(maps, explainer.saliency(images[:3], target=0, path="centroid", steps=2))
    maps = attributor.saliency(images[:4], torch.tensor([0, 1, 2, 0]))
    assert seen == [2]  # only class 0's own images ask the classifier where to go
    counter = torch.tensor([int(best_other[0]), 0, 0, int(best_other[3])])
    assert torch.allclose(maps, explainer.saliency(images[:4], target=counter, path="centroid", steps=2))
    with pytest.raises(CaexError, match="counter_class=3: not a class index of this classifier"):
        ExplainerAttributor(explainer.classifier, explainer, counter_class=3)


def test_cae_attributor_can_pick_the_counter_class_on_the_code_manifold(tiny: tuple[Explainer, torch.Tensor],
                                                                      monkeypatch) -> None:
    """counter_by="code" (the default): the nearest other class centroid, so a 2-step map never runs the
    classifier."""
    explainer, images = tiny
    classifier, seen = explainer.classifier, []
    predict_proba = classifier.predict_proba
    monkeypatch.setattr(classifier, "predict_proba", lambda batch: seen.append(len(batch)) or predict_proba(batch))
    explained = torch.tensor([0, 1, 2, 0])
    distance = torch.cdist(explainer.cae.class_codes(images[:4]), explainer.cae.centroids)
    nearest_other = distance.scatter(1, explained[:, None], float("inf")).argmin(dim=1)
    attributor = ExplainerAttributor(classifier, explainer, path="centroid", steps=2)
    assert attributor.counter_by == "code"
    assert attributor.describe() == "2-step centroid paths toward the other class with the nearest class-code centroid"
    maps = attributor.saliency(images[:4], explained)
    assert seen == []
    assert torch.allclose(maps, explainer.saliency(images[:4], target=nearest_other, path="centroid", steps=2))
    fixed = ExplainerAttributor(classifier, explainer, path="centroid", steps=2, counter_class=0)
    assert fixed.describe() == ("2-step centroid paths toward class a (the other class with the nearest "
                                "class-code centroid for its own images)")  # its name: "class 0" for --cae-target a
    counter = torch.tensor([int(nearest_other[0]), 0, 0, int(nearest_other[3])])
    assert torch.allclose(fixed.saliency(images[:4], explained),
                          explainer.saliency(images[:4], target=counter, path="centroid", steps=2))
    assert seen == []
    with pytest.raises(CaexError, match="counter_by='nearest': choose from code, probability"):
        ExplainerAttributor(classifier, explainer, counter_by="nearest")
    bare = Explainer(CAE(CAEConfig.preset("tiny", image_size=SIZE, channels=1, num_classes=3), ["a", "b", "c"]),
                     classifier)
    with pytest.raises(CaexError, match="counter_by='code' needs an Explainer whose CAE has stored class centroids"):
        ExplainerAttributor(classifier, bare)
    assert ExplainerAttributor(classifier, bare, counter_by="probability").describe() == (
        "16-step guided paths toward the classifier's most probable other class")


def test_a_run_folder_loads_beside_a_differentiable_classifier_else_on_auto(monkeypatch) -> None:
    """An ONNX classifier runs on the CPU: loading the CAE 'beside' it pinned decoding to the CPU on a GPU
    machine."""
    from caex.model import cae as cae_module

    loaded = []
    monkeypatch.setattr(cae_module.CAE, "load", classmethod(lambda cls, run, device: loaded.append(device)))

    class BlackBox:  # an ONNX classifier's shape: no module
        module, device = None, torch.device("cpu")

    class Differentiable:
        module, device = torch.nn.Identity(), torch.device("meta")

    cae_module.as_cae("run", classifier=BlackBox())
    cae_module.as_cae("run", classifier=Differentiable())
    cae_module.as_cae("run", "cpu", classifier=Differentiable())
    assert loaded == ["auto", torch.device("meta"), "cpu"]


def test_a_run_folder_without_its_codes_is_named(tiny: tuple[Explainer, torch.Tensor], tmp_path) -> None:
    """'this CAE has none (train it, or load a finished run folder)' for a finished run missing one file."""
    explainer, images = tiny
    explainer.cae.save(tmp_path / "run")
    (tmp_path / "run" / "codes.safetensors").unlink()
    bare = Explainer(str(tmp_path / "run"), explainer.classifier, device="cpu")
    with pytest.raises(CaexError, match=rf"needs the CAE's stored training codes; this CAE has none \(its run "
                                        rf"folder {tmp_path / 'run'} has no codes.safetensors\)$"):
        bare.explain(images[:1], path="guided", steps=3)


def test_the_code_graph_follows_codes_stored_after_the_explainer_was_made() -> None:
    """Guided paths kept the first graph after set_train_codes: nodes indexed rows that were gone."""
    cae = PaintingCAE()
    cae.train_labels = (cae.train_codes[:, 0] > 0.5).long()
    explainer = Explainer(cae, LesionBlackBox(), knn=3, smoothing=0.0)
    explainer.explain(healthy_images(2), path="guided", steps=4)
    cae.train_codes, cae.train_labels = cae.train_codes[-10:].clone(), cae.train_labels[-10:].clone()  # as stored
    explanation = explainer.explain(healthy_images(2), path="guided", steps=4)
    assert explainer._graph.size == 10 and max(max(route) for route in explanation.path_nodes) < 10
    fresh = Explainer(cae, LesionBlackBox(), knn=3, smoothing=0.0).explain(healthy_images(2), path="guided", steps=4)
    assert explanation.path_nodes == fresh.path_nodes


@pytest.mark.parametrize(("network", "part", "what"), [("class_encoder", "encoder", "class codes"),
                                                       ("individual_encoder", "encoder", "individual codes"),
                                                       ("decoder", "decoder", "images")])
def test_a_cae_with_nan_weights_is_named_not_the_classifier(tiny: tuple[Explainer, torch.Tensor], network, part,
                                                            what) -> None:
    """A CAE whose weights had turned NaN was reported as "classifier input: holds NaN or infinite pixels"."""
    import copy

    explainer, images = tiny
    broken = copy.deepcopy(explainer.cae)
    with torch.no_grad():
        next(getattr(broken, network).parameters()).fill_(math.nan)
    with pytest.raises(ModelError, match=rf"^the CAE: its {part} gives NaN or infinite {what} for \d+ of \d+ rows "
                                         r"\(are its weights finite\?"):
        Explainer(broken, explainer.classifier, batch_size=16, knn=4).saliency(images[:2], path="centroid", steps=2)
