"""The pipeline end to end at toy size, and one writer per run directory (killed pipelines: test_fault_injection.py)."""

import json

import pytest

from tests.conftest import lock_held_by_another_process, run_cli
from tests.wandb_records import summary


def toy_overrides(wandb=False, export_unhealthy=True) -> dict[str, list[str]]:
    """Per-stage pipeline overrides that make every stage a few seconds' work. Two search steps cannot pass a
    search's health check: the searches export anyway unless a test says not."""
    quiet = ([] if wandb else ["--trainer.logger", "false"]) + ["--trainer.enable_progress_bar", "false"]
    unhealthy = ["--model.init_args.export_unhealthy", "true"] if export_unhealthy else []
    return {
        "synthesis": ["--data.init_args.images_per_class", "1", "--data.init_args.batch_size", "10",
                      "--model.init_args.iterations", "5", "--model.init_args.warmup_iterations", "2",
                      "--model.init_args.quality_gate", "false", *quiet],
        "search": ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches",
                   "1", "--data.init_args.batch_size", "4", "--data.init_args.val_fraction", "0.5", *unhealthy, *quiet],
        "darts": ["--model.init_args.space.channels", "4", "--model.init_args.space.layers", "3"],
        "proxylessnas": ["--model.init_args.space.stage_channels", "[8, 16, 16]", "--model.init_args.warmup_epochs",
                         "0"],
        "spos": ["--model.init_args.space.stage_channels", "[16, 24, 32]", "--model.init_args.max_mflops", "null",
                 "--model.init_args.population", "2", "--model.init_args.generations", "1",
                 "--model.init_args.top_k", "1", "--model.init_args.bn_recalibration_batches", "1"],
        "retrain": ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches",
                    "1", "--trainer.limit_test_batches", "2", *quiet],
    }


def toy_config(tmp_path, fmnist_root, wandb=False, algorithms=("darts", "proxylessnas", "spos"),
               export_unhealthy=True, random_baseline=True):
    """The pipeline's own export_unhealthy setting (not the per-search override) lets the toy searches export."""
    run = tmp_path / "run"
    overrides = toy_overrides(wandb, export_unhealthy=False)
    overrides["retrain"] += ["--data.init_args.root", str(fmnist_root)]
    config = tmp_path / "pipeline.yaml"
    config.write_text(json.dumps({"run_dir": str(run), "algorithms": list(algorithms), "overrides": overrides,
                                  "export_unhealthy": export_unhealthy, "random_baseline": random_baseline}))
    return config, run


@pytest.mark.slow
def test_pipeline_runs_every_stage_and_prints_the_table(tmp_path, fmnist_root):
    config, run = toy_config(tmp_path, fmnist_root, wandb=True)
    out = run_cli("pipeline", "--config", str(config), timeout=900).stdout
    assert json.loads((run / "synthetic" / "manifest.json").read_text())["images"] == 20
    for algorithm in ("darts", "proxylessnas", "spos"):
        arch = json.loads((run / "search" / algorithm / "architecture.json").read_text())
        metrics = json.loads((run / "retrain" / algorithm / "metrics.json").read_text())
        assert metrics["flops"] == arch["flops"] and metrics["params"] == arch["params"]
        assert 0.0 <= metrics["test_top1"] <= 1.0 and metrics["algorithm"] == algorithm
        assert arch["health"]["verdict"] == "cannot choose" and arch["health"]["exported_anyway"]
        # the random baseline: the same space, FLOPs within 5 % where the space has such a network
        rand = json.loads((run / "random" / algorithm / "architecture.json").read_text())
        assert rand["space"] == arch["space"] and rand["choices"] != arch["choices"]
        assert (run / "retrain" / f"random_{algorithm}" / "metrics.json").exists()
        assert f"| {algorithm} | cannot choose (exported anyway): " in out
    assert "| algorithm | health | architecture | MFLOPs | K params | test top-1 | random, same FLOPs |" in out
    table = (run / "pipeline_results.md").read_text()
    assert table.count("\n| ") == 3 and "DARTS is not shown to beat random cells" in table  # 3 rows, the note
    assert "DARTS is not shown to beat random cells" in out
    spent = json.loads((run / "stage_seconds.json").read_text())
    assert sorted(spent) == sorted(["synthesis", *(f"{s} {a}" for s in ("search", "retrain")
                                                   for a in ("darts", "proxylessnas", "spos")),
                                    *(f"retrain random_{a}" for a in ("darts", "proxylessnas", "spos"))])
    assert all(seconds > 0 for seconds in spent.values())

    # W&B: one group for the whole pipeline run, a job type per stage, the results as artifacts
    group = json.loads((run / "wandb_group.json").read_text())["group"]
    runs = [summary(d) for d in sorted((run / "wandb").glob("offline-run-*"))]
    assert len(runs) == 1 + 3 + 6 * 2  # synthesis, 3 searches, (3 found + 3 random) x (retrain fit + test)
    assert {r["group"] for r in runs} == {group} and group in out
    assert sorted(r["job_type"] for r in runs) == ["retrain"] * 12 + ["search"] * 3 + ["synthesize"]
    artifacts = {a for r in runs for a in r["artifacts"]}
    assert ("synthetic-set", "dataset") in artifacts
    for algorithm in ("darts", "proxylessnas", "spos"):
        assert (f"architecture-{algorithm}", "architecture") in artifacts
        assert (f"retrained-{algorithm}", "result") in artifacts


@pytest.mark.slow
def test_a_search_that_cannot_choose_exports_nothing_and_the_table_says_so(tmp_path, fmnist_root):
    """By default a toy search (two steps) is refused its export: the pipeline retrains nothing for it, goes on,
    and its row gives the verdict and the numbers."""
    config, run = toy_config(tmp_path, fmnist_root, algorithms=["spos"], export_unhealthy=False)
    done = run_cli("pipeline", "--config", str(config), timeout=900)
    assert "dfnas_pl: error: SPOS cannot choose: the supernet agrees with the teacher on" in done.stderr
    assert not (run / "search" / "spos" / "architecture.json").exists() and not (run / "retrain").exists()
    health = json.loads((run / "search" / "spos" / "health.json").read_text())
    assert health["verdict"] == "cannot choose" and not health["exported_anyway"]
    assert f"| spos | cannot choose: {health['level']:.0%} vs chance {health['chance']:.0%} | not exported |" \
        in (run / "pipeline_results.md").read_text()


def test_a_second_pipeline_on_the_same_run_dir_is_refused(tmp_path):
    run = tmp_path / "run"
    with lock_held_by_another_process(run) as holder:
        refused = run_cli("pipeline", "--config", "experiments/fmnist/pipeline.yaml", "--run_dir", str(run),
                          check=False)
        assert refused.returncode == 2 and f"pid {holder.pid}" in refused.stderr
        assert "pipeline run directory" in refused.stderr and not (run / "synthetic").exists()
