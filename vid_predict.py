"""Run SSTNet on your own frames and see the detections.

Modes:
  predict  one frame (its T-frame window is read from its folder) -> an annotated PNG
  dir      every frame of a sequence folder, in numeric order -> annotated PNGs in --out
  video    a folder of frames, a video file, a camera (its index, e.g. 0) or a stream URL (rtsp://, http://...)
           -> an annotated .mp4 at the source's frame size; a camera or stream is read frame by frame as it arrives
           until it ends or Ctrl-C / SIGTERM (the video written so far is kept), --show also displays it
  fps      frames/s of the streaming engine and of the released window computation on the source

Examples:
  python vid_predict.py --weights logs/best_epoch_weights.pth --source /data/DAUB/images/test/data5/40.bmp
  python vid_predict.py --mode video --weights W.pth --source /data/DAUB/images/test/data5 --out data5.mp4
  python vid_predict.py --mode video --weights W.pth --source 0 --show
  python vid_predict.py --mode video --onnx onnx/ --source clip.mp4    # exported graphs on ONNX Runtime
"""
from __future__ import annotations

import argparse
import contextlib
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from utils.infer.detector import add_detector_arguments, check_detector_arguments, load_detector
from utils.runtime.cli import check_number, make_parser
from utils.runtime.entry import run_cli

if TYPE_CHECKING:
    import cv2

    from utils.infer.detector import Detector

MODES = ("predict", "dir", "video", "fps")
ENGINES = ("stream", "window")  # timed by fps mode
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv")


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--mode", default="predict", choices=MODES, help="what to do (default: predict)")
    parser.add_argument("--source", required=True,
                        help="a frame (predict), a sequence folder (dir), a folder or video file (video, fps), or in "
                             "video mode a camera index (0, 1, ...; a path of that name is read instead) or a stream "
                             "URL (rtsp://, http://...)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output PNG (predict), folder (dir) or .mp4 (video); default: under img_out/ (camera N: "
                             "img_out/cameraN.mp4, a stream: img_out/stream.mp4)")
    parser.add_argument("--show", action="store_true",
                        help="video mode: also show the annotated frames in a window as they are made (needs a display "
                             "and OpenCV with GUI support; q or Esc stops)")
    add_detector_arguments(parser, conf=0.5, nms=0.3)
    parser.add_argument("--video-fps", type=float, default=None,
                        help="frame rate of the written video (default: the rate the video, camera or stream declares, "
                             "else 25)")
    parser.add_argument("--stream-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="a stream URL's limit to open and to deliver each frame; a stream silent that long ends "
                             "the run with a note (default: 10)")
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


def default_out(mode: str, source: Path | int | str) -> Path:
    """Where output goes without ``--out``: under img_out/, named after the source."""
    base = Path("img_out")
    if isinstance(source, int):
        return base / f"camera{source}.mp4"
    if isinstance(source, str):
        return base / "stream.mp4"
    if mode == "predict":
        return base / f"{source.parent.name}_{source.stem}.png"
    if mode == "dir":
        return base / source.name
    return base / f"{source.stem if source.is_file() else source.name}.mp4"


def check_source(args: argparse.Namespace) -> Path | int | str:
    """The source ``--source`` names, checked against the mode: a path, a camera index or a stream URL."""
    from utils.errors import SSTNetError
    from utils.infer.sources import live_source

    live = live_source(args.source)
    if isinstance(live, int) and Path(args.source).exists():
        # A frame folder (or file) named like a camera index: what is on disk is what the user means.
        print(f"note: --source {args.source}: reading the path ./{args.source}, not camera {live} (give the camera "
              "from a folder without that name)")
        live = None
    if live is not None:
        if args.mode != "video":
            raise SSTNetError(f"--source {args.source}: a camera or stream is read in --mode video only")
        return live
    source = Path(args.source)
    if not source.exists():
        raise SSTNetError(f"--source {source}: not found")
    if args.mode == "predict" and not source.is_file():
        raise SSTNetError(f"--source {source}: predict mode takes one frame file (use --mode dir for a folder)")
    if args.mode == "dir" and not source.is_dir():
        raise SSTNetError(f"--source {source}: dir mode takes a folder of frames")
    if args.mode in ("video", "fps") and not (source.is_dir() or is_video_file(source)):
        raise SSTNetError(f"--source {source}: expected a folder of frames or a video file "
                          f"({', '.join(VIDEO_SUFFIXES)})")
    return source


