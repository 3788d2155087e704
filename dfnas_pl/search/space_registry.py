"""Search spaces, registered by the modules that define them (as timm registers models), and read by
everything that turns a space's name into work: ``export.build_model`` (an ``architecture.json`` built back
as a module), ``random_arch`` (the paper's random baseline at equal FLOPs) and the ground truth's selection
of architectures. A new space is one ``register_search_space(...)`` call, not a branch in each of them."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn


class Sampler(Protocol):
    """Uniform draws from one space and the exact FLOPs of a draw."""

    def draw(self, rng: random.Random) -> Any: ...

    def flops(self, choices: Any) -> int: ...


@dataclass(frozen=True)
class SearchSpace:
    """One registered space.

    Args:
        name: what ``architecture.json`` calls it (its ``space`` field).
        build: ``(space_config, choices) -> nn.Module``: the standalone network of one architecture.
        sampler: ``space_config -> Sampler``.
        max_draws: a cap on draws where costing one is expensive (DARTS builds each network); None: no cap.
    """

    name: str
    build: Callable[[dict[str, Any], Any], nn.Module]
    sampler: Callable[[dict[str, Any]], Sampler]
    max_draws: int | None = None


SEARCH_SPACES: dict[str, SearchSpace] = {}


def register_search_space(name: str, build: Callable[[dict[str, Any], Any], nn.Module],
                          sampler: Callable[[dict[str, Any]], Sampler], max_draws: int | None = None) -> SearchSpace:
    """Register a space under ``name``; a second, different registration of a name is an error."""
    entry = SearchSpace(name, build, sampler, max_draws)
    if name in SEARCH_SPACES and SEARCH_SPACES[name] != entry:
        raise ValueError(f"Search space '{name}' is registered twice.")
    SEARCH_SPACES[name] = entry
    return entry


def search_space(name: str) -> SearchSpace:
    """The registered space ``name`` (importing the package's spaces registers them)."""
    import dfnas_pl.search.darts_space  # noqa: F401  (each space module registers itself on import)
    import dfnas_pl.search.layerwise_space  # noqa: F401

    if name not in SEARCH_SPACES:
        raise ValueError(f"Unknown search space '{name}' (registered: {', '.join(sorted(SEARCH_SPACES))}).")
    return SEARCH_SPACES[name]


def space_sampler(name: str, space_config: dict[str, Any]) -> Sampler:
    """Uniform draws from the space ``name`` sized by ``space_config``."""
    return search_space(name).sampler(space_config)
