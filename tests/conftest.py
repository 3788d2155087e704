"""Shared helpers: tiny real synthesis runs (the embedded teacher, a few iterations) and CLI runs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import lightning as L
import pytest
import torch

from dfnas_pl.data.synthesis_slots import SynthesisSlots
from dfnas_pl.inversion.module import ModelInversion

REPO = Path(__file__).resolve().parents[1]
TEACHER = "embedded:fmnist_resnet8"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# decoded-image caches (an ImageFolder's, dfnas_pl/data/decoded.py) go to a folder of this test session, not
# the user's ~/.cache; the CLI runs the tests start inherit it
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="dfnas-test-cache-")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs the tests on 2 xdist workers (one per core): one torch thread per worker, and the
    # same for the stage processes the tests start (the CLI reads DFNAS_NUM_THREADS), not 2 x 2 threads
    os.environ.setdefault("DFNAS_NUM_THREADS", "1")
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, torch.get_num_threads()))


def synthesize(out: Path, rounds: int = 2, images_per_class: int = 2, batch_size: int = 10, iterations: int = 20,
               callbacks=None, logger=False, num_classes: int = 10, **kwargs) -> ModelInversion:
    """A real (small) synthesis run through the Lightning Trainer."""
    kwargs.setdefault("warmup_iterations", 5)
    kwargs.setdefault("quality_gate", False)  # a few iterations: the teacher does not yet recognise the images
    kwargs.setdefault("teacher", TEACHER)
    # the paper's method with its official BN-loss weight unless a test says otherwise (the library default
    # is plain inversion at r_feature 0.1): the calibrated, regional path is the one with the most to get wrong
    kwargs.setdefault("label_calibration", True)
    kwargs.setdefault("regional_update", "zoom")
    kwargs.setdefault("r_feature", 0.01)
    model = ModelInversion(output_dir=str(out), rounds=rounds, iterations=iterations, **kwargs)
    data = SynthesisSlots(num_classes=num_classes, images_per_class=images_per_class, batch_size=batch_size)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=logger, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks or [],
                        default_root_dir=str(out.parent), log_every_n_steps=1)
    trainer.fit(model, datamodule=data)
    return model


def run_cli(*args: str, cwd: Path = REPO, timeout: int = 600, env: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "dfnas_pl", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"dfnas_pl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc


@contextlib.contextmanager
def lock_held_by_another_process(directory: Path):
    """A separate process holds ``directory``'s one-writer lock (as a running stage would, without the race
    of timing one); yields that process, killed with SIGKILL on exit (the OS then frees the lock)."""
    holder = subprocess.Popen([sys.executable, "-c", "import time; from dfnas_pl.utils.locking import OutputLock; "
                               f"lock = OutputLock({str(directory)!r}).acquire(); print('held', flush=True); "
                               "time.sleep(600)"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory) -> Path:
    """One small finished synthetic set (2 rounds x 20 images), shared by read-only tests."""
    out = tmp_path_factory.mktemp("shared") / "synthetic"
    synthesize(out, rounds=2, images_per_class=2, batch_size=10, iterations=30)
    return out


@pytest.fixture(scope="session")
def fmnist_root(tmp_path_factory) -> Path:
    """Real Fashion-MNIST, gunzipped from Debian's package into a fresh root."""
    from dfnas_pl.data.fashion_mnist import prepare_fashion_mnist

    root = tmp_path_factory.mktemp("fmnist")
    assert prepare_fashion_mnist(root), "Debian's dataset-fashion-mnist package is missing: run `make install`."
    return root


MACRO_TINY_SPACE = {"family": "macro", "stem_channels": 4, "stage_channels": [4, 8, 16], "stage_layers": [2, 3, 3],
                    "stage_strides": [2, 2, 2], "stem_stride": 2, "head_channels": 32, "in_channels": 1,
                    "num_classes": 10, "image_size": 28}
# depth 0, 1, 2, 4 and 8 MBConv layers: a planted spread from the all-identity network up
MACRO_TINY_ARCHS = [["identity"] * 8, ["mbconv_k3_e3"] + ["identity"] * 7,
                    ["mbconv_k5_e6"] * 2 + ["identity"] * 6, ["mbconv_k3_e3"] * 4 + ["identity"] * 4,
                    ["mbconv_k5_e6"] * 8]


@pytest.fixture(scope="session")
def macro_groundtruth(tmp_path_factory, fmnist_root) -> Path:
    """A toy macro ground truth with the tensor loop (EMA, flip-TTA, NLL): 5 architectures x 2 seeds."""
    from dfnas_pl.drivers.groundtruth import GroundTruth, Selection, TrainingRecipe
    from dfnas_pl.search.layerwise_space import LayerwiseSpaceConfig

    out = tmp_path_factory.mktemp("macro_gt")
    GroundTruth(LayerwiseSpaceConfig.from_dict(MACRO_TINY_SPACE), str(out / "gt.json"), str(out / "work"),
                {"class_path": "dfnas_pl.data.FashionMNISTDataModule", "init_args": {"root": str(fmnist_root)}},
                TrainingRecipe(train_images=4096, epochs=2, batch_size=64, lr=0.2, label_smoothing=0.1, augment=True,
                               loop="tensor", ema_decay=0.9, flip_tta=True),
                Selection(stratified=0, median_band=0, include=tuple(tuple(a) for a in MACRO_TINY_ARCHS)),
                [0, 1], workers=2)()
    return out / "gt.json"
