"""Library messages a user of dfnas_pl cannot act on, silenced once for every command.

Each entry says why it is noise here, so that a message that starts to matter can be taken out again.
Anything not listed still reaches the user.
"""

from __future__ import annotations

import logging
import re
import warnings

# (message pattern, why a dfnas_pl user cannot act on it)
NOT_ACTIONABLE_WARNINGS: tuple[tuple[str, str], ...] = (
    (r".*`max_epochs` was not set.*", "synthesis and the searches stop themselves (rounds, generations)"),
    (r".*configure_optimizers` returned `None`.*", "synthesis optimises images with its own per-batch optimiser"),
    (r".*module\(s\) in eval mode.*", "frozen teachers are in eval mode on purpose"),
    (r".*does not have many workers.*", "in-memory tensors and tiny images: worker processes cost more than they save"),
    (r".*LeafSpec.*", "a deprecation inside torch's pytree that Lightning calls"),
)
NOT_ACTIONABLE_INFO: tuple[tuple[str, str], ...] = (
    (r"💡 Tip: .*", "advertisements for Lightning's cloud logger and model registry"),
    (r"The following callbacks returned in `LightningModule.configure_callbacks` will override.*",
     "each stage brings its own progress bar in its own unit, on purpose"),
)


class _DropMessages(logging.Filter):
    def __init__(self, patterns: tuple[tuple[str, str], ...]) -> None:
        super().__init__()
        self.patterns = [re.compile(p, re.S) for p, _ in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.match(message) for p in self.patterns)


def quiet_library_noise() -> None:
    """Silence :data:`NOT_ACTIONABLE_WARNINGS` and Lightning's :data:`NOT_ACTIONABLE_INFO` lines."""
    for pattern, _ in NOT_ACTIONABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    drop = _DropMessages(NOT_ACTIONABLE_INFO)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(drop)
