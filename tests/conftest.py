"""Shared test fixtures: paths, the real DAUB clips beside the checkout, and tiny hand-made sequences."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("SSTNET_SHARED", REPO.parent / "shared"))
DAUB_REAL = SHARED / "data" / "daub_real"
DRONE_VIDEOS = SHARED / "data" / "drone_ir" / "Video_IR"


@pytest.fixture(scope="session")
def daub_real() -> Path:
    """The six real DAUB clips in ../shared; tests using them skip only when the folder is absent."""
    if not (DAUB_REAL / "annotations").is_dir():
        pytest.skip(f"{DAUB_REAL} not present")
    return DAUB_REAL


def daub_excerpt(source: Path, out: Path, frames: int) -> Path:
    """A DAUB-layout folder at ``out`` holding the first ``frames`` frames of every clip of ``source`` (linked, not
    copied) and their annotations: the same clips and splits for end-to-end tests that need not walk every frame."""
    for coco_file in sorted((source / "annotations").glob("instances_*.json")):
        data = json.loads(coco_file.read_text())
        images = [image for image in data["images"] if int(Path(image["file_name"]).stem) < frames]
        kept = {image["id"] for image in images}
        for image in images:
            link = out / image["file_name"]
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((source / image["file_name"]).resolve())
        write_coco(out / "annotations" / coco_file.name, images,
                   [item for item in data["annotations"] if item["image_id"] in kept], data["categories"])
    return out


def make_training_flags(target: str, *variables: str) -> list[str]:
    """The flags `make TARGET` passes to train_daub.py, read from make's dry run (``variables``: NAME=value)."""
    result = subprocess.run(["make", "-n", "--no-print-directory", "-o", ".venv/.installed", target, *variables],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    script = result.stdout.replace("\\\n", " ")
    command = script[script.index("train_daub.py") + len("train_daub.py"):]
    return shlex.split(command[:command.index(";")])


def link_drone_clips(folder: Path, clips) -> Path:
    """``folder`` holding links to the video and label file of each of ``clips`` of the drone-IR dataset in
    ../shared, laid out as the dataset lays them out."""
    folder.mkdir(parents=True, exist_ok=True)
    for clip in clips:
        for name in (f"{clip}.mp4", f"{clip}_LABELS.mat"):
            (folder / name).symlink_to(DRONE_VIDEOS / name)
    return folder


def moving_sequence(folder: Path, count: int, rng) -> None:
    """``count`` noisy 48x80 BMP frames with a bright 4x4 target moving 1 px down and 3 px right per frame."""
    folder.mkdir(parents=True)
    for k in range(count):
        image = rng.integers(0, 60, (48, 80), dtype=np.uint8)
        image[10 + k:14 + k, 5 + 3 * k:9 + 3 * k] = 250
        cv2.imwrite(str(folder / f"{k}.bmp"), image)


def write_frames(folder: Path, numbers, size=(32, 48), suffix=".bmp", value_of=lambda n: 10 * n) -> list[Path]:
    """Write constant grey frames named by ``numbers`` whose intensity tells which frame it is."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in numbers:
        path = folder / f"{number}{suffix}"
        cv2.imwrite(str(path), np.full((*size, 3), value_of(number), np.uint8))
        paths.append(path)
    return paths


def write_coco(path: Path, images: list[dict], annotations: list[dict], categories=None) -> Path:
    """Write a COCO file; image and annotation dicts are taken as given (ids included)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"images": images, "annotations": annotations,
            "categories": categories if categories is not None else [{"id": 1, "name": "target"}]}
    path.write_text(json.dumps(data))
    return path


def tiny_synthetic_dataset(root: Path, seed: int, train_sequences: int, frames_per_sequence: int) -> Path:
    """A 64×64 synthetic DAUB-layout dataset with one test sequence, small enough for end-to-end CLI tests."""
    from utils.data.synthetic import SyntheticConfig, generate_dataset
    generate_dataset(root, SyntheticConfig(seed=seed, train_sequences=train_sequences, test_sequences=1,
                                           frames_per_sequence=frames_per_sequence, height=64, width=64),
                     progress=False)
    return root


def frames_of(video) -> tuple[int, tuple[int, int]]:
    """A written video's frame count and (width, height), as OpenCV reads it back."""
    capture = cv2.VideoCapture(str(video))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    capture.release()
    return count, size


def run_script(*argv, timeout: float | None = 600, **kwargs):
    """Run a script of the repository (or ``-m module``) with this Python, capturing its text output."""
    import subprocess
    return subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, **kwargs)


def assert_clean_error(result, *fragments):
    """A refusal: non-zero exit, the last stderr line an ``error:`` line holding every fragment, no traceback."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])


def calibrated_tiny_model(num_classes: int, num_frame: int, shape: tuple[int, int]):
    """A tiny nano model whose output depends strongly on every frame: the parity recipe's weights with BatchNorm
    statistics measured on random windows, as training would (untouched statistics let an untrained deep net's
    signal fade until every frame gives the same output). Train mode is left; callers choose eval or double."""
    import torch
    from parity_recipe import make_state

    from nets import Network
    model = Network(num_classes, num_frame, "nano", lstm_hidden=8)
    layout = [(key, tuple(value.shape), str(value.dtype)) for key, value in model.state_dict().items()]
    model.load_state_dict(make_state(layout))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, num_frame, *shape, generator=generator))
    return model


def prior_weights(folder: Path, prior: float = 0.5) -> Path:
    """Untrained nano weights (T = 5, motion branch 8 wide) whose head prior gives detections of many scores on
    every frame, written to ``folder/tiny.pth``."""
    import torch

    from nets import Network
    torch.manual_seed(0)
    model = Network(1, 5, "nano", lstm_hidden=8)
    model.head.initialize_biases(prior)
    path = folder / "tiny.pth"
    torch.save(model.state_dict(), path)
    return path
