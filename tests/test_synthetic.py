"""The synthetic dataset generator: determinism, contrast and motion statistics, layouts, COCO output and its CLI."""
import hashlib
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import REPO
from pycocotools.coco import COCO

from utils.data.annotations import read_coco
from utils.data.synthetic import (SyntheticConfig, config_field_docs, generate_dataset, remove_stale_frames,
                                  render_sequence, save_preview, sequence_specs)
from utils.errors import SSTNetError

SCRIPT = REPO / "utils_coco" / "make_synthetic.py"
SMALL = dict(train_sequences=2, test_sequences=1, frames_per_sequence=10, height=64, width=96)
# Bright, isolated spots on a dim scene, so that positions can be measured from the pixels alone.
MEASURABLE = dict(train_sequences=2, test_sequences=0, frames_per_sequence=24, height=128, width=128,
                  target_snr=(25.0, 30.0), background_mean=(30.0, 50.0), clutter_std=(3.0, 6.0),
                  distractors_per_frame=(3.0, 3.0))


def file_hashes(root):
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def isolated(render, frame, xy, margin):
    """Whether a spot centred at ``xy`` has no other spot (target or distractor) within ``margin`` px (Chebyshev)."""
    others = np.concatenate([render.targets.xy[frame], render.distractors.xy[frame]])
    distances = np.abs(others - xy).max(axis=1)
    return np.sum(distances < margin) == 1  # itself


def spot_centroid(render, frame, xy, sigma):
    """Intensity-weighted centre of frame minus background around ``xy``, or None if clipped by the frame or 255.

    The window reaches 3.5 sigma: wide enough that the cut tail moves the centre by < 0.01 px, narrow enough
    that the rounding of the frame (±0.5 per pixel) moves it by only a few hundredths.
    """
    radius = int(np.ceil(3.5 * sigma))
    col, row = np.floor(xy + 0.5).astype(int)
    height, width = render.frames.shape[1:]
    if col - radius < 0 or row - radius < 0 or col + radius >= width or row + radius >= height:
        return None
    window = np.s_[row - radius:row + radius + 1, col - radius:col + radius + 1]
    spot = render.frames[frame][window].astype(float) - render.backgrounds[frame][window]
    if render.frames[frame][window].max() == 255:
        return None
    rows, cols = np.mgrid[row - radius:row + radius + 1, col - radius:col + radius + 1]
    return np.array([(spot * cols).sum(), (spot * rows).sum()]) / spot.sum()


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    config = SyntheticConfig(**SMALL)
    generate_dataset(tmp_path / "a", config, progress=False)
    generate_dataset(tmp_path / "b", config, progress=False)
    first, second = file_hashes(tmp_path / "a"), file_hashes(tmp_path / "b")
    assert len(first) == 3 * 10 + 3  # frames, two COCO files, the config record
    assert first == second
    generate_dataset(tmp_path / "c", SyntheticConfig(**{**SMALL, "seed": 7}), progress=False)
    other = file_hashes(tmp_path / "c")
    assert other.keys() == first.keys()
    frames = [name for name in first if name.endswith(".bmp")]
    assert all(other[name] != first[name] for name in frames)


def test_single_frame_sequences_and_sequences_without_movers_render():
    config = SyntheticConfig(**{**SMALL, "frames_per_sequence": 1, "targets_per_sequence": (0, 0),
                                "distractors_per_frame": (0.0, 0.0)})
    render = render_sequence(config, "test", 0)
    assert render.frames.shape == (1, 64, 96)
    assert render.targets.xy.shape == (1, 0, 2) and render.distractors.xy.shape == (1, 0, 2)
    assert render.boxes[0].shape == (0, 4)


def test_a_sequence_does_not_depend_on_how_many_others_exist():
    fewer = render_sequence(SyntheticConfig(**{**SMALL, "train_sequences": 1}), "test", 0)
    more = render_sequence(SyntheticConfig(**{**SMALL, "train_sequences": 3}), "test", 0)
    assert np.array_equal(fewer.frames, more.frames)
    assert (fewer.spec.name, more.spec.name) == ("data2", "data4")  # DAUB numbering runs on across splits
    part = render_sequence(SyntheticConfig(**SMALL), "train", 1, frame_indices=[7, 3])
    whole = render_sequence(SyntheticConfig(**SMALL), "train", 1)
    assert np.array_equal(part.frames, whole.frames[[7, 3]])


