"""Can this search choose? The health check every search runs before it exports.

A one-shot search picks an architecture by scores a supernet gives it. When the supernet has learned too
little, those scores are noise: evolution then keeps the luckiest candidate, a gradient search the arbitrary
argmax of its parameters, and the exported architecture says nothing about the data. Two questions, each a
one-sided test at ``alpha`` (1 %), on the very scores the search used:

* **learned**: does the supernet agree with its references (the teacher's argmax, or the labels) on the
  scoring images more often than chance? The level tested is the median candidate's score (a search of
  single paths) or the chosen architecture's (a gradient search); chance is the share of the most frequent
  reference class, what a network that always answers that class would score. The level must exceed chance
  by the binomial margin of ``images`` at that chance.
* **separates**: do the candidates' scores spread wider than the scoring images' noise alone would spread
  them? The searches give every candidate's per-image values on the *same* images, so the test is paired: a
  two-way analysis of variance (candidates x images, no replication) takes out each image's difficulty, which
  every candidate shares, and compares the spread of the candidates' means with the candidate-by-image
  residual: F = MS_candidates / MS_residual, and (k - 1) F is chi-square with k - 1 degrees of freedom in the
  limit of many images (here (k - 1)(n - 1) residual degrees of freedom: thousands). It holds for any
  per-image score (top-1's 0/1 or a continuous one). Given only the k means (score files that kept nothing
  else), the unpaired test: (k - 1) s^2 / (p (1 - p) / n), the binomial noise of top-1 agreement p on n
  images, which ignores the shared images and so errs toward "cannot separate". The candidates are those
  drawn at random (SPOS's first generation, random paths of a gradient search's supernet), not evolution's
  later, already selected ones.

A search that fails either refuses to export (a one-line error; ``export_unhealthy`` exports anyway and
records that it did). Why these two and not a fixed agreement threshold, and how they read on supernets
whose ranking quality is known: studies/search_health/README.md.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

ALPHA = 0.01  # each test's false-pass rate


def _z(alpha: float) -> float:
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1.0 - alpha)))


def chi2_sf(x: float, dof: int) -> float:
    """P(X >= x) for X ~ chi-square(dof) (the regularised upper incomplete gamma function)."""
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64),
                                         torch.tensor(max(x, 0.0) / 2.0, dtype=torch.float64)))


def chance_level(references: torch.Tensor | Sequence[int]) -> float:
    """Share of the most frequent reference class: the agreement of a constant answer."""
    refs = torch.as_tensor(references).flatten().long()
    if refs.numel() == 0:
        return 0.0
    return float(torch.bincount(refs).max()) / refs.numel()


@dataclass(frozen=True)
class Health:
    """The verdict and every number it rests on (written into ``architecture.json`` as ``health``)."""

    algorithm: str
    images: int                 # scoring images per candidate
    chance: float               # the most frequent reference class's share
    level: float                # the median random candidate's score, or the chosen architecture's
    level_floor: float          # chance plus the one-sided binomial margin of ``images``
    level_of: str               # what ``level`` is ("median of 16 random candidates", ...)
    reference: str              # what the scores agree with ("the teacher" or "the labels")
    candidates: int             # random candidates behind the spread test (0: not tested)
    spread: float | None        # their scores' standard deviation
    noise: float | None         # sampling sd of one score (paired: after the images' shared difficulty)
    spread_p: float | None      # chi-square p-value of that spread under "all equal"
    learned: bool
    separates: bool | None      # None: not tested (fewer than 3 candidates)
    alpha: float = ALPHA
    exported_anyway: bool = False
    spread_test: str | None = None  # "paired" (per-image values) or "binomial" (means only)
    scorer: str = "top1"        # what the spread is measured on (the level is always top-1 agreement)

    @property
    def can_choose(self) -> bool:
        return self.learned and self.separates is not False

    @property
    def verdict(self) -> str:
        return "chooses" if self.can_choose else "cannot choose"

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "verdict": self.verdict, "can_choose": self.can_choose}

    def line(self) -> str:
        """One line for the log, the error and the pipeline's table."""
        name = {"spos": "SPOS", "darts": "DARTS", "proxylessnas": "ProxylessNAS"}.get(self.algorithm, self.algorithm)
        parts = [f"the supernet agrees with {self.reference} on {self.level:.0%} of {self.images} search-val images "
                 f"({self.level_of}); chance is {self.chance:.0%}, learning needs >= {self.level_floor:.0%}"]
        if self.separates is not None:
            parts.append(f"its {self.candidates} random candidates' {self.scorer} scores spread "
                         f"{self.spread / max(self.noise, 1e-12):.1f}x the noise of {self.images} images "
                         f"(p = {self.spread_p:.2g}; separating needs p < {self.alpha:g})")
        verdict = f"{name} {'can choose' if self.can_choose else 'cannot choose'}: " + "; ".join(parts)
        if self.can_choose:
            return verdict + "."
        return (verdict + ". Train the supernet longer (--trainer.max_epochs or --trainer.max_steps) or give it "
                "more images (a larger synthetic set, or a larger data.init_args.val_fraction for more scoring "
                "images).")


