"""Score SSTNet on a test split with COCO mAP50 / Precision / Recall / F1 exactly as the paper, plus Pd / Fa.

Writes into --out-dir: detections.json (COCO results), metrics.json, summary.txt, pr_curve.txt (the authors' results
format), pr_curve.png (with --compare: other methods' curves too) and f1_curve.png. With --detections instead of
--weights, a saved COCO results file (another method's, or an earlier run's detections.json) is scored without a model,
by exactly the same protocol.

Examples:
    python vid_map_coco.py --weights logs/best_epoch_weights.pth --data-root /data/DAUB
    python vid_map_coco.py --detections other_method.json --data-root /data/DAUB
    python vid_map_coco.py --onnx onnx/ --data-root /data/DAUB      # the graphs export_onnx.py wrote, on ONNX Runtime
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from utils.data.bundled import DAUB
from utils.infer.detector import add_detector_arguments, load_detector
from utils.model_spec import DEFAULT_INPUT_SIZE, INPUT_MULTIPLE, format_input_shape, parse_input_shape
from utils.runtime.cli import check_number, given_flags, make_parser
from utils.runtime.entry import run_cli

DEFAULT_ANN = "annotations/instances_test2017.json"
# The options that only mean something when a model runs, refused with --detections.
MODEL_RUN_OPTIONS = ("conf", "nms", "engine", "letterbox", "batch_size", "workers", "phi", "num_frame", "input_size",
                     "lstm_hidden", "computation", "device", "amp", "threads", "frozen_motion")


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--data-root", type=Path, nargs="+", default=None, metavar="ROOT",
                        help="dataset root; several roots are scored together as one test set (the overall figure), "
                             "each also on its own with --group-by dataset (default: the bundled synthetic DAUB-layout "
                             "dataset)")
    parser.add_argument("--ann", default=DEFAULT_ANN, help="COCO json to score, relative to --data-root unless absolute"
                                                           f" (default: {DEFAULT_ANN})")
    add_detector_arguments(parser, conf=0.001, nms=0.65, engine_aliases=("--mode",),
                           several_sizes=f"input side, a multiple of {INPUT_MULTIPLE}, or HxW (default: "
                                         f"{DEFAULT_INPUT_SIZE}); one for every --data-root, or one per --data-root in "
                                         "order, each dataset read at its own size (e.g. 512x640 256x320: DAUB's 3-5 "
                                         "px targets at twice their size beside drone clips at theirs), the overall "
                                         "figure scoring all their detections together")
    parser.add_argument("--detections", type=Path, default=None, metavar="FILE",
                        help="score this COCO results file (a JSON list of {image_id, category_id, bbox, score}) "
                             "instead of running a model (the release's map_mode 2): every figure, file and plot as "
                             "with --weights; give --weights or --detections, not both")
    parser.add_argument("--out-dir", type=Path, default=Path("map_out"), help="output folder (default: map_out)")
    parser.add_argument("--all-frames", action="store_true",
                        help="also score frames without annotations (default: annotated frames only, as the paper)")
    parser.add_argument("--pd-conf", type=float, default=0.5, help="confidence threshold of Pd/Fa (default: 0.5)")
    parser.add_argument("--pd-radius", type=float, default=3.0,
                        help="a target is detected by a detection whose centre lies within this many pixels of its "
                             "centre (default: 3)")
    parser.add_argument("--extra-iou", type=float, nargs="+", default=[], metavar="IOU",
                        help="diagnostic: also report COCO's AP at these IoU thresholds (e.g. 0.3 0.1) beside the "
                             "paper's figures at 0.5, on the console, in metrics.json and in every table: a target a "
                             "few pixels wide whose box is a pixel off misses 0.5, so the gap between AP@0.3 and mAP50 "
                             "is targets found but boxed loosely")
    parser.add_argument("--per-sequence", action="store_true",
                        help="also score every sequence (frame folder) on its own: a table on the console and "
                             "per_sequence.json in --out-dir")
    parser.add_argument("--group-by", nargs="+", default=[], metavar="ATTRIBUTE",
                        help="also score the frames of each value of these attributes on their own: dataset (with "
                             "several --data-root), video, or an attribute of the clips in the annotation file's "
                             "videos list (videos_to_daub.py copies them from its split file, e.g. distance_bin, and "
                             "adds class from the clip's name); a table each and per_<attribute>.json in --out-dir")
    parser.add_argument("--frozen-motion", action="store_true",
                        help="diagnostic: every key frame's window is the key frame repeated T times, so the model "
                             "sees no motion; the drop from the normal figures is what motion contributes")
    parser.add_argument("--compare", nargs="+", default=[], metavar="FILE",
                        help="other methods' PR-curve files (101 tab-separated precisions) to plot with ours")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace,
                    argv: list[str]) -> list[tuple[int, int]]:
    """Exactly one of --weights and --detections, and no model options with a results file; ranges. Returns the
    --input-size shapes given for a model run (none for a results file)."""
    from utils.errors import SSTNetError
    from utils.infer.detector import check_detector_arguments

    if sum(value is not None for value in (args.weights, args.onnx, args.detections)) != 1:
        raise SSTNetError("--weights / --onnx / --detections: give exactly one (the weights of a model to run, the "
                          "folder of its exported graphs, or a COCO results file to score)")
    if args.detections is not None and args.data_root is not None and len(args.data_root) > 1:
        raise SSTNetError("--detections: scores the image ids of one annotation file; give one --data-root")
    shapes: list[tuple[int, int]] = []
    if args.detections is not None:
        given = given_flags(parser, argv) & set(MODEL_RUN_OPTIONS)
        if given:
            flags = sorted(action.option_strings[0] for action in parser._actions if action.dest in given)
            raise SSTNetError(f"{', '.join(flags)}: apply to a model run; --detections scores a results file as it is")
    else:
        check_detector_arguments(args)
        roots = len(args.data_root or [DAUB])
        sizes = args.input_size or []
        shapes = [parse_input_shape(size) for size in sizes]
        if len(sizes) not in (0, 1, roots):
            raise SSTNetError(f"--input-size {' '.join(sizes)}: give one size, or one per --data-root ({roots})")
        if args.onnx is not None and len(set(shapes)) > 1:
            raise SSTNetError(f"--input-size {' '.join(sizes)}: the graphs of --onnx take the one size they were "
                              "exported at; score each dataset in its own run")
    check_number("--pd-conf", args.pd_conf, 0, 1)
    check_number("--pd-radius", args.pd_radius, 0, low_open=True)
    for iou in args.extra_iou:
        check_number("--extra-iou", iou, 0, 1, low_open=True)
    if len(set(args.extra_iou)) < len(args.extra_iou):
        raise SSTNetError(f"--extra-iou {' '.join(f'{iou:g}' for iou in args.extra_iou)}: a threshold is given twice")
    return shapes


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    from utils.data.annotations import read_coco
    from utils.data.dataset import resolve_dataset_root
    from utils.data.bundled import ensure_synthetic_dataset
    from utils.errors import SSTNetError
    from utils.infer.evaluation import (check_group_keys, evaluate, merge_ground_truths, per_group_scores,
                                        per_sequence_scores, read_coco_results, read_pr_curve, score_detections,
                                        scored_records, write_eval_outputs)
    from utils.runtime.fileio import check_output, write_json
    from utils.sidecar import weights_inputs

    shapes = check_arguments(parser, args, argv)
    for path in args.compare:
        read_pr_curve(path)  # fail before the long part
    roots = [resolve_dataset_root(root) for root in (args.data_root or [ensure_synthetic_dataset(DAUB)])]
    ann = Path(args.ann)
    ann_paths = [ann if ann.is_absolute() else root / ann for root in roots]
    inputs = [*(("--data-root", root) for root in roots), *(("--ann", path) for path in ann_paths),
              ("--detections", args.detections), ("--onnx", args.onnx), *(("--compare", path) for path in args.compare),
              *weights_inputs("--weights", args.weights)]
    check_output(args.out_dir, "--out-dir", folder=True, inputs=inputs)
    if len(set(map(str, ann_paths))) < len(ann_paths):
        raise SSTNetError(f"--data-root / --ann: the same annotation file {ann_paths[0]} is named twice")
    parts = [(root.name, read_coco(path, root)) for root, path in zip(roots, ann_paths)]
    ground_truth = parts[0][1] if len(parts) == 1 else merge_ground_truths(parts)
    records = scored_records(ground_truth, args.all_frames)
    check_group_keys(ground_truth, records, args.group_by)  # before the long part
    started = time.perf_counter()
    if args.detections is not None:
        detections = read_coco_results(args.detections, ground_truth, ann_paths[0].name)
        result = score_detections(ground_truth, detections, [record.image_id for record in records], args.pd_conf,
                                  args.pd_radius, args.extra_iou)
    else:
        # Several sizes: one model, built (and its memory checked) for the largest, reads each root at its own.
        args.input_size = format_input_shape(max(shapes, key=lambda shape: shape[0] * shape[1])) if shapes else None
        detector = load_detector(args, len(ground_truth.category_ids))
        if len(shapes) > 1:
            print("input size per --data-root: " + ", ".join(f"{name} {format_input_shape(shape)}"
                                                              for (name, _), shape in zip(parts, shapes)))
        result, detections = evaluate(detector.backend, ground_truth, detector.settings, all_frames=args.all_frames,
                                      pd_conf=args.pd_conf, pd_radius=args.pd_radius, progress=not args.quiet,
                                      frozen_motion=args.frozen_motion, extra_ious=args.extra_iou,
                                      part_shapes=list(zip(parts, shapes)) if len(shapes) > 1 else ())
    elapsed = time.perf_counter() - started
    write_eval_outputs(args.out_dir, result, detections, args.compare)
    print(result.summary)
    tables = {"sequence": per_sequence_scores(ground_truth, detections, records, roots, args.pd_conf, args.pd_radius,
                                              args.extra_iou)} if args.per_sequence else {}
    for key in args.group_by:
        tables[key] = per_group_scores(ground_truth, detections, records, key, args.pd_conf, args.pd_radius,
                                       args.extra_iou)
    for key, table in tables.items():
        write_json(args.out_dir / f"per_{key}.json", {name: part.as_dict() for name, part in table.items()}, indent=2)
        width = max(len(name) for name in table)
        print(f"per {key}:")
        for name, part in table.items():
            print(f"{name:<{width}}  {part.line()}")
    print(("frozen motion (each window its key frame repeated): " if args.frozen_motion else "") + result.line())
    if args.detections is not None:
        print(f"{result.num_frames} frames, {len(detections)} detections scored from {args.detections}; "
              f"results in {args.out_dir}")
    else:
        print(f"{result.num_frames} frames, {len(detections)} detections, {elapsed:.1f} s "
              f"({result.num_frames / max(elapsed, 1e-9):.1f} frames/s, {args.engine} engine"
              f"{' on ONNX Runtime' if args.onnx is not None else ''}); results in {args.out_dir}")
    return 0


if __name__ == "__main__":
    run_cli(main)
