import torch

from dfnas_pl.inversion.views import jitter_flip, random_region_boxes, random_regions, warmup_cosine


def test_region_boxes_stay_inside_the_image_and_follow_scale():
    g = torch.Generator().manual_seed(0)
    w, h, cx, cy = random_region_boxes(2000, (0.3, 1.0), (0.75, 4 / 3), g).unbind(1)
    assert (w <= 1).all() and (h <= 1).all()
    assert ((cx.abs() + w) <= 1 + 1e-6).all() and ((cy.abs() + h) <= 1 + 1e-6).all()
    area = w * h  # normalised side lengths, so area fraction = w*h (clamping can only shrink it)
    assert area.min() >= 0.3 * 0.74 and area.max() <= 1.0 + 1e-6
    assert area.std() > 0.1  # sizes really vary


def test_regional_update_only_touches_its_region():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 1, 28, 28, requires_grad=True)
    view = random_regions(x, (28, 28), scale=(0.1, 0.3), ratio=(1.0, 1.0), flip_prob=0.5, generator=g)
    assert view.shape == x.shape
    view.sum().backward()
    touched = (x.grad.abs() > 0).float().mean(dim=(1, 2, 3))
    assert touched.max() < 0.6, "a small region must leave most pixels without gradient"
    assert touched.min() > 0.05
    assert touched.std() > 0.01  # each image has its own region


def test_full_scale_region_is_identity_up_to_flip():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 10, 10)
    view = random_regions(x, (10, 10), scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_prob=0.0, generator=g)
    torch.testing.assert_close(view, x, atol=1e-5, rtol=1e-5)


def test_jitter_flip_is_a_permutation_of_pixels():
    g = torch.Generator().manual_seed(1)
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    y = jitter_flip(x, jitter=2, flip_prob=1.0, generator=g)
    assert torch.equal(torch.sort(y.flatten()).values, torch.sort(x.flatten()).values)
    assert not torch.equal(x, y)


def test_warmup_cosine():
    assert warmup_cosine(0, 100, 1.0, 10) == 0.1
    assert warmup_cosine(9, 100, 1.0, 10) == 1.0
    assert abs(warmup_cosine(10, 100, 1.0, 10) - 1.0) < 1e-9
    assert warmup_cosine(99, 100, 1.0, 10) < 0.01