def is_video_file(source: Path) -> bool:
    return source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from utils.data.annotations import dataset_root_of, read_coco
    from utils.errors import SSTNetError
    from utils.infer.sources import open_capture
    from utils.infer.visualize import window_unavailable
    from utils.runtime.fileio import check_output
    from utils.sidecar import weights_inputs

    check_number("--fps-frames", args.fps_frames, 1)
    check_number("--video-fps", args.video_fps, 0, 1000, low_open=True)
    check_number("--stream-timeout", args.stream_timeout, 0, 3600, low_open=True)
    source = check_source(args)
    if args.show:
        if args.mode != "video":
            raise SSTNetError("--show: applies to --mode video")
        reason = window_unavailable()
        if reason is not None:
            raise SSTNetError(f"--show: {reason}")
    check_detector_arguments(args)
    out = args.out if args.out is not None else default_out(args.mode, source)
    if args.mode != "fps":
        inputs = [("--source", source if isinstance(source, Path) else None), ("--gt", args.gt),
                  ("--onnx", args.onnx), *weights_inputs("--weights", args.weights)]
        check_output(out, "--out", folder=args.mode == "dir", inputs=inputs)
    # A camera or stream is opened before the model loads, so one that cannot be opened is said at once.
    capture = (open_capture(source, f"--source {args.source}", args.stream_timeout) if not isinstance(source, Path)
               else None)
    try:
        class_names: list[str] | None = None
        truth = {}
        if args.gt is not None:
            gt_root = args.data_root if args.data_root is not None else dataset_root_of(args.gt)
            ground_truth = read_coco(args.gt, gt_root)
            categories = {c["id"]: c.get("name", str(c["id"])) for c in ground_truth.data["categories"]}
            class_names = [categories[category_id] for category_id in ground_truth.category_ids]
            truth = {record.path.resolve(): record.boxes for record in ground_truth.records}
        detector = load_detector(args, len(class_names) if class_names is not None else None,
                                 engines=ENGINES if args.mode == "fps" else None)
        if class_names is None:
            class_names = list(detector.trained.labels)
        if args.mode == "fps":
            return measure_fps(detector, args, source)
        return annotate(args, detector, source, out, capture, class_names, truth)
    finally:
        if capture is not None:
            capture.release()


