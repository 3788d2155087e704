"""Files moved between homes (README -> docs/, benchmarks/ -> studies/): a relative link in a document that
no longer points at a file is a reader's dead end, so every one is checked."""

import re
import subprocess
from pathlib import Path

from tests.conftest import REPO


def documents() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True, check=True)
    return [REPO / f for f in listed.stdout.split() if "/records/" not in f and "_jobs/" not in f]


def test_every_relative_link_in_a_document_points_at_a_file():
    docs = documents()
    assert any(d.name == "README.md" and d.parent == REPO for d in docs)
    dead = [(str(d.relative_to(REPO)), target) for d in docs
            for target in re.findall(r"\]\(([^)#\s]+)", d.read_text())
            if not target.startswith(("http://", "https://", "mailto:")) and not (d.parent / target).exists()]
    assert not dead, f"links to nothing (relative to the document's folder): {dead}"
