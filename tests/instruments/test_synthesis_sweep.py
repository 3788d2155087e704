"""The synthesis-sweep driver at toy size: a set per (variant, seed), students per seed through the CLI,
the table with intervals, overlap and the seed-paired difference, and resume without redoing finished
students; the table's arithmetic on hand-made records."""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

import pytest

from dfnas_pl.drivers.synthesis_sweep import SynthesisSweep, sweep_command
from dfnas_pl.stats import t_interval
from dfnas_pl.utils.io import atomic_write_json
from tests.conftest import REPO, run_cli

# the stage configs the sweep checks its variants against (no stage runs in these table tests)
SYNTHESIS, DISTILL = str(REPO / "experiments/fmnist/synthesize_pixels.yaml"), str(REPO / "experiments/fmnist/distill_check.yaml")


def test_t_interval_matches_the_textbook_value():
    lo, hi = t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, n 3: 2 +- 4.303 / sqrt(3)
    assert lo == pytest.approx(2 - 4.303 / 3 ** 0.5) and hi == pytest.approx(2 + 4.303 / 3 ** 0.5)
    assert all(v != v for v in t_interval([1.0]))  # one seed: no interval (NaN)
    lo, hi = t_interval([float(i % 2) for i in range(13)])  # 12 degrees of freedom: t = 2.179, not the normal's 1.96
    assert (hi - lo) / 2 == pytest.approx(2.179 * statistics.stdev([i % 2 for i in range(13)]) / 13 ** 0.5)


@pytest.mark.parametrize("set_per_seed", [True, False])
def test_table_pairs_seeds_and_averages_the_quality_of_each_variants_sets(tmp_path, set_per_seed):
    sweep = SynthesisSweep(str(tmp_path / "run"), str(tmp_path / "table"),
                           {"plain": [], "calibration": [], "zoom": [], "calibration_zoom": []}, [0, 1, 2], SYNTHESIS,
                           DISTILL, reference="plain", set_per_seed=set_per_seed,
                           effects={"calibration": [("calibration", "plain"), ("calibration_zoom", "zoom")],
                                    "zoom": [("zoom", "plain"), ("calibration_zoom", "calibration")]})
    # calibration is 1 point better on every seed although the seeds spread by 10 points: a paired difference
    # of exactly +1 with no width, while the two unpaired intervals overlap; zoom is -3, +1, +2 points
    top1 = {"plain": [0.50, 0.60, 0.70], "calibration": [0.51, 0.61, 0.71],
            "zoom": [0.47, 0.61, 0.72], "calibration_zoom": [0.48, 0.62, 0.73]}
    bn = {"plain": [1.0, 2.0, 3.0], "calibration": [4.0, 4.0, 4.0], "zoom": [1.0] * 3, "calibration_zoom": [1.0] * 3}
    for variant, accs in top1.items():
        for seed, acc in enumerate(accs):
            atomic_write_json(sweep.record(variant, seed), {"variant": variant, "seed": seed, "test_top1": acc})
            atomic_write_json(Path(sweep.set_path(variant, seed)) / "manifest.json", {
                "images": 500, "wall_time_s": 60.0 * (seed + 1),
                "quality": {"teacher_top1": 1.0, "bn_distance": bn[variant][seed], "diversity": 0.05}})
    rows = {r["variant"]: r for r in sweep.table()}
    calibrated = rows["calibration"]
    assert calibrated["paired_difference"] == pytest.approx(1.0)
    assert calibrated["difference_low"] == pytest.approx(1.0) and calibrated["difference_high"] == pytest.approx(1.0)
    assert calibrated["overlaps_reference"] == "yes" and rows["plain"]["paired_difference"] != rows["plain"]["paired_difference"]
    # a set per seed: three manifests per variant, averaged; one set: the last manifest written is the set's
    assert rows["plain"]["sets"] == (3 if set_per_seed else 1)
    assert rows["plain"]["bn_distance"] == pytest.approx(2.0 if set_per_seed else 3.0)
    assert rows["plain"]["synthesis_minutes"] == pytest.approx(2.0 if set_per_seed else 3.0)
    effects = {e["effect"]: e for e in sweep.effect_rows()}
    assert effects["calibration"]["difference"] == pytest.approx(1.0) and effects["calibration"]["verdict"] == "helps"
    zoom = effects["zoom"]  # per seed: mean of (zoom - plain, calibration_zoom - calibration) = -3, +1, +2
    assert zoom["per_seed"] == "-3.00 / +1.00 / +2.00" and zoom["difference"] == pytest.approx(0.0)
    assert (zoom["ci_low"], zoom["ci_high"]) == pytest.approx(t_interval([-3.0, 1.0, 2.0]))
    assert zoom["verdict"] == "interval holds 0: not shown either way"


