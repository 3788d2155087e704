"""The pilot's spread, noise and predicted taus, overall and inside its equal-FLOPs group.

    python studies/macro_pilot/analyse.py    (writes studies/macro_pilot/analysis.md)
"""

from __future__ import annotations

import json
from pathlib import Path

from dfnas_pl.drivers.rank_signal import group_signal, seeds_for

HERE = Path(__file__).parent
EQUAL_FLOPS = ["a02", "a03", "a04", "a05", "a06"]  # 0.405-0.426 MFLOPs, depth 2 to 8


def main() -> str:
    lines = ["| pilot | group | n | metric | spread sd | noise sd | spread/noise | observed seed tau | predicted seed "
             "tau | predicted tau vs 2-seed mean | seeds for tau 0.75 vs the mean |", "|" + "---|" * 11]
    for name in ("pilot_3ep", "pilot_6ep"):
        path = HERE / f"{name}.json"
        if not path.is_file():
            continue
        gt = json.loads(path.read_text())
        archs = [a for a in gt["architectures"] if len(a["top1"]) == 2]
        for group, members in (("all", archs), ("equal FLOPs", [a for a in archs if a["id"] in EQUAL_FLOPS])):
            for metric, sign in (("top1", 100.0), ("nll", -1.0)):
                values = [[sign * v for v in a[metric].values()] for a in members]
                s = group_signal(values, 2)
                k = seeds_for(s["spread_sd"], s["noise_sd"], 0.75)
                lines.append(f"| {name} | {group} | {s['n']} | {metric} | {s['spread_sd']:.3f} | {s['noise_sd']:.3f} | "
                             f"{s['spread_over_noise']:.1f} | {s['observed_seed_tau']:.2f} | "
                             f"{s['predicted_seed_tau']:.2f} | {s['predicted_truth_vs_2_seed_mean']:.2f} | {k} |")
    table = "\n".join(lines)
    (HERE / "analysis.md").write_text(table + "\n\n(top1 in points; NLL ranked by its negative. Predictions: "
                                      "tau = (2/pi) asin(rho), dfnas_pl.drivers.rank_signal.)\n")
    return table


if __name__ == "__main__":
    print(main())
