"""Single-writer lock for a store: one live writer at a time, readers never blocked.

The lock is a small JSON file beside the store (``run.zarr.lock``), created atomically with O_EXCL and naming
its holder (host, pid, command). It survives the holder's death, so a stale lock is detected and taken over
with a warning: on the same host when the holder's pid is gone, on another host when the holder stopped
refreshing the file's modification time (a heartbeat thread touches it while the lock is held).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import warnings
from pathlib import Path

HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0


class LockError(RuntimeError):
    """Another live process holds the store's lock."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_path_for(store_path: str) -> Path | None:
    """The lock file for a local store path; None for remote URLs (which cannot be locked atomically)."""
    if "://" in store_path and not store_path.startswith("file://"):
        return None
    path = Path(store_path.removeprefix("file://")).absolute()
    return path.with_name(path.name + ".lock")


class StoreLock:
    """Context manager holding the write lock of the store at ``store_path``."""

    def __init__(self, store_path: str, purpose: str = "write"):
        self.store_path = store_path
        self.purpose = purpose
        self.path = lock_path_for(store_path)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held = False

    def _record(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "purpose": self.purpose,
                "command": " ".join(sys.argv)[:500], "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _is_stale(self, holder: dict) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            return not _pid_alive(holder["pid"])
        return age > STALE_AFTER_S

    def acquire(self) -> "StoreLock":
        if self.path is None:
            warnings.warn(f"{self.store_path}: remote stores cannot be locked; make sure one run writes it",
                          stacklevel=2)
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = json.dumps(self._record())
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if not self._is_stale(holder):
                    raise LockError(
                        f"{self.store_path} is being written by another process (host {holder.get('host')}, "
                        f"pid {holder.get('pid')}, since {holder.get('since')}); wait for it to finish, or "
                        f"delete {self.path} if you are sure it is dead") from None
                warnings.warn(f"taking over the stale lock of {self.store_path} held by host "
                              f"{holder.get('host')} pid {holder.get('pid')}", stacklevel=2)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(record)
            self._held = True
            self._thread = threading.Thread(target=self._heartbeat, daemon=True, name="store-lock-heartbeat")
            self._thread.start()
            return self
        raise LockError(f"could not take the lock {self.path}: another process keeps taking it")

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        if not self._held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        holder = self._holder()
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
        self._held = False

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
