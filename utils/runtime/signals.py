"""Stopping a long loop cleanly on SIGINT (Ctrl-C) or SIGTERM: training, and prediction on a live source."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator


class StopRequest:
    """SIGINT and SIGTERM ask a loop to stop at the next ``unit`` boundary (a training step, a video frame); a second
    signal stops at once.

    A KeyboardInterrupt raised straight from the handler can land anywhere (inside tqdm's constructor, whose
    half-built bar then prints a traceback), so the first signal only sets a flag that the loops check.
    """

    def __init__(self, log: Callable[[str], None], unit: str = "step"):
        self.requested = False
        self.log = log
        self.unit = unit

    def _handle(self, signum: int, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.log(f"{signal.Signals(signum).name}: stopping after this {self.unit} (send it again to stop at once)")

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield self
            return
        previous = {signum: signal.signal(signum, self._handle) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
