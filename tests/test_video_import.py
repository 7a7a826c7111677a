"""utils_coco/videos_to_daub.py: labelled videos into the DAUB layout, through its command line.

The videos are made here: frame n is a flat grey of level 20 + 9n, so a written frame says which video frame it is
(mp4v keeps a flat frame within a few levels), and any shift between labels and frames would show.
"""
import json

import cv2
import numpy as np
import pytest
from conftest import DRONE_VIDEOS, REPO, assert_clean_error, run_script

from utils.data.annotations import read_coco
from utils.data.video_labels import MATLAB_ORIGIN, read_label_text

SCRIPT = REPO / "utils_coco" / "videos_to_daub.py"
WIDTH, HEIGHT = 48, 32


def level(n: int) -> int:
    return 20 + 9 * n


def write_video(path, frames: int, size=(WIDTH, HEIGHT)):
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, size)
    assert writer.isOpened()
    for n in range(frames):
        writer.write(np.full((size[1], size[0], 3), level(n), np.uint8))
    writer.release()
    return path


def frame_level(path) -> float:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image.ndim == 2, "frames are written grey, one channel"
    return float(image.mean())


def convert(*args, workers=0):
    return run_script(SCRIPT, *args, "--workers", str(workers), timeout=300)


def written_numbers(folder):
    return sorted(int(path.stem) for path in folder.iterdir())


def test_text_labels_give_exactly_the_key_frames_windows_and_boxes(tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "IR_BIRD_007.mp4", 20)
    # Frames 0-11 and 15 labelled; 6 has no target in view; 3 and 16 are not multiples of the step.
    (videos / "IR_BIRD_007.txt").write_text(
        "# a comment line\n0 10,5,6,4\n3 1,1,2,2\n6\n9 20.5,8.25,5,3,x 2,2,4,4 # two boxes\n12 40,20,6,6\n"
        "15 44,28,10,10\n16 1,1,3,3\n")
    out = tmp_path / "out"
    result = convert("--videos", videos, "--out", out, "--keyframe-step", "3", "--num-frame", "3", "--split", "test")
    assert result.returncode == 0, result.stderr
    folder = out / "images/test/IR_BIRD_007"
    # Key frames: the labelled multiples of 3 (0, 3, 6, 9, 12, 15; 16 is not one), each with a window of 3 frames.
    assert written_numbers(folder) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    for number in written_numbers(folder):
        assert abs(frame_level(folder / f"{number}.png") - level(number)) < 5, number
    data = json.loads((out / "annotations/instances_test2017.json").read_text())
    images = {image["frame_id"]: image for image in data["images"]}
    assert sorted(images) == [0, 3, 6, 9, 12, 15]
    assert all(image["file_name"] == f"images/test/IR_BIRD_007/{frame}.png" for frame, image in images.items())
    boxes = {}
    for annotation in data["annotations"]:
        boxes.setdefault(images_by_id(data)[annotation["image_id"]], []).append(annotation["bbox"])
    # Frame 6 stays a key frame without a box; frame 15's box is clipped to the 48x32 frame.
    assert boxes == {0: [[10, 5, 6, 4]], 3: [[1, 1, 2, 2]], 9: [[20.5, 8.25, 5, 3], [2, 2, 4, 4]],
                     12: [[40, 20, 6, 6]], 15: [[44, 28, 4, 4]]}
    assert "1 box(es) reach outside the 48x32 frame (first: frame 15" in result.stderr
    assert data["categories"] == [{"id": 1, "name": "target", "supercategory": "none"}]
    assert data["videos"][0]["attributes"] == {"class": "bird"}
    assert data["videos"][0]["frames"] == 20
    # The rest of the project reads it: frame 6 is an unannotated frame, the others annotated.
    ground_truth = read_coco(out / "annotations/instances_test2017.json", out)
    assert len(ground_truth.records) == 5 and len(ground_truth.unannotated) == 1


def images_by_id(data):
    return {image["id"]: image["frame_id"] for image in data["images"]}


def test_a_key_frame_step_wider_than_the_window_writes_only_what_windows_read(tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "clip1.mp4", 25)
    (videos / "clip1.txt").write_text("".join(f"{n} 5,5,4,4\n" for n in range(25)))
    out = tmp_path / "out"
    assert convert("--videos", videos, "--out", out, "--keyframe-step", "10", "--num-frame", "3").returncode == 0
    assert written_numbers(out / "images/train/clip1") == [0, 8, 9, 10, 18, 19, 20]
    # The dataset's windows are the video's: key frame 10 reads frames 8, 9, 10.
    from utils.data.sequence import SequenceFolders
    window = SequenceFolders().window(out / "images/train/clip1/10.png", 3)
    assert [path.name for path in window] == ["8.png", "9.png", "10.png"]
    assert [round(frame_level(path)) for path in window] == pytest.approx([level(8), level(9), level(10)], abs=5)


