"""Building blocks of the layer-wise spaces: MobileNetV2 inverted residuals (ProxylessNAS) and
ShuffleNetV2 units (SPOS)."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(c_out)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand (x ``expansion``), k x k depthwise, 1x1 project."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.body = nn.Sequential(conv_bn(c_in, hidden, 1), conv_bn(hidden, hidden, kernel, stride, groups=hidden),
                                  conv_bn(hidden, c_out, 1, act=False))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class ZeroLayer(nn.Module):
    """ProxylessNAS 'zero' choice: the layer is skipped (only where input and output shapes agree)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def channel_shuffle(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit. ``kind`` 'k3' / 'k5' / 'k7': 1x1, k x k depthwise, 1x1; 'xception': three
    3x3 depthwise-separable convs. Stride 1 splits the channels in half and processes one half;
    stride 2 processes all of them and adds a depthwise-strided projection branch."""

    def __init__(self, c_in: int, c_out: int, stride: int, kind: str) -> None:
        super().__init__()
        self.stride = stride
        c_main_in = c_in // 2 if stride == 1 else c_in
        c_main_out = c_out - (c_in // 2 if stride == 1 else c_in)
        mid = c_out // 2
        if kind == "xception":
            self.main = nn.Sequential(
                conv_bn(c_main_in, c_main_in, 3, stride, groups=c_main_in, act=False), conv_bn(c_main_in, mid, 1),
                conv_bn(mid, mid, 3, groups=mid, act=False), conv_bn(mid, mid, 1),
                conv_bn(mid, mid, 3, groups=mid, act=False), conv_bn(mid, c_main_out, 1))
        else:
            k = int(kind[1:])
            self.main = nn.Sequential(conv_bn(c_main_in, mid, 1), conv_bn(mid, mid, k, stride, groups=mid, act=False),
                                      conv_bn(mid, c_main_out, 1))
        self.proj = nn.Sequential(conv_bn(c_in, c_in, 3, 2, groups=c_in, act=False), conv_bn(c_in, c_in, 1)) \
            if stride == 2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            keep, x_main = x.chunk(2, dim=1)
            return channel_shuffle(torch.cat([keep, self.main(x_main)], dim=1))
        return channel_shuffle(torch.cat([self.proj(x), self.main(x)], dim=1))
