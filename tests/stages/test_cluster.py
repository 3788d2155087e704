"""Multi-node runs on this one machine: 2 "nodes" x 1 process each, gloo on CPU, launched the two ways
a cluster launches them - torchrun (``torch.distributed.run --nnodes 2 --node_rank i``) and SLURM
(the environment ``srun`` gives each task, read by Lightning's ``SLURMEnvironment``). Also the
precision rules: synthesis refuses reduced precision, searches and retraining run under bf16 autocast.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_cli
from tests.stages.test_search_cli import search_args
from tests.stages.test_synthesis_cli import check_complete, small


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_all(procs: list[subprocess.Popen], timeout: int = 600) -> None:
    outputs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        outputs.append(out)
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    assert not failed, f"node(s) failed {failed}:\n" + "\n---\n".join(o[-4000:] for o in outputs)


def torchrun_two_nodes(args: list[str]) -> None:
    """``torchrun --nnodes 2 --nproc_per_node 1 --node_rank i`` for i = 0, 1, each its own launcher."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node",
                               "1", "--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", str(port),
                               "-m", "dfnas_pl", *args, "--trainer.num_nodes", "2", "--trainer.devices", "1"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for node in range(2)]
    wait_all(procs)


def srun_two_nodes(args: list[str]) -> None:
    """The two tasks ``srun --nodes 2 --ntasks-per-node 1 python -m dfnas_pl ...`` would start."""
    port = free_port()
    procs = []
    for task in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "SLURM_JOB_ID": "4242",
               "SLURM_JOB_NAME": "dfnas", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2",
               "SLURM_NODELIST": "localhost", "SLURM_PROCID": str(task), "SLURM_LOCALID": "0",
               "SLURM_NODEID": str(task), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, "-m", "dfnas_pl", *args, "--trainer.num_nodes", "2",
                                       "--trainer.devices", "1"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    wait_all(procs)


@pytest.mark.slow
def test_torchrun_two_nodes_split_the_synthesis_ids_and_agree_on_the_architecture(tmp_path, synthetic_set):
    out = tmp_path / "synthetic"
    torchrun_two_nodes(small(out, "--trainer.strategy", "ddp_nosync", iterations=10))
    recs = check_complete(out, rounds=2, per_round=40)  # every id once over both nodes, none lost
    for r in range(2):
        assert {rec["rank"] for rec in recs if rec["round"] == r} == {0, 1}, "both nodes made images"
    assert json.loads((out / "manifest.json").read_text())["world_size"] == 2

    search = tmp_path / "darts"
    torchrun_two_nodes(search_args("darts", search, synthetic_set, 1, 2, "--trainer.strategy", "ddp"))
    arch = json.loads((search / "architecture.json").read_text())
    assert arch["ranks_agreeing"] == 2 and arch["algorithm"] == "darts"


@pytest.mark.slow
def test_slurm_two_tasks_on_two_nodes_agree_on_the_architecture(tmp_path, synthetic_set):
    out = tmp_path / "proxylessnas"
    srun_two_nodes(search_args("proxylessnas", out, synthetic_set, 1, 2, "--trainer.strategy",
                               "ddp_find_unused_parameters_true"))
    arch = json.loads((out / "architecture.json").read_text())
    assert arch["ranks_agreeing"] == 2 and arch["algorithm"] == "proxylessnas"


def test_synthesis_refuses_reduced_precision(tmp_path):
    proc = run_cli(*small(tmp_path / "s", "--trainer.precision", "bf16-mixed", iterations=2), check=False)
    assert proc.returncode != 0
    assert "Synthesis runs in full precision" in proc.stderr and "--trainer.precision 32-true" in proc.stderr
    assert not (tmp_path / "s" / "records").exists()  # refused before anything was written


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["darts", "spos"])
def test_search_runs_under_bf16_autocast(tmp_path, synthetic_set, algorithm):
    out = tmp_path / algorithm
    run_cli(*search_args(algorithm, out, synthetic_set, 1, 2, "--trainer.precision", "bf16-mixed"))
    arch = json.loads((out / "architecture.json").read_text())
    assert arch["algorithm"] == algorithm and arch["flops"] > 0


def test_gpu_overlays_compose_with_the_stage_configs():
    cfg = run_cli("fit", "--config", "experiments/fmnist/search_darts.yaml", "--config",
                  "experiments/cluster/gpu.yaml", "--print_config").stdout
    assert "accelerator: gpu" in cfg and "precision: bf16-mixed" in cfg and "DartsSearch" in cfg
    cfg = run_cli("fit", "--config", "experiments/fmnist/synthesize.yaml", "--config",
                  "experiments/cluster/gpu_synthesis.yaml", "--print_config").stdout
    assert "precision: 32-true" in cfg and "strategy: ddp_nosync" in cfg and "ModelInversion" in cfg


@pytest.mark.slow
def test_retraining_runs_under_bf16_autocast(tmp_path, synthetic_set, fmnist_root):
    search = tmp_path / "spos"
    run_cli(*search_args("spos", search, synthetic_set, 1, 1))
    out, metrics = tmp_path / "retrain", tmp_path / "retrain" / "metrics.json"
    args = ["--config", "experiments/fmnist/retrain.yaml", "--model.init_args.architecture",
            str(search / "architecture.json"), "--model.init_args.metrics_path", str(metrics),
            "--trainer.callbacks.init_args.dirpath", str(out / "checkpoints"), "--trainer.logger", "false",
            "--trainer.default_root_dir", str(out), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
            "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "2", "--data.init_args.root",
            str(fmnist_root), "--trainer.precision", "bf16-mixed"]
    run_cli("fit", *args)
    run_cli("test", *args, "--ckpt_path", str(out / "checkpoints" / "last.ckpt"))
    result = json.loads(metrics.read_text())
    assert 0.0 <= result["test_top1"] <= 1.0 and result["flops"] > 0
