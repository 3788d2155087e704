"""The scorers on planted networks: what each sees, and that the scoring set is computed once."""

import pytest
import torch
from torch import nn

from dfnas_pl.search.scoring import SCORERS, ScoringSet, check_scorer, score_path


class Fixed(nn.Module):
    """A 'supernet' whose path i answers with fixed logits: lets a test plant each candidate's outputs."""

    def __init__(self, outputs: list[torch.Tensor]) -> None:
        super().__init__()
        self.outputs = outputs
        self.bn = nn.BatchNorm1d(1)

    def forward(self, x: torch.Tensor, path) -> torch.Tensor:
        return self.outputs[path[0]][x[:, 0].long()]


class Teacher(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.logits[x[:, 0].long()]


def _setup(n: int = 40):
    g = torch.Generator().manual_seed(0)
    teacher_logits = torch.randn(n, 5, generator=g) * 3
    x = torch.arange(n, dtype=torch.float32)[:, None]
    batches = [(x[i:i + 16], torch.zeros(len(x[i:i + 16]))) for i in range(0, n, 16)]
    return teacher_logits, batches


def test_kd_ranks_a_planted_better_network_first_where_top1_ties():
    """Two candidates with the teacher's argmax on every image (top-1 ties at 1.0); one's distribution is the
    teacher's, the other's is sharpened: kd puts the faithful one first."""
    teacher_logits, batches = _setup()
    faithful, sharp = teacher_logits.clone(), teacher_logits * 4
    net = Fixed([sharp, faithful])
    scoring = ScoringSet(batches, Teacher(teacher_logits), temperature=3.0)
    top1 = [score_path(net, [i], [], scoring, "top1") for i in range(2)]
    kd = [score_path(net, [i], [], scoring, "kd") for i in range(2)]
    assert top1[0].score == top1[1].score == 1.0 and top1[0].agreement == 1.0
    assert kd[1].score > kd[0].score and kd[1].score == pytest.approx(0.0, abs=1e-6)  # KL of itself: 0


def test_the_teacher_runs_once_per_scoring_set_and_scores_repeat_exactly():
    teacher_logits, batches = _setup()
    teacher = Teacher(teacher_logits)
    scoring = ScoringSet(batches, teacher, temperature=3.0)
    calls = teacher.calls
    net = Fixed([torch.randn(40, 5, generator=torch.Generator().manual_seed(1))])
    a, b = (score_path(net, [0], [], scoring, "kd") for _ in range(2))
    assert teacher.calls == calls == len(batches)
    assert a.score == b.score and torch.equal(a.values, b.values) and len(a.values) == len(scoring) == 40


def test_without_a_teacher_the_scores_use_the_labels():
    x = torch.arange(4, dtype=torch.float32)[:, None]
    labels = torch.tensor([0, 1, 2, 3])
    net = Fixed([torch.eye(5)[[0, 1, 2, 4]] * 10])  # right on 3 of 4
    scoring = ScoringSet([(x, labels)])
    assert score_path(net, [0], [], scoring, "top1").score == pytest.approx(0.75)
    nll = score_path(net, [0], [], scoring, "kd")
    assert nll.agreement == pytest.approx(0.75) and nll.values[3] < -9 < nll.values[0]


def test_an_unknown_scorer_is_named_with_the_choices():
    assert {"top1", "kd"} <= set(SCORERS)
    with pytest.raises(ValueError, match="Unknown scorer 'acc'.*kd.*top1"):
        check_scorer("acc")
