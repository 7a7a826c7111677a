"""Hostile inputs through the real command lines: one clear `error:` line, a non-zero exit, no traceback."""
import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from conftest import assert_clean_error, run_script, tiny_synthetic_dataset

from nets import Network

TINY_MODEL = ["--input-size", "64", "--phi", "nano", "--workers", "0", "--quiet"]


run = run_script


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_synthetic_dataset(tmp_path_factory.mktemp("data"), seed=3, train_sequences=1, frames_per_sequence=6)


@pytest.fixture
def copy(dataset, tmp_path):
    """A private copy of the tiny dataset to damage."""
    return shutil.copytree(dataset, tmp_path / "copy")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(Network(1, 5, "nano", lstm_hidden=8).state_dict(), folder / "nano.pth")
    torch.save(Network(2, 5, "nano", lstm_hidden=8).state_dict(), folder / "two_classes.pth")
    torch.save(Network(1, 5, "tiny", lstm_hidden=8).state_dict(), folder / "tiny.pth")
    (folder / "random.pth").write_bytes(np.random.default_rng(0).bytes(500))
    (folder / "text.pth").write_text("not weights")
    return folder


def evaluate(root, weights_file, *extra, out=None):
    out = out or root.parent / f"{root.name}_map"  # not inside the root: creating it would create the root
    return run("vid_map_coco.py", "--weights", weights_file, "--data-root", root, "--out-dir", out, *TINY_MODEL, *extra)


def predict(root, weights_file, out, *extra):
    return run("vid_predict.py", "--weights", weights_file, "--source", root / "images/test/data2/3.bmp", "--out", out,
               *TINY_MODEL, *extra)


def test_the_tiny_setup_runs(dataset, weights, tmp_path):
    result = evaluate(dataset, weights / "nano.pth", out=tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"detections.json", "metrics.json", "summary.txt",
                                                              "pr_curve.txt", "pr_curve.png", "f1_curve.png"}


# ------------------------------------------------------------------------------------------------- paths
def test_missing_dataset_root(weights, tmp_path):
    assert_clean_error(evaluate(tmp_path / "nowhere", weights / "nano.pth"), "nowhere", "dataset root not found")
    assert_clean_error(run("train_daub.py", "--data-root", tmp_path / "nowhere"), "dataset root not found")


def test_missing_annotation_file(dataset, weights, tmp_path):
    result = evaluate(dataset, weights / "nano.pth", "--ann", "annotations/none.json", out=tmp_path / "o")
    assert_clean_error(result, "none.json", "annotation file not found")
    result = run("train_daub.py", "--data-root", dataset, "--val-ann", "nope.json", *TINY_MODEL[:4])
    assert_clean_error(result, "nope.json", "annotation file not found")


def test_missing_weights(dataset, tmp_path):
    assert_clean_error(evaluate(dataset, tmp_path / "none.pth", out=tmp_path / "o"), "none.pth", "not found")
    result = run("train_daub.py", "--data-root", dataset, "--pretrained", tmp_path / "none.pth", *TINY_MODEL[:4],
                 "--save-dir", tmp_path / "run")
    assert_clean_error(result, "none.pth", "not found")


def test_unwritable_output_folder(dataset, weights, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert_clean_error(evaluate(dataset, weights / "nano.pth", out=blocker / "out"), "a_file", "cannot create folder")
    result = predict(dataset, weights / "nano.pth", blocker / "x.png")
    assert_clean_error(result, "cannot create folder")
    result = run("train_daub.py", "--data-root", dataset, "--save-dir", blocker / "run", *TINY_MODEL[:4])
    assert_clean_error(result, "cannot create folder")


# ------------------------------------------------------------------------------------------------ frames
def test_truncated_frame(copy, weights):
    frame = copy / "images/test/data2/3.bmp"
    frame.write_bytes(frame.read_bytes()[:300])
    assert_clean_error(evaluate(copy, weights / "nano.pth"), "3.bmp", "not a readable image")


def test_file_that_is_not_an_image(copy, weights):
    (copy / "images/test/data2/4.bmp").write_text("hello")
    assert_clean_error(evaluate(copy, weights / "nano.pth"), "4.bmp", "not a readable image")


def test_missing_history_frame(copy, weights):
    (copy / "images/test/data2/2.bmp").unlink()
    damage(copy, lambda d: (d.__setitem__("images", [i for i in d["images"] if i["id"] != 3]),
                            d.__setitem__("annotations", [a for a in d["annotations"] if a["image_id"] != 3])))
    assert_clean_error(evaluate(copy, weights / "nano.pth"), "data2/2.bmp", "frame not found",
                       "5-frame window of")


def test_frames_of_different_sizes_grey_and_rgb_work(copy, weights):
    folder = copy / "images/test/data2"
    cv2.imwrite(str(folder / "1.bmp"), cv2.resize(cv2.imread(str(folder / "1.bmp")), (96, 64)))
    # The annotation file declares the resized frame's size (a contradicting size is an error of its own).
    damage(copy, lambda d: [image.update(width=96, height=64) for image in d["images"]
                            if image["file_name"].endswith("data2/1.bmp")])
    cv2.imwrite(str(folder / "2.bmp"), cv2.imread(str(folder / "2.bmp"), cv2.IMREAD_GRAYSCALE))
    colour = cv2.imread(str(folder / "3.bmp"))
    colour[..., 0] //= 2
    cv2.imwrite(str(folder / "3.bmp"), colour)
    result = evaluate(copy, weights / "nano.pth")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_frames_work(copy, weights, suffix):
    gt = json.loads((copy / "annotations/instances_test2017.json").read_text())
    for image in gt["images"]:
        path = copy / image["file_name"]
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.uint16) * 64 + 1000  # 14-bit camera range
        cv2.imwrite(str(path.with_suffix(suffix)), grey)
        path.unlink()
        image["file_name"] = str(path.with_suffix(suffix).relative_to(copy))
    (copy / "annotations/instances_test2017.json").write_text(json.dumps(gt))
    result = evaluate(copy, weights / "nano.pth")
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------------------------- annotations
def damage(copy, mutate):
    path = copy / "annotations/instances_test2017.json"
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("mutate,fragment", [
    (lambda d: d.pop("images"), "missing 'images'"),
    (lambda d: d["annotations"][0]["bbox"].__setitem__(2, -3), "width and height must be positive"),
    (lambda d: d["annotations"][0]["bbox"].__setitem__(3, 0), "width and height must be positive"),
    (lambda d: d["annotations"][0].__setitem__("category_id", 9), "category_id 9 is not in 'categories'"),
    (lambda d: d["annotations"][0].__setitem__("image_id", 999), "image_id 999 is not in 'images'"),
])
def test_bad_coco_json(copy, weights, mutate, fragment):
    damage(copy, mutate)
    assert_clean_error(evaluate(copy, weights / "nano.pth"), "instances_test2017.json", fragment)


