"""Synthesis through the real CLI: resume after a kill, DDP sharding over 2 processes, logging."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from dfnas_pl.data.synthetic import SyntheticSetWriter
from tests.conftest import REPO, lock_held_by_another_process, run_cli
from tests.unit.test_atomic_writes import killed_writing, temporaries

CONFIG = "experiments/fmnist/synthesize.yaml"


def small(out, *extra, iterations=40, per_class=4, batch=10):
    """A small run of the shipped config with the paper's method switched on (the shipped default is plain
    inversion): the most involved path, whose round 1 depends on round 0's saved images (resume, DDP)."""
    return ["fit", "--config", CONFIG, "--model.init_args.output_dir", str(out),
            "--model.init_args.label_calibration", "true", "--model.init_args.regional_update", "zoom",
            "--model.init_args.iterations", str(iterations), "--model.init_args.warmup_iterations", "5",
            "--data.init_args.images_per_class", str(per_class), "--data.init_args.batch_size", str(batch),
            "--trainer.logger", "false", "--trainer.default_root_dir", str(out.parent),
            "--model.init_args.quality_gate", "false", *extra]


# both synthesizers write the same set format through the same writer: resume and sharding hold for each (a
# narrow generator and fewer steps keep its runs as short as the pixels' ones; the kill still lands mid-run)
SYNTHESIZERS = {"pixels": ["--model.init_args.synthesizer", "pixels"], "generator": ["--model.init_args.synthesizer", "generator",
                                            "--model.init_args.generator_width", "16"]}
KILL_ITERATIONS = {"pixels": 150, "generator": 60}


def all_records(out):
    writer = SyntheticSetWriter(out, 10)
    return [rec for r in writer.rounds_on_disk() for rec in writer.records(r)]


def check_complete(out, rounds, per_round):
    recs = all_records(out)
    for r in range(rounds):
        slots = [int(s) for rec in recs if rec["round"] == r for s in rec["slots"]]
        assert sorted(slots) == list(range(per_round)), f"round {r}: slots {sorted(slots)}"
    pngs = list(out.glob("images/*/*.png"))
    assert len(pngs) == rounds * per_round == len({p.stem for p in pngs})
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["images"] == rounds * per_round
    return recs


@pytest.mark.slow
@pytest.mark.parametrize("synthesizer", SYNTHESIZERS)
def test_killed_run_resumes_without_losing_or_duplicating(tmp_path, synthesizer):
    out = tmp_path / "synthetic"
    extra, iterations = SYNTHESIZERS[synthesizer], KILL_ITERATIONS[synthesizer]
    cmd = [sys.executable, "-m", "dfnas_pl", *small(out, *extra, iterations=iterations)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "WANDB_MODE": "offline"})
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("records/round_00/*.pt"))) < 2:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.relative_to(out): p.read_bytes() for p in out.glob("records/*/*.pt")}
    assert 2 <= len(before) < 8 and not (out / "manifest.json").exists()
    killed_writing(out / "grids" / "round_00.png")  # and a writer killed mid-write (the kill above may add one)
    assert temporaries(out)

    result = run_cli(*small(out, *extra, iterations=iterations))
    assert "Resuming the synthetic set" in result.stdout + result.stderr
    assert "not part of the set" not in result.stdout  # the generator's own file is the set's, not foreign
    assert re.search(r"and [12] temporary files of interrupted writes", result.stdout + result.stderr)
    check_complete(out, rounds=2, per_round=40)
    for name, data in before.items():  # finished batches were kept, not redone
        assert (out / name).read_bytes() == data
    assert not list(out.rglob("*.tmp*")), "temporary files left behind"
    assert run_cli("check", str(out)).returncode == 0  # a sound set, whichever synthesizer made it
    assert (out / "generator" / "rank_00.pt").exists() == (synthesizer == "generator")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["cost"]["per_image"] == iterations  # teacher passes (forward + backward) per image: the steps


