"""Synthetic infrared sequences of moving dim small targets: the project's bundled default dataset.

Each sequence is a scene of smooth multi-scale clutter seen by a slowly panning camera. Point-like
targets move across the scene; point-like distractors of the same shape and brightness stay fixed in
it, so only motion relative to the background tells them apart. Frames get fresh sensor noise and a
per-sequence fixed-pattern noise, are quantised to 8 bits and written as 24-bit grey BMP in the DAUB or
IRDST folder layout, with COCO ground truth for the targets only.

Conventions: image coordinates put the centre of pixel (column c, row r) at (c, r). A scene point
(u, v) appears in frame t at (u - dx_t, v - dy_t), where (dx_t, dy_t) is the camera drift. COCO boxes
use pixel edges, so pixel c covers [c, c + 1).

Every sequence draws its random numbers from streams keyed on (seed, split, sequence index, purpose),
so a sequence does not depend on how many others are generated, and any frame can be rendered alone.
"""
from __future__ import annotations

import ast
import inspect
import json
import math
import os
import textwrap
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import SSTNetError
from ..runtime.fileio import atomic_path, check_dataset_folder, ensure_dir, write_json

LAYOUTS = ("daub", "irdst")
SPLITS = ("train", "test")
# (height, width) when the config leaves them unset. IRDST's real frames vary in size; a non-square
# default smaller than most of them keeps the demo light and still exercises letterboxing.
DEFAULT_FRAME_SIZE = {"daub": (256, 256), "irdst": (320, 480)}
CATEGORIES = [{"id": 1, "name": "target", "supercategory": "none"}]
# Drift offsets are snapped to OpenCV's warp precision (1/32 px), so the background moves by exactly
# the offsets that distractors are rendered with.
_WARP_STEP = 1.0 / 32.0
_CANVAS_PAD = 4
_MAX_CANVAS_SIDE = 8192
# A spot is rendered out to this many sigmas; beyond it the Gaussian is below 0.04 % of its peak.
_SPOT_RADIUS_SIGMAS = 4.0
# Random stream purposes (the last part of each stream's key).
_STREAM_DRIFT, _STREAM_LOOK, _STREAM_CLUTTER, _STREAM_TARGETS, _STREAM_DISTRACTORS, _STREAM_NOISE = range(6)


@dataclass(frozen=True)
class SyntheticConfig:
    """Every parameter of the synthetic dataset; a (min, max) pair is a range drawn from uniformly."""

    layout: str = "daub"
    """Folder layout and box style: daub (images/SPLIT/dataN/K.bmp, 8x8 boxes), irdst (images/N/K.bmp, tight boxes)."""
    seed: int = 2023
    """Master seed; a sequence depends only on (seed, split, its index in the split)."""
    train_sequences: int = 128
    """Number of training sequences."""
    test_sequences: int = 40
    """Number of test sequences."""
    frames_per_sequence: int = 25
    """Frames in every sequence."""
    height: int | None = None
    """Frame height in pixels (unset: 256 for daub, 320 for irdst)."""
    width: int | None = None
    """Frame width in pixels (unset: 256 for daub, 480 for irdst)."""
    targets_per_sequence: tuple[int, int] = (1, 2)
    """Moving targets in each sequence (DAUB has one); a target may be out of view in some frames."""
    target_sigma: tuple[float, float] = (0.5, 1.5)
    """Gaussian spot sigma in pixels, for targets and distractors alike."""
    target_snr: tuple[float, float] = (2.0, 8.0)
    """Peak contrast over the local background std (see snr_window), for targets and distractors alike."""
    target_speed: tuple[float, float] = (0.5, 3.0)
    """Target speed relative to the background in px/frame; it changes linearly between two draws."""
    target_turn_max: float = 0.02
    """Largest turn rate of a target's heading in rad/frame (gentle curvature)."""
    distractors_per_frame: tuple[float, float] = (2.0, 6.0)
    """Mean number of static point distractors in view per frame."""
    drift_speed: tuple[float, float] = (0.1, 1.0)
    """Camera pan speed in px/frame; the background moves by sub-pixel steps."""
    drift_turn_max: float = 0.01
    """Largest turn rate of the pan direction in rad/frame."""
    background_mean: tuple[float, float] = (100.0, 150.0)
    """Mean grey level of the background."""
    clutter_std: tuple[float, float] = (8.0, 22.0)
    """Std of the clutter over the whole scene in grey levels."""
    clutter_slope: tuple[float, float] = (1.5, 3.0)
    """Exponent of the clutter's 1/f power spectrum (higher: smoother, cloud-like; lower: rougher, terrain-like)."""
    clutter_sharpness: tuple[float, float] = (0.0, 1.5)
    """Soft-clipping gain that turns smooth clutter into patches with sharper edges (0: none)."""
    clutter_anisotropy: tuple[float, float] = (1.0, 3.0)
    """How much wider than tall clutter structures are (1: isotropic; larger: horizontal layers like terrain)."""
    clutter_min_wavelength: float = 3.0
    """Shortest clutter wavelength in px; finer detail is damped so sub-pixel panning leaves the texture intact."""
    clutter_max_wavelength: float = 128.0
    """Longest clutter wavelength in px; larger structures are flattened."""
    noise_std: tuple[float, float] = (1.0, 3.0)
    """Temporal sensor noise std in grey levels, fresh in every frame."""
    column_noise_std: float = 1.0
    """Fixed-pattern column offset std in grey levels, the same in every frame of a sequence (0: off)."""
    pixel_noise_std: float = 0.5
    """Fixed-pattern per-pixel offset std in grey levels, the same in every frame of a sequence (0: off)."""
    snr_window: int = 15
    """Side in px (odd) of the window around a spot's peak pixel whose background std defines its SNR."""
    daub_box_size: int = 8
    """daub layout: side of the square box around the target's peak pixel, as the DAUB labels."""
    irdst_box_sigmas: float = 2.0
    """irdst layout: box half-side in spot sigmas around the sub-pixel centre."""
    irdst_box_min: int = 3
    """irdst layout: smallest box side in px."""

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def frame_height(self) -> int:
        """Frame height after the layout default is applied."""
        return self.height if self.height is not None else DEFAULT_FRAME_SIZE[self.layout][0]

    @property
    def frame_width(self) -> int:
        """Frame width after the layout default is applied."""
        return self.width if self.width is not None else DEFAULT_FRAME_SIZE[self.layout][1]


