"""Random state in the checkpoint, so that a resumed run goes on exactly as an uninterrupted one.

Lightning's checkpoints hold weights, optimisers and loop counters but not the random generators. A
run resumed from ``last.ckpt`` therefore draws other augmentations, other SPOS paths, other dropout
masks than the uninterrupted run would have drawn from there on; its result differs for no reason but
the kill. This callback stores the CPU, CUDA, Python and NumPy generators with every checkpoint and
puts them back when the first epoch after the resume starts - the moment that, in an uninterrupted
run, directly follows the save (Lightning saves after the epoch's validation and after the module's
``on_train_epoch_end``). The shuffle order is a function of (seed, epoch) already
(dfnas_pl.data.epoch_shuffle), so it does not depend on this.

Limits, said plainly: with ``num_workers > 0`` each epoch's worker seeds are drawn when the epoch's
iterator is made, which Lightning does before the first resumed epoch starts, so worker-side random
augmentation may differ after a resume (the data order does not). Under DDP every rank restores the
generators rank 0 saved; Lightning's ``seed_everything`` seeds all ranks alike anyway.

Every value is a tensor, an int, a tuple or None, so the checkpoint still loads with
``weights_only=True``.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


def random_states() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized()
            else [],
            "python": random.getstate(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}


def set_random_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))


class RandomStateInCheckpoint(L.Callback):
    """Save the random generators with each checkpoint; restore them when the resumed training starts.

    The stage modules (searches, retraining, the distillation check) add it themselves
    (``configure_callbacks``), so a config need not name it.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return random_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict  # applied when training starts: the sanity check must not consume it

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:
            set_random_states(self._pending)
            self._pending = None


class ResumesExactly:
    """Mixin for a LightningModule (listed before it): its runs keep their random state in checkpoints."""

    def configure_callbacks(self) -> list[L.Callback]:
        return [RandomStateInCheckpoint()]
