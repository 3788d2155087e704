"""Every rank must end a search with the same architecture (a known multi-GPU bug of NAS tools is
ranks silently disagreeing). The algorithms keep their architecture state replicated; this check
proves it at the end, and fails loudly if not."""

from __future__ import annotations

import torch


def assert_same_on_all_ranks(trainer, value: torch.Tensor, what: str) -> int:
    """All-gather ``value`` and raise if any rank differs; returns the number of ranks compared."""
    if trainer is None or trainer.world_size == 1:
        return 1
    gathered = trainer.strategy.all_gather(value.detach().float().flatten())  # [world, n]
    if not torch.allclose(gathered, gathered[0].expand_as(gathered), rtol=0, atol=1e-6):
        raise RuntimeError(f"The {what} differs between ranks after the search: rank 0 {gathered[0].tolist()[:8]} "
                           f"vs others. This is a bug; please report it with the config.")
    return int(gathered.shape[0])
