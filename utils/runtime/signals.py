"""Stopping a long loop cleanly on SIGINT (Ctrl-C) or SIGTERM: training, and prediction on a live source."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that every ``finally`` (temporary files) runs; the entry
    wrapper exits 143 for it (130 for Ctrl-C)."""


class StopRequest:
    """SIGINT and SIGTERM ask a loop to stop at the next ``unit`` boundary (a training step, a video frame); a second
    signal stops at once.

    A KeyboardInterrupt raised straight from the handler can land anywhere (inside tqdm's constructor, whose
    half-built bar then prints a traceback), so the first signal only sets a flag that the loops check.
    """

    def __init__(self, log: Callable[[str], None], unit: str = "step"):
        self.requested = False
        self.terminated = False
        self.log = log
        self.unit = unit

    def _stop(self) -> KeyboardInterrupt:
        return Terminated() if self.terminated else KeyboardInterrupt()

    def _handle(self, signum: int, frame) -> None:
        self.terminated = self.terminated or signum == signal.SIGTERM
        if self.requested:
            raise self._stop()
        self.requested = True
        self.log(f"{signal.Signals(signum).name}: stopping after this {self.unit} (send it again to stop at once)")

    def check(self) -> None:
        if self.requested:
            raise self._stop()

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        with handlers_replaced(self._handle, (signal.SIGINT, signal.SIGTERM)):
            yield self


@contextmanager
def handlers_replaced(handler: Callable, signums: tuple[int, ...]) -> Iterator[None]:
    """``handler`` for ``signums`` inside the block, the previous handlers restored after it. Python runs signal
    handlers in the main thread only (and sets them there only), so elsewhere the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, earlier in previous.items():
            signal.signal(signum, earlier)


@contextmanager
def signals_held(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold SIGINT and SIGTERM for a few steps that must not be cut in two (a thread started and its stop put in
    place), then deliver them to the handlers that were there. A handler not set from Python is left alone."""
    held: list[int] = []
    from_python = tuple(signum for signum in signums if signal.getsignal(signum) is not None)
    try:
        with handlers_replaced(lambda number, frame: held.append(number), from_python):
            yield
    finally:
        if held:
            signal.raise_signal(held[0])
