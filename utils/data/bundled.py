"""The bundled synthetic datasets a script uses when no ``--data-root`` is given, generated on first use."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DatasetDefaults:
    """What a training script trains on when no ``--data-root`` is given: the bundled synthetic dataset."""

    name: str
    layout: str
    synthetic_root: Path


DAUB = DatasetDefaults("DAUB", "daub", REPO_ROOT / "datasets" / "synthetic_daub")
IRDST = DatasetDefaults("IRDST", "irdst", REPO_ROOT / "datasets" / "synthetic_irdst")


def ensure_synthetic_dataset(defaults: DatasetDefaults, progress: bool = True) -> Path:
    """The bundled synthetic dataset of ``defaults``, generated (default seed) the first time it is needed."""
    root = defaults.synthetic_root
    if not (root / "annotations" / "instances_test2017.json").exists():
        from .synthetic import SyntheticConfig, generate_dataset  # only on first use: it imports OpenCV
        print(f"generating the bundled synthetic {defaults.layout} dataset in {root} (first use)")
        generate_dataset(root, SyntheticConfig(layout=defaults.layout), progress=progress)
    return root
