"""The synthetic sets the drivers compare are spelled out in full, so a change of the synthesis config's
defaults (they follow the measurements) cannot silently change what a committed record or table means."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from dfnas_pl.drivers import paper_table, rank_fidelity, synthesis_sweep
from dfnas_pl.drivers.synthetic_sets import PAPER_METHOD, PIXELS_CONFIG, PLAIN_INVERSION, SHIPPED_DEFAULT
from tests.conftest import run_cli

PINNED = ("--model.init_args.label_calibration", "--model.init_args.regional_update", "--model.init_args.r_feature")


def driver_sets() -> dict[str, list[str]]:
    """Every synthesis argument list a shipped driver config or a driver default makes a set with."""
    sets: dict[str, list[str]] = {}
    sweeps = sorted(Path("studies/synthesis_quality").glob("synthesis_*.yaml"))  # every synthesis-sweep config, new ones too
    assert len(sweeps) >= 5
    for config in sweeps:
        c = synthesis_sweep.parser().parse_args(["--config", str(config)])
        sets.update({f"{config.stem}:{v}": list(a) for v, a in c.variants.items()})
    for name in ("paper_table", "ablation"):
        c = paper_table.parser().parse_args(["--config", f"studies/paper_table/{name}.yaml"])
        sets[f"{name}:synthetic"] = list(c.synthetic_args)
        sets.update({f"{name}:{v}": list(a) for v, a in c.synthesis_variants.items()})
    c = rank_fidelity.parser().parse_args(["--config", "studies/layerwise_groundtruth/rank_fidelity.yaml"])
    sets.update({f"rank_fidelity:{v}": list(a) for v, a in c.synthetic_sets.items()})
    for parse in (paper_table.parser, rank_fidelity.parser):  # the drivers' own defaults
        c = parse().parse_args([])
        for v, a in (getattr(c, "synthesis_variants", None) or c.synthetic_sets).items():
            sets[f"{parse.__module__}:{v}"] = list(a)
    return sets


def value(args: list[str], flag: str) -> str:
    given = args[args.index(flag) + 1]
    return {"off": "false"}.get(given, given)  # YAML and the CLI read off as false: the same setting


def test_every_driver_set_spells_out_calibration_regional_update_and_bn_weight():
    sets = driver_sets()
    assert len(sets) > 30
    unpinned = {name: [f for f in PINNED if f not in args] for name, args in sets.items()}
    assert not {k: v for k, v in unpinned.items() if v}, "spell these out in the config"
    # names mean what they say wherever they appear
    for name, args in sets.items():
        short = name.split(":")[1]
        if name == "synthesis_sweep:default":  # the first sweep's history: the default when it ran (the paper's)
            assert {f: value(args, f) for f in PINNED} == {f: value(PAPER_METHOD, f) for f in PINNED}
        elif short in ("synthetic", "default", "plain"):
            expected = {"synthetic": PAPER_METHOD, "default": SHIPPED_DEFAULT, "plain": PLAIN_INVERSION}[short]
            assert {f: value(args, f) for f in PINNED} == {f: value(expected, f) for f in PINNED}, name


def printed_model(capsys, monkeypatch, *args: str) -> dict:
    from dfnas_pl.cli import DFNASCLI

    monkeypatch.setattr(sys, "argv", ["dfnas_pl"])
    with pytest.raises(SystemExit) as done:
        DFNASCLI(args=["fit", *args, "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]


def test_the_shipped_default_set_is_what_the_synthesis_config_ships(capsys, monkeypatch):
    """SHIPPED_DEFAULT over the drivers' base (per-image optimisation's config) is the shipped config, setting
    for setting: a driver's 'default' row is the set a user gets."""
    shipped = printed_model(capsys, monkeypatch, "--config", "experiments/fmnist/synthesize.yaml")
    rebuilt = printed_model(capsys, monkeypatch, "--config", PIXELS_CONFIG, *SHIPPED_DEFAULT)
    assert rebuilt == shipped
    assert shipped["synthesizer"] == "generator"
    pixels = printed_model(capsys, monkeypatch, "--config", PIXELS_CONFIG)
    assert pixels["synthesizer"] == "pixels"
    # the two configs differ only where the synthesizer does (the loss is the same)
    assert {k for k in shipped if shipped[k] != pixels[k]} == {"synthesizer", "iterations", "warmup_iterations"}
    # and the library's Python defaults are the loss the shipped config uses (a user without a YAML gets the
    # same loss; the class keeps per-image optimisation, whose options are a superset of the generator's)
    import inspect

    from dfnas_pl.inversion import ModelInversion

    defaults = {k: p.default for k, p in inspect.signature(ModelInversion.__init__).parameters.items()}
    assert {k: defaults[k] for k in ("label_calibration", "regional_update", "r_feature")} == \
        {k: shipped[k] for k in ("label_calibration", "regional_update", "r_feature")}
    assert {k: defaults[k] for k in ("synthesizer", "iterations")} == {k: pixels[k] for k in ("synthesizer", "iterations")}


