"""What a training run records each epoch: results.csv, TensorBoard scalars and the loss / mAP plots."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..runtime.fileio import write_text
from ..runtime.plots import plot_curves

COLUMNS = ("epoch", "lr", "loss", "motion_loss", "val_loss", "mAP50", "precision", "recall", "f1")


class RunLogger:
    """Keeps the per-epoch rows of a run and rewrites its records after each epoch (rank 0 only)."""

    def __init__(self, run_dir: Path, rows: list[dict] | None = None, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self.rows: list[dict] = list(rows or [])
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported lazily: it is slow to import
            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def add(self, row: dict) -> dict:
        """Record one epoch (missing metrics are NaN) in memory; :meth:`write` puts it on disk."""
        row = {column: row.get(column, math.nan) for column in COLUMNS}
        self.rows.append(row)
        return row

    def write(self) -> None:
        """Bring TensorBoard, results.csv, loss.png and map.png up to the rows recorded so far (called after the
        epoch's weights and checkpoint are on disk, so results.csv never lists an epoch without a checkpoint)."""
        row = self.rows[-1]
        if self.writer is not None:
            for column in COLUMNS[1:]:
                if not math.isnan(row[column]):
                    self.writer.add_scalar(column, row[column], row["epoch"])
            self.writer.flush()
        self._write_csv()
        epochs = [r["epoch"] for r in self.rows]
        plot_curves(epochs, {"train loss": [r["loss"] for r in self.rows],
                             "val loss": [r["val_loss"] for r in self.rows],
                             "motion loss": [r["motion_loss"] for r in self.rows]},
                    self.run_dir / "loss.png", "Epoch", "Loss", "Training and validation loss")
        evaluated = [r for r in self.rows if not math.isnan(r["mAP50"])]
        if evaluated:
            plot_curves([r["epoch"] for r in evaluated],
                        {name: [r[key] for r in evaluated] for name, key in
                         (("mAP50", "mAP50"), ("Precision", "precision"), ("Recall", "recall"), ("F1", "f1"))},
                        self.run_dir / "map.png", "Epoch", "%", "Validation mAP50 / Precision / Recall / F1")

    def _write_csv(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({key: ("" if isinstance(value, float) and math.isnan(value) else
                                   (f"{value:.6g}" if isinstance(value, float) else value))
                             for key, value in row.items()})
        write_text(self.run_dir / "results.csv", buffer.getvalue())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
