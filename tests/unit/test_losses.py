import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfnas_pl.inversion.losses import (
    BNStatisticsLoss,
    channel_var_mean,
    competition,
    image_l2,
    same_class_similarity,
    soft_cross_entropy,
    total_variation,
)
from dfnas_pl.teachers.resnet import resnet8


def test_channel_var_mean_matches_torch():
    x = torch.randn(7, 5, 6, 9) * 3 + 10  # large mean: the float64 accumulation must keep precision
    var, mean = channel_var_mean(x)
    ref_var, ref_mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(var, ref_var, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-5, atol=1e-5)


def test_bn_loss_is_zero_at_running_statistics_and_weights_first_layer():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 8, 8)
    net = nn.Sequential(nn.BatchNorm2d(3), nn.BatchNorm2d(3)).eval()
    var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    for bn in net:  # running statistics = this batch's statistics (BN in eval mode maps them to 0/1)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
    net[1].running_mean.zero_()
    net[1].running_var.fill_(1.0)
    with BNStatisticsLoss(net, first_bn_multiplier=10.0) as bn_loss:
        net(x)
        assert bn_loss.distances[0].item() == pytest.approx(0.0, abs=1e-4)
        second = bn_loss.distances[1].item()
        assert second < 1e-3  # eval-mode BN output has mean 0 / var 1 (up to eps)
        net(x + 1.0)  # shifted batch: the first layer's mean is off by 1 in each of 3 channels
        assert bn_loss.distances[0].item() == pytest.approx(3 ** 0.5, rel=1e-3)
        assert bn_loss.loss().item() == pytest.approx(10 * bn_loss.distances[0].item() + bn_loss.distances[1].item(),
                                                      rel=1e-5)
    assert not net[0]._forward_hooks  # hooks removed on exit


def test_bn_loss_counts_every_batchnorm_of_the_teacher():
    net = resnet8().eval()
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    with BNStatisticsLoss(net) as bn_loss:
        net(torch.randn(4, 1, 28, 28))
        assert len(bn_loss.distances) == n_bn == 9
        assert all(d is not None and d.item() > 0 for d in bn_loss.distances)


def test_total_variation_and_l2():
    flat = torch.ones(2, 1, 5, 5)
    tv1, tv2 = total_variation(flat)
    assert tv1.item() == 0 and tv2.item() == 0
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., ::2] = 1.0
    tv1, tv2 = total_variation(stripes)
    assert tv1.item() > 0.5 and tv2.item() > 1.0
    assert image_l2(torch.ones(3, 1, 2, 2)).item() == pytest.approx(2.0)


def test_soft_cross_entropy_equals_cross_entropy_on_one_hot():
    logits, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 1, 0])
    torch.testing.assert_close(soft_cross_entropy(logits, F.one_hot(y, 4).float()), F.cross_entropy(logits, y))


def test_kd_t_squared_keeps_the_logit_gradient_at_hintons_high_temperature_limit():
    """With T^2, d KD / d s -> (s - t) / (K B) for zero-mean logits and large T; without it the
    gradient is T^2 times smaller (the official code's omission)."""
    from dfnas_pl.losses import kd_loss

    g = torch.Generator().manual_seed(0)
    batch, classes, temperature = 4, 10, 100.0
    s = torch.randn(batch, classes, generator=g)
    t = torch.randn(batch, classes, generator=g)
    s, t = s - s.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    limit = (s - t) / (classes * batch)
    for t_squared, scale in ((True, 1.0), (False, temperature**-2)):
        student = s.clone().requires_grad_(True)
        kd_loss(student, t, temperature, t_squared=t_squared).backward()
        torch.testing.assert_close(student.grad, limit * scale, rtol=0.05, atol=5e-4 * scale)


def test_hard_teacher_targets_keep_only_the_teachers_top_class():
    """Hard targets: cross-entropy to the teacher's argmax, blind to the rest of its distribution and to T;
    soft targets are the KD loss itself; anything else is refused when the search objective is built."""
    from dfnas_pl.losses import kd_loss, teacher_loss
    from dfnas_pl.search.objective import SearchObjective

    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    hard = teacher_loss(s, t, 3.0, targets="hard")
    torch.testing.assert_close(hard, F.cross_entropy(s, t.argmax(1)))
    t_same_top = t + 5.0 * F.one_hot(t.argmax(1), 5)  # a far more confident teacher, same top class
    torch.testing.assert_close(teacher_loss(s, t_same_top, 7.0, targets="hard"), hard)
    assert teacher_loss(s, t_same_top, 3.0) != pytest.approx(teacher_loss(s, t, 3.0).item())  # soft sees it
    torch.testing.assert_close(teacher_loss(s, t, 3.0, t_squared=True), kd_loss(s, t, 3.0, t_squared=True))
    objective = SearchObjective(nn.Linear(5, 5), 3.0, kd_targets="hard")
    torch.testing.assert_close(objective(s, t), hard)
    x = torch.randn(6, 5, generator=g)
    torch.testing.assert_close(objective.targets((x, None)), objective.teacher(x))  # the teacher still labels
    with pytest.raises(ValueError, match="kd_targets must be 'soft' or 'hard'"):
        SearchObjective(nn.Linear(5, 5), 3.0, kd_targets="argmax")
    from dfnas_pl.distillation import DistilledClassifier

    with pytest.raises(ValueError, match="kd_targets must be 'soft' or 'hard'"):
        DistilledClassifier(kd_targets="argmax")


def test_same_class_similarity_pushes_only_same_class_features_apart():
    torch.manual_seed(0)
    base = torch.randn(1, 16)
    features = (base + 0.01 * torch.randn(4, 16)).requires_grad_(True)  # four near-copies of one image
    classes = torch.tensor([0, 0, 1, 2])
    sim = same_class_similarity(features, classes)
    assert sim.item() == pytest.approx(1.0, abs=1e-3)  # one same-class pair, nearly identical
    sim.backward()
    assert features.grad[2:].abs().max() == 0  # images without a same-class partner get no push
    stepped = (features - 10.0 * features.grad).detach()  # a descent step moves the pair apart
    assert same_class_similarity(stepped, classes) < sim.item() - 1e-4
    lone = torch.randn(3, 16, requires_grad=True)
    zero = same_class_similarity(lone, torch.tensor([0, 1, 2]))
    assert zero.item() == 0.0 and not zero.requires_grad  # no pair: no term, no gradient


def test_competition_is_one_where_student_agrees_and_descends_toward_disagreement():
    torch.manual_seed(0)
    teacher = torch.randn(8, 10) * 3
    assert competition(teacher.clone(), teacher).item() == pytest.approx(1.0, abs=1e-6)  # JS 0: full agreement
    student_far = torch.randn(8, 10) * 3
    assert competition(student_far, teacher).item() < 1.0  # disagreement lowers the term
    x = (teacher + 0.5 * torch.randn(8, 10)).requires_grad_(True)  # images' logits under the student
    term = competition(x, teacher)
    term.backward()
    assert competition((x - 20.0 * x.grad).detach(), teacher) < term.item()  # descent: more disagreement
