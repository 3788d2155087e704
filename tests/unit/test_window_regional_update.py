"""``regional_update: window`` (the official code's canvas-and-window mechanism): only the
window's pixels get gradient in a step, the saved image is the whole canvas, its stored labels are the
teacher's on the centre window (or the mean over windows), and the data modules crop input-sized
windows from it (random for training, centre for evaluation)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torchvision.io import decode_png

from dfnas_pl.data.search_data import SearchDataModule
from dfnas_pl.data.synthetic import SyntheticImageDataset
from dfnas_pl.data.synthetic_datamodule import SyntheticDataModule
from dfnas_pl.inversion.views import all_windows, centre_window, random_windows
from dfnas_pl.teachers.loading import load_teacher
from tests.conftest import TEACHER, synthesize


def touched(per_image: bool, flip_prob: float = 0.5) -> torch.Tensor:
    x = torch.randn(16, 1, 32, 32, requires_grad=True)
    view = random_windows(x, 28, flip_prob, per_image, torch.Generator().manual_seed(5))
    assert view.shape == (16, 1, 28, 28)
    (view * torch.randn_like(view)).sum().backward()
    return x.grad[:, 0] != 0


def test_a_window_step_gives_gradient_to_exactly_one_input_sized_window_per_image():
    mask = touched(per_image=True)
    assert (mask.sum(dim=(1, 2)) == 28 * 28).all()  # a full window, no interpolation border
    rows, cols = mask.any(2), mask.any(1)  # each mask is one contiguous 28 x 28 square
    assert (rows.sum(1) == 28).all() and (cols.sum(1) == 28).all()
    assert len({tuple(m.flatten().tolist()) for m in mask}) > 1  # per image: windows differ
    batch = touched(per_image=False)
    assert all(torch.equal(m, batch[0]) for m in batch)  # one window for the whole batch


def test_a_window_is_the_canvas_pixels_themselves_or_their_mirror():
    x = torch.arange(32 * 32, dtype=torch.float32).view(1, 1, 32, 32).repeat(8, 1, 1, 1)
    for flip in (0.0, 1.0):
        v = random_windows(x, 28, flip, True, torch.Generator().manual_seed(0))
        v = v.flip(3) if flip else v
        assert any(torch.equal(v[0], w[0]) for w in all_windows(x, 28))
    assert torch.equal(centre_window(x, 28), x[..., 2:30, 2:30])


@pytest.fixture(scope="module")
def window_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("window") / "synthetic"
    synthesize(out, rounds=2, images_per_class=1, batch_size=10, iterations=8, regional_update="window")
    return out


def test_window_synthesis_saves_the_canvas_and_labels_the_centre_window(window_set):
    manifest = json.loads((window_set / "manifest.json").read_text())
    assert manifest["canvas_size"] == 32 and manifest["teacher"]["image_size"] == 28
    assert manifest["config"]["regional_update"] == "window"
    pngs = sorted(window_set.glob("images/*/*.png"))
    assert len(pngs) == 20
    img = decode_png(torch.frombuffer(bytearray(pngs[0].read_bytes()), dtype=torch.uint8))
    assert img.shape == (1, 32, 32)  # the canvas, not a crop
    ds = SyntheticImageDataset(window_set)  # centre windows
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    assert x.shape == (20, 1, 28, 28)
    teacher = load_teacher(TEACHER).model
    torch.testing.assert_close(teacher(x), ds.logits, atol=1e-4, rtol=1e-4)
    assert torch.equal(ds[3][0], ds[3][0])  # the centre window is deterministic


def test_data_modules_train_on_random_windows_and_evaluate_on_the_centre(window_set):
    train = SyntheticImageDataset(window_set, window="random")
    torch.manual_seed(0)
    views = torch.stack([train[0][0] for _ in range(12)])
    assert views.shape == (12, 1, 28, 28) and len({v.flatten()[:60].tolist().__str__() for v in views}) > 1
    centre = SyntheticImageDataset(window_set)[0][0]
    full = SyntheticImageDataset(window_set)
    full.crop = None  # the stored canvas: every random view is one of its windows
    canvas = full[0][0].unsqueeze(0)
    assert all(any(torch.equal(v, w[0]) for w in all_windows(canvas, 28)) for v in views)
    assert torch.equal(centre, centre_window(canvas, 28)[0])

    search = SearchDataModule(source="synthetic", path=str(window_set), val_fraction=0.5, batch_size=4, augment=False)
    search.setup("fit")
    batch, *_ = next(iter(search.train_dataloader()))  # CombinedLoader: (batch, index, loader index)
    assert batch["train"][0].shape[-2:] == (28, 28) and batch["val"][0].shape[-2:] == (28, 28)
    val_x = torch.stack([search.search_val[i][0] for i in range(2)])
    assert torch.equal(val_x, torch.stack([search.search_val[i][0] for i in range(2)]))  # centre: same each time
    distil = SyntheticDataModule(path=str(window_set), batch_size=4, val_fraction=0.2)
    distil.setup("fit")
    assert next(iter(distil.train_dataloader()))[0].shape[-2:] == (28, 28)
    assert distil.val_set[0][0].shape[-2:] == (28, 28)


def test_mean_window_labels_average_the_teachers_softmax_over_every_window(tmp_path):
    m = synthesize(tmp_path / "mean", rounds=1, images_per_class=1, batch_size=10, iterations=4,
                   regional_update="window", window_labels="mean")
    full = SyntheticImageDataset(m.output_dir)
    full.crop = None
    canvas = torch.stack([full[i][0] for i in range(len(full))])
    probs = torch.stack([F.softmax(m.teacher(w), 1) for w in all_windows(canvas, 28)]).mean(0)
    torch.testing.assert_close(full.logits.exp(), probs, atol=1e-4, rtol=1e-4)


def test_true_and_zoom_are_the_same_regional_update(tmp_path):
    a = synthesize(tmp_path / "true", rounds=1, images_per_class=1, iterations=4, regional_update=True)
    b = synthesize(tmp_path / "zoom", rounds=1, images_per_class=1, iterations=4, regional_update="zoom")
    png = lambda m: sorted(p.read_bytes() for p in m.output_dir.glob("images/*/*.png"))  # noqa: E731
    assert png(a) == png(b)
    assert a.settings() == b.settings() and "canvas_ratio" not in a.settings()  # older sets stay resumable
    with pytest.raises(ValueError, match="regional_update must be one of"):
        synthesize(tmp_path / "bad", rounds=1, images_per_class=1, iterations=2, regional_update="tiles")
