"""No output ever destroys an input: through every script, an output path that is, contains or lies inside a path the
run reads (sidecars included) is refused in one line before anything is written, and a generator writes only into
an empty folder or one it marked as its own."""
import hashlib
import shutil

import pytest

from conftest import assert_clean_error, prior_weights, run_script, write_coco, write_frames


def digest(folder):
    """Every file under ``folder`` (or the file itself) with the hash of its bytes."""
    paths = [folder] if folder.is_file() else sorted(path for path in folder.rglob("*") if path.is_file())
    return {str(path): hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    path = prior_weights(folder)
    # A sidecar, so strip_weights.py accepts the file.
    (folder / "tiny.pth.json").write_text(
        '{"format": "sstnet-weights/1", "model": {"phi": "nano", "num_frame": 5, "input_size": [64, 64], '
        '"lstm_hidden": 8, "num_classes": 1}, "class_names": ["target"]}')
    return path


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "real"
    write_frames(root / "images/test/data1", range(3), size=(64, 64))
    write_coco(root / "annotations/instances_test2017.json",
               [{"id": k + 1, "file_name": f"images/test/data1/{k}.bmp", "width": 64, "height": 64} for k in range(3)],
               [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 8, 8]}])
    return root


def test_the_synthetic_generator_never_writes_over_a_real_dataset(dataset, tmp_path):
    before = digest(dataset)
    result = run_script("utils_coco/make_synthetic.py", "--out", dataset, "--train-sequences", "1",
                        "--test-sequences", "1", "--frames-per-sequence", "3", "--quiet")
    assert_clean_error(result, f"--out {dataset}", "holds no dataset of this generator")
    assert digest(dataset) == before
    own = tmp_path / "synthetic"
    for _ in range(2):  # a new folder, then its own earlier output: both fine
        result = run_script("utils_coco/make_synthetic.py", "--out", own, "--train-sequences", "1",
                            "--test-sequences", "1", "--frames-per-sequence", "3", "--quiet", "--height", "64",
                            "--width", "64")
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("mode", ["predict", "dir", "video"])
def test_prediction_never_writes_over_its_source(dataset, weights, mode):
    folder = dataset / "images/test/data1"
    source = folder / "1.bmp" if mode == "predict" else folder
    before = digest(dataset)
    out = source if mode != "video" else folder
    result = run_script("vid_predict.py", "--mode", mode, "--weights", weights, "--source", source, "--out", out,
                        "--input-size", "64", "--workers", "0", "--quiet")
    assert_clean_error(result, f"--out {out}", "the input --source")
    if mode == "dir":  # annotated frames written into the folder they are read from
        result = run_script("vid_predict.py", "--mode", "dir", "--weights", weights, "--source", folder, "--out",
                            folder / "annotated", "--input-size", "64", "--workers", "0", "--quiet")
        assert_clean_error(result, "lies inside the input --source")
    assert digest(dataset) == before


def test_an_index_file_never_replaces_its_coco_file(dataset):
    json_path = dataset / "annotations/instances_test2017.json"
    before = digest(json_path)
    assert_clean_error(run_script("utils_coco/coco_to_txt.py", "--json", json_path, "--out", json_path),
                       "is the input --json")
    assert digest(json_path) == before


def test_detector_only_weights_never_replace_the_input_or_its_sidecar(weights, tmp_path):
    before = digest(weights.parent)
    sidecar = weights.parent / "tiny.pth.json"
    assert_clean_error(run_script("strip_weights.py", "--weights", weights, "--out", sidecar),
                       "is the input --weights (its sidecar)")
    folder = tmp_path / "existing"
    folder.mkdir()
    result = run_script("strip_weights.py", "--weights", weights, "--out", folder)
    assert_clean_error(result, f"--out {folder}: is a folder")
    assert digest(weights.parent) == before and not (tmp_path / "existing.json").exists()
    assert list(folder.iterdir()) == []


def test_evaluation_never_writes_over_a_curve_it_compares(dataset, weights, tmp_path):
    out = tmp_path / "map"
    out.mkdir()
    curve = out / "pr_curve.txt"
    curve.write_text("\t".join(["0.5"] * 101) + "\t\n")
    before = digest(curve)
    result = run_script("vid_map_coco.py", "--weights", weights, "--data-root", dataset, "--out-dir", out,
                        "--compare", curve, "--input-size", "64", "--workers", "0", "--quiet")
    assert_clean_error(result, f"--out-dir {out}", "contains the input --compare")
    result = run_script("vid_map_coco.py", "--weights", weights, "--data-root", dataset, "--out-dir",
                        dataset / "map_out", "--input-size", "64", "--workers", "0", "--quiet")
    assert_clean_error(result, "lies inside the input --data-root")
    assert digest(curve) == before and not (dataset / "map_out").exists()


def test_training_and_export_never_write_into_what_they_read(dataset, weights, tmp_path):
    before = digest(dataset)
    result = run_script("train_daub.py", "--data-root", dataset, "--save-dir", dataset / "run", "--epochs", "1",
                        "--input-size", "64", "--phi", "nano", "--device", "cpu")
    assert_clean_error(result, "--save-dir", "lies inside the input --data-root")
    assert digest(dataset) == before
    copy = tmp_path / "export"
    copy.mkdir()
    shutil.copy(weights, copy / "w.pth")
    result = run_script("export_onnx.py", "--weights", copy / "w.pth", "--out", copy, "--input-size", "64")
    assert_clean_error(result, f"--out {copy}", "contains the input --weights")
    assert sorted(path.name for path in copy.iterdir()) == ["w.pth"]


def test_a_dataset_folder_is_new_empty_or_the_tools_own(tmp_path):
    """The one rule the dataset writers (synthetic generator, video importer, held-out splitter) share."""
    from utils.errors import SSTNetError
    from utils.runtime.fileio import check_dataset_folder

    def own(folder):
        return (folder / "mine.json").is_file()

    assert check_dataset_folder(tmp_path / "new", "--out", "not mine", own) is False
    (tmp_path / "empty").mkdir()
    assert check_dataset_folder(tmp_path / "empty", "--out", "not mine", own) is False
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "mine.json").write_text("{}")
    assert check_dataset_folder(tmp_path / "earlier", "--out", "not mine", own) is True
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "data.bmp").write_bytes(b"x")
    with pytest.raises(SSTNetError, match="--out .*foreign: not mine"):
        check_dataset_folder(tmp_path / "foreign", "--out", "not mine", own)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SSTNetError, match="a_file: is a file, expected a folder"):
        check_dataset_folder(tmp_path / "a_file", "--out", "not mine", own)
    # Without a notion of its own output, only a new or empty folder will do.
    with pytest.raises(SSTNetError, match="not mine"):
        check_dataset_folder(tmp_path / "earlier", "--out", "not mine")
    assert (tmp_path / "foreign" / "data.bmp").read_bytes() == b"x"
