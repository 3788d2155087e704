"""A callback for benchmarks, written by every rank to ``<out>/rank<k>.json``: this process's peak RSS
and the wall time of either

* ``loop``: the whole training loop (after setup and the DDP rendezvous, before ``on_train_end``), or
* ``steps``: from the end of the first training batch to the end of the last - steady-state steps with
  data loading, without the first step's warm-up and without end-of-epoch work (plots, exports,
  SPOS's evolution) that does not grow with the number of steps.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import lightning as L


class TrainLoopTimer(L.Callback):
    def __init__(self, out: str, mode: str = "loop") -> None:
        if mode not in ("loop", "steps"):
            raise ValueError(f"mode must be 'loop' or 'steps', got {mode!r}")
        self.out, self.mode = Path(out), mode
        self.start = self.first_end = self.last_end = 0.0
        self.batches = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.strategy.barrier("timer")
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        self.last_end = time.perf_counter()
        if self.batches == 1:
            self.first_end = self.last_end

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.mode == "loop":
            seconds, steps = time.perf_counter() - self.start, self.batches
        else:
            seconds, steps = self.last_end - self.first_end, self.batches - 1
        self.out.mkdir(parents=True, exist_ok=True)
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "seconds": seconds, "steps": steps,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
