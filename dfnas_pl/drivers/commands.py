"""What every driver shares: its command line, made from its class's signature (an option is written
once), and what its result file records so that a reader can make the numbers again (the command line and
the versions it ran with)."""

from __future__ import annotations

import dataclasses
import inspect
import os
import platform
import sys
import typing
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser


def recorded_command(driver: str, leave_out: str | None = None, argv: list[str] | None = None) -> str:
    """``python -m dfnas_pl <driver> ...`` as invoked (``sys.argv`` unless ``argv`` is given; a leading driver
    name is dropped). ``leave_out`` names an option that only rewrites results from the records
    (``--table_only``, ``--limit 0``): it is not how the numbers were made, so it and its value are dropped."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [driver]:
        args = args[1:]
    kept, skip = [], False
    for i, arg in enumerate(args):
        if skip:
            skip = False
        elif leave_out is not None and arg == leave_out:
            skip = i + 1 < len(args) and not args[i + 1].startswith("--")
        elif leave_out is None or not arg.startswith(leave_out + "="):
            kept.append(arg)
    return f"python -m dfnas_pl {driver} " + " ".join(kept)


def versions() -> dict[str, str]:
    import lightning
    import torch
    import torchmetrics
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "lightning": lightning.__version__, "torchmetrics": torchmetrics.__version__,
            "platform": platform.platform(), "cpus": str(os.cpu_count())}


REAL_DATA = {"class_path": "dfnas_pl.data.FashionMNISTDataModule", "init_args": {"root": "data"}}
"""The drivers' default real data: Fashion-MNIST from ``data/`` (a data module spec, read only)."""


# -- a driver's command line is its class's signature --------------------------------------------------

def driver_parser(cls: type, prog: str, config_help: str = "a YAML of these options") -> ArgumentParser:
    """The command line of a driver class: every option is a constructor argument (its type, its default,
    and its help from the docstring's ``Args:``), as LightningCLI builds a stage's options from its module,
    so an option is written once. ``--config`` reads a YAML of the same names."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    module_doc = sys.modules[cls.__module__].__doc__ or ""
    p = ArgumentParser(prog=prog, description=module_doc.split("\n\n")[0])
    p.add_argument("--config", action=ActionConfigFile, help=config_help)
    p.add_class_arguments(cls, fail_untyped=True)
    return p


def driver_from_args(cls: type, argv: list[str] | None, prog: str) -> Any:
    """Parse ``argv`` with :func:`driver_parser` and build the driver. A dataclass option is handed over as
    the dataclass; a data module option (``class_path`` + ``init_args``, checked against its class when
    parsed) as that mapping, because each stage process builds its own data module from it."""
    from dfnas_pl.utils.settings import check_paths

    cfg = driver_parser(cls, prog).parse_args(argv)
    check_paths(cfg)
    hints = typing.get_type_hints(cls.__init__)
    kwargs = {}
    for name in inspect.signature(cls.__init__).parameters:
        if name == "self" or name not in cfg:
            continue
        value, hint = cfg[name], hints.get(name)
        if dataclasses.is_dataclass(hint):
            value = as_dataclass(hint, value)
        kwargs[name] = _plain(value)
    return cls(**kwargs)


def as_dataclass(cls: type, value: Any) -> Any:
    """A parsed dataclass option (a jsonargparse Namespace or a mapping) as the dataclass itself."""
    if isinstance(value, cls):
        return value
    fields = value if isinstance(value, dict) else value.as_dict()
    return cls(**{k: _tuples(v) for k, v in fields.items()})


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list | tuple) else v


def _plain(value: Any) -> Any:
    """Namespaces (a mapping option, a data module spec) as plain dicts, recursively."""
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