def _fail(name: str, problem: str) -> None:
    raise SSTNetError(f"synthetic config: {name}: {problem}")


def _check_int(config: SyntheticConfig, name: str, minimum: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        _fail(name, f"expected an integer, got {value!r}")
    if value < minimum:
        _fail(name, f"must be at least {minimum}, got {value}")


def _check_float(config: SyntheticConfig, name: str, minimum: float, exclusive: bool = False) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        _fail(name, f"expected a finite number, got {value!r}")
    if value < minimum or (exclusive and value == minimum):
        _fail(name, f"must be {'greater than' if exclusive else 'at least'} {minimum}, got {value}")


def _check_range(config: SyntheticConfig, name: str, minimum: float, maximum: float = math.inf,
                 integer: bool = False, exclusive: bool = False) -> None:
    value = getattr(config, name)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        _fail(name, f"expected a (min, max) pair, got {value!r}")
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    for item in value:
        if isinstance(item, bool) or not isinstance(item, kinds) or not math.isfinite(item):
            _fail(name, f"expected two {'integers' if integer else 'finite numbers'}, got {value!r}")
    low, high = value
    if low > high:
        _fail(name, f"min {low} is greater than max {high}")
    if low < minimum or (exclusive and low == minimum):
        _fail(name, f"values must be {'greater than' if exclusive else 'at least'} {minimum}, got {value!r}")
    if high > maximum:
        _fail(name, f"values must be at most {maximum}, got {value!r}")
    # Frozen dataclass: normalise lists (from JSON or argparse) to tuples so configs compare and hash.
    object.__setattr__(config, name, (int(low), int(high)) if integer else (float(low), float(high)))


def _validate(config: SyntheticConfig) -> None:
    """Reject a config that cannot produce a sensible dataset, naming the field."""
    if config.layout not in LAYOUTS:
        _fail("layout", f"expected one of {', '.join(LAYOUTS)}, got {config.layout!r}")
    _check_int(config, "seed", 0)
    _check_int(config, "train_sequences", 0)
    _check_int(config, "test_sequences", 0)
    if config.train_sequences + config.test_sequences == 0:
        _fail("train_sequences", "train_sequences and test_sequences are both 0; nothing to generate")
    _check_int(config, "frames_per_sequence", 1)
    for name in ("height", "width"):
        if getattr(config, name) is not None:
            _check_int(config, name, 16)
    _check_range(config, "targets_per_sequence", 0, integer=True)
    _check_range(config, "target_sigma", 0.0, exclusive=True)
    _check_range(config, "target_snr", 0.0, exclusive=True)
    _check_range(config, "target_speed", 0.0)
    _check_float(config, "target_turn_max", 0.0)
    _check_range(config, "distractors_per_frame", 0.0)
    _check_range(config, "drift_speed", 0.0)
    _check_float(config, "drift_turn_max", 0.0)
    _check_range(config, "background_mean", 0.0, 255.0)
    _check_range(config, "clutter_std", 0.0)
    _check_range(config, "clutter_slope", 0.0)
    _check_range(config, "clutter_sharpness", 0.0)
    _check_range(config, "clutter_anisotropy", 1.0)
    _check_float(config, "clutter_min_wavelength", 2.0)
    _check_float(config, "clutter_max_wavelength", 2.0)
    if config.clutter_max_wavelength <= config.clutter_min_wavelength:
        _fail("clutter_max_wavelength", f"must be greater than clutter_min_wavelength "
                                        f"({config.clutter_min_wavelength}), got {config.clutter_max_wavelength}")
    _check_range(config, "noise_std", 0.0)
    _check_float(config, "column_noise_std", 0.0)
    _check_float(config, "pixel_noise_std", 0.0)
    _check_int(config, "snr_window", 3)
    if config.snr_window % 2 == 0:
        _fail("snr_window", f"must be odd so the window is centred on the peak pixel, got {config.snr_window}")
    _check_int(config, "daub_box_size", 1)
    _check_float(config, "irdst_box_sigmas", 0.0, exclusive=True)
    _check_int(config, "irdst_box_min", 1)
    # The scene canvas must hold every view of the panning camera; refuse sizes that would exhaust memory.
    longest_pan = config.drift_speed[1] * (config.frames_per_sequence - 1)
    if max(config.frame_height, config.frame_width) + longest_pan > _MAX_CANVAS_SIDE:
        _fail("drift_speed", f"a pan of up to {longest_pan:.0f} px over {config.frames_per_sequence} frames needs a "
                             f"scene larger than {_MAX_CANVAS_SIDE} px; lower drift_speed or frames_per_sequence")


def config_field_docs() -> dict[str, str]:
    """The docstring line of every ``SyntheticConfig`` field, by field name (the CLI's ``--help`` uses them)."""
    try:
        source = textwrap.dedent(inspect.getsource(SyntheticConfig))
    except (OSError, TypeError):  # no source shipped (e.g. a frozen build): help falls back to names
        return {}
    body = ast.parse(source).body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant) \
                and isinstance(following.value.value, str):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


