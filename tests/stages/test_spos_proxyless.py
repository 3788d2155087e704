"""SPOS (evolution under a FLOPs limit, BN recalibration, resume) and ProxylessNAS (gate gradients,
cost term) on the layer-wise spaces."""

import json

import lightning as L
import pytest
import torch

from dfnas_pl.data.search_data import SearchDataModule
from dfnas_pl.search.evolution import EvolutionSearch, candidate_key, first_generation
from dfnas_pl.search.export import build_from_architecture, count_flops, count_params
from dfnas_pl.search.layerwise_space import LayerwiseSpaceConfig, LayerwiseSupernet
from dfnas_pl.search.proxylessnas import ProxylessSearch
from dfnas_pl.search.spos import SPOSSearch

SMALL_SHUFFLE = LayerwiseSpaceConfig(family="shufflenetv2", stem_channels=8, stage_channels=(16, 32),
                                     stage_layers=(1, 2))
SMALL_MOBILE = LayerwiseSpaceConfig(family="mobilenetv2", stem_channels=8, stage_channels=(8, 16),
                                    stage_layers=(2, 2))


@pytest.mark.parametrize("cfg", [SMALL_SHUFFLE, SMALL_MOBILE, LayerwiseSpaceConfig(in_channels=3, image_size=32)])
def test_every_block_and_path_has_the_right_shape_and_additive_flops(cfg):
    net = LayerwiseSupernet(cfg)
    x = torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size)
    fixed, table = net.cost_table()
    for layer in range(len(net.num_choices)):
        for choice in range(net.num_choices[layer]):
            path = [0] * len(net.num_choices)
            path[layer] = choice
            assert net(x, path).shape == (2, cfg.num_classes)
            standalone = LayerwiseSupernet(cfg, only=path)
            assert count_flops(standalone, x.shape[1:]) == fixed + sum(row[c] for row, c in zip(table, path))
    if cfg.family == "mobilenetv2":
        # stem 8 -> 8 (zero allowed), 8 -> 8, then 8 -> 16 stride 2 (not allowed), 16 -> 16
        assert [("zero" in n) for n in net.choice_names] == [True, True, False, True]


def test_evolution_never_returns_or_scores_a_candidate_over_the_limit():
    num_choices = [4] * 6
    cost = lambda c: float(sum(c))  # noqa: E731
    scored = []

    def fitness(c):  # prefers expensive candidates, so the limit is what stops it
        scored.append(c)
        return float(sum(c)) + 0.01 * c[0]

    best = EvolutionSearch(num_choices, cost, max_cost=7.0, population=12, generations=6, top_k=4, seed=1).run(fitness)
    assert all(cost(c) <= 7.0 for c in scored) and cost(best) <= 7.0
    assert cost(best) == 7.0  # and within the limit it finds the best there is
    with pytest.raises(ValueError, match="raise the limit"):
        EvolutionSearch(num_choices, lambda c: 10.0 + sum(c), max_cost=5.0, max_tries=50).run(fitness)


def test_evolution_beats_random_search_on_a_toy_fitness():
    target = (3, 1, 2, 0, 3, 2, 1, 0)
    fitness = lambda c: float(sum(a == b for a, b in zip(c, target)))  # noqa: E731
    search = EvolutionSearch([4] * 8, lambda c: 0.0, None, population=20, generations=10, top_k=5, seed=0)
    best = search.run(fitness)
    random_only = EvolutionSearch([4] * 8, lambda c: 0.0, None, population=200, generations=1, seed=0)
    assert fitness(best) >= 7 and fitness(best) > fitness(random_only.run(fitness))


def test_random_search_with_weight_sharing_returns_the_best_of_its_scored_paths():
    """strategy="random": as many uniformly random feasible candidates as evolution scores, the same first
    generation as evolution's, the best of them kept; on a toy fitness evolution beats it at equal cost."""
    target = (3, 1, 2, 0, 3, 2, 1, 0)
    scored: dict[tuple, float] = {}

    def fitness(c):
        scored[c] = float(sum(a == b for a, b in zip(c, target))) + 0.001 * c[0]
        return scored[c]

    cost = lambda c: float(sum(c))  # noqa: E731
    rand = EvolutionSearch([4] * 8, cost, 14.0, population=20, generations=10, top_k=5, seed=0, strategy="random")
    best = rand.run(fitness)
    assert len(scored) == 200 and all(cost(c) <= 14.0 for c in scored)
    assert best == max(scored, key=scored.get)
    first_generation = list(rand.state["scores"])[:20]
    evo = EvolutionSearch([4] * 8, cost, 14.0, population=20, generations=10, top_k=5, seed=0)
    evo_best = evo.run(lambda c: float(sum(a == b for a, b in zip(c, target))) + 0.001 * c[0])
    assert list(evo.state["scores"])[:20] == first_generation
    assert scored[best] < evo.state["scores"][candidate_key(evo_best)]
    with pytest.raises(ValueError, match="Unknown search strategy 'grid'"):
        EvolutionSearch([4] * 8, cost, None, strategy="grid")