def test_labels_longer_or_shorter_than_the_video_stay_aligned_from_frame_zero(tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "a.mp4", 10)
    (videos / "a.txt").write_text("".join(f"{n} {n},2,4,4\n" for n in range(0, 13)))  # 3 labels past the end
    out = tmp_path / "out"
    result = convert("--videos", videos, "--out", out, "--keyframe-step", "2", "--num-frame", "2")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "frames 10-12" in warnings[0] and "10 frames" in warnings[0], result.stderr
    data = json.loads((out / "annotations/instances_train2017.json").read_text())
    frames = images_by_id(data)
    # The box x position is the frame index: a shifted label would show here.
    assert sorted((frames[a["image_id"]], a["bbox"][0]) for a in data["annotations"]) == [
        (n, n) for n in range(0, 10, 2)]


@pytest.mark.skipif(not (DRONE_VIDEOS / "IR_DRONE_001_LABELS.mat").is_file(), reason="drone_ir not beside the checkout")
def test_matlab_groundtruth_labels_are_shifted_into_pixel_edges_and_a_short_video_warns(tmp_path):
    from mcos_decoder import load_groundtruth
    slots = load_groundtruth(DRONE_VIDEOS / "IR_DRONE_001_LABELS.mat")
    videos = tmp_path / "videos"
    (videos).mkdir()
    # The label file is the real one (301 slots); the video made here is 320x256 with 26 frames.
    (videos / "IR_DRONE_001_LABELS.mat").write_bytes((DRONE_VIDEOS / "IR_DRONE_001_LABELS.mat").read_bytes())
    write_video(videos / "IR_DRONE_001.mp4", 26, size=(320, 256))
    out = tmp_path / "out"
    result = convert("--videos", videos, "--out", out, "--classes", "from-name")
    assert result.returncode == 0, result.stderr
    assert "labels for frames 26-300, but IR_DRONE_001.mp4 has 26 frames" in result.stderr
    data = json.loads((out / "annotations/instances_train2017.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "drone", "supercategory": "none"}]
    frames = images_by_id(data)
    assert sorted(frames.values()) == [0, 5, 10, 15, 20, 25]
    for annotation in data["annotations"]:
        x, y, w, h = slots[frames[annotation["image_id"]]]
        assert annotation["bbox"] == pytest.approx([x - MATLAB_ORIGIN, y - MATLAB_ORIGIN, w, h])
    assert written_numbers(out / "images/train/IR_DRONE_001") == list(range(26))


def test_splits_classes_from_labels_and_attributes(tmp_path):
    videos = tmp_path / "videos"
    for name in ("IR_DRONE_001", "IR_BIRD_002", "IR_BIRD_003"):
        write_video(videos / f"{name}.mp4", 6)
        (videos / f"{name}.txt").write_text("0 1,1,4,4,drone\n5 2,2,4,4,bird 9,9,3,3,drone\n")
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"train": ["IR_DRONE_001", "IR_BIRD_002"], "test": ["IR_BIRD_003"],
                                  "distance_bin": {"IR_DRONE_001": "CLOSE", "IR_BIRD_003": "DISTANT"}}))
    out = tmp_path / "out"
    result = convert("--videos", videos, "--out", out, "--splits", splits, "--classes", "from-labels", workers=2)
    assert result.returncode == 0, result.stderr
    train = json.loads((out / "annotations/instances_train2017.json").read_text())
    test = json.loads((out / "annotations/instances_test2017.json").read_text())
    assert [video["name"] for video in train["videos"]] == ["IR_BIRD_002", "IR_DRONE_001"]
    assert train["videos"][1]["attributes"] == {"distance_bin": "CLOSE", "class": "drone"}
    assert test["videos"][0]["attributes"] == {"distance_bin": "DISTANT", "class": "bird"}
    assert train["categories"] == test["categories"] == [{"id": 1, "name": "bird", "supercategory": "none"},
                                                         {"id": 2, "name": "drone", "supercategory": "none"}]
    assert sorted(annotation["category_id"] for annotation in test["annotations"]) == [1, 2, 2]


