"""The demo's settings profiles: every size that decides how long ``caex demo`` takes, in one place.

``default`` must finish in under 15 minutes and ``fast`` in under 3 on a
2-core CPU (see ``benchmarks/bench_demo.py``); ``tiny`` is for tests and only
checks that the pipeline runs end to end. Each stage reads only its own
settings block, and the stage's reuse key hashes exactly that block, so
changing one setting reruns that stage and the stages after it, nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from caex.classifier.arch import architecture
from caex.data.synthetic import SyntheticConfig
from caex.errors import CaexError
from caex.evaluation.runner import DEFAULT_METHODS, canonical_method
from caex.explain.explainer import check_steps
from caex.manifold.analysis import check_settings
from caex.model.config import PRESETS
from caex.utils.checks import check_counts


def _check_counts(settings: object, *, optional: tuple[str, ...] = (), **least: int) -> None:
    """Refuse a count that is not a whole number of at least ``least[name]`` (``None`` passes for ``optional``)."""
    counts = {name: getattr(settings, name) for name in least}
    check_counts({name: value for name, value in counts.items() if value is not None or name not in optional}, least)


class _Settings:
    """A settings block checked when it is made (and so by :meth:`DemoProfile.replace`): a typo would otherwise
    surface only at the stage that reads the block, after the stages before it ran."""

    block: ClassVar[str]  # the block's name in DemoProfile, for the messages

    def __post_init__(self) -> None:
        try:
            self.check()
        except CaexError as exc:
            raise CaexError(f"demo profile: {self.block} settings: {exc}") from None

    def check(self) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class DataSettings(_Settings):
    """The embedded synthetic OCT-style data (80% train, 20% test)."""

    block = "data"

    classes: int = 4
    per_class: int = 300
    size: int = 64

    def check(self) -> None:
        _check_counts(self, classes=1, per_class=2, size=1)  # per_class 2: one train and one test image
        SyntheticConfig(classes=self.classes, per_class=self.per_class, size=self.size)  # the generator's ranges

    @property
    def spec(self) -> str:
        return f"synthetic:classes={self.classes},per_class={self.per_class},size={self.size}"


@dataclass(frozen=True)
class ClassifierSettings(_Settings):
    """The target classifier the demo trains and then explains."""

    block = "classifier"

    arch: str = "smallcnn"
    epochs: int | None = None  # None: the architecture's own default

    def check(self) -> None:
        architecture(self.arch)
        _check_counts(self, optional=("epochs",), epochs=1)


@dataclass(frozen=True)
class CAESettings(_Settings):
    """BBCFE training of the CAE.

    ``dc="classifier"`` uses the frozen target classifier as the class critic of
    eq. 6 (explaining the model): it gives the generator a usable class
    signal from the first step, where a discriminator's class head first has to
    learn the classes itself — the difference between converging within the
    demo's CPU budget and not.
    """

    block = "cae"

    preset: str = "small"
    dc: str = "classifier"
    iterations: int = 3500  # CAE ~11 min at 5.3 it/s on 2 cores, the whole demo ~13 of its 15 (preset: 6000)
    batch_size: int = 4
    sample_every: int = 300  # how often the trainer writes a reconstruction/swap grid
    max_shift: int | None = None  # pixels of batch augmentation (None: the preset's, 4 for small)

    def check(self) -> None:
        if self.preset not in PRESETS:
            raise CaexError(f"preset={self.preset!r}: choose one of {', '.join(PRESETS)}")
        if self.dc not in (None, "discriminator", "classifier"):
            raise CaexError(f"dc={self.dc!r}: choose 'discriminator' or 'classifier'")
        _check_counts(self, optional=("max_shift",), iterations=1, batch_size=1, sample_every=1, max_shift=0)


@dataclass(frozen=True)
class ManifoldSettings(_Settings):
    """Global analysis sizes (the paper's 2000 SMOTE codes per class are cut for CPU budgets)."""

    block = "manifold"

    swap_pairs: int = 50  # test pairs per ordered class pair
    smote_per_class: int = 500
    paths: int = 40
    path_steps: int = 10
    folds: int = 10
    n_estimators: int = 100
    tsne: bool = True
    map_points: int = 1000

    def check(self) -> None:
        check_settings(**{name: value for name, value in dataclasses.asdict(self).items() if name != "tsne"})
        if not isinstance(self.tsne, bool):  # "no" was taken as true
            raise CaexError(f"tsne={self.tsne!r}: must be True or False")


@dataclass(frozen=True)
class ExplainSettings(_Settings):
    """Local explanations written as figures: a few test images per class."""

    block = "explain"

    per_class: int = 3
    steps: int = 16

    def check(self) -> None:
        _check_counts(self, per_class=1)
        check_steps(self.steps)


@dataclass(frozen=True)
class EvaluateSettings(_Settings):
    """CAE against the baselines on the same correctly classified test images."""

    block = "evaluate"

    n_images: int = 32
    methods: tuple[str, ...] = DEFAULT_METHODS
    lime_samples: int = 300  # perturbed images per LIME explanation (the dominant cost of LIME)

    def check(self) -> None:
        _check_counts(self, n_images=1, lime_samples=1)
        if isinstance(self.methods, str) or not self.methods:
            raise CaexError(f"methods={self.methods!r}: must be a non-empty sequence of method names")
        for method in self.methods:
            canonical_method(method)


@dataclass(frozen=True)
class DemoProfile:
    """All demo settings; ``budget_seconds`` is the wall-time target on a 2-core CPU."""

    name: str
    budget_seconds: int
    data: DataSettings = field(default_factory=DataSettings)
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)
    cae: CAESettings = field(default_factory=CAESettings)
    manifold: ManifoldSettings = field(default_factory=ManifoldSettings)
    explain: ExplainSettings = field(default_factory=ExplainSettings)
    evaluate: EvaluateSettings = field(default_factory=EvaluateSettings)

    def replace(self, **blocks: dict[str, Any]) -> DemoProfile:
        """A copy with some fields of some blocks changed: ``profile.replace(cae={"iterations": 10})``."""
        changes: dict[str, Any] = {}
        for block, values in blocks.items():
            current = getattr(self, block, None)
            if not dataclasses.is_dataclass(current) or isinstance(current, type):  # a block, not a class (__class__)
                raise CaexError(f"demo profile: unknown settings block {block!r}")
            if not isinstance(values, Mapping):
                raise CaexError(f"demo profile: {block} settings: expected a dict of settings, got {values!r}")
            known = [item.name for item in dataclasses.fields(current)]
            unknown = sorted(set(values) - set(known))
            if unknown:  # dataclasses.replace's TypeError named __init__, not the block
                raise CaexError(f"demo profile: {block} settings have no {unknown[0]!r} (they are: "
                                f"{', '.join(known)})")
            changes[block] = dataclasses.replace(current, **values)
        return dataclasses.replace(self, **changes)


