"""Ground truth in and out: COCO json and the authors' index txt, validated, as one list of frame records.

Both readers produce the same records, so training from ``--train-ann`` or from ``--train-txt`` sees the same
boxes: the release converts COCO boxes to integers (``x1 = int(x)``, ``x2 = x1 + int(w)``) when it writes its
index files, and we apply that conversion on both paths.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SSTNetError, one_line


@dataclass
class FrameRecord:
    """One key frame: its path and its boxes as an n×5 float32 array (x1, y1, x2, y2, cls) in pixels."""

    path: Path
    boxes: np.ndarray
    image_id: int | None = None
    # (height, width) the annotation file declares for the frame, checked when the frame is first read.
    size: tuple[int, int] | None = None
    source: str | None = None


@dataclass
class CocoGroundTruth:
    """A validated COCO file: annotated and unannotated frame records, category ids by class index, the raw json."""

    records: list[FrameRecord]
    category_ids: list[int]
    unannotated: list[FrameRecord] = field(default_factory=list)
    data: dict = field(default_factory=dict)


def category_names(ground_truth: CocoGroundTruth) -> list[str]:
    """Class names by class index."""
    names = {category["id"]: category.get("name", str(category["id"])) for category in ground_truth.data["categories"]}
    return [names.get(category_id, f"class{index}") for index, category_id in enumerate(ground_truth.category_ids)]


def empty_boxes() -> np.ndarray:
    return np.zeros((0, 5), dtype=np.float32)


def _resolve(path_text: str, root: Path | None) -> Path:
    path = Path(path_text)
    return path if path.is_absolute() or root is None else root / path


def load_json(path: Path, where: str | None = None, what: str = "COCO json") -> Any:
    """Parse a JSON file; a missing, unreadable or malformed one is a one-line error naming ``where`` (default: the
    path) and saying what was expected (``what``)."""
    where = where or str(path)
    path = Path(path)
    # A FIFO or a device would block or never end: only a regular file is read.
    if path.exists() and not path.is_dir() and not path.is_file():
        raise SSTNetError(f"{where}: not a regular file (a pipe or a device?), expected a {what} file")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise SSTNetError(f"{where}: file not found") from None
    except IsADirectoryError:
        raise SSTNetError(f"{where}: is a folder, expected a {what} file") from None
    except UnicodeDecodeError:
        raise SSTNetError(f"{where}: not a text file, expected {what}") from None
    except json.JSONDecodeError as exc:
        raise SSTNetError(f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise SSTNetError(f"{where}: nested too deeply to be {what}") from None
    except ValueError as exc:  # e.g. an integer of thousands of digits
        raise SSTNetError(f"{where}: not valid {what} ({one_line(str(exc))})") from None
    except OSError as exc:
        raise SSTNetError(f"{where}: cannot read ({exc.strerror or exc})") from None


def _require(entry: Any, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(entry, dict):
        raise SSTNetError(f"{where}: expected an object, got {type(entry).__name__}")
    for key in keys:
        if key not in entry:
            raise SSTNetError(f"{where}: missing '{key}'")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SSTNetError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _integer_id(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SSTNetError(f"{where}: expected an integer id, got {value!r}")
    return value


def read_coco(json_path: str | os.PathLike, root: str | os.PathLike | None = None) -> CocoGroundTruth:
    """Read and validate a COCO detection file; ``file_name`` entries are resolved against ``root``.

    Rejected with a one-line error naming the entry: not JSON, missing ``images``/``annotations``/``categories``
    or fields inside them, duplicate ids, annotations of unknown images or categories, boxes that are not four
    numbers, have a non-positive size or leave the image.
    """
    json_path = Path(json_path)
    root = Path(root) if root is not None else None
    if not json_path.exists():
        raise SSTNetError(f"{json_path}: annotation file not found")
    data = load_json(json_path)
    name = json_path.name
    if not isinstance(data, dict):
        raise SSTNetError(f"{json_path}: expected a COCO object with 'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise SSTNetError(f"{json_path}: missing '{key}'")
        if not isinstance(data[key], list):
            raise SSTNetError(f"{json_path}: '{key}' must be a list")

    category_ids: list[int] = []
    for index, category in enumerate(data["categories"]):
        where = f"{name}: categories[{index}]"
        _require(category, ("id",), where)
        category_ids.append(_integer_id(category["id"], f"{where}.id"))
    if len(set(category_ids)) != len(category_ids):
        raise SSTNetError(f"{json_path}: duplicate category ids")
    if not category_ids:
        raise SSTNetError(f"{json_path}: 'categories' is empty")
    # Class indices follow sorted category ids: cls = category_id - 1 for the usual ids 1..C, as the release.
    category_ids.sort()
    class_of = {category_id: index for index, category_id in enumerate(category_ids)}

    images: dict[int, dict] = {}
    for index, image in enumerate(data["images"]):
        where = f"{name}: images[{index}]"
        _require(image, ("id", "file_name", "width", "height"), where)
        image_id = _integer_id(image["id"], f"{where}.id")
        if image_id in images:
            raise SSTNetError(f"{where}: duplicate image id {image_id}")
        if not isinstance(image["file_name"], str) or not image["file_name"]:
            raise SSTNetError(f"{where}.file_name: expected a non-empty path")
        for side in ("width", "height"):
            if _number(image[side], f"{where}.{side}") <= 0:
                raise SSTNetError(f"{where}.{side}: must be positive, got {image[side]!r}")
        images[image_id] = image

    boxes_of: dict[int, list[list[float]]] = {}
    for index, annotation in enumerate(data["annotations"]):
        where = f"{name}: annotations[{index}]"
        _require(annotation, ("image_id", "category_id", "bbox"), where)
        image_id = _integer_id(annotation["image_id"], f"{where}.image_id")
        if image_id not in images:
            raise SSTNetError(f"{where}: image_id {image_id!r} is not in 'images'")
        category_id = _integer_id(annotation["category_id"], f"{where}.category_id")
        if category_id not in class_of:
            raise SSTNetError(f"{where}: category_id {category_id!r} is not in 'categories'")
        bbox = annotation["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise SSTNetError(f"{where}.bbox: expected [x, y, w, h], got {bbox!r}")
        x, y, w, h = (_number(v, f"{where}.bbox") for v in bbox)
        if w <= 0 or h <= 0:
            raise SSTNetError(f"{where}.bbox: width and height must be positive, got {bbox!r}")
        image = images[image_id]
        if x < 0 or y < 0 or x + w > image["width"] or y + h > image["height"]:
            raise SSTNetError(f"{where}.bbox: {bbox!r} leaves the {image['width']}x{image['height']} image "
                              f"{image['file_name']}")
        x1, y1 = int(x), int(y)
        boxes_of.setdefault(image_id, []).append([x1, y1, x1 + int(w), y1 + int(h), class_of[category_id]])

    records, unannotated = [], []
    first_id: dict[str, int] = {}
    for image_id, image in images.items():
        key = os.path.normpath(image["file_name"])
        if key in first_id:
            raise SSTNetError(f"{json_path}: images {first_id[key]} and {image_id} have the same file_name "
                              f"{image['file_name']!r}; each frame must be listed once")
        first_id[key] = image_id
        boxes = np.array(boxes_of[image_id], dtype=np.float32) if image_id in boxes_of else empty_boxes()
        size = (int(image["height"]), int(image["width"]))
        record = FrameRecord(_resolve(image["file_name"], root), boxes, image_id, size, f"{name}: image {image_id}")
        (records if len(boxes) else unannotated).append(record)
    return CocoGroundTruth(records, category_ids, unannotated, data)


_BOX_TOKEN = re.compile(r"^[^,\s]+(,[^,\s]+)+$")


def _parse_box(token: str, where: str) -> list[float]:
    parts = token.split(",")
    if len(parts) != 5:
        raise SSTNetError(f"{where}: box '{token}' needs 5 comma-separated integers x1,y1,x2,y2,cls")
    try:
        x1, y1, x2, y2, cls = (int(part) for part in parts)
    except ValueError:
        raise SSTNetError(f"{where}: box '{token}' has a value that is not an integer") from None
    if x2 <= x1 or y2 <= y1:
        raise SSTNetError(f"{where}: box '{token}' has a non-positive size")
    if cls < 0:
        raise SSTNetError(f"{where}: box '{token}' has a negative class")
    return [x1, y1, x2, y2, cls]


def read_text_lines(path: Path, kind: str, expected: str) -> list[str]:
    """The lines of a text file; missing, binary or unreadable is a one-line error naming the file, its ``kind``
    and what was ``expected``."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SSTNetError(f"{path}: {kind} not found") from None
    except UnicodeDecodeError:
        raise SSTNetError(f"{path}: not a text file, expected {expected}") from None
    except OSError as exc:
        raise SSTNetError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_index(txt_path: str | os.PathLike, root: str | os.PathLike | None = None) -> list[FrameRecord]:
    """Read an index file ``PATH x1,y1,x2,y2,cls [...]`` (one key frame per line; relative paths under ``root``).

    Paths may contain spaces: the trailing comma-separated tokens are the boxes, the rest is the path.
    Blank lines are skipped; a malformed line is reported as ``file:line: why``.
    """
    txt_path = Path(txt_path)
    root = Path(root) if root is not None else None
    lines = read_text_lines(txt_path, "index file", "an index txt")
    records = []
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{txt_path}:{number}"
        first_box = len(tokens)
        while first_box > 1 and _BOX_TOKEN.match(tokens[first_box - 1]):
            first_box -= 1
        if _BOX_TOKEN.match(tokens[0]):
            raise SSTNetError(f"{where}: line starts with a box, expected 'PATH x1,y1,x2,y2,cls ...'")
        path_text = " ".join(tokens[:first_box])
        boxes = [_parse_box(token, where) for token in tokens[first_box:]]
        records.append(FrameRecord(_resolve(path_text, root),
                                   np.array(boxes, dtype=np.float32) if boxes else empty_boxes()))
    return records


