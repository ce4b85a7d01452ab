"""The words that name an explanation: the strip's title and the overlay's caption (text only, which the report
also uses for explanations saved before their summaries held their caption)."""

from __future__ import annotations

from pathlib import Path

from caex.utils.drawing import one_line


def strip_title(source: str, prediction: str, target: str, flipped: bool = True) -> str:
    """The strip's title: which move it shows, whether it failed to reach the target, and that frame x0 is the
    reconstruction, not the input (the JSON's ``input_probability`` is the input's, so the two first
    probabilities may differ)."""
    return one_line(f"{Path(source).name}: {_move(prediction, target, flipped)}, p({target}) per frame; "
                    "x0 = reconstruction")


#: The prediction named where the classifier's outputs for the input are NaN or infinite.
NO_CLASS = "no class (outputs not finite)"


def shown_flip(prediction: str, target: str | None, flip_step: int) -> int:
    """The flip step that captions, alt texts and figures mark: none (-1) for a path that starts at its target,
    whose "flip" at step 0 would read like a result (summaries written before they recorded their caption hold
    one there)."""
    return -1 if prediction == target else flip_step


def flip_words(flip_step: int) -> str:
    """Where a path flips (``flips at step 14``); at step 0 that it is the reconstruction, frame x0, that the
    classifier already puts in the target class, which a bare "step 0" leaves the reader to guess."""
    return "flips at step 0 (the reconstruction)" if flip_step == 0 else f"flips at step {flip_step}"


def overlay_caption(prediction: str, target: str, flip_step: int, flipped: bool = True) -> str:
    """The overlay's caption: the move its map explains, as the strip's title names it, and where it flips
    (``cnv -> dme, flips at step 14``)."""
    step = shown_flip(prediction, target, flip_step)
    return one_line(_move(prediction, target, flipped) + (f", {flip_words(step)}" if step >= 0 else ""))


def _move(prediction: str, target: str, flipped: bool) -> str:
    if prediction == target:  # a path toward the input's own class: its "flip" at step 0 would read like a result
        return f"{prediction}, already the target: no flip"
    return f"{prediction} -> {target}" + ("" if flipped else " (never flips)")
