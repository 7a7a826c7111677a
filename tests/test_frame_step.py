"""--frame-step: windows of frames S apart, the same in the training dataset, the walk plans, the streaming engine,
the importer, the weights' sidecar and the ONNX metadata."""
import json

import numpy as np
import pytest
import torch
from conftest import calibrated_tiny_model, moving_sequence, run_script, write_coco, write_frames
from parity_recipe import relative_error

from utils.data.annotations import FrameRecord
from utils.data.dataset import SequenceDataset
from utils.data.sequence import SequenceFolders, window_numbers
from utils.data.video_import import needed_frames
from utils.infer.engine import SequenceDetector
from utils.infer.sources import frame_batches, plan_sequence_walk

MODEL = ["--input-size", "64", "--phi", "nano", "--workers", "0", "--quiet", "--batch-size", "4"]


def records(folder, numbers):
    return [FrameRecord(folder / f"{n}.bmp", np.zeros((0, 5), np.float32), image_id=n) for n in numbers]


def test_window_numbers_step_back_and_clamp_at_the_first_frame():
    assert window_numbers(12, 0, 4, 3) == [3, 6, 9, 12]
    assert window_numbers(4, 0, 4, 3) == [0, 0, 1, 4]
    assert window_numbers(4, 0, 4) == [1, 2, 3, 4]  # the release: consecutive frames


def test_dataset_windows_and_the_walk_plan_use_the_step(tmp_path):
    write_frames(tmp_path / "s", range(13))
    window = SequenceFolders().window(tmp_path / "s" / "12.bmp", 3, frame_step=4)
    assert [path.name for path in window] == ["4.bmp", "8.bmp", "12.bmp"]
    dataset = SequenceDataset(records(tmp_path / "s", [12, 5]), (32, 48), num_frame=3, frame_step=4)
    frames, _, _ = dataset.load_window(1)
    # The frames' grey levels are 10 * index: the window of key frame 5 with step 4 is 0 (clamped), 1, 5.
    assert [int(frame[16, 24, 0]) for frame in frames] == [0, 10, 50]
    plan = plan_sequence_walk(records(tmp_path / "s", [12, 5]), 3, frame_step=4)
    assert [ref.number for ref in plan] == [0, 1, 4, 5, 8, 12]
    assert {ref.number: ref.window for ref in plan if ref.is_key} == {5: (0, 1, 5), 12: (4, 8, 12)}
    assert needed_frames([5, 12], 3, 4) == [0, 1, 4, 5, 8, 12]



@pytest.mark.parametrize("batch_size", [1, 3])
def test_streaming_with_a_step_equals_the_window_computation(tmp_path, batch_size):
    model = calibrated_tiny_model(1, 3, (64, 96)).double().eval()
    moving_sequence(tmp_path / "s", 12, np.random.default_rng(1))
    # Every frame a key frame, so the cache must keep (T - 1)·step + 1 frames.
    plan = plan_sequence_walk(records(tmp_path / "s", range(12)), 3, frame_step=3)
    outputs = {}
    for mode in ("stream", "window"):
        detector = SequenceDetector(model, num_frame=3, mode=mode, frame_step=3)
        outputs[mode] = {item.ref.number: item.output for batch in frame_batches(plan, (64, 96), batch_size, 0)
                         for item in detector.process(batch)}
    assert sorted(outputs["stream"]) == list(range(12))
    for number, stream in outputs["stream"].items():
        assert relative_error(stream, outputs["window"][number]) <= 1e-9, number
    consecutive = SequenceDetector(model, num_frame=3, mode="stream")
    plain = {item.ref.number: item.output
             for batch in frame_batches(plan_sequence_walk(records(tmp_path / "s", [11]), 3), (64, 96), 1, 0)
             for item in consecutive.process(batch)}
    assert relative_error(plain[11], outputs["stream"][11]) > 0.01  # the step changes what the model sees


def test_a_model_trained_with_a_step_runs_with_it_and_says_so(tmp_path):
    """The sidecar carries the step: evaluation uses it without the flag, and a different flag is a note."""
    data = tmp_path / "data"
    write_frames(data / "images/test/data1", range(9), size=(64, 64))
    write_coco(data / "annotations/instances_test2017.json",
               [{"id": k, "file_name": f"images/test/data1/{k}.bmp", "width": 64, "height": 64} for k in (4, 8)],
               [{"id": 1, "image_id": 4, "category_id": 1, "bbox": [20, 20, 8, 8]}])
    weights = tmp_path / "tiny.pth"
    torch.save(calibrated_tiny_model(1, 5, (64, 64)).state_dict(), weights)
    sidecar = {"format": "sstnet-weights/1", "model": {"phi": "nano", "num_frame": 5, "input_size": [64, 64],
                                                       "lstm_hidden": 8, "num_classes": 1, "frame_step": 2},
               "class_names": ["target"]}
    (tmp_path / "tiny.pth.json").write_text(json.dumps(sidecar))
    stepped = run_script("vid_map_coco.py", "--weights", weights, "--data-root", data, "--out-dir", tmp_path / "a",
                         *MODEL)
    assert stepped.returncode == 0, stepped.stderr
    consecutive = run_script("vid_map_coco.py", "--weights", weights, "--data-root", data, "--out-dir", tmp_path / "b",
                             "--frame-step", "1", *MODEL)
    assert consecutive.returncode == 0, consecutive.stderr
    assert "was trained with frame step 2; running with the step given" in consecutive.stdout + consecutive.stderr
    # Key frame 4 with step 2 reads frames 0, 0, 0, 2, 4; with step 1, frames 0..4: different windows, scores.
    first = json.loads((tmp_path / "a/detections.json").read_text())
    second = json.loads((tmp_path / "b/detections.json").read_text())
    assert first and [d["score"] for d in first] != [d["score"] for d in second]
    # Exported graphs carry the step in their metadata, and the engine walks them with it.
    pytest.importorskip("onnxruntime")
    exported = run_script("export_onnx.py", "--weights", weights, "--out", tmp_path / "onnx", "--device", "cpu")
    assert exported.returncode == 0, exported.stderr
    import onnx
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "onnx" / "detect.onnx")).metadata_props}
    assert props["frame_step"] == "2"
    onnx_run = run_script("vid_map_coco.py", "--onnx", tmp_path / "onnx", "--data-root", data, "--out-dir",
                          tmp_path / "c", "--workers", "0", "--quiet", "--batch-size", "4")
    assert onnx_run.returncode == 0, onnx_run.stderr
    third = json.loads((tmp_path / "c/detections.json").read_text())
    assert len(third) == len(first)
    assert np.allclose(sorted(d["score"] for d in third), sorted(d["score"] for d in first), atol=1e-4)


def test_training_records_the_step_in_the_sidecar(tmp_path):
    from conftest import tiny_synthetic_dataset
    data = tiny_synthetic_dataset(tmp_path / "data", seed=3, train_sequences=1, frames_per_sequence=8)
    result = run_script("train_daub.py", "--data-root", data, "--epochs", "1", "--save-dir", tmp_path / "run",
                        "--input-size", "64", "--phi", "nano", "--lstm-hidden", "8", "--batch-size", "2",
                        "--workers", "0", "--device", "cpu", "--frame-step", "3", "--epoch-fraction", "0.25",
                        "--eval-period", "0")
    assert result.returncode == 0, result.stderr
    sidecar = json.loads((tmp_path / "run/last_epoch_weights.pth.json").read_text())
    assert sidecar["model"]["frame_step"] == 3
    assert json.loads((tmp_path / "run/args.json").read_text())["frame_step"] == 3
