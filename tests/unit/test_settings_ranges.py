"""Out-of-range settings of every stage fail at construction, naming the setting, the value and the
valid range - before any data is read or any work is done."""

import pytest

from dfnas_pl.data.search_data import SearchDataModule
from dfnas_pl.data.synthetic_datamodule import SyntheticDataModule
from dfnas_pl.data.vision import VisionDataModule
from dfnas_pl.distillation import DistilledClassifier
from dfnas_pl.search.darts import DartsSearch
from dfnas_pl.search.proxylessnas import ProxylessSearch
from dfnas_pl.search.spos import SPOSSearch

CASES = [
    (SPOSSearch, {"lr": -0.1}, r"model.init_args.lr must lie in \(0, inf\), got -0.1"),
    (SPOSSearch, {"top_k": 30, "population": 16}, r"top_k must lie in \[1, 16\], got 30"),
    (SPOSSearch, {"mutation_prob": 1.5}, r"mutation_prob must lie in \[0, 1\]"),
    (DartsSearch, {"w_grad_clip": 0.0}, r"w_grad_clip must lie in \(0, inf\)"),
    (DartsSearch, {"alpha_lr": float("nan")}, r"alpha_lr must be a finite number"),
    (ProxylessSearch, {"target_mflops": 0.0}, r"target_mflops must lie in \(0, inf\)"),
    (DistilledClassifier, {"temperature": 0.0}, r"temperature must lie in \(0, inf\)"),
    (SearchDataModule, {"val_fraction": 1.0}, r"data.init_args.val_fraction must lie in \(0, 1\), got 1.0"),
    (SearchDataModule, {"batch_size": 0}, r"data.init_args.batch_size must lie in \[1, inf\)"),
    (SyntheticDataModule, {"val_fraction": 1.0}, r"val_fraction must lie in \[0, 1\)"),
    (VisionDataModule, {"val_size": -5}, r"data.init_args.val_size must lie in \[0, inf\), got -5"),
]


@pytest.mark.parametrize("cls,kwargs,message", CASES, ids=[f"{c.__name__}-{next(iter(k))}" for c, k, _ in CASES])
def test_out_of_range_setting_is_named_with_its_range(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)
