"""Fault injection that can fail: a synthesis killed with SIGKILL at several random points (seeded), then
resumed with the same command, ends with exactly the set an uninterrupted run makes - every image
byte-identical, the same soft labels, each image id once - and the set passes ``check``."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPO, run_cli
from tests.test_synthesis_cli import check_complete, small


def files(out) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("images/*/*.png"))}


@pytest.mark.slow
def test_synthesis_killed_at_random_points_ends_identical_to_an_uninterrupted_run(tmp_path):
    args = dict(iterations=30, per_class=2, batch=5)  # 2 rounds x 4 batches of 5 images
    clean = tmp_path / "clean" / "synthetic"
    run_cli(*small(clean, **args))

    out = tmp_path / "killed" / "synthetic"
    rng = random.Random(0)
    kills = 0
    # three kills, each after a random number of finished batches (of 8) plus a random moment of the next
    # one, so that the kill points do not depend on how fast the machine is
    for finished in sorted(rng.sample(range(1, 8), 3)):
        proc = subprocess.Popen([sys.executable, "-m", "dfnas_pl", *small(out, **args)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "WANDB_MODE": "offline"})
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline and len(list(out.glob("records/*/*.pt"))) < finished:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is not None:
            continue
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
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
