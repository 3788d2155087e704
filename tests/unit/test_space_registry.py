"""A search space is one registration: export, the random baseline and the ground truth's sampler read the
registry, so a space defined outside the package (here: a toy space of one width choice) builds back from its
architecture.json and gets a random architecture at equal FLOPs without any change to dfnas_pl."""

from __future__ import annotations

import random

import pytest
from torch import nn

from dfnas_pl.search.export import build_from_architecture, count_flops, write_architecture
from dfnas_pl.search.random_arch import random_like
from dfnas_pl.search.space_registry import SEARCH_SPACES, register_search_space, search_space, space_sampler


def build_widths(space_config, choices) -> nn.Module:
    c = space_config["in_channels"]
    layers = []
    for width in choices:
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
        c = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, space_config["num_classes"]))


class WidthSampler:
    def __init__(self, space_config) -> None:
        self.space_config = space_config

    def draw(self, rng: random.Random) -> list[int]:
        return [rng.choice([4, 8, 16]) for _ in range(3)]

    def flops(self, choices) -> int:
        size = self.space_config["image_size"]
        return count_flops(build_widths(self.space_config, choices), (self.space_config["in_channels"], size, size))


@pytest.fixture
def toy_space():
    register_search_space("toy_widths", build_widths, WidthSampler, max_draws=50)
    yield "toy_widths"
    SEARCH_SPACES.pop("toy_widths")


def test_the_package_registers_its_spaces():
    search_space("darts")  # importing the package's space modules registers all of them
    assert {"darts", "mobilenetv2", "shufflenetv2", "macro"} <= set(SEARCH_SPACES)
    assert search_space("darts").max_draws and search_space("macro").max_draws is None
    with pytest.raises(ValueError, match="Unknown search space 'nope'.*registered: .*macro"):
        search_space("nope")


def test_a_space_registered_outside_the_package_builds_back_and_gets_a_random_baseline(tmp_path, toy_space):
    cfg = {"in_channels": 1, "num_classes": 10}
    record = write_architecture(tmp_path / "architecture.json", "manual", toy_space, cfg, 12, [16, 16, 16])
    model = build_from_architecture(tmp_path / "architecture.json")
    assert [m.out_channels for m in model if isinstance(m, nn.Conv2d)] == [16, 16, 16]
    assert record["flops"] == space_sampler(toy_space, record["space_config"]).flops([16, 16, 16]) > 0
    small = write_architecture(tmp_path / "small.json", "manual", toy_space, cfg, 12, [4, 4, 4])
    choices, flops = random_like(small, seed=0)
    assert choices == [4, 4, 4] and flops == small["flops"]  # the only architecture within 5 % of the cheapest


def test_a_name_cannot_be_registered_twice_with_another_space(toy_space):
    with pytest.raises(ValueError, match="registered twice"):
        register_search_space(toy_space, build_widths, WidthSampler, max_draws=10)
