"""How much ranking signal a ground truth holds: the architectures' true spread against run-to-run noise.

With ``k`` seeds per architecture, the noise variance is estimated from the seed-to-seed differences
(``sn^2``: the mean within-architecture variance) and the true spread from the variance of the seed
means less the part that noise explains (``sa^2 = var(mean) - sn^2 / k``). For Gaussian spread and
noise, the rank agreement that follows from them is Kendall's

    tau = (2 / pi) * asin(rho),

with ``rho = sa^2 / (sa^2 + sn^2)`` for one seed against another seed (the noise ceiling), and
``rho = sqrt(r_k)`` for the true ranking against the ``k``-seed mean, whose reliability follows the
Spearman-Brown formula ``r_k = k r_1 / (1 + (k - 1) r_1)``: the best tau any search-data source can
reach against a ``k``-seed ground truth. A pilot's ``sa`` and ``sn`` so predict, before the hours are
spent, whether a recipe and a seed count can reach a target tau.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from dfnas_pl.stats import bootstrap_interval, kendall_tau


def tau_of_rho(rho: float) -> float:
    """Kendall's tau of a bivariate Gaussian with correlation ``rho`` (Greiner's relation)."""
    return 2 / math.pi * math.asin(max(-1.0, min(1.0, rho)))


def spread_and_noise(per_seed: Sequence[Sequence[float]]) -> tuple[float, float]:
    """(sa, sn) from the per-seed values of each architecture (each with the same number >= 2 of seeds)."""
    k = len(per_seed[0])
    noise_var = statistics.mean(statistics.variance(v) for v in per_seed)
    means = [statistics.mean(v) for v in per_seed]
    spread_var = max(0.0, statistics.variance(means) - noise_var / k) if len(means) > 1 else 0.0
    return math.sqrt(spread_var), math.sqrt(noise_var)


def predicted_taus(sa: float, sn: float, seeds: int) -> dict[str, float]:
    """Seed-vs-seed tau, and tau of the truth against the ``seeds``-seed mean (Spearman-Brown)."""
    if sa == 0 and sn == 0:
        return {"seed_vs_seed": math.nan, "truth_vs_mean": math.nan}
    r1 = sa * sa / (sa * sa + sn * sn)
    rk = seeds * r1 / (1 + (seeds - 1) * r1)
    return {"seed_vs_seed": tau_of_rho(r1), "truth_vs_mean": tau_of_rho(math.sqrt(rk))}


def seeds_for(sa: float, sn: float, target_tau: float, max_seeds: int = 16) -> int | None:
    """Fewest seeds whose mean the truth reaches ``target_tau`` against, or None within ``max_seeds``."""
    for k in range(1, max_seeds + 1):
        if predicted_taus(sa, sn, k)["truth_vs_mean"] >= target_tau:
            return k
    return None


def group_signal(values: Sequence[Sequence[float]], seeds: int) -> dict[str, Any]:
    """Spread, noise, observed seed-vs-seed tau (first two seeds, with a bootstrap interval; and the mean
    over all seed pairs) and the predicted taus of one group of architectures' per-seed values."""
    sa, sn = spread_and_noise(values)
    a, b = [v[0] for v in values], [v[1] for v in values]
    lo, hi = bootstrap_interval(kendall_tau, a, b, samples=1000) if len(values) >= 4 else (math.nan, math.nan)
    pred = predicted_taus(sa, sn, seeds)
    k = len(values[0])
    pairwise = [kendall_tau([v[i] for v in values], [v[j] for v in values]) for i in range(k) for j in range(i + 1, k)]
    return {"n": len(values), "spread_sd": sa, "noise_sd": sn, "spread_over_noise": sa / sn if sn else math.inf,
            "observed_seed_tau": kendall_tau(a, b), "seed_tau_ci": [lo, hi],
            # every pair of seeds (one pair with 2 seeds): less luck of the draw than the first pair alone
            "mean_pairwise_seed_tau": statistics.mean(pairwise),
            "predicted_seed_tau": pred["seed_vs_seed"], f"predicted_truth_vs_{seeds}_seed_mean": pred["truth_vs_mean"]}


def signal_report(archs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """The ground truth's signal overall and inside each FLOPs band, for top-1 and (where recorded) test
    NLL, over the architectures with every seed finished; FLOPs-only and params-only tau beside it."""
    done = [a for a in archs if len(a.get("top1", {})) == len(seeds)]
    if len(done) < 2:
        return {"n": len(done)}
    keys = [str(s) for s in seeds]
    out: dict[str, Any] = {"n": len(done), "seeds": len(seeds)}
    metrics = [("top1", 1.0)] + ([("nll", -1.0)] if all(len(a.get("nll", {})) == len(seeds) for a in done) else [])
    for metric, sign in metrics:  # NLL: lower is better, so it is ranked by its negative
        values = [[sign * a[metric][k] for k in keys] for a in done]
        entry = {"all": group_signal(values, len(seeds))}
        means = [statistics.mean(v) for v in values]
        entry["flops_tau"] = kendall_tau([float(a["flops"]) for a in done], means)
        if all("params" in a for a in done):
            entry["params_tau"] = kendall_tau([float(a["params"]) for a in done], means)
        bands = sorted({a["band"] for a in done if "band" in a})
        for band in bands:
            inside = [v for v, a in zip(values, done) if a.get("band") == band]
            if len(inside) >= 3:
                entry[f"band_{band}"] = group_signal(inside, len(seeds))
        if bands:
            taus = [entry[f"band_{b}"]["observed_seed_tau"] for b in bands if f"band_{b}" in entry]
            entry["mean_band_seed_tau"] = statistics.mean(taus) if taus else None
        out[metric] = entry
    return out
