"""The paper-table driver at toy size: every source searched, the random baseline matched in FLOPs,
every architecture retrained per seed, and the table / CSV / plot written."""

import csv
import json

import pytest

from dfnas_pl.search.export import build_from_architecture, count_flops
from dfnas_pl.search.random_arch import random_like
from tests.conftest import run_cli
from tests.stages.test_pipeline import toy_config


def test_random_baseline_is_from_the_same_space_and_closest_in_flops(tmp_path):
    from dfnas_pl.search.export import write_architecture
    from dfnas_pl.search.layerwise_space import LayerwiseSpaceConfig

    cfg = LayerwiseSpaceConfig(stage_channels=(16, 24, 32))
    ref = write_architecture(tmp_path / "a.json", "spos", "shufflenetv2", cfg, 28, ["k7", "xception"] * 3)
    choices, flops = random_like(ref, seed=0, samples=30, tolerance=0.0)
    assert len(choices) == 6 and set(choices) <= {"k3", "k5", "k7", "xception"}
    assert count_flops(build_from_architecture({**ref, "choices": choices}), (1, 28, 28)) == flops
    others = [random_like(ref, seed=s, samples=1)[1] for s in range(10)]
    assert abs(flops - ref["flops"]) <= min(abs(f - ref["flops"]) for f in others)


def test_random_baseline_reaches_a_reference_in_the_tail_of_the_flops_distribution(tmp_path):
    """A ProxylessNAS result with four zero blocks: rare among uniform draws, still matched within 5 %."""
    from dfnas_pl.search.export import write_architecture
    from dfnas_pl.search.layerwise_space import LayerwiseSpaceConfig

    cfg = LayerwiseSpaceConfig(family="mobilenetv2", stem_channels=16, stage_channels=(16, 24, 40))
    tail = ["zero", "zero", "mbconv_k3_e3", "zero", "mbconv_k5_e6", "zero"]
    ref = write_architecture(tmp_path / "a.json", "proxylessnas", "mobilenetv2", cfg, 28, tail)
    choices, flops = random_like(ref, seed=0)
    assert abs(flops - ref["flops"]) <= 0.05 * ref["flops"] and choices != tail
    closest_of_20 = random_like(ref, seed=0, samples=20, tolerance=0.0)[1]
    assert abs(closest_of_20 - ref["flops"]) > 0.05 * ref["flops"]  # why 20 draws were not enough


@pytest.mark.slow
def test_paper_table_at_toy_size(tmp_path, fmnist_root):
    config, run = toy_config(tmp_path, fmnist_root)
    cfg = json.loads(config.read_text())
    for key in ("export_unhealthy", "random_baseline"):  # the pipeline's; the paper table's searches always export
        cfg.pop(key)
    cfg.update(algorithms=["spos"], seeds=[0, 1], search_images=20,
               synthetic_args=["--model.init_args.label_calibration", "true", "--model.init_args.regional_update", "zoom"])
    config.write_text(json.dumps(cfg))
    out = run_cli("paper-table", "--config", str(config), timeout=1200).stdout
    rows = list(csv.DictReader((run / "paper_table.csv").open()))
    assert [r["source"] for r in rows] == ["real", "synthetic", "plain", "noise", "random"]
    assert all(r["seeds"] == "2" and 0 <= float(r["mean"]) <= 100 for r in rows)
    assert json.loads((run / "synthetic_plain" / "manifest.json").read_text())["config"]["label_calibration"] is False
    ours = json.loads((run / "synthetic" / "manifest.json").read_text())["config"]  # (b): synthetic_args pin the method
    assert ours["label_calibration"] is True and ours["regional_update"] in ("zoom", True)
    real = json.loads((run / "search" / "spos" / "real" / "architecture.json").read_text())
    assert real["algorithm"] == "spos"
    assert json.loads((run / "search" / "spos" / "random" / "architecture.json").read_text())["algorithm"] == "random"
    assert (run / "paper_table.png").stat().st_size > 0 and "(e) random architecture" in out
    assert "| search health |" in out and "| spos | (c) plain inversion |" in out and "cannot choose" in out
    spent = json.loads((run / "stage_seconds.json").read_text())
    assert len([s for s in spent if s.startswith("retrain spos/")]) == 5 * 2 and len(spent) == 2 + 4 + 10
    table = (run / "paper_table.md").read_text()
    assert f"{sum(spent.values()) / 3600:.2f} h over 16 stages" in table
    assert "| spos | (c) plain inversion |" in table


@pytest.mark.slow
def test_paper_table_trains_found_architectures_with_the_groundtruth_recipe(tmp_path, fmnist_root, macro_groundtruth):
    """With a ground truth: every found architecture is trained with its recipe and seeds, and one the ground
    truth already holds reuses its records (here: the all-identity network, planted as a search result)."""
    from dfnas_pl.search.export import write_architecture
    from dfnas_pl.search.layerwise_space import LayerwiseSpaceConfig
    from tests.conftest import MACRO_TINY_ARCHS, MACRO_TINY_SPACE

    run = tmp_path / "run"
    search = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
              "--data.init_args.batch_size", "8", "--data.init_args.real_data.init_args.root", str(fmnist_root),
              "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    spos = ["--model.init_args.space", json.dumps(MACRO_TINY_SPACE), "--model.init_args.max_mflops", "null",
            "--model.init_args.population", "2", "--model.init_args.generations", "1", "--model.init_args.top_k", "1",
            "--model.init_args.bn_recalibration_batches", "1"]
    planted = run / "search" / "spos" / "noise" / "architecture.json"  # a finished search: kept, not rerun
    write_architecture(planted, "spos", "macro", LayerwiseSpaceConfig.from_dict(MACRO_TINY_SPACE), 28,
                       MACRO_TINY_ARCHS[0])
    out = run_cli("paper-table", "--run_dir", str(run), "--algorithms", "[spos]", "--sources", "[real, noise]",
                  "--seeds", "[0, 1]", "--search_images", "40", "--groundtruth", str(macro_groundtruth),
                  "--search_configs", json.dumps({"spos": "experiments/fmnist/search_spos_macro.yaml"}),
                  "--overrides", json.dumps({"search": search, "spos": spos}), timeout=900).stdout
    gt = {tuple(a["choices"]): a for a in json.loads(macro_groundtruth.read_text())["architectures"]}
    rows = {r["source"]: r for r in csv.DictReader((run / "paper_table.csv").open())}
    assert rows["noise"]["in_groundtruth"] == "True" and rows["noise"]["choices"] == " ".join(MACRO_TINY_ARCHS[0])
    mine = gt[tuple(MACRO_TINY_ARCHS[0])]["top1"]
    assert float(rows["noise"]["mean"]) == pytest.approx(50 * (mine["0"] + mine["1"]))
    real = json.loads((run / "search" / "spos" / "real" / "architecture.json").read_text())
    if tuple(real["choices"]) not in gt:  # trained with the ground truth's recipe, in the run dir
        found = {tuple(a["choices"]): a for a in json.loads((run / "found.json").read_text())["architectures"]}
        assert set(found[tuple(real["choices"])]["top1"]) == {"0", "1"}
        assert json.loads((run / "found.json").read_text())["recipe"]["loop"] == "tensor"
    assert "| architecture | in the ground truth |" in out and "recipe and seeds of" in out
