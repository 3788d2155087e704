"""One progress bar for a whole training run (search, retraining, distillation check), in its real unit.

Lightning's bar starts again at every epoch, so a 40-epoch search shows 40 bars of a few seconds each and no
estimate of when the stage ends, plus a sanity-check and a validation bar between them. This bar counts the
run's training steps (batches) from the first to the last epoch in one bar, with the ETA of the whole stage;
the epoch is in its postfix, and the short sanity-check and validation passes get no bar of their own.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm


class RunProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, made once for the whole run: ``total`` is every epoch's batches (or
    ``max_steps``), ``n`` the batches done so far, a resumed run starting where its checkpoint stood."""

    def __init__(self, description: str = "Training", refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=True)
        self.description = description

    def init_sanity_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)

    def init_validation_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)

    def run_total(self, trainer: L.Trainer) -> int | None:
        """The run's batches: every epoch's (epochs x batches per epoch), capped by ``max_steps`` counted in
        batches (one optimiser step per batch; a search's extra architecture step does not count)."""
        per_epoch = trainer.num_training_batches
        if not math.isfinite(per_epoch):
            return None
        totals = [int(per_epoch) * trainer.max_epochs] if trainer.max_epochs not in (None, -1) else []
        if trainer.max_steps not in (None, -1):
            totals.append(trainer.max_steps)
        return min(totals) if totals else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._done = trainer.current_epoch * int(trainer.num_training_batches) \
            if math.isfinite(trainer.num_training_batches) else 0
        self.train_progress_bar.reset(total=self.run_total(trainer))
        self.train_progress_bar.n = self._done
        self.train_progress_bar.set_description(self.description)
        self.train_progress_bar.unit = "step"

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        pass  # one bar for the run: not reset per epoch

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._done += 1
        bar = self.train_progress_bar
        if not bar.disable and (self._done % self.refresh_rate == 0 or self._done == bar.total):
            bar.n = self._done
            self.show_metrics(trainer, pl_module)
            bar.refresh()

    def show_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The epoch and the logged metrics in the run's bar (the bar itself counts steps)."""
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix({"epoch": trainer.current_epoch, **self.get_metrics(trainer, pl_module)})

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.show_metrics(trainer, pl_module)

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.val_progress_bar.close()
        self.reset_dataloader_idx_tracker()
        if self._train_progress_bar is not None and trainer.state.fn == "fit":
            self.show_metrics(trainer, pl_module)


class OneProgressBar:
    """Mixin for a LightningModule (listed before it and before ResumesExactly): Lightning's default bar (a
    plain ``TQDMProgressBar``) is swapped for :class:`RunProgressBar` named ``progress_name``, keeping its
    refresh rate; a bar of another kind (``RichProgressBar``, a subclass of one's own), or none, is kept."""

    progress_name = "Training"

    def configure_callbacks(self) -> list[L.Callback]:
        callbacks = list(super().configure_callbacks() or [])  # type: ignore[misc]
        bar = self.trainer.progress_bar_callback  # type: ignore[attr-defined]
        if type(bar) is TQDMProgressBar:
            callbacks.append(RunProgressBar(self.progress_name, refresh_rate=bar.refresh_rate))
        return callbacks
