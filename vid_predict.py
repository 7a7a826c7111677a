"""Run SSTNet on your own frames and see the detections.

Modes:
  predict  one frame (its T-frame window is read from its folder) -> an annotated PNG
  dir      every frame of a sequence folder, in numeric order -> annotated PNGs in --out
  video    a folder of frames or a video file -> an annotated .mp4 at the source's frame size
  fps      frames/s of the streaming engine and of the released window computation on the source

Examples:
  python vid_predict.py --weights logs/best_epoch_weights.pth --source /data/DAUB/images/test/data5/40.bmp
  python vid_predict.py --mode video --weights W.pth --source /data/DAUB/images/test/data5 --out data5.mp4
  python vid_predict.py --mode video --onnx onnx/ --source clip.mp4    # exported graphs on ONNX Runtime
"""
from __future__ import annotations

import argparse
import contextlib
import time
from collections import Counter
from pathlib import Path

from utils.cli import make_parser
from utils.errors import run_cli
from utils.inference_cli import add_detector_arguments, check_detector_arguments, load_detector

MODES = ("predict", "dir", "video", "fps")
ENGINES = ("stream", "window")  # timed by fps mode
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv")


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--mode", default="predict", choices=MODES, help="what to do (default: predict)")
    parser.add_argument("--source", required=True, type=Path,
                        help="a frame (predict), a sequence folder (dir), a folder or video file (video, fps)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output PNG (predict), folder (dir) or .mp4 (video); default: under img_out/")
    add_detector_arguments(parser, conf=0.5, nms=0.3)
    parser.add_argument("--video-fps", type=float, default=None,
                        help="frame rate of the written video (default: the source video's, 25 for frame folders)")
    parser.add_argument("--crop", action="store_true", help="also save every detection as a PNG crop")
    parser.add_argument("--count", action="store_true", help="print the number of detections per class")
    parser.add_argument("--gt", type=Path, default=None,
                        help="COCO json whose boxes are drawn in green on the frames it lists")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="dataset root of --gt (default: the folder above its 'annotations' folder)")
    parser.add_argument("--fps-frames", type=int, default=50, help="fps mode: frames timed per engine (default: 50)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def default_out(args: argparse.Namespace) -> Path:
    base = Path("img_out")
    if args.mode == "predict":
        return base / f"{args.source.parent.name}_{args.source.stem}.png"
    if args.mode == "dir":
        return base / args.source.name
    return base / f"{args.source.stem if args.source.is_file() else args.source.name}.mp4"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np

    from utils.annotations import dataset_root_of, read_coco
    from utils.errors import SSTNetError
    from utils.fileio import ensure_dir
    from utils.inference import detect_batches, detect_plan, folder_frames, plan_frames, video_batches, video_frame_count
    from utils.visualize import crops, draw_frame, open_video, save_png, source_fps

    if args.fps_frames < 1:
        raise SSTNetError(f"--fps-frames {args.fps_frames}: must be at least 1")
    if not args.source.exists():
        raise SSTNetError(f"--source {args.source}: not found")
    is_video = args.source.is_file() and args.source.suffix.lower() in VIDEO_SUFFIXES
    if args.mode == "predict" and not args.source.is_file():
        raise SSTNetError(f"--source {args.source}: predict mode takes one frame file (use --mode dir for a folder)")
    if args.mode == "dir" and not args.source.is_dir():
        raise SSTNetError(f"--source {args.source}: dir mode takes a folder of frames")
    if args.mode in ("video", "fps") and not (args.source.is_dir() or is_video):
        raise SSTNetError(f"--source {args.source}: expected a folder of frames or a video file "
                          f"({', '.join(VIDEO_SUFFIXES)})")
    check_detector_arguments(args)

    class_names: list[str] | None = None
    truth: dict[Path, np.ndarray] = {}
    if args.gt is not None:
        gt_root = args.data_root if args.data_root is not None else dataset_root_of(args.gt)
        ground_truth = read_coco(args.gt, gt_root)
        categories = {c["id"]: c.get("name", str(c["id"])) for c in ground_truth.data["categories"]}
        class_names = [categories[category_id] for category_id in ground_truth.category_ids]
        truth = {record.path.resolve(): record.boxes for record in ground_truth.records}
    detector = load_detector(args, len(class_names) if class_names is not None else None,
                             engines=ENGINES if args.mode == "fps" else None)
    backend, settings, num_frame = detector.backend, detector.settings, detector.spec.num_frame
    if class_names is None:
        class_names = list(detector.trained.labels)

    if args.mode == "fps":
        return measure_fps(detector, args, is_video)

    out = args.out if args.out is not None else default_out(args)
    if is_video:
        batches = video_batches(args.source, settings.input_shape, settings.batch_size, num_frame)
        results = detect_batches(backend, batches, settings, video_frame_count(args.source), not args.quiet,
                                 desc=args.mode)
    else:
        frames = [args.source] if args.mode == "predict" else folder_frames(args.source)
        results = detect_plan(backend, plan_frames(frames, num_frame), settings, not args.quiet, desc=args.mode,
                              keep_original=True)

    totals: Counter = Counter()
    crop_dir = None
    if args.crop:
        crop_dir = ensure_dir((out.parent if args.mode in ("predict", "video") else out) / "crops")
    with contextlib.ExitStack() as stack:
        writer = None
        if args.mode == "video":
            writer = stack.enter_context(open_video(out, args.video_fps or (source_fps(args.source) if is_video
                                                                             else 25.0)))
        for item, detections in results:
            name = f"{Path(item.ref.sequence).name}_{item.ref.number}"
            gt_boxes = truth.get(item.ref.path.resolve()) if item.ref.path is not None else None
            frame = draw_frame(item.image, detections, class_names, gt_boxes)
            counts = Counter(class_names[int(c)] for c in detections[:, 6])
            totals.update(counts)
            if args.count:
                listed = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none"
                print(f"{item.ref.path or name}: {listed}")
            if crop_dir is not None:
                for index, pixels in enumerate(crops(item.image, detections)):
                    save_png(pixels, crop_dir / f"{name}_{index}.png")
            if writer is not None:
                writer.write(np.asarray(frame))
            elif args.mode == "predict":
                save_png(np.asarray(frame), out)
            else:
                save_png(np.asarray(frame), ensure_dir(out) / f"{item.ref.path.stem}.png")
    summary = ", ".join(f"{n} {k}" for k, n in sorted(totals.items())) or "no detections"
    print(f"{summary}; wrote {out}")
    return 0


def measure_fps(detector, args: argparse.Namespace, is_video: bool) -> int:
    """Frames/s of the streaming engine (ours) and of the released computation (every window through the
    backbone T times), on the same frames decoded once beforehand, at batch 1 (per-frame latency). With ``--onnx``
    the exported graphs are timed, in the computations they were exported in."""
    import dataclasses
    import itertools

    from utils.device import synchronize
    from utils.inference import (SequenceDetector, folder_frames, frame_batches, plan_frames, postprocess,
                                 video_batches)

    settings = detector.settings
    single = dataclasses.replace(settings, batch_size=1)
    if is_video:
        source = video_batches(args.source, settings.input_shape, 1, settings.num_frame)
    else:
        source = frame_batches(plan_frames(folder_frames(args.source), settings.num_frame), settings.input_shape, 1,
                               settings.workers)
    batches = list(itertools.islice(source, args.fps_frames))

    def walk(engine: SequenceDetector, frames) -> None:
        engine.reset()
        for batch in frames:
            postprocess(engine.process(batch), single)
        synchronize(detector.device)

    rates = {}
    runtime = " on ONNX Runtime" if detector.model is None else ""
    for engine, computation in zip(ENGINES, ("fast", "released")):
        if detector.model is None:
            computation = detector.backend.computation(engine)
        else:
            detector.model.set_computation(computation)
        walker = SequenceDetector(detector.backend, settings.num_frame, engine)
        walk(walker, batches[:5])  # warm-up
        started = time.perf_counter()
        walk(walker, batches)
        rates[engine] = len(batches) / (time.perf_counter() - started)
        print(f"{engine:6s}: {rates[engine]:7.2f} frames/s ({1000 / rates[engine]:.1f} ms/frame) over "
              f"{len(batches)} frames at {settings.input_shape[0]}x{settings.input_shape[1]} ({computation} "
              f"computation{runtime})")
    print(f"streaming speed-up: {rates['stream'] / rates['window']:.2f}x")
    return 0


if __name__ == "__main__":
    run_cli(main)
