"""Appending to the results file: one JSON line per finished case, written the moment the case ends.

The file outlives sessions, and some sessions are killed mid-write; so each record is appended such
that no other line can spoil it: it starts on a line of its own even when the file ends in a cut line
(the fragment stays a bad line of its own, which readers skip, instead of swallowing the record), it
goes out as one ``write`` of the whole line on an ``O_APPEND`` descriptor under a file lock (sessions
appending to one file at once add whole lines, not interleaved pieces), and it is fsynced before the
next case starts.
Reading it back, bad lines and all, is `convbench.report.load`'s job.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT


def check_appendable(path: Path) -> None:
    """Create ``path``'s folders and open it for appending, as the first record will: the same
    `OSError` (a folder, a path under a file, no permission, a read-only disk) comes out now."""
    existing = next(parent for parent in path.parents if parent.exists())
    if not existing.is_dir():  # mkdir would say "File exists", of a file the user did not name
        raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file, not a folder", str(existing))
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, _APPEND, 0o666))


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one line and fsync it; raise `OSError` if the disk refuses (full, gone)."""
    # default=str: a plugin's exotic kwarg value must not cost the measured result
    line = (json.dumps(record, allow_nan=False, default=str) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, _APPEND, 0o666)
    try:
        _lock(fd)  # until closed: another session's write in progress is not a cut line
        if _ends_mid_line(path):
            line = b"\n" + line
        write_line(fd, line)
        try:
            os.fsync(fd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: a device or pipe, nothing to sync
                raise
    finally:
        os.close(fd)


def write_line(fd: int, data: bytes) -> None:
    """One ``write`` for the whole line (O_APPEND puts it at the end, whole); a short write (a full
    disk, a signal) is finished by further writes or raises."""
    while data:
        data = data[os.write(fd, data):]


def _lock(fd: int) -> None:
    """Hold an exclusive lock on the file among convbench's writers until ``fd`` is closed.

    Without it, a session could read the end of the file while another's write is half done and take
    it for a cut line. Where there are no such locks (Windows, some network file systems) it appends
    unlocked: whole lines still, at worst with a blank line between two of them, which readers skip.
    """
    if fcntl is None:
        return
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX)


def _ends_mid_line(path: Path) -> bool:
    """Whether the file's last byte is not a newline: a line cut short by a killed session."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a device or a pipe: no last byte to read
            return False
        with path.open("rb") as stream:
            if stream.seek(0, os.SEEK_END) == 0:
                return False
            stream.seek(-1, os.SEEK_END)
            return stream.read(1) != b"\n"
    except OSError:  # not there yet, or not readable: the append itself says what is wrong
        return False
