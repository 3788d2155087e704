"""The paper's random-architecture baseline: a uniformly random architecture from the same space at
FLOPs similar to a reference architecture - the first of up to ``samples`` uniform draws within
``tolerance`` of the reference FLOPs (so uniform among the matching architectures), else the closest
draw. 20,000 draws cost a fraction of a second with the FLOPs table (DARTS: 200 built networks).
A few dozen draws are not enough: a searched architecture can sit far in the tail of the FLOPs
distribution (ProxylessNAS with several zero blocks), where the closest of 20 draws was 2.6 times as
large."""

from __future__ import annotations

import random
from typing import Any

from dfnas_pl.search.export import build_model, count_flops, image_shape


class SpaceSampler:
    """Uniform draws from a search space and their FLOPs: a lookup in the exact per-candidate table
    for the layer-wise spaces (thousands of draws in milliseconds), the built network for DARTS."""

    def __init__(self, space: str, space_config: dict[str, Any]) -> None:
        self.space, self.space_config = space, space_config
        if space == "darts":
            from dfnas_pl.search.darts_space import DartsSpaceConfig

            self.ops = [p for p in (space_config.get("primitives") or DartsSpaceConfig().primitives) if p != "none"]
            self.steps = int(space_config.get("steps", 4))
            return
        from dfnas_pl.search.layerwise_space import LayerwiseSpaceConfig, LayerwiseSupernet

        cfg = LayerwiseSpaceConfig.from_dict(space_config)
        supernet = LayerwiseSupernet(cfg)
        self.names = supernet.choice_names
        self.fixed, self.table = supernet.cost_table()

    def draw(self, rng: random.Random) -> Any:
        if self.space == "darts":
            return {cell: [[(rng.choice(self.ops), j) for j in sorted(rng.sample(range(2 + i), 2))]
                           for i in range(self.steps)] for cell in ("normal", "reduce")}
        return [rng.choice(names) for names in self.names]

    def flops(self, choices: Any) -> int:
        if self.space == "darts":
            return count_flops(build_model(self.space, self.space_config, choices), image_shape(self.space_config))
        return self.fixed + sum(row[names.index(c)] for row, names, c in zip(self.table, self.names, choices))



def random_like(reference: dict[str, Any], seed: int = 0, samples: int = 20000,
                tolerance: float = 0.05) -> tuple[Any, int]:
    """Choices and FLOPs of a random architecture in ``reference``'s space with FLOPs within ``tolerance``
    (relative) of its FLOPs, or the closest of ``samples`` draws."""
    rng = random.Random(seed)
    sampler = SpaceSampler(reference["space"], reference["space_config"])
    best, best_gap, best_flops = None, float("inf"), 0
    for _ in range(samples if sampler.space != "darts" else min(samples, 200)):
        choices = sampler.draw(rng)
        flops = sampler.flops(choices)
        if abs(flops - reference["flops"]) < best_gap:
            best, best_gap, best_flops = choices, abs(flops - reference["flops"]), flops
        if best_gap <= tolerance * reference["flops"]:
            break
    return best, best_flops