@dataclass(frozen=True)
class SequenceSpec:
    """Where one sequence goes: its split, index within the split, folder name and folder relative to the root."""

    split: str
    index: int
    name: str
    folder: str

    def file_name(self, frame: int) -> str:
        """The frame's path relative to the dataset root, as written in the COCO ``file_name``."""
        return f"{self.folder}/{frame}.bmp"


def sequence_specs(config: SyntheticConfig) -> list[SequenceSpec]:
    """All sequences in writing order (train first), named like the real datasets.

    daub: ``images/train/data1`` ... then ``images/test/dataM`` with numbers running on across splits;
    irdst: ``images/N`` with odd N for train and even N for test.
    """
    specs = []
    for split, count in zip(SPLITS, (config.train_sequences, config.test_sequences)):
        for index in range(count):
            if config.layout == "daub":
                number = index + 1 + (config.train_sequences if split == "test" else 0)
                name = f"data{number}"
                folder = f"images/{split}/{name}"
            else:
                name = str(2 * index + (1 if split == "train" else 2))
                folder = f"images/{name}"
            specs.append(SequenceSpec(split, index, name, folder))
    return specs


def _stream(config: SyntheticConfig, split: str, index: int, *purpose: int) -> np.random.Generator:
    key = (SPLITS.index(split), index, *purpose)
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=key))


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _turning_steps(speeds: np.ndarray, heading: float, turn_rate: float) -> np.ndarray:
    """Per-frame displacement vectors (n×2) of a mover with the given speeds and a constant turn rate."""
    headings = heading + turn_rate * np.arange(len(speeds))
    return np.stack([speeds * np.cos(headings), speeds * np.sin(headings)], axis=1)


