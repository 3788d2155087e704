"""The rank-fidelity instrument: its correlations reproduce known values, a supernet trained on labelled
data ranks the clearly better architectures on top through the instrument's own scoring path, and the
driver runs every source end to end (table, CSV columns, plots, W&B) and resumes per unit."""

from __future__ import annotations

import csv
import json
import math

import lightning as L
import pytest
import torch

from dfnas_pl.drivers.rank_fidelity import budget_curve, scored
from dfnas_pl.search.layerwise_space import LayerwiseSpaceConfig
from dfnas_pl.search.ranking import (
    bootstrap_interval,
    fidelity,
    kendall_tau,
    regret,
    spearman_rho,
    top_quarter_recall,
    within_group_tau,
)
from dfnas_pl.search.scoring import ScoringSet, score_path
from dfnas_pl.search.spos import SPOSSearch
from tests.conftest import run_cli
from tests.stages.test_search_toy import LAYERWISE, DotPairs


def test_rank_correlations_reproduce_hand_computed_values():
    truth = [1, 2, 3, 4, 5]
    assert kendall_tau([1, 2, 3, 5, 4], truth) == pytest.approx(0.8)  # 9 concordant, 1 discordant of 10 pairs
    assert spearman_rho([1, 2, 3, 5, 4], truth) == pytest.approx(0.9)  # 1 - 6 * 2 / (5 * 24)
    assert kendall_tau([5, 4, 3, 2, 1], truth) == pytest.approx(-1.0)
    assert kendall_tau([1, 1, 2, 2, 3], truth) == pytest.approx(8 / math.sqrt(10 * 8))  # tau-b with ties
    assert math.isnan(kendall_tau([1, 1, 1, 1, 1], truth))
    truth8 = [0.1 * i for i in range(8)]
    assert top_quarter_recall([7, 6, 5, 4, 3, 2, 1, 0], truth8) == 0.0
    assert top_quarter_recall([0, 1, 2, 3, 4, 5, 9, 8], truth8) == 1.0
    assert regret([0, 1, 2, 3, 4, 5, 9, 8], truth8) == (pytest.approx(0.6), pytest.approx(0.1))
    lo, hi = bootstrap_interval(kendall_tau, [1, 2, 3, 5, 4, 6, 8, 7], list(range(8)), samples=300)
    assert lo <= kendall_tau([1, 2, 3, 5, 4, 6, 8, 7], list(range(8))) <= hi and hi <= 1.0
    assert bootstrap_interval(kendall_tau, truth, truth, baseline=truth, samples=50) == (0.0, 0.0)
    row = fidelity([1, 2, 3, 5, 4, 6, 8, 7], list(range(8)), band=[True] * 4 + [False] * 4,
                   flops=[8, 7, 6, 5, 4, 3, 2, 1], samples=200)
    assert row["band_n"] == 4 and row["band_tau"] == pytest.approx(kendall_tau([1, 2, 3, 5], [0, 1, 2, 3]))
    assert row["tau_minus_flops_ci_low"] > 0  # a good score beats a reversed FLOPs baseline significantly


@pytest.mark.slow
def _curve_row(space: str, steps: int, tau: float) -> dict:
    return {"space": space, "source": "real_40", "supernet_steps": steps, "kendall_tau": tau,
            "tau_ci_low": tau - 0.2, "tau_ci_high": tau + 0.1, "flops_tau": 0.5}


def test_budget_curve_draws_a_space_whose_tau_is_undefined_at_every_budget(tmp_path):
    """A tiny supernet can score every architecture alike, so tau is NaN at each budget (seen in CI).
    That panel must still render, next to a panel with defined points; an empty log axis used to raise."""
    rows = [_curve_row("flat", s, math.nan) for s in (3, 5)] + [_curve_row("fine", s, t) for s, t in ((3, 0.2), (5, 0.6))]
    path = budget_curve(tmp_path / "curve.png", rows, ["flat", "fine"], ["real_40"], {"flat": None, "fine": 0.3})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000


def test_a_supernet_trained_on_labels_ranks_the_clearly_better_architectures_on_top(tmp_path):
    """Dots 7 px apart: only the 7x7 and xception units see both (tests/stages/test_search_toy.py), so by
    construction they are the better architectures of this one-layer space."""
    space = LayerwiseSpaceConfig(family="shufflenetv2", stage_channels=(16,), **LAYERWISE)
    model = SPOSSearch(space=space, teacher=None, lr=0.2, evolution=False, output_dir=str(tmp_path / "spos"))
    data = DotPairs(7)
    torch.manual_seed(0)
    L.Trainer(max_epochs=20, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0).fit(model, datamodule=data)
    assert (tmp_path / "spos" / "supernet.pt").is_file()
    trained = json.loads((tmp_path / "spos" / "supernet.json").read_text())
    assert trained["steps"] == model.global_step and trained["data"]["batch_size"] == 64
    bn, val = data.scoring_loaders()
    names = model.supernet.choice_names[0]
    scoring = ScoringSet(val)
    scores = [score_path(model.supernet, [i], list(bn)[:2], scoring).score for i in range(len(names))]
    truth = [1.0 if n in ("k7", "xception") else 0.5 for n in names]
    best_two = sorted(range(len(names)), key=lambda i: -scores[i])[:2]
    assert {names[i] for i in best_two} == {"k7", "xception"}, dict(zip(names, scores))
    assert kendall_tau(scores, truth) > 0.8 and regret(scores, truth)[1] == 0.0


