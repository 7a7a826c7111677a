"""--no-letterbox in vid_map_coco.py and vid_predict.py: frames stretched to the input, boxes mapped back exactly.

The model's head is made to ignore its input: every cell of the 8×8 output map predicts a 4×4-pixel box centred on
itself with score σ(3)², so the detections are a known grid in input pixels and the boxes reported on an 80×120
frame show exactly how the input was mapped back onto it.
"""
import json
import math

import cv2
import numpy as np
import pytest
import torch
from conftest import run_script, write_coco

from nets import Network

HEIGHT, WIDTH, SIDE = 80, 120, 64
MODEL = ["--input-size", str(SIDE), "--workers", "0", "--quiet"]


@pytest.fixture(scope="module")
def grid_weights(tmp_path_factory):
    model = Network(1, 5, "nano", lstm_hidden=8)
    head = model.head
    with torch.no_grad():
        for conv in (head.reg_preds[0], head.obj_preds[0], head.cls_preds[0]):
            conv.weight.zero_()
        head.reg_preds[0].bias.copy_(torch.tensor([0.5, 0.5, math.log(0.5), math.log(0.5)]))
        head.obj_preds[0].bias.fill_(3.0)
        head.cls_preds[0].bias.fill_(3.0)
    path = tmp_path_factory.mktemp("weights") / "grid.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Six 80×120 frames whose pixels say where they are (red = 2·column, green = 3·row), one box each."""
    root = tmp_path_factory.mktemp("plain")
    folder = root / "images" / "test" / "seq"
    folder.mkdir(parents=True)
    rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
    bgr = np.stack([np.zeros_like(rows), 3 * rows, 2 * columns], axis=2).astype(np.uint8)
    for number in range(6):
        cv2.imwrite(str(folder / f"{number}.bmp"), bgr)
    images = [{"id": n + 1, "file_name": f"images/test/seq/{n}.bmp", "width": WIDTH, "height": HEIGHT}
              for n in range(6)]
    annotations = [{"id": n + 1, "image_id": n + 1, "category_id": 1, "bbox": [50, 30, 8, 8]} for n in range(6)]
    write_coco(root / "annotations" / "instances_test2017.json", images, annotations)
    return root


def stretched_grid() -> list[tuple[float, float, float, float]]:
    """The grid's COCO boxes on the frame when it was stretched: x scaled by 120/64, y by 80/64."""
    sx, sy = WIDTH / SIDE, HEIGHT / SIDE
    return sorted(((8 * x + 2) * sx, (8 * y + 2) * sy, 4 * sx, 4 * sy) for x in range(8) for y in range(8))


def test_vid_map_coco_maps_stretched_detections_back_exactly(dataset, grid_weights, tmp_path):
    boxes = {}
    for name, extra in (("plain", ["--no-letterbox"]), ("letterbox", [])):
        result = run_script("vid_map_coco.py", "--weights", grid_weights, "--data-root", dataset, "--out-dir",
                            tmp_path / name, *MODEL, *extra)
        assert result.returncode == 0, result.stderr
        detections = json.loads((tmp_path / name / "detections.json").read_text())
        assert {d["image_id"] for d in detections} == set(range(1, 7))
        boxes[name] = sorted(tuple(d["bbox"]) for d in detections if d["image_id"] == 6)
        assert all(d["score"] == pytest.approx(1 / (1 + math.exp(-3)) ** 2, rel=1e-5) for d in detections)
    np.testing.assert_allclose(boxes["plain"], stretched_grid(), atol=1e-3)
    # Letterboxed, the 80×120 frame fills only 43 of the 64 input rows: the same grid lands elsewhere.
    assert not np.allclose(boxes["letterbox"], stretched_grid(), atol=1)


def test_vid_predict_crops_come_from_where_the_stretched_boxes_say(dataset, grid_weights, tmp_path):
    out = tmp_path / "frame.png"
    result = run_script("vid_predict.py", "--weights", grid_weights, "--source", dataset / "images/test/seq/5.bmp",
                        "--out", out, "--crop", "--no-letterbox", *MODEL)
    assert result.returncode == 0, result.stderr
    assert cv2.imread(str(out)).shape == (HEIGHT, WIDTH, 3)
    found = []
    for path in (tmp_path / "crops").glob("seq_5_*.png"):
        crop = cv2.imread(str(path))  # BGR: green = 3·row, red = 2·column of the crop's top-left pixel
        found.append((int(crop[0, 0, 2]) // 2, int(crop[0, 0, 1]) // 3, crop.shape[1], crop.shape[0]))
    # Box (left, top, width, height) = (15x + 3.75, 10y + 2.5, 7.5, 5): crops run from floor(left) to ceil(right).
    assert sorted(found) == sorted((15 * x + 3, 10 * y + 2, 9, 6) for x in range(8) for y in range(8))
