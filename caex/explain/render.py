"""Pictures of an explanation: saliency overlay, counterfactual strip and an animated GIF of the path.

All functions take CPU tensors in the data range and return Pillow images (or
GIF bytes); writing goes through :mod:`caex.utils.io` so files appear atomically.
Small images are enlarged with nearest-neighbour sampling (pixels stay honest)
so a 28 px digit is still readable.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from caex.data.sources import EXPLAIN_OUTPUTS
from caex.explain.captions import NO_CLASS, overlay_caption, shown_flip, strip_title
from caex.explain.explainer import Explanation
from caex.utils.drawing import BACKGROUND, MARGIN, TEXT_COLOUR, banded, one_line, scaled_font, wrap_to
from caex.utils.io import atomic_write_bytes, write_json
from caex.utils.numbers import significant
from caex.utils.plotting import SALIENCY_ALPHA, SALIENCY_COLORMAP, rgb_array, saliency_blend

#: Frame-caption colours: the flip frame stands out, the rest stay neutral (:data:`TEXT_COLOUR`).
FLIP_COLOUR = (220, 30, 30)
#: The flip frame's border: red outside (it stands out on the white page) and dark inside, since a red border
#: alone vanished into red (fundus) images.
FLIP_BORDER, FLIP_INNER_BORDER = 4, 2
#: Font sizes as fractions (1 / n) of a frame's side. At 1/8 the longest frame caption, ``x14 p=0.63 flip``,
#: spans the frame (93 px on a 96 px frame); the strip's title, one line above all the frames, is a size larger
#: at 1/7; a single frame's title (the overlay's, each GIF frame's) wraps to the frame's width, and at 1/12 a few
#: words fit a line.
FRAME_CAPTION_SCALE, STRIP_TITLE_SCALE, FRAME_TITLE_SCALE = 8, 7, 12


def to_pil(image: torch.Tensor, min_size: int = 0) -> Image.Image:
    """``[C, H, W]`` in [0, 1] (C = 1 or 3) -> an RGB image, enlarged to at least ``min_size`` pixels."""
    array = (image.detach().float().clamp(0, 1) * 255).round().byte().cpu().numpy()
    array = np.repeat(array, 3, axis=0) if array.shape[0] == 1 else array[:3]
    return _enlarge(Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)), "RGB"), min_size)


def saliency_overlay(image: torch.Tensor, saliency: torch.Tensor, *, caption: str = "",
                     alpha: float = SALIENCY_ALPHA, colormap: str = SALIENCY_COLORMAP,
                     min_size: int = 192) -> Image.Image:
    """The image (in colour where it has colour, as the evaluation's gallery shows it) with the ``[H, W]``
    saliency map blended on top (see :func:`~caex.utils.plotting.saliency_blend`), under a ``caption`` band
    (wrapped to the picture's width) unless it is empty."""
    blended = saliency_blend(rgb_array(image), saliency.detach().float().cpu().numpy(), alpha=alpha, colormap=colormap)
    picture = _enlarge(Image.fromarray((blended * 255).round().astype(np.uint8), "RGB"), min_size)
    return _titled([picture], caption, _title_font(min_size), wrap=True)


def _title_font(min_size: int) -> ImageFont.FreeTypeFont:
    """The font of a single picture's title band (the overlay's, each GIF frame's): smaller than the frame
    captions, so a title of a few words fits on one or two lines."""
    return scaled_font(min_size, FRAME_TITLE_SCALE)


def _titled(pictures: list[Image.Image], title: str, font: ImageFont.FreeTypeFont, *,
            wrap: bool = False) -> Image.Image:
    """Equally sized ``pictures`` side by side under a band holding ``title`` (none when it is empty).

    The canvas widens to the title's longest line, so a short strip does not crop the title, which names the
    classes; with ``wrap`` the title breaks into lines as wide as the pictures instead (a single GIF frame).
    """
    width, height = pictures[0].size
    strip = Image.new("RGB", (width * len(pictures), height), BACKGROUND)
    for index, picture in enumerate(pictures):
        strip.paste(picture, (index * width, 0))
    title = one_line(title)
    lines = wrap_to(title, font, strip.width - 2 * MARGIN) if wrap else [title]
    return banded(strip, [line for line in lines if line], font)


def _captioned(frame: Image.Image, caption: str, font: ImageFont.FreeTypeFont, flip: bool) -> Image.Image:
    """A frame with a caption band underneath (and a two-tone border when it is the flip frame)."""
    band = math.ceil(font.size) + 6  # Pillow opens a font at a fractional size too
    border = FLIP_BORDER
    canvas = Image.new("RGB", (frame.width + 2 * border, frame.height + 2 * border + band),
                       FLIP_COLOUR if flip else BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if flip:
        inset = border - FLIP_INNER_BORDER
        draw.rectangle((inset, inset, canvas.width - 1 - inset, frame.height + 2 * border - 1 - inset),
                       fill=TEXT_COLOUR)
    canvas.paste(frame, (border, border))
    draw.rectangle((0, frame.height + 2 * border, canvas.width, canvas.height), fill=BACKGROUND)
    draw.text((canvas.width // 2, frame.height + 2 * border + band // 2), caption,
              fill=FLIP_COLOUR if flip else TEXT_COLOUR, font=font, anchor="mm")
    return canvas


def _path_frames(frames: torch.Tensor, target_probs: torch.Tensor, flip_step: int,
                 min_size: int) -> list[Image.Image]:
    """One captioned picture per step: ``x<step> p(target)`` on every frame, the flip frame marked.

    The step number keeps the order readable on a slide and every frame distinct: Pillow's GIF writer merges
    identical consecutive frames, so a path that does not move (a reference of the image's own class) would
    otherwise collapse to two frames.
    """
    size = max(min_size, frames.shape[-1])
    font = scaled_font(size, FRAME_CAPTION_SCALE)
    pictures = []
    for step, (frame, prob) in enumerate(zip(frames, target_probs.tolist())):
        caption = f"x{step} p={prob:.2f}{' flip' if step == flip_step else ''}"
        pictures.append(_captioned(to_pil(frame, min_size), caption, font, step == flip_step))
    return pictures


def counterfactual_strip(frames: torch.Tensor, target_probs: torch.Tensor, flip_step: int, *,
                         title: str = "", min_size: int = 96) -> Image.Image:
    """Frames ``[T, C, H, W]`` side by side, each captioned with its target probability."""
    return _titled(_path_frames(frames, target_probs, flip_step, min_size), title,
                   scaled_font(min_size, STRIP_TITLE_SCALE))


#: Colours above which a GIF frame is reduced by fast octree rather than median cut.
MEDIAN_CUT_COLOURS = 4096


def _gif_frame(picture: Image.Image) -> Image.Image:
    """``picture`` as a GIF takes it. One of 256 colours or fewer as it is, which Pillow keeps exactly; one of a
    few more (a grey frame and its red flip border) by median cut, which keeps its levels (octree cut them to 16);
    one of many by fast octree, as Pillow's median cut of thousands of colours was most of `caex explain`'s time
    (4.6 of 7.8 s writing eight 64 px explanations; 8 s a frame set at 224 px) for a mean error of 5.4/255 against
    7.2."""
    if picture.getcolors(256) is not None:
        return picture
    if picture.getcolors(MEDIAN_CUT_COLOURS) is not None:
        return picture.quantize(256)
    return picture.quantize(256, method=Image.Quantize.FASTOCTREE)


def path_animation(frames: torch.Tensor, target_probs: torch.Tensor, flip_step: int, *, title: str = "",
                   duration_ms: int = 150, min_size: int = 160) -> bytes:
    """An endlessly looping GIF of the path (the flip frame held three times as long), every frame under the
    strip's ``title`` (wrapped to the frame), which names the classes: a frame alone says only ``x14 p=0.63``."""
    font = _title_font(min_size)
    pictures = [_gif_frame(_titled([picture], title, font, wrap=True))
                for picture in _path_frames(frames, target_probs, flip_step, min_size)]
    durations = [duration_ms * (3 if step == flip_step else 1) for step in range(len(pictures))]
    durations[-1] = max(durations[-1], duration_ms * 4)  # pause before looping
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:],
                     duration=durations, loop=0, disposal=2)
    return buffer.getvalue()


def save_explanation(explanation: Explanation, index: int, image: torch.Tensor, out_dir: str | os.PathLike,
                     stem: str, source: str, settings: dict[str, Any] | None = None,
                     title: str | None = None, gif: bool = True,
                     provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write exemplar ``index``'s overlay PNG (on its input ``image``), map ``.npy`` (in [0, 1]), strip, GIF (unless not
    ``gif``: it is most of the bytes, 140 of 163 KB at 28 px) and JSON.

    Files are named ``<stem>_saliency.png``, ``<stem>_saliency.npy``,
    ``<stem>_path.png``, ``<stem>_path.gif`` and ``<stem>.json``; returns the summary.
    With ``stop_at_flip`` the strip and GIF end at the flip frame. ``settings`` (how the map was made: CAE
    and classifier digests, path, steps, target, seed, ...) is stored under ``"settings"`` so the summary alone
    reproduces it, and ``provenance`` (the models' paths, software, device, time) under ``"provenance"``;
    ``title`` replaces the strip's default (:func:`strip_title`).
    """
    out_dir = Path(out_dir)
    names = explanation.class_names
    prediction, target = int(explanation.prediction[index]), int(explanation.target[index])
    flip, end = int(explanation.flip_step[index]), int(explanation.end_step[index])
    frames, target_probs = explanation.frames[index, :end + 1], explanation.target_probs[index, :end + 1]
    files = {kind: f"{stem}{suffix}" for kind, suffix in EXPLAIN_OUTPUTS.items()}
    if gif:
        files["animation"] = f"{stem}_path.gif"
    # NaN outputs have no class (their argmax, 0, is none): the record and the title say so
    predicted = bool(explanation.predicted[index])
    prediction_name = names[prediction] if predicted else NO_CLASS
    flipped = not explanation.unflipped[index]
    marked_flip = shown_flip(prediction_name, names[target], flip)  # no flip is marked where none was needed
    caption = overlay_caption(prediction_name, names[target], flip, flipped)
    # An earlier explanation's JSON would vouch for a save cut short here (new maps, the old settings), and
    # --skip-done would keep the mix: it goes first and comes back last, as CAE.save does with config.json.
    (out_dir / f"{stem}.json").unlink(missing_ok=True)
    save_png(saliency_overlay(image, explanation.saliency[index], caption=caption), out_dir / files["overlay"])
    save_npy(explanation.saliency[index], out_dir / files["saliency"])
    title = title or strip_title(source, prediction_name, names[target], flipped=flipped)
    save_png(counterfactual_strip(frames, target_probs, marked_flip, title=title), out_dir / files["strip"])
    if gif:
        atomic_write_bytes(out_dir / files["animation"], path_animation(frames, target_probs, marked_flip, title=title))
    summary = {
        "source": source,
        "prediction": {"class": names[prediction] if predicted else None, "index": prediction if predicted else None,
                       "probability": float(explanation.input_probs[index, prediction])},
        "target": {"class": names[target], "index": target,
                   "input_probability": float(explanation.input_probs[index, target])},
        "flip_step": flip,
        "flipped": marked_flip >= 0,  # false for a path that starts at its target: nothing flipped
        "caption": caption,  # the overlay's, which the report shows beside it
        "end_step": end,
        "path": explanation.path,
        "path_nodes": None if explanation.path_nodes is None else explanation.path_nodes[index],
        "steps": int(explanation.frames.shape[1]),
        "saliency_method": explanation.saliency_method,
        "target_probs": [significant(float(p)) for p in explanation.target_probs[index]],
        "files": files,
    }
    if settings is not None:
        summary["settings"] = settings
    if provenance is not None:  # what made it (models by path and digest, software, time): not compared
        summary["provenance"] = provenance
    write_json(out_dir / f"{stem}.json", summary)
    return summary


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write ``image`` as PNG atomically."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def save_npy(array: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write a tensor as a ``.npy`` file atomically (loadable with ``numpy.load``)."""
    buffer = io.BytesIO()
    np.save(buffer, array.detach().cpu().numpy())
    return atomic_write_bytes(path, buffer.getvalue())


def _enlarge(image: Image.Image, min_size: int) -> Image.Image:
    """Integer nearest-neighbour enlargement so the shorter side reaches ``min_size``."""
    factor = max(1, -(-min_size // min(image.size)))  # ceiling division
    return image if factor == 1 else image.resize((image.width * factor, image.height * factor),
                                                  Image.Resampling.NEAREST)
