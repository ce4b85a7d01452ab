"""Synthetic OCT-style images with class-specific lesions and ground-truth masks.

This is the data set ``caex`` embeds as its default (spec ``synthetic``), built so
that every claim about an explanation can be checked against a known answer.

What an image shows
-------------------
A cross-section of layered "retina" tissue on a dark background, as in optical
coherence tomography. Eight horizontal layers of different reflectivity (bright
nerve-fibre layer on top, dark nuclear layers, a bright pigment-epithelium (RPE)
line at the bottom) follow a curved path, above a textured, fading choroid.
Each *individual* differs in vertical position, curvature, tilt, waviness,
thickness, layer brightness, texture, speckle and noise.

What makes each class
---------------------
Class 0 is ``normal`` tissue. Every other class adds one local lesion at a random
position and size (typically 3-15% of the image); everything outside the lesion
is the same individual, pixel for pixel:

* ``cnv`` (choroidal neovascularisation): a broad bulge that lifts the RPE and the
  layers above it, filled by a bright, irregular, heterogeneous blob.
* ``dme`` (diabetic macular oedema): one to three dark fluid-filled cysts inside
  the tissue (darker than any layer) with local swelling of the tissue.
* ``drusen``: a row of three to five small bright domes rising from the RPE line
  (deposits under the pigment epithelium).
* ``hole`` (macular hole, K >= 5): a V-shaped gap opening from the top surface
  down through the inner layers, with raised rims.
* ``erm`` (epiretinal membrane, K >= 6): a bright thin membrane on the top
  surface, which wrinkles underneath it.
* ``ped`` (pigment-epithelial detachment, K >= 7): one large smooth dome lifting
  the RPE over dark, fluid content.
* ``atrophy`` (K = 8): a thinned segment where the outer layers are lost and light
  reaches deep below the tissue (a bright column under it).

Distractors (every class, independent of the label)
--------------------------------------------------
Bright specks (saturated dots anywhere, including inside the tissue), a bright
streak in the dark space above the tissue, and a vignette with a random centre.
Specks and the streak are *brighter* than any lesion, so "the brightest pixels"
is never the answer, and the DME cysts are darker than the tissue around them.

Ground truth
------------
Each image is rendered twice from the same individual (same geometry, texture,
noise and distractors): with and without its lesion. The lesion mask is the set
of pixels where the two renderings differ, closed into solid regions, and an
image is identical to its lesion-free twin everywhere outside its mask (normal
images: empty mask). With three
channels the same structure gets a mild per-image colour tint.

Everything is drawn from one seeded ``torch.Generator`` and rendered in batches,
so the same configuration and seed give bit-identical tensors. ``pixel_noise=0``
renders the very same images without the per-pixel speckle and noise (the
random stream is unchanged), which measures how much of a reconstruction error
is the generator's noise rather than missing structure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from caex.errors import DataError
from caex.utils.seed import torch_generator

CLASS_NAMES: tuple[str, ...] = ("normal", "cnv", "dme", "drusen", "hole", "erm", "ped", "atrophy")

#: Reflectivity of the eight tissue layers, top to bottom (NFL ... RPE), before per-image jitter.
LAYER_LEVELS = (0.66, 0.40, 0.54, 0.26, 0.48, 0.20, 0.44, 0.80)
#: Where each layer after the first starts, as a fraction of the tissue thickness.
LAYER_BOUNDS = (0.10, 0.24, 0.36, 0.48, 0.57, 0.78, 0.89)
#: Random numbers each image carries for its lesion; each lesion type reads the ones it needs.
LESION_DRAWS = 24
#: Pixel changes below this (on the noise-free rendering) do not count as lesion.
MASK_THRESHOLD = 0.04
#: Pixels rendered per batch, bounding memory at large sizes.
PIXELS_PER_BATCH = 1 << 21


@dataclass(frozen=True)
class SyntheticConfig:
    """How many images of which size; every field is also a ``synthetic:key=value`` spec option."""

    classes: int = 4
    per_class: int = 400
    size: int = 64
    channels: int = 1
    pixel_noise: int = 1  # 0: the same images without per-pixel speckle and noise

    def __post_init__(self) -> None:
        if not 2 <= self.classes <= len(CLASS_NAMES):
            raise DataError(f"synthetic: classes={self.classes} is out of range (2..{len(CLASS_NAMES)})")
        if self.per_class < 1:
            raise DataError(f"synthetic: per_class={self.per_class} must be at least 1")
        if not 32 <= self.size <= 256:
            raise DataError(f"synthetic: images of {self.size} px are out of range (32..256)")
        if self.channels not in (1, 3):
            raise DataError(f"synthetic: channels={self.channels} must be 1 or 3")
        if self.pixel_noise not in (0, 1):
            raise DataError(f"synthetic: pixel_noise={self.pixel_noise} must be 0 or 1")

    @classmethod
    def from_options(cls, options: dict[str, str]) -> SyntheticConfig:
        """Build from ``key=value`` spec options, naming any unknown key or non-integer value."""
        known = {f.name for f in fields(cls)}
        values: dict[str, int] = {}
        for key, text in options.items():
            if key not in known:
                raise DataError(f"synthetic: unknown option {key!r} (valid: {', '.join(sorted(known))})")
            try:
                values[key] = int(text)
            except ValueError:
                raise DataError(f"synthetic: option {key}={text!r} is not an integer") from None
        return cls(**values)

    @property
    def class_names(self) -> list[str]:
        return list(CLASS_NAMES[: self.classes])


@dataclass
class SyntheticImages:
    """Generated images in class order (``per_class`` of class 0, then class 1, ...)."""

    images: torch.Tensor  # [N, C, H, W] float32 in [0, 1]
    labels: torch.Tensor  # [N] int64
    masks: torch.Tensor  # [N, H, W] bool, where the lesion changed the image (outside: identical)
    lesion_free: torch.Tensor  # [N, C, H, W] the same individuals rendered without their lesion
    class_names: list[str]


def generate_synthetic(config: SyntheticConfig = SyntheticConfig(), seed: int = 0) -> SyntheticImages:
    """Render ``config.classes * config.per_class`` images, deterministically from ``seed``."""
    generator = torch_generator(seed)
    labels = torch.arange(config.classes).repeat_interleave(config.per_class)
    individuals = _draw_individuals(len(labels), generator)
    size = config.size
    batch = max(1, PIXELS_PER_BATCH // (size * size))
    images, masks, lesion_free = [], [], []
    # Batches never mix classes, so each rendering call draws one lesion type (or none).
    for class_index, lesion in enumerate(LESIONS[: config.classes]):
        first, end = class_index * config.per_class, (class_index + 1) * config.per_class
        for start in range(first, end, batch):
            params = {name: value[start:min(start + batch, end)] for name, value in individuals.items()}
            noise = _draw_noise(len(params["lesion"]), size, generator)
            if not config.pixel_noise:
                noise["speckle"], noise["noise"] = torch.zeros_like(noise["speckle"]), torch.zeros_like(noise["noise"])
            without = _render_tissue(params, noise, size, lesion=None)
            if lesion is None:
                with_lesion, mask = without, torch.zeros_like(without, dtype=torch.bool)
            else:
                with_lesion = _render_tissue(params, noise, size, lesion=lesion)
                mask = _close((with_lesion - without).abs() > MASK_THRESHOLD, size)
                with_lesion = torch.where(mask, with_lesion, without)
            distractors = _distractors(params, size)
            images.append(_finish(with_lesion, params, noise, distractors))
            lesion_free.append(_finish(without, params, noise, distractors))
            masks.append(mask)
    return SyntheticImages(
        images=_tint(torch.cat(images), individuals["tint"], config.channels),
        labels=labels,
        masks=torch.cat(masks),
        lesion_free=_tint(torch.cat(lesion_free), individuals["tint"], config.channels),
        class_names=config.class_names,
    )


# --------------------------------------------------------------------------- random draws


def _uniform(generator: torch.Generator, shape: tuple[int, ...] | int, low: float, high: float) -> torch.Tensor:
    shape = (shape,) if isinstance(shape, int) else shape
    return low + (high - low) * torch.rand(shape, generator=generator)


def _draw_individuals(n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-image scalars: the individual's anatomy, imaging conditions, distractors and lesion draws."""
    levels = torch.tensor(LAYER_LEVELS) + _uniform(generator, (n, len(LAYER_LEVELS)), -0.06, 0.06)
    bounds = torch.tensor(LAYER_BOUNDS) + _uniform(generator, (n, len(LAYER_BOUNDS)), -0.02, 0.02)
    return {
        "centre": _uniform(generator, n, 0.46, 0.6),
        "thickness": _uniform(generator, n, 0.25, 0.33),
        "thickness_slope": _uniform(generator, n, -0.3, 0.3),
        "curvature": _uniform(generator, n, -0.3, 0.45),
        "tilt": _uniform(generator, n, -0.1, 0.1),
        "wave_amplitude": _uniform(generator, n, 0.0, 0.02),
        "wave_frequency": _uniform(generator, n, 0.5, 1.5),
        "wave_phase": _uniform(generator, n, 0.0, 2 * math.pi),
        "levels": levels * _uniform(generator, (n, 1), 0.85, 1.1),
        "bounds": bounds,
        "choroid_thickness": _uniform(generator, n, 0.08, 0.15),
        "choroid_level": _uniform(generator, n, 0.3, 0.42),
        "background": _uniform(generator, n, 0.03, 0.08),
        "texture": _uniform(generator, n, 0.06, 0.14),
        "speckle": _uniform(generator, n, 0.1, 0.2),
        "noise": _uniform(generator, n, 0.01, 0.03),
        "vignette": _uniform(generator, n, 0.1, 0.35),
        "vignette_centre": _uniform(generator, (n, 2), 0.3, 0.7),
        "specks": _uniform(generator, (n, 6, 4), 0.0, 1.0),  # u, v, radius, present
        "streak": _uniform(generator, (n, 5), 0.0, 1.0),  # height, centre, angle, length, brightness
        "tint": _uniform(generator, (n, 3), -0.05, 0.05) + torch.tensor([1.0, 0.86, 0.72]),
        "lesion": torch.rand((n, LESION_DRAWS), generator=generator),
    }


