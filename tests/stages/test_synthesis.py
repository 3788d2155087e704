"""Real synthesis runs with the embedded teacher (small sizes), checked through the files they write."""

import json

import pytest
import torch
import torch.nn.functional as F

from dfnas_pl.data.quality import within_class_diversity
from dfnas_pl.data.synthetic import SyntheticImageDataset, SyntheticSetWriter
from dfnas_pl.teachers.loading import load_teacher
from tests.conftest import TEACHER, synthesize


def records(root, round_):
    return SyntheticSetWriter(root, 10).records(round_)


def test_synthetic_set_layout_and_manifest(synthetic_set):
    manifest = json.loads((synthetic_set / "manifest.json").read_text())
    assert manifest["images"] == 40 and manifest["rounds"] == 2
    assert sum(manifest["counts_per_class"].values()) == 40
    pngs = sorted(synthetic_set.glob("images/*/*.png"))
    assert len(pngs) == 40
    ids = {p.stem for p in pngs}
    assert ids == {f"r{r:02d}_{s:06d}" for r in range(2) for s in range(20)}
    assert manifest["teacher"]["num_classes"] == 10 and manifest["config"]["r_feature"] == 0.01
    assert set(manifest["quality"]) >= {"teacher_top1", "teacher_confidence", "bn_distance", "diversity"}
    soft = torch.load(synthetic_set / "soft_labels.pt", weights_only=True)
    assert soft["logits"].shape == (40, 10) and len(soft["ids"]) == 40
    # folder = teacher argmax on the saved image
    for png in pngs:
        i = soft["ids"].index(png.stem)
        assert int(png.parent.name) == int(soft["logits"][i].argmax())


def test_inversion_makes_images_the_teacher_recognises(synthetic_set):
    """Optimised images are classified as their targets; the same number of random-noise images is not."""
    manifest = json.loads((synthetic_set / "manifest.json").read_text())
    round0 = manifest["quality"]["per_round"]["0"]
    assert round0["teacher_top1"] >= 0.8
    teacher = load_teacher(TEACHER)
    noise = (torch.rand(20, 1, 28, 28) - 0.286) / 0.353
    noise_top1 = (teacher.model(noise).argmax(1) == torch.arange(20) % 10).float().mean().item()
    assert round0["teacher_top1"] > noise_top1 + 0.4


def test_recursive_label_calibration_targets_previous_round_predictions(synthetic_set):
    r0 = {int(s): z for rec in records(synthetic_set, 0) for s, z in zip(rec["slots"], rec["logits"])}
    for rec in records(synthetic_set, 1):
        for s, target in zip(rec["slots"].tolist(), rec["targets"]):
            torch.testing.assert_close(target, F.softmax(r0[s], 0))
            assert target.max() < 1.0  # soft, not one-hot
    for rec in records(synthetic_set, 0):
        assert torch.equal(rec["targets"], F.one_hot(rec["slots"] % 10, 10).float())


def test_soft_labels_are_the_teachers_logits_on_the_saved_png(synthetic_set):
    ds = SyntheticImageDataset(synthetic_set)
    teacher = load_teacher(TEACHER).model
    imgs = torch.stack([ds[i][0] for i in range(len(ds))])
    torch.testing.assert_close(teacher(imgs), ds.logits, atol=1e-4, rtol=1e-4)
    assert ds[0][0].shape == (1, 28, 28) and isinstance(ds[0][2], int)
    only_round1 = SyntheticImageDataset(synthetic_set, rounds=[1])
    assert len(only_round1) == 20 and all(i.startswith("r01_") for i in only_round1.ids)


def test_teacher_running_statistics_are_untouched(tmp_path):
    model = synthesize(tmp_path / "syn", rounds=1, images_per_class=1, iterations=5)
    reference = load_teacher(TEACHER).model.state_dict()
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, reference[k]), f"teacher buffer {k} changed during synthesis"


def test_without_label_calibration_every_round_uses_hard_labels(tmp_path):
    out = tmp_path / "plain"
    synthesize(out, rounds=2, images_per_class=1, iterations=5, label_calibration=False, regional_update=False)
    for rec in records(out, 1):
        assert torch.equal(rec["targets"], F.one_hot(rec["slots"] % 10, 10).float())


def test_same_seed_same_images_other_seed_other_images(tmp_path):
    a = synthesize(tmp_path / "a", rounds=1, images_per_class=1, iterations=5)
    b = synthesize(tmp_path / "b", rounds=1, images_per_class=1, iterations=5)
    c = synthesize(tmp_path / "c", rounds=1, images_per_class=1, iterations=5, seed=1)
    png = lambda m: sorted(p.read_bytes() for p in m.output_dir.glob("images/*/*.png"))  # noqa: E731
    assert png(a) == png(b)
    assert png(a) != png(c)


