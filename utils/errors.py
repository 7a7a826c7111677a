"""The project's user-facing error type and how its one line reaches the user."""
from __future__ import annotations

import errno
import os
import sys


class SSTNetError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""


def one_line(message: str) -> str:
    """The user-facing line of an error message.

    An error raised in a DataLoader worker reaches the main process re-created with the worker's traceback in its
    message ("Caught SSTNetError in DataLoader worker ... Original Traceback ..."); its last line holds ours.
    """
    if "Original Traceback" in message:
        last = message.strip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return " ".join(message.split("\n")) if "\n" in message else message


def report(line: str) -> None:
    """Write one line to stderr in a single write, so that lines of concurrent processes (torchrun) never mix."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def no_space_error(exc: BaseException, folder: str | os.PathLike) -> SSTNetError | None:
    """The one-line error for a write that failed because ``folder``'s file system is full, else None.

    Libraries report a full disk differently (OSError ENOSPC, or torch's RuntimeError "file write failed"), so the
    free space of the folder decides when the error is not an OSError.
    """
    full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    if not full and not isinstance(exc, (KeyboardInterrupt, SSTNetError)):
        try:
            stats = os.statvfs(folder)
            full = stats.f_bavail * stats.f_frsize < 64 * 1024
        except OSError:
            full = False
    return SSTNetError(f"{folder}: no space left on device") if full else None
