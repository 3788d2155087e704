"""The synthesis-sweep driver at toy size: sets per variant, students per seed through the CLI, the
table with intervals and overlap, and resume without redoing finished students."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from dfnas_pl.drivers.synthesis_sweep import t_interval
from tests.conftest import run_cli


def test_t_interval_matches_the_textbook_value():
    lo, hi = t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, n 3: 2 +- 4.303 / sqrt(3)
    assert lo == pytest.approx(2 - 4.303 / 3 ** 0.5) and hi == pytest.approx(2 + 4.303 / 3 ** 0.5)
    assert all(v != v for v in t_interval([1.0]))  # one seed: no interval (NaN)


@pytest.mark.slow
def test_sweep_runs_variants_and_seeds_and_resumes(tmp_path, fmnist_root):
    tiny = ["--data.init_args.images_per_class", "2", "--data.init_args.batch_size", "20",
            "--model.init_args.iterations", "4", "--model.init_args.warmup_iterations", "1", "--model.init_args.rounds", "1",
            "--model.init_args.quality_gate", "false"]
    table = tmp_path / "table"
    args = ["synthesis-sweep", "--run_dir", str(tmp_path / "run"), "--table_dir", str(table),
            "--variants", json.dumps({"default": tiny, "window": [*tiny, "--model.init_args.regional_update", "window"]}),
            "--seeds", "[0, 1]", "--distill_overrides",
            json.dumps(["--trainer.max_epochs", "1", "--data.init_args.batch_size", "8", "--trainer.limit_test_batches", "2",
                        "--data.init_args.eval_data.init_args.root", str(fmnist_root)])]
    first = run_cli(*args, timeout=900)
    assert "4 to run" in first.stdout
    with open(table / "synthesis_sweep.csv") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"default", "window"}
    for r in rows.values():
        assert r["images"] == "20" and r["seeds"] == "2" and len(r["per_seed"].split(" / ")) == 2
        assert float(r["ci_low"]) <= float(r["student_top1_mean"]) <= float(r["ci_high"])
        assert 0.0 <= float(r["student_top1_mean"]) <= 100.0
    assert rows["default"]["overlaps_reference"] == "-" and rows["window"]["overlaps_reference"] in (
        "yes", "no: above", "no: below")
    assert json.loads((tmp_path / "run" / "synthetic_window" / "manifest.json").read_text())["canvas_size"] == 32
    assert (table / "synthesis_sweep.png").stat().st_size > 5_000 and "NaN" not in (table / "synthesis_sweep.json").read_text()
    records = sorted((table / "records").glob("*.json"))
    assert len(records) == 4
    mtimes = [p.stat().st_mtime_ns for p in records]
    again = run_cli(*args, timeout=600)
    assert "4 done, 0 to run" in again.stdout and [p.stat().st_mtime_ns for p in records] == mtimes


def test_every_shipped_variant_is_a_valid_synthesis_config(capsys, monkeypatch):
    from dfnas_pl.cli import DFNASCLI
    from dfnas_pl.drivers.synthesis_sweep import parser

    c = parser().parse_args(["--config", "experiments/fmnist/synthesis_sweep.yaml"])
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
        assert images * rounds == 500, name  # equal image count: variants cost about the same
        mode = extra[extra.index("--model.init_args.regional_update") + 1] if "--model.init_args.regional_update" in extra \
            else "true"
        mode = {"off": "false"}.get(mode, mode)  # YAML reads a bare off as false: the same setting
        assert f"regional_update: {mode}" in printed, name
