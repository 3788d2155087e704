"""architecture.json: what a search found, and the one function that builds it back as a module.

Format ``dfnas_pl.architecture/1``: ``{"algorithm", "space", "space_config", "choices", "flops",
"params", ...}``. ``flops`` counts multiply-accumulates x 2 of one forward pass on one image
(``torch.utils.flop_counter``), so the number is the built module's, not an estimate.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dfnas_pl.utils.io import atomic_write_json

ARCHITECTURE_FORMAT = "dfnas_pl.architecture/1"


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    return int(counter.get_total_flops())


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model(space: str, space_config: dict[str, Any], choices: Any) -> nn.Module:
    if space == "darts":
        from dfnas_pl.search.darts_space import DartsNetwork, DartsSpaceConfig

        cfg = DartsSpaceConfig(**{**space_config, "primitives": tuple(space_config.get("primitives", ()))
                                  or DartsSpaceConfig().primitives})
        genotype = {k: [[(op, int(j)) for op, j in node] for node in v] for k, v in choices.items()}
        return DartsNetwork(cfg, genotype)
    raise ValueError(f"Unknown search space '{space}' in architecture.json (known: darts).")


def image_shape(space_config: dict[str, Any]) -> tuple[int, int, int]:
    return (int(space_config["in_channels"]), int(space_config["image_size"]), int(space_config["image_size"]))


def build_from_architecture(arch: str | Path | dict[str, Any]) -> nn.Module:
    """The standalone module of an ``architecture.json`` (path or loaded dict), freshly initialised."""
    if not isinstance(arch, dict):
        path = Path(arch)
        if not path.is_file():
            raise FileNotFoundError(f"No architecture file '{path}': run a search first (its config writes it).")
        arch = json.loads(path.read_text())
    if arch.get("format") != ARCHITECTURE_FORMAT:
        raise ValueError(f"Not a dfnas_pl architecture file (format {arch.get('format')!r}, "
                         f"expected {ARCHITECTURE_FORMAT!r}).")
    cfg = {k: v for k, v in arch["space_config"].items() if k != "image_size"}
    return build_model(arch["space"], cfg, arch["choices"])


def write_architecture(path: str | Path, algorithm: str, space: str, space_config: Any, image_size: int,
                       choices: Any, **extra: Any) -> dict[str, Any]:
    cfg = dataclasses.asdict(space_config) if dataclasses.is_dataclass(space_config) else dict(space_config)
    cfg = {**cfg, "image_size": image_size}
    record = {"format": ARCHITECTURE_FORMAT, "algorithm": algorithm, "space": space,
              "space_config": json.loads(json.dumps(cfg)), "choices": json.loads(json.dumps(choices))}
    model = build_from_architecture(record)
    record.update(flops=count_flops(model, image_shape(record["space_config"])), params=count_params(model), **extra)
    atomic_write_json(path, record)
    return record
