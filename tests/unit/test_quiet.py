"""The library messages dfnas_pl silences (dfnas_pl/quiet.py) are matched by what Lightning really prints: a
toy fit that provokes each of them, once as Lightning alone and once with ``quiet_library_noise()``. A pattern
that stops matching a new Lightning's wording fails here, not in front of a user."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

SCRIPT = r'''
import os, sys, torch, lightning as L
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
if os.environ.get("QUIET") == "1":
    from dfnas_pl.quiet import quiet_library_noise
    quiet_library_noise()

class Toy(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(2, 2).eval()         # a frozen teacher: a module in eval mode
        self.net = nn.Linear(2, 2)
        self.automatic_optimization = False
    def training_step(self, batch, i):
        return None
    def configure_optimizers(self):
        return None                                  # the synthesis optimises images, not weights
    def configure_callbacks(self):
        return [L.pytorch.callbacks.TQDMProgressBar()]  # each stage brings its own bar
    def on_train_epoch_end(self):
        self.trainer.should_stop = True              # a stage that stops itself (rounds, generations)

data = DataLoader(TensorDataset(torch.zeros(4, 2)), batch_size=2)
trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                    enable_model_summary=False, enable_progress_bar=True)
trainer.fit(Toy(), train_dataloaders=data)
print("FIT DONE")
'''

# (Lightning's "does not have many workers" needs more than 2 CPUs to appear, so it is not provoked here.)
MESSAGES = ["configure_optimizers` returned `None`", "`max_epochs` was not set", "module(s) in eval mode",
            "will override existing callbacks"]


def run(quiet: bool) -> str:
    env = {**os.environ, "QUIET": "1" if quiet else "0", "PYTHONWARNINGS": "default"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "FIT DONE" in proc.stdout, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_the_silenced_messages_are_what_lightning_prints_and_only_they_go():
    loud, quiet = run(quiet=False), run(quiet=True)
    assert all(m in loud for m in MESSAGES), [m for m in MESSAGES if m not in loud]  # the toy provokes each
    assert not [m for m in MESSAGES if m in quiet]
