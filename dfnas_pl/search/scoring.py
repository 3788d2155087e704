"""How a one-shot search scores one path of a trained supernet: re-estimate BatchNorm statistics on a
few search-train batches (shared weights leave BN statistics that fit no single path; SPOS), then a per-image
score on the search-val images, averaged.

The per-image score is a *scorer* from a registry (``SCORERS``; ``@register_scorer`` adds one):

* ``top1``: agreement with the teacher's argmax (synthetic / noise data) or the label (real data): 0 or 1
  per image, so on a few hundred images candidates a few points apart tie within noise;
* ``kd``: minus the KL divergence from the teacher's distribution at the search's KD temperature (the
  supernet's own training objective), or minus the label's negative log-likelihood for real data: continuous,
  so it orders candidates whose top-1 ties.

A scorer's contract: ``(student_logits, batch: ScoringBatch, temperature) -> one value per image``, higher is
better, a function of that image alone (the health check's paired test treats the images as independent).

What every candidate is compared against is computed once per search (:class:`ScoringSet`: the teacher runs
once on the scoring images, not once per candidate). SPOS's evolution, the health checks and the rank-fidelity
instrument call the same function, so the instrument measures exactly what the search relies on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice

import torch
import torch.nn.functional as F
from torch import nn


def batchnorms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@dataclass(frozen=True)
class ScoringBatch:
    """One batch of scoring images with what a candidate is compared against: ``references`` (the teacher's
    argmax or the labels) and, with a teacher, its log-probabilities at the scoring temperature."""

    x: torch.Tensor
    references: torch.Tensor
    teacher_log_probs: torch.Tensor | None = None


class ScoringSet:
    """The scoring images and their targets, computed once (teacher given: its argmax and its distribution at
    ``temperature``; else the labels, the last item of each ``(x, ..., y)`` batch)."""

    @torch.no_grad()
    def __init__(self, val_batches: Iterable, teacher: nn.Module | None = None, temperature: float = 1.0,
                 device: torch.device | str = "cpu") -> None:
        self.temperature = temperature
        self.has_teacher = teacher is not None
        self.batches: list[ScoringBatch] = []
        for batch in val_batches:
            x = batch[0].to(device)
            if teacher is not None:
                logits = teacher(x)
                self.batches.append(ScoringBatch(x, logits.argmax(1), F.log_softmax(logits / temperature, 1)))
            else:
                self.batches.append(ScoringBatch(x, torch.as_tensor(batch[-1]).to(device)))

    @property
    def references(self) -> torch.Tensor:
        """Every image's reference class (the health check's chance level comes from them)."""
        refs = [b.references.cpu() for b in self.batches]
        return torch.cat(refs) if refs else torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return sum(len(b.x) for b in self.batches)


Scorer = Callable[[torch.Tensor, ScoringBatch, float], torch.Tensor]
SCORERS: dict[str, Scorer] = {}


def register_scorer(name: str) -> Callable[[Scorer], Scorer]:
    """Decorator: register a per-image scorer under ``name`` (the contract is in the module docstring)."""
    def register(fn: Scorer) -> Scorer:
        if name in SCORERS:
            raise ValueError(f"Scorer '{name}' is registered twice.")
        SCORERS[name] = fn
        return fn
    return register


def check_scorer(name: str) -> str:
    if name not in SCORERS:
        raise ValueError(f"Unknown scorer '{name}': choose one of {sorted(SCORERS)}.")
    return name


@register_scorer("top1")
def top1(logits: torch.Tensor, batch: ScoringBatch, temperature: float) -> torch.Tensor:
    return (logits.argmax(1) == batch.references).float()


@register_scorer("kd")
def kd(logits: torch.Tensor, batch: ScoringBatch, temperature: float) -> torch.Tensor:
    if batch.teacher_log_probs is None:  # real data: the label's log-likelihood
        return -F.cross_entropy(logits, batch.references, reduction="none")
    t = batch.teacher_log_probs
    return -(t.exp() * (t - F.log_softmax(logits / temperature, 1))).sum(1)


@dataclass(frozen=True)
class PathScore:
    """One path's score (the mean of ``values``), its per-image values and its top-1 agreement."""

    score: float
    values: torch.Tensor
    agreement: float


@torch.no_grad()
def score_path(supernet: nn.Module, path: Sequence[int], bn_batches: Iterable, scoring: ScoringSet,
               scorer: str = "top1") -> PathScore:
    """``scorer`` of ``path`` on ``scoring`` after BN recalibration on ``bn_batches`` (``(x, ...)`` each).

    The BN statistics are left as recalibrated; callers that train on afterwards restore them
    (:func:`batchnorm_state_kept`)."""
    fn = SCORERS[check_scorer(scorer)]
    device = scoring.batches[0].x.device if scoring.batches else "cpu"
    for bn in batchnorms(supernet):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the recalibration batches
    supernet.train()
    for batch in bn_batches:
        supernet(batch[0].to(device), path)
    supernet.eval()
    values, hits = [], []
    for b in scoring.batches:
        logits = supernet(b.x, path)
        values.append(fn(logits, b, scoring.temperature).double().cpu())
        hits.append((logits.argmax(1) == b.references).cpu())
    v = torch.cat(values) if values else torch.zeros(0, dtype=torch.float64)
    n = max(len(v), 1)
    return PathScore(float(v.sum()) / n, v, float(torch.cat(hits).sum()) / n if hits else 0.0)


def first(loader: Iterable, limit: int | None) -> Iterable:
    """The first ``limit`` batches of ``loader`` (all when ``limit`` is None)."""
    return loader if limit is None else islice(loader, limit)


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


def score_paths(supernet: nn.Module, paths: Sequence[Sequence[int]], bn_loader: Iterable, scoring: ScoringSet,
                bn_batches: int | None, scorer: str = "top1") -> list[PathScore]:
    """``score_path`` for each path, the supernet's BN state restored after: for a search that scores paths of a
    supernet it goes on using (the health check of a gradient search)."""
    with batchnorm_state_kept(supernet):
        return [score_path(supernet, p, first(bn_loader, bn_batches), scoring, scorer) for p in paths]