PROFILES: dict[str, DemoProfile] = {
    "default": DemoProfile(name="default", budget_seconds=15 * 60),
    "fast": DemoProfile(
        name="fast", budget_seconds=3 * 60,
        data=DataSettings(per_class=120, size=32),
        classifier=ClassifierSettings(epochs=5),
        # No shifts: 2,000 iterations are too few to profit from them at 32 px (swap success 79.6% without,
        # 58.3% with 2 px, 60.8% with 4 px; mirroring stays, as the data allows it).
        cae=CAESettings(iterations=2000, sample_every=500, max_shift=0),
        manifold=ManifoldSettings(swap_pairs=20, smote_per_class=200, paths=16, folds=5, n_estimators=50,
                                  map_points=500),
        explain=ExplainSettings(per_class=2),
        evaluate=EvaluateSettings(n_images=16, lime_samples=100),
    ),
    "tiny": DemoProfile(
        name="tiny", budget_seconds=60,
        data=DataSettings(classes=2, per_class=10, size=32),
        classifier=ClassifierSettings(epochs=1),
        cae=CAESettings(preset="tiny", iterations=4, batch_size=4, sample_every=2),
        manifold=ManifoldSettings(swap_pairs=3, smote_per_class=8, paths=3, path_steps=4, folds=2,
                                  n_estimators=5, tsne=False, map_points=50),
        explain=ExplainSettings(per_class=1, steps=4),
        evaluate=EvaluateSettings(n_images=2, methods=("cae", "gradcam", "lime", "random"), lime_samples=10),
    ),
}


def get_profile(name: str) -> DemoProfile:
    """The named profile of :data:`PROFILES`; change its sizes with :meth:`DemoProfile.replace`."""
    try:
        return PROFILES[name]
    except KeyError:
        raise CaexError(f"unknown demo profile {name!r}; choose one of {', '.join(PROFILES)}") from None
