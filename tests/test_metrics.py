"""Evaluation figures on cases whose answers are known by hand."""
import numpy as np
import pytest

from utils.infer.metrics import coco_api, coco_scores, f1_confidence_curve, pd_fa


def ground_truth(boxes_per_image):
    images = [{"id": i + 1, "file_name": f"{i}.bmp", "width": 100, "height": 100} for i in range(len(boxes_per_image))]
    annotations = [{"id": 10 * i + j + 1, "image_id": i + 1, "category_id": 1, "bbox": box, "area": box[2] * box[3],
                    "iscrowd": 0}
                   for i, boxes in enumerate(boxes_per_image) for j, box in enumerate(boxes)]
    return coco_api({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "target"}]})


def detection(image_id, box, score):
    return {"image_id": image_id, "category_id": 1, "bbox": box, "score": score}


BOXES = [[[10, 10, 10, 10]], [[40, 40, 10, 10]], [[70, 20, 10, 10]]]


def test_perfect_detections_score_100():
    gt = ground_truth(BOXES)
    result = coco_scores(gt, [detection(i + 1, b[0], 1.0) for i, b in enumerate(BOXES)], [1, 2, 3])
    assert result.map50 == pytest.approx(1) and result.map50_95 == pytest.approx(1)
    assert result.precision == pytest.approx(1) and result.recall == pytest.approx(1) and result.f1 == pytest.approx(1)
    np.testing.assert_allclose(result.pr_curve, 1)
    assert "Average Precision" in result.summary


def test_ap_at_other_ious_separates_a_loose_box_from_a_miss():
    """Image 1 boxed exactly (IoU 1), image 2 two pixels off (IoU 64/136 = 0.47), image 3 five off (25/175 = 0.14)."""
    detections = [detection(1, [10, 10, 10, 10], 0.9), detection(2, [42, 42, 10, 10], 0.8),
                  detection(3, [75, 25, 10, 10], 0.7)]
    result = coco_scores(ground_truth(BOXES), detections, [1, 2, 3], extra_ious=(0.5, 0.3, 0.1))
    # One target found at 0.5 (precision 1 up to recall 1/3: 34 of 101 points), two at 0.3, three at 0.1.
    assert result.map50 == pytest.approx(34 / 101)
    assert result.ap_at_iou == pytest.approx({0.5: 34 / 101, 0.3: 67 / 101, 0.1: 1.0})
    assert result.line().endswith("AP@0.5 33.66  AP@0.3 66.34  AP@0.1 100.00")
    assert result.as_dict()["AP_at_IoU"] == pytest.approx({"0.5": 3400 / 101, "0.3": 6700 / 101, "0.1": 100.0})
    plain = coco_scores(ground_truth(BOXES), detections, [1, 2, 3])
    assert plain.ap_at_iou == {} and "AP@" not in plain.line() and "AP_at_IoU" not in plain.as_dict()
    assert coco_scores(ground_truth(BOXES), [], [1, 2, 3], extra_ious=(0.3,)).ap_at_iou == {0.3: 0.0}


def test_no_detections_give_zeros():
    result = coco_scores(ground_truth(BOXES), [], [1, 2, 3])
    assert (result.map50, result.precision, result.recall, result.f1) == (0, 0, 0, 0)
    assert result.pr_curve.shape == (101,) and not result.pr_curve.any()
    assert result.num_targets == 3 and result.num_frames == 3


def hand_case():
    """Image 1: a hit (0.9). Image 2: a hit (0.6) and a false alarm (0.8). Image 3: a miss and a false alarm (0.3)."""
    return [detection(1, [10, 10, 10, 10], 0.9), detection(2, [40, 40, 10, 10], 0.6),
            detection(2, [5, 80, 10, 10], 0.8), detection(3, [20, 70, 10, 10], 0.3)]


