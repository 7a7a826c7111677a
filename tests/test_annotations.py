"""COCO json and index txt readers: valid files, the authors' integer conversion, and every rejected case."""
import json

import numpy as np
import pytest
from conftest import write_coco

from utils.data.annotations import FrameRecord, format_index_line, read_coco, read_index
from utils.errors import SSTNetError


def image(image_id, name, width=64, height=48):
    return {"id": image_id, "file_name": name, "width": width, "height": height}


def box(ann_id, image_id, bbox, category_id=1):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": 0,
            "area": bbox[2] * bbox[3]}


def test_read_coco_records_and_integer_boxes(tmp_path):
    path = write_coco(tmp_path / "a.json", [image(1, "s/0.bmp"), image(2, "s/1.bmp"), image(3, "s/2.bmp")],
                      [box(1, 1, [10.7, 5.2, 8.6, 8.0]), box(2, 3, [0, 0, 4, 4]), box(3, 3, [20, 20, 5, 6])])
    gt = read_coco(path, tmp_path)
    assert [r.image_id for r in gt.records] == [1, 3]
    assert [r.image_id for r in gt.unannotated] == [2]
    assert gt.records[0].path == tmp_path / "s/0.bmp"
    # x1 = int(x), x2 = x1 + int(w): the release's conversion
    np.testing.assert_array_equal(gt.records[0].boxes, [[10, 5, 18, 13, 0]])
    np.testing.assert_array_equal(gt.records[1].boxes, [[0, 0, 4, 4, 0], [20, 20, 25, 26, 0]])


def test_class_index_follows_sorted_category_ids(tmp_path):
    path = write_coco(tmp_path / "a.json", [image(1, "0.bmp")],
                      [box(1, 1, [1, 1, 4, 4], 7), box(2, 1, [5, 5, 4, 4], 3)],
                      categories=[{"id": 7, "name": "b"}, {"id": 3, "name": "a"}])
    gt = read_coco(path, tmp_path)
    assert gt.category_ids == [3, 7]
    np.testing.assert_array_equal(gt.records[0].boxes[:, 4], [1, 0])


def good():
    return {"images": [image(1, "0.bmp")], "annotations": [box(1, 1, [1, 1, 4, 4])],
            "categories": [{"id": 1, "name": "target"}]}


def broken(mutate):
    data = good()
    mutate(data)
    return data


@pytest.mark.parametrize("data,message", [
    ([1, 2], "expected a COCO object"),
    (broken(lambda d: d.pop("images")), "missing 'images'"),
    (broken(lambda d: d.pop("categories")), "missing 'categories'"),
    (broken(lambda d: d.__setitem__("categories", [])), "'categories' is empty"),
    (broken(lambda d: d["images"][0].pop("file_name")), r"images\[0\]: missing 'file_name'"),
    (broken(lambda d: d["images"][0].__setitem__("width", 0)), r"images\[0\].width: must be positive"),
    (broken(lambda d: d["images"].append(image(1, "1.bmp"))), "duplicate image id 1"),
    (broken(lambda d: d["annotations"][0].__setitem__("image_id", 9)), r"annotations\[0\]: image_id 9 is not in"),
    (broken(lambda d: d["annotations"][0].__setitem__("category_id", 2)), "category_id 2 is not in 'categories'"),
    (broken(lambda d: d["annotations"][0].__setitem__("bbox", [1, 1, -4, 4])), "width and height must be positive"),
    (broken(lambda d: d["annotations"][0].__setitem__("bbox", [1, 1, 0, 4])), "width and height must be positive"),
    (broken(lambda d: d["annotations"][0].__setitem__("bbox", [1, 1, 4])), r"expected \[x, y, w, h\]"),
    (broken(lambda d: d["annotations"][0].__setitem__("bbox", [1, "a", 4, 4])), "expected a finite number"),
    (broken(lambda d: d["annotations"][0].__setitem__("bbox", [62, 1, 4, 4])), "leaves the 64x48 image"),
    (broken(lambda d: d["annotations"][0].__setitem__("bbox", [-1, 1, 4, 4])), "leaves the 64x48 image"),
    (broken(lambda d: d["annotations"][0].pop("bbox")), "missing 'bbox'"),
])
def test_read_coco_rejects(tmp_path, data, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SSTNetError, match=message) as info:
        read_coco(path, tmp_path)
    assert "\n" not in str(info.value)


def test_read_coco_rejects_files(tmp_path):
    with pytest.raises(SSTNetError, match="annotation file not found"):
        read_coco(tmp_path / "missing.json")
    (tmp_path / "text.json").write_text("images: []")
    with pytest.raises(SSTNetError, match=r"not valid JSON \(line 1"):
        read_coco(tmp_path / "text.json")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(SSTNetError, match="text.json|binary.json"):
        read_coco(tmp_path / "binary.json")


def test_read_index_paths_and_boxes(tmp_path):
    txt = tmp_path / "index.txt"
    absolute = tmp_path / "abs" / "3.bmp"
    txt.write_text(f"images/train/data1/0.bmp 1,2,9,10,0 20,20,28,28,0\n\nmy clips/seq 1/4.bmp 3,3,11,11,0\n"
                   f"{absolute} 5,5,13,13,0\nno_boxes/7.bmp\n")
    records = read_index(txt, tmp_path / "root")
    assert [r.path for r in records] == [tmp_path / "root/images/train/data1/0.bmp",
                                        tmp_path / "root/my clips/seq 1/4.bmp", absolute,
                                        tmp_path / "root/no_boxes/7.bmp"]
    np.testing.assert_array_equal(records[0].boxes, [[1, 2, 9, 10, 0], [20, 20, 28, 28, 0]])
    assert records[3].boxes.shape == (0, 5)


@pytest.mark.parametrize("line,message", [
    ("a.bmp 1,2,3,4", "needs 5 comma-separated integers"),
    ("a.bmp 1,2,3,4,0,9", "needs 5 comma-separated integers"),
    ("a.bmp 1,2,x,4,0", "not an integer"),
    ("a.bmp 1.5,2,3,4,0", "not an integer"),
    ("a.bmp 5,2,3,4,0", "non-positive size"),
    ("a.bmp 1,2,3,4,-1", "negative class"),
    ("1,2,3,4,0", "line starts with a box"),
])
def test_read_index_rejects_with_file_and_line(tmp_path, line, message):
    txt = tmp_path / "index.txt"
    txt.write_text(f"ok.bmp 1,1,5,5,0\n{line}\n")
    with pytest.raises(SSTNetError, match=message) as info:
        read_index(txt, tmp_path)
    assert str(info.value).startswith(f"{txt}:2:")


def test_index_line_round_trip(tmp_path):
    record = FrameRecord(tmp_path / "images/test/data9/12.bmp", np.array([[4, 5, 12, 13, 0]], np.float32))
    line = format_index_line(record, tmp_path)
    assert line == "images/test/data9/12.bmp 4,5,12,13,0"
    (tmp_path / "i.txt").write_text(line + "\n")
    back, = read_index(tmp_path / "i.txt", tmp_path)
    assert back.path == record.path
    np.testing.assert_array_equal(back.boxes, record.boxes)
    assert format_index_line(record, None).startswith(str(record.path.resolve()))