def annotate(args: argparse.Namespace, detector: Detector, source: Path | int | str, out: Path,
             capture: cv2.VideoCapture | None, class_names: list[str], truth: dict) -> int:
    """Detect on the source's frames (a live source's from its open ``capture``) and write them annotated (PNG, PNG
    folder or mp4), with crops and counts; a live source runs until it ends, a stop signal or the window closes."""
    import numpy as np

    from utils.infer.engine import detect_batches, detect_plan
    from utils.infer.sources import capture_batches, folder_frames, plan_frames, video_batches, video_frame_count
    from utils.infer.visualize import FrameWindow, capture_fps, crops, draw_frame, open_video, save_png, source_fps
    from utils.runtime.fileio import ensure_dir
    from utils.runtime.signals import StopRequest

    backend, settings, num_frame = detector.backend, detector.settings, detector.spec.num_frame
    if capture is not None:
        # A live source: one frame at a time as it arrives (batch 1), however long it runs.
        fps = capture_fps(capture)
        name = f"camera{source}" if isinstance(source, int) else str(source)
        batches = capture_batches(capture, name, settings.input_shape, 1, num_frame, settings.letterbox,
                                  label=f"--source {args.source}", frame_step=settings.frame_step,
                                  stall_after=args.stream_timeout if isinstance(source, str) else None)
        results = detect_batches(backend, batches, settings, None, not args.quiet, desc=args.mode)
        print(f"reading {name}; Ctrl-C or SIGTERM stops and keeps the video", flush=True)
    elif is_video_file(source):
        fps = source_fps(source)
        batches = video_batches(source, settings.input_shape, settings.batch_size, num_frame, settings.letterbox,
                                settings.frame_step)
        results = detect_batches(backend, batches, settings, video_frame_count(source), not args.quiet,
                                 desc=args.mode)
    else:
        fps = 25.0
        frames = [source] if args.mode == "predict" else folder_frames(source)
        results = detect_plan(backend, plan_frames(frames, num_frame, settings.frame_step), settings, not args.quiet,
                              desc=args.mode, keep_original=True)

    totals: Counter = Counter()
    crop_dir = None
    if args.crop:
        crop_dir = ensure_dir((out.parent if args.mode in ("predict", "video") else out) / "crops")
    stop = StopRequest(lambda message: print(message, flush=True), unit="frame")
    written, stopped = 0, False
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(open_video(out, args.video_fps or fps)) if args.mode == "video" else None
        window = FrameWindow(f"SSTNet: {args.source}") if args.show else None
        if window is not None:
            stack.callback(window.close)
        if capture is not None:
            stack.enter_context(stop.installed())
        stack.callback(results.close)  # a stop leaves the frame source early: release it now
        for item, detections in results:
            name = f"{Path(item.ref.sequence).name}_{item.ref.number}"
            gt_boxes = truth.get(item.ref.path.resolve()) if item.ref.path is not None else None
            frame = np.asarray(draw_frame(item.image, detections, class_names, gt_boxes))
            counts = Counter(class_names[int(c)] for c in detections[:, 6])
            totals.update(counts)
            if args.count:
                listed = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none"
                print(f"{item.ref.path or name}: {listed}")
            if crop_dir is not None:
                for index, pixels in enumerate(crops(item.image, detections)):
                    save_png(pixels, crop_dir / f"{name}_{index}.png")
            if writer is not None:
                writer.write(frame, str(item.ref.path or name))
            elif args.mode == "predict":
                save_png(frame, out)
            else:
                save_png(frame, ensure_dir(out) / f"{item.ref.path.stem}.png")
            written += 1
            shown = window.show(frame) if window is not None else True
            if stop.requested or not shown:
                stopped = True
                break
    summary = ", ".join(f"{n} {k}" for k, n in sorted(totals.items())) or "no detections"
    print(f"{f'stopped after {written} frames; ' if stopped else ''}{summary}; wrote {out}")
    stop.check()  # after a signal: the video is complete, and the exit code still says so (130 / 143)
    return 0


def measure_fps(detector: Detector, args: argparse.Namespace, source: Path) -> int:
    """Frames/s of the streaming engine (ours) and of the released computation (every window through the
    backbone T times), on the same frames decoded once beforehand, at batch 1 (per-frame latency). With ``--onnx``
    the exported graphs are timed, in the computations they were exported in."""
    import dataclasses
    import itertools

    from utils.infer.engine import SequenceDetector, postprocess
    from utils.infer.sources import folder_frames, frame_batches, plan_frames, video_batches
    from utils.runtime.device import synchronize

    settings = detector.settings
    single = dataclasses.replace(settings, batch_size=1)
    if is_video_file(source):
        frames = video_batches(source, settings.input_shape, 1, settings.num_frame, settings.letterbox,
                               settings.frame_step)
    else:
        frames = frame_batches(plan_frames(folder_frames(source), settings.num_frame, settings.frame_step),
                               settings.input_shape, 1, settings.workers, letterbox=settings.letterbox)
    batches = list(itertools.islice(frames, args.fps_frames))

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
        walker = SequenceDetector(detector.backend, settings.num_frame, engine, frame_step=settings.frame_step)
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
