"""Numbers as people read them in tables and sentences."""

from __future__ import annotations

#: A value that is missing or not a number, in every table caex writes (results.md and the report alike).
MISSING = "—"


def fixed(value: float, spec: str = ".3f") -> str:
    """``value`` formatted by ``spec`` (a fixed-point spec such as ``".3f"`` or ``",.1f"``), a negative value
    that rounds to zero printed as zero: an AOPC of -0.0001 read "-0.000", a sign that says nothing."""
    text = format(value, spec)
    rounds_to_zero = text.startswith("-") and "0" in text and not any(digit in text for digit in "123456789")
    return text[1:] if rounds_to_zero else text


def significant(value: float, digits: int = 7) -> float:
    """``value`` rounded to ``digits`` significant digits, for files scripts compute on: six decimals logged a
    learning rate of 3e-7 as 0.0 and small probabilities as 0 (whose log-odds are -inf); seven digits keep a float32
    value whole without its float64 noise (0.30000001192092896)."""
    return float(f"{value:.{digits}g}")
