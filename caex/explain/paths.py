"""Counterfactual paths on the class-code manifold: pure, batched functions on codes.

A path takes an exemplar's class code ``c`` to an end code ``c*`` in the target
class and is sampled at ``T`` codes ``[B, T, D]``; step 0 is exactly ``c`` and
step ``T-1`` exactly ``c*``. Four ways to choose the end (paper §III-E):

* ``reference`` / ``centroid`` / ``nearest``: straight lines to a given image's
  code, the target class centroid, or the nearest stored training code of the
  target class (:func:`straight_paths`).
* ``guided``: the shortest path through a k-nearest-neighbour graph over the
  stored training codes (:class:`CodeGraph`). It follows the data manifold
  instead of cutting through empty code space, which is what makes the local
  explanation "global": every intermediate code is one the CAE has seen. Well
  separated classes leave the kNN graph in pieces; the pieces are joined at
  their closest pair of codes, so the path crosses the gap where it is
  narrowest.

Nothing here decodes or classifies; :class:`caex.explain.Explainer` does that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, dijkstra

from caex.errors import CaexError

#: Codes sampled along a path, both ends included: the default of every explain and evaluate entry point.
DEFAULT_STEPS = 16
#: Longest path asked for: every frame of every path is decoded and kept (1,000 frames of one 64 px image are
#: 16 MB; 100,000 of them were an out-of-memory kill), and beyond a few dozen steps frames barely differ.
MAX_STEPS = 1000


def check_path_length(steps: object, label: str, error: type[CaexError]) -> None:
    """Raise ``error`` unless ``steps`` is a whole number from 2 to :data:`MAX_STEPS`; ``label`` names the value
    (``"steps="``, ``"--steps "``, ``"cae: steps="``). 2.5 and "4" were raw TypeErrors from linspace."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 2 <= steps <= MAX_STEPS:
        raise error(f"{label}{steps!r}: a path needs 2 to {MAX_STEPS} steps (a whole number)")


#: Distances below this are stored as this, because sparse graphs read an explicit 0 as "no edge".
_MIN_EDGE = 1e-12


def straight_paths(start: torch.Tensor, end: torch.Tensor, steps: int) -> torch.Tensor:
    """Evenly spaced codes ``[B, T, D]`` on the segments ``start[b] -> end[b]`` (both ``[B, D]``).

    ``torch.lerp`` is exact at both ends, so step 0 equals ``start`` and step
    ``T-1`` equals ``end`` bit for bit.
    """
    _check_steps(steps)
    weight = torch.linspace(0.0, 1.0, steps, device=start.device, dtype=start.dtype)
    return torch.lerp(start[:, None, :], end[:, None, :], weight[None, :, None])


def resample_polylines(polylines: list[torch.Tensor], steps: int) -> torch.Tensor:
    """``T`` points evenly spaced by arc length along each polyline (``[L_b, D]`` vertices).

    Polylines of different lengths are padded with their last vertex (a
    zero-length segment changes no arc length), so all are resampled in one
    batched ``searchsorted``. Returns ``[B, T, D]``; the first and last points
    are the first and last vertices exactly.
    """
    _check_steps(steps)
    longest = max(len(line) for line in polylines)
    vertices = torch.stack([torch.cat([line, line[-1:].expand(longest - len(line), -1)])
                            for line in polylines])                       # [B, L, D]
    if longest == 1:
        return vertices.expand(-1, steps, -1).clone()
    segment = (vertices[:, 1:] - vertices[:, :-1]).norm(dim=-1)          # [B, L-1]
    arc = torch.cat([segment.new_zeros(len(polylines), 1), segment.cumsum(dim=1)], dim=1)  # [B, L]
    fraction = torch.linspace(0.0, 1.0, steps, device=arc.device, dtype=arc.dtype)
    wanted = arc[:, -1:] * fraction                                       # [B, T]
    index = (torch.searchsorted(arc, wanted, right=True) - 1).clamp(0, longest - 2)
    left = arc.gather(1, index)
    length = segment.gather(1, index)
    weight = ((wanted - left) / length.clamp_min(_MIN_EDGE)).clamp(0.0, 1.0)
    gather = index[..., None].expand(-1, -1, vertices.shape[-1])
    points = torch.lerp(vertices.gather(1, gather), vertices.gather(1, gather + 1), weight[..., None])
    points[:, 0] = vertices[:, 0]
    points[:, -1] = vertices[:, -1]
    return points


