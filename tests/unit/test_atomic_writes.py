"""Atomic writes under SIGKILL: a writer killed between writing its temporary and renaming it leaves the
old file intact and the temporary behind; the directory's next writer (whoever takes its lock) removes
such temporaries, and nothing else. The synthesis rerun's side: tests/stages/test_synthesis_cli.py (resume test)."""

import signal
import subprocess
import sys
from pathlib import Path

from dfnas_pl.utils.locking import OutputLock
from tests.conftest import REPO

# atomic_write_bytes in a process that SIGKILLs itself at the rename: the worst moment, with the
# temporary complete and fsynced but not yet in place (no handler of ours can run)
KILLED_AT_THE_RENAME = ("import os, signal, sys; from dfnas_pl.utils import io; "
                        "os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL); "
                        "io.atomic_write_bytes(sys.argv[1], b'the new version')")


def killed_writing(path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", KILLED_AT_THE_RENAME, str(path)], cwd=REPO)
    assert proc.returncode == -signal.SIGKILL


def temporaries(root: Path) -> list[Path]:
    return sorted(root.rglob("*.tmp"))


def test_a_killed_writers_temporary_is_removed_by_the_next_lock_holder_and_nothing_else(tmp_path):
    (tmp_path / "grids").mkdir()
    (tmp_path / "grids" / "round_00.png").write_bytes(b"the old version")
    killed_writing(tmp_path / "grids" / "round_00.png")
    killed_writing(tmp_path / "images" / "class_3" / "r00_000003.png")  # a file that did not exist yet
    left = temporaries(tmp_path)
    assert sorted(p.parent.name for p in left) == ["class_3", "grids"], left
    assert (tmp_path / "grids" / "round_00.png").read_bytes() == b"the old version"  # never half a file
    assert not (tmp_path / "images" / "class_3" / "r00_000003.png").exists()
    users = [tmp_path / ".notes.tmp", tmp_path / "draft.tmp", tmp_path / "grids" / ".round_00.png.tmp"]
    for p in users:  # not named as atomic_write_bytes names its temporaries: not ours to delete
        p.write_text("keep me")

    nested = OutputLock(tmp_path / "search", "a nested writer's output").acquire()  # in use: its own to clean
    killed_writing(tmp_path / "search" / "architecture.json")
    users += temporaries(tmp_path / "search")

    lock = OutputLock(tmp_path, "test output").acquire()
    try:
        assert lock.stale_temporaries == 2
        assert temporaries(tmp_path) == sorted(users)
        nested.release()
        assert nested.acquire().stale_temporaries == 1 and not temporaries(tmp_path / "search")
        nested.release()
        assert (tmp_path / "grids" / "round_00.png").read_bytes() == b"the old version"
    finally:
        lock.release()
