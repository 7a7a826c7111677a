"""Scoring several datasets as one, per attribute of their clips, and the frozen-motion diagnostic (vid_map_coco.py);
training on several datasets with repeats and on frames without targets (the trainer's record list)."""
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from conftest import (REPO, assert_clean_error, calibrated_tiny_model, prior_weights, run_script, write_coco,
                      write_frames)

from utils.data.annotations import read_coco
from utils.errors import SSTNetError
from utils.train.config import DataConfig
from utils.train.trainer import training_records

MODEL = ["--input-size", "64", "--phi", "nano", "--workers", "0", "--quiet", "--batch-size", "4"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return prior_weights(tmp_path_factory.mktemp("weights"))


def imported_dataset(root, clips):
    """A dataset as videos_to_daub.py writes it: clips with attributes, key frames every 2 frames, one without a
    target. ``clips``: name -> (distance bin, brightness)."""
    images, annotations, videos = [], [], []
    for video_id, (name, (distance, value)) in enumerate(clips.items(), start=1):
        write_frames(root / "images/test" / name, range(7), size=(48, 64), suffix=".png",
                     value_of=lambda n, value=value: value + 5 * n)
        videos.append({"id": video_id, "name": name, "attributes": {"distance_bin": distance,
                                                                    "class": name.split("_")[1].lower()}})
        for frame in (0, 2, 4, 6):
            images.append({"id": len(images) + 1, "file_name": f"images/test/{name}/{frame}.png", "width": 64,
                           "height": 48, "video_id": video_id, "frame_id": frame})
            if frame != 4:
                annotations.append({"id": len(annotations) + 1, "image_id": len(images), "category_id": 1,
                                    "bbox": [10 + frame, 12, 8, 8]})
    path = write_coco(root / "annotations/instances_test2017.json", images, annotations)
    data = json.loads(path.read_text())
    data["videos"] = videos
    path.write_text(json.dumps(data))
    return root


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    base = tmp_path_factory.mktemp("data")
    drone = imported_dataset(base / "drone", {"IR_DRONE_001": ("CLOSE", 40), "IR_BIRD_002": ("FAR", 90),
                                              "IR_DRONE_003": ("FAR", 140)})
    daub = base / "daub"
    write_frames(daub / "images/test/data1", range(5), size=(64, 64), value_of=lambda n: 60 + 20 * n)
    write_coco(daub / "annotations/instances_test2017.json",
               [{"id": 10 + k, "file_name": f"images/test/data1/{k}.bmp", "width": 64, "height": 64} for k in range(5)],
               [{"id": 1 + k, "image_id": 10 + k, "category_id": 1, "bbox": [20, 20, 8, 8]} for k in range(5)])
    return drone, daub


def score(weights, out, *args):
    result = run_script("vid_map_coco.py", "--weights", weights, "--out-dir", out, "--all-frames", *MODEL, *args)
    assert result.returncode == 0, result.stderr
    return result


def test_several_roots_score_as_one_and_each_alone(weights, datasets, tmp_path):
    drone, daub = datasets
    result = score(weights, tmp_path / "both", "--data-root", drone, daub, "--group-by", "dataset", "distance_bin",
                   "class", "--per-sequence")
    both = json.loads((tmp_path / "both/metrics.json").read_text())
    assert both["frames"] == 12 + 5 and both["targets"] == 9 + 5
    per_dataset = json.loads((tmp_path / "both/per_dataset.json").read_text())
    assert set(per_dataset) == {"drone", "daub"}
    for root in (drone, daub):
        score(weights, tmp_path / root.name, "--data-root", root)
        alone = json.loads((tmp_path / root.name / "metrics.json").read_text())
        assert per_dataset[root.name] == pytest.approx(alone), root.name
    bins = json.loads((tmp_path / "both/per_distance_bin.json").read_text())
    # DAUB's clips have no distance bin: they are the "-" group.
    assert {name: part["frames"] for name, part in bins.items()} == {"CLOSE": 4, "FAR": 8, "-": 5}
    classes = json.loads((tmp_path / "both/per_class.json").read_text())
    assert {name: part["targets"] for name, part in classes.items()} == {"drone": 6, "bird": 3, "-": 5}
    sequences = json.loads((tmp_path / "both/per_sequence.json").read_text())
    assert sorted(sequences) == ["daub/images/test/data1", "drone/images/test/IR_BIRD_002",
                                 "drone/images/test/IR_DRONE_001", "drone/images/test/IR_DRONE_003"]
    assert "per distance_bin:" in result.stdout


def test_each_root_can_be_read_at_its_own_input_size(weights, datasets, tmp_path):
    drone, daub = datasets
    result = score(weights, tmp_path / "both", "--data-root", drone, daub, "--group-by", "dataset",
                   "--input-size", "64", "96")
    assert "input size per --data-root: drone 64, daub 96" in result.stdout
    per_dataset = json.loads((tmp_path / "both/per_dataset.json").read_text())
    detections = json.loads((tmp_path / "both/detections.json").read_text())
    for root, size in ((drone, "64"), (daub, "96")):
        score(weights, tmp_path / root.name, "--data-root", root, "--input-size", size)
        assert per_dataset[root.name] == pytest.approx(json.loads((tmp_path / root.name / "metrics.json").read_text()))
    # The overall figure scores the union of the two runs' detections, not either alone.
    first_daub_id = 13  # the merge numbers the drone clips' 12 frames first
    daub_alone = json.loads((tmp_path / "daub/detections.json").read_text())
    assert same_detections([{**item, "image_id": item["image_id"] - first_daub_id + 10} for item in detections
                            if item["image_id"] >= first_daub_id], daub_alone)
    at_64 = score(weights, tmp_path / "daub64", "--data-root", daub)
    assert not same_detections(json.loads((tmp_path / "daub64/detections.json").read_text()), daub_alone), \
        "a 96 px input gives other detections than 64 px"
    assert at_64.returncode == 0


def test_per_root_input_sizes_are_checked_before_the_model_runs(weights, datasets, tmp_path):
    drone, daub = datasets
    for sizes, fragment in ((["64", "96", "128"], "give one size, or one per --data-root (2)"),
                            (["64", "65"], "65")):
        result = run_script("vid_map_coco.py", "--weights", weights, "--out-dir", tmp_path / "o", "--data-root",
                            drone, daub, "--input-size", *sizes)
        assert_clean_error(result, "--input-size", fragment)
        assert not (tmp_path / "o").exists()


def test_group_by_an_unknown_attribute_is_refused_before_the_model_runs(weights, datasets, tmp_path):
    drone, daub = datasets
    result = run_script("vid_map_coco.py", "--weights", weights, "--out-dir", tmp_path / "o", "--data-root", daub,
                        "--group-by", "distance_bin", *MODEL)
    assert_clean_error(result, "--group-by distance_bin: unknown attribute")
    result = run_script("vid_map_coco.py", "--weights", weights, "--out-dir", tmp_path / "o", "--data-root", drone,
                        "--group-by", "weather", *MODEL)
    assert_clean_error(result, "--group-by weather", "class, distance_bin")


def test_extra_iou_reports_loose_boxes_overall_and_per_group(datasets, tmp_path):
    """Every target boxed two pixels off (IoU 36/92 = 0.39): nothing at the paper's IoU 0.5, everything at 0.3."""
    drone, _ = datasets
    truth = json.loads((drone / "annotations/instances_test2017.json").read_text())
    saved = tmp_path / "loose.json"
    saved.write_text(json.dumps([{"image_id": box["image_id"], "category_id": 1, "score": 0.9,
                                  "bbox": [box["bbox"][0] + 2, box["bbox"][1] + 2, 8, 8]}
                                 for box in truth["annotations"]]))
    result = run_script("vid_map_coco.py", "--detections", saved, "--data-root", drone, "--out-dir", tmp_path / "out",
                        "--all-frames", "--extra-iou", "0.3", "0.1", "--group-by", "class")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "out/metrics.json").read_text())
    assert metrics["mAP50"] == 0 and metrics["AP_at_IoU"] == pytest.approx({"0.3": 100, "0.1": 100})
    assert "mAP50 0.00" in result.stdout and "AP@0.3 100.00  AP@0.1 100.00" in result.stdout
    classes = json.loads((tmp_path / "out/per_class.json").read_text())
    assert {name: part["AP_at_IoU"]["0.3"] for name, part in classes.items()} == pytest.approx({"drone": 100,
                                                                                              "bird": 100})
    for bad, why in ((["1.5"], "must lie in (0, 1]"), (["0.3", "0.3"], "a threshold is given twice")):
        refused = run_script("vid_map_coco.py", "--detections", saved, "--data-root", drone, "--out-dir",
                             tmp_path / "refused", "--extra-iou", *bad)
        assert_clean_error(refused, "--extra-iou", why)
        assert not (tmp_path / "refused").exists()


