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

from dfnas_pl.utils.io import atomic_write_json, read_json

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
    """The standalone network of ``choices`` in a registered search space (fresh weights)."""
    from dfnas_pl.search.space_registry import search_space

    try:
        entry = search_space(space)
    except ValueError as err:
        raise ValueError(f"{err} The architecture.json names a space this version of dfnas_pl does not know.") from err
    return entry.build(space_config, choices)


def image_shape(space_config: dict[str, Any]) -> tuple[int, int, int]:
    return (int(space_config["in_channels"]), int(space_config["image_size"]), int(space_config["image_size"]))


def read_architecture(arch: str | Path | dict[str, Any]) -> dict[str, Any]:
    """An ``architecture.json`` (path or loaded dict), checked to be one."""
    arch_path = None if isinstance(arch, dict) else Path(arch)
    if not isinstance(arch, dict):
        path = Path(arch)
        if not path.is_file():
            raise FileNotFoundError(f"No architecture file '{path}': run a search first (its config writes it).")
        arch = read_json(path, "Run the search that wrote it again (delete the file first, or let the pipeline redo it).")
    if not isinstance(arch, dict) or arch.get("format") != ARCHITECTURE_FORMAT:
        got = arch.get("format") if isinstance(arch, dict) else type(arch).__name__
        raise ValueError(f"Not a dfnas_pl architecture file (format {got!r}, expected {ARCHITECTURE_FORMAT!r}).")
    missing = [k for k in ("space", "space_config", "choices") if k not in arch]
    if missing or not isinstance(arch.get("space_config"), dict):
        where = f"'{arch_path}'" if arch_path else "The architecture"
        raise ValueError(f"{where} lacks {', '.join(missing) or 'a space_config mapping'}: it is not a complete "
                         f"architecture file. Run the search that wrote it again, or write it with "
                         f"dfnas_pl.search.export.write_architecture.")
    return arch


def build_from_architecture(arch: str | Path | dict[str, Any]) -> nn.Module:
    """The standalone module of an ``architecture.json`` (path or loaded dict), freshly initialised."""
    arch = read_architecture(arch)
    return build_model(arch["space"], arch["space_config"], arch["choices"])


def write_architecture(path: str | Path, algorithm: str, space: str, space_config: Any, image_size: int,
                       choices: Any, **extra: Any) -> dict[str, Any]:
    cfg = dataclasses.asdict(space_config) if dataclasses.is_dataclass(space_config) else dict(space_config)
    cfg = {**cfg, "image_size": image_size}  # the DARTS space is size-free; FLOPs need the size
    record = {"format": ARCHITECTURE_FORMAT, "algorithm": algorithm, "space": space,
              "space_config": json.loads(json.dumps(cfg)), "choices": json.loads(json.dumps(choices))}
    model = build_from_architecture(record)
    record.update(flops=count_flops(model, image_shape(record["space_config"])), params=count_params(model), **extra)
    atomic_write_json(path, record)
    return record
