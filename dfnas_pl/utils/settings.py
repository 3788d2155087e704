"""Range checks of numeric settings, before any work: a bad value fails at once with the setting's
name, the value and the valid range - not minutes later with a symptom (a NaN loss, an empty split)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
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


# Settings that name a file or directory, wherever they sit in a stage's or a driver's config.
PATH_KEYS = frozenset({"output_dir", "path", "root", "architecture", "metrics_path", "default_root_dir", "dirpath",
                       "work_dir", "run_dir", "output", "table_dir", "save_dir", "groundtruth", "train_config",
                       "ckpt_path", "config_dir"})


def check_paths(config: Any, prefix: str = "") -> None:
    """Refuse an empty path anywhere in a parsed config: ``output_dir: ""`` would write a synthetic set into
    the current directory and ``path: ""`` would read it as the data. One walk over the whole config (every
    stage, callback, logger and driver option), so a new path setting is covered by its name alone."""
    if hasattr(config, "as_dict"):
        config = config.as_dict()
    if isinstance(config, dict):
        for key, value in config.items():
            name = f"{prefix}{key}"
            if key in PATH_KEYS and isinstance(value, str) and not value.strip():
                raise ValueError(f"{name} is an empty path, which would mean the current directory "
                                 f"('{Path.cwd()}'). Fix: give it a directory or file of its own, or leave it out "
                                 f"for the default.")
            check_paths(value, f"{name}.")
    elif isinstance(config, list | tuple):
        for i, value in enumerate(config):
            check_paths(value, f"{prefix.rstrip('.')}[{i}].")
