"""One ``rce reproduce`` at a time per output folder: a writable-folder check and an exclusive lock on ``.rce.lock``.

A second run into a folder that another holds waits for it (saying so once), then finds every stage cached. The
lock is an OS file lock (:mod:`filelock`): it goes away with the process that holds it, however that process ends,
and :func:`output_lock` releases it on any exception. In one process the lock is re-entrant per thread, so the
command line can hold it around the run and the report while the run takes it again inside.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from ..core.distributed import world
from ..core.io import check_writable_dir

LOCK_NAME = ".rce.lock"

_locks: dict[str, FileLock] = {}
_locks_guard = threading.Lock()


def check_writable(out: str | Path) -> Path:
    """Create the output folder ``out`` if needed and check a file can be written in it (:class:`ConfigError`
    with one line if it is a file, lies under a file, or cannot be created or written)."""
    return check_writable_dir(out, "output folder (--out)")


def note(line: str) -> None:
    """A one-line notice about the run (not a stage line): on stderr."""
    print(line, file=sys.stderr, flush=True)


def _lock_of(path: Path) -> FileLock:
    key = str(path.resolve())
    with _locks_guard:
        if key not in _locks:
            _locks[key] = FileLock(key)
        return _locks[key]


@contextmanager
def output_lock(out: str | Path, echo: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold the exclusive lock of the output folder ``out`` (which must exist) for the ``with`` block. If another
    process holds it, say so in one line (``echo``, default stderr: the stage lines stay alone on stdout) and wait
    for it; Ctrl-C stops the wait. Yields the lock file's path."""
    path = Path(out) / LOCK_NAME
    if not world().main:  # under torchrun rank 0 holds the lock for all ranks of its run
        yield path
        return
    lock = _lock_of(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        (echo or note)(f"another rce reproduce is running in {out} (lock {path}); waiting for it — Ctrl-C to stop")
        lock.acquire()
    try:
        yield path
    except BaseException:
        _tidy(Path(out), path, lock)
        raise
    finally:
        if lock.is_locked:
            lock.release()


def _tidy(out: Path, path: Path, lock: FileLock) -> None:
    """A run refused before it wrote anything leaves nothing behind: with only the lock file in ``out``, the lock
    file goes (while still held) and ``out`` too when that leaves it empty."""
    try:
        if [p.name for p in out.iterdir()] == [LOCK_NAME]:
            path.unlink()
            lock.release()
            out.rmdir()
    except OSError:
        pass  # another process got there first, or the folder is not ours to remove
