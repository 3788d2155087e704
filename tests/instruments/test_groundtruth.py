"""The ground-truth driver at toy size: deterministic selection with a median band, real training and
testing per (architecture, seed), resume after SIGKILL without retraining, refusal of a changed recipe,
and a clear error for a corrupt ground-truth file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dfnas_pl.drivers.commands import as_dataclass
from dfnas_pl.drivers.groundtruth import Selection, load_groundtruth, select_architectures
from tests.conftest import REPO, run_cli

TINY_SPACE = {"family": "shufflenetv2", "stem_channels": 8, "stage_channels": [16, 32], "stage_layers": [1, 1],
              "in_channels": 1, "num_classes": 10, "image_size": 28}


def tiny_args(fmnist_root, work, output, seeds="[0, 1]", **recipe) -> list[str]:
    r = {"train_images": 256, "epochs": 1, "batch_size": 64, **recipe}
    return ["groundtruth", "--space", json.dumps(TINY_SPACE), "--output", str(output), "--work_dir", str(work),
            "--data", json.dumps({"class_path": "dfnas_pl.data.FashionMNISTDataModule",
                                  "init_args": {"root": str(fmnist_root)}}),
            "--recipe", json.dumps(r), "--selection", json.dumps({"stratified": 3, "median_band": 1, "pool": 200}),
            "--seeds", seeds, "--workers", "1"]


def test_selection_is_deterministic_stratified_and_has_a_median_band():
    space = {**TINY_SPACE, "stage_channels": [32, 64, 128], "stage_layers": [2, 2, 2]}
    a = select_architectures(space, Selection(stratified=24, median_band=8, pool=5000, seed=3))
    b = select_architectures(space, Selection(stratified=24, median_band=8, pool=5000, seed=3))
    assert [x["choices"] for x in a["architectures"]] == [x["choices"] for x in b["architectures"]]
    archs = a["architectures"]
    assert len(archs) == 32 and len({tuple(x["choices"]) for x in archs}) == 32
    lo, hi = a["space_flops_range"]
    flops = sorted(x["flops"] for x in archs[:24])
    assert flops[0] < lo + 0.1 * (hi - lo) and flops[-1] > hi - 0.1 * (hi - lo)  # the whole range is covered
    band = [x for x in archs[24:]]
    assert all(abs(x["flops"] - a["median_flops"]) <= 0.1 * a["median_flops"] and x["in_median_band"] for x in band)
    other = select_architectures(space, Selection(stratified=24, median_band=8, pool=5000, seed=4))
    assert [x["choices"] for x in other["architectures"]] != [x["choices"] for x in archs]


@pytest.mark.slow
def test_groundtruth_resumes_after_a_kill_and_refuses_another_recipe(tmp_path, fmnist_root):
    work, output = tmp_path / "work", tmp_path / "gt.json"
    args = tiny_args(fmnist_root, work, output)
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dfnas_pl", *args], cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = work / "records"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(records.glob("a*_seed?.json"))) < 2:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in records.glob("a*_seed?.json")}
    assert 2 <= len(done) < 8, done  # killed part-way: some jobs finished, not all

    out = run_cli(*args)
    assert f"{len(done)} already done" in out.stdout
    after = {p.name: p.stat().st_mtime_ns for p in records.glob("a*_seed?.json")}
    assert len(after) == 8 and all(after[n] == t for n, t in done.items())  # finished jobs were not retrained
    gt = load_groundtruth(output)
    assert gt["complete"] and len(gt["architectures"]) == 4
    assert all(set(a["top1"]) == {"0", "1"} and 0.0 <= a["top1"]["0"] <= 1.0 for a in gt["architectures"])
    assert gt["recipe"]["train_images"] == 256 and gt["versions"]["torch"] and gt["wall_seconds"] > 0
    assert set(gt["noise_ceiling"]) >= {"kendall_tau", "spearman_rho", "band_kendall_tau", "n"}
    assert gt["noise_ceiling"]["n"] == 4
    assert "NaN" not in output.read_text()  # strict JSON
    # --limit 0 rewrites the JSON from the records, and the JSON keeps the command that made them
    run_cli(*args, "--limit", "0")
    assert load_groundtruth(output)["command"] == "python -m dfnas_pl " + " ".join(args)
    assert gt["devices"] and all(d.startswith("cpu") for d in gt["devices"])  # each record names its device
    assert output.with_suffix(".png").stat().st_size > 10_000  # seed-vs-seed and top-1-vs-FLOPs plot
    c = gt["noise_ceiling"]
    assert c["architecture_std"] >= 0 and set(c) >= {"tau_ci_low", "tau_ci_high", "flops_kendall_tau"}
    if c["kendall_tau"] is not None and c["tau_ci_low"] is not None:  # (4 tiny runs may tie: NaN -> null)
        assert c["tau_ci_low"] <= c["kendall_tau"] <= c["tau_ci_high"]

    changed = run_cli(*tiny_args(fmnist_root, work, output, epochs=2), check=False)
    assert changed.returncode != 0
    assert "other settings" in changed.stderr and "recipe.epochs" in changed.stderr and "Traceback" not in changed.stderr

    # a third seed (the rule for a flat band) trains only the new seed's jobs and keeps the first two
    third = run_cli(*tiny_args(fmnist_root, work, output, seeds="[0, 1, 2]"))
    assert "records made so far are kept" in third.stdout and "8 already done, 4 to run" in third.stdout
    assert all(records.joinpath(n).stat().st_mtime_ns == t for n, t in after.items())
    gt3 = load_groundtruth(output)
    assert gt3["complete"] and gt3["seeds"] == [0, 1, 2] and all(len(a["top1"]) == 3 for a in gt3["architectures"])
    assert gt3["signal"]["seeds"] == 3 and "mean_pairwise_seed_tau" in gt3["signal"]["top1"]["all"]
    refused = run_cli(*tiny_args(fmnist_root, work, output, seeds="[0, 2]"), check=False)
    assert refused.returncode != 0 and "seeds" in refused.stderr  # dropping or reordering seeds is another truth


def test_a_corrupt_groundtruth_file_gets_a_clear_error(tmp_path):
    bad = tmp_path / "gt.json"
    bad.write_text('{"format": "dfnas_pl.groundtruth/1", "architectures": [')
    with pytest.raises(ValueError, match=r"not valid JSON.*git checkout"):
        load_groundtruth(bad)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a dfnas_pl ground-truth file"):
        load_groundtruth(bad)
    with pytest.raises(FileNotFoundError, match="No ground-truth file"):
        load_groundtruth(tmp_path / "missing.json")
    bad.write_text('{"format": "dfnas_pl.groundtruth/1", "architectures": [')
    proc = run_cli("rank-fidelity", "--spaces", json.dumps([{"name": "x", "groundtruth": str(bad),
                                                             "train_config": "experiments/fmnist/search_spos.yaml"}]),
                   "--run_dir", str(tmp_path / "run"), "--table_dir", str(tmp_path / "table"), check=False)
    assert proc.returncode != 0 and "not valid JSON" in proc.stderr and str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_a_gpu_asked_for_where_there_is_none_is_refused_before_any_job(tmp_path, fmnist_root):
    work = tmp_path / "work"
    proc = run_cli(*tiny_args(fmnist_root, work, tmp_path / "gt.json"), "--accelerator", "gpu", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--accelerator gpu" in proc.stderr and "no CUDA device" in proc.stderr and "--accelerator cpu" in proc.stderr
    assert not (work / "records").exists() and not (tmp_path / "gt.json").exists()  # nothing started, nothing written


@pytest.mark.parametrize("space", ["shufflenetv2", "mobilenetv2"])
def test_the_long_recipe_measures_the_same_architectures_with_only_more_training(space):
    """groundtruth_<space>_long.yaml (the GPU jobs of bench/device_groundtruth.sh) changes the training
    length and nothing else that the numbers depend on, and keeps its records apart from the short recipe's."""
    from dfnas_pl.drivers import groundtruth

    short, long = (groundtruth.parser().parse_args(["--config", f"studies/layerwise_groundtruth/groundtruth_{space}{s}.yaml"])
                   for s in ("", "_long"))
    assert short.space == long.space and short.selection == long.selection and short.seeds == long.seeds
    assert short.data == long.data and long.accelerator == "gpu"
    differ = {k for k in vars(short.recipe) if getattr(short.recipe, k) != getattr(long.recipe, k)}
    assert differ == {"train_images", "epochs"}
    assert long.recipe.train_images * long.recipe.epochs >= 10 * short.recipe.train_images * short.recipe.epochs
    assert long.work_dir != short.work_dir and long.output != short.output
    script = (REPO / "bench/device_groundtruth.sh").read_text()
    assert f"studies/layerwise_groundtruth/groundtruth_{space}_long.yaml" in script


