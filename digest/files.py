"""Reading the files a user names (ingest inputs, subscriber CSV) with the same guards.

`read_regular_file(path, max_bytes, limit)` returns a regular file's bytes and
refuses, with one line, anything else: a missing file, a folder, a FIFO (which
would block until a writer comes), a device such as /dev/zero (endless), or a
file over `max_bytes`. `check_replaceable(path)` guards a file a command is
about to replace: it must be a regular file or not exist yet.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from digest.errors import DigestError


class FileRefused(DigestError):
    """A named file cannot be used; `str()` says why, without the path."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


def read_regular_file(path: Path, max_bytes: int, limit: str) -> bytes:
    """The bytes of a regular file of at most `max_bytes` (the limit is named `limit`)."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; reads of a regular file
        # are unaffected by it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise FileRefused("no such file") from None
    except OSError as exc:
        raise FileRefused(f"cannot read: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
        os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(f"is {_kind(info.st_mode)}, not a regular file")
        raise FileRefused(
            f"file is {info.st_size} bytes, over the {max_bytes} byte limit ({limit})"
        )
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise FileRefused(f"cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise FileRefused(f"file is over the {max_bytes} byte limit ({limit})")
    return data


def check_replaceable(path: Path) -> None:
    """Refuse to replace anything but a regular file: not a symlink, FIFO or device.

    The message names the path (the CLI prints it as it is).

    Writing goes to a temporary file renamed over `path`, which would turn
    /dev/full or a link into a plain file; refusing is clearer than following.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise FileRefused(f"cannot write {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise FileRefused(f"{path} is {_kind(mode)}: write to a regular file or a new path instead")