def test_peak_contrast_is_the_drawn_snr_over_the_local_background_std():
    config = SyntheticConfig(train_sequences=3, test_sequences=0, frames_per_sequence=30, height=128, width=128)
    low, high = config.target_snr
    half = config.snr_window // 2
    spot_reach = int(np.ceil(4 * config.target_sigma[1])) + 1
    checked = {"targets": 0, "distractors": 0}
    for index in range(3):
        render = render_sequence(config, "train", index, keep_background=True)
        for kind in checked:
            tracks = getattr(render, kind)
            for frame, source in zip(*np.nonzero(tracks.in_view)):
                col, row = tracks.peak[frame, source]
                background = render.backgrounds[frame]
                window = background[max(row - half, 0):row + half + 1, max(col - half, 0):col + half + 1]
                assert tracks.local_std[frame, source] == pytest.approx(window.std(dtype=np.float64), rel=1e-6)
                value = int(render.frames[frame, row, col])
                if value in (0, 255) or not isolated(render, frame, tracks.xy[frame, source], spot_reach):
                    continue
                measured = (value - float(background[row, col])) / tracks.local_std[frame, source]
                # The frame is the rounded sum, so the peak is off by at most half a grey level.
                tolerance = 0.5 / tracks.local_std[frame, source] + 1e-4
                assert abs(measured - tracks.snr[source]) <= tolerance
                assert low - tolerance <= measured <= high + tolerance
                checked[kind] += 1
    assert checked["targets"] > 100 and checked["distractors"] > 100


def test_contrast_is_visible_from_the_image_alone():
    # Without the truth, the background under the peak is estimated from a ring around it; clutter inside the
    # window makes single frames scatter, so compare each track's median over its frames within 30 %.
    config = SyntheticConfig(train_sequences=4, test_sequences=0, frames_per_sequence=40, height=128, width=128)
    tracks_checked = 0
    for index in range(4):
        render = render_sequence(config, "train", index)
        targets = render.targets
        for source in range(targets.xy.shape[1]):
            estimates = []
            for frame in np.nonzero(targets.in_view[:, source])[0]:
                col, row = targets.peak[frame, source]
                inside = 7 <= min(col, row) and max(col, row) <= 120
                if not inside or not isolated(render, frame, targets.xy[frame, source], 12):
                    continue
                window = render.frames[frame, row - 7:row + 8, col - 7:col + 8].astype(float)
                ring = np.ones(window.shape, bool)
                ring[3:12, 3:12] = False
                estimates.append((window[7, 7] - window[ring].mean()) / window[ring].std())
            if len(estimates) >= 10:
                assert np.median(estimates) == pytest.approx(targets.snr[source], rel=0.3)
                tracks_checked += 1
    assert tracks_checked >= 4


def test_background_pans_by_the_drift_and_distractors_stay_fixed_in_it():
    config = SyntheticConfig(**MEASURABLE, noise_std=(0.0, 0.0), column_noise_std=0.0, pixel_noise_std=0.0,
                             drift_speed=(0.6, 1.0))
    render = render_sequence(config, "train", 0, keep_background=True)
    steps = np.linalg.norm(np.diff(render.drift, axis=0), axis=1)
    assert np.all((steps > 0.5) & (steps < 1.1))  # sub-pixel steps within the configured speed (1/32 px snapping)
    window = cv2.createHanningWindow(render.frames.shape[1:][::-1], cv2.CV_32F)
    for frame in (1, 5, 12):
        # Copies: with a window, OpenCV 4.12's phaseCorrelate overwrites its inputs with the windowed images.
        shift, _ = cv2.phaseCorrelate(render.backgrounds[0].copy(), render.backgrounds[frame].copy(), window)
        assert np.allclose(shift, -(render.drift[frame] - render.drift[0]), atol=0.25)

    distractors = render.distractors
    assert distractors.xy.shape[1] > 0
    assert np.array_equal(distractors.scene_xy, np.repeat(distractors.scene_xy[:1], len(render.frames), axis=0))
    measured = 0
    for frame, source in zip(*np.nonzero(distractors.in_view)):
        if not isolated(render, frame, distractors.xy[frame, source], 14):
            continue
        centre = spot_centroid(render, frame, distractors.xy[frame, source], distractors.sigma[source])
        if centre is not None:
            # In scene coordinates a distractor sits still: measured position + drift is its fixed scene position.
            # 0.1 px allows for the frame's rounding and is far below the >= 0.6 px the background moves per frame.
            assert np.allclose(centre + render.drift[frame], distractors.scene_xy[0, source], atol=0.1)
            measured += 1
    assert measured > 20


