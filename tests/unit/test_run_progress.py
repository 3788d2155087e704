"""The one progress bar of a training run: counts every epoch's batches in one bar, resumes where it stood."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from callbacks.random_state import ResumesExactly
from callbacks.run_progress import OneProgressBar, RunProgressBar


class Tiny(OneProgressBar, ResumesExactly, L.LightningModule):
    progress_name = "Tiny run"

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.training_step(batch, batch_idx))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader():
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(32, 4, generator=g), torch.randint(2, (32,), generator=g)), batch_size=8)


def fit(tmp_path, epochs, ckpt=None):
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)])
    trainer.fit(Tiny(), loader(), loader(), ckpt_path=ckpt)
    return trainer


@pytest.mark.filterwarnings("ignore:Checkpoint directory")  # the resumed run writes where it was resumed from
def test_one_bar_counts_every_epochs_batches_and_a_resume_starts_where_it_stood(tmp_path, capsys):
    trainer = fit(tmp_path, 3)
    bar = trainer.progress_bar_callback
    assert type(bar) is RunProgressBar  # Lightning's default bar was swapped
    assert (bar.train_progress_bar.total, bar.train_progress_bar.n) == (12, 12)  # 3 epochs x 4 batches, one bar
    out = capsys.readouterr().out
    assert "Tiny run" in out and "12/12" in out and "Epoch 0" not in out and "Validation" not in out
    resumed = fit(tmp_path, 5, ckpt=str(tmp_path / "last.ckpt"))
    assert (resumed.progress_bar_callback.train_progress_bar.total, resumed.progress_bar_callback.train_progress_bar.n) \
        == (20, 20)
    assert "12/20" in capsys.readouterr().out  # the resumed run's bar starts at the checkpoint's 12 steps


class MyBar(L.pytorch.callbacks.TQDMProgressBar):
    pass


def test_a_bar_of_the_users_own_kind_is_kept(tmp_path):
    mine = MyBar(refresh_rate=3)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_model_summary=False, default_root_dir=tmp_path,
                        enable_checkpointing=False, callbacks=[mine])
    trainer.fit(Tiny(), loader(), loader())
    assert trainer.progress_bar_callback is mine
