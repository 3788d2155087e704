"""Candidate operations of the DARTS cell space (Liu et al., 2019), for any input size.

Every op maps ``[N, C, H, W]`` to ``[N, C, H/stride, W/stride]``; ``OPS[name](C, stride, affine)``
builds one. BatchNorm is non-affine inside the supernet (as in DARTS) so that architecture weights,
not BN scales, decide how much each op contributes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True) -> None:
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine))


class DilConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int,
                 affine: bool = True) -> None:
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out, affine=affine))


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable convolutions (the DARTS 'sep_conv')."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True) -> None:
        super().__init__(DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
                         DilConv(c_in, c_out, kernel, 1, padding, 1, affine))


class Zero(nn.Module):
    """The 'none' op: no connection (output zeros of the right shape)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0) if self.stride == 1 else x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution without losing half the pixels: two offset stride-2 1x1 convs."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = nn.functional.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]  # odd sizes: pad so both halves align
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def _pool(kind: type[nn.Module], stride: int) -> nn.Module:
    return kind(3, stride=stride, padding=1, **({"count_include_pad": False} if kind is nn.AvgPool2d else {}))


OPS: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "none": lambda c, s, a: Zero(s),
    "skip_connect": lambda c, s, a: nn.Identity() if s == 1 else FactorizedReduce(c, c, a),
    "max_pool_3x3": lambda c, s, a: nn.Sequential(_pool(nn.MaxPool2d, s), nn.BatchNorm2d(c, affine=False)),
    "avg_pool_3x3": lambda c, s, a: nn.Sequential(_pool(nn.AvgPool2d, s), nn.BatchNorm2d(c, affine=False)),
    "sep_conv_3x3": lambda c, s, a: SepConv(c, c, 3, s, 1, a),
    "sep_conv_5x5": lambda c, s, a: SepConv(c, c, 5, s, 2, a),
    "dil_conv_3x3": lambda c, s, a: DilConv(c, c, 3, s, 2, 2, a),
    "dil_conv_5x5": lambda c, s, a: DilConv(c, c, 5, s, 4, 2, a),
}
PRIMITIVES: list[str] = list(OPS)
