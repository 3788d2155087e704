"""The search algorithms, registered by their own modules (as timm registers models), and read by everything
that lists or drives them: the pipeline's ``algorithms``, the paper table, their default configs.

Adding an algorithm is one module with its LightningModule, one ``@register_search_algorithm(...)`` on the
class, and one stage config; ``tests/stages/test_search_cli.py`` runs every registered algorithm's config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class SearchAlgorithm:
    """One registered algorithm.

    Args:
        name: what configs and the pipeline call it (``algorithms: [darts, spos]``).
        module: import path of its LightningModule.
        config: its Fashion-MNIST stage config (the pipeline's and the paper table's default).
        sized_space: whether its space config takes the input size (``image_size``); a size-free space (the
            DARTS cells) leaves the size to the search module instead (``model.init_args.image_size``).
    """

    name: str
    module: str
    config: str
    sized_space: bool = True


SEARCH_ALGORITHMS: dict[str, SearchAlgorithm] = {}


def register_search_algorithm(name: str, config: str, sized_space: bool = True) -> Callable[[type], type]:
    """Class decorator: register the LightningModule under ``name`` (a second registration of a name is an
    error, so two modules cannot silently claim one algorithm)."""

    def register(cls: type) -> type:
        entry = SearchAlgorithm(name, f"{cls.__module__}.{cls.__qualname__}", config, sized_space)
        if name in SEARCH_ALGORITHMS and SEARCH_ALGORITHMS[name] != entry:
            raise ValueError(f"Search algorithm '{name}' is registered twice ({SEARCH_ALGORITHMS[name].module} and "
                             f"{entry.module}).")
        SEARCH_ALGORITHMS[name] = entry
        cls.algorithm = name  # what its outputs and logs are named by
        return cls

    return register


def search_algorithms() -> dict[str, SearchAlgorithm]:
    """Every registered algorithm (importing the package's own registers them)."""
    import dfnas_pl.search  # noqa: F401  (each algorithm module registers itself on import)

    return dict(SEARCH_ALGORITHMS)