def test_targets_move_relative_to_the_background_within_the_speed_range():
    config = SyntheticConfig(**MEASURABLE, target_speed=(0.8, 2.5), targets_per_sequence=(2, 2))
    low, high = config.target_speed
    pairs = 0
    for index in range(2):
        render = render_sequence(config, "train", index, keep_background=True)
        targets = render.targets
        steps = np.diff(targets.scene_xy, axis=0)
        assert np.all((np.linalg.norm(steps, axis=2) >= low - 1e-9) & (np.linalg.norm(steps, axis=2) <= high + 1e-9))
        headings = np.unwrap(np.arctan2(steps[..., 1], steps[..., 0]), axis=0)
        assert np.all(np.abs(np.diff(headings, axis=0)) <= config.target_turn_max + 1e-9)
        for source in range(targets.xy.shape[1]):
            previous = None
            for frame in range(len(render.frames)):
                centre = None
                if targets.in_view[frame, source] and isolated(render, frame, targets.xy[frame, source], 14):
                    centre = spot_centroid(render, frame, targets.xy[frame, source], targets.sigma[source])
                if centre is not None:
                    scene_centre = centre + render.drift[frame]
                    if previous is not None and previous[0] == frame - 1:
                        speed = np.linalg.norm(scene_centre - previous[1])
                        assert low - 0.1 <= speed <= high + 0.1
                        # Two measurements, each within ~0.05 px (rounding of the frame).
                        assert np.allclose(scene_centre - previous[1], steps[frame - 1, source], atol=0.1)
                        pairs += 1
                    previous = (frame, scene_centre)
    assert pairs > 20


def test_targets_leaving_and_entering_the_frame_get_boxes_only_in_view(tmp_path):
    config = SyntheticConfig(train_sequences=3, test_sequences=1, frames_per_sequence=60, height=64, width=64,
                             target_speed=(2.0, 3.0))
    summary = generate_dataset(tmp_path, config, progress=False)
    assert summary["train"]["empty_frames"] > 0
    coco = COCO(str(tmp_path / "annotations" / "instances_train2017.json"))
    entered = left = clipped = 0
    for spec in sequence_specs(config)[:3]:
        render = render_sequence(config, spec.split, spec.index)
        changes = np.diff(render.targets.in_view.astype(int), axis=0)
        entered, left = entered + int((changes == 1).sum()), left + int((changes == -1).sum())
        for frame, boxes in enumerate(render.boxes):
            in_view = render.targets.in_view[frame]
            assert len(boxes) == in_view.sum()
            assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2:] > 0)
            assert np.all(boxes[:, 0] + boxes[:, 2] <= 64) and np.all(boxes[:, 1] + boxes[:, 3] <= 64)
            clipped += int(np.sum((boxes[:, 2] < 8) | (boxes[:, 3] < 8)))
            image_id = next(image["id"] for image in coco.dataset["images"]
                            if image["file_name"] == spec.file_name(frame))
            written = [annotation["bbox"] for annotation in coco.imgToAnns[image_id]]
            assert np.array_equal(np.array(written).reshape(-1, 4), boxes)
    assert entered > 0 and left > 0 and clipped > 0


