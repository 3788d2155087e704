"""The DARTS cell search space, sized by config, independent of any search algorithm.

A cell has two inputs (the previous two cells' outputs) and ``steps`` intermediate nodes; node i
sums one op on each of its ``2 + i`` predecessors (14 edges for 4 nodes). In the *supernet* every
edge is a weighted sum of all candidate ops; the weights (``[edges, ops]`` per cell type) are an
argument of ``forward``, so the algorithm that owns them (DARTS) stays outside the space.
A *genotype* fixes one op and two inputs per node; :class:`DartsNetwork` builds the discrete net.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dfnas_pl.search.ops import OPS, PRIMITIVES, FactorizedReduce, ReLUConvBN
from dfnas_pl.search.space_registry import register_search_space


@dataclass(frozen=True)
class DartsSpaceConfig:
    """Size of a DARTS space: channels of the first cell, number of cells (reductions at 1/3 and
    2/3), intermediate nodes per cell, stem channel multiplier, and the data's shape."""

    channels: int = 8
    layers: int = 5
    steps: int = 4
    stem_multiplier: int = 3
    in_channels: int = 1
    num_classes: int = 10
    primitives: tuple[str, ...] = tuple(PRIMITIVES)

    @property
    def num_edges(self) -> int:
        return sum(2 + i for i in range(self.steps))

    def reduction_layers(self) -> set[int]:
        return {self.layers // 3, 2 * self.layers // 3} if self.layers >= 3 else {self.layers // 2}


DEFAULT_DARTS_SPACE = DartsSpaceConfig()


class MixedEdge(nn.Module):
    """All candidate ops on one edge; output = sum_k w_k op_k(x). Ops with zero weight are skipped."""

    def __init__(self, channels: int, stride: int, primitives: tuple[str, ...]) -> None:
        super().__init__()
        self.ops = nn.ModuleList(OPS[p](channels, stride, False) for p in primitives)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops))


class _CellBase(nn.Module):
    def __init__(self, cfg: DartsSpaceConfig, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool,
                 affine: bool) -> None:
        super().__init__()
        self.reduction, self.steps = reduction, cfg.steps
        self.pre0 = FactorizedReduce(c_pp, c, affine) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, affine)

    def edges(self) -> list[tuple[int, int]]:
        """(node, input) per edge, in weight-row order."""
        return [(i, j) for i in range(self.steps) for j in range(2 + i)]


class SearchCell(_CellBase):
    def __init__(self, cfg: DartsSpaceConfig, c_pp: int, c_p: int, c: int, reduction: bool,
                 reduction_prev: bool) -> None:
        super().__init__(cfg, c_pp, c_p, c, reduction, reduction_prev, affine=False)
        self.mixed = nn.ModuleList(MixedEdge(c, 2 if reduction and j < 2 else 1, cfg.primitives)
                                   for _, j in self.edges())

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        offset = 0
        for _ in range(self.steps):
            states.append(sum(self.mixed[offset + j](h, weights[offset + j]) for j, h in enumerate(states)))
            offset += len(states) - 1
        return torch.cat(states[2:], dim=1)


