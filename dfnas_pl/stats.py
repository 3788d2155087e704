"""The statistics every study here reports, in one place: Student-t intervals of a mean over seeds, rank
correlations (Kendall's tau-b and Spearman's rho, from torchmetrics) and a percentile bootstrap over items,
paired against a baseline when one is given."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

import torch
from torchmetrics.functional import kendall_rank_corrcoef, spearman_corrcoef

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086,
       21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042}
"""Two-sided 95 % Student-t quantiles by degrees of freedom (beyond 30: the normal 1.96; the table used to stop
at 10, which made intervals of 12-31 values too narrow; no committed study had more than 8)."""


def t_interval(values: list[float]) -> tuple[float, float]:
    """95 % Student-t interval of the mean (NaN for fewer than 2 values)."""
    if len(values) < 2:
        return math.nan, math.nan
    half = T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    mean = statistics.mean(values)
    return mean - half, mean + half


def _t(x: Sequence[float]) -> torch.Tensor:
    return torch.as_tensor([float(v) for v in x], dtype=torch.float64)


def kendall_tau(score: Sequence[float], truth: Sequence[float]) -> float:
    """Kendall tau-b (torchmetrics); NaN when either side is constant or fewer than 2 items."""
    if len(score) < 2:
        return math.nan
    return float(kendall_rank_corrcoef(_t(score), _t(truth), variant="b"))


def spearman_rho(score: Sequence[float], truth: Sequence[float]) -> float:
    """Spearman rho (torchmetrics, average ranks for ties); NaN when undefined."""
    s, t = _t(score), _t(truth)
    if len(s) < 2 or bool((s == s[0]).all()) or bool((t == t[0]).all()):
        return math.nan
    return float(spearman_corrcoef(s, t))


def bootstrap_interval(metric: Callable[[Sequence[float], Sequence[float]], float], score: Sequence[float],
                       truth: Sequence[float], baseline: Sequence[float] | None = None, samples: int = 1000,
                       level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``metric(score, truth)`` over architectures resampled with replacement.

    With ``baseline``: the interval of ``metric(score, truth) - metric(baseline, truth)`` on the *same*
    resamples (a paired bootstrap), whose lower end above 0 means the score beats the baseline."""
    gen = torch.Generator().manual_seed(seed)
    s, t = _t(score), _t(truth)
    b = _t(baseline) if baseline is not None else None
    values = []
    for _ in range(samples):
        idx = torch.randint(0, len(s), (len(s),), generator=gen)
        v = metric(s[idx].tolist(), t[idx].tolist())
        if b is not None:
            v -= metric(b[idx].tolist(), t[idx].tolist())
        if not math.isnan(v):
            values.append(v)
    if not values:
        return math.nan, math.nan
    q = torch.tensor(values, dtype=torch.float64)
    alpha = (1 - level) / 2
    return float(torch.quantile(q, alpha)), float(torch.quantile(q, 1 - alpha))