def test_records_carry_what_they_were_made_with(tmp_path):
    """The table is remade from the committed records alone (the sets under runs/ are gone on a fresh
    clone), and a record made with other arguments is not reused under an edited variant's name."""
    variants = {"plain": ["--model.init_args.r_feature", "0.01"], "bn10": ["--model.init_args.r_feature", "0.1"]}
    sweep = SynthesisSweep(str(tmp_path / "run"), str(tmp_path / "table"), variants, [0, 1], SYNTHESIS, DISTILL,
                           reference="plain", set_per_seed=True)
    for variant, accs in {"plain": [0.5, 0.6], "bn10": [0.55, 0.62]}.items():
        for seed, acc in enumerate(accs):
            atomic_write_json(sweep.record(variant, seed), {
                "variant": variant, "seed": seed, "test_top1": acc, **sweep.arguments(variant),
                "set_quality": {"images": 500, "wall_time_s": 120.0, "teacher_top1": 1.0, "bn_distance": 0.4 + seed,
                                "diversity": 0.06}})
    assert not (tmp_path / "run").exists()  # no set, no manifest: everything comes from the records
    rows = {r["variant"]: r for r in sweep.table()}
    assert rows["bn10"]["bn_distance"] == pytest.approx(0.9) and rows["bn10"]["synthesis_minutes"] == pytest.approx(2.0)
    assert rows["bn10"]["paired_difference"] == pytest.approx(3.5)
    sweep.check_records()  # the same arguments: reused

    edited = SynthesisSweep(str(tmp_path / "run"), str(tmp_path / "table"),
                            {**variants, "bn10": ["--model.init_args.r_feature", "1.0"]}, [0, 1], SYNTHESIS, DISTILL,
                            reference="plain")
    with pytest.raises(ValueError, match=r"bn10_seed0.json was made with other synthesis_arguments.*r_feature', '0.1'"
                                         r".*new name, or delete its records"):
        edited.check_records()
    with pytest.raises(ValueError, match="distill_overrides"):
        SynthesisSweep(str(tmp_path / "run"), str(tmp_path / "table"), variants, [0, 1], SYNTHESIS, DISTILL,
                       distill_overrides=["--trainer.max_steps", "320"], reference="plain").check_records()


def test_a_sweep_cut_short_tables_the_seeds_it_finished(tmp_path):
    """A new variant added to a finished sweep (or one still running) has fewer seeds: its paired difference
    and the effects use the seeds both sides have, and the table says it is partial."""
    sweep = SynthesisSweep(str(tmp_path / "run"), str(tmp_path / "table"), {"plain": [], "bn10": [], "bn0": []},
                           [0, 1, 2], SYNTHESIS, DISTILL, reference="plain", set_per_seed=True,
                           effects={"BN weight": [("bn10", "plain")], "BN loss": [("plain", "bn0")]})
    quality = {"images": 500, "wall_time_s": 60.0, "teacher_top1": 1.0, "bn_distance": 0.4, "diversity": 0.06}
    done = {"plain": [0.50, 0.60, 0.70], "bn10": [0.55, 0.62], "bn0": []}  # bn10: seeds 0, 1; bn0: not started
    for variant, accs in done.items():
        for seed, acc in enumerate(accs):
            atomic_write_json(sweep.record(variant, seed), {"variant": variant, "seed": seed, "test_top1": acc,
                                                            "set_quality": quality})
    rows = sweep.write_table(quiet=True)
    assert [r["variant"] for r in rows] == ["plain", "bn10"]  # bn0 has nothing to show yet
    bn10 = rows[1]
    assert bn10["per_seed"] == "55.00 / 62.00 / -" and bn10["seeds"] == 2
    assert bn10["paired_difference"] == pytest.approx(3.5)  # (+5 + 2) / 2: seed 2 of plain is left out
    assert (bn10["difference_low"], bn10["difference_high"]) == pytest.approx(t_interval([5.0, 2.0]))
    (effect,) = sweep.effect_rows()  # "BN loss" has no seed with both sides yet
    assert effect["effect"] == "BN weight" and effect["per_seed"] == "+5.00 / +2.00 / -"  # seed 2 named missing
    md = (tmp_path / "table" / "synthesis_sweep.md").read_text()
    assert "partial: 5 of 9 (variant, seed) records" in md and "| bn10 |" in md and "| bn0 |" not in md