def test_frozen_motion_scores_each_key_frame_as_a_sequence_that_does_not_move(datasets, tmp_path):
    import torch
    drone, _ = datasets
    # A model whose output depends on every frame of its window.
    weights = tmp_path / "moving.pth"
    torch.save(calibrated_tiny_model(1, 5, (64, 64)).state_dict(), weights)
    # The same key frames, each in a sequence of its own whose every frame is that key frame: no motion to see.
    still = tmp_path / "still"
    data = json.loads((drone / "annotations/instances_test2017.json").read_text())
    for image in data["images"]:
        folder = Path("images/test") / f"{Path(image['file_name']).parent.name}_{image['frame_id']}"
        (still / folder).mkdir(parents=True)
        for number in range(max(image["frame_id"] - 4, 0), image["frame_id"] + 1):
            shutil.copy(drone / image["file_name"], still / folder / f"{number}.png")
        image["file_name"] = str(folder / f"{image['frame_id']}.png")
    write_coco(still / "annotations/instances_test2017.json", data["images"], data["annotations"])
    frozen = score(weights, tmp_path / "frozen", "--data-root", drone, "--frozen-motion")
    assert "frozen motion (each window its key frame repeated): mAP50" in frozen.stdout
    score(weights, tmp_path / "still_scored", "--data-root", still)
    frozen_detections = json.loads((tmp_path / "frozen/detections.json").read_text())
    still_detections = json.loads((tmp_path / "still_scored/detections.json").read_text())
    assert frozen_detections and same_detections(frozen_detections, still_detections)
    score(weights, tmp_path / "normal", "--data-root", drone)
    assert not same_detections(json.loads((tmp_path / "normal/detections.json").read_text()), frozen_detections)