@pytest.mark.slow
@pytest.mark.parametrize("synthesizer", SYNTHESIZERS)
def test_ddp_two_processes_split_the_ids_exactly_once(tmp_path, synthesizer):
    out = tmp_path / "synthetic"
    run_cli(*small(out, "--trainer.strategy", "ddp_nosync", "--trainer.devices", "2", *SYNTHESIZERS[synthesizer],
                   iterations=10),
            env={"OMP_NUM_THREADS": "1"})
    recs = check_complete(out, rounds=2, per_round=40)
    for r in range(2):
        ranks = {rec["rank"] for rec in recs if rec["round"] == r}
        assert ranks == {0, 1}, f"round {r} was made by ranks {ranks}"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    if synthesizer == "generator":  # each process meta-learns its own generator
        assert sorted(p.name for p in (out / "generator").iterdir()) == ["rank_00.pt", "rank_01.pt"]
    # round 1 targets come from round 0 images made on either rank
    r0 = {int(s): z for rec in recs if rec["round"] == 0 for s, z in zip(rec["slots"], rec["logits"])}
    for rec in (rec for rec in recs if rec["round"] == 1):
        for s, t in zip(rec["slots"].tolist(), rec["targets"]):
            torch.testing.assert_close(t, torch.softmax(r0[s], 0))


@pytest.mark.slow
def test_wandb_offline_and_tensorboard_get_the_image_grids(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "synthetic"
    loggers = tmp_path / "loggers.yaml"
    loggers.write_text(f"""trainer:
  logger:
    - class_path: lightning.pytorch.loggers.WandbLogger
      init_args: {{save_dir: {tmp_path}, offline: true, project: dfnas_pl-test}}
    - class_path: lightning.pytorch.loggers.TensorBoardLogger
      init_args: {{save_dir: {tmp_path / 'tb'}}}
""")
    args = small(out, iterations=5, per_class=2)
    args = args[:args.index("--trainer.logger")] + args[args.index("--trainer.logger") + 2:]
    run_cli(*args, "--config", str(loggers))
    assert sorted(p.name for p in (out / "grids").glob("*.png")) == ["round_00.png", "round_01.png"]
    wandb_images = list(tmp_path.glob("wandb/offline-run-*/files/media/images/synthesis/*.png"))
    assert len(wandb_images) == 2, list(tmp_path.rglob("*.png"))
    events = EventAccumulator(str(next((tmp_path / "tb").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    assert "synthesis/images" in events.Tags()["images"]
    assert len(events.Images("synthesis/images")) == 2
    assert "synthesis/teacher_top1_epoch" in events.Tags()["scalars"]


def test_help_and_print_config_read_well():
    help_text = run_cli("fit", "--help").stdout
    assert "--config" in help_text and "--print_config" in help_text
    model_help = run_cli("fit", "--model.help", "dfnas_pl.inversion.ModelInversion").stdout
    for name in ("--model.r_feature", "--model.label_calibration", "--model.regional_update", "BatchNorm"):
        assert name in model_help
    printed = run_cli("fit", "--config", CONFIG, "--print_config").stdout
    assert "r_feature: 0.1" in printed and "class_path: dfnas_pl.data.SynthesisSlots" in printed


@pytest.mark.slow
def test_one_writer_per_set_and_a_killed_writer_leaves_no_stale_lock(tmp_path):
    """A process holds the set's lock (as a running synthesis does, without the race of timing one): a
    synthesis on the same directory is refused with the holder's pid; after the holder is killed with
    SIGKILL the lock is free again and the synthesis runs to the end."""
    out = tmp_path / "synthetic"
    with lock_held_by_another_process(out) as holder:  # SIGKILL-ed at the end: no clean-up, the OS drops the lock
        refused = run_cli(*small(out, iterations=5), check=False)
        assert refused.returncode != 0
        assert "being written by another run" in refused.stderr and f"pid {holder.pid}" in refused.stderr
        assert not (out / "run.json").exists()  # refused before touching the set
    run_cli(*small(out, iterations=5))
    check_complete(out, rounds=2, per_round=40)
    assert not (out / ".dfnas_pl.lock.owner").exists()