def _clutter_field(rng: np.random.Generator, shape: tuple[int, int], slope: float, sharpness: float,
                   anisotropy: float, min_wavelength: float, max_wavelength: float) -> np.ndarray:
    """Zero-mean unit-std 1/f^slope noise, band-limited to [min_wavelength, max_wavelength], stretched
    horizontally by ``anisotropy`` and optionally soft-clipped."""
    rows, cols = shape
    freq_sq = (np.fft.fftfreq(rows)[:, None] / math.sqrt(anisotropy)) ** 2 \
        + (np.fft.rfftfreq(cols)[None, :] * math.sqrt(anisotropy)) ** 2
    amplitude = (freq_sq + max_wavelength ** -2) ** (-slope / 4.0) * np.exp(-freq_sq * min_wavelength ** 2)
    amplitude[0, 0] = 0.0
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape)) * amplitude, s=shape)
    field = (field - field.mean()) / max(field.std(), 1e-12)
    if sharpness > 0:
        field = np.tanh(sharpness * field)
        field = (field - field.mean()) / max(field.std(), 1e-12)
    return field


def _spot(centre: float, sigma: float, start: int, size: int) -> np.ndarray:
    """A unit Gaussian integrated over each of ``size`` pixels from ``start`` (1-D; spots are separable)."""
    edges = (np.arange(start, start + size + 1) - 0.5 - centre) / (math.sqrt(2.0) * sigma)
    cumulative = np.array([math.erf(edge) for edge in edges])
    return 0.5 * np.diff(cumulative)


@dataclass
class PointTracks:
    """Truth for a set of point sources over the rendered frames: arrays indexed (frame, source)."""

    xy: np.ndarray
    """(n, k, 2) sub-pixel centre in image coordinates (x = column, y = row)."""
    scene_xy: np.ndarray
    """(n, k, 2) centre in scene coordinates, i.e. relative to the background (constant for distractors)."""
    peak: np.ndarray
    """(n, k, 2) integer peak pixel (column, row): the pixel nearest the centre."""
    in_view: np.ndarray
    """(n, k) whether the peak pixel lies inside the frame."""
    sigma: np.ndarray
    """(k,) spot sigma in px."""
    snr: np.ndarray
    """(k,) peak contrast over the local background std."""
    local_std: np.ndarray
    """(n, k) background std in the SNR window around the (frame-clipped) peak pixel, before any spot is added."""


@dataclass
class SequenceRender:
    """Frames of one sequence rendered in memory with their full truth."""

    spec: SequenceSpec
    frame_indices: np.ndarray
    """(n,) which frames of the sequence were rendered."""
    frames: np.ndarray
    """(n, H, W) uint8 frames as written to disk (one channel; the BMP repeats it)."""
    drift: np.ndarray
    """(n, 2) camera offset (dx, dy): a scene point (u, v) appears at (u - dx, v - dy)."""
    targets: PointTracks
    distractors: PointTracks
    boxes: list[np.ndarray]
    """Per frame, the targets' COCO boxes (k×4 [x, y, w, h]) in target order, only for targets in view."""
    noise_std: float
    """This sequence's temporal noise std."""
    backgrounds: np.ndarray | None = None
    """(n, H, W) float32 frames before spots and quantisation, when asked for."""


