"""How caex's figures look: saliency colours, labels that fit, titled animations, stable method styles."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from caex.explain.captions import overlay_caption, strip_title
from caex.explain.render import (FLIP_BORDER, FLIP_COLOUR, FLIP_INNER_BORDER, FRAME_CAPTION_SCALE, _path_frames,
                                 counterfactual_strip, path_animation, saliency_overlay, save_explanation)
from caex.training.logging import GRID_PADDING, GRID_TILE, ROW_LABEL_TILES, save_image_grid
from caex.utils.drawing import scaled_font
from caex.utils.plotting import SALIENCY_ALPHA, figure_png, outline_mask, rgb_array, saliency_blend

LONG = ["no diabetic retinopathy", "mild non-proliferative diabetic retinopathy", "proliferative diabetic retinopathy"]


def texts_outside_canvas(figure: Figure) -> list[str]:
    """The visible texts of ``figure`` whose drawn extent leaves the canvas (cut off in the PNG)."""
    FigureCanvasAgg(figure).draw()  # lays the figure out as saving it does
    box, outside = figure.bbox, []
    for text in figure.findobj(Text):
        if text.get_visible() and text.get_text():
            extent = text.get_window_extent()
            if extent.x0 < box.x0 or extent.y0 < box.y0 or extent.x1 > box.x1 or extent.y1 > box.y1:
                outside.append(text.get_text())
    return outside


def row_labels(figure: Figure) -> list[Text]:
    return [axes.yaxis.label for axes in figure.axes if axes.get_ylabel()]


@pytest.fixture
def saved_figures(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The matplotlib figures a test renders, in order, kept instead of drawn (each PNG comes out empty): through
    ``save_figure`` or ``figure_png``, from any module."""
    figures: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, *args, **kwargs: figures.append(figure))
    return figures


# ----------------------------------------------------------------- saliency colours


def test_a_zero_saliency_map_leaves_the_image_as_it_is_and_full_saliency_is_alpha_inferno() -> None:
    """Jet at a fixed alpha 0.5 tinted a zero map dark blue and turned red fundus images purple."""
    red = torch.zeros(3, 8, 8)
    red[0] = 1.0
    saliency = torch.zeros(8, 8)
    saliency[0, 0] = 1.0
    pixels = np.asarray(saliency_overlay(red, saliency, min_size=8)).astype(int)
    assert (pixels[1:, :] == [255, 0, 0]).all() and (pixels[0, 1:] == [255, 0, 0]).all()
    peak = (1 - SALIENCY_ALPHA) * np.array([1.0, 0, 0]) + SALIENCY_ALPHA * np.array(colormaps["inferno"](1.0)[:3])
    assert (pixels[0, 0] == np.round(peak * 255)).all()


def test_overlay_brightness_rises_with_saliency() -> None:
    """Jet's most salient red was as dark in grey as its least salient blue."""
    ramp = torch.linspace(0, 1, 11).expand(1, 11)
    pixels = np.asarray(saliency_overlay(torch.full((1, 1, 11), 0.5), ramp, min_size=1)).astype(float)[0]
    luminance = pixels @ np.array([0.299, 0.587, 0.114])
    assert (np.diff(luminance[3:]) > 0).all()  # inferno is darker than mid grey at the bottom, then rises


def test_the_gallery_blends_its_maps_as_the_explain_overlay_does() -> None:
    from caex.evaluation.runner import EvaluationResults, MethodResult, _gallery_figure

    images = torch.rand(6, 3, 8, 8)
    maps = torch.rand(6, 8, 8)
    maps[:, :4] = 0.0
    results = EvaluationResults([MethodResult("gradcam")], {}, list(range(6)), {"gradcam": maps})
    figure = _gallery_figure(results, images, None, ["a"] * 6)
    shown = figure.axes[1].get_images()[0].get_array()
    picture = images[0].permute(1, 2, 0).numpy()
    assert np.allclose(shown, saliency_blend(picture, maps[0].numpy()))
    assert np.allclose(shown[:4], picture[:4])
    overlay = np.asarray(saliency_overlay(images[0], maps[0], min_size=8)).astype(float) / 255
    assert np.abs(overlay - shown).max() <= 0.5 / 255 + 1e-6


def test_the_mask_outline_has_a_dark_halo_on_a_bright_map() -> None:
    """Lime next to inferno's pale-yellow peak was hard to tell apart: the halo separates them."""
    figure = Figure(figsize=(1, 1), dpi=100)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(saliency_blend(np.ones((20, 20, 3)), np.ones((20, 20))))
    mask = np.zeros((20, 20), dtype=bool)
    mask[5:15, 5:15] = True
    outline_mask(axes, mask)
    pixels = np.asarray(Image.open(io.BytesIO(figure_png(figure, dpi=200))).convert("RGB")).reshape(-1, 3).astype(int)
    assert ((pixels[:, 1] > 200) & (pixels[:, 0] < 60) & (pixels[:, 2] < 60)).any()  # lime
    assert (pixels.sum(axis=1) < 120).any()  # the halo