def test_the_recorded_command_is_the_one_that_makes_the_records():
    cmd = "python -m dfnas_pl synthesis-sweep --config c.yaml"
    assert sweep_command(["--config", "c.yaml", "--table_only", "true"]) == cmd
    assert sweep_command(["--table_only=true", "--config", "c.yaml"]) == cmd
    assert sweep_command(["--config", "c.yaml", "--table_only"]) == cmd


def test_an_effect_naming_an_unknown_variant_is_refused(tmp_path):
    with pytest.raises(ValueError, match="effect 'calibration'.*unknown: calibrated"):
        SynthesisSweep(str(tmp_path), str(tmp_path), {"plain": [], "calibration": []}, [0], SYNTHESIS, DISTILL,
                       reference="plain", effects={"calibration": [("calibrated", "plain")]})


@pytest.mark.slow
def test_sweep_runs_variants_and_seeds_and_resumes(tmp_path, fmnist_root):
    tiny = ["--data.init_args.images_per_class", "2", "--data.init_args.batch_size", "20",
            "--model.init_args.iterations", "4", "--model.init_args.warmup_iterations", "1", "--model.init_args.rounds", "1",
            "--model.init_args.quality_gate", "false"]
    table = tmp_path / "table"
    args = ["synthesis-sweep", "--run_dir", str(tmp_path / "run"), "--table_dir", str(table), "--set_per_seed", "true",
            "--synthesis_config", SYNTHESIS,  # the window mode is per-image optimisation's
            "--variants", json.dumps({"default": tiny, "window": [*tiny, "--model.init_args.regional_update", "window"]}),
            "--seeds", "[0, 1]", "--effects", json.dumps({"window": [["window", "default"]]}), "--real_images", "20",
            "--real_data", json.dumps({"class_path": "dfnas_pl.data.FashionMNISTDataModule",
                                       "init_args": {"root": str(fmnist_root)}}), "--distill_overrides",
            json.dumps(["--trainer.max_epochs", "1", "--data.init_args.batch_size", "8", "--trainer.limit_test_batches", "2",
                        "--data.init_args.eval_data.init_args.root", str(fmnist_root)])]
    first = run_cli(*args, timeout=900)
    assert "6 to run" in first.stdout
    with open(table / "synthesis_sweep.csv") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"default", "window", "real_20"}
    real = rows.pop("real_20")  # the same student on 20 real images (2 per class), the teacher's soft labels
    assert real["images"] == "20" and real["sets"] == "0" and real["seeds"] == "2"
    real0 = json.loads((table / "records" / "real_20_seed0.json").read_text())
    assert real0["synthetic_set"] is None and real0["real_data"]["init_args"]["root"] == str(fmnist_root)
    for r in rows.values():
        assert r["images"] == "20" and r["seeds"] == "2" and r["sets"] == "2" and len(r["per_seed"].split(" / ")) == 2
        assert float(r["ci_low"]) <= float(r["student_top1_mean"]) <= float(r["ci_high"])
        assert 0.0 <= float(r["student_top1_mean"]) <= 100.0
    assert rows["default"]["overlaps_reference"] == "-" and rows["window"]["overlaps_reference"] in (
        "yes", "no: above", "no: below")
    per_seed = [float(a) - float(b) for a, b in zip(rows["window"]["per_seed"].split(" / "),
                                                     rows["default"]["per_seed"].split(" / "))]
    assert float(rows["window"]["paired_difference"]) == pytest.approx(sum(per_seed) / 2, abs=0.01)
    with open(table / "synthesis_sweep_effects.csv") as f:
        (effect,) = list(csv.DictReader(f))
    assert effect["effect"] == "window" and float(effect["difference"]) == pytest.approx(sum(per_seed) / 2, abs=0.01)
    # every seed its own set, made with that seed: same settings, other seed -> other images
    runs = tmp_path / "run"
    for seed in (0, 1):
        manifest = json.loads((runs / f"synthetic_window_seed{seed}" / "manifest.json").read_text())
        assert manifest["canvas_size"] == 32 and manifest["seed"] == seed
    first_image = sorted((runs / "synthetic_default_seed0").glob("images/*/*.png"))[0]
    assert first_image.read_bytes() != (runs / "synthetic_default_seed1" / first_image.relative_to(
        runs / "synthetic_default_seed0")).read_bytes()
    assert (table / "synthesis_sweep.png").stat().st_size > 5_000 and "NaN" not in (table / "synthesis_sweep.json").read_text()
    records = sorted((table / "records").glob("*.json"))
    assert len(records) == 6
    window0 = json.loads((table / "records" / "window_seed0.json").read_text())
    assert window0["synthesis_arguments"][-1] == "window" and window0["set_quality"]["images"] == 20
    mtimes = [p.stat().st_mtime_ns for p in records]
    again = run_cli(*args, timeout=600)
    assert "6 done, 0 to run" in again.stdout and [p.stat().st_mtime_ns for p in records] == mtimes
    (records[0]).unlink()  # a record lost (or a sweep cut short): --table_only tables the rest, runs nothing
    table_only = run_cli(*args, "--table_only", "true", timeout=600)
    assert "partial: 5 of 6 (variant, seed) records" in table_only.stdout and not records[0].exists()


