"""The health check's two tests on numbers whose answer is known."""

import math
import random

import pytest

from dfnas_pl.search.health import SearchCannotChoose, chance_level, check_health, chi2_sf, enforce

REFS = [i % 10 for i in range(100)]  # 100 scoring images, 10 balanced classes: chance 0.10


def test_chi2_survival_matches_tabulated_quantiles():
    assert chi2_sf(30.578, 15) == pytest.approx(0.01, abs=2e-4)  # chi2(15) 99th percentile
    assert chi2_sf(3.841, 1) == pytest.approx(0.05, abs=2e-4)
    assert chi2_sf(0.0, 5) == 1.0


def test_chance_is_the_most_frequent_reference_class():
    assert chance_level(REFS) == pytest.approx(0.1)
    assert chance_level([3] * 70 + [1] * 30) == pytest.approx(0.7)


def test_scores_at_chance_cannot_choose():
    """A supernet that learned nothing: candidates near 10 % with the spread 100 images' noise gives them."""
    rng = random.Random(0)
    scores = [sum(rng.random() < 0.12 for _ in range(100)) / 100 for _ in range(16)]
    h = check_health("spos", REFS, sorted(scores)[8], "median", scores)
    assert not h.learned and h.separates is False and not h.can_choose
    assert "cannot choose" in h.line() and "chance is 10%" in h.line() and "Train the supernet longer" in h.line()


def test_a_high_level_without_spread_still_cannot_choose():
    """Every candidate at about 70 % with binomial noise only: the supernet learned, but its scores do not tell
    the candidates apart (evolution would pick the luckiest)."""
    rng = random.Random(1)
    scores = [sum(rng.random() < 0.7 for _ in range(100)) / 100 for _ in range(16)]
    h = check_health("spos", REFS, sorted(scores)[8], "median", scores)
    assert h.learned and h.separates is False and not h.can_choose


def test_learned_and_spread_wider_than_noise_chooses():
    scores = [0.3, 0.35, 0.45, 0.5, 0.55, 0.6, 0.62, 0.7, 0.72, 0.75, 0.78, 0.8, 0.82, 0.85, 0.88, 0.9]
    h = check_health("spos", REFS, 0.72, "median", scores)
    assert h.can_choose and h.spread_p < 1e-6 and h.line().startswith("SPOS can choose")
    noise = math.sqrt(sum(scores) / 16 * (1 - sum(scores) / 16) / 100)
    assert h.noise == pytest.approx(noise, abs=1e-4)


def test_a_gradient_search_without_candidates_is_judged_on_its_level_alone():
    assert check_health("darts", REFS, 0.5, "supernet").can_choose
    assert not check_health("darts", REFS, 0.15, "supernet").can_choose  # floor: 0.10 + 2.33 * 0.03 = 0.17


def test_enforce_refuses_unless_told_and_records_that_it_was():
    bad = check_health("spos", REFS, 0.12, "median", [0.1, 0.12, 0.11, 0.13])
    with pytest.raises(SearchCannotChoose, match="export_unhealthy true"):
        enforce(bad, export_unhealthy=False)
    assert enforce(bad, export_unhealthy=True).exported_anyway
    good = check_health("darts", REFS, 0.8, "supernet")
    assert enforce(good, export_unhealthy=False) is good


def _shared_difficulty_values(k: int, n: int, effect: float, seed: int):
    """k candidates' 0/1 hits on the same n images: each image has a difficulty every candidate shares (as in a
    trained supernet, most images are right or wrong for all: 80 % at 0.97 or 0.03, the rest anywhere), and
    candidate c is ``effect * c`` more likely right than candidate 0."""
    import torch

    g = torch.Generator().manual_seed(seed)
    shared = (torch.rand(n, generator=g) < 0.8).double()
    easy = shared * (torch.rand(n, generator=g) < 0.7).double().mul(0.94).add(0.03) \
        + (1 - shared) * torch.rand(n, generator=g)
    p = (easy[None, :] + effect * torch.arange(k)[:, None]).clamp(0, 1)
    return (torch.rand(k, n, generator=g) < p).double()


def test_the_paired_test_holds_its_false_pass_rate():
    """Equal candidates on shared images: the paired test passes at about its 1 % (none of 100 trials is the
    expected count within Poisson error; more than 5 would mean the test is miscalibrated)."""
    from dfnas_pl.search.health import paired_spread

    passes = sum(paired_spread(_shared_difficulty_values(16, 100, 0.0, s))[2] < 0.01 for s in range(100))
    assert passes <= 5


def test_the_paired_test_sees_a_difference_the_binomial_test_misses():
    """16 candidates 0.6 points of agreement apart in turn (0-9 points), on 300 shared images, five draws: the
    shared difficulty hides the differences from the unpaired binomial test; the paired test takes it out."""
    refs = [i % 10 for i in range(300)]
    paired, unpaired = [], []
    for seed in range(5):
        v = _shared_difficulty_values(16, 300, 0.006, seed)
        level = float(v.mean(1).median())
        paired.append(check_health("spos", refs, level, "median", v))
        unpaired.append(check_health("spos", refs, level, "median", v.mean(1).tolist()))
    assert all(h.spread_test == "paired" for h in paired) and all(h.spread_test == "binomial" for h in unpaired)
    assert sum(bool(h.separates) for h in paired) >= 4 and sum(bool(h.separates) for h in unpaired) <= 1, \
        ([h.spread_p for h in paired], [h.spread_p for h in unpaired])
    assert paired[0].spread == pytest.approx(unpaired[0].spread, abs=1e-6)
