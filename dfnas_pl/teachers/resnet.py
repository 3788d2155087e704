"""ResNets with BatchNorm for 28x28 / 32x32 images (CIFAR-style: 3x3 stem, no max-pool).

The teacher must have BatchNorm layers: their running statistics are what model inversion
matches. ``resnet8`` (~0.3M parameters) is the embedded Fashion-MNIST teacher.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """3x3 stem -> stages of BasicBlocks (stride 2 between stages) -> global pool -> linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: Sequence[int] = (32, 64, 128),
                 blocks: Sequence[int] = (1, 1, 1)) -> None:
        super().__init__()
        if len(widths) != len(blocks):
            raise ValueError(f"widths {tuple(widths)} and blocks {tuple(blocks)} must have the same length")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        layers, ch = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(BasicBlock(ch, w, stride=2 if (i > 0 and j == 0) else 1))
                ch = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layers(self.stem(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def resnet8(in_channels: int = 1, num_classes: int = 10) -> ResNet:
    return ResNet(in_channels, num_classes, widths=(32, 64, 128), blocks=(1, 1, 1))


def resnet14(in_channels: int = 1, num_classes: int = 10) -> ResNet:
    return ResNet(in_channels, num_classes, widths=(32, 64, 128), blocks=(2, 2, 2))


def resnet20(in_channels: int = 3, num_classes: int = 10) -> ResNet:
    return ResNet(in_channels, num_classes, widths=(16, 32, 64), blocks=(3, 3, 3))


def resnet34_cifar(in_channels: int = 3, num_classes: int = 10) -> ResNet:
    """ResNet-34 for 32 px images (3x3 stem, no max-pool; BasicBlocks 3/4/6/3 at 64-512 channels): the
    usual CIFAR teacher of data-free work (DeepInversion's CIFAR-10 ResNet-34; the paper's CIFAR teacher)."""
    return ResNet(in_channels, num_classes, widths=(64, 128, 256, 512), blocks=(3, 4, 6, 3))


def nobn_cnn(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """A CNN without BatchNorm: a teacher that BN-statistics matching cannot invert (tests, ablations)."""
    return nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(16 * 16, num_classes))


ARCHITECTURES = {"resnet8": resnet8, "resnet14": resnet14, "resnet20": resnet20, "resnet34_cifar": resnet34_cifar,
                 "nobn_cnn": nobn_cnn}