def test_lowres_warmup_phase_runs(tmp_path):
    m = synthesize(tmp_path / "lowres", rounds=1, images_per_class=1, iterations=5, lowres_iterations=5)
    assert len(list(m.output_dir.glob("images/*/*.png"))) == 10


@pytest.mark.parametrize(("regional", "r_feature"), [(False, 0.05), (True, 0.2)])
def test_bn_loss_lowers_feature_statistics_distance(tmp_path, regional, r_feature):
    """Switching on the BN-statistics term makes the saved images' feature statistics closer to the
    teacher's running statistics. (With regional update the term acts on crops, so its effect on the
    whole image is weaker and needs a larger weight to show within 40 iterations.)"""
    with_bn = synthesize(tmp_path / "bn", rounds=1, images_per_class=2, iterations=40, r_feature=r_feature,
                         regional_update=regional)
    without = synthesize(tmp_path / "nobn", rounds=1, images_per_class=2, iterations=40, r_feature=0.0,
                         regional_update=regional)
    d = lambda m: json.loads((m.output_dir / "manifest.json").read_text())["quality"]["bn_distance"]  # noqa: E731
    assert d(with_bn) < 0.85 * d(without)


def test_diversity_is_measured_over_the_round_and_sees_duplicates(synthetic_set):
    """Batches hold one image per class here, so diversity must come from the whole round; a set of
    identical images has diversity 0, the real synthetic set clearly more."""
    manifest = json.loads((synthetic_set / "manifest.json").read_text())
    diversity = manifest["quality"]["diversity"]
    assert diversity == diversity and diversity > 0.01  # not NaN
    feats = torch.cat([rec["features"] for rec in records(synthetic_set, 0)])
    classes = torch.cat([rec["target_classes"] for rec in records(synthetic_set, 0)])
    assert within_class_diversity(feats[:1].repeat(len(feats), 1), classes) == pytest.approx(0.0, abs=1e-6)


def test_progress_bar_counts_optimisation_steps(tmp_path):
    import lightning as L

    from callbacks import SynthesisProgressBar
    from dfnas_pl.data.synthesis_slots import SynthesisSlots
    from dfnas_pl.inversion.module import ModelInversion

    bar = SynthesisProgressBar(refresh_rate=1)
    seen = []
    original = bar.optimisation_step
    bar.optimisation_step = lambda: (seen.append(bar.train_progress_bar.n), original())
    model = ModelInversion(teacher=TEACHER, output_dir=str(tmp_path / "bar"), rounds=2, iterations=6, warmup_iterations=2,
                           quality_gate=False)
    L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_model_summary=False, callbacks=[bar],
              default_root_dir=str(tmp_path)).fit(model, datamodule=SynthesisSlots(10, images_per_class=1, batch_size=5))
    assert model.steps_per_batch() == 6
    assert bar.train_progress_bar.total == 2 * 6  # 10 slots in batches of 5, 6 Adam steps each
    assert bar.train_progress_bar.n == 12 and len(seen) == 2 * 2 * 6  # one tick per step, every round
    assert seen[:7] == list(range(7))  # it advances within a batch, not only at its end
    default = ModelInversion(teacher=TEACHER, output_dir=str(tmp_path / "default"), rounds=1, iterations=3,
                             quality_gate=False)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path))
    trainer.fit(default, datamodule=SynthesisSlots(10, images_per_class=1, batch_size=10))
    assert isinstance(trainer.progress_bar_callback, SynthesisProgressBar)  # swapped in for Lightning's own
    quiet = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    quiet.fit(ModelInversion(teacher=TEACHER, output_dir=str(tmp_path / "quiet"), rounds=1, iterations=3,
                             quality_gate=False),
              datamodule=SynthesisSlots(10, images_per_class=1, batch_size=10))
    assert quiet.progress_bar_callback is None  # no bar asked for, none added


def test_image_grid_rows_are_labelled_with_class_names():
    from callbacks import SynthesisImageGrid

    cb = SynthesisImageGrid(per_class=3, upscale=2)
    for k in range(4):
        cb._by_class[k] = [torch.full((1, 28, 28), 40 * k, dtype=torch.uint8)] * 3
    grid = cb.grid(4)
    labelled = SynthesisImageGrid.label_rows(grid, ["T-shirt/top", "Trouser", "Pullover", "Dress"])
    margin = labelled.shape[2] - grid.shape[2]
    assert labelled.shape[:2] == grid.shape[:2] and margin > 30
    assert torch.equal(labelled[:, :, margin:], grid)  # the images are untouched
    assert (labelled[:, :, :margin] < 128).sum() > 50  # dark text in the margin
    rows = (labelled[0, :, :margin] < 128).any(1).nonzero().flatten()
    assert rows.max() - rows.min() > grid.shape[1] // 2  # a label on every row, not one block


