"""A user's own small teacher: three conv + BatchNorm layers and a linear head (19 K parameters),
the kind of classifier the own-teacher journey is for. Not a ResNet and not in the package."""

from torch import nn


class SmallNet(nn.Module):
    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()

        def block(cin, cout, stride):
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(*block(1, width, 1), *block(width, 2 * width, 2), *block(2 * width, 3 * width, 2),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(3 * width, classes)

    def forward(self, x):
        return self.head(self.body(x))
