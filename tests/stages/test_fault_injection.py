"""Fault injection that can fail: each stage killed with SIGKILL at several random points (seeded), then
resumed with the command README gives, ends with exactly what an uninterrupted run makes.

* synthesis: every image byte-identical, the same soft labels, each image id once, and ``check`` passes;
* a search (SPOS: random paths, so the random state matters) and retraining (random crops and flips):
  the same final weights, bit for bit, the same architecture / test top-1;
* the pipeline: the same architecture and test top-1 as an uninterrupted pipeline.

Kill points are "after k finished units (batches, epochs) plus a random moment of the next one", so they
do not depend on how fast the machine is."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, run_cli
from tests.stages.test_search_cli import search_args
from tests.stages.test_synthesis_cli import check_complete, small


def files(out) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("images/*/*.png"))}


def kill_repeatedly(args: list[str], finished: Callable[[], int], points: list[int], rng: random.Random,
                    later_args: list[str] = ()) -> int:
    """Start ``dfnas_pl *args`` once per kill point and SIGKILL its process group once ``finished()`` units
    are done plus a random moment; the second and later starts add ``later_args`` (e.g. ``--ckpt_path
    last``). Returns how many starts were really killed (a start may finish first)."""
    kills = 0
    for i, point in enumerate(points):
        proc = subprocess.Popen([sys.executable, "-m", "dfnas_pl", *args, *(later_args if i else ())], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "WANDB_MODE": "offline"})
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline and finished() < point:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is not None:
            continue
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    return kills


def epochs_checkpointed(checkpoints: Path) -> Callable[[], int]:
    """Finished epochs, from ModelCheckpoint's ``epoch=N-step=M.ckpt`` name (save_top_k 1 keeps the newest)."""
    def count() -> int:
        names = [re.match(r"epoch=(\d+)-", p.name) for p in checkpoints.glob("epoch=*.ckpt")]
        return max((int(m.group(1)) + 1 for m in names if m), default=0)
    return count


def final_weights(checkpoints: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} tensors differ after the resumes, e.g. {different[:3]}"


@pytest.mark.slow
def test_synthesis_killed_at_random_points_ends_identical_to_an_uninterrupted_run(tmp_path):
    args = dict(iterations=30, per_class=2, batch=5)  # 2 rounds x 4 batches of 5 images
    clean = tmp_path / "clean" / "synthetic"
    run_cli(*small(clean, **args))

    out = tmp_path / "killed" / "synthetic"
    rng = random.Random(0)
    # three kills, each after a random number of finished batches (of 8) plus a random moment of the next
    kills = kill_repeatedly(small(out, **args), lambda: len(list(out.glob("records/*/*.pt"))),
                            sorted(rng.sample(range(1, 8), 3)), rng)
    assert kills >= 2, "the run finished before it could be killed twice: make it longer"
    result = run_cli(*small(out, **args))  # the command README tells users to rerun
    assert "Resuming the synthetic set" in result.stdout + result.stderr

    check_complete(out, rounds=2, per_round=20)
    assert files(out) == files(clean)  # bit-identical images, the same names
    killed, reference = (torch.load(d / "soft_labels.pt", weights_only=True) for d in (out, clean))
    assert killed.keys() == reference.keys()
    for key in reference:
        assert torch.equal(killed[key], reference[key]) if torch.is_tensor(reference[key]) else \
            killed[key] == reference[key], key
    checked = run_cli("check", str(out))
    assert "is sound" in checked.stdout
    assert not list(out.rglob("*.tmp*")), "temporary files left behind"


@pytest.mark.slow
def test_search_killed_at_random_points_ends_with_the_uninterrupted_weights_and_architecture(tmp_path, synthetic_set):
    """SPOS draws a random path every step and augments with random crops: without the random state in the
    checkpoint (callbacks.random_state) or with a shuffle drawn from the global generator, a resumed
    run trains on other paths and images and its weights differ."""
    epochs = 6
    clean = tmp_path / "clean"
    run_cli(*search_args("spos", clean, synthetic_set, epochs, 3))

    out = tmp_path / "killed"
    rng = random.Random(1)
    kills = kill_repeatedly(search_args("spos", out, synthetic_set, epochs, 3),
                            epochs_checkpointed(out / "checkpoints"), sorted(rng.sample(range(1, epochs), 3)), rng,
                            later_args=["--ckpt_path", "last"])
    assert kills >= 2, "the search finished before it could be killed twice: make it longer"
    result = run_cli(*search_args("spos", out, synthetic_set, epochs, 3), "--ckpt_path", "last")
    assert "Restoring states from the checkpoint" in result.stdout + result.stderr

    assert_same_weights(final_weights(out / "checkpoints"), final_weights(clean / "checkpoints"))
    found, reference = (json.loads((d / "architecture.json").read_text()) for d in (out, clean))
    assert found["choices"] == reference["choices"] and found["flops"] == reference["flops"]


