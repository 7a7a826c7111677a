"""How long a training step waits for its data: the training loader (frame decoding, windows, augmentation) with
0, 1 and 2 DataLoader workers, against the step's own compute, on a DAUB-layout folder such as an imported video
dataset (thousands of PNG frames).

Every flag after this script's own is a training flag, parsed as train_daub.py parses it, so the loader and the
step are exactly those of that training; the run folder is a temporary one.

Examples:
    python benchmarks/loader.py --data-root datasets/drone_ir --input-size 256x320 --phi nano --frame-step 4
    python benchmarks/loader.py --steps 40 --worker-counts 0 2 -- --data-root datasets/synthetic_daub --amp bf16
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from utils.runtime.cli import make_parser  # noqa: E402
from utils.runtime.entry import run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per worker count (default: 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (workers starting, allocations)")
    parser.add_argument("--worker-counts", type=int, nargs="+", default=[0, 1, 2], metavar="N",
                        help="DataLoader workers to compare (default: 0 1 2)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    return parser


def timed_steps(trainer, steps: int, warmup: int) -> dict[str, float]:
    """Mean seconds per step spent waiting for the next batch and computing it (the trainer's own step: forward,
    loss, backward, optimizer, EMA)."""
    from utils.errors import SSTNetError
    from utils.runtime.device import synchronize

    trainer.enter_phase(trainer.phase_at(0))
    trainer.train_mode()
    batches = iter(trainer.loader(trainer.train_set, trainer.train_sampler))
    waited = computed = 0.0
    for step in range(warmup + steps):
        started = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            raise SSTNetError(f"--steps {steps}: the epoch has only {step} batches; raise --epoch-fraction") from None
        loaded = time.perf_counter()
        trainer.train_step(batch, 0, step)
        synchronize(trainer.device)
        finished = time.perf_counter()
        if step >= warmup:
            waited += loaded - started
            computed += finished - loaded
    del batches
    return {"wait_s": waited / steps, "compute_s": computed / steps, "wait_share": waited / (waited + computed)}


def main(argv: list[str] | None = None) -> int:
    args, training_argv = build_parser().parse_known_args(argv)
    training_argv = [arg for arg in training_argv if arg != "--"]
    from utils.data.bundled import DAUB
    from utils.errors import SSTNetError
    from utils.train.options import parse_config
    from utils.train.trainer import Trainer

    if args.steps < 1 or args.warmup < 0 or any(count < 0 for count in args.worker_counts):
        raise SSTNetError("--steps must be at least 1, --warmup and --worker-counts at least 0")
    results = {}
    with tempfile.TemporaryDirectory(prefix="sstnet_loader_") as folder:
        for workers in args.worker_counts:
            config = parse_config([*training_argv, "--save-dir", str(Path(folder) / f"w{workers}")], DAUB)
            config = dataclasses.replace(config, data=dataclasses.replace(config.data, workers=workers))
            trainer = Trainer(config)
            try:
                results[workers] = timed_steps(trainer, args.steps, args.warmup)
            finally:
                if trainer.lock is not None:
                    trainer.lock.release()
            row = results[workers]
            print(f"{workers} worker(s): {1000 * row['wait_s']:.0f} ms waiting for data + "
                  f"{1000 * row['compute_s']:.0f} ms computing per step: {row['wait_share']:.0%} of the step waits",
                  flush=True)
    if args.json is not None:
        from utils.runtime.fileio import atomic_open
        with atomic_open(args.json) as handle:
            json.dump({"argv": training_argv, "steps": args.steps, "workers": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    run_cli(main)
