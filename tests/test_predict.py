"""vid_map_coco.py on the real DAUB clips and vid_predict.py's modes, through their command lines."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import REPO, frames_of, prior_weights

MODEL = ["--input-size", "64", "--phi", "nano", "--workers", "0", "--quiet"]


def run(*argv):
    return subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, cwd=REPO)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny model whose head prior gives a handful of confident detections per frame."""
    return prior_weights(tmp_path_factory.mktemp("weights"))


def test_vid_map_coco_on_real_daub(daub_real, weights, tmp_path):
    out = tmp_path / "map"
    other = tmp_path / "Other.txt"
    other.write_text("\t".join(["0.5"] * 101) + "\t\n")
    result = run("vid_map_coco.py", "--weights", weights, "--data-root", daub_real, "--out-dir", out,
                 "--batch-size", "4", "--compare", other, *MODEL)
    assert result.returncode == 0, result.stderr
    assert "Average Precision" in result.stdout
    line = [text for text in result.stdout.splitlines() if text.startswith("mAP50 ")]
    assert len(line) == 1 and " Pd " in line[0] and " Fa " in line[0]
    assert {p.name for p in out.iterdir()} == {"detections.json", "metrics.json", "summary.txt", "pr_curve.txt",
                                               "pr_curve.png", "f1_curve.png"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == 200 and metrics["targets"] == 200
    values = (out / "pr_curve.txt").read_text().rstrip("\n").split("\t")
    assert len([v for v in values if v]) == 101 and "\n" not in (out / "pr_curve.txt").read_text().rstrip("\n")
    detections = json.loads((out / "detections.json").read_text())
    assert detections and {"image_id", "category_id", "bbox", "score"} <= set(detections[0])
    # The paper's figures are derived from what pycocotools saw.
    assert metrics["f1"] == pytest.approx(2 * metrics["precision"] * metrics["recall"] /
                                          max(metrics["precision"] + metrics["recall"], 1e-12), abs=1e-6)


def test_released_computation_scores_the_same(daub_real, weights, tmp_path):
    scores = {}
    for name, options in (("ours", []), ("released", ["--mode", "window", "--computation", "released"])):
        result = run("vid_map_coco.py", "--weights", weights, "--data-root", daub_real, "--out-dir", tmp_path / name,
                     "--batch-size", "4", *MODEL, *options)
        assert result.returncode == 0, result.stderr
        scores[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert scores["ours"].keys() == scores["released"].keys()
    for key, value in scores["ours"].items():
        assert value == pytest.approx(scores["released"][key], abs=1e-6), key


def test_bad_compare_file(daub_real, weights, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("0.1\t0.2\n")
    result = run("vid_map_coco.py", "--weights", weights, "--data-root", daub_real, "--out-dir", tmp_path / "o",
                 "--compare", bad, *MODEL)
    assert result.returncode != 0 and "expected 101 precision values" in result.stderr
    assert not (tmp_path / "o" / "detections.json").exists()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 12-frame 80×120 sequence with a bright moving spot."""
    folder = tmp_path_factory.mktemp("clip") / "seq"
    folder.mkdir()
    for k in range(12):
        image = np.full((80, 120), 60, np.uint8)
        image[30:34, 10 + 5 * k:14 + 5 * k] = 250
        cv2.imwrite(str(folder / f"{k}.bmp"), image)
    return folder


def test_video_from_frames_and_from_a_video_file(clip, weights, tmp_path):
    video = tmp_path / "out.mp4"
    result = run("vid_predict.py", "--mode", "video", "--weights", weights, "--source", clip, "--out", video, *MODEL)
    assert result.returncode == 0, result.stderr
    assert frames_of(video) == (12, (120, 80))
    again = tmp_path / "again.mp4"
    result = run("vid_predict.py", "--mode", "video", "--weights", weights, "--source", video, "--out", again, *MODEL)
    assert result.returncode == 0, result.stderr
    assert frames_of(again) == (12, (120, 80))
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_predict_dir_crop_count_and_gt(clip, weights, tmp_path):
    gt = tmp_path / "annotations" / "gt.json"
    gt.parent.mkdir()
    gt.write_text(json.dumps({"images": [{"id": 1, "file_name": "seq/5.bmp", "width": 120, "height": 80}],
                              "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [35, 30, 4, 4]}],
                              "categories": [{"id": 1, "name": "plane"}]}))
    out = tmp_path / "one.png"
    result = run("vid_predict.py", "--weights", weights, "--source", clip / "5.bmp", "--out", out, "--crop", "--count",
                 "--conf", "0.2", "--gt", gt, "--data-root", clip.parent, *MODEL)
    assert result.returncode == 0, result.stderr
    image = cv2.imread(str(out))
    assert image.shape == (80, 120, 3)
    green = (image[..., 0] == 0) & (image[..., 1] == 255) & (image[..., 2] == 0)
    assert green[28:37, 33:41].any()  # the ground-truth box, in green, around (35, 30, 4, 4)
    crops = list((tmp_path / "crops").glob("seq_5_*.png"))
    assert f"{clip / '5.bmp'}: {len(crops)} plane" in result.stdout and crops
    result = run("vid_predict.py", "--mode", "dir", "--weights", weights, "--source", clip, "--out", tmp_path / "dir",
                 *MODEL)
    assert result.returncode == 0, result.stderr
    assert sorted(int(p.stem) for p in (tmp_path / "dir").glob("*.png")) == list(range(12))


def test_fps_mode_times_both_engines(clip, weights):
    result = run("vid_predict.py", "--mode", "fps", "--weights", weights, "--source", clip, "--fps-frames", "6", *MODEL)
    assert result.returncode == 0, result.stderr
    assert "stream" in result.stdout and "window" in result.stdout and "streaming speed-up" in result.stdout


def test_drawing_boxes_partly_or_wholly_outside_the_frame():
    from utils.infer.visualize import crops, draw_frame
    image = np.zeros((40, 60, 3), np.uint8)
    detections = np.array([[-5, -5, 10, 10, 0.9, 1.0, 0],      # partly outside: clipped
                           [50, 10, 70, 20, 0.9, 1.0, 0],      # below the frame: skipped
                           [5, 55, 15, 80, 0.9, 1.0, 0]], np.float32)  # right of the frame: skipped
    drawn = np.asarray(draw_frame(image, detections, ["target"]))
    assert drawn.shape == image.shape and drawn[:12, :12].any() and not drawn[20:, 30:].any()
    assert [crop.shape[:2] for crop in crops(image, detections[:1])] == [(10, 10)]
