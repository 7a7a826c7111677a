"""Threads × DataLoader workers on this machine, quiet and with a CPU hog on one core: training step and
evaluation speed for every setting, and the default the scripts choose (--threads left out).

Each setting runs in a fresh process (OpenMP's thread pool is set before any tensor work). The hog is a
``python -c "while True: pass"`` started before and killed after the busy half. Writes a markdown table to
stdout and, with --out, the figures as JSON.

    python benchmarks/threads.py [--steps 12] [--frames 64] [--out readme/threads.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import benchmark_data  # noqa: E402  (this folder is on the path of a script run from it)

from utils.errors import SSTNetError  # noqa: E402
from utils.runtime.cli import check_number, make_parser  # noqa: E402
from utils.runtime.entry import run_cli  # noqa: E402
from utils.runtime.fileio import write_json  # noqa: E402

THREADS = (1, 2)
WORKERS = (0, 1, 2)
# The CPU demo model: what a user of this machine trains and evaluates.
MODEL = dict(phi="nano", lstm_hidden=16, input_shape=(256, 256), num_frame=5)
TRAIN_BATCH = 4
EVAL_BATCH = 8


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per setting (after 3 warm-up)")
    parser.add_argument("--frames", type=int, default=64, help="frames evaluated per setting (after a warm-up walk)")
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset root in DAUB layout (default: ../shared/data/daub_real when present, else a "
                             "generated synthetic set)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument("--child", choices=("train", "eval"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def child(args: argparse.Namespace) -> dict:
    """One setting in this process: seconds per training step or evaluated frames per second."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from nets import Network, YOLOLoss
    from utils.data.annotations import read_coco
    from utils.data.dataset import SequenceDataset, sequence_collate
    from utils.infer.engine import DetectSettings, detect_plan
    from utils.infer.sources import plan_sequence_walk
    from utils.runtime.device import apply_threads
    from utils.runtime.model_options import resolve_workers

    resolve_workers(args)  # the scripts' default when the setting leaves --workers out
    threads = apply_threads(args.threads, args.workers)
    torch.manual_seed(0)
    model = Network(1, MODEL["num_frame"], MODEL["phi"], lstm_hidden=MODEL["lstm_hidden"])
    split = "train" if args.child == "train" else "test"
    ground_truth = read_coco(args.data / "annotations" / f"instances_{split}2017.json", args.data)
    if args.child == "train":
        dataset = SequenceDataset(ground_truth.records, MODEL["input_shape"], MODEL["num_frame"])
        loader = DataLoader(dataset, batch_size=TRAIN_BATCH, shuffle=True, num_workers=args.workers,
                            collate_fn=sequence_collate, generator=torch.Generator().manual_seed(0), drop_last=True)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        loss_fn = YOLOLoss(1)
        model.train()
        times, started = [], None
        for step, batch in enumerate(loader):
            if step == 3 + args.steps:
                break
            optimizer.zero_grad(set_to_none=True)
            outputs, motion = model(batch.images)
            (loss_fn(outputs, batch.targets) + motion).backward()
            optimizer.step()
            now = time.perf_counter()
            if step >= 3:
                times.append(now - started)
            started = now
        return {"threads": threads, "workers": args.workers, "seconds_per_step": statistics.median(times)}
    plan = plan_sequence_walk(ground_truth.records[:args.frames], MODEL["num_frame"])
    settings = DetectSettings(MODEL["input_shape"], MODEL["num_frame"], batch_size=EVAL_BATCH, workers=args.workers)
    model.eval()
    list(detect_plan(model, plan[:16], settings, progress=False))  # warm-up
    started = time.perf_counter()
    keys = sum(1 for _ in detect_plan(model, plan, settings, progress=False))
    return {"threads": threads, "workers": args.workers, "frames_per_second": keys / (time.perf_counter() - started),
            "frames": int(np.sum([ref.is_key for ref in plan]))}


def measure(kind: str, threads: int | None, workers: int, data: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--data", str(data), "--steps",
               str(args.steps), "--frames", str(args.frames)]
    if workers is not None:
        command += ["--workers", str(workers)]
    if threads is not None:
        command += ["--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SSTNetError(f"setting {kind} threads={threads} workers={workers} failed: "
                          f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.returncode}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(results: dict) -> str:
    lines = ["| load | threads/workers | train s/step | eval frames/s |", "| --- | --- | --- | --- |"]
    for load, rows in results.items():
        best_train = min(row["train"]["seconds_per_step"] for row in rows)
        best_eval = max(row["eval"]["frames_per_second"] for row in rows)
        for row in rows:
            train, evaluate = row["train"]["seconds_per_step"], row["eval"]["frames_per_second"]
            chosen = {f"{row[kind]['threads']}/{row[kind]['workers']}" for kind in ("train", "eval")}
            name = f"default ({', '.join(sorted(chosen))})" if row["default"] else f"{row['threads']}/{row['workers']}"
            lines.append(f"| {load} | {name} | {train:.3f} ({train / best_train:.2f}× best) | "
                         f"{evaluate:.1f} ({best_eval / evaluate:.2f}× best) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args)))
        return 0
    check_number("--steps", args.steps, 1)
    check_number("--frames", args.frames, 8)
    import tempfile
    with tempfile.TemporaryDirectory(prefix="sstnet_threads_") as work:
        data = benchmark_data(args.data, Path(work))
        settings = [(threads, workers, False) for threads in THREADS for workers in WORKERS] + [(None, None, True)]
        results = {}
        for load in ("quiet", "busy"):
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "busy" else None
            try:
                time.sleep(1 if hog else 0)
                results[load] = []
                for threads, workers, default in settings:
                    row = {"threads": threads, "workers": workers, "default": default,
                           "train": measure("train", threads, workers, data, args),
                           "eval": measure("eval", threads, workers, data, args)}
                    results[load].append(row)
                    shown_workers = "default" if workers is None else workers
                    print(f"{load}: threads {threads or 'default'} workers {shown_workers}: "
                          f"{row['train']['seconds_per_step']:.3f} s/step, {row['eval']['frames_per_second']:.1f} "
                          "frames/s", flush=True)
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
    print(table(results))
    if args.out is not None:
        write_json(args.out, results, indent=2)
    return 0


if __name__ == "__main__":
    run_cli(main)
