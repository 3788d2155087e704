"""W&B defaults shared by every stage: offline unless the user is logged in, and one W&B group per
pipeline run (each stage keeps its own ``job_type`` from its config).

Offline by default because most runs of a data-free pipeline happen where no credentials are set up
(clusters, CI, this CPU box); ``wandb login`` (or ``WANDB_API_KEY``) is enough to go online, and an
explicit ``WANDB_MODE`` always wins. Offline runs land in ``<save_dir>/wandb/offline-run-*``;
``wandb sync <dir>`` uploads them later.
"""

from __future__ import annotations

import json
import netrc
import os
import uuid
from collections.abc import MutableMapping
from pathlib import Path

from dfnas_pl.utils.io import atomic_write_json


def logged_in(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Whether W&B credentials exist here (``WANDB_API_KEY`` or a ``wandb login`` netrc entry)."""
    if environ.get("WANDB_API_KEY"):
        return True
    host = environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0].split(":")[0]
    try:
        return netrc.netrc(environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def default_wandb_mode(environ: MutableMapping[str, str] = os.environ) -> str:
    """Set ``WANDB_MODE=offline`` unless the user chose a mode or is logged in; return the mode."""
    if "WANDB_MODE" not in environ and not logged_in(environ):
        environ["WANDB_MODE"] = "offline"
    return environ.get("WANDB_MODE", "online")


def pipeline_group(run_dir: Path) -> str:
    """The W&B group of a pipeline run: ``WANDB_RUN_GROUP`` if the user set one, else a name made once
    per run dir and kept in ``<run_dir>/wandb_group.json``, so a resumed pipeline stays in its group."""
    if os.environ.get("WANDB_RUN_GROUP"):
        return os.environ["WANDB_RUN_GROUP"]
    state = run_dir / "wandb_group.json"
    if state.is_file():
        return json.loads(state.read_text())["group"]
    group = f"{run_dir.name}-{uuid.uuid4().hex[:8]}"
    atomic_write_json(state, {"group": group})
    return group
