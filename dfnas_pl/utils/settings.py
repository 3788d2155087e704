"""Range checks of numeric settings, before any work: a bad value fails at once with the setting's
name, the value and the valid range - not minutes later with a symptom (a NaN loss, an empty split)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def check_range(name: str, value: Any, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False, prefix: str = "model.init_args.") -> None:
    """Raise ValueError unless ``value`` is a finite number within the bounds (None: unbounded)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{prefix}{name} must be a finite number, got {value!r}.")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ValueError(f"{prefix}{name} must lie in {interval}, got {value!r}.")


def check_all(checks: Iterable[tuple], prefix: str = "model.init_args.") -> None:
    """``check_range`` over ``(name, value, low, high[, low_open[, high_open]])`` tuples."""
    for check in checks:
        name, value, low, high, *opens = check
        check_range(name, value, low, high, *opens, prefix=prefix)
