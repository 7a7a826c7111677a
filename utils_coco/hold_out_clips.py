"""Hold out clips of a DAUB-layout folder's training split, to choose a recipe on them instead of on the test split.

Writes a new DAUB-layout folder --out: its train split is --data-root's --split less the held-out clips, its test
split the held-out clips (annotations/instances_{train,test}2017.json); its images/ is a link to --data-root's, so
nothing is copied and every file_name still resolves. Train on --out and score its test split to compare recipes;
train the chosen recipe on --data-root at the end. A clip is a sequence folder (images/<split>/<clip>/), or a video
where the COCO file lists videos (videos_to_daub.py writes them, with their attributes). --clips names the clips to
hold out; --count N draws N at random (--seed), each kind of clip in proportion when --stratify names the video
attributes that make a kind (e.g. class distance_bin).

Examples:
    python utils_coco/hold_out_clips.py --data-root datasets/drone_ir --out datasets/drone_ir_holdout \\
        --count 40 --stratify class distance_bin
    python utils_coco/hold_out_clips.py --data-root ../shared/data/daub_real --out datasets/daub_holdout --clips data4
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.runtime.cli import make_parser  # noqa: E402
from utils.runtime.entry import run_cli  # noqa: E402


def build_parser():
    parser = make_parser(__doc__)
    parser.add_argument("--data-root", type=Path, required=True, help="DAUB-layout folder whose clips are split")
    parser.add_argument("--out", type=Path, required=True, help="new folder to write (must not exist, or be empty)")
    parser.add_argument("--split", default="train", help="the split of --data-root that is cut")
    held = parser.add_mutually_exclusive_group(required=True)
    held.add_argument("--clips", nargs="+", metavar="CLIP", help="the clips to hold out, by name")
    held.add_argument("--count", type=int, metavar="N", help="hold out N clips drawn at random")
    parser.add_argument("--stratify", nargs="*", default=[], metavar="ATTRIBUTE",
                        help="--count: video attributes whose values make a kind of clip; each kind gives its share")
    parser.add_argument("--seed", type=int, default=0, help="--count: the draw's seed")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from utils.data.annotations import read_coco
    from utils.data.hold_out import clip_attributes, draw_clips, split_coco
    from utils.errors import SSTNetError
    from utils.runtime.fileio import check_dataset_folder, check_not_input, write_json

    if args.stratify and args.count is None:
        raise SSTNetError("--stratify is only for --count")
    source = args.data_root / "annotations" / f"instances_{args.split}2017.json"
    if not source.is_file():
        raise SSTNetError(f"--data-root {args.data_root}: no {source.relative_to(args.data_root)} (a DAUB-layout "
                          f"folder with a {args.split} split is expected)")
    if not (args.data_root / "images").is_dir():
        raise SSTNetError(f"--data-root {args.data_root}: no images folder")
    check_not_input(args.out, "--out", [("--data-root", args.data_root)])
    check_dataset_folder(args.out, "--out", "exists and is not an empty folder (this tool writes a new one)")
    coco = read_coco(source, args.data_root).data  # validated: a malformed file is refused here, naming the entry
    clips = clip_attributes(coco)
    if args.clips:
        unknown = [clip for clip in args.clips if clip not in clips]
        if unknown:
            raise SSTNetError(f"--clips: no clip {unknown[0]!r} in {source} (it has {len(clips)}: "
                              f"{', '.join(list(clips)[:5])}{', ...' if len(clips) > 5 else ''})")
        held = sorted(set(args.clips))
        if len(held) == len(clips):
            raise SSTNetError("--clips: every clip of the split is held out; some must stay for training")
    else:
        held = draw_clips(clips, args.count, args.stratify, args.seed)
    train, test = split_coco(coco, set(held))
    train["info"] = dict(coco.get("info", {}), held_out_from=str(source), held_out=held)
    test["info"] = dict(train["info"])

    annotations = args.out / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    write_json(annotations / "instances_train2017.json", train)
    write_json(annotations / "instances_test2017.json", test)
    os.symlink((args.data_root / "images").resolve(), args.out / "images", target_is_directory=True)
    print(f"held out {len(held)} of {len(clips)} clips ({len(test['images'])} frames, {len(test['annotations'])} "
          f"boxes): {', '.join(held)}")
    print(f"training: {len(clips) - len(held)} clips, {len(train['images'])} frames; wrote {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