def test_coco_files_load_list_every_frame_and_match_the_frames_on_disk(tmp_path):
    config = SyntheticConfig(**SMALL)
    summary = generate_dataset(tmp_path, config, progress=False)
    specs = sequence_specs(config)
    assert [spec.folder for spec in specs] == ["images/train/data1", "images/train/data2", "images/test/data3"]
    for split, count in (("train", 2), ("test", 1)):
        json_path = tmp_path / "annotations" / f"instances_{split}2017.json"
        coco = COCO(str(json_path))
        images = coco.dataset["images"]
        assert [image["id"] for image in images] == list(range(1, 10 * count + 1))
        assert [annotation["id"] for annotation in coco.dataset["annotations"]] == \
            list(range(1, len(coco.dataset["annotations"]) + 1))
        assert coco.dataset["categories"] == [{"id": 1, "name": "target", "supercategory": "none"}]
        assert summary[split]["frames"] == len(images) and summary[split]["annotations"] == len(coco.anns)
        project_reader = read_coco(json_path, tmp_path)  # the project's own loader accepts it too
        assert len(project_reader.records) + len(project_reader.unannotated) == len(images)
        expected_names = [spec.file_name(frame) for spec in specs if spec.split == split for frame in range(10)]
        assert [image["file_name"] for image in images] == expected_names
        for annotation in coco.anns.values():
            x, y, w, h = annotation["bbox"]
            assert annotation["category_id"] == 1 and annotation["iscrowd"] == 0 and annotation["area"] == w * h
            if 0 < x and x + w < 96 and 0 < y and y + h < 64:
                assert (w, h) == (8, 8)
        for spec in (spec for spec in specs if spec.split == split):
            render = render_sequence(config, spec.split, spec.index)
            for frame in range(10):
                image = images[[i["file_name"] for i in images].index(spec.file_name(frame))]
                on_disk = cv2.imread(str(tmp_path / image["file_name"]), cv2.IMREAD_UNCHANGED)
                assert on_disk.shape == (image["height"], image["width"], 3) == (64, 96, 3)
                assert np.array_equal(on_disk[..., 0], render.frames[frame])
                assert np.array_equal(on_disk, np.repeat(on_disk[..., :1], 3, axis=2))  # grey in all channels
                col, row = render.targets.peak[frame][render.targets.in_view[frame]].T
                boxes = np.array([annotation["bbox"] for annotation in coco.imgToAnns[image["id"]]]).reshape(-1, 4)
                # DAUB boxes: the peak pixel is pixel (4, 4) of the 8x8 box, before clipping.
                assert np.array_equal(np.maximum(np.stack([col - 4, row - 4], axis=1), 0), boxes[:, :2])
    assert (tmp_path / "images/test/data3/9.bmp").read_bytes()[:2] == b"BM"
    assert (tmp_path / "images/test/data3/9.bmp").stat().st_size == 54 + 64 * 96 * 3  # 24-bit, rows 4-byte aligned


def test_irdst_layout_uses_odd_train_and_even_test_folders_and_tight_boxes(tmp_path):
    config = SyntheticConfig(layout="irdst", train_sequences=2, test_sequences=2, frames_per_sequence=5)
    assert (config.frame_height, config.frame_width) == (320, 480)
    generate_dataset(tmp_path, config, progress=False)
    assert sorted(path.name for path in (tmp_path / "images").iterdir()) == ["1", "2", "3", "4"]
    assert sorted(path.name for path in (tmp_path / "images" / "3").iterdir()) == [f"{k}.bmp" for k in range(5)]
    for split, folders in (("train", {"1", "3"}), ("test", {"2", "4"})):
        coco = COCO(str(tmp_path / "annotations" / f"instances_{split}2017.json"))
        assert {image["file_name"].split("/")[1] for image in coco.dataset["images"]} == folders
        assert all((tmp_path / image["file_name"]).is_file() for image in coco.dataset["images"])
    for spec in sequence_specs(config):
        render = render_sequence(config, spec.split, spec.index)
        for frame, boxes in enumerate(render.boxes):
            centres = render.targets.xy[frame][render.targets.in_view[frame]] + 0.5  # COCO pixel-edge coordinates
            assert np.all(boxes[:, 2:] >= 3) and np.all(boxes[:, 2:] <= 6)
            assert np.all((boxes[:, :2] <= centres) & (centres <= boxes[:, :2] + boxes[:, 2:]))
            assert np.all(boxes[:, 0] + boxes[:, 2] <= 480) and np.all(boxes[:, 1] + boxes[:, 3] <= 320)


