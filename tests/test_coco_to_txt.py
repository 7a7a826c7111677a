"""utils_coco/coco_to_txt.py through its command line: output format, options and error exits."""
import subprocess
import sys

import pytest
from conftest import REPO, write_coco, write_frames

from utils.data.annotations import read_coco, read_index

SCRIPT = REPO / "utils_coco" / "coco_to_txt.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "data"
    write_frames(root / "images/test/data1", range(3), size=(20, 30))
    images = [{"id": k + 1, "file_name": f"images/test/data1/{k}.bmp", "width": 30, "height": 20} for k in range(3)]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2.5, 3, 8, 8]},
                   {"id": 2, "image_id": 3, "category_id": 1, "bbox": [10, 4, 8.9, 8]},
                   {"id": 3, "image_id": 3, "category_id": 1, "bbox": [0, 0, 5, 5]}]
    return root, write_coco(root / "annotations/instances_test2017.json", images, annotations)


def test_relative_index_round_trips(dataset, tmp_path):
    root, json_path = dataset
    out = tmp_path / "out/coco_val.txt"
    result = run("--json", json_path, "--out", out)
    assert result.returncode == 0, result.stderr
    assert out.read_text() == ("images/test/data1/0.bmp 2,3,10,11,0\n"
                               "images/test/data1/2.bmp 10,4,18,12,0 0,0,5,5,0\n")
    from_txt = read_index(out, root)
    from_json = read_coco(json_path, root).records
    assert [r.path for r in from_txt] == [r.path for r in from_json]
    assert all((a.boxes == b.boxes).all() for a, b in zip(from_txt, from_json))


def test_absolute_paths_and_all_frames(dataset, tmp_path):
    root, json_path = dataset
    out = tmp_path / "all.txt"
    assert run("--json", json_path, "--root", root, "--out", out, "--absolute", "--all-frames").returncode == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 3
    assert lines[1] == str((root / "images/test/data1/1.bmp").resolve())
    assert lines[0].startswith(str(root.resolve()))


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    ('{"annotations": [], "categories": [{"id": 1}]}', "missing 'images'"),
    ('{"images": [{"id": 1, "file_name": "images/test/data1/0.bmp", "width": 30, "height": 20}], '
     '"annotations": [{"image_id": 2, "category_id": 1, "bbox": [1, 1, 4, 4]}], "categories": [{"id": 1}]}',
     "image_id 2 is not in 'images'"),
    ('{"images": [{"id": 1, "file_name": "images/test/data1/0.bmp", "width": 30, "height": 20}], '
     '"annotations": [{"image_id": 1, "category_id": 1, "bbox": [28, 1, 4, 4]}], "categories": [{"id": 1}]}',
     "leaves the 30x20 image"),
    ('{"images": [{"id": 1, "file_name": "images/test/data1/0.bmp", "width": 30, "height": 20}], '
     '"annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 4]}], "categories": [{"id": 1}]}',
     "width and height must be positive"),
    ('{"images": [{"id": 1, "file_name": "images/test/data1/7.bmp", "width": 30, "height": 20}], '
     '"annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4]}], "categories": [{"id": 1}]}',
     "7.bmp not found"),
])
def test_bad_json_gives_one_line_error(dataset, tmp_path, content, message):
    root, json_path = dataset
    json_path.write_text(content)
    out = tmp_path / "x.txt"
    result = run("--json", json_path, "--out", out)
    assert result.returncode != 0
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not out.exists()


def test_missing_json_and_root(tmp_path):
    result = run("--json", tmp_path / "annotations/none.json", "--out", tmp_path / "x.txt")
    assert result.returncode != 0 and "annotation file not found" in result.stderr
    result = run("--json", tmp_path / "none.json", "--out", tmp_path / "x.txt")
    assert result.returncode != 0 and "give the dataset root with --root" in result.stderr


def test_help():
    result = run("--help")
    assert result.returncode == 0 and "--absolute" in result.stdout
