"""Atomic file writes: a killed process leaves either the old file or the new one, never half of one.

Every file that a later stage or a resumed run trusts goes through here.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

_UMASK = os.umask(0)
os.umask(_UMASK)


# The temporary that atomic_write_bytes makes beside ``<name>``: ``.<name>.<8 random characters>.tmp``
# (tempfile.mkstemp's random part), so a killed writer's leftovers can be told from a user's own files.
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file in the same folder, fsync it, then rename it over ``path``.

    A writer killed with SIGKILL between the two leaves the temporary behind (no handler runs); the next
    writer of the directory removes it (:func:`remove_stale_temporaries`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def remove_stale_temporaries(root: str | os.PathLike, other_writers: str | None = None) -> int:
    """Delete the temporaries of :func:`atomic_write_bytes` under ``root`` (any depth); returns how many.

    Only for the directory's one writer (it holds ``root``'s lock, dfnas_pl.utils.locking), before it writes:
    any temporary there then belongs to a writer that was killed mid-write, and the file it was writing is
    either intact (the old version) or absent, so nothing of value is lost. A subfolder holding a file named
    ``other_writers`` (another writer's lock) is that writer's to clean, and may be in use: it is skipped."""
    removed = 0
    for folder, subfolders, names in os.walk(root):
        if other_writers is not None:
            subfolders[:] = [d for d in subfolders if not os.path.exists(os.path.join(folder, d, other_writers))]
        for name in names:
            path = os.path.join(folder, name)
            if _TEMPORARY.match(name) and not os.path.islink(path):
                try:
                    os.unlink(path)
                    removed += 1
                except FileNotFoundError:  # gone meanwhile (its writer finished after all): nothing to do
                    pass
    return removed


def strict_json(obj: Any) -> Any:
    """``obj`` with every NaN / Infinity replaced by ``null``: strict JSON, which most readers require
    (Python's json module would write the non-standard ``NaN``)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Strict JSON (non-finite numbers become ``null``; callers that must say so add their own flag), atomically."""
    text = json.dumps(strict_json(obj), indent=2, sort_keys=False, default=str, allow_nan=False)
    return atomic_write_bytes(path, (text + "\n").encode())


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """A JSON file we wrote, or a ValueError that names the file, what is wrong and ``fix``."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"'{path}' is not valid JSON ({err}): the file is damaged. {fix}") from None


def readable_json(path: str | os.PathLike) -> bool:
    """True when ``path`` exists and parses: a driver redoes a stage whose output file is damaged
    (the damaged file is kept beside it as ``<name>.corrupt`` - nothing is deleted)."""
    path = Path(path)
    if not path.exists():
        return False
    try:
        json.loads(path.read_text())
        return True
    except (json.JSONDecodeError, UnicodeDecodeError):
        os.replace(path, path.with_name(path.name + ".corrupt"))
        print(f"'{path}' was damaged (not valid JSON): kept as {path.name}.corrupt, redoing the stage that writes it.")
        return False


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def check_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """Create ``path`` if needed and prove we can write there, before any expensive work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise PermissionError(
            f"The {what} directory '{path}' is not writable ({err.strerror}). "
            f"Choose another location in the config (or fix its permissions) and run again."
        ) from err
    return path
