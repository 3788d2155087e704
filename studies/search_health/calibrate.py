"""How the health check reads supernets whose ranking quality is known (studies/macro_rank_fidelity).

Each committed rank-fidelity score file holds one supernet's top-1 agreement on the 34 macro ground-truth
architectures (100 search-val images for the 500-image sources, 2,000 for real_full). Treating those 34 as the
random candidates, the health check's two tests are applied as a search would apply them, and set beside the
supernet's Kendall tau against the ground truth. Chance is taken as 0.10 (balanced references: the synthetic
sets are made 50 per class; the real splits are near-balanced), since the score files keep no references.

    python studies/search_health/calibrate.py      -> calibration.md
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from dfnas_pl.search.health import check_health
from dfnas_pl.stats import kendall_tau
from dfnas_pl.utils.io import atomic_write_bytes

HERE = Path(__file__).resolve().parent
SCORES = HERE.parent / "macro_rank_fidelity" / "scores"
TRUTH = HERE.parent / "macro_groundtruth" / "macro.json"


def main() -> None:
    truth = {a["id"]: a["mean_top1"] for a in json.loads(TRUTH.read_text())["architectures"]}
    lines = ["| trained on | scored on | steps | seed | images | median | floor | spread / noise | chi-square p | "
             "verdict | Kendall tau vs truth |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    rows = []
    for f in sorted(SCORES.glob("*.json")):
        d = json.loads(f.read_text())
        for scored_on, scores in d["scores"].items():
            ids = sorted(scores)
            v = [scores[i] for i in ids]
            n = 2000 if scored_on == "real_full" else 100
            h = check_health("spos", [k % 10 for k in range(n)], statistics.median(v), "median of 34", v)
            tau = kendall_tau(v, [truth[i] for i in ids])
            rows.append((d["source"], scored_on, d["steps"], d["seed"], n, h, tau))
    for src, on, steps, seed, n, h, tau in sorted(rows, key=lambda r: (r[0], r[1], r[2], r[3])):
        lines.append(f"| {src} | {on} | {steps} | {seed} | {n} | {h.level:.2f} | {h.level_floor:.2f} | "
                     f"{h.spread / h.noise:.1f} | {h.spread_p:.2g} | {h.verdict} | {tau:.2f} |")
    ok = [r[6] for r in rows if r[5].can_choose]
    bad = [r[6] for r in rows if not r[5].can_choose]
    lines += ["", f"Kendall tau of the supernets that pass: mean {statistics.mean(ok):.2f} (n = {len(ok)}); that fail: "
                  f"mean {statistics.mean(bad):.2f} (n = {len(bad)})."]
    text = "\n".join(lines)
    atomic_write_bytes(HERE / "calibration.md", (text + "\n").encode())
    print(text)


if __name__ == "__main__":
    main()
