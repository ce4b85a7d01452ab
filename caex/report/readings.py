"""One-line plain-language readings of the report's tables, computed from the numbers.

Each function takes the figures a table shows and returns the sentence printed
under it, so the prose can never disagree with the table it describes.
Missing or non-finite numbers are skipped rather than read aloud.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

SUBJECT = "CAE"
RANDOM = "random"


def finite(value: object) -> bool:
    """True for a real number that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def share(value: float) -> str:
    """0.913 -> '91%' (one decimal below 10% so small shares stay visible)."""
    percent = 100 * value
    return f"{percent:.1f}%" if abs(percent) < 10 else f"{percent:.0f}%"


def _find(values: Mapping[str, float], name: str) -> str | None:
    """The first key of ``values`` naming method ``name``, ignoring case and variant suffixes
    (``CAE-guided`` is a CAE), so the best variant is found when ``values`` is ranked."""
    return next((key for key in values if key.lower().split("-")[0] == name.lower()), None)


def _ranked(values: Mapping[str, float], *, higher_is_better: bool) -> list[tuple[str, float]]:
    usable = [(name, float(v)) for name, v in values.items() if finite(v)]
    return sorted(usable, key=lambda item: item[1], reverse=higher_is_better)


def _ratio(value: float, other: float) -> str:
    return f"{value / other:.1f}x" if other > 0 else "ahead of"


def read_faithfulness(values: Mapping[str, float], *, metric: str = "AOPC") -> str:
    """How the subject's faithfulness score (higher is better) compares with the baselines and random."""
    ranked = _ranked(values, higher_is_better=True)
    subject = _find(dict(ranked), SUBJECT)
    if subject is None:
        if not ranked:
            return f"No {metric} values were recorded."
        best, score = ranked[0]
        return f"{best} has the highest {metric} ({score:.2f}): covering the pixels it marks lowers the " \
               "classifier's confidence fastest."
    score = dict(ranked)[subject]
    random = _find(dict(ranked), RANDOM)
    baselines = [(name, v) for name, v in ranked if name not in (subject, random)]
    if not baselines:
        sentence = f"{subject}'s {metric} is {score:.2f}."
    else:
        best, best_score = baselines[0]
        if score >= best_score:
            sentence = (f"{subject}'s {metric} is {score:.2f}, {_ratio(score, best_score)} the best baseline "
                        f"({best}, {best_score:.2f}): covering the pixels {subject} marks lowers the "
                        "classifier's confidence fastest.")
        else:
            sentence = (f"{subject}'s {metric} is {score:.2f}, below the best baseline ({best}, {best_score:.2f}): "
                        f"covering the pixels {best} marks lowers the classifier's confidence faster.")
    if random is not None:
        losers = [name for name, v in ranked if name != random and v <= dict(ranked)[random]]
        if losers:
            sentence += (f" {', '.join(losers)} {'does' if len(losers) == 1 else 'do'} not beat the random "
                         f"map ({dict(ranked)[random]:.2f}), so {'it is' if len(losers) == 1 else 'they are'} "
                         "not explaining this classifier.")
    return sentence


def read_localisation(mass: Mapping[str, float], pointing: Mapping[str, float] | None = None) -> str:
    """Where the saliency lands relative to the ground-truth lesion masks."""
    ranked = _ranked(mass, higher_is_better=True)
    if not ranked:
        return "No localisation figures were recorded (the data has no ground-truth masks)."
    values = dict(ranked)
    subject = _find(values, SUBJECT) or ranked[0][0]
    others = [(name, v) for name, v in ranked if name != subject and name.lower() != RANDOM]
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
        sentence += f", and its top pixel falls inside the lesion for {share(pointing[subject])} of the images"
    return sentence + "."


def read_time(milliseconds: Mapping[str, float]) -> str:
    """How long one saliency map takes, relative to the fastest and slowest methods."""
    ranked = _ranked(milliseconds, higher_is_better=False)
    if not ranked:
        return "No timings were recorded."
    values = dict(ranked)
    subject = _find(values, SUBJECT)
    fastest, slowest = ranked[0], ranked[-1]
    if subject is None:
        return f"{fastest[0]} is fastest ({fastest[1]:.0f} ms per map), {slowest[0]} slowest ({slowest[1]:.0f} ms)."
    time = values[subject]
    sentence = f"{subject} takes {time:.0f} ms per saliency map"
    if slowest[0] != subject:
        sentence += f", {slowest[1] / max(time, 1e-9):.1f}x faster than the slowest method ({slowest[0]}, " \
                    f"{slowest[1]:.0f} ms)"
    if fastest[0] != subject:
        sentence += f"; {fastest[0]} is quickest at {fastest[1]:.0f} ms"
    return sentence + "."


def read_swap(success: Sequence[Sequence[float]], class_names: Sequence[str], overall: float | None = None) -> str:
    """What the class-swap matrix says: overall success and the weakest direction."""
    cells = [(success[i][j], f"{class_names[i]} → {class_names[j]}")
             for i in range(len(class_names)) for j in range(len(class_names))
             if i != j and finite(success[i][j])]
    if not cells:
        return "No class swaps were measured."
    if overall is None or not finite(overall):
        overall = sum(value for value, _ in cells) / len(cells)
    weakest = min(cells)
    sentence = (f"Giving an image another class's code makes the classifier predict that class in "
                f"{share(overall)} of test pairs")
    if len(cells) > 1:
        sentence += f" (weakest direction: {weakest[1]}, {share(weakest[0])})"
    return sentence + "."


def read_separability(code_accuracy: float, *, dims: int | None = None, folds: int | None = None,
                      pixel_accuracy: float | None = None, chance: float | None = None) -> str:
    """How well the class is recoverable from the class code alone."""
    if not finite(code_accuracy):
        return "Separability could not be measured (too few test images per class)."
    what = f"the {dims}-number class code" if dims else "the class code"
    how = f" ({folds}-fold cross-validation)" if folds else ""
    sentence = f"A random forest recovers the class from {what} with {share(code_accuracy)} accuracy{how}"
    comparisons = []
    if pixel_accuracy is not None and finite(pixel_accuracy):
        comparisons.append(f"{share(pixel_accuracy)} from as many PCA components of the raw pixels")
    if chance is not None and finite(chance):
        comparisons.append(f"chance is {share(chance)}")
    if comparisons:
        sentence += ", against " + " and ".join(comparisons)
    return sentence + "."


def read_smoothness(smote: Mapping[str, float], monotone: float | None = None) -> str:
    """Whether decoding in-between codes stays in class, and whether paths change smoothly."""
    ranked = _ranked(smote, higher_is_better=False)
    parts = []
    if ranked:
        mean = sum(v for _, v in ranked) / len(ranked)
        part = f"decoded mixtures of same-class codes keep their class {share(mean)} of the time"
        if len(ranked) > 1:
            part += f" (lowest: {ranked[0][0]}, {share(ranked[0][1])})"
        parts.append(part)
    if monotone is not None and finite(monotone):
        parts.append(f"along {share(monotone)} of straight paths between classes the target probability "
                     "rises without dips")
    if not parts:
        return "No smoothness figures were recorded."
    sentence = "; ".join(parts)
    return sentence[0].upper() + sentence[1:] + "."


def read_accuracy(accuracy: float, num_classes: int) -> str:
    """The target classifier's test accuracy against chance."""
    if not finite(accuracy):
        return "The classifier's test accuracy was not recorded."
    return (f"The classifier being explained is right on {share(accuracy)} of held-out test images "
            f"(chance with {num_classes} classes: {share(1 / num_classes)}).")
