"""How a one-shot search scores one path of a trained supernet: re-estimate BatchNorm statistics on a
few search-train batches (shared weights leave BN statistics that fit no single path; SPOS), then
top-1 on search-val - against the labels (real data) or the teacher's argmax (synthetic / noise).

SPOS's evolution and the rank-fidelity instrument call the same function, so the instrument measures
exactly what the search relies on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice

import torch
from torch import nn


def batchnorms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def score_path(supernet: nn.Module, path: Sequence[int], bn_batches: Iterable, val_batches: Iterable,
               teacher: nn.Module | None = None, device: torch.device | str = "cpu") -> float:
    """Top-1 of ``path`` on ``val_batches`` after BN recalibration on ``bn_batches`` (``(x, ..., y)`` each).

    ``teacher`` given: agreement with its argmax (data the teacher labels); else with ``y``. The BN
    statistics are left as recalibrated; callers that train on afterwards restore them."""
    for bn in batchnorms(supernet):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the recalibration batches
    supernet.train()
    for batch in bn_batches:
        supernet(batch[0].to(device), path)
    supernet.eval()
    correct = total = 0
    for batch in val_batches:
        x = batch[0].to(device)
        ref = teacher(x).argmax(1) if teacher is not None else batch[-1].to(device)
        correct += int((supernet(x, path).argmax(1) == ref).sum())
        total += len(x)
    return correct / max(total, 1)


def first(loader: Iterable, limit: int | None) -> Iterable:
    """The first ``limit`` batches of ``loader`` (all when ``limit`` is None)."""
    return loader if limit is None else islice(loader, limit)


@torch.no_grad()
def reference_labels(val_batches: Iterable, teacher: nn.Module | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """What ``score_path`` compares against on ``val_batches``: the teacher's argmax, else the labels (the
    health check's chance level comes from them)."""
    refs = [teacher(b[0].to(device)).argmax(1).cpu() if teacher is not None else torch.as_tensor(b[-1]).cpu()
            for b in val_batches]
    return torch.cat(refs) if refs else torch.zeros(0, dtype=torch.long)


@contextmanager
def batchnorm_state_kept(supernet: nn.Module) -> Iterator[None]:
    """Scoring recalibrates BN statistics and momenta per path; this puts the trained ones (and the mode) back."""
    saved = {k: v.clone() for k, v in supernet.state_dict().items() if "running" in k or "num_batches" in k}
    momenta = {m: m.momentum for m in batchnorms(supernet)}
    was_training = supernet.training
    try:
        yield
    finally:
        supernet.load_state_dict({**supernet.state_dict(), **saved})
        for m, momentum in momenta.items():
            m.momentum = momentum
        supernet.train(was_training)


def score_paths(supernet: nn.Module, paths: Sequence[Sequence[int]], bn_loader: Iterable, val_loader: Iterable,
                bn_batches: int | None, score_batches: int | None, teacher: nn.Module | None = None,
                device: torch.device | str = "cpu") -> list[float]:
    """``score_path`` for each path, the supernet's BN state restored after: for a search that scores paths of a
    supernet it goes on using (the health check of a gradient search)."""
    with batchnorm_state_kept(supernet):
        return [score_path(supernet, p, first(bn_loader, bn_batches), first(val_loader, score_batches), teacher, device)
                for p in paths]
