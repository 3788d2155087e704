"""The paper's random-architecture baseline: a uniformly random architecture from the same space,
chosen among ``samples`` draws as the one closest in FLOPs to a reference architecture."""

from __future__ import annotations

import random
from typing import Any

from dfnas_pl.search.export import build_model, count_flops, image_shape


def random_choices(space: str, space_config: dict[str, Any], rng: random.Random) -> Any:
    if space == "darts":
        from dfnas_pl.search.darts_space import DartsSpaceConfig

        ops = [p for p in (space_config.get("primitives") or DartsSpaceConfig().primitives) if p != "none"]
        steps = int(space_config.get("steps", 4))
        return {cell: [[(rng.choice(ops), j) for j in sorted(rng.sample(range(2 + i), 2))] for i in range(steps)]
                for cell in ("normal", "reduce")}
    from dfnas_pl.search.layerwise_space import LayerwiseSpaceConfig, LayerwiseSupernet

    cfg = LayerwiseSpaceConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in space_config.items()})
    return [rng.choice(names) for names in LayerwiseSupernet(cfg).choice_names]


def random_like(reference: dict[str, Any], seed: int = 0, samples: int = 20) -> tuple[Any, int]:
    """Choices of a random architecture in ``reference``'s space with FLOPs closest to its FLOPs."""
    rng = random.Random(seed)
    best, best_gap, best_flops = None, float("inf"), 0
    for _ in range(samples):
        choices = random_choices(reference["space"], reference["space_config"], rng)
        flops = count_flops(build_model(reference["space"], reference["space_config"], choices),
                            image_shape(reference["space_config"]))
        if abs(flops - reference["flops"]) < best_gap:
            best, best_gap, best_flops = choices, abs(flops - reference["flops"]), flops
    return best, best_flops