def small_trainer(tmp_path, epochs=1, batches=2, **kw):
    return L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, limit_train_batches=batches, limit_val_batches=1,
                     default_root_dir=str(tmp_path), **kw)


def test_spos_search_exports_a_feasible_architecture_and_resumes_its_evolution(tmp_path, synthetic_set):
    kwargs = dict(space=SMALL_SHUFFLE, output_dir=str(tmp_path / "spos"), population=4, generations=2, top_k=2,
                  bn_recalibration_batches=1, score_batches=1, export_unhealthy=True)
    probe = SPOSSearch(**kwargs)
    limit = (probe.path_flops(probe.cheapest()) + 0.6 * (max(probe.path_flops((3,) * 3), 1) -
                                                         probe.path_flops(probe.cheapest()))) / 1e6
    model = SPOSSearch(**kwargs, max_mflops=limit)
    data = SearchDataModule(source="synthetic", path=str(synthetic_set), batch_size=8)
    small_trainer(tmp_path).fit(model, datamodule=data)
    arch = json.loads((tmp_path / "spos" / "architecture.json").read_text())
    assert arch["flops"] <= limit * 1e6 and arch["space"] == "shufflenetv2"
    net = build_from_architecture(tmp_path / "spos" / "architecture.json")
    assert count_flops(net, (1, 28, 28)) == arch["flops"] and count_params(net) == arch["params"]
    state = json.loads((tmp_path / "spos" / "evolution_state.json").read_text())
    assert state["state"]["generation"] == 2 and len(state["state"]["history"]) == 2
    assert (tmp_path / "spos" / "evolution.png").stat().st_size > 0

    # a search killed after generation 0 continues from it, with the weights its scores came from
    state["state"]["generation"] = 1
    state["state"]["history"] = state["state"]["history"][:1]
    (tmp_path / "spos" / "evolution_state.json").write_text(json.dumps(state))
    resumed = SPOSSearch(**kwargs, max_mflops=limit)  # fresh weights: the resume must load the saved ones
    calls = []
    original = resumed.fitness
    resumed.fitness = lambda c, *a: calls.append(c) or original(c, *a)
    small_trainer(tmp_path).fit(resumed, datamodule=data)
    after = json.loads((tmp_path / "spos" / "evolution_state.json").read_text())["state"]
    assert len(after["history"]) == 2 and after["generation"] == 2
    first_gen = set(first_generation(state["state"]))
    evolved = [c for c in calls if tuple(c) not in first_gen]
    assert 0 < len(evolved) <= 4  # only generation 1's candidates were scored for evolution (population 4)
    # and the health check scored generation 0 again, once each, for its per-image values
    assert sorted(tuple(c) for c in calls if tuple(c) in first_gen) == sorted(first_gen)
    saved = torch.load(tmp_path / "spos" / "evolution_supernet.pt", weights_only=True)
    for k, v in resumed.supernet.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, saved[k]), k


def test_spos_stopped_by_max_steps_still_evolves_and_exports(tmp_path, synthetic_set):
    """The ImageNet config counts steps (max_steps 150,000, max_epochs -1): no epoch ends as the last one,
    so the evolution must run when training stops."""
    model = SPOSSearch(space=SMALL_SHUFFLE, output_dir=str(tmp_path / "spos"), population=2, generations=1, top_k=1,
                       bn_recalibration_batches=1, score_batches=1, export_unhealthy=True)
    data = SearchDataModule(source="synthetic", path=str(synthetic_set), batch_size=4)
    L.Trainer(max_steps=2, max_epochs=-1, accelerator="cpu", logger=False, enable_checkpointing=False,
              enable_progress_bar=False, limit_val_batches=0, default_root_dir=str(tmp_path)).fit(model, datamodule=data)
    assert model.global_step == 2
    arch = json.loads((tmp_path / "spos" / "architecture.json").read_text())
    assert len(arch["evolution"]) == 1 and len(arch["choices"]) == 3


