"""The project's user-facing error type and the wrapper every CLI runs under."""
from __future__ import annotations

import os
import sys
import traceback
from typing import Callable, Sequence


class SSTNetError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""


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
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # anything unexpected still gets one line unless debugging
        if debug:
            raise
        where = traceback.extract_tb(exc.__traceback__)[-1]
        print(f"error: {type(exc).__name__}: {exc} (at {os.path.basename(where.filename)}:{where.lineno}; "
              f"rerun with --debug for the traceback)", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)
