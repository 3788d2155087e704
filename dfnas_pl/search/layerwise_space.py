"""Layer-wise search spaces: a stem, a sequence of layers each choosing one block, a head.

* ``mobilenetv2`` (ProxylessNAS): MBConv with kernel {3,5,7} x expansion {3,6}, plus ``zero`` (skip
  the layer) where input and output shapes agree.
* ``shufflenetv2`` (SPOS): ShuffleNetV2 units with 3x3, 5x5, 7x7 depthwise kernels and xception.
* ``macro`` (after NAS-Bench-Macro, Su et al. 2021): every layer chooses {identity, mbconv_k3_e3,
  mbconv_k5_e6}; "identity" at a layer that changes the shape is a 1x1 convolution + BN with the
  layer's stride. Depth is searchable, so architectures differ by far more than run-to-run noise
  (the reason this space exists: the two families above are a plateau on 28 px Fashion-MNIST).

A family is one :func:`register_family` call (its choices per layer, how a choice is built, and any check
of the space's shape), which also registers it as a search space: a new family is one registration, not a
new branch in every caller.

The supernet holds every candidate of every layer; ``forward(x, choices)`` runs one path, and
``forward_gated(x, gates)`` runs a weighted set of candidates per layer (ProxylessNAS's binary gates).
Costs are exact FLOPs of each candidate at its input size, so the FLOPs of a path are additive.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dfnas_pl.search.blocks import MBConv, ShuffleUnit, ZeroLayer, conv_bn
from dfnas_pl.search.space_registry import register_search_space


@dataclass(frozen=True)
class LayerwiseSpaceConfig:
    """Size and family of a layer-wise (MobileNetV2 / ShuffleNetV2) search space.

    Args:
        family: a registered family (:data:`FAMILIES`): ``mobilenetv2`` (ProxylessNAS), ``shufflenetv2``
            (SPOS) or ``macro`` (NAS-Bench-Macro's choices).
        stem_channels: channels of the stem convolution.
        stage_channels: output channels of each stage.
        stage_layers: searchable layers per stage; the first layer of each stage but the first has stride 2.
        in_channels: image channels.
        num_classes: classes of the head.
        image_size: input height = width.
        stem_stride: stride of the stem convolution (ImageNet spaces: 2; 28-32 px images: 1).
        stage_strides: stride of each stage's first layer; null: 1 for the first stage, 2 for the others
            (SPOS ImageNet: all 2; ProxylessNAS mobile: 1, 2, 2, 2, 1, 2, 1).
        head_channels: channels of the 1x1 convolution before pooling; null: twice the last stage's
            (SPOS ImageNet: 1024; ProxylessNAS mobile: 1280).
    """

    family: str = "shufflenetv2"
    stem_channels: int = 16
    stage_channels: tuple[int, ...] = (32, 64, 128)
    stage_layers: tuple[int, ...] = (2, 2, 2)
    in_channels: int = 1
    num_classes: int = 10
    image_size: int = 28
    stem_stride: int = 1
    stage_strides: tuple[int, ...] | None = None
    head_channels: int | None = None

    @classmethod
    def from_dict(cls, fields: dict) -> LayerwiseSpaceConfig:
        """From JSON (an architecture file, a ground truth): lists become tuples; a field the file
        predates takes its default, which is what the space meant before the field existed."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

    def strides(self) -> tuple[int, ...]:
        if self.stage_strides is None:
            return tuple(1 if i == 0 else 2 for i in range(len(self.stage_channels)))
        if len(self.stage_strides) != len(self.stage_channels):
            raise ValueError(f"space.stage_strides {list(self.stage_strides)} needs one stride per stage "
                             f"({len(self.stage_channels)} stages in stage_channels).")
        return tuple(self.stage_strides)

    def layer_specs(self) -> list[tuple[int, int, int]]:
        """(c_in, c_out, stride) per searchable layer."""
        specs, c = [], self.stem_channels
        for c_out, n, stride in zip(self.stage_channels, self.stage_layers, self.strides()):
            for i in range(n):
                specs.append((c, c_out, stride if i == 0 else 1))
                c = c_out
        return specs


MBCONV_CHOICES = [f"mbconv_k{k}_e{e}" for k in (3, 5, 7) for e in (3, 6)]
SHUFFLE_CHOICES = ["k3", "k5", "k7", "xception"]
MACRO_CHOICES = ["identity", "mbconv_k3_e3", "mbconv_k5_e6"]


@dataclass(frozen=True)
class Family:
    """One layer-wise family: ``choices(c_in, c_out, stride)`` names a layer's candidates, ``build(name,
    c_in, c_out, stride)`` makes one, ``check(cfg, specs)`` refuses a space shape the family cannot build."""

    choices: Callable[[int, int, int], list[str]]
    build: Callable[[str, int, int, int], nn.Module]
    check: Callable[[LayerwiseSpaceConfig, list[tuple[int, int, int]]], None] | None = None


def _mbconv(name: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    _, k, e = name.split("_")
    return MBConv(c_in, c_out, stride, int(k[1:]), int(e[1:]))


def _mobilenet_block(name: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    return ZeroLayer() if name == "zero" else _mbconv(name, c_in, c_out, stride)


def _macro_block(name: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    if name != "identity":
        return _mbconv(name, c_in, c_out, stride)
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return conv_bn(c_in, c_out, 1, stride, act=False)  # NAS-Bench-Macro: the shape-keeping "identity"


def _shuffle_check(cfg: LayerwiseSpaceConfig, specs: list[tuple[int, int, int]]) -> None:
    bad = [(c_in, c_out) for c_in, c_out, stride in specs if stride == 2 and c_out <= c_in]
    if bad:
        raise ValueError(f"ShuffleNetV2 stride-2 layers concatenate the input to the new features, so each "
                         f"stage needs more channels than the one before; got {bad} (in, out). Fix "
                         f"space.stage_channels (now {list(cfg.stage_channels)}).")


FAMILIES: dict[str, Family] = {}


def register_family(name: str, family: Family) -> Family:
    """Register a layer-wise family, and with it the search space of that name."""
    FAMILIES[name] = family
    register_search_space(name, build_layerwise, LayerwiseSampler)
    return family


def family_of(cfg: LayerwiseSpaceConfig) -> Family:
    if cfg.family not in FAMILIES:
        raise ValueError(f"Unknown layer-wise space family '{cfg.family}' (known: {', '.join(FAMILIES)}).")
    return FAMILIES[cfg.family]


def layer_choices(cfg: LayerwiseSpaceConfig, c_in: int, c_out: int, stride: int) -> list[str]:
    return family_of(cfg).choices(c_in, c_out, stride)


class LayerwiseSupernet(nn.Module):
    def __init__(self, cfg: LayerwiseSpaceConfig, only: Sequence[int] | None = None) -> None:
        """All candidates per layer, or (``only``) the chosen one per layer: the standalone network."""
        super().__init__()
        self.cfg = cfg
        self.stem = conv_bn(cfg.in_channels, cfg.stem_channels, 3, cfg.stem_stride)
        self.specs = cfg.layer_specs()
        if family_of(cfg).check is not None:
            family_of(cfg).check(cfg, self.specs)
        self.choice_names = [layer_choices(cfg, *spec) for spec in self.specs]
        if only is not None and len(only) != len(self.specs):
            raise ValueError(f"{len(only)} choices given for {len(self.specs)} layers.")
        self.layers = nn.ModuleList(
            nn.ModuleList(family_of(cfg).build(n, *spec) for i, n in enumerate(names) if only is None or i == only[layer])
            for layer, (names, spec) in enumerate(zip(self.choice_names, self.specs)))
        self.only = list(only) if only is not None else None
        head = cfg.head_channels or cfg.stage_channels[-1] * 2
        self.head = nn.Sequential(conv_bn(cfg.stage_channels[-1], head, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(head, cfg.num_classes))

    @property
    def num_choices(self) -> list[int]:
        return [len(n) for n in self.choice_names]

    def forward(self, x: torch.Tensor, choices: Sequence[int] | None = None) -> torch.Tensor:
        x = self.stem(x)
        for layer, blocks in enumerate(self.layers):
            x = blocks[0](x) if self.only is not None else blocks[int(choices[layer])](x)
        return self.head(x)

    def forward_gated(self, x: torch.Tensor, active: Sequence[Sequence[int]],
                      gates: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per layer, sum_k gates[layer][k] * block_{active[layer][k]}(x)."""
        x = self.stem(x)
        for blocks, idx, g in zip(self.layers, active, gates):
            x = sum(g[k] * blocks[int(i)](x) for k, i in enumerate(idx))
        return self.head(x)

    def cost_table(self) -> tuple[int, list[list[int]]]:
        """FLOPs of the fixed part (stem + head) and of every candidate of every layer (one image)."""
        from torch.utils.flop_counter import FlopCounterMode

        def flops(module: nn.Module, shape: tuple[int, ...]) -> int:
            was = module.training
            module.eval()
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                out = module(torch.zeros(1, *shape))
            module.train(was)
            return int(counter.get_total_flops()), out.shape[1:]

        s = self.cfg.image_size
        fixed, shape = flops(self.stem, (self.cfg.in_channels, s, s))
        table = []
        for blocks in self.layers:
            row = [flops(b, tuple(shape))[0] for b in blocks]
            shape = flops(blocks[0], tuple(shape))[1]
            table.append(row)
        fixed += flops(self.head, tuple(shape))[0]
        return fixed, table


def build_layerwise(space_config: dict[str, Any], choices: Any) -> LayerwiseSupernet:
    """The standalone network of one path (``choices``: a candidate name per layer)."""
    cfg = LayerwiseSpaceConfig.from_dict(space_config)
    names = LayerwiseSupernet(cfg).choice_names
    unknown = [(i, c) for i, (c, ok) in enumerate(zip(choices, names)) if c not in ok]
    if len(choices) != len(names) or unknown:
        raise ValueError(f"Choices {choices} do not fit the {cfg.family} space ({len(names)} layers; bad: {unknown}).")
    return LayerwiseSupernet(cfg, only=[ok.index(c) for c, ok in zip(choices, names)])


class LayerwiseSampler:
    """Uniform paths, costed by a lookup in the exact per-candidate FLOPs table (thousands per second)."""

    def __init__(self, space_config: dict[str, Any]) -> None:
        supernet = LayerwiseSupernet(LayerwiseSpaceConfig.from_dict(space_config))
        self.names = supernet.choice_names
        self.fixed, self.table = supernet.cost_table()

    def draw(self, rng: random.Random) -> list[str]:
        return [rng.choice(names) for names in self.names]

    def flops(self, choices: Any) -> int:
        return self.fixed + sum(row[names.index(c)] for row, names, c in zip(self.table, self.names, choices))


register_family("mobilenetv2", Family(lambda c_in, c_out, stride: MBCONV_CHOICES + (["zero"] if stride == 1 and c_in == c_out
                                                                                       else []), _mobilenet_block))
register_family("shufflenetv2", Family(lambda c_in, c_out, stride: list(SHUFFLE_CHOICES),
                                       lambda name, c_in, c_out, stride: ShuffleUnit(c_in, c_out, stride, name),
                                       _shuffle_check))
register_family("macro", Family(lambda c_in, c_out, stride: list(MACRO_CHOICES), _macro_block))