@pytest.mark.parametrize("sweep", ["synthesis_sweep", "synthesis_sets", "synthesis_bn_weight", "synthesis_budget"])
def test_every_shipped_variant_is_a_valid_synthesis_config(capsys, monkeypatch, sweep):
    from dfnas_pl.cli import DFNASCLI
    from dfnas_pl.drivers.synthesis_sweep import parser

    c = parser().parse_args(["--config", f"studies/synthesis_quality/{sweep}.yaml"])
    assert c.reference in c.variants and len(c.seeds) >= 3
    monkeypatch.setattr(sys, "argv", ["dfnas_pl"])  # the CLI parses args=..., not pytest's own argv
    for name, extra in c.variants.items():
        with pytest.raises(SystemExit) as done:  # --print_config parses everything, then exits 0
            DFNASCLI(args=["fit", "--config", c.synthesis_config, *extra, "--print_config"])
        assert done.value.code in (0, None), name
        printed = capsys.readouterr().out
        images = 10 * (int(extra[extra.index("--data.init_args.images_per_class") + 1])
                       if "--data.init_args.images_per_class" in extra else 25)
        rounds = int(extra[extra.index("--model.init_args.rounds") + 1]) if "--model.init_args.rounds" in extra else 2
        if sweep == "synthesis_budget":  # the cost curve: each variant makes the image count its name says
            assert images * rounds == int(name.removeprefix("images_")), name
        else:
            assert images * rounds == 500, name  # equal image count: variants cost about the same
        mode = extra[extra.index("--model.init_args.regional_update") + 1] if "--model.init_args.regional_update" in extra \
            else "true"
        mode = {"off": "false"}.get(mode, mode)  # YAML reads a bare off as false: the same setting
        assert f"regional_update: {mode}" in printed, name
        if sweep == "synthesis_bn_weight":  # it shares synthesis_sets' records: the same arguments per name
            sets = parser().parse_args(["--config", "studies/synthesis_quality/synthesis_sets.yaml"])
            assert extra == sets.variants[name] and c.table_dir == sets.table_dir and c.run_dir == sets.run_dir, name
        for flag in ("r_feature", "first_bn_multiplier"):  # the BN-loss variants reach the module as given
            if f"--model.init_args.{flag}" in extra:
                assert f"{flag}: {float(extra[extra.index(f'--model.init_args.{flag}') + 1])}" in printed, name
    with pytest.raises(SystemExit) as done:  # the students' overrides parse too
        DFNASCLI(args=["fit", "--config", c.distill_config, *c.distill_overrides, "--print_config"])
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    if sweep == "synthesis_budget":
        assert "max_steps: 320" in printed and "max_epochs: -1" in printed
