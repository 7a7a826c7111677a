"""One run folder, one training process: an exclusive OS lock held for the run's lifetime.

The lock is ``flock`` on ``RUN/.run.lock``; the kernel drops it when the process ends however it ends (killed,
crashed), so a stale lock cannot outlive its holder. The file itself stays (unlinking a lock file lets two processes
lock two different files); its content, the holder's pid, only serves the message of a refused second process.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import SSTNetError

LOCK_NAME = ".run.lock"


class RunFolderLock:
    """Exclusive lock on a run folder; :meth:`acquire` refuses, naming the holder's pid, while another holds it."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None

    def acquire(self) -> RunFolderLock:
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise SSTNetError(f"--save-dir {self.folder}: in use by another training (pid {holder}); wait for it to "
                              "end or choose another folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.release()