def test_the_drivers_defaults_name_their_sets_against_the_per_image_config():
    """The paper's method and its baselines are per-image: over the shipped (generator) config they would be
    20-step per-image runs, a set nobody asked for."""
    for parse in (paper_table.parser, rank_fidelity.parser):
        assert parse().parse_args([]).synthesis_config == PIXELS_CONFIG
    for config in sorted(Path("studies").rglob("*.yaml")):
        c = yaml.safe_load(config.read_text())
        if isinstance(c, dict) and "synthesis_config" in c:  # every study pins the per-image config (as measured)
            assert c["synthesis_config"] == PIXELS_CONFIG, config


def test_every_study_variant_names_only_settings_the_stage_has():
    """A renamed setting of the synthesis must fail every study config that names it, before any run."""
    from dfnas_pl.drivers.variants import check_variants

    checked = 0
    for config in sorted(Path("studies").rglob("*.yaml")):
        text = config.read_text()
        for key, module in (("variants:", synthesis_sweep), ("synthesis_variants:", paper_table),
                            ("synthetic_sets:", rank_fidelity)):
            if f"\n{key}" not in "\n" + text:
                continue
            c = module.parser().parse_args(["--config", str(config)])
            variants = dict(getattr(c, key.rstrip(":")))
            check_variants(variants, c.synthesis_config, key)
            checked += len(variants)
    assert checked >= 20


def test_a_misspelt_variant_setting_stops_the_driver_before_any_run(tmp_path):
    from dfnas_pl.drivers.variants import check_variants

    with pytest.raises(ValueError, match=r"variant 'typo': 'r_featur' is not a setting of "
                                         r"dfnas_pl.inversion.module.ModelInversion.*did you mean r_feature\?"):
        check_variants({"ok": {"r_feature": 0.1}, "typo": ["--model.init_args.r_featur", "0.1"]},
                       "experiments/fmnist/synthesize.yaml", "variant")
    proc = run_cli("synthesis-sweep", "--config", "studies/synthesis_quality/synthesis_sweep.yaml",
                   "--variants", '{"typo": {"label_calibraton": true}}', "--run_dir", str(tmp_path / "run"),
                   "--table_dir", str(tmp_path / "table"), check=False)
    assert proc.returncode == 2 and "did you mean label_calibration?" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing ran, nothing written


def test_a_variant_mapping_is_the_same_set_as_its_argument_list():
    from dfnas_pl.drivers.variants import check_variants

    both = check_variants({"mapping": {"label_calibration": False, "regional_update": "false", "r_feature": 0.1,
                                       "synthesizer": "generator", "iterations": 20, "warmup_iterations": 2},
                           "list": ["--model.init_args.label_calibration", "false", "--model.init_args.regional_update",
                                    "false", "--model.init_args.r_feature", "0.1", "--model.init_args.synthesizer",
                                    "generator", "--model.init_args.iterations", "20",
                                    "--model.init_args.warmup_iterations", "2"]},
                          PIXELS_CONFIG, "variant")
    assert both["mapping"] == both["list"] == SHIPPED_DEFAULT
