"""DARTS: op and supernet shapes, the second-order architecture gradient, export round trip, the
collapse guard and its measures."""

import json
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from dfnas_pl.search.darts import DartsSearch
from dfnas_pl.search.darts_space import (
    PARAMETER_FREE,
    DartsNetwork,
    DartsSpaceConfig,
    DartsSupernet,
    alpha_entropy,
    count_parameter_free,
    derive_genotype,
)
from dfnas_pl.search.export import build_from_architecture, count_flops, count_params
from dfnas_pl.search.ops import OPS


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize(("size", "stride", "out"), [(28, 1, 28), (28, 2, 14), (7, 2, 4), (7, 1, 7)])
def test_every_op_keeps_channels_and_scales_resolution(name, size, stride, out):
    op = OPS[name](6, stride, False)
    assert op(torch.randn(2, 6, size, size)).shape == (2, 6, out, out)


@pytest.mark.parametrize(("in_channels", "size"), [(1, 28), (3, 32)])
def test_supernet_and_discrete_network_shapes(in_channels, size):
    cfg = DartsSpaceConfig(channels=4, layers=3, in_channels=in_channels, num_classes=7)
    weights = torch.softmax(torch.randn(cfg.num_edges, len(cfg.primitives)), 1)
    assert cfg.num_edges == 14
    assert DartsSupernet(cfg)(torch.randn(2, in_channels, size, size), weights, weights).shape == (2, 7)
    genotype = {"normal": derive_genotype(weights, cfg), "reduce": derive_genotype(weights, cfg)}
    assert DartsNetwork(cfg, genotype)(torch.randn(2, in_channels, size, size)).shape == (2, 7)


def test_genotype_keeps_the_two_strongest_inputs_and_never_none():
    cfg = DartsSpaceConfig(steps=2)
    w = torch.zeros(cfg.num_edges, len(cfg.primitives))
    none, sep3, pool = (cfg.primitives.index(p) for p in ("none", "sep_conv_3x3", "max_pool_3x3"))
    w[:, none] = 10.0  # 'none' is strongest everywhere, and must be ignored
    w[0, sep3], w[1, pool] = 3.0, 2.0  # node 0: inputs 0 (sep) and 1 (pool)
    w[2 + 2, sep3], w[2 + 1, pool], w[2, pool] = 5.0, 4.0, 0.5  # node 1: inputs 2 (sep) and 1 (pool)
    assert derive_genotype(w, cfg) == [[("sep_conv_3x3", 0), ("max_pool_3x3", 1)],
                                       [("max_pool_3x3", 1), ("sep_conv_3x3", 2)]]


def test_second_order_alpha_gradient_matches_finite_differences():
    """The unrolled gradient d/d alpha L_val(w - xi * (grad_w L_train(w, alpha) + wd w), alpha),
    with its Hessian-vector product by finite differences, against central differences of that
    function along random directions (float64)."""
    torch.manual_seed(0)
    cfg = DartsSpaceConfig(channels=2, layers=2, steps=2, primitives=("none", "skip_connect", "avg_pool_3x3",
                                                                     "sep_conv_3x3"))
    # float64 and a small Hessian step: ReLU kinks make a 0.01 step inexact on a net this small
    model = DartsSearch(space=cfg, teacher=None, unrolled=True, w_weight_decay=3e-4, hessian_eps=1e-6).double()
    with torch.no_grad():
        for a in model.alphas():
            a.normal_(0, 0.5)
    train = (torch.randn(6, 1, 12, 12, dtype=torch.float64), torch.randint(0, 10, (6,)))
    val = (torch.randn(6, 1, 12, 12, dtype=torch.float64), torch.randint(0, 10, (6,)))
    xi = 0.5
    grads = model.alpha_gradient(train, val, xi)
    first_order = torch.autograd.grad(model._loss(None, model.alphas(), *val), model.alphas())

    names = [n for n, _ in model.supernet.named_parameters()]
    w = [p.detach() for p in model.supernet.parameters()]

    def unrolled_val_loss(alphas):
        with torch.enable_grad():
            g = torch.autograd.grad(model._loss(None, alphas, *train), model.weights())
        virtual = dict(zip(names, [wi - xi * (gi + 3e-4 * wi) for wi, gi in zip(w, g)]))
        normal, reduce = (F.softmax(a, -1) for a in alphas)
        return F.cross_entropy(functional_call(model.supernet, virtual, (val[0], normal, reduce)), val[1])

    h = 1e-5
    for _ in range(3):
        u = [torch.randn_like(a) for a in model.alphas()]
        plus = unrolled_val_loss([(a + h * ui).detach().requires_grad_() for a, ui in zip(model.alphas(), u)])
        minus = unrolled_val_loss([(a - h * ui).detach().requires_grad_() for a, ui in zip(model.alphas(), u)])
        numeric = ((plus - minus) / (2 * h)).item()
        analytic = sum((g * ui).sum() for g, ui in zip(grads, u)).item()
        naive = sum((g * ui).sum() for g, ui in zip(first_order, u)).item()
        assert analytic == pytest.approx(numeric, rel=2e-3, abs=1e-7)
        assert abs(naive - numeric) > 10 * abs(analytic - numeric)  # the second-order term matters here


