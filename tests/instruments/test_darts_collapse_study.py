"""The DARTS-collapse study (studies/darts_collapse/run.py) keeps each search setting's records apart: a changed search is never
counted under another setting's name (checked before anything runs)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("darts_collapse", REPO / "studies" / "darts_collapse" / "run.py")
darts_collapse = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(darts_collapse)


def test_search_overrides_need_a_tag_of_their_own(tmp_path):
    with pytest.raises(SystemExit, match="give them a --tag"):
        darts_collapse.main(["--synthetic", str(tmp_path), "--out", str(tmp_path / "out"),
                             "--search_overrides=--model.init_args.alpha_lr 0.03"])


def test_a_tagged_record_made_with_other_overrides_is_refused(tmp_path):
    out = tmp_path / "out"
    record = out / "records" / "real_seed0_fast.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"source": "real", "seed": 0, "tag": "fast",
                                  "search_overrides": ["--model.init_args.alpha_lr", "0.03"], "exports": {}}))
    with pytest.raises(SystemExit, match=r"real_seed0_fast.json was made with search overrides.*alpha_lr', '0.03'.*"
                                         r"another --tag"):
        darts_collapse.main(["--synthetic", str(tmp_path), "--out", str(out), "--sources", "real", "--seeds", "0",
                             "--tag", "fast", "--search_overrides=--model.init_args.alpha_lr 0.3"])
    # the record is untouched
    assert json.loads(record.read_text())["search_overrides"] == ["--model.init_args.alpha_lr", "0.03"]


def record(source: str, seed: int, tag: str, plain: dict[str, float], guard: dict[str, float]) -> dict:
    export = lambda top1: {"parameter_free_normal": 2, "flops": 1, "params": 1, "normal": [], "top1": top1}  # noqa: E731
    return {"source": source, "seed": seed, "tag": tag, "search_overrides": [] if not tag else ["--x", "1"],
            "per_epoch": [{"epoch": 0, "parameter_free_normal_unguarded": 4, "alpha_entropy_normal": 2.0}],
            "exports": {"plain": export(plain), "guard2": export(guard)}, "seconds": 1.0}


def test_summary_pairs_exports_by_search_and_retraining_seed(tmp_path):
    """The guard is compared with the plain export of the same search and retraining seed, and one setting with
    another on the same (search seed, retraining seed): a pair one side lacks is left out, not averaged in."""
    out = tmp_path / "out"
    (out / "records").mkdir(parents=True)
    shipped = [record("real", 0, "", {"0": 0.80, "1": 0.81}, {"0": 0.82, "1": 0.84}),
               record("real", 1, "", {"0": 0.70, "1": 0.71, "2": 0.99}, {"0": 0.72, "1": 0.72})]
    tagged = [record("real", 0, "fast", {"0": 0.81, "1": 0.82}, {"0": 0.80, "1": 0.80}),
              record("real", 1, "fast", {"0": 0.71, "1": 0.72}, {"0": 0.70, "1": 0.70})]
    for r in shipped + tagged:
        name = darts_collapse.tagged(f"real_seed{r['seed']}", r["tag"])
        (out / "records" / f"{name}.json").write_text(json.dumps(r))
    darts_collapse.main(["--synthetic", str(tmp_path), "--out", str(out), "--sources", "real", "--retrain_seeds",
                         "0", "1", "--tag", "fast", "--search_overrides=--x 1", "--compare_with", ""])
    diffs = json.loads((out / "darts_collapse_fast.json").read_text())["paired_differences"]
    assert diffs["real: guard2 - plain (same search)"]["mean"] == pytest.approx(-1.5)
    assert diffs["real: plain, fast - shipped"]["mean"] == pytest.approx(1.0)  # seed 1's retraining seed 2 is unpaired
    assert diffs["real: plain, fast - shipped"]["n"] == 4
    assert diffs["real: guard2, fast - shipped"]["mean"] == pytest.approx(-2.5)
    assert "guard2, fast - shipped: -2.50 [" in (out / "darts_collapse_fast.md").read_text()