@pytest.mark.slow
def test_retraining_killed_at_random_points_ends_with_the_uninterrupted_weights_and_top1(tmp_path, fmnist_root):
    from dfnas_pl.search.export import write_architecture

    arch = tmp_path / "architecture.json"
    space = {"family": "shufflenetv2", "stem_channels": 8, "stage_channels": [16, 24], "stage_layers": [1, 1],
             "in_channels": 1, "num_classes": 10}
    write_architecture(arch, "test", "shufflenetv2", space, 28, ["k3", "xception"])
    epochs = 6

    def args(out: Path) -> list[str]:
        return ["fit", "--config", "experiments/fmnist/retrain.yaml", "--model.init_args.architecture", str(arch),
                "--model.init_args.metrics_path", str(out / "metrics.json"), "--data.init_args.root", str(fmnist_root),
                "--data.init_args.batch_size", "32", "--trainer.max_epochs", str(epochs),
                "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2",
                "--trainer.limit_test_batches", "2", "--trainer.logger", "false", "--trainer.default_root_dir",
                str(out), "--trainer.callbacks.init_args.dirpath", str(out / "checkpoints")]

    def test(out: Path) -> float:
        run_cli("test", *args(out)[1:], "--ckpt_path", "last")
        return json.loads((out / "metrics.json").read_text())["test_top1"]

    clean = tmp_path / "clean"
    run_cli(*args(clean))
    out = tmp_path / "killed"
    rng = random.Random(2)
    kills = kill_repeatedly(args(out), epochs_checkpointed(out / "checkpoints"),
                            sorted(rng.sample(range(1, epochs), 3)), rng, later_args=["--ckpt_path", "last"])
    assert kills >= 2, "the retraining finished before it could be killed twice: make it longer"
    run_cli(*args(out), "--ckpt_path", "last")
    assert_same_weights(final_weights(out / "checkpoints"), final_weights(clean / "checkpoints"))
    assert test(out) == test(clean)


@pytest.mark.slow
def test_pipeline_killed_at_random_points_ends_with_the_uninterrupted_architecture_and_top1(tmp_path, fmnist_root):
    from tests.stages.test_pipeline import toy_overrides

    overrides = toy_overrides()
    overrides["synthesis"] += ["--model.init_args.rounds", "3"]  # 3 batches of 10 images
    overrides["search"] += ["--trainer.max_epochs", "3"]
    overrides["retrain"] += ["--trainer.max_epochs", "3", "--data.init_args.root", str(fmnist_root)]

    def config(name: str) -> tuple[Path, Path]:
        run, path = tmp_path / name, tmp_path / f"{name}.yaml"
        path.write_text(json.dumps({"run_dir": str(run), "algorithms": ["spos"], "overrides": overrides}))
        return path, run

    clean_config, clean = config("clean")
    run_cli("pipeline", "--config", str(clean_config), timeout=900)

    killed_config, run = config("killed")
    search, retrain = epochs_checkpointed(run / "search/spos/checkpoints"), epochs_checkpointed(run / "retrain/spos/checkpoints")

    def finished() -> int:  # units of the whole pipeline: synthesis batches, then search and retraining epochs
        return len(list(run.glob("synthetic/records/*/*.pt"))) + search() + retrain()

    rng = random.Random(3)
    kills = kill_repeatedly(["pipeline", "--config", str(killed_config)], finished, sorted(rng.sample(range(1, 9), 3)),
                            rng)
    assert kills >= 2, "the pipeline finished before it could be killed twice: make it longer"
    assert not (run / "pipeline_results.md").exists()
    finished_outputs = [p for p in (run / "synthetic/manifest.json", run / "search/spos/architecture.json") if p.exists()]
    assert finished_outputs, "no stage finished before the last kill: the test no longer covers skipping"
    stamps = {p: p.stat().st_mtime_ns for p in finished_outputs}

    out = run_cli("pipeline", "--config", str(killed_config), timeout=900).stdout
    assert "synthesis: done" in out
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # finished stages are not redone
    spent = json.loads((run / "stage_seconds.json").read_text())
    results = json.loads((run / "pipeline_results.json").read_text())
    assert results["stage_seconds"] == spent  # the results show the run's full cost, killed attempts included
    assert spent["synthesis"] > 0 and "synthesis" not in results["stage_seconds_this_invocation"]
    assert "retrain spos" in results["stage_seconds_this_invocation"]

    assert "is sound" in run_cli("check", str(run / "synthetic")).stdout
    assert files(run / "synthetic") == files(clean / "synthetic")
    found, reference = (json.loads((d / "search/spos/architecture.json").read_text()) for d in (run, clean))
    assert found["choices"] == reference["choices"]
    assert_same_weights(final_weights(run / "retrain/spos/checkpoints"), final_weights(clean / "retrain/spos/checkpoints"))
    metrics = [json.loads((d / "retrain/spos/metrics.json").read_text()) for d in (run, clean)]
    assert metrics[0]["test_top1"] == metrics[1]["test_top1"]
    assert metrics[0]["epochs"] == metrics[1]["epochs"] == 3  # tested from last.ckpt: its epochs, not 1


def test_the_random_state_survives_a_weights_only_checkpoint_and_is_restored_when_training_starts():
    import io

    import numpy as np

    from callbacks.random_state import RandomStateInCheckpoint

    saver = RandomStateInCheckpoint()
    buffer = io.BytesIO()
    torch.save({"callbacks": {"RandomStateInCheckpoint": saver.state_dict()}}, buffer)
    expected = (torch.rand(3), random.random(), np.random.rand())  # what an uninterrupted run draws next

    loader = RandomStateInCheckpoint()
    loader.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)["callbacks"]
                           ["RandomStateInCheckpoint"])
    torch.rand(5), random.random(), np.random.rand()  # a resumed run draws other numbers before training
    loader.on_train_epoch_start(None, None)
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(again[0], expected[0]) and again[1:] == expected[1:]
    loader.on_train_epoch_start(None, None)  # only once: later epochs go on with their own draws
    assert not torch.equal(torch.rand(3), expected[0])