def test_rgb_array_gives_any_batch_of_images_in_three_channels_in_the_data_range() -> None:
    grey = torch.linspace(-0.5, 1.5, 2 * 4 * 5).reshape(2, 1, 4, 5)
    array = rgb_array(grey)
    assert array.shape == (2, 4, 5, 3) and array.dtype == np.float32
    assert (array == np.clip(grey.numpy(), 0, 1)[:, 0, :, :, None]).all()
    colour = torch.rand(3, 4, 5)
    assert (rgb_array(colour) == colour.permute(1, 2, 0).numpy()).all()


def test_a_batch_of_maps_blends_as_each_of_them_does() -> None:
    images, maps = np.random.default_rng(0).random((2, 3, 4, 5, 3)), np.random.default_rng(1).random((3, 4, 5))
    assert np.array_equal(saliency_blend(images, maps), np.stack([
        np.stack([saliency_blend(images[i, j], maps[j]) for j in range(3)]) for i in range(2)]))


# ----------------------------------------------------------------- long labels fit


def test_long_gallery_row_labels_are_horizontal_and_inside_the_canvas() -> None:
    from caex.evaluation.runner import EvaluationResults, MethodResult, _gallery_figure

    labels = [LONG[index % 3] for index in range(6)]
    results = EvaluationResults([MethodResult("cae")], {}, list(range(6)), {"cae": torch.rand(6, 8, 8)})
    figure = _gallery_figure(results, torch.rand(6, 1, 8, 8), None, labels)
    assert texts_outside_canvas(figure) == []
    drawn = row_labels(figure)
    assert [label.get_text().replace("\n", " ") for label in drawn] == labels
    assert {label.get_rotation() for label in drawn} == {0.0}
    boxes = [label.get_window_extent() for label in drawn]
    assert not any(a.overlaps(b) for index, a in enumerate(boxes) for b in boxes[index + 1:])


def test_long_path_row_titles_are_inside_the_canvas(tmp_path, saved_figures) -> None:
    from caex.manifold import smoothness

    titles = [f"{LONG[1]} → {LONG[2]}", f"{LONG[0]} → {LONG[1]}"]
    smoothness.plot_paths(tmp_path / "paths.png", torch.rand(2, 4, 3, 8, 8), torch.rand(2, 4), titles)
    assert texts_outside_canvas(saved_figures[0]) == []
    assert [label.get_text().replace("\n", " ") for label in row_labels(saved_figures[0])] == titles


def test_the_data_preview_holds_long_class_names_and_its_title(tiny_synthetic, tmp_path, saved_figures) -> None:
    """``caex data show longnames.npz --per-class 1`` cut the names to "retinopathy" and cut the title."""
    import dataclasses

    from caex.data import preview

    bundle = dataclasses.replace(tiny_synthetic, class_names=[*LONG, "d"], spec="/tmp/some/folder/longnames.npz")
    preview.save_preview(bundle, tmp_path / "grid.png", per_class=1)
    assert texts_outside_canvas(saved_figures[0]) == []
    assert [label.get_text().replace("\n", " ") for label in row_labels(saved_figures[0])] == [*LONG, "d"]


# ----------------------------------------------------------------- the animation and the overlay say what they show


def test_every_gif_frame_carries_the_strips_title() -> None:
    """The frames said only "x1 p=0.60 flip": no classes, no prediction, a never-flipping path unmarked."""
    frames, probs = torch.rand(3, 1, 16, 16), torch.tensor([0.2, 0.6, 0.7])
    cell = _path_frames(frames, probs, 1, 160)[0]
    title = strip_title("a.png", "cnv", "dme", flipped=False)
    with Image.open(io.BytesIO(path_animation(frames, probs, 1, title=title))) as gif:
        assert gif.n_frames == 3 and gif.width == cell.width and gif.height > cell.height
        for index in range(3):
            gif.seek(index)
            band = np.asarray(gif.convert("L"))[:gif.height - cell.height]
            assert (band < 100).any()  # title text on every frame
    with Image.open(io.BytesIO(path_animation(frames, probs, 1))) as gif:
        assert gif.size == cell.size


