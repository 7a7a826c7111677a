"""Input files that are not what they claim: pipes where files are expected, JSON built to exhaust the parser,
comparison curves that are not precisions. Each is one ``error:`` line (or a note) in seconds, never a hang."""
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import (REPO, assert_clean_error, frames_of, prior_weights, run_script, tiny_synthetic_dataset,
                      write_frames)

from nets import Network

INFER = ["--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_synthetic_dataset(tmp_path_factory.mktemp("data"), seed=3, train_sequences=1, frames_per_sequence=6)


def score(data, out, *flags):
    model_run = [] if "--detections" in flags else INFER
    return run_script("vid_map_coco.py", "--data-root", data, "--out-dir", out, "--quiet", *model_run, *flags,
                      timeout=120)


def test_a_pipe_as_detections_is_refused_not_waited_on(data, tmp_path):
    fifo = tmp_path / "detections.json"
    os.mkfifo(fifo)
    assert_clean_error(score(data, tmp_path / "out", "--detections", fifo), f"--detections {fifo}",
                       "not a regular file")


@pytest.mark.parametrize("content, fragment", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('[{"image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "score": ' + "9" * 5000 + "}]", "not valid"),
], ids=["deep", "huge-number"])  # ids: the test's name travels in an environment variable, limited to 128 KiB
def test_json_built_to_exhaust_the_parser_is_one_line(data, tmp_path, content, fragment):
    detections = tmp_path / "detections.json"
    detections.write_text(content)
    assert_clean_error(score(data, tmp_path / "out", "--detections", detections), f"--detections {detections}",
                       fragment)


def test_a_pipe_as_sidecar_is_not_read(data, tmp_path):
    """The sidecar is looked up as a regular file only: a FIFO beside the weights is ignored, and weights that then
    cannot say what they are ask for their size instead of hanging."""
    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    torch.save(Network(1, 5, "nano", lstm_hidden=8).state_dict(), weights)
    os.mkfifo(tmp_path / "w.pth.json")
    result = score(data, tmp_path / "out", "--weights", weights, "--input-size", "64")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("values, fragment", [
    (["nan"] + ["0.5"] * 100, "value 1 is nan"),
    (["0.5"] * 100 + ["1.5"], "value 101 is 1.5"),
    (["0.5"] * 50 + ["inf"] + ["0.5"] * 50, "value 51 is inf"),
])
def test_compare_curves_must_be_precisions(data, tmp_path, values, fragment):
    curve = tmp_path / "other.txt"
    curve.write_text("\t".join(values) + "\n")
    detections = tmp_path / "detections.json"
    detections.write_text(json.dumps([]))
    assert_clean_error(score(data, tmp_path / "out", "--detections", detections, "--compare", curve),
                       f"--compare {curve}", fragment, "expected a precision in [0, 1]")


def test_compare_accepts_cocos_minus_one(data, tmp_path):
    curve = tmp_path / "other.txt"
    curve.write_text("\t".join(["0.5"] * 60 + ["-1"] * 41) + "\n")
    detections = tmp_path / "detections.json"
    detections.write_text(json.dumps([]))
    result = score(data, tmp_path / "out", "--detections", detections, "--compare", curve)
    assert result.returncode == 0, result.stderr


class RunsCode:
    """A pickle that would call a function when loaded: what a booby-trapped weights file holds."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("script, flag", [("vid_map_coco.py", "--weights"), ("train_daub.py", "--pretrained"),
                                          ("train_daub.py", "--resume")])
def test_a_pickle_that_would_run_code_is_refused_in_plain_words(data, tmp_path, script, flag):
    trap = tmp_path / "trap.pth"
    torch.save({"model": RunsCode()}, trap)
    argv = [flag, trap] if flag == "--resume" else [flag, trap, "--data-root", data]
    if script == "vid_map_coco.py":
        argv += ["--out-dir", tmp_path / "out", *INFER]
    else:
        argv += ["--save-dir", tmp_path / "run", "--epochs", "1", "--device", "cpu"]
    result = run_script(script, *argv, timeout=120)
    assert_clean_error(result, str(trap), "refused", "loading it could run code")
    assert "weights_only" not in result.stderr and not (REPO / "pwned").exists()


# ------------------------------------------------------------------------------------------- frames and sources
@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return prior_weights(tmp_path_factory.mktemp("weights"))


PREDICT = ["--input-size", "64", "--workers", "0", "--quiet", "--device", "cpu"]


def test_frames_of_another_size_in_video_mode_are_scaled_in_with_a_note(weights, tmp_path):
    folder = tmp_path / "seq"
    write_frames(folder, range(3), size=(48, 64))
    write_frames(folder, range(3, 6), size=(32, 32))
    out = tmp_path / "v.mp4"
    result = run_script("vid_predict.py", "--mode", "video", "--weights", weights, "--source", folder, "--out", out,
                        *PREDICT)
    assert result.returncode == 0, result.stderr
    assert frames_of(out) == (6, (64, 48))
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "3.bmp is 32x32, the video 64x48" in notes[0]


def test_a_folder_of_mixed_suffixes_names_them(weights, tmp_path):
    folder = tmp_path / "seq"
    for number, suffix in enumerate([".bmp", ".png", ".jpg", ".bmp"]):
        write_frames(folder, [number], suffix=suffix)
    result = run_script("vid_predict.py", "--mode", "dir", "--weights", weights, "--source", folder, "--out",
                        tmp_path / "out", *PREDICT)
    assert_clean_error(result, str(folder), ".bmp, .jpg, .png", "share one suffix")
    # A DAUB-layout key frame whose window finds a frame under another suffix says which.
    result = run_script("vid_predict.py", "--weights", weights, "--source", folder / "3.bmp", "--out",
                        tmp_path / "p.png", *PREDICT)
    assert_clean_error(result, "1.bmp: frame not found", "the folder has 1.png")


def test_a_path_named_like_a_camera_is_read_as_the_path(weights, tmp_path):
    folder = tmp_path / "7"
    write_frames(folder, range(3))
    result = subprocess.run([sys.executable, REPO / "vid_predict.py", "--mode", "video", "--weights", weights,
                             "--source", "7", "--out", tmp_path / "v.mp4", *PREDICT], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "reading the path ./7, not camera 7" in result.stdout and frames_of(tmp_path / "v.mp4")[0] == 3


def test_one_training_set_listed_twice_is_refused(data, tmp_path):
    link = tmp_path / "same"
    link.symlink_to(data)
    for argv in (["--mix-data", data], ["--mix-data", link], ["--mix-data", tmp_path / "x", tmp_path / "x"]):
        result = run_script("train_daub.py", "--data-root", data, *argv, "--save-dir", tmp_path / "run",
                            "--epochs", "1", "--device", "cpu", timeout=120)
        assert_clean_error(result, "the same folder as", "--dataset-repeats")
    assert not (tmp_path / "run").exists()
