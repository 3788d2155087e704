"""Which score should the macro SPOS search rank candidates by, on which images?

For each kept SPOS search (its ``evolution_supernet.pt``, the weights every evolution score came from, and its
``config.yaml``) and each scoring set (``own``: the search's own search-val split, what the shipped search
scores on; or a separate synthetic set the supernet never trained on), every ground-truth architecture and
16 random candidates under the search's FLOPs limit are scored with the product's own function
(:func:`dfnas_pl.search.scoring.score_path`: BN recalibration on the search's own search-train batches, then
per-image values), once per scorer. From the per-image values, per scorer and scoring-set size N:

* rank fidelity: Kendall tau against the ground truth's seed-mean top-1 over every architecture, and over the
  architectures the search may choose (FLOPs <= its limit), with paired bootstrap intervals of the difference
  to FLOPs alone and to the ``top1`` scorer on the same architectures;
* test-retest: tau between the scores on two disjoint N-image subsets, and between the two halves of the N
  images (how much of a ranking is the images' noise; the search's winner's curse grows with it);
* the health check's paired spread test on the random candidates;
* seconds per candidate.

    python studies/macro_scorer/run.py --supernet e160_s0=runs/search_health/macro_spos_e160_s0 \
        --set gen2500_s1=runs/macro_scorer/gen2500_s1

One record per (supernet, set) in ``records/``; ``scorer.md`` is rewritten from all records.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dfnas_pl.drivers.commands import versions  # noqa: E402
from dfnas_pl.search.health import paired_spread  # noqa: E402
from dfnas_pl.search.ranking import bootstrap_interval, kendall_tau  # noqa: E402
from dfnas_pl.search.scoring import SCORERS, ScoringSet, batchnorm_state_kept, first, score_path  # noqa: E402
from dfnas_pl.utils.io import atomic_write_bytes, atomic_write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
SIZES = (100, 500, 1000, 2500)


def load_search(run_dir: Path):
    from lightning.pytorch.cli import instantiate_class

    from dfnas_pl.search.layerwise_space import LayerwiseSpaceConfig, LayerwiseSupernet
    from dfnas_pl.teachers.loading import load_teacher

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    m = cfg["model"]["init_args"]
    supernet = LayerwiseSupernet(LayerwiseSpaceConfig.from_dict(m["space"]))
    supernet.load_state_dict(torch.load(run_dir / "evolution_supernet.pt", map_location="cpu", weights_only=True))
    init = dict(cfg["data"]["init_args"])
    if init.get("real_data"):
        init["real_data"] = instantiate_class((), init["real_data"])
    dm = instantiate_class((), {**cfg["data"], "init_args": init})
    dm.setup("fit")
    return supernet, dm, load_teacher(m["teacher"]).model.eval(), m, cfg


def scoring_batches(name: str, path: str, dm, batch_size: int):
    """The scoring images: the search's own search-val split, or a whole synthetic set."""
    if name == "own":
        return list(first(dm.scoring_loaders()[1], None))
    from torch.utils.data import DataLoader

    from dfnas_pl.data.synthetic import SyntheticImageDataset
    return list(DataLoader(SyntheticImageDataset(path), batch_size=batch_size, shuffle=False))


def metrics(values: dict[str, torch.Tensor], ids: list[str], truth: list[float], flops: list[float],
            feasible: list[bool], idx: torch.Tensor, reference: dict[str, torch.Tensor] | None) -> dict:
    score = [float(values[i][idx].mean()) for i in ids]
    row = {"kendall_tau": kendall_tau(score, truth),
           "tau_ci": list(bootstrap_interval(kendall_tau, score, truth, samples=1000, seed=0)),
           "minus_flops_ci": list(bootstrap_interval(kendall_tau, score, truth, baseline=flops, samples=1000, seed=0))}
    f = [k for k, ok in enumerate(feasible) if ok]
    row["feasible_tau"] = kendall_tau([score[k] for k in f], [truth[k] for k in f])
    if reference is not None:
        ref = [float(reference[i][idx].mean()) for i in ids]
        row["minus_top1_ci"] = list(bootstrap_interval(kendall_tau, score, truth, baseline=ref, samples=1000, seed=0))
    return row


