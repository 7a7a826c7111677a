"""Windows, the dataset and the loader: clamping, ordering, boxes, workers and real DAUB frames."""
import cv2
import numpy as np
import pytest
import torch
from conftest import write_coco, write_frames
from torch.utils.data import DataLoader

from utils.data.annotations import FrameRecord, read_coco
from utils.data.augment import RELEASE_AUGMENT, AugmentConfig
from utils.data.dataset import SequenceDataset, sequence_collate
from utils.data.preprocess import MEAN, STD
from utils.data.sequence import SequenceFolders
from utils.errors import SSTNetError


def numbers(paths):
    return [int(p.stem) for p in paths]


def test_window_is_clamped_at_the_first_frame_on_disk(tmp_path):
    write_frames(tmp_path / "a", range(10))
    write_frames(tmp_path / "b", range(3, 10))
    folders = SequenceFolders()
    assert numbers(folders.window(tmp_path / "a/2.bmp", 5)) == [0, 0, 0, 1, 2]
    assert numbers(folders.window(tmp_path / "a/9.bmp", 5)) == [5, 6, 7, 8, 9]
    assert numbers(folders.window(tmp_path / "a/0.bmp", 3)) == [0, 0, 0]
    assert numbers(folders.window(tmp_path / "b/4.bmp", 5)) == [3, 3, 3, 3, 4]


def test_window_takes_the_key_frame_extension(tmp_path):
    write_frames(tmp_path / "s", range(4), suffix=".png")
    write_frames(tmp_path / "s", [3], suffix=".bmp")
    window = SequenceFolders().window(tmp_path / "s/3.png", 3)
    assert [p.suffix for p in window] == [".png"] * 3 and numbers(window) == [1, 2, 3]


def test_missing_history_frame_names_the_file_and_the_window(tmp_path):
    write_frames(tmp_path / "s", [0, 1, 3, 4])
    with pytest.raises(SSTNetError) as info:
        SequenceFolders().window(tmp_path / "s/4.bmp", 5)
    assert str(info.value) == (f"{tmp_path / 's/2.bmp'}: frame not found, needed by the 5-frame window of "
                               f"{tmp_path / 's/4.bmp'}")


def test_dataset_fails_early_on_a_missing_frame(tmp_path):
    write_frames(tmp_path / "s", [0, 2])
    records = [FrameRecord(tmp_path / "s/2.bmp", np.array([[1, 1, 5, 5, 0]], np.float32))]
    with pytest.raises(SSTNetError, match="1.bmp: frame not found"):
        SequenceDataset(records, (32, 32), 3)


def test_empty_dataset_and_single_frame_are_rejected(tmp_path):
    with pytest.raises(SSTNetError, match="no annotated frames"):
        SequenceDataset([], (32, 32), 5, source="x.json")
    write_frames(tmp_path / "s", [0])
    with pytest.raises(SSTNetError, match="--num-frame 1"):
        SequenceDataset([FrameRecord(tmp_path / "s/0.bmp", np.zeros((0, 5), np.float32))], (32, 32), 1)


def frame_value(sample_frame):
    """Undo the normalisation of channel 0 at the image centre."""
    return (sample_frame[0] * STD[0] + MEAN[0]) * 255


def test_sample_orders_frames_oldest_first_and_converts_boxes(tmp_path):
    write_frames(tmp_path / "s", range(6), size=(32, 64))
    records = [FrameRecord(tmp_path / "s/5.bmp", np.array([[10, 4, 18, 12, 0]], np.float32)),
               FrameRecord(tmp_path / "s/1.bmp", np.zeros((0, 5), np.float32))]
    dataset = SequenceDataset(records, (64, 64), 4)
    sample, targets, _ = dataset[0]
    assert sample.shape == (3, 4, 64, 64) and sample.dtype == np.float32
    values = [round(float(frame_value(sample[:, t, 32, 32]))) for t in range(4)]
    assert values == [20, 30, 40, 50]  # frames 2..5, key frame last
    # 32×64 → 64×64: scale 1, pasted 16 rows down
    np.testing.assert_allclose(targets, [[14, 24, 8, 8, 0]])
    sample, targets, _ = dataset[1]
    assert [round(float(frame_value(sample[:, t, 32, 32]))) for t in range(4)] == [0, 0, 0, 10]
    assert targets.shape == (0, 5)


