"""Every registered search algorithm's config through the real CLI: DDP on 2 CPU processes with identical
architectures on every rank, and resume from the last checkpoint after a kill."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dfnas_pl.search.registry import search_algorithms
from tests.conftest import REPO, lock_held_by_another_process, run_cli
from tests.wandb_records import summary

ALGORITHMS = search_algorithms()
UNHEALTHY = ["--model.init_args.export_unhealthy", "true"]  # a few toy steps cannot pass the health check
TINY = {  # toy sizes of the shipped configs (an algorithm without an entry runs its config as it is)
    "darts": ["--model.init_args.space.channels", "4", "--model.init_args.space.layers", "3"],
    "proxylessnas": ["--model.init_args.space.stage_channels", "[8, 16, 16]", "--model.init_args.warmup_epochs", "0"],
    "spos": ["--model.init_args.space.stage_channels", "[16, 24, 32]", "--model.init_args.max_mflops", "null",
             "--model.init_args.population", "4", "--model.init_args.generations", "2",
             "--model.init_args.top_k", "2", "--model.init_args.bn_recalibration_batches", "1"],
}


def search_args(algorithm, out, synthetic, epochs=2, batches=2, *extra):
    return ["fit", "--config", ALGORITHMS[algorithm].config, "--data.init_args.path", str(synthetic),
            "--data.init_args.batch_size", "8", "--model.init_args.output_dir", str(out),
            "--trainer.callbacks.init_args.dirpath", str(out / "checkpoints"), "--trainer.logger", "false",
            "--trainer.default_root_dir", str(out), "--trainer.max_epochs", str(epochs),
            "--trainer.limit_train_batches", str(batches), "--trainer.limit_val_batches", "1", *TINY.get(algorithm, []),
            *UNHEALTHY, *extra]


def test_every_registered_algorithm_has_its_module_and_a_config_that_names_it():
    """Registry, modules and configs agree: what the pipeline lists is what its config runs."""
    import importlib

    import yaml

    assert list(ALGORITHMS) == ["darts", "proxylessnas", "spos"]  # registration order = the pipeline's default order
    for name, algorithm in ALGORITHMS.items():
        module, cls = algorithm.module.rsplit(".", 1)
        assert hasattr(importlib.import_module(module), cls), algorithm
        config = yaml.safe_load((REPO / algorithm.config).read_text())
        assert config["model"]["class_path"] in (algorithm.module, f"dfnas_pl.search.{cls}"), (name, config["model"])
        assert ("image_size" in config["model"]["init_args"]["space"]) == algorithm.sized_space


def test_one_algorithm_name_cannot_be_registered_by_two_modules():
    from dfnas_pl.search.registry import register_search_algorithm

    class Impostor:
        pass

    with pytest.raises(ValueError, match="registered twice"):
        register_search_algorithm("spos", config="experiments/fmnist/search_spos.yaml")(Impostor)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_ddp_two_processes_agree_on_the_architecture(tmp_path, synthetic_set, algorithm):
    strategy = "ddp" if algorithm == "darts" else "ddp_find_unused_parameters_true"
    out = tmp_path / algorithm
    run_cli(*search_args(algorithm, out, synthetic_set, 1, 2, "--trainer.devices", "2",
                         "--trainer.strategy", strategy), env={"OMP_NUM_THREADS": "1"})
    arch = json.loads((out / "architecture.json").read_text())
    assert arch["ranks_agreeing"] == 2 and arch["algorithm"] == algorithm


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["darts", "proxylessnas"])
def test_killed_search_resumes_from_the_last_checkpoint(tmp_path, synthetic_set, algorithm):
    out = tmp_path / algorithm
    args = search_args(algorithm, out, synthetic_set, 8, 4)
    proc = subprocess.Popen([sys.executable, "-m", "dfnas_pl", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "WANDB_MODE": "offline"})
    history_file = out / ("genotype_history.json" if algorithm == "darts" else "probability_history.json")
    deadline = time.time() + 300
    while time.time() < deadline:
        if (out / "checkpoints" / "last.ckpt").exists() and history_file.exists() and \
                len(json.loads(history_file.read_text())) >= 2:
            break
        assert proc.poll() is None, "the search ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(json.loads(history_file.read_text()))
    assert killed_at < 8 and not (out / "architecture.json").exists()
    result = run_cli(*args, "--ckpt_path", "last")
    assert "Restoring states from the checkpoint" in result.stdout + result.stderr
    epochs = [h["epoch"] for h in json.loads(history_file.read_text())]
    assert epochs == list(range(8))  # every epoch once: nothing lost, nothing repeated
    assert json.loads((out / "architecture.json").read_text())["algorithm"] == algorithm


@pytest.mark.slow
def test_search_logs_alpha_heatmaps_and_genotype_table_to_wandb_offline(tmp_path, synthetic_set):
    out = tmp_path / "darts"
    args = search_args("darts", out, synthetic_set, 2, 2)
    i = args.index("--trainer.logger")
    del args[i:i + 2]  # keep the config's W&B logger (offline), redirected to tmp_path
    run_cli(*args, "--trainer.logger.init_args.save_dir", str(tmp_path))
    run_dir = next(tmp_path.glob("wandb/offline-run-*"))
    assert len(list(run_dir.glob("files/media/images/search/alphas_*.png"))) == 2
    assert list(run_dir.glob("files/media/table/search/genotype_*.table.json"))
    table = json.loads(next(run_dir.glob("files/media/table/search/architecture_*.table.json")).read_text())
    assert table["columns"] == ["cell", "node", "op", "input"] and len(table["data"]) == 2 * 4 * 2
    arch = json.loads((out / "architecture.json").read_text())
    assert [row[2] for row in table["data"][:8]] == [op for node in arch["choices"]["normal"] for op, _ in node]
    run = summary(run_dir)
    assert run["job_type"] == "search" and ("architecture-darts", "architecture") in run["artifacts"]


def test_a_second_search_into_the_same_directory_is_refused(tmp_path, synthetic_set):
    """One writer per search directory: a search started while another holds it stops at once, naming it."""
    out = tmp_path / "spos"
    with lock_held_by_another_process(out) as holder:
        refused = run_cli("fit", "--config", "experiments/fmnist/search_spos.yaml", "--data.init_args.path",
                          str(synthetic_set), "--model.init_args.output_dir", str(out), "--trainer.logger", "false",
                          "--trainer.max_epochs", "1", check=False)
        assert refused.returncode == 2 and f"pid {holder.pid}" in refused.stderr
        assert "search output directory" in refused.stderr and "being written by another run" in refused.stderr