def _draw_noise(n: int, size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-pixel random fields, shared by an image's with- and without-lesion renderings."""

    def smooth(rows: int, cols: int) -> torch.Tensor:
        coarse = torch.randn((n, 1, rows, cols), generator=generator)
        return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[:, 0]

    return {
        "layers": smooth(24, 5),  # horizontally elongated, like OCT tissue texture
        "blobs": smooth(12, 12),  # choroidal vessels
        "irregular": smooth(20, 20),  # lesion heterogeneity
        "speckle": torch.randn((n, size, size), generator=generator),
        "noise": torch.randn((n, size, size), generator=generator),
    }


# --------------------------------------------------------------------------- geometry


@dataclass
class _Geometry:
    """The tissue's course for a batch, in image units (0..1, y downwards)."""

    u: torch.Tensor  # [1, 1, W] column centres
    v: torch.Tensor  # [1, H, 1] row centres
    pixel: float  # one pixel in image units
    top: torch.Tensor  # [n, 1, W] top surface, with lesion deformation
    bottom: torch.Tensor  # [n, 1, W] bottom of the RPE, with lesion deformation
    bottom_free: torch.Tensor  # [n, 1, W] where the RPE lies without a lesion

    @property
    def depth(self) -> torch.Tensor:
        """Relative depth in the tissue: 0 at the top surface, 1 at the bottom of the RPE."""
        return (self.v - self.top) / (self.bottom - self.top)

    def at_columns(self, profile: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """A ``[m, 1, W]`` profile read at columns ``u`` ``[m, k]``."""
        width = profile.shape[-1]
        column = (u * width).long().clamp(0, width - 1)
        return profile[:, 0].gather(1, column)


def _band(x: torch.Tensor, low: torch.Tensor | float, high: torch.Tensor | float, edge: float) -> torch.Tensor:
    """Soft indicator of ``low < x < high`` with edges ``edge`` wide (anti-aliasing)."""
    return torch.sigmoid((x - low) / edge) * torch.sigmoid((high - x) / edge)


def _bump(u: torch.Tensor, centre: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * ((u - centre) / width) ** 2)


def _column(values: torch.Tensor) -> torch.Tensor:
    """Per-image scalars ``[n]`` shaped to broadcast over ``[n, H, W]``."""
    return values[:, None, None]


# --------------------------------------------------------------------------- lesions


class _Lesion:
    """One lesion type. ``draws`` is ``[m, LESION_DRAWS]`` uniform numbers, one row per image.

    A lesion may deform the tissue (raise its top and/or the RPE), fill the space
    it opens under the RPE, and paint an overlay; ``None`` means "nothing of that
    kind". ``irregular`` is a smooth noise field ``[m, H, W]`` for heterogeneous lesions.
    """

    def deform(self, draws: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """Upward shifts of the top surface and of the RPE, each ``[m, 1, W]`` (or 0: none)."""
        return 0.0, 0.0

    def fill(self, draws: torch.Tensor, irregular: torch.Tensor) -> torch.Tensor | None:
        """Brightness of whatever fills the space between the lifted and the original RPE."""
        return None

    def overlay(self, draws: torch.Tensor, geo: _Geometry,
                irregular: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Opacity and brightness ``[m, H, W]`` painted over the tissue."""
        return None


def _centre_and_scale(draws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the lesion sits (column) and how big it is, shared by all lesion types."""
    return _column(0.3 + 0.4 * draws[:, 0]), _column(0.85 + 0.3 * draws[:, 1])


def _segment(draws: torch.Tensor, u: torch.Tensor, half_width: float, spread: float, edge: float) -> torch.Tensor:
    """A soft window over the lesion's columns, ``half_width`` (+ up to ``spread``) either side of its centre."""
    centre, scale = _centre_and_scale(draws)
    half = (half_width + spread * _column(draws[:, 2])) * scale
    return torch.sigmoid((half - (u - centre).abs()) / edge)


class _CNV(_Lesion):
    """A broad bulge lifting the RPE and the layers above it over a bright, irregular blob."""

    def _shape(self, draws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        centre, scale = _centre_and_scale(draws)
        return centre, (0.055 + 0.025 * _column(draws[:, 2])) * scale, (0.06 + 0.035 * _column(draws[:, 3])) * scale

    def deform(self, draws, u):
        centre, width, height = self._shape(draws)
        lift = height * _bump(u, centre, width)
        return 0.75 * lift, lift

    def fill(self, draws, irregular):
        return 0.72 + 0.2 * irregular

    def overlay(self, draws, geo, irregular):
        centre, width, height = self._shape(draws)
        bottom = geo.at_columns(geo.bottom_free, centre[:, 0])[:, :, None]
        radius = ((geo.u - centre) / (1.3 * width)) ** 2 + ((geo.v - bottom + 0.45 * height) / (0.75 * height)) ** 2
        alpha = torch.sigmoid((1.0 + 0.45 * irregular - radius) / 0.12)
        return alpha, 0.74 + 0.14 * irregular


class _DME(_Lesion):
    """One to three dark cysts inside the tissue, which swells above them."""

    def deform(self, draws, u):
        centre, scale = _centre_and_scale(draws)
        swelling = 0.045 * scale * _bump(u, centre, _column(0.08 + 0.03 * draws[:, 2]))
        return swelling, torch.zeros_like(swelling)

    def overlay(self, draws, geo, irregular):
        centre, scale = _centre_and_scale(draws)
        count = 1 + (draws[:, 3] * 3).long()  # 1..3 cysts
        cyst_u = centre[:, 0] + 0.16 * (draws[:, 4:7] - 0.5)
        depth = 0.32 + 0.3 * draws[:, 7:10]
        top, bottom = geo.at_columns(geo.top, cyst_u), geo.at_columns(geo.bottom, cyst_u)
        cyst_v = top + depth * (bottom - top)
        radius_u = (0.035 + 0.03 * draws[:, 10:13]) * scale[:, 0]
        radius_v = radius_u * (0.55 + 0.35 * draws[:, 13:16])
        distance = (((geo.u[..., None] - cyst_u[:, None, None]) / radius_u[:, None, None]) ** 2
                    + ((geo.v[..., None] - cyst_v[:, None, None]) / radius_v[:, None, None]) ** 2)
        present = torch.arange(3) < count[:, None]  # [m, 3]
        alpha = (torch.sigmoid((1.0 - distance) / 0.15) * present[:, None, None]).amax(dim=-1)
        return alpha, torch.full_like(alpha, 0.05)


class _Drusen(_Lesion):
    """A row of small bright domes rising from the RPE into the layers above it."""

    def overlay(self, draws, geo, irregular):
        centre, scale = _centre_and_scale(draws)
        count = 3 + (draws[:, 2] * 3).long()  # 3..5 domes
        spacing = 0.055 + 0.02 * draws[:, 3:4]
        index = torch.arange(5, dtype=torch.float32)
        positions = centre[:, 0] + (index - (count[:, None] - 1) / 2) * spacing + 0.01 * (draws[:, 4:9] - 0.5)
        heights = (0.028 + 0.022 * draws[:, 10:15]) * scale[:, 0]
        widths = (0.018 + 0.01 * draws[:, 16:21]) * scale[:, 0]
        base = geo.at_columns(geo.bottom_free, positions) - 0.015  # top of the RPE line
        distance = (((geo.u[..., None] - positions[:, None, None]) / widths[:, None, None]) ** 2
                    + ((geo.v[..., None] - base[:, None, None]) / heights[:, None, None]) ** 2)
        present = index < count[:, None]
        alpha = (torch.sigmoid((1.0 - distance) / 0.15) * present[:, None, None]).amax(dim=-1)
        return alpha, 0.84 + 0.05 * irregular


class _Hole(_Lesion):
    """A V-shaped gap through the inner layers, open to the dark space above, with raised rims."""

    def _shape(self, draws):
        centre, scale = _centre_and_scale(draws)
        return centre, (0.045 + 0.025 * _column(draws[:, 2])) * scale

    def deform(self, draws, u):
        centre, half_width = self._shape(draws)
        rims = _bump(u, centre - half_width, 0.025) + _bump(u, centre + half_width, 0.025)
        return 0.025 * rims, torch.zeros_like(rims)

    def overlay(self, draws, geo, irregular):
        centre, half_width = self._shape(draws)
        depth_limit = _column(0.55 + 0.25 * draws[:, 3])
        depth = geo.depth
        opening = half_width * (1.0 - 0.7 * depth.clamp(min=0) / depth_limit)
        alpha = torch.sigmoid((opening - (geo.u - centre).abs()) / geo.pixel) * torch.sigmoid(
            (depth_limit - depth) / 0.04)
        return alpha, torch.full_like(alpha, 0.06)


class _ERM(_Lesion):
    """A bright membrane on the top surface, which wrinkles under it."""

    def _window(self, draws, u):
        return _segment(draws, u, half_width=0.1, spread=0.06, edge=0.01)

    def deform(self, draws, u):
        phase = 2 * math.pi * _column(draws[:, 3])
        wrinkles = 0.5 + 0.5 * torch.sin(2 * math.pi * (12 + 6 * _column(draws[:, 4])) * u + phase)
        lift = 0.02 * self._window(draws, u) * wrinkles
        return lift, torch.zeros_like(lift)

    def overlay(self, draws, geo, irregular):
        width = max(0.012, 0.9 * geo.pixel)
        alpha = self._window(draws, geo.u) * torch.exp(-0.5 * ((geo.v - geo.top + 1.2 * width) / width) ** 2)
        return alpha, torch.full_like(alpha, 0.86)


class _PED(_Lesion):
    """One large smooth dome of the RPE over dark fluid."""

    def deform(self, draws, u):
        centre, scale = _centre_and_scale(draws)
        half_width = (0.08 + 0.04 * _column(draws[:, 2])) * scale
        height = (0.06 + 0.035 * _column(draws[:, 3])) * scale
        lift = height * (1 - ((u - centre) / half_width) ** 2).clamp(min=0) ** 0.6
        return 0.6 * lift, lift

    def fill(self, draws, irregular):
        return torch.full((len(draws), 1, 1), 0.06)


class _Atrophy(_Lesion):
    """A thinned segment without outer layers, where light reaches deep below the tissue."""

    def _window(self, draws, u):
        return _segment(draws, u, half_width=0.07, spread=0.04, edge=0.015)

    def deform(self, draws, u):
        lift = 0.09 * self._window(draws, u)
        return torch.zeros_like(lift), lift

    def fill(self, draws, irregular):
        return torch.full((len(draws), 1, 1), 0.62)

    def overlay(self, draws, geo, irregular):
        below = (geo.v - geo.bottom_free).clamp(min=0)
        alpha = self._window(draws, geo.u) * torch.sigmoid((geo.v - geo.bottom_free) / geo.pixel) * torch.exp(
            -below / 0.12)
        return alpha, torch.full_like(alpha, 0.72)


#: The lesion of each class, in class order; class 0 (normal) has none.
LESIONS: tuple[_Lesion | None, ...] = (None, _CNV(), _DME(), _Drusen(), _Hole(), _ERM(), _PED(), _Atrophy())


# --------------------------------------------------------------------------- rendering


def _tissue_course(params: dict[str, torch.Tensor], u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top surface and RPE bottom ``[n, 1, W]`` of each individual, without any lesion."""
    x = u - 0.5
    wave = _column(params["wave_amplitude"]) * torch.sin(
        2 * math.pi * _column(params["wave_frequency"]) * u + _column(params["wave_phase"]))
    top = (_column(params["centre"] - params["thickness"] / 2) + _column(params["curvature"]) * x**2
           + _column(params["tilt"]) * x + wave)
    return top, top + _column(params["thickness"]) * (1 + _column(params["thickness_slope"]) * x)


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in image units: columns ``[1, 1, W]`` and rows ``[1, H, 1]``."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    return coords.view(1, 1, size), coords.view(1, size, 1)


def _render_tissue(params: dict[str, torch.Tensor], noise: dict[str, torch.Tensor], size: int,
                   lesion: _Lesion | None) -> torch.Tensor:
    """Noise-free tissue ``[n, H, W]``, with ``lesion`` in every image (``None``: healthy)."""
    n = len(params["lesion"])
    pixel = 1.0 / size
    edge = 0.6 * pixel  # anti-aliased edges
    u, v = _grid(size)
    top_free, bottom_free = _tissue_course(params, u)
    lift_top, lift_bottom = (0.0, 0.0) if lesion is None else lesion.deform(params["lesion"], u)
    geo = _Geometry(u, v, pixel, top_free - lift_top, bottom_free - lift_bottom, bottom_free)

    # Dark background, then the choroid fading below the (undisturbed) RPE position.
    image = _column(params["background"]).expand(n, size, size)
    below = (v - bottom_free) / _column(params["choroid_thickness"])
    choroid = _column(params["choroid_level"]) * (1 + 0.35 * noise["blobs"]) * torch.exp(-1.5 * below.clamp(min=0))
    image = torch.lerp(image, choroid, torch.sigmoid((v - bottom_free) / edge))

    # Whatever the lesion puts between the lifted RPE and its original place.
    fill = None if lesion is None else lesion.fill(params["lesion"], noise["irregular"])
    if fill is not None:
        opened = ((bottom_free - geo.bottom) / edge).clamp(0, 1)
        image = torch.lerp(image, fill.expand(n, size, size), _band(v, geo.bottom, bottom_free, edge) * opened)

    # The layers, following the (possibly deformed) tissue.
    depth = geo.depth
    depth_edge = edge / (geo.bottom - geo.top)
    levels, bounds = params["levels"], params["bounds"]
    tissue = _column(levels[:, 0]).expand(n, size, size)
    for k in range(bounds.shape[1]):
        step = _column(levels[:, k + 1] - levels[:, k])
        tissue = tissue + step * torch.sigmoid((depth - _column(bounds[:, k])) / depth_edge)
    tissue = tissue * (1 + _column(params["texture"]) * noise["layers"])
    image = torch.lerp(image, tissue, _band(v, geo.top, geo.bottom, edge))

    painted = None if lesion is None else lesion.overlay(params["lesion"], geo, noise["irregular"])
    if painted is not None:
        alpha, value = painted
        image = torch.lerp(image, value, alpha)
    return image


def _close(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Morphological closing of ``[n, H, W]`` masks, so a lesion's mask is one region, not speckle."""
    kernel = 2 * max(1, round(size / 48)) + 1
    grown = F.max_pool2d(mask[:, None].float(), kernel, stride=1, padding=kernel // 2)
    return (-F.max_pool2d(-grown, kernel, stride=1, padding=kernel // 2))[:, 0] > 0.5


def _finish(clean: torch.Tensor, params: dict[str, torch.Tensor], noise: dict[str, torch.Tensor],
            distractors: torch.Tensor) -> torch.Tensor:
    """Imaging effects and distractors, identical for an image and its lesion-free twin."""
    u, v = _grid(clean.shape[-1])
    centre = params["vignette_centre"]
    distance2 = (u - _column(centre[:, 0])) ** 2 + (v - _column(centre[:, 1])) ** 2
    image = clean * (1 - _column(params["vignette"]) * distance2 / 0.5)
    image = image * (1 + _column(params["speckle"]) * noise["speckle"]) + _column(params["noise"]) * noise["noise"]
    return torch.maximum(image, distractors).clamp(0, 1)


def _distractors(params: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Bright specks anywhere and a bright streak in the dark space above the tissue, ``[n, H, W]``."""
    pixel = 1.0 / size
    u, v = _grid(size)
    streak = params["streak"]  # [n, (height, centre, angle, length, brightness)]
    height = _column(0.05 + 0.12 * streak[:, 0])
    centre = _column(0.25 + 0.5 * streak[:, 1])
    slope = _column(torch.tan(0.3 * (streak[:, 2] - 0.5)))
    half_length = _column(0.15 + 0.2 * streak[:, 3])
    across = (v - height - slope * (u - centre)).abs()
    width = max(0.008, 0.6 * pixel)
    line = torch.exp(-0.5 * (across / width) ** 2) * torch.sigmoid((half_length - (u - centre).abs()) / (2 * pixel))
    top, _ = _tissue_course(params, u)
    line = line * torch.sigmoid((top - 0.03 - v) / pixel)  # only in the dark space above the tissue
    line = line * _column(0.92 + 0.08 * streak[:, 4])
    return _stamp_specks(line, params["specks"])


def _stamp_specks(image: torch.Tensor, specks: torch.Tensor) -> torch.Tensor:
    """Max-composite saturated discs into ``image`` ``[n, H, W]``, evaluating only a small patch per speck.

    ``specks`` is ``[n, S, 4]`` uniform draws: column, row, radius, whether present.
    """
    n, size = image.shape[0], image.shape[-1]
    radius = (0.012 + 0.012 * specks[..., 2]) * size  # pixels
    radius = radius.clamp(min=0.8)
    present = specks[..., 3] < 0.7
    centre_x, centre_y = specks[..., 0] * size, specks[..., 1] * size
    reach = math.ceil(0.024 * size) + 2
    offsets = torch.arange(-reach, reach + 1)
    columns = (centre_x.floor().long()[..., None, None] + offsets.view(1, 1, 1, -1))  # [n, S, 1, P]
    rows = (centre_y.floor().long()[..., None, None] + offsets.view(1, 1, -1, 1))  # [n, S, P, 1]
    distance = ((columns + 0.5 - centre_x[..., None, None]) ** 2 + (rows + 0.5 - centre_y[..., None, None]) ** 2).sqrt()
    value = torch.sigmoid((radius[..., None, None] - distance) / 0.5) * present[..., None, None]
    inside = (columns >= 0) & (columns < size) & (rows >= 0) & (rows < size)
    index = (rows.clamp(0, size - 1) * size + columns.clamp(0, size - 1)).expand_as(value)
    flat = image.reshape(n, -1).scatter_reduce(1, index.reshape(n, -1), (value * inside).reshape(n, -1), "amax")
    return flat.view_as(image)


def _tint(gray: torch.Tensor, tint: torch.Tensor, channels: int) -> torch.Tensor:
    """``[N, H, W]`` -> ``[N, C, H, W]``; three channels get a mild per-image colour tint."""
    if channels == 1:
        return gray[:, None].contiguous()
    return (gray[:, None] * tint[:, :, None, None]).clamp(0, 1)