def test_image_grid_of_many_classes_shows_evenly_spaced_rows():
    from callbacks import SynthesisImageGrid

    cb = SynthesisImageGrid(per_class=1, upscale=1, max_classes=4)
    assert cb.rows(1000) == [0, 250, 500, 750] and cb.rows(3) == [0, 1, 2]
    for k in range(1000):
        cb._by_class[k] = [torch.full((3, 8, 8), k % 256, dtype=torch.uint8)]
    grid = cb.grid(1000)
    assert grid.shape[1] == 4 * (8 + 2) + 2  # 4 rows, not 1,000
    assert grid[0, 2 + 10 + 4, 6].item() == 250 % 256  # the second row is class 250
    with pytest.raises(ValueError, match="max_classes"):
        SynthesisImageGrid(max_classes=0)


def test_manifest_is_strict_json_and_names_non_finite_numbers(tmp_path):
    """One image per class: within-class diversity is undefined (NaN). The manifest says so with null and
    a flag, never with the non-standard ``NaN`` token that strict JSON readers refuse."""
    m = synthesize(tmp_path / "one", rounds=1, images_per_class=1, iterations=3)
    text = (m.output_dir / "manifest.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    manifest = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert manifest["quality"]["diversity"] is None and manifest["quality"]["non_finite"] == ["diversity"]
    assert manifest["quality"]["teacher_top1"] is not None


def test_diversity_term_spreads_each_class_in_the_teachers_features(tmp_path):
    """r_diversity > 0 lowers the same-class feature similarity of the saved images (the term's aim); at 0
    the images are those of a run that never computes it (the term is off, not merely small)."""
    kwargs = dict(rounds=1, images_per_class=3, batch_size=30, iterations=20, label_calibration=False,
                  regional_update=False, r_feature=0.1)
    off = synthesize(tmp_path / "off", **kwargs)
    zero = synthesize(tmp_path / "zero", r_diversity=0.0, **kwargs)
    on = synthesize(tmp_path / "on", r_diversity=2.0, **kwargs)
    png = lambda m: sorted(p.read_bytes() for p in m.output_dir.glob("images/*/*.png"))  # noqa: E731
    assert png(off) == png(zero)
    div = lambda m: json.loads((m.output_dir / "manifest.json").read_text())["quality"]["diversity"]  # noqa: E731
    assert div(on) > div(off) + 0.02, (div(on), div(off))
    assert json.loads((on.output_dir / "run.json").read_text())["r_diversity"] == 2.0
    assert "r_diversity" not in json.loads((off.output_dir / "run.json").read_text())  # older sets stay resumable


def test_competition_term_draws_images_where_the_student_disagrees(tmp_path, monkeypatch):
    """Round 1's images with the competition term: the student trained on round 0 agrees less with the
    teacher on them than on round 1's images made without it (same seed, same targets). Run again on the
    finished set, nothing is made and no student is trained (a resumed run pays only for unfinished rounds)."""
    import dfnas_pl.inversion.module as inversion_module
    from dfnas_pl.inversion.competition import train_competition_student
    from dfnas_pl.inversion.losses import competition

    kwargs = dict(rounds=2, images_per_class=2, batch_size=20, iterations=20, label_calibration=False,
                  regional_update=False, r_feature=0.1, competition_steps=30)
    on = synthesize(tmp_path / "on", r_competition=5.0, **kwargs)
    off = synthesize(tmp_path / "off", **kwargs)
    teacher = load_teacher(TEACHER).model
    images, _ = on.writer.saved_images([0])
    student = train_competition_student(teacher, on.normalize(images), "resnet8", 1, 10, 30, 0)  # another seed
    term = {}
    for name, m in (("on", on), ("off", off)):
        x = m.normalize(m.writer.saved_images([1])[0])
        with torch.no_grad():
            term[name] = competition(student(x), teacher(x)).item()
    assert term["on"] < term["off"] - 0.01, term
    assert json.loads((on.output_dir / "run.json").read_text())["competition_steps"] == 30
    trained = []
    real_training = inversion_module.train_competition_student
    monkeypatch.setattr(inversion_module, "train_competition_student",  # counts, then trains as before
                        lambda *a, **k: trained.append(a[-1]) or real_training(*a, **k))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in on.output_dir.glob("images/*/*.png"))
    synthesize(tmp_path / "on", r_competition=5.0, **kwargs)
    assert trained == [] and sorted((p.name, p.stat().st_mtime_ns) for p in on.output_dir.glob("images/*/*.png")) == before
