"""vid_map_coco.py --detections: a saved COCO results file scored without a model, by the same protocol and to the
same numbers as the run that wrote it; malformed results files are refused in one line naming the file and entry."""
import json
import math

import pytest
from conftest import assert_clean_error, prior_weights, run_script, tiny_synthetic_dataset

from utils.data.annotations import read_coco
from utils.errors import SSTNetError
from utils.infer.evaluation import read_coco_results

MODEL = ["--input-size", "64", "--workers", "0", "--quiet"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_synthetic_dataset(tmp_path_factory.mktemp("data"), seed=11, train_sequences=1, frames_per_sequence=10)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny model whose head prior gives detections of many scores on every frame."""
    return prior_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def ground_truth(dataset):
    return read_coco(dataset / "annotations" / "instances_test2017.json", dataset)


def test_scoring_the_saved_detections_gives_the_same_outputs(dataset, weights, tmp_path):
    model_run, file_run = tmp_path / "model", tmp_path / "file"
    result = run_script("vid_map_coco.py", "--weights", weights, "--data-root", dataset, "--out-dir", model_run,
                        "--per-sequence", *MODEL)
    assert result.returncode == 0, result.stderr
    saved = model_run / "detections.json"
    assert len(json.loads(saved.read_text())) > 20
    scored = run_script("vid_map_coco.py", "--detections", saved, "--data-root", dataset, "--out-dir", file_run,
                        "--per-sequence", "--quiet")
    assert scored.returncode == 0, scored.stderr
    assert f"scored from {saved}" in scored.stdout
    for name in ("metrics.json", "summary.txt", "pr_curve.txt", "per_sequence.json", "detections.json"):
        assert (file_run / name).read_text() == (model_run / name).read_text(), name
    assert {path.name for path in file_run.iterdir()} == {path.name for path in model_run.iterdir()}
    # The console report is the same up to the last line (timing there for the model run).
    assert scored.stdout.splitlines()[:-1] == result.stdout.splitlines()[:-1]
    assert json.loads((file_run / "metrics.json").read_text())["mAP50"] >= 0


def test_exactly_one_of_weights_and_detections_and_no_model_options(dataset, weights, tmp_path):
    results = tmp_path / "results.json"
    results.write_text("[]")
    for argv in ([], ["--weights", weights, "--detections", results]):
        result = run_script("vid_map_coco.py", "--data-root", dataset, "--out-dir", tmp_path / "o", *argv)
        assert_clean_error(result, "--weights / --onnx / --detections: give exactly one")
    result = run_script("vid_map_coco.py", "--detections", results, "--data-root", dataset, "--out-dir", tmp_path / "o",
                        "--conf", "0.3", "--input-size", "64")
    assert_clean_error(result, "--conf, --input-size: apply to a model run")
    # An empty results file is a method that found nothing: scored, all zero.
    result = run_script("vid_map_coco.py", "--detections", results, "--data-root", dataset, "--out-dir", tmp_path / "o")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["mAP50"] == 0


def test_a_bad_entry_through_the_command_line(dataset, tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5},
                                   {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}]))
    result = run_script("vid_map_coco.py", "--detections", results, "--data-root", dataset, "--out-dir", tmp_path / "o")
    assert_clean_error(result, f"--detections {results}: entry 1: missing 'score'")
    assert not (tmp_path / "o" / "metrics.json").exists()


GOOD = {"image_id": 1, "category_id": 1, "bbox": [10.5, 20, 8, 8], "score": 0.75}


@pytest.mark.parametrize("content,fragment", [
    ("{not json", "not valid JSON (line 1"),
    (json.dumps({"annotations": []}), "expected a list of COCO results"),
    (json.dumps([GOOD, 7]), "entry 1: expected an object, got int"),
    *[(json.dumps([{k: v for k, v in GOOD.items() if k != key}]), f"entry 0: missing '{key}'")
      for key in ("image_id", "category_id", "bbox", "score")],
    (json.dumps([{**GOOD, "image_id": 999}]), "entry 0: image_id 999 is not an image of instances_test2017.json"),
    (json.dumps([{**GOOD, "image_id": "1"}]), "entry 0: image_id '1' is not an image"),
    (json.dumps([{**GOOD, "category_id": 2}]), "entry 0: category_id 2 is not a category of"),
    (json.dumps([GOOD, {**GOOD, "bbox": [1, 2, 3]}]), "entry 1: bbox [1, 2, 3]: expected four finite numbers"),
    (json.dumps([{**GOOD, "bbox": [1, 2, math.nan, 4]}]), "entry 0: bbox [1, 2, nan, 4]: expected four finite"),
    (json.dumps([{**GOOD, "bbox": [1, 2, -3, 4]}]), "width and height must not be negative"),
    (json.dumps([{**GOOD, "score": math.inf}]), "entry 0: score inf: expected a finite number"),
    (json.dumps([{**GOOD, "score": True}]), "entry 0: score True: expected a finite number"),
])
def test_malformed_results_files_are_refused_naming_the_entry(ground_truth, tmp_path, content, fragment):
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(SSTNetError) as error:
        read_coco_results(path, ground_truth, "instances_test2017.json")
    assert str(error.value).startswith(f"--detections {path}: ") and fragment in str(error.value), str(error.value)


def test_results_are_read_as_plain_floats(ground_truth, tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{**GOOD, "bbox": [1, 2, 3, 4], "score": 1, "segmentation": []}]))
    assert read_coco_results(path, ground_truth) == [{"image_id": 1, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0],
                                                      "score": 1.0}]
    with pytest.raises(SSTNetError, match="file not found"):
        read_coco_results(tmp_path / "none.json", ground_truth)
