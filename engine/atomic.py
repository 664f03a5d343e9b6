"""All-or-nothing replacement of folders on a local file system: the store's results and the store itself.

A result (a zarr array: a folder of metadata and chunk files) is written complete into a staging folder beside
the store (``run.zarr.staging/``, same file system), then put in place with one rename. Where a result of that
name already exists, the two folders are swapped atomically with ``renameat2(RENAME_EXCHANGE)`` (Linux: ext4,
xfs, btrfs, tmpfs, ...), so a reader sees the old result or the new one, never a mix and never a gap. Where the
file system cannot exchange (NFS, macOS), the old folder is renamed away and the new one renamed in, under an
install record written first; a crash between the two renames is rolled forward by ``Staging.recover`` when
the next writer takes the store, and a reader in that microsecond window finds the result absent, never wrong.

Anything in the staging folder without an install record is an unfinished write, and ``recover`` deletes it:
that is how a kill or a full disk during a write leaves the store as it was.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import uuid
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_INSTALL = ".install"


def _renameat2():
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step; False where the platform or file system cannot."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _sync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder`` (and it)."""
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def local_path(path: str | os.PathLike) -> Path:
    """A local store path with symlinks resolved: the real folder, so that its staging folder and lock file sit
    on its own file system and every name for one store means one lock."""
    return Path(os.fspath(path).removeprefix("file://")).resolve()


class Staging:
    """The staging folder of the store at ``store_path`` (a local path)."""

    def __init__(self, store_path: str | os.PathLike):
        store = local_path(store_path)
        self.root = store.with_name(store.name + ".staging")

    def new_folder(self, kind: str) -> Path:
        """An empty, uniquely named folder to build one result (or a whole store) in."""
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self.root / f"{kind}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        folder.mkdir()
        return folder

    def discard(self, folder: Path) -> None:
        _remove(folder)
        self._remove_root_if_empty()

    def install(self, staged: Path, target: Path) -> None:
        """Put the complete folder ``staged`` at ``target``, replacing what is there in one step.

        The staged files reach the disk before the rename, so a power loss cannot leave a renamed-in result
        whose files are empty."""
        target.parent.mkdir(parents=True, exist_ok=True)
        _sync_tree(staged)
        if not target.exists():
            os.rename(staged, target)
        elif exchange(staged, target):
            _remove(staged)                       # now the old result
        else:
            token = uuid.uuid4().hex[:12]
            record = self.root / (token + _INSTALL)
            temporary = self.root / (token + ".tmp")
            old = self.root / f"old-{token}"
            temporary.write_text(json.dumps({"target": str(target), "staged": str(staged), "old": str(old)}))
            os.replace(temporary, record)         # from here on, recover() finishes this install
            os.rename(target, old)
            try:
                os.rename(staged, target)
            except BaseException:
                os.rename(old, target)            # put the old result back: the store stays as it was
                record.unlink()
                raise
            _remove(old)
            record.unlink()
        self._remove_root_if_empty()

    def recover(self) -> list[str]:
        """Finish installs a dead writer began and delete its unfinished writes; returns what it did.

        Call only while holding the store's lock: another live writer's staging would look unfinished.
        """
        if not self.root.is_dir():
            return []
        done: list[str] = []
        for record in sorted(self.root.glob("*" + _INSTALL)):
            try:
                entry = json.loads(record.read_text())
                target, staged, old = Path(entry["target"]), Path(entry["staged"]), Path(entry["old"])
            except (OSError, ValueError, KeyError, TypeError):
                record.unlink(missing_ok=True)
                continue
            if staged.is_dir() and not target.exists():
                os.rename(staged, target)
                done.append(f"finished replacing {target}")
            elif old.is_dir() and not target.exists():
                os.rename(old, target)               # the new one is gone: the old result is the one to keep
                done.append(f"restored {target}")
            record.unlink()
        for leftover in sorted(self.root.iterdir()):
            _remove(leftover)
            done.append(f"removed unfinished write {leftover.name}")
        self._remove_root_if_empty()
        return done

    def _remove_root_if_empty(self) -> None:
        try:
            self.root.rmdir()
        except OSError:
            pass
