"""Convert a COCO json into the authors' index txt: ``PATH x1,y1,x2,y2,cls [...]`` per key frame.

Example (the bundled demo dataset):
    python utils_coco/coco_to_txt.py --json datasets/synthetic_daub/annotations/instances_train2017.json \
        --root datasets/synthetic_daub --out coco_train.txt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.data.annotations import dataset_root_of, format_index_line, read_coco  # noqa: E402
from utils.errors import SSTNetError  # noqa: E402
from utils.runtime.cli import make_parser  # noqa: E402
from utils.runtime.entry import run_cli  # noqa: E402
from utils.runtime.fileio import check_output, write_text  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--json", required=True, type=Path, help="COCO detection json (e.g. instances_train2017.json)")
    parser.add_argument("--root", type=Path, default=None,
                        help="dataset root that file_name entries are relative to "
                             "(default: the folder above the json's 'annotations' folder)")
    parser.add_argument("--out", required=True, type=Path, help="index txt to write")
    parser.add_argument("--absolute", action="store_true",
                        help="write absolute paths, as the authors' files (default: relative to --root)")
    parser.add_argument("--all-frames", action="store_true",
                        help="also list frames without annotations (default: left out, as the authors' files)")
    parser.add_argument("--no-file-check", action="store_true", help="do not check that every listed frame exists")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = args.root if args.root is not None else dataset_root_of(args.json, "--root")
    if not root.is_dir():
        raise SSTNetError(f"{root}: dataset root not found")
    if not args.json.is_file():
        raise SSTNetError(f"{args.json}: annotation file not found")
    check_output(args.out, "--out", inputs=[("--json", args.json), ("--root", root)])
    ground_truth = read_coco(args.json, root)
    records = ground_truth.records + (ground_truth.unannotated if args.all_frames else [])
    records.sort(key=lambda record: record.image_id)
    if not args.no_file_check:
        for record in records:
            if not record.path.is_file():
                raise SSTNetError(f"{args.json}: image id {record.image_id}: frame {record.path} not found "
                                  "(check --root, or pass --no-file-check)")
    lines = [format_index_line(record, None if args.absolute else root) for record in records]
    write_text(args.out, "".join(line + "\n" for line in lines))
    print(f"wrote {args.out}: {len(lines)} frames, {sum(len(r.boxes) for r in records)} boxes")
    return 0


if __name__ == "__main__":
    run_cli(main)