def test_coco_file_that_is_not_json(copy, weights):
    (copy / "annotations/instances_test2017.json").write_text("{images: [")
    assert_clean_error(evaluate(copy, weights / "nano.pth"), "instances_test2017.json", "not valid JSON")


@pytest.mark.parametrize("line,fragment", [("images/train/data1/5.bmp 1,2,x,4,0", "not an integer"),
                                           ("images/train/data1/5.bmp 1,2,3", "needs 5 comma-separated integers")])
def test_bad_index_txt(dataset, tmp_path, line, fragment):
    index = tmp_path / "train.txt"
    index.write_text("images/train/data1/4.bmp 1,2,9,10,0\n" + line + "\n")
    result = run("train_daub.py", "--data-root", dataset, "--train-txt", index, "--val-txt", index, *TINY_MODEL[:4],
                 "--save-dir", tmp_path / "run")
    assert_clean_error(result, f"{index}:2:", fragment)


# ------------------------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("name,fragments", [
    ("random.pth", ("random.pth", "not a readable PyTorch weights file")),
    ("text.pth", ("text.pth", "not a readable PyTorch weights file")),
    ("tiny.pth", ("tiny.pth", "--phi nano", "holds a model with --phi tiny")),
    ("two_classes.pth", ("two_classes.pth", "trained for 2 classes", "annotations have 1")),
])
def test_bad_weights(dataset, weights, tmp_path, name, fragments):
    assert_clean_error(evaluate(dataset, weights / name, out=tmp_path / "o"), *fragments)


def test_weights_for_another_frame_count(dataset, weights, tmp_path):
    result = evaluate(dataset, weights / "nano.pth", "--num-frame", "3", out=tmp_path / "o")
    assert_clean_error(result, "--num-frame 3", "nano.pth", "holds a model with --num-frame 5")


# ------------------------------------------------------------------------------------------------- options
def assert_both_inference_scripts_refuse(dataset, weights_file, tmp_path, argv, fragment):
    assert_clean_error(evaluate(dataset, weights_file, *argv, out=tmp_path / "o"), fragment)
    assert_clean_error(predict(dataset, weights_file, tmp_path / "p.png", *argv), fragment)


@pytest.mark.parametrize("argv,fragment", [(["--input-size", "100"], "--input-size '100'"),
                                           (["--num-frame", "1"], "--num-frame 1"),
                                           (["--device", "cuda"], "--device cuda: CUDA is not available")])
def test_bad_options_in_every_script(dataset, weights, tmp_path, argv, fragment):
    assert_both_inference_scripts_refuse(dataset, weights / "nano.pth", tmp_path, argv, fragment)
    result = run("train_daub.py", "--data-root", dataset, "--save-dir", tmp_path / "run", *TINY_MODEL[:4], *argv)
    assert_clean_error(result, fragment)


@pytest.mark.parametrize("argv,fragment", [(["--batch-size", "0"], "--batch-size 0: must be at least 1"),
                                           (["--workers", "-1"], "--workers -1: must be at least 0"),
                                           (["--conf", "1.5"], "--conf 1.5: must lie in [0, 1]"),
                                           (["--nms", "-0.1"], "--nms -0.1: must lie in [0, 1]")])
def test_bad_detector_options_in_both_inference_scripts(dataset, weights, tmp_path, argv, fragment):
    assert_both_inference_scripts_refuse(dataset, weights / "nano.pth", tmp_path, argv, fragment)
    assert not (tmp_path / "o").exists() and not (tmp_path / "p.png").exists()


def test_debug_shows_the_traceback(dataset, tmp_path):
    result = run("vid_map_coco.py", "--weights", tmp_path / "none.pth", "--data-root", dataset, "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr and "SSTNetError" in result.stderr