def test_frames_of_different_sizes_and_grey_frames_are_each_letterboxed(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), np.full((32, 32), 50, np.uint8))        # grey, 1 channel
    cv2.imwrite(str(folder / "1.png"), np.full((16, 64, 3), 90, np.uint8))     # RGB, another size
    dataset = SequenceDataset([FrameRecord(folder / "1.png", np.array([[0, 0, 8, 8, 0]], np.float32))], (64, 64), 2)
    sample, targets, _ = dataset[0]
    assert round(float(frame_value(sample[:, 0, 32, 32]))) == 50
    assert round(float(frame_value(sample[:, 1, 32, 32]))) == 90
    assert round(float(frame_value(sample[:, 1, 0, 32]))) == 128  # padded rows of the wide frame
    np.testing.assert_allclose(targets, [[4, 28, 8, 8, 0]])


def test_augmentation_is_shared_by_all_frames_and_reproducible(tmp_path):
    write_frames(tmp_path / "s", range(3), size=(32, 32), value_of=lambda n: 100)
    records = [FrameRecord(tmp_path / "s/2.bmp", np.array([[2, 2, 10, 10, 0]], np.float32))] * 8
    dataset = SequenceDataset(records, (32, 32), 3, augment=RELEASE_AUGMENT, seed=5)
    samples = [dataset[i] for i in range(8)]
    for sample, _, _ in samples:
        np.testing.assert_array_equal(sample[:, 0], sample[:, 2])
    assert len({float(s[0, 0, 0, 0]) for s, _, _ in samples}) > 1  # jitter differs between samples
    assert {float(t[0, 0]) for _, t, _ in samples} == {6.0, 26.0}  # some flipped, some not
    again = SequenceDataset(records, (32, 32), 3, augment=RELEASE_AUGMENT, seed=5)
    np.testing.assert_array_equal(again[3][0], samples[3][0])
    again.set_epoch(1)
    assert any(not np.array_equal(again[i][0], samples[i][0]) for i in range(8))


