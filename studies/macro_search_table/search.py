"""Every search strategy and scorer on the same supernets: what each would have exported.

For each kept macro SPOS search (``evolution_supernet.pt``: the weights its evolution scored with, and its
``config.yaml``), run the search's own selection again, offline and deterministically, for each scorer
(``top1``, ``kd``) and strategy (``evolution``: SPOS's; ``random``: random search with weight sharing, as many
candidates, the best kept), with the product's :class:`~dfnas_pl.search.evolution.EvolutionSearch` and
:func:`~dfnas_pl.search.scoring.score_path` and the search's own settings (population, generations, FLOPs
limit, seed, BN batches, search-val images). ``evolution`` with ``top1`` is what the shipped search exported
(checked against its ``architecture.json``). Also writes the rule of thumb "the largest architecture under the
limit" (most FLOPs, then most parameters).

    python studies/macro_search_table/search.py --supernet e160_s0=runs/search_health/macro_spos_e160_s0 ...

One record per (supernet, scorer, strategy) in ``found/``; ``groundtruth_found.yaml`` (the macro ground truth's
recipe) lists in ``selection.include`` every found architecture the macro ground truth does not already hold,
appended in order, so earlier ids keep their records.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dfnas_pl.drivers.commands import versions  # noqa: E402
from dfnas_pl.search.evolution import EvolutionSearch, candidate_key  # noqa: E402
from dfnas_pl.search.scoring import ScoringSet, batchnorm_state_kept, first, score_path  # noqa: E402
from dfnas_pl.utils.io import atomic_write_bytes, atomic_write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
GROUNDTRUTH = "studies/macro_groundtruth/macro_uniform.json"
GROUNDTRUTH_CONFIG = "studies/macro_groundtruth/groundtruth_macro_uniform.yaml"
sys.path.insert(0, str(ROOT / "studies" / "macro_scorer"))
from run import load_search  # noqa: E402  (the scorer study's loader: the same supernet, data and teacher)


def largest_under_limit(supernet, limit_mflops: float) -> list[str]:
    """The rule of thumb: the most FLOPs under the limit (the first path in order on a tie)."""
    import itertools

    fixed, table = supernet.cost_table()
    feasible = [(fixed + sum(row[c] for row, c in zip(table, p)), p)
                for p in itertools.product(*[range(n) for n in supernet.num_choices])]
    _, best = max(((f, p) for f, p in feasible if f <= limit_mflops * 1e6), key=lambda t: t[0])
    return [n[c] for n, c in zip(supernet.choice_names, best)]


def search_one(supernet, bn_loader, scoring: ScoringSet, m: dict, scorer: str, strategy: str) -> dict:
    """The search's selection with its own settings, on its supernet, for one scorer and strategy."""
    fixed, table = supernet.cost_table()

    def cost(c) -> float:
        return fixed + sum(row[i] for row, i in zip(table, c))

    def fitness(c) -> float:
        return score_path(supernet, c, first(bn_loader, m["bn_recalibration_batches"]), scoring, scorer).score

    start = time.time()
    limit = None if m["max_mflops"] is None else m["max_mflops"] * 1e6
    search = EvolutionSearch(supernet.num_choices, cost, limit, m["population"], m["generations"], m["top_k"],
                             m["mutation_prob"], seed=m["seed"], strategy=strategy)
    with batchnorm_state_kept(supernet):
        best = search.run(fitness)
    return {"scorer": scorer, "strategy": strategy, "choices": [n[c] for n, c in zip(supernet.choice_names, best)],
            "flops": cost(best), "score": search.state["scores"][candidate_key(best)],
            "scored": len(search.state["scores"]), "seconds": round(time.time() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--supernet", action="append", default=[], help="name=search run dir")
    ap.add_argument("--scorers", nargs="+", default=["top1", "kd"])
    ap.add_argument("--strategies", nargs="+", default=["evolution", "random"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    (HERE / "found").mkdir(exist_ok=True)
    for sup in args.supernet:
        sname, run_dir = sup.split("=", 1)
        todo = [(sc, st) for sc in args.scorers for st in args.strategies
                if not (HERE / "found" / f"{sname}__{sc}__{st}.json").exists()]
        if not todo:
            continue
        supernet, dm, teacher, m, _ = load_search(ROOT / run_dir)
        bn_loader, val_loader = dm.scoring_loaders()
        scoring = ScoringSet(first(val_loader, m["score_batches"]), teacher, m["temperature"])
        exported = json.loads((ROOT / run_dir / "architecture.json").read_text())["choices"]
        for scorer, strategy in todo:
            rec = search_one(supernet, bn_loader, scoring, m, scorer, strategy)
            rec.update(supernet=sname, run_dir=run_dir, same_as_exported=rec["choices"] == exported, versions=versions(),
                       command="python studies/macro_search_table/search.py " + " ".join(sys.argv[1:]))
            atomic_write_json(HERE / "found" / f"{sname}__{scorer}__{strategy}.json", rec)
            print(f"{sname} {scorer} {strategy}: {rec['choices']} {rec['flops'] / 1e6:.3f} MFLOPs "
                  f"(exported by the search: {rec['same_as_exported']}), {rec['seconds']} s", flush=True)
    found = [json.loads(p.read_text()) for p in sorted((HERE / "found").glob("*.json"))]
    listed = HERE / "groundtruth_found.yaml"
    archs = yaml.safe_load(listed.read_text())["selection"]["include"] if listed.exists() else []
    known = {tuple(a["choices"]) for a in json.loads((ROOT / GROUNDTRUTH).read_text())["architectures"]}
    if not archs and args.supernet:  # first: the rule of thumb, the same for every supernet of one space and limit
        supernet, _, _, m, _ = load_search(ROOT / args.supernet[0].split("=", 1)[1])
        archs.append(largest_under_limit(supernet, m["max_mflops"]))
    for rec in found:  # appended in order, so every earlier id keeps its records
        if rec["choices"] not in archs and tuple(rec["choices"]) not in known:
            archs.append(rec["choices"])
    cfg = yaml.safe_load((ROOT / GROUNDTRUTH_CONFIG).read_text())
    cfg.update(output=str(HERE.relative_to(ROOT) / "found.json"), work_dir=str(HERE.relative_to(ROOT) / "jobs"),
               seeds=[0, 1], selection={"stratified": 0, "median_band": 0, "flops_bands": 0, "include": archs})
    header = ("# Written by search.py: the found architectures that the macro ground truth does not hold (and the\n"
              "# largest under the limit, first), trained with the ground truth's recipe. Appended in order.\n"
              "#   python -m dfnas_pl groundtruth --config studies/macro_search_table/groundtruth_found.yaml\n")
    atomic_write_bytes(listed, (header + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)).encode())

if __name__ == "__main__":
    main()
