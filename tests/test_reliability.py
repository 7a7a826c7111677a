"""Runs that are never clobbered, mixed or silently wrong: copies, concurrency, kills, disk full, odd data, options.

Every case goes through the real command lines (subprocesses), as a user would meet it.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO, assert_clean_error, run_script, tiny_synthetic_dataset

from nets import Network
from utils.data.images import to_uint8
from utils.infer.engine import build_model
from utils.model_spec import ModelSpec
from utils.sidecar import sidecar_path

MODEL = ["--phi", "nano", "--lstm-hidden", "8", "--input-size", "64"]
TRAIN = [*MODEL, "--workers", "0", "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--eval-period", "0"]
INFER = ["--workers", "0", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_synthetic_dataset(tmp_path_factory.mktemp("data"), seed=7, train_sequences=1, frames_per_sequence=8)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """A finished one-epoch run."""
    folder = tmp_path_factory.mktemp("runs") / "R"
    result = run_script("train_daub.py", "--data-root", data, "--save-dir", folder, *TRAIN)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Untrained nano weights whose head prior gives detections, with a sidecar saying they run at 64 px."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    model = Network(1, 5, "nano", lstm_hidden=8)
    model.head.initialize_biases(0.5)
    torch.save(model.state_dict(), folder / "w.pth")
    sidecar = {"format": "sstnet-weights/1", "model": {"phi": "nano", "num_frame": 5, "input_size": [64, 64],
                                                       "lstm_hidden": 8, "num_classes": 1},
               "class_names": ["target"]}
    (folder / "w.pth.json").write_text(json.dumps(sidecar))
    return folder / "w.pth"


def leftovers(folder):
    return [path.name for path in folder.rglob("*") if ".tmp" in path.name]


# ------------------------------------------------------------------------------------------- runs and checkpoints
def test_resuming_a_copied_run_writes_into_the_copy(run, tmp_path):
    copy = shutil.copytree(run, tmp_path / "R2")
    before = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}
    result = run_script("train_daub.py", "--resume", copy / "last_checkpoint.pth", "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert len((copy / "results.csv").read_text().splitlines()) == 3
    assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == before
    assert json.loads((copy / "args.json").read_text())["save_dir"] == str(copy)


@pytest.mark.parametrize("argv,fragment", [(["--lr", "5"], "--lr (the run's: 0.01) cannot change when resuming"),
                                           (["--input-size", "128"], "--input-size (the run's: 64)"),
                                           (["--phi", "s", "--seed", "3"], "--phi (the run's: nano), --seed")])
def test_flags_that_cannot_change_on_resume_are_refused(run, argv, fragment):
    assert_clean_error(run_script("train_daub.py", "--resume", run / "last_checkpoint.pth", *argv), fragment)


def test_a_refused_resume_leaves_the_run_untouched(data, tmp_path):
    """A step-decay run needs at least 10 epochs: --resume --epochs 9 is refused before args.json is rewritten."""
    folder = tmp_path / "step"
    result = run_script("train_daub.py", "--data-root", data, "--save-dir", folder, *TRAIN, "--lr-decay", "step",
                        "--epochs", "10", "--epoch-fraction", "0.25")
    assert result.returncode == 0, result.stderr
    before = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
    result = run_script("train_daub.py", "--resume", folder / "last_checkpoint.pth", "--epochs", "9")
    assert_clean_error(result, "--resume", "--lr-decay step: needs --epochs of at least 10", "got 9")
    assert {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()} == before


def test_resume_honours_the_flags_it_may_change_and_refuses_abbreviations(run, tmp_path):
    copy = shutil.copytree(run, tmp_path / "R3")
    result = run_script("train_daub.py", "--resume", copy / "last_checkpoint.pth", "--eval-per", "0")
    assert result.returncode == 2 and "unrecognized arguments: --eval-per" in result.stderr
    result = run_script("train_daub.py", "--resume", copy / "last_checkpoint.pth", "--data-root", tmp_path / "none")
    assert_clean_error(result, "dataset root not found")
    result = run_script("train_daub.py", "--resume", copy / "last_checkpoint.pth", "--epochs", "2", "--eval-period",
                        "1", "--workers", "1", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    args = json.loads((copy / "args.json").read_text())
    assert (args["epochs"], args["eval_period"], args["workers"]) == (2, 1, 1)
    assert (copy / "results.csv").read_text().splitlines()[-1].split(",")[5] != ""  # evaluated in epoch 2


def test_one_run_folder_one_process(data, tmp_path):
    folder = tmp_path / "D"
    first = subprocess.Popen([sys.executable, "train_daub.py", "--data-root", str(data), "--save-dir", str(folder),
                              *TRAIN, "--epochs", "100", "--exist-ok"], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (folder / ".run.lock").exists() or not (folder / ".run.lock").read_text().strip():
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.1)
        second = run_script("train_daub.py", "--data-root", data, "--save-dir", folder, *TRAIN, "--exist-ok")
        assert_clean_error(second, f"--save-dir {folder}", f"in use by another training (pid {first.pid})")
    finally:
        first.kill()  # SIGKILL: no cleanup runs, the OS drops the lock
        first.wait()
    third = run_script("train_daub.py", "--data-root", data, "--save-dir", folder, *TRAIN, "--exist-ok")
    assert third.returncode == 0, third.stderr


def test_results_never_list_an_epoch_without_its_checkpoint(data, tmp_path, monkeypatch):
    """The end-of-epoch save stopped at its last step (a second SIGTERM, a full disk): results.csv must not list
    the epoch, and a rerun's refusal points at a checkpoint that exists (or says there is none)."""
    from utils.train import run_files, trainer
    from utils.data.bundled import DAUB
    from utils.train.options import parse_config

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_resume", stopped)
    folder = tmp_path / "S"
    with pytest.raises(KeyboardInterrupt):
        trainer.Trainer(parse_config(["--data-root", str(data), "--save-dir", str(folder), *TRAIN], DAUB)).fit()
    assert not (folder / "results.csv").exists() and not leftovers(folder)
    monkeypatch.setattr(trainer, "save_resume", run_files.save_resume)
    trainer.Trainer(parse_config(["--data-root", str(data), "--save-dir", str(tmp_path / "T"), *TRAIN,
                                "--epochs", "2"], DAUB)).fit(until_epoch=1)
    refused = run_script("train_daub.py", "--data-root", data, "--save-dir", tmp_path / "T", *TRAIN)
    assert_clean_error(refused, f"--resume {tmp_path / 'T' / 'last_checkpoint.pth'}")
    (tmp_path / "T" / "last_checkpoint.pth").unlink()
    refused = run_script("train_daub.py", "--data-root", data, "--save-dir", tmp_path / "T", *TRAIN)
    assert_clean_error(refused, "holds no checkpoint to resume")


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a tiny tmpfs (root only), to fill up."""
    def mount(size: str):
        folder = tmp_path / f"disk_{size}"
        folder.mkdir()
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                               capture_output=True).returncode != 0:
            pytest.skip("mounting a small tmpfs needs root")
        mounted.append(folder)
        return folder

    mounted = []
    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_disk_full_in_training_evaluation_and_prediction(data, weights, small_disk):
    disk = small_disk("60m")  # the weights (44 MB) fit, the resume checkpoint (97 MB) does not
    result = run_script("train_daub.py", "--data-root", data, "--save-dir", disk / "run", *TRAIN)
    assert_clean_error(result, f"{disk / 'run'}: no space left on device")
    assert not leftovers(disk) and not (disk / "run" / "results.csv").exists()

    disk = small_disk("24k")
    result = run_script("vid_map_coco.py", "--weights", weights, "--data-root", data, "--out-dir", disk / "map",
                        *INFER)
    assert_clean_error(result, f"{disk / 'map'}: no space left on device")
    assert not leftovers(disk)

    disk = small_disk("16k")
    result = run_script("vid_predict.py", "--mode", "video", "--weights", weights, "--source",
                        data / "images/test/data2", "--out", disk / "v.mp4", *INFER)
    assert_clean_error(result, f"{disk}: no space left on device")
    assert not leftovers(disk) and not (disk / "v.mp4").exists()


@pytest.mark.parametrize("script", ["vid_map_coco.py", "vid_predict.py"])
def test_sigterm_in_evaluation_and_prediction_ends_like_ctrl_c(daub_real, weights, tmp_path, script):
    out = tmp_path / "out"
    argv = (["--data-root", daub_real, "--out-dir", out] if script == "vid_map_coco.py" else
            ["--mode", "video", "--source", daub_real / "images/test/data5", "--out", out / "v.mp4"])
    # 640 px keeps the walk seconds long on a fast machine; the signal goes once the progress bar has started.
    process = subprocess.Popen([sys.executable, script, "--weights", str(weights), *map(str, argv), "--workers", "0",
                                "--device", "cpu", "--input-size", "640"], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    chunks = []

    def read_stderr():
        while character := process.stderr.read(1):
            chunks.append(character)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while "%|" not in "".join(chunks) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    reader.join(timeout=10)
    stderr = "".join(chunks)
    assert process.returncode == 143, stderr
    assert stderr.rstrip().endswith("terminated") and "Traceback" not in stderr
    assert not out.exists() or not leftovers(out)
    assert not (out / "metrics.json").exists() and not (out / "v.mp4").exists()


def test_output_paths_are_checked_before_the_work(data, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    missing = tmp_path / "missing.pth"  # were the model loaded first, the error would name the weights
    result = run_script("vid_map_coco.py", "--weights", missing, "--data-root", data, "--out-dir", a_file, *INFER)
    assert_clean_error(result, f"--out-dir {a_file}: is a file")
    frame = data / "images/test/data2/3.bmp"
    a_folder = tmp_path / "folder"
    a_folder.mkdir()
    result = run_script("vid_predict.py", "--weights", missing, "--source", frame, "--out", a_folder, *INFER)
    assert_clean_error(result, f"--out {a_folder}: is a folder")
    result = run_script("vid_predict.py", "--mode", "dir", "--weights", missing, "--source", frame.parent, "--out",
                        a_file, *INFER)
    assert_clean_error(result, f"--out {a_file}: is a file")


# ------------------------------------------------------------------------------------------- odd but real data
def test_non_finite_pixels_are_mapped_to_zero_after_a_finite_stretch(data, weights, tmp_path):
    values = np.array([[0.5, np.nan], [1.5, np.inf]], np.float32)
    image, count = to_uint8(values)
    assert count == 2 and image.tolist() == [[0, 0], [255, 0]]
    folder = tmp_path / "seq"
    folder.mkdir()
    for number in range(3):
        frame = cv2.imread(str(data / f"images/test/data2/{number}.bmp"), cv2.IMREAD_GRAYSCALE).astype(np.float32)
        frame[5, 5] = np.nan
        cv2.imwrite(str(folder / f"{number}.tif"), frame)
    result = run_script("vid_predict.py", "--weights", weights, "--source", folder / "2.tif", "--out",
                        tmp_path / "p.png", *INFER)
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).count("note: 3 frame(s) had NaN or infinite pixels") == 1
    drawn = cv2.imread(str(tmp_path / "p.png"))
    assert drawn.std() > 5  # the frame kept its picture (NaN used to turn every frame black)


def padded_copy(data, tmp_path):
    """The tiny dataset with frames renamed 00000.bmp, 00001.bmp, ... and the json following."""
    copy = shutil.copytree(data, tmp_path / "padded")
    for folder in (copy / "images").glob("*/*"):
        for path in folder.iterdir():
            path.rename(folder / f"{int(path.stem):05d}{path.suffix}")
    for split in ("train", "test"):
        ann = copy / f"annotations/instances_{split}2017.json"
        content = json.loads(ann.read_text())
        for image in content["images"]:
            head, name = image["file_name"].rsplit("/", 1)
            image["file_name"] = f"{head}/{int(name.split('.')[0]):05d}.bmp"
        ann.write_text(json.dumps(content))
    return copy


def test_zero_padded_frame_names_in_every_mode(data, weights, tmp_path):
    padded = padded_copy(data, tmp_path)
    plain = run_script("vid_map_coco.py", "--weights", weights, "--data-root", data, "--out-dir", tmp_path / "m1",
                       *INFER)
    assert plain.returncode == 0, plain.stderr
    result = run_script("vid_map_coco.py", "--weights", weights, "--data-root", padded, "--out-dir",
                        tmp_path / "m2", *INFER)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "m1/metrics.json").read_text()) == json.loads((tmp_path / "m2/metrics.json")
                                                                               .read_text())
    sequence = padded / "images/test/data2"
    result = run_script("vid_predict.py", "--mode", "dir", "--weights", weights, "--source", sequence, "--out",
                        tmp_path / "dir", *INFER)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (tmp_path / "dir").iterdir()) == sorted(
        path.with_suffix(".png").name for path in sequence.iterdir())
    result = run_script("vid_predict.py", "--mode", "video", "--weights", weights, "--source", sequence, "--out",
                        tmp_path / "v.mp4", *INFER)
    assert result.returncode == 0, result.stderr
    result = run_script("train_daub.py", "--data-root", padded, "--save-dir", tmp_path / "run", *TRAIN)
    assert result.returncode == 0, result.stderr


def damaged(data, tmp_path, mutate):
    copy = shutil.copytree(data, tmp_path / "damaged")
    path = copy / "annotations/instances_test2017.json"
    content = json.loads(path.read_text())
    mutate(content)
    path.write_text(json.dumps(content))
    return copy


def test_two_image_ids_with_one_file_name_are_refused(data, weights, tmp_path):
    def duplicate(content):
        content["images"][1]["file_name"] = content["images"][0]["file_name"]
    copy = damaged(data, tmp_path, duplicate)
    ids = [image["id"] for image in json.loads((copy / "annotations/instances_test2017.json").read_text())["images"]]
    result = run_script("vid_map_coco.py", "--weights", weights, "--data-root", copy, "--out-dir", tmp_path / "o",
                        *INFER)
    assert_clean_error(result, f"images {ids[0]} and {ids[1]} have the same file_name")


def test_declared_frame_size_contradicting_the_frame_is_reported(data, weights, tmp_path):
    def bigger(content):
        for image in content["images"]:
            image["width"], image["height"] = 1000, 1000
        content["annotations"][0]["bbox"] = [600, 500, 8, 8]
    copy = damaged(data, tmp_path, bigger)
    result = run_script("vid_map_coco.py", "--weights", weights, "--data-root", copy, "--out-dir", tmp_path / "o",
                        *INFER)
    assert_clean_error(result, "the frame is 64x64 px", "declares width 1000, height 1000")


@pytest.mark.parametrize("workers", ["0", "2"])
def test_degenerate_frame_and_worker_errors_are_one_line(weights, tmp_path, workers):
    folder = tmp_path / "thin"
    folder.mkdir()
    for number in range(3):
        cv2.imwrite(str(folder / f"{number}.bmp"), np.full((1, 2000, 3), 90, np.uint8))
    result = run_script("vid_predict.py", "--mode", "dir", "--weights", weights, "--source", folder, "--out",
                        tmp_path / "o", "--quiet", "--workers", workers, "--device", "cpu")
    assert_clean_error(result, "a 2000x1 px frame letterboxes to 64x0 px")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_errors_in_training_workers_are_one_line(data, tmp_path):
    copy = shutil.copytree(data, tmp_path / "broken")
    for path in (copy / "images/train").rglob("*.bmp"):
        path.write_bytes(b"not an image")
    result = run_script("train_daub.py", "--data-root", copy, "--save-dir", tmp_path / "run", *TRAIN, "--workers", "2")
    assert_clean_error(result, "not a readable image")
    assert sum(line.startswith("error:") for line in result.stderr.splitlines()) == 1
    assert "Original Traceback" not in result.stderr and "File " not in result.stderr


# ------------------------------------------------------------------------------------------- options and memory
@pytest.mark.parametrize("script,argv,fragment", [
    ("train_daub.py", ["--lr", "nan"], "--lr nan: must be greater than 0"),
    ("train_daub.py", ["--eval-conf", "5"], "--eval-conf 5.0: must lie in [0, 1]"),
    ("train_daub.py", ["--eval-nms", "nan"], "--eval-nms nan"),
    ("train_daub.py", ["--epoch-fraction", "0"], "--epoch-fraction 0.0: must lie in (0, 1]"),
    ("train_daub.py", ["--momentum", "inf"], "--momentum inf"),
    ("train_daub.py", ["--translate", "nan"], "--translate nan"),
    ("train_daub.py", ["--threads", "0"], "--threads 0"),
    ("vid_map_coco.py", ["--pd-radius", "nan"], "--pd-radius nan: must be greater than 0"),
    ("vid_map_coco.py", ["--pd-conf", "-3"], "--pd-conf -3.0: must lie in [0, 1]"),
    ("vid_map_coco.py", ["--conf", "nan"], "--conf nan"),
    ("vid_predict.py", ["--video-fps", "nan"], "--video-fps nan"),
    ("vid_predict.py", ["--nms", "inf"], "--nms inf"),
    ("benchmarks/bench.py", ["--repeats", "0"], "--repeats 0: must be at least 1"),
])
def test_numeric_options_are_range_checked_in_every_script(data, weights, tmp_path, script, argv, fragment):
    common = {"train_daub.py": ["--data-root", data, "--save-dir", tmp_path / "r", *TRAIN],
              "vid_map_coco.py": ["--weights", weights, "--data-root", data, "--out-dir", tmp_path / "o", *INFER],
              "vid_predict.py": ["--weights", weights, "--source", data / "images/test/data2/3.bmp", "--out",
                                 tmp_path / "p.png", *INFER],
              "benchmarks/bench.py": ["--phi", "nano", "--input-size", "64", "--out", tmp_path / "b.json"]}[script]
    assert_clean_error(run_script(script, *common, *argv), fragment)


@pytest.mark.parametrize("script", ["vid_predict.py", "train_daub.py", "summary.py", "export_onnx.py"])
def test_a_size_that_cannot_fit_in_memory_is_refused_before_allocating(data, weights, tmp_path, script):
    argv = {"vid_predict.py": ["--weights", weights, "--source", data / "images/test/data2/3.bmp", "--out",
                               tmp_path / "p.png", *INFER, "--input-size", "16384"],
            "train_daub.py": ["--data-root", data, "--save-dir", tmp_path / "r", *TRAIN, "--input-size", "8192",
                              "--batch-size", "8"],
            "summary.py": ["--phi", "nano", "--input-size", "16384", "--device", "cpu"],
            "export_onnx.py": ["--weights", weights, "--out", tmp_path / "onnx", "--input-size", "16384",
                               "--device", "cpu"]}[script]
    started = time.time()
    result = run_script(script, *argv, timeout=120)
    assert_clean_error(result, "--input-size", "GiB (estimated)", "GiB available", "lower --input-size")
    assert time.time() - started < 120


def test_the_weights_sidecar_fixture_is_what_training_writes(run):
    written = json.loads(open(sidecar_path(run / "last_epoch_weights.pth")).read())
    assert written["format"] == "sstnet-weights/1" and written["model"]["input_size"] == [64, 64]


@pytest.mark.parametrize("flag, value, fragment", [("--lstm-hidden", "100000", "--lstm-hidden 100000: at most 512"),
                                                   ("--num-frame", "5000", "--num-frame 5000: at most 64")])
@pytest.mark.parametrize("script", ["train_daub.py", "summary.py"])
def test_model_widths_are_bounded_before_anything_is_built(data, tmp_path, script, flag, value, fragment):
    argv = (["--data-root", data, "--save-dir", tmp_path / "r", *TRAIN] if script == "train_daub.py" else
            ["--phi", "nano", "--input-size", "64", "--device", "cpu"])
    started = time.time()
    assert_clean_error(run_script(script, *argv, flag, value, timeout=60), fragment)
    assert time.time() - started < 60


def test_inference_ignores_the_motion_branch_width_a_sidecar_claims(data, weights, tmp_path):
    """Detector-only weights whose sidecar claims the widest motion branch allowed run as fast and small as any:
    inference builds no motion branch."""
    stripped = tmp_path / "detector.pth"
    state = torch.load(weights, weights_only=True)
    torch.save({key: value for key, value in state.items() if key.startswith(("backbone", "neck", "head"))}, stripped)
    sidecar = json.loads(open(sidecar_path(weights)).read())
    sidecar["model"]["lstm_hidden"] = 512
    with open(sidecar_path(stripped), "w") as handle:
        handle.write(json.dumps(sidecar))
    result = run_script("vid_map_coco.py", "--weights", stripped, "--data-root", data, "--out-dir", tmp_path / "out",
                        *INFER, timeout=120)
    assert result.returncode == 0, result.stderr
    model = build_model(ModelSpec(phi="nano", input_shape=(64, 64), lstm_hidden=512), 1, state, torch.device("cpu"))
    assert not hasattr(model, "SSTNet") and not hasattr(model, "mapping2")
    full = Network(1, 5, "nano", lstm_hidden=512)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for name, p in full.named_parameters()
                                                              if name.startswith(("backbone", "neck", "head")))