@pytest.mark.parametrize("space", ["shufflenetv2", "mobilenetv2"])
def test_the_shipped_configs_parse_and_match_the_search_spaces(space):
    """The ground-truth configs measure the spaces the search configs search; rank fidelity names every source."""
    import yaml

    from dfnas_pl.drivers import groundtruth, rank_fidelity

    c = groundtruth.parser().parse_args(["--config", f"studies/layerwise_groundtruth/groundtruth_{space}.yaml"])
    search = {"shufflenetv2": "search_spos", "mobilenetv2": "search_proxylessnas"}[space]
    searched = yaml.safe_load((REPO / f"experiments/fmnist/{search}.yaml").read_text())["model"]["init_args"]["space"]
    from dfnas_pl.search.layerwise_space import LayerwiseSpaceConfig

    assert as_dataclass(LayerwiseSpaceConfig, c.space) == LayerwiseSpaceConfig.from_dict(searched)
    assert c.selection.stratified >= 24 and c.selection.median_band >= 8 and len(c.seeds) >= 2
    assert c.output == f"studies/layerwise_groundtruth/{space}.json"
    rf = rank_fidelity.parser().parse_args(["--config", "studies/layerwise_groundtruth/rank_fidelity.yaml"])
    assert {"real_500", "real_full", "synthetic", "synthetic_4x", "plain", "noise"} <= set(rf.sources)
    assert any(s["groundtruth"] == c.output for s in rf.spaces) and len(rf.seeds) >= 2


