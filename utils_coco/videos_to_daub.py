"""Import labelled videos into the DAUB layout the rest of the project reads.

Every video in --videos (any format OpenCV reads: mp4, avi, mkv, ...) with its label file becomes one sequence
folder images/<split>/<clip>/<n>.png (grey, n = the video's own frame index from 0) plus the COCO files
annotations/instances_<split>2017.json. The label file of NAME.mp4 is NAME_LABELS.mat, NAME.mat, NAME_LABELS.txt or
NAME.txt in --labels (default: --videos):

  .mat  MATLAB Video Labeler groundTruth, one box or none per frame (the Drone-detection dataset's format)
  .txt  one line per labelled frame: FRAME [x,y,w,h[,class] ...], FRAME from 0, boxes in pixels with (0, 0) the
        top-left corner of the frame; a frame listed without boxes has no target in view; '#' starts a comment

Key frames, the frames the COCO files list and an evaluation scores, are the labelled frames whose index is a
multiple of --keyframe-step; a key frame without a target is kept (with no box), so false alarms on it count
(score them with vid_map_coco.py --all-frames). Only the frames the key frames' --num-frame windows read are
written. A video and its labels of different lengths stay aligned from frame 0 (one warning); boxes reaching out of
the frame are clipped (one warning per clip); an unreadable video or label file leaves that clip out with one
error line, the others are converted and the exit status is 1.

Examples:
    python utils_coco/videos_to_daub.py --videos ../shared/data/drone_ir/Video_IR --out datasets/drone_ir \\
        --splits ../shared/data/drone_ir/splits.json
    python utils_coco/videos_to_daub.py --videos my_videos --out datasets/mine --split test --keyframe-step 1
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.data.video_import import (CLASS_MODES, DEFAULT_NAME_PATTERN, FRAME_FORMATS, ImportConfig, check_out_folder,
                                     clip_class, find_clips, import_videos, read_splits)
from utils.errors import SSTNetError, report  # noqa: E402
from utils.runtime.cli import check_number, make_parser  # noqa: E402
from utils.runtime.entry import run_cli  # noqa: E402


def build_parser():
    parser = make_parser(__doc__)
    parser.add_argument("--videos", type=Path, required=True, help="folder of the video files")
    parser.add_argument("--labels", type=Path, default=None, help="folder of the label files (default: --videos)")
    parser.add_argument("--out", type=Path, required=True,
                        help="dataset folder to write: new, empty, or an earlier output of this tool (whose frames "
                             "and COCO files it then replaces)")
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--splits", type=Path, default=None, metavar="JSON",
                       help='split file: {"train": [clip names], "test": [...], ...}; other keys holding '
                            '{clip: value} objects (e.g. "distance_bin") are copied into each clip\'s attributes')
    split.add_argument("--split", default="train", help="without --splits, the split every clip goes into")
    parser.add_argument("--keyframe-step", type=int, default=5, metavar="K",
                        help="key frames are the labelled frames whose index is a multiple of K")
    parser.add_argument("--num-frame", type=int, default=5, metavar="T",
                        help="frames per sample of the model that will read the dataset: each key frame's T-1 "
                             "predecessors are written too")
    parser.add_argument("--frame-step", type=int, default=1, metavar="S",
                        help="frames between the frames of a window of the model that will read the dataset (its "
                             "--frame-step): the frames k-(T-1)S, ..., k-S, k of each key frame k are written")
    parser.add_argument("--classes", choices=CLASS_MODES, default="target",
                        help="target: one class for every box; from-name: the clip's class from its file name "
                             "(see --name-pattern); from-labels: the class each box of a .txt label file names")
    parser.add_argument("--name-pattern", default=DEFAULT_NAME_PATTERN,
                        help="regular expression matching a whole clip name, whose group 'class' is the clip's class "
                             "for --classes from-name (IR_DRONE_001 -> drone)")
    parser.add_argument("--frame-format", choices=FRAME_FORMATS, default="png", help="format of the written frames")
    parser.add_argument("--workers", type=int, default=None,
                        help="clips converted at once in worker processes (default: the number of CPUs; 0: none)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_number("--workers", args.workers, 0)
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    config = ImportConfig(keyframe_step=args.keyframe_step, num_frame=args.num_frame, frame_step=args.frame_step,
                          classes=args.classes, name_pattern=args.name_pattern, frame_format=args.frame_format)
    labels_dir = args.labels if args.labels is not None else args.videos
    if not labels_dir.is_dir():
        raise SSTNetError(f"--labels {labels_dir}: not a folder")
    splits, attributes = read_splits(args.splits) if args.splits is not None else (None, {})
    check_out_folder(args.out, [("--videos", args.videos), ("--labels", labels_dir), ("--splits", args.splits)])
    clips, problems = find_clips(args.videos, labels_dir, splits, attributes, args.split, args.name_pattern)
    for line in problems:
        report(line)
    if not clips:
        report("error: no clip to convert")
        return 2
    if args.classes == "from-name":
        for clip in clips:
            clip_class(clip.name, args.name_pattern)  # a name the pattern misses stops the run before decoding
    summary = import_videos(clips, args.out, config, workers=min(workers, len(clips)), progress=not args.quiet)
    failed = len(summary.failed) + sum(line.startswith("error:") for line in problems)
    if not args.quiet:
        per_split = ", ".join(f"{split} {count}" for split, count in sorted(summary.clips.items()))
        print(f"{sum(summary.clips.values())} clips ({per_split}): {summary.keyframes} key frames "
              f"({summary.empty_keyframes} without a target), {summary.boxes} boxes; {summary.frames_written} frames "
              f"written ({summary.bytes_written / 2**30:.2f} GiB) under {args.out} in {summary.seconds:.0f} s "
              f"({workers} worker{'s' if workers != 1 else ''}); {summary.warnings} warning(s)")
        for path in summary.json_files:
            print(f"  {path}")
    if failed:
        report(f"error: {failed} clip(s) could not be converted (see above); the dataset holds the others")
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