def run_one(sname: str, run_dir: str, set_name: str, set_path: str, gt_path: str, candidates: int) -> dict:
    torch.set_num_threads(1)
    gt = json.loads((ROOT / gt_path).read_text())
    archs = [a for a in gt["architectures"] if len(a.get("top1", {})) >= 2]
    ids = [a["id"] for a in archs]
    truth = [statistics.fmean(a["top1"].values()) for a in archs]
    flops = [float(a["flops"]) for a in archs]
    supernet, dm, teacher, m, cfg = load_search(ROOT / run_dir)
    limit = m.get("max_mflops")
    feasible = [limit is None or a["flops"] <= limit * 1e6 for a in archs]
    scoring = ScoringSet(scoring_batches(set_name, set_path, dm, cfg["data"]["init_args"]["batch_size"]),
                         teacher, m["temperature"])
    n = len(scoring)
    bn_loader = dm.scoring_loaders()[0]
    paths = {a["id"]: [names.index(c) for names, c in zip(supernet.choice_names, a["choices"])] for a in archs}
    fixed, table = supernet.cost_table()  # the search's own FLOPs, for its feasibility rule

    def feasible_path(p: list[int]) -> bool:
        return limit is None or fixed + sum(row[c] for row, c in zip(table, p)) <= limit * 1e6

    rng = random.Random(0)
    while len(paths) < len(archs) + candidates:
        p = [rng.randrange(k) for k in supernet.num_choices]
        if feasible_path(p):
            paths[f"random{len(paths) - len(archs)}"] = p
    values: dict[str, dict[str, torch.Tensor]] = {s: {} for s in SCORERS}
    seconds = {}
    with batchnorm_state_kept(supernet):
        for scorer in SCORERS:
            start = time.time()
            for key, p in paths.items():
                values[scorer][key] = score_path(supernet, p, first(bn_loader, m["bn_recalibration_batches"]),
                                                 scoring, scorer).values
            seconds[scorer] = round((time.time() - start) / len(paths), 4)
    randoms = [k for k in paths if k.startswith("random")]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    record = {"supernet": sname, "run_dir": run_dir, "set": set_name, "set_path": set_path, "images": n,
              "groundtruth": gt_path, "architectures": len(archs), "feasible": sum(feasible), "max_mflops": limit,
              "flops_tau": kendall_tau(flops, truth),
              "flops_feasible_tau": kendall_tau([f for f, ok in zip(flops, feasible) if ok],
                                                [t for t, ok in zip(truth, feasible) if ok]),
              "seconds_per_candidate": seconds, "sizes": {}}
    for size in [s for s in SIZES if s <= n] + ([n] if n not in SIZES else []):
        idx = order[:size]
        row = {}
        for scorer in SCORERS:
            r = metrics(values[scorer], ids, truth, flops, feasible, idx,
                        values["top1"] if scorer != "top1" else None)
            spread, noise, p = paired_spread(torch.stack([values[scorer][k][idx] for k in randoms]))
            r.update(random_spread_over_noise=spread / noise, random_spread_p=p,
                     random_median_top1=statistics.median(float(values["top1"][k][idx].mean()) for k in randoms))
            half = idx[: size // 2], idx[size // 2:]  # the N images' two halves: test-retest at N / 2
            r["split_half_tau"] = kendall_tau([float(values[scorer][i][half[0]].mean()) for i in ids],
                                              [float(values[scorer][i][half[1]].mean()) for i in ids])
            if 2 * size <= n:
                a, b = order[:size], order[size:2 * size]
                r["test_retest_tau"] = kendall_tau([float(values[scorer][i][a].mean()) for i in ids],
                                                   [float(values[scorer][i][b].mean()) for i in ids])
            r["scores"] = {i: round(float(values[scorer][i][idx].mean()), 5) for i in ids}
            row[scorer] = r
        record["sizes"][str(size)] = row
    return record


def _ci(r: dict, key: str) -> str:
    return f"[{r[key][0]:+.2f}, {r[key][1]:+.2f}]" if key in r else "-"


def under_limit(rec: dict, truths: dict[str, dict]) -> None:
    """Add the tau over the architectures under the search's FLOPs limit, with paired intervals against FLOPs
    alone and against ``top1`` there (from the records' per-architecture scores: no rescoring)."""
    gt = truths.setdefault(rec["groundtruth"], {a["id"]: a for a in json.loads(
        (ROOT / rec["groundtruth"]).read_text())["architectures"]})
    for row in rec["sizes"].values():
        ids = [i for i in row["top1"]["scores"] if rec["max_mflops"] is None
               or gt[i]["flops"] <= rec["max_mflops"] * 1e6]
        truth = [statistics.fmean(gt[i]["top1"].values()) for i in ids]
        flops = [float(gt[i]["flops"]) for i in ids]
        for scorer, r in row.items():
            if "limit_minus_flops_ci" in r:  # kept in the record from an earlier table
                continue
            score = [r["scores"][i] for i in ids]
            r["limit_tau_ci"] = list(bootstrap_interval(kendall_tau, score, truth, samples=1000, seed=0))
            r["limit_minus_flops_ci"] = list(bootstrap_interval(kendall_tau, score, truth, baseline=flops,
                                                                samples=1000, seed=0))
            if scorer != "top1":
                r["limit_minus_top1_ci"] = list(bootstrap_interval(
                    kendall_tau, score, truth, baseline=[row["top1"]["scores"][i] for i in ids], samples=1000, seed=0))


def table(records: list[dict]) -> str:
    truths: dict[str, dict] = {}
    lines = ["| supernet | scored on | N | scorer | tau under the limit [95 % CI] | minus FLOPs [CI] | minus top1 [CI] "
             "| tau, all | minus FLOPs, all [CI] | test-retest tau (N / N/2) | random spread (p) | s / candidate |",
             "|---|---|---:|---|---|---|---|---:|---|---|---|---:|"]
    for rec in sorted(records, key=lambda r: (r["supernet"], r["set"])):
        under_limit(rec, truths)
        atomic_write_json(HERE / "records" / f"{rec['supernet']}__{rec['set']}.json", rec)  # with the intervals
        for size, row in rec["sizes"].items():
            for scorer, r in row.items():
                tr = f"{r['test_retest_tau']:.2f}" if "test_retest_tau" in r else "-"
                tr += f" / {r['split_half_tau']:.2f}" if "split_half_tau" in r else ""
                lines.append(f"| {rec['supernet']} | {rec['set']} | {size} | {scorer} | {r['feasible_tau']:.2f} "
                             f"[{r['limit_tau_ci'][0]:.2f}, {r['limit_tau_ci'][1]:.2f}] | "
                             f"{_ci(r, 'limit_minus_flops_ci')} | {_ci(r, 'limit_minus_top1_ci')} | "
                             f"{r['kendall_tau']:.2f} | {_ci(r, 'minus_flops_ci')} | {tr} | "
                             f"{r['random_spread_over_noise']:.1f}x ({r['random_spread_p']:.2g}) | "
                             f"{rec['seconds_per_candidate'][scorer]:.2f} |")
    first_rec = records[0]
    lines.append("")
    lines.append(f"FLOPs alone: tau {first_rec['flops_feasible_tau']:.2f} over the {first_rec['feasible']} architectures "
                 f"under the search's limit ({first_rec['max_mflops']} MFLOPs), {first_rec['flops_tau']:.2f} over all "
                 f"{first_rec['architectures']}. Supernets trained on: e*: the shipped set's 400 search-train images "
                 f"(so `shipped` scores them on their own training images); gen2000_*: 2,000 of gen2500_s1 (so "
                 f"`gen2500_s1` includes their training images, and `shipped` is separate).")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--supernet", action="append", default=[], help="name=search run dir")
    ap.add_argument("--set", action="append", default=["own="], help="name=synthetic set dir (own: search-val)")
    ap.add_argument("--groundtruth", default="studies/macro_groundtruth/macro_uniform.json")
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--table_only", action="store_true")
    args = ap.parse_args()
    (HERE / "records").mkdir(exist_ok=True)
    if not args.table_only:
        for sup in args.supernet:
            sname, run_dir = sup.split("=", 1)
            for st in dict.fromkeys(args.set):
                set_name, set_path = st.split("=", 1)
                out = HERE / "records" / f"{sname}__{set_name}.json"
                if out.exists():
                    continue
                start = time.time()
                rec = run_one(sname, run_dir, set_name, set_path, args.groundtruth, args.candidates)
                rec.update(wall_seconds=round(time.time() - start, 1), versions=versions(),
                           command="python studies/macro_scorer/run.py " + " ".join(sys.argv[1:]))
                atomic_write_json(out, rec)
                print(f"{out.name}: {rec['images']} images, {rec['wall_seconds']} s", flush=True)
    records = [json.loads(p.read_text()) for p in sorted((HERE / "records").glob("*.json"))]
    if records:
        atomic_write_bytes(HERE / "scorer.md", table(records).encode())


if __name__ == "__main__":
    main()
