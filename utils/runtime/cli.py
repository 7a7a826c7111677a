"""argparse pieces every script shares: one help format, exact flag spellings, numeric range checks.

Kept free of torch so that ``--help`` and argument errors answer at once.
"""
from __future__ import annotations

import argparse
import math

from ..errors import SSTNetError


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and adds ``(default: X)`` to options whose help does not state one
    (switches and options without a default excepted), so every default shows exactly once."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        default = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
        return f"{text} (default: {str(default).replace('%', '%%')})"


def make_parser(description: str | None) -> argparse.ArgumentParser:
    """A parser with the shared help format that refuses abbreviated flags (``--eval-per`` is not
    ``--eval-period``: a typo must not silently pick a flag)."""
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter, allow_abbrev=False)


def given_flags(parser: argparse.ArgumentParser, argv: list[str]) -> frozenset[str]:
    """Destinations of the options written on the command line."""
    written = {token.split("=", 1)[0] for token in argv if token.startswith("--")}
    return frozenset(action.dest for action in parser._actions if written & set(action.option_strings))


def check_number(flag: str, value: float | None, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False) -> None:
    """One numeric option inside its range, NaN and infinities refused, the flag named (None: not given)."""
    if value is None:
        return
    outside = (not math.isfinite(value) or value < low or value > high or (low_open and value == low)
               or (high_open and value == high))
    if outside:
        if math.isfinite(high):
            rule = f"lie in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        else:
            rule = f"be {'greater than' if low_open else 'at least'} {low:g}"
        raise SSTNetError(f"{flag} {value}: must {rule}")
