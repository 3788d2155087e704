"""A damaged synthetic set is named, never a decoder's traceback, and rerunning the synthesis repairs it:
a deleted PNG, a truncated PNG, a truncated soft_labels.pt, an invalid manifest.json, an emptied images/."""

from __future__ import annotations

import json
import shutil

import pytest

from dfnas_pl.data.check_set import check
from dfnas_pl.data.search_data import SearchDataModule
from dfnas_pl.data.synthetic import SyntheticImageDataset
from tests.conftest import run_cli, synthesize

SMALL = {"rounds": 2, "images_per_class": 1, "batch_size": 10, "iterations": 6}


@pytest.fixture()
def made(tmp_path):
    out = tmp_path / "syn"
    synthesize(out, **SMALL)
    return out


def pngs(root):
    return sorted(root.glob("images/*/*.png"))


def test_a_sound_set_checks_clean_and_records_hashes(made):
    assert check(made) == []
    proc = run_cli("check", str(made))
    assert proc.returncode == 0 and "is sound: 20 images" in proc.stdout


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_damaged_image_is_named_and_the_synthesis_command_repairs_it(made, damage):
    victim = pngs(made)[3]
    original = victim.read_bytes()
    if damage == "deleted":
        victim.unlink()
    else:
        victim.write_bytes(original[: len(original) // 2])
    rel = str(victim.relative_to(made))
    for opener in (lambda: SyntheticImageDataset(made),
                   lambda: SearchDataModule(source="synthetic", path=str(made)).setup("fit")):
        with pytest.raises(ValueError, match=rf"damaged: {rel}: .*Run the synthesis command"):
            opener()
    problems = check(made)
    assert len(problems) == 1 and problems[0].startswith(rel)
    proc = run_cli("check", str(made), check=False)
    assert proc.returncode == 1 and rel in proc.stderr and "Traceback" not in proc.stderr
    synthesize(made, **SMALL)  # the same command again
    assert check(made) == [] and victim.read_bytes() == original  # remade bit-identically (same seed)
    assert len(SyntheticImageDataset(made)) == 20


def test_content_changed_at_the_same_size_is_caught_by_the_hash(made):
    victim = pngs(made)[0]
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert any("sha256" in p for p in check(made))


def test_broken_manifest_soft_labels_and_empty_images_get_clear_errors(made, tmp_path):
    for name, damage, expected in [
        ("manifest.json", lambda p: p.write_text("{not json"), r"manifest.json' is not a valid manifest"),
        ("soft_labels.pt", lambda p: p.write_bytes(p.read_bytes()[:100]), r"soft_labels.pt' is unreadable"),
        ("images", lambda p: [shutil.rmtree(d) for d in p.iterdir()], r"damaged: images/: no images"),
    ]:
        copy = tmp_path / f"copy_{name}"
        shutil.copytree(made, copy)
        damage(copy / name)
        with pytest.raises(ValueError, match=expected) as err:
            SyntheticImageDataset(copy)
        assert "Run the synthesis command" in str(err.value)
        proc = run_cli("check", str(copy), check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    json.loads((made / "manifest.json").read_text())  # the original is untouched


def test_damaged_stage_outputs_are_named_or_redone(tmp_path):
    """architecture.json (read by retraining), the pipeline's ledger and any output a driver skips on:
    a damaged file is named with the fix, or kept aside as <name>.corrupt and its stage redone."""
    from dfnas_pl.drivers.pipeline import Pipeline
    from dfnas_pl.search.export import build_from_architecture
    from dfnas_pl.utils.io import readable_json

    arch = tmp_path / "architecture.json"
    arch.write_text('{"format": "dfnas_pl.architecture/1", "choi')
    with pytest.raises(ValueError, match=r"architecture.json' is not valid JSON .* Run the search that wrote it"):
        build_from_architecture(arch)
    assert not readable_json(arch) and not arch.exists()
    assert (tmp_path / "architecture.json.corrupt").read_text().startswith('{"format"')  # kept, not deleted
    run = tmp_path / "run"
    run.mkdir()
    (run / "stage_seconds.json").write_text("{truncated")
    pipeline = Pipeline(str(run), ["spos"], "s.yaml", {"spos": "x.yaml"}, "r.yaml", {})
    assert pipeline.spent_seconds() == {}  # a damaged ledger is set aside, the run goes on
    pipeline._record_seconds("stage", 1.5)
    assert json.loads((run / "stage_seconds.json").read_text()) == {"stage": 1.5}
    assert (run / "stage_seconds.json.corrupt").exists()


def test_a_damaged_checkpoint_to_resume_from_is_named_with_the_fix(tmp_path, synthetic_set):
    """``--ckpt_path last`` (and an explicit path) on a cut-short checkpoint: one clear message naming the
    file, the damage and the two ways on, instead of an OSError from inside fsspec."""
    import io

    import torch

    from tests.stages.test_search_cli import search_args

    out = tmp_path / "spos"
    ckpt = out / "checkpoints"
    ckpt.mkdir(parents=True)
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, buffer)
    (ckpt / "epoch=0-step=2.ckpt").write_bytes(buffer.getvalue())
    (ckpt / "last.ckpt").write_bytes(buffer.getvalue()[:3000])  # cut short
    for given in ("last", str(ckpt / "last.ckpt")):
        proc = run_cli(*search_args("spos", out, synthetic_set, 2, 2), "--ckpt_path", given, check=False)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert f"The checkpoint '{ckpt / 'last.ckpt'}' is damaged" in proc.stderr
        assert "start this stage over" in proc.stderr and "epoch=0-step=2.ckpt" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert (ckpt / "last.ckpt").stat().st_size == 3000  # nothing deleted
