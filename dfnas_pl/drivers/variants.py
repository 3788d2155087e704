"""A study's variants of a stage, checked against the stage's class before anything runs.

A variant is a mapping of the stage module's constructor arguments (``{label_calibration: false, r_feature:
0.1}``) or, as the older study configs write it, a list of command-line arguments (``[--model.init_args.r_feature,
"0.1"]``). Either way every model argument it names is checked against the signature of the class that the
stage's config builds, so a renamed or misspelt setting stops the driver before its first run (with the names
it may have meant), not hours later in the first stage that reads it.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import re
from pathlib import Path
from typing import Any

import yaml

Variant = list[str] | dict[str, Any]
_MODEL_ARG = re.compile(r"^--model\.init_args\.([A-Za-z_]\w*)(?:[.=]|$)")


def stage_class(config: str) -> type:
    """The LightningModule class a stage config builds (``model.class_path``)."""
    model = (yaml.safe_load(Path(config).read_text()) or {}).get("model", {})
    path = model.get("class_path") if isinstance(model, dict) else None
    if not path:
        raise ValueError(f"The stage config '{config}' names no model.class_path, so its variants cannot be checked.")
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    return v if isinstance(v, str) else json.dumps(v)


def as_arguments(variant: Variant) -> list[str]:
    """Command-line arguments of a variant (a mapping becomes ``--model.init_args.<name> <value>`` pairs)."""
    if isinstance(variant, dict):
        return [a for k, v in variant.items() for a in (f"--model.init_args.{k}", _value(v))]
    return [str(a) for a in variant]


def check_variants(variants: dict[str, Variant], config: str, where: str) -> dict[str, list[str]]:
    """Every variant as command-line arguments, after checking each model argument it names against the
    constructor of ``config``'s class; an unknown name is a ``ValueError`` that names the variant, the
    setting, the class and the close names."""
    cls = stage_class(config)
    known = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
    out = {}
    for name, variant in variants.items():
        args = as_arguments(variant)
        for arg in args:
            m = _MODEL_ARG.match(arg)
            if m and m.group(1) not in known:
                close = difflib.get_close_matches(m.group(1), known, n=3)
                raise ValueError(f"{where} '{name}': '{m.group(1)}' is not a setting of {cls.__module__}.{cls.__name__} "
                                 f"(the class of {config}){'; did you mean ' + ', '.join(close) + '?' if close else ''} "
                                 f"Fix the name in the config (its settings: python -m dfnas_pl fit --config {config} "
                                 f"--print_config).")
        out[name] = args
    return out
