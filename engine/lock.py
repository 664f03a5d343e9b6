"""Single-writer lock for a store: one live writer at a time, readers never blocked.

The lock is an advisory ``flock`` on a small file beside the store (``run.zarr.lock``). The kernel grants it to
one open file at a time and drops it when its holder dies however it dies (kill -9 included), so it can be
neither taken twice nor left stale: there is no takeover protocol to race. The file names its holder (host, pid,
command) for the message a refused writer sees; a record left by a dead holder is reported with a warning when
the next writer takes the lock.

Local paths only: remote URLs (object storage) have no lock and warn. On a shared file system the lock holds
across hosts where the file system supports ``flock`` (NFSv4, Lustre and GPFS with locking enabled); where it
does not, taking the lock fails with a one-line error rather than pretending.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path

from engine.atomic import local_path


class LockError(RuntimeError):
    """Another live process holds the store's lock, or the file system cannot lock."""


def lock_path_for(store_path: str) -> Path | None:
    """The lock file for a local store path; None for remote URLs (which cannot be locked)."""
    if "://" in store_path and not store_path.startswith("file://"):
        return None
    path = local_path(store_path)
    return path.with_name(path.name + ".lock")


def _read_record(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        record = json.loads(data.decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (a releasing holder unlinks it)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


class StoreLock:
    """Context manager holding the write lock of the store at ``store_path``."""

    def __init__(self, store_path: str, purpose: str = "write"):
        self.store_path = store_path
        self.purpose = purpose
        self.path = lock_path_for(store_path)
        self._fd: int | None = None

    def _record(self) -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "purpose": self.purpose,
                           "command": " ".join(sys.argv)[:500],
                           "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode("utf-8")

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "StoreLock":
        if self.path is None:
            warnings.warn(f"{self.store_path}: remote stores cannot be locked; make sure one run writes it",
                          stacklevel=2)
            return self
        if self._fd is not None:
            raise LockError(f"{self.store_path}: this lock object already holds the lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_record(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise LockError(self._busy_message(holder)) from None
                raise LockError(f"cannot lock {self.path}: the file system refuses file locks "
                                f"({exc.strerror}); write the store on a local or lock-capable file system") from None
            if not _same_file(fd, self.path):      # the previous holder unlinked it between our open and flock
                os.close(fd)
                continue
            previous = _read_record(fd)
            if previous:
                warnings.warn(f"taking over the stale lock of {self.store_path} held by host {previous.get('host')} "
                              f"pid {previous.get('pid')} ({previous.get('purpose')} since {previous.get('since')}): "
                              "that process ended without releasing it", stacklevel=2)
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._record(), 0)
            self._fd = fd
            return self

    def _busy_message(self, holder: dict) -> str:
        who = (f"host {holder.get('host')}, pid {holder.get('pid')}, {holder.get('purpose')} since "
               f"{holder.get('since')}") if holder else "its record is not written yet"
        return (f"{self.store_path} is being written by another process ({who}); wait for it to finish "
                "(the lock is released when that process ends, however it ends)")

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.path):
                self.path.unlink(missing_ok=True)   # while still locked, so nobody locks a file about to vanish
        finally:
            os.close(fd)                             # closing drops the flock

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
