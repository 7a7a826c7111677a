"""The committed json/ files and index txts are exactly what `make data` regenerates from the default seed."""
import subprocess
import sys

from conftest import REPO


def test_default_synthetic_dataset_regenerates_the_committed_files(tmp_path):
    root = tmp_path / "synthetic_daub"
    result = subprocess.run([sys.executable, "utils_coco/make_synthetic.py", "--out", str(root), "--quiet"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for split, index in (("train", "coco_train.txt"), ("test", "coco_val.txt")):
        json_path = root / "annotations" / f"instances_{split}2017.json"
        assert json_path.read_bytes() == (REPO / "json" / json_path.name).read_bytes()
        out = tmp_path / index
        result = subprocess.run([sys.executable, "utils_coco/coco_to_txt.py", "--json", str(json_path), "--out",
                                 str(out)], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == (REPO / index).read_bytes()
