"""The paper's random-architecture baseline: a uniformly random architecture from the same space at
FLOPs similar to a reference architecture - the first of up to ``samples`` uniform draws within
``tolerance`` of the reference FLOPs (so uniform among the matching architectures), else the closest
draw. 20,000 draws cost a fraction of a second with a FLOPs table (a space registered with ``max_draws``,
such as DARTS, which builds each drawn network, takes at most that many). A few dozen draws are not enough: a searched architecture can sit far in the tail of the FLOPs
distribution (ProxylessNAS with several zero blocks), where the closest of 20 draws was 2.6 times as
large."""

from __future__ import annotations

import json
import random
from typing import Any

from dfnas_pl.search.space_registry import search_space


def random_like(reference: dict[str, Any], seed: int = 0, samples: int = 20000,
                tolerance: float = 0.05, exclude_reference: bool = False) -> tuple[Any, int]:
    """Choices and FLOPs of a random architecture in ``reference``'s space with FLOPs within ``tolerance``
    (relative) of its FLOPs, or the closest of ``samples`` draws; ``exclude_reference``: never the reference
    itself (a baseline for a search, whose own draws may come from the same seed)."""
    rng = random.Random(seed)
    space = search_space(reference["space"])
    sampler = space.sampler(reference["space_config"])
    best, best_gap, best_flops = None, float("inf"), 0
    for _ in range(min(samples, space.max_draws or samples)):
        choices = sampler.draw(rng)
        if exclude_reference and json.loads(json.dumps(choices)) == reference["choices"]:
            continue
        flops = sampler.flops(choices)
        if abs(flops - reference["flops"]) < best_gap:
            best, best_gap, best_flops = choices, abs(flops - reference["flops"]), flops
        if best_gap <= tolerance * reference["flops"]:
            break
    return best, best_flops


def write_random_like(path, reference_path, exclude_reference: bool = False):
    """Write (once: a readable file is kept, so a resumed run retrains the same one) the seeded
    ``random_like`` architecture of the one exported at ``reference_path`` to ``path``, its
    ``architecture.json`` naming that reference (``like``)."""
    from pathlib import Path

    from dfnas_pl.search.export import read_architecture, write_architecture
    from dfnas_pl.utils.io import readable_json

    path = Path(path)
    if not readable_json(path):
        found = read_architecture(reference_path)
        choices, _ = random_like(found, seed=0, exclude_reference=exclude_reference)
        cfg = {k: v for k, v in found["space_config"].items() if k != "image_size"}
        write_architecture(path, "random", found["space"], cfg, found["space_config"]["image_size"], choices,
                           like=str(reference_path))
    return path