class SequenceScene:
    """Everything fixed for one sequence (scene, camera path, movers, sensor pattern); renders any frame on demand."""

    def __init__(self, config: SyntheticConfig, split: str, index: int) -> None:
        if split not in SPLITS:
            raise SSTNetError(f"synthetic: split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.config = config
        self.split = split
        self.index = index
        self.height, self.width = config.frame_height, config.frame_width
        count = config.frames_per_sequence
        rng_drift = _stream(config, split, index, _STREAM_DRIFT)
        steps = _turning_steps(np.full(count - 1, _uniform(rng_drift, config.drift_speed)),
                               float(rng_drift.uniform(0, 2 * np.pi)),
                               _uniform(rng_drift, (-config.drift_turn_max, config.drift_turn_max)))
        drift = np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
        self.drift = np.round(drift / _WARP_STEP) * _WARP_STEP

        rng_look = _stream(config, split, index, _STREAM_LOOK)
        self.background_mean = _uniform(rng_look, config.background_mean)
        self.clutter_std = _uniform(rng_look, config.clutter_std)
        clutter_slope = _uniform(rng_look, config.clutter_slope)
        clutter_sharpness = _uniform(rng_look, config.clutter_sharpness)
        clutter_anisotropy = _uniform(rng_look, config.clutter_anisotropy)
        self.noise_std = _uniform(rng_look, config.noise_std)
        self.fixed_pattern = (rng_look.normal(0.0, 1.0, (1, self.width)) * config.column_noise_std
                              + rng_look.normal(0.0, 1.0, (self.height, self.width)) * config.pixel_noise_std
                              ).astype(np.float32)

        # The canvas spans every view of the camera (plus a margin for the interpolation kernel).
        low = np.floor(self.drift.min(axis=0)) - _CANVAS_PAD
        high = np.ceil(self.drift.max(axis=0)) + _CANVAS_PAD
        self.canvas_origin = low
        canvas_shape = (int(high[1] - low[1]) + self.height, int(high[0] - low[0]) + self.width)
        clutter = _clutter_field(_stream(config, split, index, _STREAM_CLUTTER), canvas_shape, clutter_slope,
                                 clutter_sharpness, clutter_anisotropy, config.clutter_min_wavelength,
                                 config.clutter_max_wavelength)
        self.canvas = (self.background_mean + self.clutter_std * clutter).astype(np.float32)

        self.target_scene_xy, self.target_sigma, self.target_snr = self._targets(count)
        self.distractor_scene_xy, self.distractor_sigma, self.distractor_snr = self._distractors()

    def _targets(self, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scene tracks (frames×k×2), sigmas and SNRs of the moving targets."""
        config = self.config
        rng = _stream(config, self.split, self.index, _STREAM_TARGETS)
        number = int(rng.integers(config.targets_per_sequence[0], config.targets_per_sequence[1] + 1))
        middle = (count - 1) // 2
        tracks, sigmas, snrs = [], [], []
        for _ in range(number):
            sigmas.append(_uniform(rng, config.target_sigma))
            snrs.append(_uniform(rng, config.target_snr))
            start_speed, end_speed = _uniform(rng, config.target_speed), _uniform(rng, config.target_speed)
            heading = float(rng.uniform(0, 2 * np.pi))
            turn_rate = _uniform(rng, (-config.target_turn_max, config.target_turn_max))
            # Anchored in view at mid-sequence, so fast targets leave (or enter) near the ends.
            anchor = rng.uniform(0.1, 0.9, 2) * (self.width - 1, self.height - 1)
            speeds = np.linspace(start_speed, end_speed, count - 1) if count > 1 else np.zeros(0)
            track = np.concatenate([np.zeros((1, 2)), np.cumsum(_turning_steps(speeds, heading, turn_rate), axis=0)])
            tracks.append(track - track[middle] + anchor + self.drift[middle])
        xy = np.stack(tracks, axis=1) if tracks else np.zeros((count, 0, 2))
        return xy, np.array(sigmas), np.array(snrs)

    def _distractors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scene positions (k×2), sigmas and SNRs of the static distractors, spread over every view."""
        config = self.config
        rng = _stream(config, self.split, self.index, _STREAM_DISTRACTORS)
        low = self.drift.min(axis=0) - 0.5
        high = self.drift.max(axis=0) + (self.width - 0.5, self.height - 0.5)
        density = _uniform(rng, config.distractors_per_frame) / (self.width * self.height)
        number = int(rng.poisson(density * float(np.prod(high - low))))
        xy = rng.uniform(low, high, (number, 2))
        return (xy, rng.uniform(*config.target_sigma, number), rng.uniform(*config.target_snr, number))

    def background(self, frame: int) -> np.ndarray:
        """The frame before point sources and quantisation: panned clutter + fixed pattern + fresh noise (float32)."""
        shift = self.drift[frame] - self.canvas_origin
        warp = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]])
        image = cv2.warpAffine(self.canvas, warp, (self.width, self.height),
                               flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT101)
        noise = _stream(self.config, self.split, self.index, _STREAM_NOISE, frame).standard_normal(
            (self.height, self.width), dtype=np.float32)
        return image + self.fixed_pattern + np.float32(self.noise_std) * noise

    def _add_spots(self, image: np.ndarray, background: np.ndarray, xy: np.ndarray, sigma: np.ndarray,
                   snr: np.ndarray) -> np.ndarray:
        """Add Gaussian spots whose peak pixel has contrast snr × local background std; returns the local stds."""
        peaks = np.floor(xy + 0.5).astype(int)
        half = self.config.snr_window // 2
        local_std = np.zeros(len(xy))
        for k, ((x, y), (col, row)) in enumerate(zip(xy, peaks)):
            centre_col = min(max(col, 0), self.width - 1)
            centre_row = min(max(row, 0), self.height - 1)
            window = background[max(centre_row - half, 0):centre_row + half + 1,
                                max(centre_col - half, 0):centre_col + half + 1]
            local_std[k] = float(window.std(dtype=np.float64))
            radius = int(math.ceil(_SPOT_RADIUS_SIGMAS * sigma[k]))
            col0, row0 = max(col - radius, 0), max(row - radius, 0)
            col1, row1 = min(col + radius + 1, self.width), min(row + radius + 1, self.height)
            if col0 >= col1 or row0 >= row1:
                continue
            # Normalised by the profile's own peak (the pixel nearest the centre), so that pixel gets exactly
            # the drawn contrast wherever the centre falls within it.
            profile_x = _spot(x, sigma[k], col - radius, 2 * radius + 1)
            profile_y = _spot(y, sigma[k], row - radius, 2 * radius + 1)
            scale = snr[k] * local_std[k] / (profile_x[radius] * profile_y[radius])
            image[row0:row1, col0:col1] += (scale * np.outer(profile_y[row0 - row + radius:row1 - row + radius],
                                                             profile_x[col0 - col + radius:col1 - col + radius])
                                            ).astype(np.float32)
        return local_std

    def render(self, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Frame ``frame`` as (uint8 image, float32 background, target local stds, distractor local stds)."""
        background = self.background(frame)
        image = background.copy()
        target_std = self._add_spots(image, background, self.target_xy(frame), self.target_sigma, self.target_snr)
        distractor_std = self._add_spots(image, background, self.distractor_scene_xy - self.drift[frame],
                                         self.distractor_sigma, self.distractor_snr)
        return np.clip(np.rint(image), 0, 255).astype(np.uint8), background, target_std, distractor_std

    def target_xy(self, frame: int) -> np.ndarray:
        """(k, 2) image positions of the targets in ``frame``."""
        return self.target_scene_xy[frame] - self.drift[frame]

    def boxes(self, frame: int) -> np.ndarray:
        """COCO boxes (k×4 [x, y, w, h]) of the targets in view in ``frame``, in target order."""
        return target_boxes(self.config, self.target_xy(frame), self.target_sigma)


def _in_view(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    peaks = np.floor(xy + 0.5)
    return (peaks[..., 0] >= 0) & (peaks[..., 0] < width) & (peaks[..., 1] >= 0) & (peaks[..., 1] < height)


def target_boxes(config: SyntheticConfig, xy: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """COCO boxes of the targets whose peak pixel is in the frame, clipped to it.

    daub: a ``daub_box_size`` square around the peak pixel (``[col - 4, row - 4, 8, 8]`` by default, so the
    peak is pixel (4, 4) of the box, as in DAUB's labels). irdst: ±``irdst_box_sigmas``·sigma around the
    sub-pixel centre, at least ``irdst_box_min`` px, on whole pixel edges.
    """
    width, height = config.frame_width, config.frame_height
    keep = _in_view(xy, width, height)
    xy, sigma = xy[keep], sigma[keep]
    if config.layout == "daub":
        half = config.daub_box_size // 2
        low = np.floor(xy + 0.5) - half
        high = low + config.daub_box_size
    else:
        side = np.maximum(np.rint(2 * config.irdst_box_sigmas * sigma), config.irdst_box_min)[:, None]
        # Pixel c spans [c, c + 1) in COCO, so the sub-pixel centre x sits at x + 0.5 there.
        low = np.rint(xy + 0.5 - side / 2)
        high = low + side
    low = np.maximum(low, 0)
    high = np.minimum(high, (width, height))
    return np.concatenate([low, high - low], axis=1).astype(np.float64).reshape(-1, 4)


def _tracks(scene_xy: np.ndarray, drift: np.ndarray, sigma: np.ndarray, snr: np.ndarray,
            local_std: list[np.ndarray], width: int, height: int) -> PointTracks:
    """Truth of k sources over n frames from their scene positions (n×k×2) and the camera offsets (n×2)."""
    xy = scene_xy - drift[:, None]
    return PointTracks(xy=xy, scene_xy=scene_xy, peak=np.floor(xy + 0.5).astype(int),
                       in_view=_in_view(xy, width, height), sigma=sigma, snr=snr,
                       local_std=np.array(local_std).reshape(len(drift), len(sigma)))


def render_sequence(config: SyntheticConfig, split: str, index: int, frame_indices: Sequence[int] | None = None,
                    keep_background: bool = False) -> SequenceRender:
    """Render frames of sequence ``index`` of ``split`` in memory, exactly as ``generate_dataset`` writes them.

    ``frame_indices`` picks frames (default: all); ``keep_background`` also returns the float frames before
    point sources and quantisation, for checks of the contrast.
    """
    specs = {(spec.split, spec.index): spec for spec in sequence_specs(config)}
    if (split, index) not in specs:
        raise SSTNetError(f"synthetic: no sequence {index} in split {split!r} with this config")
    scene = SequenceScene(config, split, index)
    count = config.frames_per_sequence
    indices = np.arange(count) if frame_indices is None else np.asarray(frame_indices, dtype=int).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= count):
        raise SSTNetError(f"synthetic: frame indices must lie in 0..{count - 1}")
    frames, backgrounds, target_stds, distractor_stds = [], [], [], []
    for frame in indices:
        image, background, target_std, distractor_std = scene.render(int(frame))
        frames.append(image)
        target_stds.append(target_std)
        distractor_stds.append(distractor_std)
        if keep_background:
            backgrounds.append(background)
    drift = scene.drift[indices]
    distractor_scene = np.repeat(scene.distractor_scene_xy[None], len(indices), axis=0)
    return SequenceRender(
        spec=specs[(split, index)],
        frame_indices=indices,
        frames=np.stack(frames) if frames else np.zeros((0, scene.height, scene.width), np.uint8),
        drift=drift,
        targets=_tracks(scene.target_scene_xy[indices], drift, scene.target_sigma, scene.target_snr, target_stds,
                        scene.width, scene.height),
        distractors=_tracks(distractor_scene, drift, scene.distractor_sigma, scene.distractor_snr, distractor_stds,
                            scene.width, scene.height),
        boxes=[scene.boxes(int(frame)) for frame in indices],
        noise_std=scene.noise_std,
        backgrounds=np.stack(backgrounds) if keep_background and backgrounds else None,
    )


def _write_bmp(path: Path, image: np.ndarray) -> None:
    """Write a grey frame as a 24-bit BMP (grey in all three channels, like DAUB), atomically."""
    ok, encoded = cv2.imencode(".bmp", cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    if not ok:
        raise SSTNetError(f"{path}: could not encode the frame as BMP")
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(encoded.tobytes())
    except OSError as exc:
        raise SSTNetError(f"{path}: cannot write frame ({exc.strerror or exc})") from exc


CONFIG_NAME = "synthetic_config.json"
GENERATOR = "utils/data/synthetic.py"


def check_own_folder(root: str | os.PathLike) -> None:
    """The generator writes only into a new or empty folder, or one holding an earlier dataset of its own (its
    ``synthetic_config.json``): never over a real dataset."""
    def own(folder: Path) -> bool:
        record = folder / CONFIG_NAME
        try:
            return record.is_file() and str(json.loads(record.read_text(encoding="utf-8")).get(
                "generator", "")).endswith("synthetic.py")
        except (OSError, ValueError, AttributeError):
            return False

    check_dataset_folder(root, "--out", f"is not empty and holds no dataset of this generator ({CONFIG_NAME}); give "
                         "a new or empty folder (the generator never writes over other data)", own=own)


def generate_dataset(root: str | os.PathLike, config: SyntheticConfig | None = None,
                     progress: bool = True) -> dict[str, Any]:
    """Write the dataset under ``root`` (frames, both COCO files, ``synthetic_config.json``) and return a summary.

    The summary has ``root``, ``layout``, per split (``train``, ``test``) the numbers of ``sequences``,
    ``frames``, ``annotations`` and ``empty_frames`` and its ``json`` path, ``config`` (the path of the
    config record), ``files_written``, ``seconds``,
    ``frames_per_second`` and ``stale_files``: images under ``root/images`` that this run did not write
    (left from an earlier, larger run; they are left alone here, :func:`remove_stale_frames` deletes them).
    """
    config = config if config is not None else SyntheticConfig()
    check_own_folder(root)
    root = ensure_dir(root)
    started = time.perf_counter()
    # The record goes first: it marks the folder as this generator's, even when the run is interrupted.
    config_path = root / CONFIG_NAME
    write_json(config_path, {"generator": GENERATOR, "config": asdict(config)}, indent=2)
    specs = sequence_specs(config)
    width, height = config.frame_width, config.frame_height
    coco = {split: {"images": [], "annotations": [], "categories": CATEGORIES} for split in SPLITS}
    written: set[Path] = set()
    summary: dict[str, Any] = {"root": str(root), "layout": config.layout}
    with tqdm(total=len(specs) * config.frames_per_sequence, unit="frame", desc="synthetic",
              disable=not progress) as bar:
        for spec in specs:
            scene = SequenceScene(config, spec.split, spec.index)
            images, annotations = coco[spec.split]["images"], coco[spec.split]["annotations"]
            for frame in range(config.frames_per_sequence):
                image, _, _, _ = scene.render(frame)
                path = root / spec.file_name(frame)
                _write_bmp(path, image)
                written.add(path)
                image_id = len(images) + 1
                images.append({"id": image_id, "file_name": spec.file_name(frame), "width": width, "height": height})
                for box in scene.boxes(frame):
                    x, y, w, h = (float(value) for value in box)
                    annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                        "iscrowd": 0, "bbox": [x, y, w, h], "area": w * h})
                bar.update(1)
    for split in SPLITS:
        json_path = root / "annotations" / f"instances_{split}2017.json"
        write_json(json_path, coco[split])
        written.add(json_path)
        annotated = {annotation["image_id"] for annotation in coco[split]["annotations"]}
        summary[split] = {"sequences": sum(spec.split == split for spec in specs),
                          "frames": len(coco[split]["images"]),
                          "annotations": len(coco[split]["annotations"]),
                          "empty_frames": len(coco[split]["images"]) - len(annotated),
                          "json": str(json_path)}
    written.add(config_path)
    summary["config"] = str(config_path)
    seconds = time.perf_counter() - started
    frame_count = len(specs) * config.frames_per_sequence
    summary.update(files_written=len(written), seconds=seconds, frames_per_second=frame_count / max(seconds, 1e-9),
                   stale_files=sorted(str(path) for path in (root / "images").rglob("*.bmp") if path not in written))
    return summary


def remove_stale_frames(root: str | os.PathLike, stale: list[str]) -> int:
    """Delete ``stale`` (the ``stale_files`` of :func:`generate_dataset` for ``root``) and the sequence folders they
    leave empty under ``root/images``; returns the number of files deleted. Paths outside ``root/images`` are
    refused, so a wrong list cannot delete anything else."""
    images = (Path(root) / "images").resolve()
    paths = [Path(name).resolve() for name in stale]
    outside = [path for path in paths if images not in path.parents or path.suffix != ".bmp"]
    if outside:
        raise SSTNetError(f"{outside[0]}: not a frame under {images}; nothing was deleted")
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise SSTNetError(f"{path}: cannot delete stale frame ({exc.strerror or exc})") from exc
    # Deepest folders first, so that a sequence folder emptied of its frames goes before its parent.
    for folder in sorted({parent for path in paths for parent in path.parents if images in parent.parents},
                         key=lambda folder: len(folder.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return len(paths)


def save_preview(path: str | os.PathLike, config: SyntheticConfig | None = None, rows: int = 2, columns: int = 4,
                 first_frame: int | None = None) -> None:
    """Save a PNG grid of consecutive frames from the first ``rows`` sequences with their truth marked.

    Target boxes (the annotations) are red; static distractors (not annotated) are cyan dashed circles.
    ``first_frame`` defaults to frame 20 (or as late as the sequence allows).
    """
    # Imported here so that generating data does not pay for matplotlib.
    from matplotlib.patches import Circle, Rectangle

    from ..runtime.plots import plt, save_figure

    config = config if config is not None else SyntheticConfig()
    specs = sequence_specs(config)[:rows]
    columns = min(columns, config.frames_per_sequence)
    if first_frame is None:
        first_frame = max(0, min(20, config.frames_per_sequence - columns))
    if not 0 <= first_frame <= config.frames_per_sequence - columns:
        raise SSTNetError(f"synthetic preview: first_frame must lie in 0..{config.frames_per_sequence - columns}, "
                          f"got {first_frame}")
    height, width = config.frame_height, config.frame_width
    panel = 3.0
    figure, axes = plt.subplots(len(specs), columns, squeeze=False,
                                figsize=(panel * columns * width / max(width, height),
                                         panel * len(specs) * height / max(width, height) + 0.5))
    for row_axes, spec in zip(axes, specs):
        render = render_sequence(config, spec.split, spec.index, range(first_frame, first_frame + columns))
        for k, axis in enumerate(row_axes):
            axis.imshow(render.frames[k], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            for x, y, w, h in render.boxes[k]:
                axis.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="red", linewidth=1.0))
            for (x, y), seen in zip(render.distractors.xy[k], render.distractors.in_view[k]):
                if seen:
                    axis.add_patch(Circle((x, y), 6, fill=False, edgecolor="cyan", linewidth=0.8, linestyle="--"))
            axis.set_title(f"{spec.split} {spec.name} / {render.frame_indices[k]}.bmp", fontsize=7)
            axis.set_axis_off()
    figure.suptitle("synthetic frames: red = target boxes (annotated), cyan = static distractors (not annotated)",
                    fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)


def config_from_mapping(values: dict[str, Any]) -> SyntheticConfig:
    """Build a config from a mapping of field names (lists become pairs); unknown names are an error."""
    known = {field.name for field in fields(SyntheticConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SSTNetError(f"synthetic config: unknown field(s) {', '.join(unknown)}")
    return SyntheticConfig(**{name: tuple(value) if isinstance(value, list) else value
                              for name, value in values.items()})