def same_detections(first, second, tolerance=1e-4):
    key = lambda item: (item["image_id"], -item["score"])  # noqa: E731
    first, second = sorted(first, key=key), sorted(second, key=key)
    return len(first) == len(second) and all(
        a["image_id"] == b["image_id"] and a["category_id"] == b["category_id"]
        and abs(a["score"] - b["score"]) < tolerance and all(abs(x - y) < 1e-2 for x, y in zip(a["bbox"], b["bbox"]))
        for a, b in zip(first, second))


def test_training_records_repeat_each_dataset_and_take_empty_frames_when_asked(datasets):
    drone, daub = datasets
    train_gt = read_coco(daub / "annotations/instances_test2017.json", daub)
    data = DataConfig(train_ann="annotations/instances_test2017.json", mix_data=(str(drone),), dataset_repeats=(3, 2))
    records, zooms, scales = training_records(data, train_gt)
    assert len(records) == 3 * 5 + 2 * 9
    assert sum(record.path.is_relative_to(drone) for record in records) == 18
    assert zooms == [1.0] * len(records) and scales == [None] * len(records)
    data = dataclasses.replace(data, all_frames=True, dataset_zoom=(2.0, 1.0), dataset_scale=(0.8, 1.25, 0.5, 2.0))
    records, zooms, scales = training_records(data, train_gt)
    assert len(records) == 3 * 5 + 2 * 12
    assert sum(not len(record.boxes) for record in records) == 2 * 3
    # Each frame carries its own dataset's zoom, through the repeats.
    assert [zoom for record, zoom in zip(records, zooms) if record.path.is_relative_to(daub)] == [2.0] * 15
    assert [zoom for record, zoom in zip(records, zooms) if record.path.is_relative_to(drone)] == [1.0] * 24
    # And its own augmentation zoom range.
    assert [scale for record, scale in zip(records, scales) if record.path.is_relative_to(daub)] == [(0.8, 1.25)] * 15
    assert [scale for record, scale in zip(records, scales) if record.path.is_relative_to(drone)] == [(0.5, 2.0)] * 24


def test_dataset_zoom_must_match_the_datasets_and_lie_in_its_range():
    with pytest.raises(SSTNetError, match=r"--dataset-zoom: give 2 factor\(s\), one for --data-root"):
        DataConfig(data_root="a", mix_data=("b",), dataset_zoom=(2.0,))
    with pytest.raises(SSTNetError, match=r"--dataset-zoom 0.1: must lie in \[0.25, 8\]"):
        DataConfig(data_root="a", mix_data=("b",), dataset_zoom=(0.1, 1.0))


def test_dataset_scale_is_a_range_per_dataset():
    assert DataConfig(data_root="a", mix_data=("b",), dataset_scale=(1, 1, 0.6, 1.67)).scale_ranges == (
        (1.0, 1.0), (0.6, 1.67))
    assert DataConfig(data_root="a", mix_data=("b",)).scale_ranges is None
    with pytest.raises(SSTNetError, match=r"--dataset-scale: give 4 numbers, a MIN MAX pair for --data-root and one "
                                          r"per --mix-data root, got 2"):
        DataConfig(data_root="a", mix_data=("b",), dataset_scale=(0.8, 1.25))
    with pytest.raises(SSTNetError, match=r"--dataset-scale 2 1: MIN is greater than MAX"):
        DataConfig(data_root="a", mix_data=("b",), dataset_scale=(1, 1, 2, 1))
    with pytest.raises(SSTNetError, match=r"--dataset-scale 0.05: must lie in \[0.1, 10\]"):
        DataConfig(data_root="a", dataset_scale=(0.05, 1))
    result = run_script("train_daub.py", "--data-root", REPO, "--dataset-scale", "0.8", "1.25", "2")
    assert_clean_error(result, "--dataset-scale: give 2 numbers")


def test_dataset_repeats_must_match_the_datasets():
    result = run_script("train_daub.py", "--data-root", REPO, "--mix-data", REPO / "json", "--dataset-repeats", "2")
    assert_clean_error(result, "--dataset-repeats: give 2 count(s)")
    result = run_script("train_daub.py", "--data-root", REPO, "--dataset-repeats", "0")
    assert_clean_error(result, "--dataset-repeats 0")