def test_the_recorded_command_leaves_out_limit(monkeypatch):
    """``--limit 0`` rewrites the JSON from the records; the JSON keeps the command that made the records."""
    from dfnas_pl.drivers.commands import recorded_command

    monkeypatch.setattr(sys, "argv", ["dfnas_pl", "groundtruth", "--config", "x.yaml", "--limit", "0", "--workers", "2",
                                      "--limit=3"])
    assert recorded_command("groundtruth", "--limit") == "python -m dfnas_pl groundtruth --config x.yaml --workers 2"


def test_a_data_argument_added_since_at_its_default_keeps_the_records(tmp_path):
    """A data module that gained an argument (``train_images``) after a ground truth was made: its records were
    made with the argument's default, so the saved settings still match; any other value is another truth."""
    from dfnas_pl.drivers.commands import driver_from_args
    from dfnas_pl.drivers.groundtruth import GroundTruth
    from dfnas_pl.utils.io import atomic_write_json

    args = ["--config", "studies/macro_groundtruth/groundtruth_macro.yaml", "--work_dir", str(tmp_path / "work"),
            "--output", str(tmp_path / "gt.json")]
    gt = driver_from_args(GroundTruth, args, "groundtruth")
    old = gt.settings()
    del old["data"]["init_args"]["train_images"]  # as a directory made before the argument existed
    atomic_write_json(tmp_path / "work" / "settings.json", old)
    gt.check_settings()  # accepted
    subset = driver_from_args(GroundTruth, [*args, "--data.init_args.train_images", "500"], "groundtruth")
    with pytest.raises(ValueError, match="other settings.*train_images"):
        subset.check_settings()


