"""The DARTS-collapse benchmark keeps each search setting's records apart: a changed search is never
counted under another setting's name (checked before anything runs)."""

from __future__ import annotations

import json

import pytest

from bench import darts_collapse


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
