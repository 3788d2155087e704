"""What a driver's result file records so that a reader can make the numbers again: the command line and
the versions it ran with."""

from __future__ import annotations

import os
import platform
import sys


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
