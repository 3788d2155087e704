"""Ranking fidelity: how well one score orders a fixed set of architectures against their true accuracy.

The NAS literature judges a weight-sharing supernet (and here: the data it was trained on) by the rank
correlation between its scores and stand-alone accuracies over a fixed architecture set: Kendall's tau
(tau-b, ties allowed) and Spearman's rho, both from torchmetrics. The interval is a percentile bootstrap
over architectures (resampled with replacement; a seeded loop, so a table is reproducible), and a paired
bootstrap of the difference to a baseline score tells whether a source ranks *significantly* better than,
say, FLOPs alone. Besides correlations, what a search actually uses: does the score's top quarter hit the
true top quarter, and how much accuracy does picking the best-scored architecture lose (regret)?
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from dfnas_pl.stats import bootstrap_interval, kendall_tau, spearman_rho

__all__ = ["bootstrap_interval", "fidelity", "kendall_tau", "regret", "spearman_rho", "top_k", "top_quarter_recall",
           "within_group_tau"]


def top_k(values: Sequence[float], k: int) -> set[int]:
    """Indices of the k largest values (ties broken by index, so the result is deterministic)."""
    return set(sorted(range(len(values)), key=lambda i: (-values[i], i))[:k])


def top_quarter_recall(score: Sequence[float], truth: Sequence[float]) -> float:
    """Share of the score's top quarter (k = round(n / 4)) that lies in the true top quarter."""
    k = max(1, round(len(score) / 4))
    return len(top_k(score, k) & top_k(truth, k)) / k


def regret(score: Sequence[float], truth: Sequence[float]) -> tuple[float, float]:
    """(true accuracy of the best-scored architecture, best true accuracy minus it)."""
    picked = truth[min(top_k(score, 1))]
    return picked, max(truth) - picked


def within_group_tau(score: Sequence[float], truth: Sequence[float], groups: Sequence[str | None]) -> float:
    """Mean Kendall tau inside each group (e.g. equal-FLOPs bands; ``None``: in no group).

    Pooling several bands into one tau would reward a score that only orders the bands by FLOPs; the
    mean of the per-band taus asks, band by band, whether the score knows more than FLOPs. Groups of
    fewer than 3 architectures, and groups whose tau is undefined, are left out."""
    taus = []
    for g in sorted({g for g in groups if g is not None}):
        idx = [i for i, x in enumerate(groups) if x == g]
        if len(idx) >= 3:
            t = kendall_tau([score[i] for i in idx], [truth[i] for i in idx])
            if not math.isnan(t):
                taus.append(t)
    return sum(taus) / len(taus) if taus else math.nan


def fidelity(score: Sequence[float], truth: Sequence[float], band: Sequence[bool] | None = None,
             flops: Sequence[float] | None = None, samples: int = 1000, seed: int = 0,
             groups: Sequence[str | None] | None = None) -> dict[str, float]:
    """Every ranking number of one score against the truth (both over the same architectures).

    ``band`` marks the architectures in the median-FLOPs band (tau there says whether the score
    knows more than "bigger is better"); ``groups`` names each architecture's equal-FLOPs band for the
    mean within-band tau; ``flops`` adds the paired difference to the FLOPs baseline."""
    lo, hi = bootstrap_interval(kendall_tau, score, truth, samples=samples, seed=seed)
    picked, loss = regret(score, truth)
    row = {"n": len(score), "kendall_tau": kendall_tau(score, truth), "spearman_rho": spearman_rho(score, truth),
           "tau_ci_low": lo, "tau_ci_high": hi, "band_tau": math.nan, "band_n": 0,
           "top25_recall": top_quarter_recall(score, truth), "best_scored_top1": picked, "regret": loss}
    if band is not None:
        idx = [i for i, inside in enumerate(band) if inside]
        row["band_n"] = len(idx)
        row["band_tau"] = kendall_tau([score[i] for i in idx], [truth[i] for i in idx])
    if groups is not None:
        row["within_band_tau"] = within_group_tau(score, truth, groups)
    if flops is not None:
        row["tau_minus_flops_ci_low"], row["tau_minus_flops_ci_high"] = bootstrap_interval(
            kendall_tau, score, truth, baseline=flops, samples=samples, seed=seed)
    return row