def format_index_line(record: FrameRecord, root: Path | None) -> str:
    """One index line for ``record``; the path relative to ``root`` when given, else absolute."""
    path = record.path.resolve() if root is None else Path(os.path.relpath(record.path, root))
    boxes = " ".join(",".join(str(int(v)) for v in box) for box in record.boxes)
    return f"{path.as_posix()} {boxes}".rstrip()


def dataset_root_of(json_path: str | os.PathLike, flag: str = "--data-root") -> Path:
    """The dataset root of a json kept, as in DAUB and IRDST, in ROOT/annotations/ (else ask for ``flag``)."""
    json_path = Path(json_path).resolve()
    if json_path.parent.name != "annotations":
        raise SSTNetError(f"{json_path}: not inside an 'annotations' folder; give the dataset root with {flag}")
    return json_path.parent.parent


def records_to_coco(records: list[FrameRecord], num_classes: int | None = None) -> CocoGroundTruth:
    """Ground truth for index-txt records, in the form :func:`read_coco` returns (category id = class + 1).

    Frames get ids 1..N in file order; ``num_classes`` defaults to the largest class index + 1.
    """
    largest = max((int(record.boxes[:, 4].max()) for record in records if len(record.boxes)), default=0)
    num_classes = num_classes or largest + 1
    if largest >= num_classes:
        raise SSTNetError(f"--num-classes {num_classes}: the index file has class index {largest}")
    images, annotations, numbered = [], [], []
    for image_id, record in enumerate(records, start=1):
        numbered.append(FrameRecord(record.path, record.boxes, image_id))
        images.append({"id": image_id, "file_name": str(record.path)})
        for x1, y1, x2, y2, cls in record.boxes.tolist():
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls) + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    category_ids = list(range(1, num_classes + 1))
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": category_id, "name": str(category_id)} for category_id in category_ids]}
    annotated = [record for record in numbered if len(record.boxes)]
    unannotated = [record for record in numbered if not len(record.boxes)]
    return CocoGroundTruth(annotated, category_ids, unannotated, data)
