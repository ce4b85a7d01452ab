"""One-line plain-language readings of the report's tables, computed from the numbers.

Each function takes the figures a table shows and returns the sentence printed
under it, so the prose can never disagree with the table it describes.
Missing or non-finite numbers are skipped rather than read aloud.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from caex.evaluation.perturbation import standard_error
from caex.utils.numbers import fixed

SUBJECT = "CAE"
RANDOM = "random"


def finite(value: object) -> bool:
    """True for a real number that is neither NaN nor infinite; an integer too large for a float (``10**400`` in a
    hand-edited json) counts as infinite, since every figure is read as a float."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def percent(value: float) -> float:
    """A share as a percentage, floored to one decimal between 99 and 100 so that an imperfect share never
    rounds up to 100 (tables and sentences both go through here, so they never disagree)."""
    scaled = 100 * value
    return math.floor(scaled * 10) / 10 if 99 < scaled < 100 else scaled


def share(value: float) -> str:
    """0.913 -> '91%' (one decimal below 10% so small shares stay visible, and above 99% so an
    imperfect share never reads as 100%)."""
    return shares(value)[0]


def shares(*values: float) -> list[str]:
    """:func:`share` for figures read side by side, all at one precision: '99.3% (lowest: 97.6%)', never
    '99.3% (lowest: 98%)'."""
    one_decimal = any(abs(100 * value) < 10 or 99 < 100 * value < 100 for value in values)
    return [f"{percent(value):.1f}%" if one_decimal else f"{percent(value):.0f}%" for value in values]


def is_variant_of(key: str, name: str) -> bool:
    """Whether method ``key`` is ``name`` or one of its variants (``CAE-guided`` is a CAE), ignoring case."""
    return key.lower().split("-")[0] == name.lower()


def _find(values: Mapping[str, float], name: str) -> str | None:
    """The first key of ``values`` naming method ``name`` or a variant, so the best variant is found when
    ``values`` is ranked."""
    return next((key for key in values if is_variant_of(key, name)), None)


def _subject(values: Mapping[str, float], subject: str | None) -> str | None:
    """The row the sentence is about: ``subject`` when given and present (the report names one CAE row for
    all its sentences), else the first CAE row of ``values``."""
    return subject if subject in values else _find(values, SUBJECT)


def _ranked(values: Mapping[str, float], *, higher_is_better: bool) -> list[tuple[str, float]]:
    usable = [(name, float(v)) for name, v in values.items() if finite(v)]
    return sorted(usable, key=lambda item: item[1], reverse=higher_is_better)


#: What a higher faithfulness score means, per metric, for the sentence's ending.
_EFFECT = {"AOPC": "lowers the classifier's confidence fastest",
           "PD": "lowers the classifier's confidence the most"}


def read_faithfulness(values: Mapping[str, float], *, metric: str = "AOPC", subject: str | None = None,
                      per_image: Mapping[str, Sequence[float]] | None = None) -> str:
    """How the subject's faithfulness score (higher is better) compares with the best baseline and random.

    Other variants of the subject are no baselines. With the scores ``per_image`` (the same images for every
    method), a method counts as beating the random map only when its mean paired difference from it is more
    than two standard errors above zero."""
    scores = dict(_ranked(values, higher_is_better=True))
    if not scores:
        return f"No {metric} values were recorded."
    effect = _EFFECT.get(metric, "moves the classifier's decision most")
    subject, random = _subject(scores, subject), _find(scores, RANDOM)
    baselines = [name for name in scores if not is_variant_of(name, SUBJECT) and name != random]
    if subject is None:
        best = next(iter(scores))
        sentence = f"{best} has the highest {metric} ({fixed(scores[best])}): covering the pixels it marks {effect}."
    elif not baselines:
        sentence = f"{subject}'s {metric} is {fixed(scores[subject])}."
    else:
        best = baselines[0]
        if scores[subject] >= scores[best]:
            ratio = scores[subject] / scores[best] if scores[best] > 0 else math.inf
            standing = ("level with" if ratio < 1.05 else f"{ratio:.1f}x" if math.isfinite(ratio) else "ahead of")
            sentence = (f"{subject}'s {metric} is {fixed(scores[subject])}, {standing} the best baseline ({best}, "
                        f"{fixed(scores[best])}): covering the pixels {subject} marks {effect}.")
        else:
            sentence = (f"{subject}'s {metric} is {fixed(scores[subject])}, below the best baseline ({best}, "
                        f"{fixed(scores[best])}): covering the pixels {best} marks {effect}.")
    if random is not None:
        sentence += _against_random(scores, random, per_image or {})
    return sentence


