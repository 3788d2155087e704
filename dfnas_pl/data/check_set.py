"""``python -m dfnas_pl check <dir>``: verify a synthetic set - manifest, soft labels, every batch record,
every image's existence, size and sha256 - and list each problem with its file and the fix.

Exit status 0 when the set is sound, 1 when it is damaged (the synthesis command that made it repairs it:
a resumed synthesis remakes every batch whose files are missing or corrupt), 2 when it is not a set.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dfnas_pl.data.synthetic import REPAIR, file_problems, foreign_files, read_set


def check(root: str | Path) -> list[str]:
    """Every problem of the set at ``root`` (empty: sound). Raises FileNotFoundError for a non-set."""
    root = Path(root)
    try:
        manifest, soft = read_set(root)
    except ValueError as err:
        return [str(err)]
    problems = file_problems(root, manifest, hashes=True)
    if len(soft["ids"]) != manifest["images"]:
        problems.append(f"soft_labels.pt holds {len(soft['ids'])} images, manifest.json says {manifest['images']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[2:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args and args[0] in ("-h", "--help") else 2
    if not args[0].strip():
        print("dfnas_pl: error: check needs the synthetic set's directory, got an empty path.", file=sys.stderr)
        return 2
    root = Path(args[0])
    try:
        problems = check(root)
    except FileNotFoundError as err:
        print(f"check: {err}", file=sys.stderr)
        return 2
    if problems:
        print(f"The synthetic set '{root}' has {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        print(REPAIR.format(root=root), file=sys.stderr)
        return 1
    batches = len(list(root.glob("records/round_*/batch_*.pt")))
    images = json.loads((root / "manifest.json").read_text())["images"]  # check() has read and verified it
    print(f"The synthetic set '{root}' is sound: {images} images in {batches} "
          f"batches, every size and sha256 as recorded.")
    foreign = foreign_files(root)
    if foreign:
        print(f"{len(foreign)} file(s) in its folders are not part of the set (not read, left in place): "
              + ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else ""))
    return 0
