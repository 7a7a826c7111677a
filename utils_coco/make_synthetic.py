"""Generate the synthetic infrared dataset (the project's bundled demo data) in the DAUB or IRDST layout.

Every SyntheticConfig field is a flag; a (min, max) range takes two numbers, e.g. --target-snr 2 8.
The same flags and --seed always give byte-identical files.

Examples (from the repository root):
    python utils_coco/make_synthetic.py                                   # the demo: datasets/synthetic_daub
    python utils_coco/make_synthetic.py --out /tmp/irdst --layout irdst --train-sequences 3 --test-sequences 3
    python utils_coco/make_synthetic.py --preview readme/synthetic_frames.png
"""
from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import MISSING, fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.data.synthetic import (LAYOUTS, SyntheticConfig, config_field_docs, config_from_mapping, generate_dataset,
                                  remove_stale_frames, save_preview)
from utils.runtime.cli import make_parser  # noqa: E402
from utils.runtime.entry import run_cli  # noqa: E402

DEFAULT_OUT = Path("datasets/synthetic_daub")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default_text(default: object) -> str:
    if default is None:
        return "unset"
    if isinstance(default, tuple):
        return " ".join(str(value) for value in default)
    return str(default)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per SyntheticConfig field, typed from its annotation and documented by its docstring."""
    hints = typing.get_type_hints(SyntheticConfig)
    docs = config_field_docs()
    group = parser.add_argument_group("dataset parameters (SyntheticConfig fields)")
    for field in fields(SyntheticConfig):
        hint = hints[field.name]
        default = field.default if field.default is not MISSING else None
        help_text = f"{docs.get(field.name, field.name)} (default: {_default_text(default)})"
        options: dict = {"dest": field.name, "default": default, "help": help_text.replace("%", "%%")}
        if typing.get_origin(hint) is tuple:
            options.update(nargs=2, type=typing.get_args(hint)[0], metavar=("MIN", "MAX"))
        elif field.name == "layout":
            options.update(choices=LAYOUTS)
        else:
            # int | None (height, width) parses as int; None stays the default.
            kind = next(kind for kind in typing.get_args(hint) or (hint,) if kind is not type(None))
            options.update(type=kind, metavar="N" if kind is int else "X")
        group.add_argument(_flag(field.name), **options)


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"dataset root to write (default: {DEFAULT_OUT}, relative to the current folder)")
    parser.add_argument("--preview", type=Path, default=None,
                        help="also write a PNG of consecutive frames from two sequences with their boxes "
                             "(default: none)")
    parser.add_argument("--remove-stale", action="store_true",
                        help="delete the frames under --out/images that this run did not write (left from an earlier, "
                             "larger dataset) and the folders they leave empty (default: keep them and warn)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary (default: shown)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    add_config_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_mapping({field.name: getattr(args, field.name) for field in fields(SyntheticConfig)})
    summary = generate_dataset(args.out, config, progress=not args.quiet)
    if args.preview is not None:
        save_preview(args.preview, config)
    if not args.quiet:
        for split in ("train", "test"):
            part = summary[split]
            print(f"{split}: {part['sequences']} sequences, {part['frames']} frames "
                  f"({part['empty_frames']} without a target), {part['annotations']} boxes -> {part['json']}")
        print(f"wrote {summary['files_written']} files under {summary['root']} ({config.layout} layout) in "
              f"{summary['seconds']:.1f} s ({summary['frames_per_second']:.0f} frames/s)")
        if args.preview is not None:
            print(f"preview: {args.preview}")
    if summary["stale_files"] and args.remove_stale:
        removed = remove_stale_frames(args.out, summary["stale_files"])
        if not args.quiet:
            print(f"removed {removed} stale frame(s) left from an earlier dataset under {summary['root']}/images")
    elif summary["stale_files"]:
        print(f"warning: {len(summary['stale_files'])} frame(s) under {summary['root']}/images were not written by "
              f"this run (left from an earlier one), e.g. {summary['stale_files'][0]}; "
              "delete them with --remove-stale or use a fresh --out", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