def paired_standard_error(first: Sequence[float], second: Sequence[float]) -> float:
    """Standard error of the mean of ``first[i] - second[i]`` (NaN unless both hold the same 2 or more values)."""
    if len(first) != len(second):
        return math.nan
    return standard_error([a - b for a, b in zip(first, second)])


def _against_random(scores: Mapping[str, float], random: str, per_image: Mapping[str, Sequence[float]]) -> str:
    """The methods that do not beat the random map: at or below it, or, where per-image scores are known,
    within two standard errors of their paired differences above it (not told apart from it on these images)."""
    def margin(name: str) -> float:
        error = paired_standard_error(per_image.get(name, []), per_image.get(random, []))
        return 2 * error if finite(error) else 0.0

    below = [name for name in scores if name != random and scores[name] <= scores[random]]
    close = [name for name in scores if name not in (random, *below) and scores[name] - scores[random] <= margin(name)]
    sentence = ""
    if below:
        one = len(below) == 1
        sentence += (f" {', '.join(below)} {'does' if one else 'do'} not beat the random map "
                     f"({fixed(scores[random])}), so {'it is' if one else 'they are'} not explaining this classifier.")
    if close:
        one = len(close) == 1
        sentence += (f" {', '.join(close)} {'is' if one else 'are'} above the random map by less than two standard "
                     "errors: on these images, not told apart from it.")
    return sentence


def read_localisation(mass: Mapping[str, float], pointing: Mapping[str, float] | None = None, *,
                      subject: str | None = None, n_with_mask: int | None = None) -> str:
    """Where the saliency lands relative to the ground-truth lesion masks (averaged over the ``n_with_mask``
    images that have a lesion)."""
    ranked = _ranked(mass, higher_is_better=True)
    if not ranked:
        return "No localisation figures were recorded (the data has no ground-truth masks)."
    values = dict(ranked)
    subject = _subject(values, subject) or ranked[0][0]
    others = [(name, v) for name, v in ranked
              if not is_variant_of(name, SUBJECT) and name != subject and name.lower() != RANDOM]
    sentence = f"{subject} puts {share(values[subject])} of its saliency inside the lesion masks"
    details = []
    if others:
        details.append(f"best other method: {others[0][0]}, {share(others[0][1])}")
    random = _find(values, RANDOM)
    if random is not None and random != subject:
        details.append(f"random: {share(values[random])}")
    if details:
        sentence += f" ({'; '.join(details)})"
    if pointing and finite(pointing.get(subject)):
        images = f"the {n_with_mask} images with a lesion" if n_with_mask else "the images with a lesion"
        sentence += f", and its top pixel falls inside the lesion for {share(pointing[subject])} of {images}"
    return sentence + "."


def _milliseconds(value: float) -> str:
    """``1,234 ms``, ``2.5 ms``, ``0.031 ms``: never a misleading ``0.0 ms``."""
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms" if value >= 0.1 else f"{value:.2g} ms"


def read_time(milliseconds: Mapping[str, float], *, subject: str | None = None) -> str:
    """How long one saliency map takes, relative to the slowest and the quickest method."""
    ranked = _ranked(milliseconds, higher_is_better=False)
    if not ranked:
        return "No timings were recorded."
    times = dict(ranked)
    (fastest, fastest_ms), (slowest, slowest_ms) = ranked[0], ranked[-1]
    subject = _subject(times, subject)
    if subject is None:
        return (f"{fastest} is quickest ({_milliseconds(fastest_ms)} per map), "
                f"{slowest} slowest ({_milliseconds(slowest_ms)}).")
    sentence = f"{subject} takes {_milliseconds(times[subject])} per saliency map"
    explainers = [(name, ms) for name, ms in ranked if not is_variant_of(name, RANDOM)]  # random explains nothing
    quickest, quickest_ms = explainers[0] if explainers else ranked[0]
    if quickest != subject:
        sentence += f", {_relative(times[subject] / max(quickest_ms, 1e-9), 'as slow as')} the quickest method " \
                    f"({quickest}, {_milliseconds(quickest_ms)})"
    if slowest != subject:
        sentence += f"{' and' if quickest != subject else ','} " \
                    f"{_relative(slowest_ms / max(times[subject], 1e-9), 'faster than')} the slowest ({slowest}, " \
                    f"{_milliseconds(slowest_ms)})"
    return sentence + "."


def _relative(factor: float, direction: str) -> str:
    """A ratio of two times (at least 1) with the way it points ("1.1x as slow as"), or "level with" under 5%,
    as the faithfulness sentence has it: two equal times read "1.0x faster than"."""
    return "level with" if factor < 1.05 else f"{_times(factor)} {direction}"