def test_search_writes_an_architecture_that_rebuilds_with_its_flops_and_params(tmp_path, synthetic_set):
    from dfnas_pl.data.search_data import SearchDataModule

    cfg = DartsSpaceConfig(channels=4, layers=3)
    model = DartsSearch(space=cfg, output_dir=str(tmp_path / "darts"), export_unhealthy=True)  # toy: 2 steps
    data = SearchDataModule(source="synthetic", path=str(synthetic_set), batch_size=8)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, limit_train_batches=2, limit_val_batches=1)
    alpha_before = model.alpha_normal.detach().clone()
    trainer.fit(model, datamodule=data)
    assert not torch.equal(alpha_before, model.alpha_normal.detach())  # the architecture was searched
    arch = json.loads((tmp_path / "darts" / "architecture.json").read_text())
    assert arch["algorithm"] == "darts" and arch["choices"] == json.loads(json.dumps(model.genotype()))
    net = build_from_architecture(tmp_path / "darts" / "architecture.json")
    assert count_flops(net, (1, 28, 28)) == arch["flops"] and count_params(net) == arch["params"]
    assert sorted(p.name for p in (tmp_path / "darts" / "alphas").glob("*.png")) == ["epoch_000.png",
                                                                                   "epoch_001.png"]
    assert len(json.loads((tmp_path / "darts" / "genotype_history.json").read_text())) == 2


def test_teacher_and_data_source_must_agree(tmp_path, synthetic_set):
    from dfnas_pl.data.search_data import SearchDataModule

    model = DartsSearch(space=DartsSpaceConfig(channels=2, layers=2), teacher=None, output_dir=str(tmp_path))
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False)
    with pytest.raises(ValueError, match="data source 'synthetic' needs a teacher"):
        trainer.fit(model, datamodule=SearchDataModule(source="synthetic", path=str(synthetic_set)))
    with pytest.raises(FileNotFoundError, match="run a search first"):
        build_from_architecture(tmp_path / "missing.json")


def test_parameter_free_cap_keeps_the_edges_and_gives_the_weakest_extra_ones_parametric_ops():
    cfg = DartsSpaceConfig(steps=3)
    p = list(cfg.primitives)
    skip, pool, sep3, dil5 = (p.index(o) for o in ("skip_connect", "max_pool_3x3", "sep_conv_3x3", "dil_conv_5x5"))
    w = torch.zeros(cfg.num_edges, len(p))
    # every edge prefers a parameter-free op (strength = its weight); parametric runners-up differ per edge
    for e in range(cfg.num_edges):
        w[e, skip if e % 2 else pool] = 1.0 + 0.1 * e
        w[e, sep3 if e % 3 else dil5] = 0.5
    plain = derive_genotype(w, cfg)
    assert count_parameter_free(plain) == 6  # collapsed: every kept edge parameter-free
    capped = derive_genotype(w, cfg, max_parameter_free=2)
    assert count_parameter_free(capped) == 2
    assert [[j for _, j in node] for node in capped] == [[j for _, j in node] for node in plain]  # same edges
    offsets = [0, 2, 5]
    kept = sorted(float(w[offsets[i] + j, p.index(op)]) for i, node in enumerate(plain) for op, j in node)
    survivors = sorted(float(w[offsets[i] + j, p.index(op)]) for i, node in enumerate(capped) for op, j in node
                       if op in PARAMETER_FREE)
    assert survivors == kept[-2:]  # the two strongest parameter-free edges stay
    for i, node in enumerate(capped):
        for op, j in node:
            if op not in PARAMETER_FREE:
                assert op == ("sep_conv_3x3" if (offsets[i] + j) % 3 else "dil_conv_5x5")
    assert derive_genotype(w, cfg, max_parameter_free=6) == plain


def test_alpha_entropy_is_log_k_when_undecided_and_zero_when_decided():
    assert alpha_entropy(torch.full((14, 8), 1 / 8)) == pytest.approx(math.log(8))
    assert alpha_entropy(F.one_hot(torch.zeros(14, dtype=torch.long), 8).float()) == pytest.approx(0.0, abs=1e-9)


def test_the_guard_is_applied_to_the_export_and_the_collapse_is_recorded(tmp_path, synthetic_set):
    from dfnas_pl.data.search_data import SearchDataModule

    model = DartsSearch(space=DartsSpaceConfig(channels=4, layers=3), output_dir=str(tmp_path / "darts"),
                        export_unhealthy=True,
                        max_parameter_free_normal=0)
    L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              limit_train_batches=2, limit_val_batches=1).fit(
        model, datamodule=SearchDataModule(source="synthetic", path=str(synthetic_set), batch_size=8))
    arch = json.loads((tmp_path / "darts" / "architecture.json").read_text())
    assert count_parameter_free(arch["choices"]["normal"]) == 0 and arch["max_parameter_free_normal"] == 0
    assert arch["collapse"]["parameter_free_normal"] == 0
    unguarded = derive_genotype(torch.tensor(arch["alphas"]["normal"]), model.space)
    assert arch["collapse"]["parameter_free_normal_unguarded"] == count_parameter_free(unguarded)
    history = json.loads((tmp_path / "darts" / "genotype_history.json").read_text())
    assert 0 < history[-1]["alpha_entropy_normal"] <= math.log(len(model.space.primitives)) + 1e-6