def test_one_unreadable_video_is_left_out_with_one_error_line(tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "good.mp4", 6)
    (videos / "good.txt").write_text("0 1,1,4,4\n5 1,1,4,4\n")
    (videos / "broken.mp4").write_bytes(b"not a video at all" * 100)
    (videos / "broken.txt").write_text("0 1,1,4,4\n")
    (videos / "nolabels.mp4").write_bytes((videos / "good.mp4").read_bytes())
    out = tmp_path / "out"
    result = convert("--videos", videos, "--out", out)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, result.stderr
    assert any("broken.mp4" in line and "not a readable video" in line for line in errors)
    assert any("nolabels.mp4: no label file" in line for line in errors)
    assert errors[-1] == "error: 2 clip(s) could not be converted (see above); the dataset holds the others"
    data = json.loads((out / "annotations/instances_train2017.json").read_text())
    assert [video["name"] for video in data["videos"]] == ["good"]


@pytest.mark.parametrize("labels, fragment", [
    ("0 1,1,4\n", "a.txt:1: box '1,1,4' must be x,y,w,h or x,y,w,h,class"),
    ("0 1,1,4,4\n0 2,2,4,4\n", "a.txt:2: frame 0 is listed twice"),
    ("x 1,1,4,4\n", "a.txt:1: line must start with a frame index"),
    ("0 1,1,nan,4\n", "a.txt:1: box '1,1,nan,4' is not finite"),
    ("0 1,1,4,4,a.b\n", "class name 'a.b' must be a word"),
])
def test_a_bad_label_line_is_named_by_file_and_line(tmp_path, labels, fragment):
    videos = tmp_path / "videos"
    write_video(videos / "a.mp4", 3)
    (videos / "a.txt").write_text(labels)
    result = convert("--videos", videos, "--out", tmp_path / "out")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert fragment in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_outputs_never_land_on_inputs_or_foreign_folders(tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "a.mp4", 3)
    (videos / "a.txt").write_text("0 1,1,4,4\n")
    assert_clean_error(convert("--videos", videos, "--out", videos / "dataset"), "--out", "lies inside the input")
    assert_clean_error(convert("--videos", videos, "--out", tmp_path), "--out", "contains the input --videos")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    assert_clean_error(convert("--videos", videos, "--out", foreign), "not empty and was not written by")
    assert (foreign / "keep.txt").read_text() == "mine"
    bad_splits = tmp_path / "splits.json"
    bad_splits.write_text(json.dumps({"train": ["a"], "test": ["a"]}))
    assert_clean_error(convert("--videos", videos, "--out", tmp_path / "o", "--splits", bad_splits),
                       "clip a is in both 'train' and 'test'")
    assert_clean_error(convert("--videos", videos, "--out", tmp_path / "o", "--keyframe-step", "0"),
                       "--keyframe-step 0")


def test_a_second_conversion_replaces_its_own_earlier_output(tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "a.mp4", 12)
    (videos / "a.txt").write_text("".join(f"{n} 1,1,4,4\n" for n in range(12)))
    out = tmp_path / "out"
    assert convert("--videos", videos, "--out", out, "--keyframe-step", "1", "--split", "val").returncode == 0
    assert written_numbers(out / "images/val/a") == list(range(12))
    result = convert("--videos", videos, "--out", out, "--keyframe-step", "10", "--num-frame", "2")
    assert result.returncode == 0, result.stderr
    assert not (out / "images/val").exists() and not (out / "annotations/instances_val2017.json").exists()
    assert written_numbers(out / "images/train/a") == [0, 9, 10]


def test_help_and_text_labels_never_need_mcos_decoder(tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "a.mp4", 3)
    (videos / "a.txt").write_text("0 1,1,4,4\n")
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "mcos_decoder.py").write_text("raise ImportError('blocked for the test')\n")
    env = {"PYTHONPATH": str(blocker), "PATH": "/usr/bin:/bin"}
    assert run_script(SCRIPT, "--help", env=env).returncode == 0
    result = run_script(SCRIPT, "--videos", videos, "--out", tmp_path / "out", "--workers", "0", env=env)
    assert result.returncode == 0, result.stderr
    (videos / "a.txt").unlink()
    (videos / "a_LABELS.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    result = run_script(SCRIPT, "--videos", videos, "--out", tmp_path / "out2", "--workers", "0", env=env)
    assert "needs the mcos-decoder package" in result.stderr and "Traceback" not in result.stderr


def test_text_format_round_trips(tmp_path):
    from utils.data.video_labels import format_label_text
    path = tmp_path / "labels.txt"
    path.write_text("3 1.5,2,3,4,bird 5,6,7,8\n0\n")
    labels = read_label_text(path)
    assert sorted(labels.frames) == [0, 3] and labels.frames[0] == [] and not labels.dense
    path.write_text(format_label_text(labels.frames))
    assert read_label_text(path).frames == labels.frames