def nearest_in_class(codes: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor,
                     target: torch.Tensor) -> torch.Tensor:
    """Index into ``bank`` of the nearest (Euclidean) stored code labelled ``target[b]``, per exemplar."""
    distance = torch.cdist(codes, bank)                                   # [B, N]
    other_class = bank_labels[None, :] != target[:, None]
    return distance.masked_fill(other_class, float("inf")).argmin(dim=1)


def knn_indices(points: torch.Tensor, bank: torch.Tensor, k: int, *, exclude_self: bool = False,
                chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances and indices ``[P, k]`` of each point's ``k`` nearest bank codes (chunked ``cdist``).

    With ``exclude_self`` the points are the bank itself and each point's own
    row is skipped (duplicates of a point are still its neighbours).
    """
    k = min(k, len(bank) - int(exclude_self))
    distances, indices = [], []
    for start in range(0, len(points), chunk):
        distance = torch.cdist(points[start:start + chunk], bank)
        if exclude_self:
            rows = torch.arange(len(distance), device=distance.device)
            distance[rows, rows + start] = float("inf")
        top = distance.topk(k, dim=1, largest=False)
        distances.append(top.values)
        indices.append(top.indices)
    return torch.cat(distances), torch.cat(indices)


@dataclass
class GraphSearch:
    """Shortest-path trees from a batch of exemplars into the stored codes.

    ``distance[b, n]`` is the graph distance from exemplar ``b`` to stored code
    ``n`` (``inf`` when unreachable); ``predecessor`` is scipy's predecessor
    matrix over all ``N + B`` nodes (stored codes first, then exemplars).
    """

    distance: np.ndarray     # [B, N] float64
    predecessor: np.ndarray  # [B, N + B] int32, -9999 where none

    def candidates(self, region: torch.Tensor, count: int) -> torch.Tensor:
        """The ``count`` nearest-by-graph nodes inside ``region`` ``[B, N]`` (bool) per exemplar.

        Returns ``[B, count]`` node indices sorted by graph distance, ``-1``
        where fewer than ``count`` region nodes are reachable.
        """
        distance = np.where(region.cpu().numpy(), self.distance, np.inf)
        count = min(count, distance.shape[1])
        order = np.argsort(distance, axis=1, kind="stable")[:, :count]
        reachable = np.isfinite(np.take_along_axis(distance, order, axis=1))
        return torch.from_numpy(np.where(reachable, order, -1))

    def select(self, rows: torch.Tensor) -> GraphSearch:
        """The searches of exemplars ``rows`` (e.g. one exemplar repeated for several targets)."""
        index = rows.cpu().numpy()
        return GraphSearch(distance=self.distance[index], predecessor=self.predecessor[index])

    def route(self, exemplar: int, end: int) -> list[int]:
        """Stored-code indices visited from exemplar ``exemplar`` to node ``end`` (inclusive)."""
        nodes = [end]
        while (node := int(self.predecessor[exemplar, nodes[-1]])) < self.distance.shape[1]:
            nodes.append(node)  # stops at the exemplar's own node (index >= N)
        return nodes[::-1]


class CodeGraph:
    """A symmetric k-nearest-neighbour graph over stored class codes, built once and reused.

    Edge weights are Euclidean distances. Disconnected pieces of the kNN graph
    (typically one per well-separated class) are joined at their closest pair
    of codes, as scikit-learn's Isomap does, so every class region is reachable
    from every code. Exemplars join a search with edges *out of* them only, so
    no exemplar can relay another's path: a batch gives exactly the paths its
    images would get one at a time.
    """

    def __init__(self, bank: torch.Tensor, labels: torch.Tensor, k: int = 10) -> None:
        if len(bank) < 2:
            raise ValueError("a code graph needs at least two stored codes")
        self.bank = bank.detach().float().cpu()
        self.labels = labels.detach().long().cpu()
        self.k = k
        distance, neighbour = knn_indices(self.bank, self.bank, k, exclude_self=True)
        rows = torch.arange(len(self.bank)).repeat_interleave(neighbour.shape[1])
        weights = distance.flatten().double().clamp_min(_MIN_EDGE).numpy()
        graph = csr_matrix((weights, (rows.numpy(), neighbour.flatten().numpy())),
                           shape=(len(self.bank), len(self.bank)))
        self.graph = _join_components(graph.maximum(graph.T).tocsr(), self.bank)  # i~j: either is the other's kNN

    @property
    def size(self) -> int:
        return len(self.bank)

    def search(self, codes: torch.Tensor) -> GraphSearch:
        """Dijkstra from every exemplar code ``[B, D]`` at once (multi-source, one scipy call)."""
        codes = codes.detach().float().cpu()
        count, size = len(codes), self.size
        distance, neighbour = knn_indices(codes, self.bank, self.k)
        bank = self.graph.tocoo()
        rows = np.concatenate([bank.row, np.repeat(np.arange(size, size + count), neighbour.shape[1])])
        cols = np.concatenate([bank.col, neighbour.flatten().numpy()])
        weights = np.concatenate([bank.data, distance.flatten().double().clamp_min(_MIN_EDGE).numpy()])
        graph = csr_matrix((weights, (rows, cols)), shape=(size + count, size + count))
        distances, predecessors = dijkstra(graph, directed=True, indices=np.arange(size, size + count),
                                           return_predecessors=True)
        return GraphSearch(distance=distances[:, :size], predecessor=predecessors)

    def region(self, target: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` bool: the stored codes labelled ``target[b]`` (the target-class region)."""
        return self.labels[None, :] == target.cpu()[:, None]


@dataclass
class GuidedPaths:
    """The result of :func:`guided_paths`: sampled codes plus the stored codes each path visits."""

    codes: torch.Tensor       # [B, T, D]
    nodes: list[list[int]]    # stored-code indices along each path; the last one is the end code


def guided_paths(graph: CodeGraph, codes: torch.Tensor, target: torch.Tensor, steps: int, *,
                 search: GraphSearch | None = None, ends: torch.Tensor | None = None) -> GuidedPaths:
    """Shortest graph routes from each code ``[B, D]`` into its target class, resampled to ``T`` steps.

    ``ends[b]`` is the stored code to end at (default: the nearest-by-graph
    code labelled ``target[b]``).
    """
    search = graph.search(codes) if search is None else search
    if ends is None:
        ends = search.candidates(graph.region(target), 1)[:, 0]
    if (ends < 0).any():  # the graph is connected, so only a class without stored codes gets here
        missing = sorted(set(target[ends.to(target.device) < 0].tolist()))
        raise ValueError(f"no stored code of target class(es) {missing} in the code graph")
    nodes = [search.route(b, end) for b, end in enumerate(ends.tolist())]
    bank = graph.bank.to(codes.device, codes.dtype)
    polylines = [torch.cat([codes[b:b + 1], bank[route]]) for b, route in enumerate(nodes)]
    return GuidedPaths(codes=resample_polylines(polylines, steps), nodes=nodes)


def _join_components(graph: csr_matrix, bank: torch.Tensor) -> csr_matrix:
    """``graph`` plus one edge between every two connected components, at their closest pair of codes."""
    count, component = connected_components(graph, directed=False)
    if count == 1:
        return graph
    component = torch.from_numpy(component).long()
    rows, cols, weights = [], [], []
    for first in range(count - 1):
        inside = torch.nonzero(component == first).squeeze(1)
        later = torch.nonzero(component > first).squeeze(1)
        distance, nearest = knn_indices(bank[later], bank[inside], 1, chunk=1024)   # [L, 1] each
        distance, nearest, owner = distance[:, 0], inside[nearest[:, 0]], component[later]
        # Sorted by component, then by distance: each component's first entry is its closest point.
        order = distance.argsort()
        order = order[torch.argsort(owner[order], stable=True)]
        _, sizes = torch.unique_consecutive(owner[order], return_counts=True)
        closest = order[sizes.cumsum(0) - sizes]
        rows.append(nearest[closest])
        cols.append(later[closest])
        weights.append(distance[closest].double().clamp_min(_MIN_EDGE))
    bridges = csr_matrix((torch.cat(weights).numpy(), (torch.cat(rows).numpy(), torch.cat(cols).numpy())),
                         shape=graph.shape)
    return (graph + bridges + bridges.T).tocsr()


def _check_steps(steps: int) -> None:
    if steps < 2:
        raise ValueError(f"a path needs at least 2 steps, got {steps}")
