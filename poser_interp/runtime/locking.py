"""One writer per folder: an advisory lock (`fcntl.flock`) on `FOLDER/.lock`, with the holder's pid written inside.

A second writer is refused at once with the holder's pid (never made to wait, never allowed to interleave rows).
Readers take no lock. The OS releases a flock when its holder exits, however it exits (a killed run included), so
a lock file left behind by a killed run is simply taken over. If the recorded holder is gone but the lock is still
held (a child it forked inherited the open file), the lock file is replaced: such a lock is stale too.

`hold` is re-entrant within a process: nested holds of the same folder share one lock, so a command can hold
its output folder for its whole run while the library functions it calls hold it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import DataError, PoserInterpError

LOCK_NAME = ".lock"

_held: dict[Path, list[int]] = {}
"""Resolved folder -> [lock file descriptor, nesting depth] for the locks this process holds."""
_guard = threading.Lock()


class FolderInUseError(PoserInterpError, RuntimeError):
    """Another process is writing the folder."""


def writable_folder(folder: str | Path, what: str = "results folder") -> Path:
    """`folder`, created if needed, or DataError saying why it cannot be written (a file, read-only, ...)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{what} {folder} is a file, not a folder; pass a folder path to --out (a new one is "
                        "created). Nothing was written.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {what} {folder}: {e.strerror or e}; pick an --out in a folder you can write. "
                        "Nothing was written.") from e
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"{what} {folder} is not writable (read-only); `poser-interp report {folder}` reads it "
                        "without writing, or copy it and pass the copy as --out. Nothing was written.")
    return folder


@contextlib.contextmanager
def hold(folder: str | Path, what: str = "results folder") -> Iterator[Path]:
    """Hold the write lock of `folder` (created if needed) for the duration; FolderInUseError if another has it."""
    key = writable_folder(folder, what).resolve()
    with _guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
        else:
            _held[key] = [_acquire(key, what), 1]
    try:
        yield key
    finally:
        with _guard:
            entry = _held[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                _release(entry[0])


def holder(folder: str | Path) -> dict[str, Any] | None:
    """What the lock file of `folder` says about its holder ({"pid", "host", "since", "command"}), if anything."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text()
    except OSError:
        return None
    return _parse(text)


def _parse(text: str) -> dict[str, Any] | None:
    try:
        info = json.loads(text)
    except ValueError:
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def _acquire(folder: Path, what: str) -> int:
    path = folder / LOCK_NAME
    for _ in range(3):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise DataError(f"{what} {folder} is not writable ({e.strerror or e}); `poser-interp report {folder}` "
                            "reads it without writing, or copy it and pass the copy as --out. Nothing was written.") \
                from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            os.close(fd)
            if info is None or _alive(info):
                raise FolderInUseError(_busy_message(folder, what, info)) from None
            with contextlib.suppress(FileNotFoundError):  # holder gone, lock kept by a child of it: stale
                os.unlink(path)
            continue
        if not _same_file(fd, path):  # another process replaced a stale lock file meanwhile: try again
            os.close(fd)
            continue
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        return fd
    raise FolderInUseError(_busy_message(folder, what, holder(folder)))


def _release(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)  # no pid left behind to mislead a reader
    os.close(fd)  # releases the flock


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _alive(info: dict[str, Any]) -> bool:
    """Whether the recorded holder still runs (assumed so when it ran on another host: that cannot be checked)."""
    if info.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _busy_message(folder: Path, what: str, info: dict[str, Any] | None) -> str:
    who = (f"process {info['pid']} on {info.get('host', '?')} (since {info.get('since', '?')}: "
           f"{info.get('command', '?')})") if info else "another process"
    reading = (f"Reading it meanwhile is safe: `poser-interp report {folder}`." if what == "results folder" else
               "Reading it meanwhile is safe (its finished models load hash-checked).")
    return f"{what} {folder} is being written by {who}; wait for it to finish (or stop it), or pick another --out. " \
        + reading
