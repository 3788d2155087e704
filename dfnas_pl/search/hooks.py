"""What the three search LightningModules share around their algorithms: the data check and output
folder at setup, the export at the end of training, and the W&B artifact of that export.

Each search sets ``algorithm``, ``output_dir``, ``objective`` and ``_finished`` and implements
``finish()``: the export, called inside the last epoch before its checkpoint (so a kill never loses
it) and here, at ``on_train_end``, when training stopped early (max_steps, max_time)."""

from __future__ import annotations

from pathlib import Path

from dfnas_pl.utils.io import check_writable_dir


class SearchHooks:
    """Mixin placed before ``L.LightningModule`` in a search module's bases."""

    algorithm: str
    output_dir: Path
    _finished: bool

    def wandb_artifacts(self) -> list[tuple[str, str, Path]]:
        """For :class:`callbacks.WandbArtifacts`: the exported architecture."""
        return [(f"architecture-{self.algorithm}", "architecture", self.output_dir / "architecture.json")]

    def setup(self, stage: str) -> None:
        self.objective.check_data(self.trainer.datamodule)
        if self.trainer.is_global_zero:
            check_writable_dir(self.output_dir, "search output")

    def on_train_end(self) -> None:
        if not self._finished:  # stopped early (max_steps, time): finish with what there is
            self.finish()

    def finish(self) -> None:
        raise NotImplementedError
