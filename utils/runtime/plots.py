"""PNG plots of training curves and evaluation results (matplotlib, no display needed)."""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .fileio import atomic_path  # noqa: E402


def save_figure(figure, path: str | os.PathLike) -> None:
    """Save and close ``figure`` atomically."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(figure)


def plot_curves(x: Sequence[float], curves: Mapping[str, Sequence[float]], path: str | os.PathLike,
                xlabel: str, ylabel: str, title: str) -> None:
    """Line plot of several named series over ``x``; series of NaN are left out."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, values in curves.items():
        values = np.asarray(values, dtype=float)
        if len(values) and not np.isnan(values).all():
            axis.plot(x, values, marker="o" if len(values) < 20 else None, markersize=3, label=label)
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axis.grid(alpha=0.3)
    if axis.lines:
        axis.legend()
    save_figure(figure, path)


def plot_pr_curves(curves: Mapping[str, Sequence[float]], path: str | os.PathLike,
                   title: str = "PR curve (IoU 0.5)") -> None:
    """Precision over the 101 COCO recall points for one or more methods."""
    recall = np.linspace(0, 1, 101)
    figure, axis = plt.subplots(figsize=(5, 5))
    for label, precision in curves.items():
        axis.plot(recall, precision, label=label)
    axis.set(xlabel="Recall", ylabel="Precision", title=title, xlim=(0, 1), ylim=(0, 1.02))
    axis.grid(alpha=0.3)
    axis.legend(loc="lower left")
    save_figure(figure, path)


def plot_f1_confidence(thresholds: np.ndarray, precision: np.ndarray, recall: np.ndarray, f1: np.ndarray,
                       path: str | os.PathLike) -> None:
    """Precision, recall and F1 against the confidence threshold, with the best F1 marked."""
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(thresholds, precision, label="Precision")
    axis.plot(thresholds, recall, label="Recall")
    axis.plot(thresholds, f1, label="F1", linewidth=2)
    best = int(np.argmax(f1))
    axis.axvline(thresholds[best], color="grey", linestyle="--", linewidth=1)
    axis.set(xlabel="Confidence threshold", ylabel="Value", xlim=(0, 1), ylim=(0, 1.02),
             title=f"F1 {f1[best]:.3f} at confidence {thresholds[best]:.2f}")
    axis.grid(alpha=0.3)
    axis.legend()
    save_figure(figure, path)