def test_the_overlay_caption_names_the_move_and_its_flip() -> None:
    assert overlay_caption("cnv", "dme", 14) == "cnv -> dme, flips at step 14"
    assert overlay_caption("cnv", "dme", -1, flipped=False) == "cnv -> dme (never flips)"
    # the input is cnv, its reconstruction already dme: a bare "step 0" hid that frame x0 is the one that flips
    assert overlay_caption("cnv", "dme", 0) == "cnv -> dme, flips at step 0 (the reconstruction)"
    plain = saliency_overlay(torch.rand(1, 8, 8), torch.rand(8, 8))
    captioned = saliency_overlay(torch.rand(1, 8, 8), torch.rand(8, 8), caption=overlay_caption("cnv", "dme", 14))
    assert captioned.width == plain.width and captioned.height > plain.height


def test_save_explanation_captions_the_overlay_and_titles_the_gif(tmp_path, one_path_explanation) -> None:
    explanation = one_path_explanation(target=1, flip_step=-1, unflipped=True, probability=0.1)
    summary = save_explanation(explanation, 0, torch.rand(1, 16, 16), tmp_path, "x", "scan.png")
    assert json.loads((tmp_path / "x.json").read_text())["flipped"] is False and summary["flip_step"] == -1
    cell = _path_frames(explanation.frames[0], explanation.target_probs[0], -1, 160)[0]
    with Image.open(tmp_path / "x_path.gif") as gif:
        assert gif.height > cell.height
    with Image.open(tmp_path / "x_saliency.png") as overlay:
        assert overlay.height > overlay.width  # the caption band


def test_the_flip_frame_border_shows_on_a_red_image() -> None:
    """The red border (220, 30, 30) vanished into red fundus images."""
    red = torch.zeros(2, 3, 16, 16)
    red[:, 0] = 220 / 255
    red[:, 1:] = 30 / 255
    flip = np.asarray(counterfactual_strip(red, torch.tensor([0.2, 0.9]), 1, min_size=16)).astype(int)
    cell = flip.shape[1] // 2
    right = flip[:, cell:]
    assert (right[0, 0] == FLIP_COLOUR).all()  # red outside, against the white page
    for ring in range(FLIP_BORDER - FLIP_INNER_BORDER, FLIP_BORDER):  # the dark inner border, around the image
        inner = right[ring, ring:cell - ring]
        assert (np.abs(inner - [220, 30, 30]).sum(axis=1) > 200).all()


def test_the_longest_frame_caption_fits_its_frame() -> None:
    for side in (96, 160, 192):  # the strip's, the GIF's and the overlay's smallest sizes
        assert scaled_font(side, FRAME_CAPTION_SCALE).getlength("x14 p=0.63 flip") <= side


