"""Median and range over seeds: several runs' ``metrics.json`` (written by vid_map_coco.py) in named groups.

A figure that comes out of training moves with the seed; one run says little. Give each group (a recipe, a starting
point) the metrics files of its seeds; the table shows every group's median with the range [min, max] and the runs'
own values, and the median difference from the first group.

Examples:
    python summarize_seeds.py --group scratch runs/scratch_s*/map/metrics.json \\
        --group fine-tuned runs/finetuned_s*/map/metrics.json --out runs/summary.md
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from utils.errors import SSTNetError
from utils.runtime.cli import make_parser
from utils.runtime.entry import run_cli

#: The figures of a metrics file, in table order, with their column titles.
FIGURES = (("mAP50", "mAP50"), ("precision", "P"), ("recall", "R"), ("f1", "F1"), ("pd", "Pd"), ("fa", "Fa"))


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--group", nargs="+", action="append", required=True, metavar=("NAME", "METRICS"),
                        help="a group's name, then the metrics.json of each of its runs (repeat for more groups)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) to this file")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def read_figures(path: Path) -> dict[str, float]:
    """The figures of one run's metrics file; every one must be there and be a number."""
    from utils.data.annotations import load_json

    record = load_json(path, f"--group {path}", what="metrics")
    if not isinstance(record, dict):
        raise SSTNetError(f"--group {path}: not a metrics file of vid_map_coco.py (expected a JSON object)")
    figures = {}
    for key, _ in FIGURES:
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SSTNetError(f"--group {path}: field '{key}' is {value!r}, not a number (a metrics.json of "
                              "vid_map_coco.py is expected)")
        figures[key] = float(value)
    return figures


def spread(values: list[float], digits: int) -> str:
    """``median [min, max]`` of the values; a single run is shown alone."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def summary_table(groups: list[tuple[str, list[Path], list[dict[str, float]]]]) -> str:
    """The Markdown table: one row per group, then each run's mAP50."""
    digits = {key: 3 if key == "fa" else 2 for key, _ in FIGURES}
    lines = ["| group | runs | " + " | ".join(title for _, title in FIGURES) + " | mAP50 vs " + groups[0][0] + " |",
             "|---" * (len(FIGURES) + 3) + "|"]
    reference = statistics.median(run["mAP50"] for run in groups[0][2])
    for name, _, runs in groups:
        cells = [spread([run[key] for run in runs], digits[key]) for key, _ in FIGURES]
        gain = statistics.median(run["mAP50"] for run in runs) - reference
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + f" | {gain:+.2f} |")
    lines.append("")
    for name, paths, runs in groups:
        lines.append(f"{name}: " + ", ".join(f"{path} {run['mAP50']:.2f}" for path, run in zip(paths, runs)))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from utils.runtime.fileio import atomic_open, check_output

    groups = []
    for name, *files in args.group:
        if not files:
            raise SSTNetError(f"--group {name}: no metrics files given after the group's name")
        if any(name == other for other, _, _ in groups):
            raise SSTNetError(f"--group {name}: the name is given twice")
        paths = [Path(file) for file in files]
        groups.append((name, paths, [read_figures(path) for path in paths]))
    table = summary_table(groups)
    if args.out is not None:
        check_output(args.out, "--out", inputs=[("--group", path) for _, paths, _ in groups for path in paths])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(args.out) as handle:
            handle.write(table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    run_cli(main)