@pytest.mark.slow
def test_rank_fidelity_runs_every_kind_of_source_and_resumes(tmp_path, fmnist_root, macro_groundtruth):
    """On the macro space (its toy ground truth, shared with tests/unit/test_macro_space.py)."""
    tiny_synthesis = ["--data.init_args.images_per_class", "3", "--data.init_args.batch_size", "15",
                      "--model.init_args.iterations", "5", "--model.init_args.warmup_iterations", "1",
                      "--model.init_args.rounds", "1", "--model.init_args.quality_gate", "false"]
    table = tmp_path / "table"
    args = ["rank-fidelity", "--run_dir", str(tmp_path / "run"), "--table_dir", str(table),
            "--spaces", json.dumps([{"name": "tiny", "groundtruth": str(macro_groundtruth),
                                     "train_config": "experiments/fmnist/search_spos_macro.yaml",
                                     "overrides": ["--model.init_args.max_mflops", "null",
                                                   "--data.init_args.batch_size", "16",
                                                   "--data.init_args.real_data.init_args.root", str(fmnist_root)]}]),
            "--sources", "[real_40, synthetic, noise]", "--seeds", "[0]", "--supernet_steps", "3",
            "--synthetic_sets", json.dumps({"synthetic": tiny_synthesis}), "--noise_images", "40",
            "--real_data", json.dumps({"class_path": "dfnas_pl.data.FashionMNISTDataModule",
                                       "init_args": {"root": str(fmnist_root)}}),
            "--cross", json.dumps([["real_40", "synthetic"], ["synthetic", "real_40"]]), "--score_images", "32",
            "--bootstrap_samples", "50", "--curve_steps", "[5]", "--curve_sources", "[real_40]"]
    first = run_cli(*args, timeout=900)
    assert "4 to run" in first.stdout  # 3 sources + the real source at a second budget
    with open(table / "rank_fidelity.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"space", "source", "seed", "kendall_tau", "spearman_rho", "tau_ci_low", "tau_ci_high", "band_tau",
            "top25_recall", "regret"} <= set(rows[0])
    kinds = {(r["source"], r["scored_on"], r["seed"]) for r in rows}
    assert {("flops", "-", "-"), ("params", "-", "-"), ("real_40", "real_40", "0"), ("synthetic", "synthetic", "0"),
            ("noise", "noise", "0"), ("real_40", "synthetic", "0"), ("synthetic", "real_40", "0"),
            ("real_40", "real_40", "mean")} <= kinds
    assert all(r["n"] == "5" and -1.0 <= float(r["kendall_tau"]) <= 1.0 for r in rows if r["kendall_tau"] != "")
    assert any(r["kendall_tau"] != "" for r in rows if r["source"] == "flops")
    md = (table / "rank_fidelity.md").read_text()
    assert "noise ceiling" in md and "| synthetic | real_40 |" in md
    assert (table / "rank_fidelity_tiny.png").stat().st_size > 10_000
    assert (tmp_path / "run" / "rank_fidelity.md").read_text() == md  # the run dir has its copy
    with open(table / "rank_fidelity_curve.csv") as f:
        assert [r["supernet_steps"] for r in csv.DictReader(f)] == ["3", "5"]
    assert (table / "rank_fidelity_curve.png").is_file()
    assert "NaN" not in (table / "rank_fidelity.json").read_text()
    scores = sorted((table / "scores").glob("*.json"))
    assert len(scores) == 4
    rec = json.loads(scores[0].read_text())
    assert len(next(iter(rec["scores"].values()))) == 5  # every ground-truth architecture scored
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    mtimes = [p.stat().st_mtime_ns for p in scores]

    again = run_cli(*args, timeout=600)
    assert "4 done, 0 to run" in again.stdout
    assert [p.stat().st_mtime_ns for p in scores] == mtimes


def test_within_band_tau_asks_each_band_alone():
    """A score that only orders the bands (as FLOPs would) ranks well overall and not at all inside them."""
    truth = [1, 2, 3, 4, 5, 6, 7]
    groups = ["band 1/2"] * 3 + ["band 2/2"] * 3 + [None]  # the last: outside every band (cheapest / dearest)
    bands_only = [3, 2, 1, 6, 5, 4, 7]
    assert kendall_tau(bands_only, truth) > 0.3
    assert within_group_tau(bands_only, truth, groups) == pytest.approx(-1.0)
    assert within_group_tau(truth, truth, groups) == pytest.approx(1.0)
    row = fidelity(bands_only, truth, groups=groups, samples=10)
    assert row["within_band_tau"] == pytest.approx(-1.0)


def test_a_unit_is_done_only_when_its_score_file_holds_every_dataset_it_is_scored_on(tmp_path):
    """A cross pair added later re-scores the kept supernet instead of reading a score that is not there."""
    unit = {"score_file": str(tmp_path / "s.json"), "scored_on": ["real_500", "default"]}
    assert not scored(unit)
    (tmp_path / "s.json").write_text(json.dumps({"scores": {"real_500": {"a00": 0.5}}}))
    assert not scored(unit)
    (tmp_path / "s.json").write_text(json.dumps({"scores": {"real_500": {"a00": 0.5}, "default": {"a00": 0.4}}}))
    assert scored(unit)