def paired_spread(values: torch.Tensor) -> tuple[float, float, float]:
    """(spread, noise, p) of k candidates' per-image values on the same n images (a k x n tensor): the sd of
    their means, the sd one mean has from the candidate-by-image residual, and the chi-square p-value of
    (k - 1) F (module docstring)."""
    v = values.double()
    k, n = v.shape
    means = v.mean(1)
    resid = v - means[:, None] - v.mean(0, keepdim=True) + v.mean()
    ms_res = float((resid ** 2).sum()) / max((k - 1) * (n - 1), 1)
    noise = math.sqrt(max(ms_res, 1e-12) / n)
    spread = float(means.std())
    return spread, noise, chi2_sf((k - 1) * spread ** 2 / noise ** 2, k - 1)


def binomial_spread(scores: Sequence[float], n: int) -> tuple[float, float, float]:
    """(spread, noise, p) from top-1 means alone: the binomial noise of n images at their mean agreement."""
    mean, spread = statistics.fmean(scores), statistics.stdev(scores)
    noise = math.sqrt(max(mean * (1 - mean), 1.0 / n) / n)  # a floor: all-right or all-wrong still has noise
    return spread, noise, chi2_sf((len(scores) - 1) * spread ** 2 / noise ** 2, len(scores) - 1)


def check_health(algorithm: str, references: torch.Tensor | Sequence[int], level: float, level_of: str,
                 random_scores: Sequence[float] | torch.Tensor = (), reference: str = "the teacher",
                 alpha: float = ALPHA, scorer: str = "top1") -> Health:
    """The verdict from the scoring set's references, the level to test (top-1 agreement) and the random
    candidates' scores: a k x n tensor of per-image values (the paired test) or k top-1 means (binomial)."""
    refs = torch.as_tensor(references).flatten()
    n = int(refs.numel())
    if n == 0:
        raise ValueError(f"The {algorithm} health check got no scoring images: the search-val split is empty "
                         f"(raise data.init_args.val_fraction).")
    chance = chance_level(refs)
    floor = chance + _z(alpha) * math.sqrt(chance * (1 - chance) / n)
    paired = torch.is_tensor(random_scores) and random_scores.dim() == 2
    k = int(random_scores.shape[0]) if paired else len(random_scores)
    spread = noise = p = None
    separates = test = None
    if k >= 3:
        if paired:
            spread, noise, p = paired_spread(random_scores)
            test = "paired"
        else:
            spread, noise, p = binomial_spread([float(s) for s in random_scores], n)
            test, scorer = "binomial", "top1"
        separates = p < alpha
    return Health(algorithm=algorithm, images=n, chance=round(chance, 4), level=round(float(level), 4),
                  level_floor=round(floor, 4), level_of=level_of, reference=reference, candidates=k,
                  spread=None if spread is None else round(spread, 6), noise=None if noise is None else round(noise, 6),
                  spread_p=None if p is None else float(f"{p:.4g}"), learned=float(level) > floor,
                  separates=separates, alpha=alpha, spread_test=test, scorer=scorer)


class SearchCannotChoose(ValueError):
    """Raised (one line, exit 2) when a search would export an architecture its scores cannot justify."""


def enforce(health: Health, export_unhealthy: bool) -> Health:
    """Refuse an unhealthy export unless the user asked for it; the returned verdict records that they did."""
    if health.can_choose:
        return health
    if not export_unhealthy:
        raise SearchCannotChoose(health.line() + " To export anyway: --model.init_args.export_unhealthy true "
                                 "(recorded in architecture.json).")
    return dataclasses.replace(health, exported_anyway=True)