def test_drawing_loads_neither_matplotlib_nor_the_explain_package() -> None:
    """The sample grids borrowed the explanation pictures' fonts by importing caex.explain.render lazily."""
    code = ("import sys, caex.utils.drawing, caex.training.logging\n"
            "print(sorted(name for name in sys.modules if name.split('.')[0] == 'matplotlib' "
            "or name.startswith('caex.explain')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout == "[]\n"


# ----------------------------------------------------------------- method styles


def test_a_methods_curve_style_is_the_same_in_any_order_and_differs_between_methods() -> None:
    """Colours followed the position in --methods (Grad-CAM red in one run, orange in another), all markers "o"."""
    from caex.evaluation.runner import EvaluationResults, MethodResult, _curves_figure

    names = ["cae", "cae-centroid", "gradcam", "my_method"]
    settings = {"patch": 4, "n_images": 2, "data": "x"}

    def styles(order: list[str]) -> dict[str, tuple]:
        results = EvaluationResults([MethodResult(name, aopc=0.1, curve=[0.1, 0.2]) for name in order], settings,
                                    [0, 1], {})
        lines = _curves_figure(results).axes[0].get_lines()
        return {name: (line.get_color(), line.get_marker(), line.get_linestyle()) for name, line in zip(order, lines)}

    assert styles(names) == styles(names[::-1])
    assert len(set(styles(names).values())) == len(names)
    assert len({style[0] for style in styles(names).values()}) == len(names)


def test_every_known_method_has_a_fixed_style_of_its_own() -> None:
    """cae-guided, which --methods takes, was drawn in a style hashed from its name, as a registered method's."""
    from caex.evaluation.runner import METHOD_STYLES, canonical_method, known_methods, method_style

    shipped = ["cae", "cae-guided", "cae-centroid", "cae-nearest", "gradcam", "fullgrad", "lime", "occlusion",
               "integrated_gradients", "random"]
    assert set(shipped) <= set(known_methods()) and [canonical_method(name) for name in shipped] == shipped
    assert {name: method_style(name) for name in shipped} == {name: METHOD_STYLES[name] for name in shipped}
    assert len({method_style(name) for name in shipped}) == len(shipped)
    assert method_style("cae-guided").color == method_style("cae").color  # cae's own path


# ----------------------------------------------------------------- sample grids


def test_sample_grids_are_enlarged_and_their_rows_named(tmp_path) -> None:
    rows = [torch.rand(3, 1, 32, 32) for _ in range(3)]
    pitch = GRID_TILE + GRID_PADDING  # 32 px images shown at 96 px, 2 px apart
    with Image.open(save_image_grid(tmp_path / "plain.png", rows)) as plain:
        assert plain.size == (3 * pitch + GRID_PADDING, 3 * pitch + GRID_PADDING)
    with Image.open(save_image_grid(tmp_path / "named.png", rows, ["input", "reconstruction", "→ drüsen"])) as named:
        assert named.height == plain.height and named.width > plain.width
        band = np.asarray(named.convert("L"))[:, :named.width - plain.width]
        assert all((band[GRID_PADDING + row * pitch:(row + 1) * pitch] < 100).any() for row in range(3))


@pytest.mark.parametrize("long_name", ["→ age-related macular degeneration with geographic atrophy",
                                       "→ age_related_macular_degeneration_with_geographic_atrophy"])  # one word
def test_a_long_row_name_is_wrapped_not_widening_the_band(tmp_path, long_name: str) -> None:
    """A class named in a sentence made the band as wide as the sentence on one line, several times the grid; a
    folder-derived name of one word still did, as only spaces broke lines."""
    rows = [torch.rand(3, 1, 32, 32) for _ in range(2)]
    with Image.open(save_image_grid(tmp_path / "plain.png", rows)) as plain:
        pass
    with Image.open(save_image_grid(tmp_path / "long.png", rows, ["input", long_name])) as named:
        band = np.asarray(named.convert("L"))[:, :named.width - plain.width]
    assert band.shape[1] <= ROW_LABEL_TILES * GRID_TILE
    second_row = band[GRID_PADDING + GRID_TILE + GRID_PADDING:]
    inked_lines = np.flatnonzero((second_row < 100).any(axis=1))
    assert inked_lines.size and np.diff(inked_lines).max() > 1  # the name's lines, with space between them
    assert (band[:GRID_PADDING + GRID_TILE] < 100).any()  # and the first row's name is still drawn


# ----------------------------------------------------------------- the report's loss curves


def test_training_curves_count_whole_iterations_with_a_dark_line_when_short(saved_figures) -> None:
    from caex.report import html

    html.training_curves_png([{"iter": step, "loss": 1.0 / (step + 1)} for step in range(10)])
    axes = saved_figures[0].axes[0]
    saved_figures[0].canvas.draw()
    assert axes.get_xlabel() == "iteration"
    assert all(tick == int(tick) for tick in axes.get_xticks())
    assert [line.get_color() for line in axes.get_lines()] == ["#2f6f9f"]


# ----------------------------------------------------------------- map titles and legends


def test_maps_are_titled_by_projection_names_and_crosses_are_called_class_means(tmp_path, monkeypatch,
                                                                                 saved_figures) -> None:
    from caex.manifold import analysis
    from caex.manifold.codes import CodesTable

    monkeypatch.setattr(analysis, "write_maps_html", lambda path, *args: path)
    labels = torch.arange(12) % 2
    table = CodesTable(torch.randn(12, 4), labels, labels, ["train", "test"] * 6, [f"{i}.png" for i in range(12)],
                       ["a", "b"])
    analysis.write_maps(table, np.arange(12), tmp_path, tsne=True, seed=0)
    titles = [figure._suptitle.get_text() for figure in saved_figures]
    assert titles[:2] == ["class codes, PCA", "class codes, t-SNE"]
    legend = [text.get_text() for text in saved_figures[1].legends[0].get_texts()]
    assert legend == ["a", "b", "class mean (map coordinates):\nlarge, dark edge"]



def test_a_grey_paths_gif_keeps_its_grey_levels() -> None:
    """Fast-octree quantising cut a grey frame's 157 levels to 16: the small changes between steps banded away."""
    import io

    from PIL import ImageSequence

    from caex.explain.render import path_animation

    ramp = torch.linspace(0, 1, 32 * 32).view(1, 1, 32, 32)
    frames = (ramp + 0.01 * torch.arange(4).view(4, 1, 1, 1)).clamp(0, 1).repeat(1, 3, 1, 1)
    with Image.open(io.BytesIO(path_animation(frames, torch.linspace(0.1, 0.9, 4), 2))) as gif:
        levels = [len({r for r, g, b in np.asarray(frame.convert("RGB")).reshape(-1, 3).tolist() if r == g == b})
                  for frame in ImageSequence.Iterator(gif)]
    assert len(levels) == 4 and min(levels) >= 150  # the flip frame too, whose red border makes it 400 colours
