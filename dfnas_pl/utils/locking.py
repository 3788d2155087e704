"""One writer per output directory.

A run that writes a directory (a synthetic set, ...) holds ``<dir>/.dfnas_pl.lock`` for its whole life
(``filelock``: an OS-level lock, so a writer killed with SIGKILL leaves no stale lock - the kernel
releases it, and the next run simply takes it; the temporary files a killed writer leaves mid-write are
removed when the next one takes the lock). A second writer is refused at once with the holder's
pid, host and start time (from ``.dfnas_pl.lock.owner``, written by the holder), instead of both
doing all the work into one directory.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout

from dfnas_pl.utils.io import check_writable_dir, remove_stale_temporaries

LOCK_NAME = ".dfnas_pl.lock"


class DirectoryInUse(RuntimeError):
    """Another process is writing the directory."""


class OutputLock:
    """Hold the directory's lock; ``release()`` (or process exit) frees it."""

    def __init__(self, directory: str | os.PathLike, what: str = "output") -> None:
        self.dir, self.what = Path(directory), what
        check_writable_dir(self.dir, what)  # an unwritable place gets its clear error before any lock
        self._lock = FileLock(str(self.dir / LOCK_NAME))
        self._owner = self.dir / (LOCK_NAME + ".owner")
        self.stale_temporaries = 0  # removed when the lock was taken: left by a writer killed mid-write

    def acquire(self) -> OutputLock:
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise DirectoryInUse(f"The {self.what} directory '{self.dir}' is being written by another run "
                                 f"({self.holder()}). Wait for it to finish, stop it, or choose another output "
                                 f"directory.") from None
        self._owner.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                           "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        self.stale_temporaries = remove_stale_temporaries(self.dir, other_writers=LOCK_NAME)
        return self

    def holder(self) -> str:
        try:
            o = json.loads(self._owner.read_text())
            return f"pid {o['pid']} on {o['host']}, since {o['since']}"
        except (OSError, ValueError, KeyError):
            return "holder unknown"

    def release(self) -> None:
        if self._lock.is_locked:
            self._owner.unlink(missing_ok=True)
            self._lock.release()

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class HoldsOutputLock:
    """Mixin for a LightningModule (placed before ``L.LightningModule``) that holds its output directory's
    lock from ``setup`` (rank 0 calls :meth:`take_output_lock`) until ``teardown``, which Lightning runs
    after a finished, failed or interrupted fit alike."""

    _lock: OutputLock | None = None

    def take_output_lock(self, directory: str | os.PathLike, what: str) -> None:
        if self._lock is None:
            self._lock = OutputLock(directory, what).acquire()

    def teardown(self, stage: str) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def one_writer(directory_attr: str, what: str) -> Callable:
    """Decorator of a driver's ``__call__``: it runs holding the lock of ``self.<directory_attr>``, so a
    second driver on the same directory is refused at once, naming the first."""

    def wrap(method: Callable) -> Callable:
        @functools.wraps(method)
        def locked(self, *args, **kwargs):
            with OutputLock(getattr(self, directory_attr), what):
                return method(self, *args, **kwargs)

        return locked

    return wrap
