"""A progress bar for synthesis that counts optimisation steps.

A synthesis "batch" is a whole inner optimisation (``iterations`` Adam steps, plus any low-resolution
warm-up), so Lightning's bar, which counts batches, would sit still for minutes and then jump. This bar
counts the steps: the synthesis module reports each one (``optimisation_step``), and a batch end (or a
batch skipped because a resumed run finished it already) sets the bar to that batch's last step.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf


class SynthesisProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar with one tick per Adam step of the synthesis (``Round r`` per epoch)."""

    def __init__(self, refresh_rate: int = 10, leave: bool = True) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=leave)
        self._steps_per_batch = 1

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._steps_per_batch = int(getattr(pl_module, "steps_per_batch", lambda: 1)())
        batches = convert_inf(self.total_train_batches)
        self.train_progress_bar.reset(total=None if batches is None else batches * self._steps_per_batch)
        self.train_progress_bar.set_description(f"Round {trainer.current_epoch}")
        self.train_progress_bar.unit = "step"

    def optimisation_step(self) -> None:
        """Called by the synthesis module after every Adam step."""
        bar = self.train_progress_bar
        if bar is not None and not bar.disable:
            bar.n += 1
            if bar.n % self.refresh_rate == 0:
                bar.refresh()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar = self.train_progress_bar
        if bar is not None and not bar.disable:
            bar.n = (batch_idx + 1) * self._steps_per_batch
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()
