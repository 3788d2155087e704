"""`--help` and `--print_config` read well only if every argument a config can set is documented:
jsonargparse takes each argument's help text from the class docstring (Google style). A docstring
that opens with ``Args:`` on its first line parses to no arguments at all, silently."""

import importlib
import inspect
import re
from pathlib import Path

import docstring_parser
import pytest

from tests.conftest import REPO, run_cli

CLASS_PATHS = sorted({m for top in ("experiments", "studies") for cfg in (REPO / top).rglob("*.yaml")
                      for m in re.findall(r"class_path:\s*((?:dfnas_pl|callbacks)\.[\w.]+)", Path(cfg).read_text())})


def documented_arguments(cls) -> set[str]:
    names = set()
    for klass in cls.__mro__:
        for doc in (klass.__doc__, getattr(klass.__init__, "__doc__", None)):
            if doc:
                names |= {p.arg_name for p in docstring_parser.parse(doc).params}
    return names


def test_the_configs_name_our_classes():
    assert {"dfnas_pl.search.ProxylessSearch", "dfnas_pl.retrain.RetrainClassifier",
            "callbacks.WandbArtifacts"} <= set(CLASS_PATHS)


@pytest.mark.parametrize("class_path", CLASS_PATHS)
def test_every_configurable_argument_has_help_text(class_path):
    module, name = class_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    arguments = [a for a, p in inspect.signature(cls.__init__).parameters.items()
                 if a != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    missing = sorted(set(arguments) - documented_arguments(cls))
    assert not missing, f"{class_path}: no help text for {missing}; document them under 'Args:' in its docstring"


def test_cli_help_shows_the_argument_descriptions():
    out = run_cli("fit", "--model.help", "dfnas_pl.search.ProxylessSearch").stdout
    assert re.search(r"--model\.kd_t_squared \{true,false\}\s+scale KD by T\^2", out)


def test_nothing_in_the_repository_cites_notes_that_are_not_in_it():
    """Our reference notes live outside the repository; a reader of the code cannot follow a citation."""
    import subprocess

    from tests.conftest import REPO

    names = ["PAPER" + ".md", "DESIGN" + ".md"]
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    citing = [f for f in tracked if f.endswith((".py", ".md", ".yaml", ".cfg", ".sh", ".json"))
              and any(n in (REPO / f).read_text(errors="ignore") for n in names)]
    assert citing == []


def test_library_messages_a_user_cannot_act_on_are_silenced_and_others_are_not(caplog):
    import logging
    import warnings

    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    from dfnas_pl.quiet import quiet_library_noise

    quiet_library_noise()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        quiet_library_noise()  # after simplefilter: the filters go first again
        warnings.warn("`max_epochs` was not set. Setting it to 1000 epochs.", UserWarning, stacklevel=1)
        warnings.warn("Something the user must know", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["Something the user must know"]
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try litlogger")
        rank_zero_info("GPU available: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False"]
