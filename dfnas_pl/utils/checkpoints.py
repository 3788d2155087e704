"""A checkpoint a run is asked to resume from is checked before Lightning opens it.

A ``last.ckpt`` cut short (a full disk, a copy interrupted, a file system that lost its tail) otherwise
ends the run with ``OSError: [Errno 22] Invalid argument`` from deep inside fsspec and torch, which names
neither the file nor what to do. Torch checkpoints are zip archives: a damaged one has no readable
central directory or a member whose CRC fails, which ``zipfile`` finds without unpickling anything.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

ZIP_MAGIC = b"PK"


def check_checkpoint(path: str | os.PathLike) -> None:
    """Raise a ValueError naming ``path``, the damage and the fix when the checkpoint is unreadable."""
    path = Path(path)
    if not path.is_file():
        return  # Lightning's own "not found" message names the path already
    with open(path, "rb") as f:
        if f.read(2) != ZIP_MAGIC:
            return  # not a zip checkpoint (e.g. torch's legacy format): leave it to torch
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
        if broken is None:
            return
        reason = f"member '{broken}' fails its CRC check"
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        reason = f"{type(err).__name__}: {err}"
    others = [p.name for p in sorted(path.parent.glob("*.ckpt"), key=lambda p: p.stat().st_mtime) if p != path]
    instead = (f", or resume from another checkpoint in that folder ({', '.join(others)}; newest last) with "
               f"--ckpt_path {path.parent / others[-1]}") if others else ""
    raise ValueError(f"The checkpoint '{path}' is damaged ({reason}; {path.stat().st_size} bytes), so the run cannot "
                     f"resume from it. Move it away to start this stage over (mv '{path}' '{path}.corrupt')"
                     f"{instead}.")
