"""Accuracy of a lower precision against float32: evaluate one trained model on a test split with vid_map_coco.py
in float32 and with --amp (bf16 by default), then report the figures of both, their difference and how many
detections agree (same box to IoU 0.9, score within 0.02).

    python benchmarks/amp_accuracy.py --weights real_out/train/best_epoch_weights.pth \
        --data-root ../shared/data/daub_real --out-dir amp_out

Writes --out-dir/fp32 and --out-dir/<amp> (vid_map_coco.py's outputs) and --out-dir/amp_accuracy.json, and prints
a markdown table.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.measure import matching_boxes  # noqa: E402

from utils.errors import SSTNetError  # noqa: E402
from utils.runtime.cli import check_number, make_parser  # noqa: E402
from utils.runtime.entry import run_cli  # noqa: E402
from utils.runtime.fileio import write_json  # noqa: E402

FIGURES = ("mAP50", "precision", "recall", "f1")


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--weights", type=Path, required=True, help="trained weights (with their sidecar)")
    parser.add_argument("--data-root", type=Path, required=True, help="dataset whose test split is scored")
    parser.add_argument("--amp", choices=("bf16", "fp16"), default="bf16", help="precision compared with float32")
    parser.add_argument("--agree-conf", type=float, default=0.1,
                        help="detections scoring at least this count in the agreement (default: 0.1)")
    parser.add_argument("--out-dir", type=Path, default=Path("amp_out"), help="output folder (default: amp_out)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def evaluate(args: argparse.Namespace, amp: str) -> Path:
    """Run vid_map_coco.py with ``--amp amp`` and return its output folder."""
    out = args.out_dir / ("fp32" if amp == "none" else amp)
    command = [sys.executable, str(REPO / "vid_map_coco.py"), "--weights", str(args.weights), "--data-root",
               str(args.data_root), "--amp", amp, "--out-dir", str(out), "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SSTNetError(f"vid_map_coco.py --amp {amp}: {(result.stderr.strip().splitlines() or ['failed'])[-1]}")
    return out


def rows_by_image(path: Path, min_score: float) -> dict[int, np.ndarray]:
    """COCO results as per-image rows (x1, y1, x2, y2, score, 1, class), the layout matching_boxes reads."""
    rows = defaultdict(list)
    for entry in json.loads(path.read_text()):
        if entry["score"] >= min_score:
            x, y, w, h = entry["bbox"]
            rows[entry["image_id"]].append([x, y, x + w, y + h, entry["score"], 1.0, entry["category_id"]])
    return {image: np.asarray(values, dtype=np.float64) for image, values in rows.items()}


def agreement(reference: Path, other: Path, min_score: float) -> tuple[int, int, int]:
    """(detections of the reference, of the other, reference detections the other reproduces)."""
    a, b = rows_by_image(reference, min_score), rows_by_image(other, min_score)
    empty = np.zeros((0, 7))
    matched = sum(matching_boxes(rows, b.get(image, empty)) for image, rows in a.items())
    return sum(map(len, a.values())), sum(map(len, b.values())), matched


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_number("--agree-conf", args.agree_conf, 0, 1)
    if not args.weights.is_file():
        raise SSTNetError(f"--weights {args.weights}: no such file")
    folders = {"fp32": evaluate(args, "none"), args.amp: evaluate(args, args.amp)}
    metrics = {name: json.loads((folder / "metrics.json").read_text()) for name, folder in folders.items()}
    total_fp32, total_amp, matched = agreement(folders["fp32"] / "detections.json",
                                               folders[args.amp] / "detections.json", args.agree_conf)
    report = {"weights": str(args.weights), "data_root": str(args.data_root), "amp": args.amp,
              "figures": {name: {key: metrics[name][key] for key in FIGURES} for name in metrics},
              "difference": {key: metrics[args.amp][key] - metrics["fp32"][key] for key in FIGURES},
              "agreement": {"min_score": args.agree_conf, "fp32_detections": total_fp32,
                            f"{args.amp}_detections": total_amp, "fp32_reproduced": matched}}
    write_json(args.out_dir / "amp_accuracy.json", report, indent=2)
    print("| | " + " | ".join(FIGURES) + " |\n| --- |" + " --- |" * len(FIGURES))
    for name in (*metrics, "difference"):
        values = report["difference"] if name == "difference" else report["figures"][name]
        print(f"| {name} | " + " | ".join(f"{values[key]:+.2f}" if name == "difference" else f"{values[key]:.2f}"
                                           for key in FIGURES) + " |")
    print(f"detections scoring >= {args.agree_conf}: {total_fp32} in fp32, {total_amp} in {args.amp}; "
          f"{matched} of the fp32 ones reproduced ({100 * matched / max(total_fp32, 1):.1f} %)")
    return 0


if __name__ == "__main__":
    run_cli(main)