def test_hand_computed_precision_recall_f1():
    result = coco_scores(ground_truth(BOXES), hand_case(), [1, 2, 3])
    # Ranked: TP(0.9) FP(0.8) TP(0.6) FP(0.3) → recall 1/3,1/3,2/3,2/3 and precision 1,1/2,2/3,1/2.
    # COCO's envelope gives 1 up to recall 1/3 (34 points: 0.00..0.33), 2/3 up to 2/3 (33 points), then 0.
    expected_curve = np.array([1.0] * 34 + [2 / 3] * 33 + [0.0] * 34)
    np.testing.assert_allclose(result.pr_curve, expected_curve, atol=1e-12)
    assert result.map50 == pytest.approx(expected_curve.mean())
    assert result.recall == pytest.approx(2 / 3)
    precision = expected_curve[:66].mean()  # int(R·100) = 66
    assert result.precision == pytest.approx(precision)
    assert result.f1 == pytest.approx(2 * precision * (2 / 3) / (precision + 2 / 3))
    assert sorted(result.scores.tolist()) == [0.3, 0.6, 0.8, 0.9]
    assert dict(zip(result.scores.tolist(), result.matched.tolist())) == {0.9: True, 0.8: False, 0.6: True, 0.3: False}


def test_f1_confidence_curve_on_the_hand_case():
    result = coco_scores(ground_truth(BOXES), hand_case(), [1, 2, 3])
    thresholds, precision, recall, f1 = f1_confidence_curve(result.scores, result.matched, 3,
                                                            np.array([0.0, 0.7, 0.95]))
    np.testing.assert_allclose(precision, [2 / 4, 1 / 2, 0])
    np.testing.assert_allclose(recall, [2 / 3, 1 / 3, 0])
    np.testing.assert_allclose(f1, [2 * 0.5 * (2 / 3) / (0.5 + 2 / 3), 2 * 0.5 * (1 / 3) / (0.5 + 1 / 3), 0])


def centres(detections):
    by_image = {}
    for d in detections:
        x, y, w, h = d["bbox"]
        by_image.setdefault(d["image_id"], []).append([x + w / 2, y + h / 2, 0, d["score"]])
    return {k: np.array(v) for k, v in by_image.items()}


def test_hand_computed_pd_fa():
    targets = {i + 1: np.array([[b[0][0] + 5, b[0][1] + 5, 0]]) for i, b in enumerate(BOXES)}
    # At conf 0.5: image 1 detected, image 2 detected plus one false alarm, image 3 missed (its 0.3 is dropped).
    pd, fa = pd_fa(targets, centres(hand_case()), [1, 2, 3], conf=0.5, radius=3)
    assert pd == pytest.approx(2 / 3) and fa == pytest.approx(1 / 3)
    # Lowering the threshold admits image 3's detection, which is far from its target: one more false alarm.
    pd, fa = pd_fa(targets, centres(hand_case()), [1, 2, 3], conf=0.2, radius=3)
    assert pd == pytest.approx(2 / 3) and fa == pytest.approx(2 / 3)


def test_pd_radius_and_one_to_one_matching():
    targets = {1: np.array([[50.0, 50.0, 0]])}
    near = {1: np.array([[52.9, 50.0, 0, 0.9]])}
    far = {1: np.array([[53.1, 50.0, 0, 0.9]])}
    assert pd_fa(targets, near, [1], radius=3) == (1.0, 0.0)
    assert pd_fa(targets, far, [1], radius=3) == (0.0, 1.0)
    two = {1: np.array([[50.5, 50.0, 0, 0.9], [49.0, 50.0, 0, 0.8]])}
    assert pd_fa(targets, two, [1], radius=3) == (1.0, 1.0)
    # Two targets and two detections where greedy nearest-first would match only one pair.
    targets = {1: np.array([[0.0, 0.0, 0], [4.0, 0.0, 0]])}
    dets = {1: np.array([[2.0, 0.0, 0, 0.9], [-2.5, 0.0, 0, 0.9]])}
    assert pd_fa(targets, dets, [1], radius=3) == (1.0, 0.0)
    assert pd_fa({}, {}, []) == (0.0, 0.0)


def test_duplicate_or_missing_annotation_ids_and_areas_do_not_change_scores():
    images = [{"id": i + 1, "file_name": f"{i}.bmp", "width": 100, "height": 100} for i in range(3)]
    annotations = [{"id": 7, "image_id": i + 1, "category_id": 1, "bbox": b[0]} for i, b in enumerate(BOXES)]
    gt = coco_api({"images": images, "annotations": annotations, "categories": [{"id": 1}]})
    result = coco_scores(gt, [detection(i + 1, b[0], 1.0) for i, b in enumerate(BOXES)], [1, 2, 3])
    assert result.map50 == pytest.approx(1) and result.recall == pytest.approx(1)
