"""``bench/results.md`` is shared by the benchmarks: each owns one ``## `` section and replaces only it."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from dfnas_pl.utils.io import atomic_write_bytes


def machine() -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, torch {torch.__version__}, "
            f"{platform.system()} {platform.release()}")


def write_section(path: Path, lines: list[str]) -> None:
    """Replace the section whose heading is ``lines[0]`` (or append it), keeping the other sections."""
    heading = lines[0]
    old = path.read_text().splitlines() if path.exists() else []
    if heading in old:
        start = old.index(heading)
        end = next((i for i in range(start + 1, len(old)) if old[i].startswith("## ")), len(old))
        new = old[:start] + lines + [""] + old[end:]
    else:
        new = old + ([""] if old and old[-1] else []) + lines
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, ("\n".join(new).rstrip("\n") + "\n").encode())
