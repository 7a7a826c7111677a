"""The project's user-facing error type and the wrapper every CLI runs under."""
from __future__ import annotations

import os
import sys
import traceback
from typing import Callable, Sequence


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
    return message


def report(line: str) -> None:
    """Write one line to stderr in a single write, so that lines of concurrent processes (torchrun) never mix."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run a script's ``main`` and turn failures into a one-line ``error: ...`` and a non-zero exit.

    ``--debug`` anywhere on the command line (or ``SSTNET_DEBUG=1``) re-raises instead, so the
    traceback is shown.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("SSTNET_DEBUG") == "1"
    try:
        code = main(args)
    except SSTNetError as exc:
        if debug:
            raise
        report(f"error: {one_line(str(exc))}")
        sys.exit(2)
    except KeyboardInterrupt:
        # An interrupt can land inside a constructor (tqdm's, say) whose half-built object then fails in __del__
        # during exit; that report would be a traceback about our own stop.
        sys.unraisablehook = lambda unraisable: None
        report("interrupted")
        sys.exit(130)
    except Exception as exc:  # anything unexpected still gets one line unless debugging
        if debug:
            raise
        where = traceback.extract_tb(exc.__traceback__)[-1]
        report(f"error: {type(exc).__name__}: {exc} (at {os.path.basename(where.filename)}:{where.lineno}; "
               f"rerun with --debug for the traceback)")
        sys.exit(1)
    sys.exit(code or 0)