@pytest.mark.parametrize("changes, field", [
    ({"layout": "voc"}, "layout"),
    ({"height": 0}, "height"),
    ({"width": -5}, "width"),
    ({"frames_per_sequence": 0}, "frames_per_sequence"),
    ({"target_snr": (8.0, 2.0)}, "target_snr"),
    ({"target_sigma": (0.0, 1.0)}, "target_sigma"),
    ({"targets_per_sequence": (1.5, 2)}, "targets_per_sequence"),
    ({"background_mean": (100.0, 300.0)}, "background_mean"),
    ({"snr_window": 14}, "snr_window"),
    ({"clutter_max_wavelength": 2.5}, "clutter_max_wavelength"),
    ({"train_sequences": 0, "test_sequences": 0}, "train_sequences"),
    ({"drift_speed": (1.0, 100.0), "frames_per_sequence": 100}, "drift_speed"),
])
def test_invalid_config_is_rejected_naming_the_field(changes, field):
    with pytest.raises(SSTNetError, match=rf"synthetic config: {field}: "):
        SyntheticConfig(**changes)


def test_preview_is_written(tmp_path):
    path = tmp_path / "preview.png"
    save_preview(path, SyntheticConfig(**SMALL), columns=3)
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 300
    assert image.std() > 10


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_cli_help_documents_every_field():
    result = run_cli("--help")
    assert result.returncode == 0
    docs = config_field_docs()
    assert len(docs) == len(SyntheticConfig.__dataclass_fields__)
    for name in docs:
        assert "--" + name.replace("_", "-") in result.stdout
    assert "datasets/synthetic_daub" in result.stdout and "--preview" in result.stdout


def test_cli_writes_the_layout(tmp_path):
    result = run_cli("--quiet", "--layout", "irdst", "--train-sequences", 1, "--test-sequences", 1,
                     "--frames-per-sequence", 3, "--height", 48, "--width", 64, "--target-snr", 3, 4, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    root = tmp_path / "datasets" / "synthetic_daub"  # the default --out, relative to the current folder
    assert sorted(path.relative_to(root).as_posix() for path in root.rglob("*.bmp")) == \
        [f"images/{folder}/{k}.bmp" for folder in (1, 2) for k in range(3)]
    assert (root / "annotations" / "instances_test2017.json").is_file()


@pytest.mark.parametrize("args", [("--height", "-5"), ("--target-snr", "8", "2"), ("--snr-window", "4")])
def test_cli_bad_argument_is_a_one_line_error(tmp_path, args):
    result = run_cli("--out", tmp_path / "out", *args)
    assert result.returncode != 0
    assert result.stderr.startswith("error: synthetic config: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_regenerating_smaller_warns_then_removes_stale_frames(tmp_path):
    out = tmp_path / "out"
    small = ("--out", out, "--quiet", "--test-sequences", 1, "--frames-per-sequence", 3, "--height", 48, "--width", 64)
    assert run_cli(*small, "--train-sequences", 3).returncode == 0
    kept = run_cli(*small, "--train-sequences", 2)
    assert kept.returncode == 0
    # Test sequences are numbered after the training ones: train/data3 and test/data4 are both left over.
    assert "warning: 6 frame(s)" in kept.stderr and "--remove-stale" in kept.stderr
    assert (out / "images" / "train" / "data3" / "0.bmp").is_file()
    removed = run_cli(*small, "--train-sequences", 2, "--remove-stale")
    assert removed.returncode == 0 and removed.stderr == ""
    assert not (out / "images" / "train" / "data3").exists() and not (out / "images" / "test" / "data4").exists()
    frames = sorted(path.relative_to(out / "images").as_posix() for path in (out / "images").rglob("*.bmp"))
    listed = [image["file_name"] for split in ("train", "test")
              for image in json.loads((out / "annotations" / f"instances_{split}2017.json").read_text())["images"]]
    assert frames == sorted(name.removeprefix("images/") for name in listed)


def test_remove_stale_frames_refuses_paths_outside_the_images_folder(tmp_path):
    generate_dataset(tmp_path, SyntheticConfig(**SMALL), progress=False)
    outsider = tmp_path / "annotations" / "instances_train2017.json"
    with pytest.raises(SSTNetError, match="not a frame under"):
        remove_stale_frames(tmp_path, [str(outsider)])
    assert outsider.is_file()