def test_a_dataset_zoom_shows_a_small_target_larger_in_every_frame(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    frame = np.full((32, 32), 20, np.uint8)
    frame[12:16, 12:16] = 220  # a 4 x 4 target
    for number in range(3):
        cv2.imwrite(str(folder / f"{number}.png"), frame)
    record = FrameRecord(folder / "2.png", np.array([[12, 12, 16, 16, 0]], np.float32))
    dataset = SequenceDataset([record, record], (32, 32), 3, zooms=[1, 2])
    (plain, plain_targets, _), (zoomed, zoomed_targets, _) = dataset[0], dataset[1]
    np.testing.assert_allclose(plain_targets, [[14, 14, 4, 4, 0]])
    # Twice the size about the frame's centre (15.5, 15.5): edges 12 -> 8 and 16 -> 16.
    np.testing.assert_allclose(zoomed_targets, [[12, 12, 8, 8, 0]])
    bright = frame_value(zoomed) > 120
    assert (frame_value(plain) > 120).sum() == 3 * 16
    assert 3 * 48 <= bright.sum() <= 3 * 80 and bright[:, 9:15, 9:15].all() and not bright[:, :6, :6].any()
    np.testing.assert_array_equal(zoomed[:, 0], zoomed[:, 2])


def test_each_record_can_carry_its_own_augmentation(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    frame = np.full((32, 32), 20, np.uint8)
    frame[12:16, 12:16] = 220
    for number in range(3):
        cv2.imwrite(str(folder / f"{number}.png"), frame)
    record = FrameRecord(folder / "2.png", np.array([[12, 12, 16, 16, 0]], np.float32))
    # The second record's range doubles the sample, the third's (scale 1, nothing else) and the first's (None) leave
    # it as it is.
    dataset = SequenceDataset([record] * 3, (32, 32), 3,
                              augment=[None, AugmentConfig(scale=(2.0, 2.0)), AugmentConfig()])
    assert dataset.augments == [None, AugmentConfig(scale=(2.0, 2.0)), None]
    np.testing.assert_allclose(dataset[1][1], [[12, 12, 8, 8, 0]])
    np.testing.assert_allclose(dataset[2][1], [[14, 14, 4, 4, 0]])
    np.testing.assert_allclose(dataset[0][1], [[14, 14, 4, 4, 0]])
    # One config is shared by every record.
    halved = SequenceDataset([record] * 2, (32, 32), 3, augment=AugmentConfig(scale=(0.5, 0.5)))
    for sample in (halved[0], halved[1]):
        np.testing.assert_allclose(sample[1], [[15, 15, 2, 2, 0]])  # half the size, towards the centre
    with pytest.raises(ValueError, match="2 augmentations for 3 records"):
        SequenceDataset([record] * 3, (32, 32), 3, augment=[None, None])


def test_loader_with_workers_matches_the_main_process(tmp_path):
    for seq in range(2):
        write_frames(tmp_path / f"images/data{seq}", range(6), size=(40, 40), value_of=lambda n: 20 * n + seq)
    images = [{"id": 1 + 6 * s + k, "file_name": f"images/data{s}/{k}.bmp", "width": 40, "height": 40}
              for s in range(2) for k in range(6)]
    annotations = [{"id": i, "image_id": i, "category_id": 1, "bbox": [i, 3, 6, 6]} for i in range(1, 13, 2)]
    json_path = write_coco(tmp_path / "annotations/instances_train2017.json", images, annotations)
    dataset = SequenceDataset.from_coco(json_path, tmp_path, (64, 64), 5)
    assert len(dataset) == 6
    serial = list(DataLoader(dataset, batch_size=4, collate_fn=sequence_collate))
    parallel = list(DataLoader(dataset, batch_size=4, collate_fn=sequence_collate, num_workers=2))
    assert serial[0][0].shape == (4, 3, 5, 64, 64) and len(serial[0][1]) == 4
    for (a_images, a_targets, _), (b_images, b_targets, _) in zip(serial, parallel):
        assert torch.equal(a_images, b_images)
        assert all(torch.equal(a, b) for a, b in zip(a_targets, b_targets))


@pytest.mark.parametrize("size", [256, 512])
def test_real_daub_frames_and_boxes(daub_real, size):
    json_path = daub_real / "annotations/instances_test2017.json"
    gt = read_coco(json_path, daub_real)
    dataset = SequenceDataset(gt.records, (size, size), 5)
    assert len(dataset) == 200
    scale = size / 256
    for index in (0, 3, 150):
        sample, targets, _ = dataset[index]
        record = gt.records[index]
        x1, y1, x2, y2, _ = record.boxes[0]
        np.testing.assert_allclose(targets[0], [(x1 + x2) / 2 * scale, (y1 + y2) / 2 * scale,
                                                (x2 - x1) * scale, (y2 - y1) * scale, 0])
        key = sample[0, -1] * STD[0] + MEAN[0]
        cx, cy, w, h = targets[0, :4].int().tolist()
        inside = key[cy - h // 2:cy + h // 2, cx - w // 2:cx + w // 2]
        # The aircraft is brighter than the frame around it.
        assert inside.max() > np.median(key) + 0.1
    # The first window of a clip repeats frame 0; later windows show the motion of the sequence.
    sample, _, _ = dataset[0]
    assert np.array_equal(sample[:, 0], sample[:, 4])
    sample, _, _ = dataset[50]
    assert not np.array_equal(sample[:, 0], sample[:, 4])
