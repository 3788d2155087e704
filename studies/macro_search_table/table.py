"""The search table a NAS reviewer asks for: each strategy and scorer against the rules of thumb, over search seeds.

Reads the found architectures (``found/``, from search.py) and their real-data accuracy with the macro ground
truth's recipe (``studies/macro_groundtruth/macro_uniform.json`` when it holds the architecture, else this
study's ``found.json``), 2 training seeds each. Rows, all under the search's FLOPs limit:

* each (supernet training set, scorer, strategy): the mean over search seeds of the found architecture's top-1,
  a 95 % t-interval over search seeds, and the regret to the best architecture known under the limit;
* random sampling: the mean of the ground truth's uniformly drawn architectures under the limit (interval over
  architectures): what a user gets by picking one at random;
* the rule of thumb "the largest architecture under the limit".

    python studies/macro_search_table/table.py      # -> search_table.md
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from dfnas_pl.stats import T95, t_interval  # noqa: E402
from dfnas_pl.utils.io import atomic_write_bytes  # noqa: E402

GROUNDTRUTH = ROOT / "studies/macro_groundtruth/macro_uniform.json"
FOUND = HERE / "found.json"


def mean_interval(xs: list[float]) -> tuple[float, float, float]:
    """Mean and its 95 % Student-t interval (:func:`dfnas_pl.stats.t_interval`; NaN for a single value)."""
    return (statistics.fmean(xs), *t_interval(xs))


def welch(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Mean difference xs - ys and its 95 % Welch interval (Welch-Satterthwaite degrees of freedom, rounded
    down: the wider interval)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    vx, vy = statistics.variance(xs) / len(xs), statistics.variance(ys) / len(ys)
    df = (vx + vy) ** 2 / (vx ** 2 / (len(xs) - 1) + vy ** 2 / (len(ys) - 1)) if vx + vy > 0 else math.inf
    h = T95.get(max(1, math.floor(df)), 1.96) * math.sqrt(vx + vy)
    return mx - my, mx - my - h, mx - my + h


def truths() -> dict[tuple, dict]:
    """choices -> {top1: seed mean, seeds, flops, uniform} for every trained architecture (>= 2 seeds)."""
    out = {}
    for path in (GROUNDTRUTH, FOUND):
        if not path.exists():
            continue
        for a in json.loads(path.read_text())["architectures"]:
            if len(a.get("top1", {})) >= 2:
                out[tuple(a["choices"])] = {"top1": statistics.fmean(a["top1"].values()), "seeds": len(a["top1"]),
                                            "flops": a["flops"], "uniform": a.get("stratum") == "uniform"}
    return out


def main() -> None:
    known = truths()
    found = [json.loads(p.read_text()) for p in sorted((HERE / "found").glob("*.json"))]
    cfg = yaml.safe_load((HERE / "groundtruth_found.yaml").read_text())
    largest = tuple(cfg["selection"]["include"][0])
    limit = 0.45e6
    under = {c: t for c, t in known.items() if t["flops"] <= limit}
    best = max(t["top1"] for t in under.values())
    rows = ["| search (supernet trained on) | scorer | strategy | search seeds | found top-1 (%) [95 % CI over seeds] "
            "| regret (points) | minus random sampling [CI] | minus random search, same supernets [CI] "
            "| minus the largest [CI] | found MFLOPs |",
            "|---|---|---|---:|---|---:|---|---|---|---:|"]
    groups: dict[tuple, dict[str, dict]] = {}
    for rec in found:
        train = "2,000 generator images" if rec["supernet"].startswith("gen2000") else "400 shipped images"
        groups.setdefault((train, rec["scorer"], rec["strategy"]), {})[rec["supernet"]] = rec
    rand = [t["top1"] for t in under.values() if t["uniform"]]
    r_mean, r_lo, r_hi = mean_interval(rand)
    big = known.get(largest, {}).get("top1")

    def acc(rec: dict) -> float | None:
        t = known.get(tuple(rec["choices"]))
        return None if t is None else t["top1"]

    def ci(d: tuple[float, float, float]) -> str:
        return f"{100 * d[0]:+.2f} [{100 * d[1]:+.2f}, {100 * d[2]:+.2f}]" if not math.isnan(d[1]) else f"{100 * d[0]:+.2f}"

    for (train, scorer, strategy), recs in sorted(groups.items()):
        accs = [a for a in (acc(r) for r in recs.values()) if a is not None]
        if not accs:
            continue
        m, lo, hi = mean_interval(accs)
        flops = statistics.fmean(r["flops"] for r in recs.values()) / 1e6
        vs_rand = ci(welch(accs, rand)) if len(accs) > 1 else f"{100 * (m - r_mean):+.2f}"
        other = groups.get((train, scorer, "random")) if strategy == "evolution" else None
        pairs = [(acc(r), acc(other[k])) for k, r in recs.items() if other and k in other]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        vs_rs = ci(mean_interval([a - b for a, b in pairs])) if pairs else "-"
        vs_big = ci(mean_interval([a - big for a in accs])) if big is not None else "-"
        rows.append(f"| {train} | {scorer} | {strategy} | {len(accs)}/{len(recs)} | {100 * m:.2f} "
                    f"[{100 * lo:.2f}, {100 * hi:.2f}] | {100 * (best - m):.2f} | {vs_rand} | {vs_rs} | {vs_big} | "
                    f"{flops:.3f} |")
    rows.append(f"| random sampling ({len(rand)} uniform ground-truth architectures under the limit) | - | - | - | "
                f"{100 * r_mean:.2f} [{100 * r_lo:.2f}, {100 * r_hi:.2f}] | {100 * (best - r_mean):.2f} | - | - | - | - |")
    if big is not None:
        rows.append(f"| the largest under the limit ({known[largest]['flops'] / 1e6:.3f} MFLOPs) | - | - | - | "
                    f"{100 * big:.2f} | {100 * (best - big):.2f} | {100 * (big - r_mean):+.2f} | - | - | - |")
    rows.append("")
    rows.append(f"Best known under the limit (0.45 MFLOPs): {100 * best:.2f} % over {len(under)} trained architectures. "
                f"Each architecture's top-1 is the mean of its 2-3 training seeds with the ground truth's recipe.")
    atomic_write_bytes(HERE / "search_table.md", ("\n".join(rows) + "\n").encode())
    print("\n".join(rows))


if __name__ == "__main__":
    main()
