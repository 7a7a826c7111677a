"""The wrapper every command line runs under: one ``error:`` line and an exit code instead of a traceback, and SIGTERM
handled like Ctrl-C."""
from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import traceback
from typing import Callable, Sequence

from ..errors import SSTNetError, one_line, report
from .signals import Terminated


def _raise_terminated(signum: int, frame) -> None:
    raise Terminated


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run a script's ``main`` and turn failures into a one-line ``error: ...`` and a non-zero exit.

    SIGTERM stops like Ctrl-C (temporary files removed) with exit code 143 (Ctrl-C: 130). ``--debug`` anywhere on
    the command line (or ``SSTNET_DEBUG=1``) re-raises instead, so the traceback is shown.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("SSTNET_DEBUG") == "1"
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        code = main(args)
    except SSTNetError as exc:
        if debug:
            raise
        report(f"error: {one_line(str(exc))}")
        sys.exit(2)
    except KeyboardInterrupt as exc:
        # An interrupt can land inside a constructor (tqdm's, say) whose half-built object then fails in __del__
        # during exit; that report would be a traceback about our own stop.
        sys.unraisablehook = lambda unraisable: None
        terminated = isinstance(exc, Terminated)
        report("terminated" if terminated else "interrupted")
        sys.exit(143 if terminated else 130)
    except OSError as exc:
        if debug:
            raise
        if exc.errno == errno.ENOSPC:
            folder = os.path.dirname(exc.filename) if exc.filename else "output folder"
            report(f"error: {folder or '.'}: no space left on device")
        else:
            report(f"error: {exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
        sys.exit(1)
    except Exception as exc:  # anything unexpected still gets one line unless debugging
        if debug:
            raise
        where = traceback.extract_tb(exc.__traceback__)[-1]
        report(f"error: {type(exc).__name__}: {one_line(str(exc))} (at {os.path.basename(where.filename)}:"
               f"{where.lineno}; rerun with --debug for the traceback)")
        sys.exit(1)
    sys.exit(code or 0)
