"""Exported graphs never run as something they are not: an opset the exporter cannot write is refused (not silently
replaced), a folder mixing two exports is refused whichever graphs are opened, and metadata that contradicts its
graph is named."""
import shutil

import pytest

from conftest import assert_clean_error, prior_weights, run_script, write_coco, write_frames

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    base = tmp_path_factory.mktemp("exports")
    weights = prior_weights(base)
    folders = {}
    for size in ("64", "96"):
        folder = base / f"onnx{size}"
        result = run_script("export_onnx.py", "--weights", weights, "--out", folder, "--input-size", size,
                            "--device", "cpu")
        assert result.returncode == 0, result.stderr
        folders[size] = folder
    data = base / "data"
    write_frames(data / "images/test/data1", range(3), size=(64, 64))
    write_coco(data / "annotations/instances_test2017.json",
               [{"id": k + 1, "file_name": f"images/test/data1/{k}.bmp", "width": 64, "height": 64} for k in range(3)],
               [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 8, 8]}])
    return weights, folders, data


def score(folder, data, out, *flags):
    return run_script("vid_map_coco.py", "--onnx", folder, "--data-root", data, "--out-dir", out, "--workers", "0",
                      "--quiet", *flags)


def test_an_opset_the_exporter_cannot_write_is_refused_and_nothing_written(exports, tmp_path):
    weights, _, _ = exports
    result = run_script("export_onnx.py", "--weights", weights, "--out", tmp_path / "o", "--opset", "99",
                        "--input-size", "64")
    assert_clean_error(result, "--opset 99: must lie in [17, ")
    assert "Traceback" not in result.stderr and not any((tmp_path / "o").glob("*.onnx"))


def test_a_folder_mixing_two_exports_is_refused_whichever_engine_runs(exports, tmp_path):
    _, folders, data = exports
    mixed = tmp_path / "mixed"
    shutil.copytree(folders["64"], mixed)
    shutil.copy(folders["96"] / "window.onnx", mixed / "window.onnx")  # what an interrupted re-export leaves
    for engine in ("stream", "window"):
        result = score(mixed, data, tmp_path / engine, "--engine", engine)
        assert_clean_error(result, f"--onnx {mixed}", "another export")
    assert score(folders["64"], data, tmp_path / "whole").returncode == 0


def test_metadata_that_contradicts_its_graph_is_named(exports, tmp_path):
    import onnx
    _, folders, data = exports
    lying = tmp_path / "lying"
    shutil.copytree(folders["64"], lying)
    for name in ("frame.onnx", "detect.onnx", "window.onnx"):
        model = onnx.load(str(lying / name))
        for entry in model.metadata_props:
            if entry.key == "input_size":
                entry.value = "[96, 96]"
        onnx.save(model, str(lying / name))
    result = score(lying, data, tmp_path / "out")
    assert_clean_error(result, "frame.onnx: input images has shape", "export it again")
