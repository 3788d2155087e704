"""What the three search LightningModules share around their algorithms: the data checks (teacher,
space and real data agree) and the output folder's one-writer lock at setup, the export at the end of training, and the W&B artifact of that export.

Each search calls ``init_search(...)`` for the preamble they share (the teacher, the objective, the output
folder; its ``algorithm`` name comes from its registration) and implements ``finish()``: the health check (``judge``), then the export, called inside the last epoch before its checkpoint (so a kill never loses
it) and here, at ``on_train_end``, when training stopped early (max_steps, max_time)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from callbacks.random_state import ResumesExactly
from callbacks.run_progress import OneProgressBar
from dfnas_pl.data.compatibility import check_real_data, real_data_of
from dfnas_pl.search.health import check_health, enforce
from dfnas_pl.search.objective import SearchObjective
from dfnas_pl.search.scoring import ScoringSet
from dfnas_pl.teachers.loading import Teacher, TeacherSource, load_teacher
from dfnas_pl.utils.io import atomic_write_json
from dfnas_pl.utils.locking import HoldsOutputLock


class SearchHooks(HoldsOutputLock, OneProgressBar, ResumesExactly):
    """Mixin placed before ``L.LightningModule`` in a search module's bases."""

    progress_name = "Search"  # the run's one progress bar (callbacks.run_progress)

    algorithm: str
    output_dir: Path
    _finished: bool
    space: object  # a LayerwiseSpaceConfig or DartsSpaceConfig
    teacher_spec: Teacher | None

    def init_search(self, teacher: TeacherSource | None, temperature: float, kd_t_squared: bool,
                    output_dir: str, kd_targets: str = "soft", export_unhealthy: bool = False) -> None:
        """The teacher (frozen; None: train on labels), the KD-or-labels objective and the output folder.
        Called where each search loaded its teacher before, so the supernet's seeded initialisation is
        unchanged (building a teacher draws from the same random stream)."""
        self.teacher_spec = load_teacher(teacher) if teacher else None
        teacher_net = self.teacher_spec.model if self.teacher_spec else None
        if teacher_net is not None:
            teacher_net.requires_grad_(False)
        self.objective = SearchObjective(teacher_net, temperature, kd_t_squared, kd_targets)
        self.output_dir = Path(output_dir)
        self.export_unhealthy = export_unhealthy
        self._finished = False

    def judge(self, scoring: ScoringSet, level: float, level_of: str,
              random_scores: Sequence[float] | torch.Tensor = (), scorer: str = "top1") -> dict[str, Any]:
        """The health check (:mod:`dfnas_pl.search.health`) before export: its line in the log, its numbers
        in ``health.json`` and the loggers; refuses (one line, exit 2) unless it can choose or
        ``export_unhealthy`` is set. ``random_scores``: the random candidates' per-image values (k x n) or
        their means. Returns the verdict for ``architecture.json``."""
        health = check_health(self.algorithm, scoring.references, level, level_of, random_scores,
                              "the teacher" if self.objective.teacher is not None else "the labels", scorer=scorer)
        for logger in self.loggers:
            logger.log_metrics({"health/level": health.level, "health/chance": health.chance,
                                "health/level_floor": health.level_floor, "health/can_choose": float(health.can_choose),
                                **({"health/spread_over_noise": health.spread / max(health.noise, 1e-12)}
                                   if health.spread is not None else {})})
        try:
            health = enforce(health, self.export_unhealthy)  # refuses with the line (exit 2)
        finally:  # the numbers are kept either way: a refused search's folder says why
            if self.trainer.is_global_zero:
                atomic_write_json(self.output_dir / "health.json", health.as_dict())
        print(health.line() + (" Exported anyway (export_unhealthy)." if health.exported_anyway else ""), flush=True)
        return health.as_dict()

    def wandb_artifacts(self) -> list[tuple[str, str, Path]]:
        """For :class:`callbacks.WandbArtifacts`: the exported architecture."""
        return [(f"architecture-{self.algorithm}", "architecture", self.output_dir / "architecture.json")]

    def setup(self, stage: str) -> None:
        self.objective.check_data(self.trainer.datamodule)
        self.check_space_and_data()
        if self.trainer.is_global_zero:  # one writer per search directory, released at teardown
            self.take_output_lock(self.output_dir, "search output")

    def check_space_and_data(self) -> None:
        """The space is sized for the teacher's inputs and classes, and the real data matches both."""
        space = dataclasses.asdict(self.space)
        spec, real = self.teacher_spec, real_data_of(self.trainer.datamodule)
        if spec is not None:
            wrong = [f"{k}: {space[k]} (the teacher: {getattr(spec, k)})" for k in ("in_channels", "num_classes",
                                                                                  "image_size")
                     if k in space and int(space[k]) != int(getattr(spec, k))]
            if wrong:
                raise ValueError(f"The search space does not fit the teacher '{spec.source}': {', '.join(wrong)}. "
                                 f"Fix: set model.init_args.space.<key> to the teacher's values (the pipeline "
                                 f"does this when given its teacher).")
            check_real_data(real, spec.describe(), f"the teacher '{spec.source}'", spec.class_names)
        else:
            check_real_data(real, space, "the search space", normalisation=False)

    def on_train_end(self) -> None:
        if not self._finished:  # stopped early (max_steps, time): finish with what there is
            self.finish()

    def finish(self) -> None:
        raise NotImplementedError
