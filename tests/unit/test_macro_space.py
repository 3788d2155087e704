"""The macro space (NAS-Bench-Macro's choices) and the ground truth's tensor training loop: every choice
builds at every layer with the right shape, a path's FLOPs are the built module's, the EMA and the flip
test-time augmentation do what they should, the signal formulas recover a planted spread, and a toy
ground truth with a planted spread ranks its architectures the same way on two seeds."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from torch import nn

from dfnas_pl.drivers.rank_signal import predicted_taus, seeds_for, spread_and_noise
from dfnas_pl.drivers.tensor_training import BatchAugment, WeightEMA, evaluate
from dfnas_pl.search.export import build_model, count_flops
from dfnas_pl.search.layerwise_space import MACRO_CHOICES, LayerwiseSpaceConfig, LayerwiseSupernet
from dfnas_pl.search.space_registry import space_sampler
from tests.conftest import MACRO_TINY_ARCHS, MACRO_TINY_SPACE

SPACE = {**MACRO_TINY_SPACE, "stem_channels": 6, "stage_channels": [6, 12, 24], "head_channels": 256}


def test_every_choice_builds_at_every_layer_with_the_layer_shape():
    net = LayerwiseSupernet(LayerwiseSpaceConfig.from_dict(SPACE))
    assert net.choice_names == [MACRO_CHOICES] * 8
    x = net.stem(torch.zeros(2, 1, 28, 28))
    assert x.shape[-1] == 14  # the stride-2 stem
    for (c_in, c_out, stride), blocks in zip(net.specs, net.layers):
        outs = [b(x) for b in blocks]
        side = math.ceil(x.shape[-1] / stride)
        assert {tuple(o.shape) for o in outs} == {(2, c_out, side, side)}
        identity = blocks[MACRO_CHOICES.index("identity")]
        # a shape-changing identity is a 1x1 convolution + BN; elsewhere it is parameter-free
        assert (sum(p.numel() for p in identity.parameters()) > 0) == (stride != 1 or c_in != c_out)
        x = outs[0]
    assert [s for _, _, s in net.specs] == [2, 1, 2, 1, 1, 2, 1, 1]


def test_the_flops_of_a_path_are_the_built_modules():
    sampler = space_sampler("macro", SPACE)
    rng = random.Random(0)
    for choices in [["identity"] * 8, ["mbconv_k5_e6"] * 8] + [sampler.draw(rng) for _ in range(4)]:
        assert sampler.flops(choices) == count_flops(build_model("macro", SPACE, choices), (1, 28, 28))
    assert sampler.flops(["identity"] * 8) * 5 < sampler.flops(["mbconv_k5_e6"] * 8)


def test_the_ema_follows_the_weights_with_a_warmed_up_decay():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = WeightEMA(model, decay=0.99)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model.train()
    model(torch.randn(8, 2) + 5)  # moves the BN running mean
    ema.update(model)
    d = min(0.99, 2 / 11)  # the first update's warmed-up decay
    assert torch.allclose(ema.module[0].weight, d * start + (1 - d) * model[0].weight)
    assert torch.allclose(ema.module[1].running_mean, (1 - d) * model[1].running_mean)  # started at 0
    assert not ema.module[0].weight.requires_grad


def test_flip_tta_averages_the_image_and_its_mirror():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))  # not mirror-symmetric
    x, y = torch.randn(10, 1, 4, 4), torch.randint(0, 3, (10,))
    with torch.no_grad():
        prob = (model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2
    tta = evaluate(model, x, y, flip_tta=True)
    assert tta["nll"] == pytest.approx(float(-prob.gather(1, y.view(-1, 1)).log().mean()), rel=1e-5)
    assert tta["nll"] != pytest.approx(evaluate(model, x, y, flip_tta=False)["nll"], rel=1e-3)
    symmetric = x + x.flip(3)  # a mirror-symmetric image: TTA changes nothing
    assert evaluate(model, symmetric, y, True)["nll"] == pytest.approx(evaluate(model, symmetric, y, False)["nll"])


def test_batch_augment_shifts_within_the_padding_and_flips():
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 3, 2] = 1.0  # one bright pixel off-centre
    out = BatchAugment(x, padding=2)(x, torch.Generator().manual_seed(0))
    cols = out.squeeze(1).amax(1).argmax(1)
    rows = out.squeeze(1).amax(2).argmax(1)
    assert out.sum(dim=(1, 2, 3)).eq(1).all()  # the pixel is never cut off by a 2 px shift here
    assert set(rows.tolist()) == {1, 2, 3, 4, 5}
    assert any(c >= 5 - 2 for c in cols.tolist()) and any(c <= 2 for c in cols.tolist())  # flipped and not


def test_the_signal_formulas_recover_a_planted_spread_and_the_published_taus():
    # NAS-Bench-Macro's 3-seed table: spread 2.68 against noise 0.21 predicts a seed tau of 0.93
    assert predicted_taus(2.68, 0.21, 1)["seed_vs_seed"] == pytest.approx(0.93, abs=0.01)
    assert predicted_taus(2.1, 1.0, 1)["seed_vs_seed"] == pytest.approx(0.6, abs=0.02)
    assert predicted_taus(1.0, 1.0, 4)["truth_vs_mean"] > predicted_taus(1.0, 1.0, 2)["truth_vs_mean"]
    assert seeds_for(1.0, 1.0, 0.75) == 6 and seeds_for(0.01, 1.0, 0.75) is None  # r_k = k / (k + 1)
    gen = torch.Generator().manual_seed(0)
    truth = 2.0 * torch.randn(400, generator=gen)
    values = (truth[:, None] + 0.5 * torch.randn(400, 2, generator=gen)).tolist()
    sa, sn = spread_and_noise(values)
    assert sa == pytest.approx(2.0, rel=0.1) and sn == pytest.approx(0.5, rel=0.1)


@pytest.mark.slow
def test_a_toy_ground_truth_with_a_planted_spread_agrees_with_itself(macro_groundtruth):
    gt = json.loads(macro_groundtruth.read_text())
    archs = {tuple(a["choices"]): a for a in gt["architectures"]}
    assert set(archs) == {tuple(a) for a in MACRO_TINY_ARCHS} and gt["complete"]
    shallow, deep = archs[tuple(MACRO_TINY_ARCHS[0])], archs[tuple(MACRO_TINY_ARCHS[-1])]
    for seed in ("0", "1"):  # the planted spread: the deepest network far above the all-identity one
        assert deep["top1"][seed] > shallow["top1"][seed] + 0.2 and deep["nll"][seed] < shallow["nll"][seed]
    signal = gt["signal"]
    assert signal["top1"]["all"]["observed_seed_tau"] >= 0.6
    assert signal["top1"]["all"]["spread_sd"] > signal["top1"]["all"]["noise_sd"]
    assert signal["nll"]["flops_tau"] > 0.5


def test_the_whole_split_decoded_at_once_equals_the_per_image_path(fmnist_root):
    from torch.utils.data import Subset

    from dfnas_pl.data import FashionMNISTDataModule
    from dfnas_pl.drivers.tensor_training import _stack_at_once

    dm = FashionMNISTDataModule(root=str(fmnist_root), augment=False)
    dm.setup("fit")
    part = Subset(dm.train_set.dataset, dm.train_set.indices[:300])  # a split of a split, as the driver's subset
    x, y = _stack_at_once(part)
    per_image = torch.stack([part[i][0] for i in range(300)])
    assert torch.equal(x, per_image) and y.tolist() == [part[i][1] for i in range(300)]
    assert _stack_at_once([(torch.zeros(1, 2, 2), 0)]) is None  # not an MNIST-like dataset: the per-image path
