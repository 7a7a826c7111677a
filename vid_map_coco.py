"""Score SSTNet on a test split with COCO mAP50 / Precision / Recall / F1 exactly as the paper, plus Pd / Fa.

Writes into --out-dir: detections.json (COCO results), metrics.json, pr_curve.txt (the authors' results format),
pr_curve.png (with --compare: other methods' curves too) and f1_curve.png.

Examples:
    python vid_map_coco.py --weights logs/best_epoch_weights.pth --data-root /data/DAUB
    python vid_map_coco.py --onnx onnx/ --data-root /data/DAUB      # the graphs export_onnx.py wrote, on ONNX Runtime
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from utils.cli import make_parser
from utils.errors import run_cli
from utils.inference_cli import add_detector_arguments, check_detector_arguments, load_detector
from utils.train_cli import DAUB

DEFAULT_ANN = "annotations/instances_test2017.json"


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--data-root", type=Path, default=None,
                        help="dataset root (default: the bundled synthetic DAUB-layout dataset)")
    parser.add_argument("--ann", default=DEFAULT_ANN, help="COCO json to score, relative to --data-root unless absolute"
                                                           f" (default: {DEFAULT_ANN})")
    add_detector_arguments(parser, conf=0.001, nms=0.65, engine_aliases=("--mode",))
    parser.add_argument("--out-dir", type=Path, default=Path("map_out"), help="output folder (default: map_out)")
    parser.add_argument("--all-frames", action="store_true",
                        help="also score frames without annotations (default: annotated frames only, as the paper)")
    parser.add_argument("--pd-conf", type=float, default=0.5, help="confidence threshold of Pd/Fa (default: 0.5)")
    parser.add_argument("--pd-radius", type=float, default=3.0,
                        help="a target is detected by a detection whose centre lies within this many pixels of its "
                             "centre (default: 3)")
    parser.add_argument("--per-sequence", action="store_true",
                        help="also score every sequence (frame folder) on its own: a table on the console and "
                             "per_sequence.json in --out-dir")
    parser.add_argument("--compare", nargs="+", default=[], metavar="FILE",
                        help="other methods' PR-curve files (101 tab-separated precisions) to plot with ours")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from utils.annotations import read_coco
    from utils.dataloader import resolve_dataset_root
    from utils.evaluation import evaluate, per_sequence_scores, read_pr_curve, scored_records, write_eval_outputs
    from utils.fileio import ensure_dir, write_json
    from utils.train_cli import ensure_synthetic_dataset

    check_detector_arguments(args)
    for path in args.compare:
        read_pr_curve(path)  # fail before the long part
    ensure_dir(args.out_dir)
    root = resolve_dataset_root(args.data_root if args.data_root is not None else ensure_synthetic_dataset(DAUB))
    ann = Path(args.ann)
    ground_truth = read_coco(ann if ann.is_absolute() else root / ann, root)
    detector = load_detector(args, len(ground_truth.category_ids))
    started = time.perf_counter()
    result, detections = evaluate(detector.backend, ground_truth, detector.settings, all_frames=args.all_frames,
                                  pd_conf=args.pd_conf, pd_radius=args.pd_radius, progress=not args.quiet)
    elapsed = time.perf_counter() - started
    write_eval_outputs(args.out_dir, result, detections, args.compare)
    print(result.summary)
    if args.per_sequence:
        records = scored_records(ground_truth, args.all_frames)
        sequences = per_sequence_scores(ground_truth, detections, records, root, args.pd_conf, args.pd_radius)
        write_json(args.out_dir / "per_sequence.json", {name: part.as_dict() for name, part in sequences.items()},
                   indent=2)
        width = max(len(name) for name in sequences)
        for name, part in sequences.items():
            print(f"{name:<{width}}  {part.line()}")
    print(result.line())
    print(f"{result.num_frames} frames, {len(detections)} detections, {elapsed:.1f} s "
          f"({result.num_frames / max(elapsed, 1e-9):.1f} frames/s, {args.engine} engine"
          f"{' on ONNX Runtime' if args.onnx is not None else ''}); results in {args.out_dir}")
    return 0


if __name__ == "__main__":
    run_cli(main)