def test_uniform_architectures_are_appended_and_a_smaller_count_reads_a_prefix(tmp_path):
    """selection.uniform: draws from the whole space after the stratified ones; raising it keeps every existing
    id's choices (records stay valid), and the settings check lets the count move either way, nothing else."""
    from dfnas_pl.drivers.commands import driver_from_args
    from dfnas_pl.drivers.groundtruth import GroundTruth

    space = {**TINY_SPACE, "stage_channels": [32, 64, 128], "stage_layers": [2, 2, 2]}
    base = dict(stratified=6, median_band=2, pool=3000, seed=1)
    plain = select_architectures(space, Selection(**base))["architectures"]
    small = select_architectures(space, Selection(**base, uniform=5))["architectures"]
    large = select_architectures(space, Selection(**base, uniform=12))["architectures"]
    assert [a["choices"] for a in small[:8]] == [a["choices"] for a in plain]
    assert [a["choices"] for a in large[:13]] == [a["choices"] for a in small]  # appended, not redrawn
    assert [a["stratum"] for a in large[8:]] == ["uniform"] * 12 and len({tuple(a["choices"]) for a in large}) == 20
    assert [a["id"] for a in large[-2:]] == ["a18", "a19"]

    args = ["--config", "studies/macro_groundtruth/groundtruth_macro_uniform.yaml", "--work_dir", str(tmp_path / "w"),
            "--output", str(tmp_path / "gt.json")]
    driver_from_args(GroundTruth, args, "groundtruth").check_settings()  # made with 32
    driver_from_args(GroundTruth, [*args, "--selection.uniform", "0"], "groundtruth").check_settings()  # a prefix
    assert json.loads((tmp_path / "w" / "settings.json").read_text())["selection"]["uniform"] == 32  # not lowered
    driver_from_args(GroundTruth, [*args, "--selection.uniform", "40"], "groundtruth").check_settings()
    assert json.loads((tmp_path / "w" / "settings.json").read_text())["selection"]["uniform"] == 40
    with pytest.raises(ValueError, match="other settings.*selection.seed"):
        driver_from_args(GroundTruth, [*args, "--selection.seed", "5"], "groundtruth").check_settings()


def test_listed_architectures_can_be_appended_when_the_list_is_the_whole_selection(tmp_path):
    """A study that trains the architectures its searches find appends them to selection.include; the earlier ids
    keep their architectures, so the settings check lets that through, and nothing else: not a reordered list,
    not an append in front of strata (which would shift their ids)."""
    from dfnas_pl.drivers.commands import driver_from_args
    from dfnas_pl.drivers.groundtruth import GroundTruth

    a = ["identity"] * 8
    b = ["mbconv_k3_e3"] * 8
    c = ["mbconv_k5_e6"] * 8
    base = ["--config", "studies/macro_groundtruth/groundtruth_macro_uniform.yaml", "--work_dir", str(tmp_path / "w"),
            "--output", str(tmp_path / "gt.json"), "--selection.flops_bands", "0", "--selection.median_band", "0",
            "--selection.uniform", "0", "--selection.stratified", "0"]
    driver_from_args(GroundTruth, [*base, "--selection.include", json.dumps([a, b])], "groundtruth").check_settings()
    driver_from_args(GroundTruth, [*base, "--selection.include", json.dumps([a, b, c])], "groundtruth").check_settings()
    assert json.loads((tmp_path / "w" / "settings.json").read_text())["selection"]["include"] == [a, b, c]
    with pytest.raises(ValueError, match="other settings.*selection.include"):
        driver_from_args(GroundTruth, [*base, "--selection.include", json.dumps([b, a, c, a])],
                         "groundtruth").check_settings()
    strata = [*base[:-1], "4"]
    driver_from_args(GroundTruth, [*strata, "--work_dir", str(tmp_path / "s"), "--selection.include", json.dumps([a])],
                     "groundtruth").check_settings()
    with pytest.raises(ValueError, match="other settings.*selection.include"):
        driver_from_args(GroundTruth, [*strata, "--work_dir", str(tmp_path / "s"), "--selection.include",
                                       json.dumps([a, b])], "groundtruth").check_settings()