def test_shufflenet_stages_must_grow():
    with pytest.raises(ValueError, match="more channels than the one before.*stage_channels"):
        LayerwiseSupernet(LayerwiseSpaceConfig(stage_channels=(16, 32, 32)))


def test_spos_rejects_a_limit_below_the_cheapest_path():
    with pytest.raises(ValueError, match="below the cheapest path"):
        SPOSSearch(space=SMALL_SHUFFLE, max_mflops=0.001)


def test_proxyless_gates_get_gradient_and_a_large_cost_weight_picks_cheap_blocks(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    model = ProxylessSearch(space=SMALL_MOBILE, teacher=None, output_dir=str(tmp_path))
    grads, _ = model.alpha_gradient(x, y, step=0)
    assert all(int((g != 0).sum()) == 2 for g in grads)  # exactly the two drawn candidates per layer
    assert abs(sum(float(g.sum()) for g in grads)) < 1e-5  # softmax Jacobian: each layer's gradient sums to 0

    costly = ProxylessSearch(space=SMALL_MOBILE, teacher=None, cost_weight=50.0, alpha_lr=0.05,
                             output_dir=str(tmp_path))
    opt = torch.optim.Adam(costly.alphas.parameters(), lr=0.05)
    start = float(costly.expected_flops().detach())
    for step in range(40):
        grads, _ = costly.alpha_gradient(x, y, step)
        for a, g in zip(costly.alphas, grads):
            a.grad = g
        opt.step()
    assert float(costly.expected_flops().detach()) < 0.6 * start
    cheapest = [min(range(len(c)), key=lambda i, c=c: float(c[i])) for c in costly.costs]
    assert costly.best_path() == cheapest


def test_proxyless_flops_target_only_penalises_the_excess(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    free = ProxylessSearch(space=SMALL_MOBILE, teacher=None, output_dir=str(tmp_path))
    roomy = ProxylessSearch(space=SMALL_MOBILE, teacher=None, cost_weight=50.0, target_mflops=1e3,
                            output_dir=str(tmp_path))
    roomy.load_state_dict(free.state_dict())
    assert float(roomy.cost_term().detach()) == 0.0  # the uniform path is far under the budget: no cost
    for g_free, g_roomy in zip(free.alpha_gradient(x, y, 0)[0], roomy.alpha_gradient(x, y, 0)[0]):
        assert torch.allclose(g_free, g_roomy)

    uniform = float(free.expected_flops().detach()) / 1e6
    tight = ProxylessSearch(space=SMALL_MOBILE, teacher=None, cost_weight=50.0, target_mflops=0.8 * uniform,
                            output_dir=str(tmp_path))
    opt = torch.optim.Adam(tight.alphas.parameters(), lr=0.05)
    for step in range(60):
        grads, _ = tight.alpha_gradient(x, y, step)
        for a, g in zip(tight.alphas, grads):
            a.grad = g
        opt.step()
    cheapest = float(tight.fixed_flops + sum(float(c.min()) for c in tight.costs)) / 1e6
    final = float(tight.expected_flops().detach()) / 1e6
    assert final <= 0.8 * uniform * 1.02  # pushed down to the budget ...
    assert final > cheapest + 0.5 * (0.8 * uniform - cheapest)  # ... and not on to the cheapest blocks

    with pytest.raises(ValueError, match="below the cheapest path"):
        ProxylessSearch(space=SMALL_MOBILE, teacher=None, target_mflops=1e-3, output_dir=str(tmp_path))


def test_proxyless_search_exports_the_most_probable_path(tmp_path, synthetic_set):
    model = ProxylessSearch(space=SMALL_MOBILE, output_dir=str(tmp_path / "px"), export_unhealthy=True)  # toy
    data = SearchDataModule(source="synthetic", path=str(synthetic_set), batch_size=8)
    small_trainer(tmp_path, epochs=2).fit(model, datamodule=data)
    arch = json.loads((tmp_path / "px" / "architecture.json").read_text())
    assert arch["choices"] == model.names(model.best_path())
    assert sorted(p.name for p in (tmp_path / "px" / "gates").glob("*.png")) == ["epoch_000.png", "epoch_001.png"]
    net = build_from_architecture(arch)
    assert count_params(net) == arch["params"]
