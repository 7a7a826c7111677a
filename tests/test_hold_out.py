"""hold_out_clips.py: a training split cut into training and held-out clips — whole clips only, every frame and box
in exactly one part, strata held out in proportion, the images linked not copied, bad requests refused in one line."""
import json
from collections import Counter

from conftest import assert_clean_error, run_script

from utils.data.hold_out import draw_clips


def video_dataset(root, kinds):
    """A DAUB-layout folder listing videos with attributes: for each (class, bin, count) that many clips of 3 frames,
    the middle one without a box."""
    images, annotations, videos = [], [], []
    for cls, distance, count in kinds:
        for _ in range(count):
            vid = len(videos) + 1
            name = f"IR_{cls.upper()}_{vid:03d}"
            videos.append({"id": vid, "name": name, "attributes": {"class": cls, "distance_bin": distance}})
            for frame in range(3):
                image_id = len(images) + 1
                images.append({"id": image_id, "file_name": f"images/train/{name}/{frame}.png", "width": 32,
                               "height": 32, "video_id": vid, "frame_id": frame})
                if frame != 1:
                    annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                        "bbox": [4.0, 4.0, 3.0, 3.0], "area": 9.0, "iscrowd": 0})
    (root / "annotations").mkdir(parents=True)
    (root / "images" / "train").mkdir(parents=True)
    coco = {"images": images, "annotations": annotations, "videos": videos,
            "categories": [{"id": 1, "name": "target"}]}
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(coco))
    return coco


def test_stratified_draw_holds_out_whole_clips_in_proportion(tmp_path):
    source = video_dataset(tmp_path / "data", [("drone", "CLOSE", 10), ("drone", "DISTANT", 6), ("bird", "CLOSE", 4)])
    result = run_script("utils_coco/hold_out_clips.py", "--data-root", tmp_path / "data", "--out", tmp_path / "out",
                        "--count", "5", "--stratify", "class", "distance_bin", "--seed", "3")
    assert result.returncode == 0, result.stderr
    train = json.loads((tmp_path / "out/annotations/instances_train2017.json").read_text())
    test = json.loads((tmp_path / "out/annotations/instances_test2017.json").read_text())
    held = {video["name"] for video in test["videos"]}
    assert len(held) == 5 and held.isdisjoint(video["name"] for video in train["videos"])
    # Shares 2.5 / 1.5 / 1.0 of 5: each stratum its rounded-down share, the remainder to the largest fractions.
    kinds = Counter((v["attributes"]["class"], v["attributes"]["distance_bin"]) for v in test["videos"])
    assert kinds[("bird", "CLOSE")] == 1 and kinds[("drone", "CLOSE")] + kinds[("drone", "DISTANT")] == 4
    assert 2 <= kinds[("drone", "CLOSE")] <= 3
    # Every frame and box lands in exactly one part, with the clip it belongs to.
    assert len(train["images"]) + len(test["images"]) == len(source["images"])
    assert len(train["annotations"]) + len(test["annotations"]) == len(source["annotations"])
    names = {video["id"]: video["name"] for video in source["videos"]}
    assert all(names[image["video_id"]] in held for image in test["images"])
    test_ids = {image["id"] for image in test["images"]}
    assert all(annotation["image_id"] in test_ids for annotation in test["annotations"])
    assert (tmp_path / "out/images").is_symlink()
    assert (tmp_path / "out/images").resolve() == (tmp_path / "data/images").resolve()
    assert test["info"]["held_out"] == sorted(held)
    # The same seed draws the same clips; another seed may not.
    clips = {v["name"]: v["attributes"] for v in source["videos"]}
    assert draw_clips(clips, 5, ["class", "distance_bin"], 3) == sorted(held)


def test_named_clips_of_real_daub(daub_real, tmp_path):
    result = run_script("utils_coco/hold_out_clips.py", "--data-root", daub_real, "--out", tmp_path / "out",
                        "--clips", "data4")
    assert result.returncode == 0, result.stderr
    test = json.loads((tmp_path / "out/annotations/instances_test2017.json").read_text())
    train = json.loads((tmp_path / "out/annotations/instances_train2017.json").read_text())
    assert {image["file_name"].split("/")[2] for image in test["images"]} == {"data4"}
    assert {image["file_name"].split("/")[2] for image in train["images"]} == {"data1", "data2", "data3"}
    assert len(test["images"]) == len(test["annotations"]) == 100
    # The held-out folder is a dataset the scripts read: its file names resolve through the linked images.
    assert (tmp_path / "out" / test["images"][0]["file_name"]).is_file()


def test_refusals(daub_real, tmp_path):
    def refuse(fragment, *argv, out=None):
        result = run_script("utils_coco/hold_out_clips.py", "--data-root", daub_real, "--out",
                            out or tmp_path / "out", *argv)
        assert_clean_error(result, fragment)

    refuse("no clip 'data9'", "--clips", "data9")
    refuse("some must stay for training", "--clips", "data1", "data2", "data3", "data4")
    refuse("--count 4: must lie between 1 and 3", "--count", "4")
    refuse("has no attribute 'class'", "--count", "1", "--stratify", "class")
    refuse("--stratify is only for --count", "--clips", "data1", "--stratify", "class")
    refuse("lies inside the input --data-root", "--clips", "data1", out=daub_real / "held")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    refuse("exists and is not an empty folder", "--clips", "data1", out=tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "x"
    assert not (tmp_path / "out").exists()