def _listed(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _times(factor: float) -> str:
    return f"{factor:.1f}x" if factor < 10 else f"{factor:,.0f}x"


def read_swap(success: Sequence[Sequence[float]], class_names: Sequence[str], overall: float | None = None) -> str:
    """What the class-swap matrix says: overall success and the weakest direction."""
    cells = [(success[i][j], f"{class_names[i]} → {class_names[j]}")
             for i in range(len(class_names)) for j in range(len(class_names))
             if i != j and finite(success[i][j])]
    if not cells:
        return "No class swaps were measured."
    if overall is None or not finite(overall):
        overall = sum(value for value, _ in cells) / len(cells)
    lowest = min(value for value, _ in cells)
    weakest = [name for value, name in cells if value == lowest]  # ties all named: "→ normal" from every class
    overall_text, lowest_text = shares(overall, lowest)
    sentence = (f"Giving an image another class's code makes the classifier predict that class in "
                f"{overall_text} of test pairs")
    if len(cells) > 1:
        label = "weakest direction" if len(weakest) == 1 else "weakest directions"
        each = "" if len(weakest) == 1 else " each"
        sentence += f" ({label}: {_listed(weakest)}, {lowest_text}{each})"
    return sentence + "."


def read_separability(code_accuracy: float, *, dims: int | None = None, folds: int | None = None,
                      pixel_accuracy: float | None = None, chance: str | None = None) -> str:
    """How well the class is recoverable from the class code alone."""
    if not finite(code_accuracy):
        return "Separability could not be measured (too few test images per class)."
    what = f"the {dims}-number class code" if dims else "the class code"
    how = f" ({folds}-fold cross-validation)" if folds else ""
    sentence = f"A random forest recovers the class from {what} with {share(code_accuracy)} accuracy{how}"
    if pixel_accuracy is not None and finite(pixel_accuracy):
        sentence += f", against {share(pixel_accuracy)} from as many PCA components of the raw pixels"
    if chance:
        sentence += f" ({chance})"
    if pixel_accuracy is not None and finite(pixel_accuracy) and code_accuracy <= pixel_accuracy:
        sentence += ": the class codes do not yet separate the classes better than raw pixels"
    return sentence + "."


def read_smoothness(smote: Mapping[str, float], monotone: float | None = None) -> str:
    """Whether decoding in-between codes stays in class, and whether paths change smoothly."""
    ranked = _ranked(smote, higher_is_better=False)
    parts = []
    if ranked:
        mean = sum(v for _, v in ranked) / len(ranked)
        mean_text, lowest_text = shares(mean, ranked[0][1])
        part = f"decoded mixtures of same-class codes keep their class {mean_text} of the time"
        if len(ranked) > 1:
            part += f" (lowest: {ranked[0][0]}, {lowest_text})"
        parts.append(part)
    if monotone is not None and finite(monotone):
        parts.append(f"along {share(monotone)} of straight paths between classes the target probability "
                     "rises without dips")
    if not parts:
        return "No smoothness figures were recorded."
    sentence = "; ".join(parts)
    return sentence[0].upper() + sentence[1:] + "."


def chance_text(num_classes: int, counts: Sequence[int] | None = None) -> str:
    """What an accuracy on a test split of ``counts`` images per class is to beat: with classes of unequal size,
    always naming the commonest class (1/K read 97% of a 60-to-2 split as far above chance)."""
    total = sum(counts or [])
    if counts and total and max(counts) * len(counts) != total:
        return f"always naming the commonest class: {share(max(counts) / total)}"
    return f"chance with {num_classes} classes: {share(1 / num_classes)}"


def read_accuracy(accuracy: float, num_classes: int, test_counts: Sequence[int] | None = None) -> str:
    """The target classifier's test accuracy against chance (``test_counts``: its test split's images per class,
    where known)."""
    if not finite(accuracy):
        return "The classifier's test accuracy was not recorded."
    return (f"The classifier being explained is right on {share(accuracy)} of held-out test images "
            f"({chance_text(num_classes, test_counts)}).")


def read_flips(flip_steps: Sequence[int], steps: int | None = None) -> str:
    """Whether the counterfactual paths cross the decision boundary, and whether they had to.

    A flip at step 0 means the reconstruction itself is already classified as
    the target: the CAE did not reproduce what made the input its class.
    """
    count = len(flip_steps)
    crossed = sum(step > 0 for step in flip_steps)
    at_start = sum(step == 0 for step in flip_steps)
    within = f" within {steps} steps" if steps else ""
    sentence = f"The classifier's decision flips along {crossed} of the {count} paths{within}"
    if at_start:
        sentence += (f"; for {at_start} the reconstruction is already classified as the target, so the CAE "
                     "does not reproduce what made those images their class (train it longer)")
    elif crossed == count:
        sentence += ": every counterfactual crosses the decision boundary, so the maps show what had to change"
    return sentence + "."
