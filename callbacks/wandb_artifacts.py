"""A stage's result files as W&B artifacts, so a dashboard links every run of a pipeline to what it
made: the synthetic set's manifest, each search's ``architecture.json`` (also as a table: one row per
searched position), each retraining's ``metrics.json``.

A module lists its files with ``wandb_artifacts() -> [(name, type, path)]``; the callback logs those
that exist, once, on rank 0, at ``teardown`` - after the module's own end-of-stage hooks have written
them and before the logger closes the run. Without a ``WandbLogger`` it does nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger


def architecture_rows(record: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Table rows of an architecture record: DARTS (cell, node, op, input), layer-wise (layer, choice)."""
    choices = record["choices"]
    if isinstance(choices, dict):
        rows = [[cell, node, op, int(src)] for cell, nodes in choices.items()
                for node, edges in enumerate(nodes) for op, src in edges]
        return ["cell", "node", "op", "input"], rows
    return ["layer", "choice"], [[i, c] for i, c in enumerate(choices)]


class WandbArtifacts(L.Callback):
    """Logs a stage's result files (architecture, manifest, metrics) as W&B artifacts.

    Args:
        table: also log ``architecture.json`` files as a W&B table (``search/architecture``).
    """

    def __init__(self, table: bool = True) -> None:
        self.table = table

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        logger = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        if logger is None or not trainer.is_global_zero or not hasattr(pl_module, "wandb_artifacts"):
            return
        import wandb

        for name, kind, path in pl_module.wandb_artifacts():
            path = Path(path)
            if not path.is_file():
                continue
            record = json.loads(path.read_text()) if path.suffix == ".json" else {}
            metadata = {k: v for k, v in record.items() if isinstance(v, (int, float, str, bool))}
            artifact = wandb.Artifact(name, type=kind, metadata=metadata)
            artifact.add_file(str(path))
            logger.experiment.log_artifact(artifact)
            if self.table and path.name == "architecture.json":
                columns, rows = architecture_rows(record)
                logger.log_table(key="search/architecture", columns=columns, data=rows)
