"""Bad input to synthesis fails early with a message that names the problem and the fix."""

import json

import lightning as L
import pytest
import torch

from dfnas_pl.data.synthesis_slots import SynthesisSlots
from dfnas_pl.inversion.module import ModelInversion
from dfnas_pl.teachers.loading import build_arch, save_teacher
from tests.conftest import TEACHER, run_cli, synthesize


def test_teacher_without_batchnorm_needs_r_feature_zero(tmp_path):
    path = save_teacher(tmp_path / "nobn.pt", build_arch("nobn_cnn", 1, 10), "nobn_cnn", 10, 1, 28, (0.5,), (0.5,))
    with pytest.raises(ValueError, match="no BatchNorm layers.*r_feature: 0"):
        ModelInversion(teacher=str(path), output_dir=str(tmp_path / "out"))
    synthesize(tmp_path / "out", teacher=str(path), r_feature=0.0, rounds=1, images_per_class=1, iterations=3)
    assert len(list((tmp_path / "out").glob("images/*/*.png"))) == 10


def test_class_count_mismatch_between_data_and_teacher(tmp_path):
    model = ModelInversion(teacher=TEACHER, output_dir=str(tmp_path / "out"), iterations=2)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="data.num_classes is 100 .* 10 classes.*num_classes: 10"):
        trainer.fit(model, datamodule=SynthesisSlots(num_classes=100, images_per_class=1, batch_size=10))
    assert not (tmp_path / "out" / "records").exists()  # nothing written before the check


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match="not writable.*Choose another location"):
        synthesize(blocker / "synthetic", rounds=1, images_per_class=1, iterations=2)


def test_nan_loss_stops_with_the_fix(tmp_path):
    model = build_arch("resnet8", 1, 10)
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")  # a damaged teacher: every logit of class 0 is NaN
    path = save_teacher(tmp_path / "nan.pt", model, "resnet8", 10, 1, 28, (0.5,), (0.5,))
    with pytest.raises(FloatingPointError, match=r"non-finite terms: \['main'\]\). .*check its weights"):
        synthesize(tmp_path / "out", teacher=str(path), rounds=1, images_per_class=1, iterations=5)
    assert not list((tmp_path / "out").glob("records/*/*.pt"))  # no half-made batch was recorded
    with pytest.raises(ValueError, match=r"model.init_args.lr must be a finite number, got nan"):
        ModelInversion(teacher=TEACHER, output_dir=str(tmp_path / "out"), lr=float("nan"))


def test_other_settings_on_an_existing_set_are_refused_then_overwritten(tmp_path):
    out = tmp_path / "out"
    synthesize(out, rounds=1, images_per_class=1, iterations=3)
    first = json.loads((out / "manifest.json").read_text())
    with pytest.raises(ValueError, match=r"other settings \(iterations\).*overwrite: true"):
        synthesize(out, rounds=1, images_per_class=1, iterations=4)
    assert json.loads((out / "manifest.json").read_text()) == first  # refused without touching it
    synthesize(out, rounds=1, images_per_class=1, iterations=4, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["config"]["iterations"] == 4


def test_invalid_sizes(tmp_path):
    with pytest.raises(ValueError, match=r"model.init_args.rounds must lie in \[1, inf\), got 0"):
        ModelInversion(teacher=TEACHER, output_dir=str(tmp_path), rounds=0)
    with pytest.raises(ValueError, match="must be positive"):
        SynthesisSlots(images_per_class=0)


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("label_temperature", 0.0, r"label_temperature must lie in \(0, inf\), got 0.0"),
    ("flip_prob", 1.5, r"flip_prob must lie in \[0, 1\], got 1.5"),
    ("r_feature", -0.1, r"r_feature must lie in \[0, inf\)"),
    ("betas", (0.5, 1.0), r"betas\[1\] must lie in \[0, 1\), got 1.0"),
    ("region_scale", (0.9, 0.5), r"region_scale must be \[low, high\]"),
    ("iterations", 0, r"iterations must lie in \[1, inf\)"),
])
def test_numeric_settings_are_range_checked_before_any_work(tmp_path, setting, value, message):
    """Checked in the constructor, before the teacher is even loaded: the message names the setting."""
    with pytest.raises(ValueError, match=message):
        ModelInversion(teacher=TEACHER, output_dir=str(tmp_path / "never"), **{setting: value})
    assert not (tmp_path / "never").exists()


def test_quality_gate_stops_a_diverging_synthesis_and_names_the_cause(tmp_path):
    """lr 1e12 (issue 16): the images bounce between the pixel bounds and the teacher recognises few of them."""
    with pytest.raises(RuntimeError, match=r"Quality gate: round 0 .* teacher recognises only .*lr 1e\+12"):
        synthesize(tmp_path / "bad", rounds=2, images_per_class=1, iterations=10, lr=1e12, quality_gate=True)
    assert not (tmp_path / "bad" / "manifest.json").exists()  # never finalised as if it were usable
    kept = synthesize(tmp_path / "kept", rounds=1, images_per_class=1, iterations=10, lr=1e12, quality_gate=False)
    manifest = json.loads((kept.output_dir / "manifest.json").read_text())
    assert manifest["quality"]["teacher_top1"] < 0.9  # kept on purpose, numbers say so
    good = synthesize(tmp_path / "good", rounds=1, images_per_class=1, iterations=60, quality_gate=True)
    assert json.loads((good.output_dir / "manifest.json").read_text())["quality"]["teacher_top1"] >= 0.9


def test_cli_prints_our_errors_without_a_traceback(tmp_path):
    """A user error raised by our code: one message and exit 2; DFNAS_TRACEBACK=1 shows where."""
    args = ("fit", "--config", "experiments/fmnist/synthesize.yaml", "--data.init_args.num_classes", "7",
            "--model.init_args.output_dir", str(tmp_path / "out"), "--trainer.logger", "false",
            "--trainer.callbacks", "[]")
    proc = run_cli(*args, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "dfnas_pl: error: " in proc.stderr and "num_classes: 10" in proc.stderr
    assert "Traceback" not in proc.stderr
    traced = run_cli(*args, check=False, env={"DFNAS_TRACEBACK": "1"})
    assert traced.returncode == 1 and "Traceback" in traced.stderr and "num_classes: 10" in traced.stderr


def test_cli_keeps_the_traceback_of_an_error_raised_inside_a_library():
    from dfnas_pl.cli import raised_by_us

    try:
        json.loads("{not json")
    except ValueError as err:
        assert not raised_by_us(err)
    try:
        SynthesisSlots(num_classes=10, images_per_class=0, batch_size=1)
    except ValueError as err:
        assert raised_by_us(err)
    else:
        raise AssertionError("SynthesisSlots accepted num_classes 0")