class _NetworkBase(nn.Module):
    def _build(self, cfg: DartsSpaceConfig, make_cell) -> None:
        c_stem = cfg.stem_multiplier * cfg.channels
        self.stem = nn.Sequential(nn.Conv2d(cfg.in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
        c_pp, c_p, c = c_stem, c_stem, cfg.channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        for layer in range(cfg.layers):
            reduction = layer in cfg.reduction_layers()
            c = c * 2 if reduction else c
            cell = make_cell(c_pp, c_p, c, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cfg.steps * c
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, cfg.num_classes)


class DartsSupernet(_NetworkBase):
    """The continuous relaxation: ``forward(x, normal_weights, reduce_weights)``."""

    def __init__(self, cfg: DartsSpaceConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._build(cfg, lambda *a: SearchCell(cfg, *a))

    def forward(self, x: torch.Tensor, normal: torch.Tensor, reduce: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, reduce if cell.reduction else normal)
        return self.classifier(self.pool(s1).flatten(1))


# Ops without weights: the DARTS collapse fills the normal cell with them (skip connections and pools
# win the softmax early because they need no training; Zela et al. 2020, Chen et al. 2019).
PARAMETER_FREE = frozenset({"none", "skip_connect", "max_pool_3x3", "avg_pool_3x3"})


def count_parameter_free(cell: list[list[tuple[str, int]]]) -> int:
    """Parameter-free ops among a cell genotype's kept edges: the collapse measure."""
    return sum(op in PARAMETER_FREE for node in cell for op, _ in node)


def alpha_entropy(weights: torch.Tensor) -> float:
    """Mean entropy (nats) of the op distribution over edges: log(#ops) when uniform, 0 when decided."""
    w = weights.detach().clamp_min(1e-12)
    return float(-(w * w.log()).sum(1).mean())


def derive_genotype(weights: torch.Tensor, cfg: DartsSpaceConfig,
                    max_parameter_free: int | None = None) -> list[list[tuple[str, int]]]:
    """DARTS rule: per node keep the 2 inputs whose strongest non-'none' op is strongest, with that op.

    ``max_parameter_free`` (P-DARTS, Chen et al. 2019, who cap skip connections at 2): while the cell
    holds more parameter-free ops than that, the kept parameter-free edge with the smallest weight
    takes its strongest parametric op instead (the edges themselves stay)."""
    weights = weights.detach()
    genotype = _derive(weights, cfg)
    if max_parameter_free is None:
        return genotype
    primitives = list(cfg.primitives)
    parametric = [k for k, p in enumerate(primitives) if p not in PARAMETER_FREE]
    if not parametric:
        raise ValueError(f"max_parameter_free needs a parametric op among the primitives {primitives}.")
    offsets = [sum(2 + j for j in range(i)) for i in range(cfg.steps)]
    while count_parameter_free(genotype) > max_parameter_free:
        node, slot = min(((i, k) for i, pair in enumerate(genotype) for k, (op, _) in enumerate(pair)
                          if op in PARAMETER_FREE),
                         key=lambda ik: float(weights[offsets[ik[0]] + genotype[ik[0]][ik[1]][1],
                                                      primitives.index(genotype[ik[0]][ik[1]][0])]))
        row = weights[offsets[node] + genotype[node][slot][1]]
        best = max(parametric, key=lambda k: float(row[k]))
        genotype[node][slot] = (primitives[best], genotype[node][slot][1])
    return genotype


def _derive(weights: torch.Tensor, cfg: DartsSpaceConfig) -> list[list[tuple[str, int]]]:
    primitives = list(cfg.primitives)
    none = primitives.index("none") if "none" in primitives else None
    genotype, offset = [], 0
    for i in range(cfg.steps):
        rows = weights[offset: offset + 2 + i].detach().clone()
        if none is not None:
            rows[:, none] = -float("inf")
        best_op = rows.argmax(1)
        strength = rows.max(1).values
        inputs = sorted(strength.topk(2).indices.tolist())
        genotype.append([(primitives[int(best_op[j])], j) for j in inputs])
        offset += 2 + i
    return genotype


class FixedCell(_CellBase):
    """A discrete cell from a genotype (one op per kept edge)."""

    def __init__(self, cfg: DartsSpaceConfig, genotype: list[list[tuple[str, int]]], c_pp: int, c_p: int, c: int,
                 reduction: bool, reduction_prev: bool) -> None:
        super().__init__(cfg, c_pp, c_p, c, reduction, reduction_prev, affine=True)
        self.inputs = [[j for _, j in node] for node in genotype]
        self.ops = nn.ModuleList(nn.ModuleList(OPS[op](c, 2 if reduction and j < 2 else 1, True) for op, j in node)
                                 for node in genotype)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for ops, inputs in zip(self.ops, self.inputs):
            states.append(sum(op(states[j]) for op, j in zip(ops, inputs)))
        return torch.cat(states[2:], dim=1)


class DartsNetwork(_NetworkBase):
    """The discrete network of a genotype ``{"normal": [...], "reduce": [...]}`` (for retraining)."""

    def __init__(self, cfg: DartsSpaceConfig, genotype: dict[str, list[list[tuple[str, int]]]]) -> None:
        super().__init__()
        self.cfg = cfg
        self._build(cfg, lambda c_pp, c_p, c, red, red_prev: FixedCell(
            cfg, genotype["reduce" if red else "normal"], c_pp, c_p, c, red, red_prev))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.pool(s1).flatten(1))


def build_darts_network(space_config: dict[str, Any], choices: Any) -> DartsNetwork:
    """The evaluation network of a genotype (``choices``: ``{"normal": [...], "reduce": [...]}``)."""
    cfg = {k: v for k, v in space_config.items() if k != "image_size"}
    cfg = DartsSpaceConfig(**{**cfg, "primitives": tuple(cfg.get("primitives") or DartsSpaceConfig().primitives)})
    genotype = {k: [[(op, int(j)) for op, j in node] for node in v] for k, v in choices.items()}
    return DartsNetwork(cfg, genotype)


class DartsSampler:
    """Uniform genotypes (two inputs per node, one op each, never ``none``); FLOPs by building the network."""

    def __init__(self, space_config: dict[str, Any]) -> None:
        self.space_config = space_config
        self.ops = [p for p in (space_config.get("primitives") or DartsSpaceConfig().primitives) if p != "none"]
        self.steps = int(space_config.get("steps", 4))

    def draw(self, rng: random.Random) -> dict[str, list[list[tuple[str, int]]]]:
        return {cell: [[(rng.choice(self.ops), j) for j in sorted(rng.sample(range(2 + i), 2))]
                       for i in range(self.steps)] for cell in ("normal", "reduce")}

    def flops(self, choices: Any) -> int:
        from dfnas_pl.search.export import count_flops, image_shape

        return count_flops(build_darts_network(self.space_config, choices), image_shape(self.space_config))


register_search_space("darts", build_darts_network, DartsSampler, max_draws=200)  # each draw builds a network
