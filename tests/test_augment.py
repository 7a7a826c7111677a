"""Augmentation: one draw shared by the T frames of a sample, boxes that follow the pixels, targets kept inside."""
import numpy as np
import pytest

from utils.data.augment import (RELEASE_AUGMENT, AugmentConfig, AugmentDraw, augment_frame, augment_sample,
                                draw_augmentation, transform_boxes)
from utils.data.bundled import DAUB
from utils.errors import SSTNetError
from utils.train.options import parse_config

GEOMETRY = AugmentConfig(flip_lr=0.5, flip_ud=0.5, translate=0.5, scale=(0.7, 1.4))


def frames_with_spots(centres, size=(64, 96)):
    """One frame per centre: mid-grey with a bright 4×4 square whose top-left corner is the centre."""
    frames = []
    for x, y in centres:
        frame = np.full((*size, 3), 100, np.uint8)
        frame[y:y + 4, x:x + 4] = 250
        frames.append(frame)
    return frames


def bright_centroid(frame):
    ys, xs = np.nonzero(frame[:, :, 0] > 175)
    return np.array([xs.mean(), ys.mean()])


def test_flip_mirrors_image_and_boxes_exactly():
    frame, = frames_with_spots([(5, 10)])
    draw = AugmentDraw(np.array([[-1.0, 0, 95], [0, 1.0, 0]]), None, None, 0.0)
    flipped = augment_frame(frame, draw, np.random.default_rng(0))
    (x1, y1, x2, y2, _), = transform_boxes(np.array([[5, 10, 9, 14, 0]], np.float32), draw.matrix)
    assert (x1, y1, x2, y2) == (87, 10, 91, 14)
    assert (flipped[10:14, 87:91] == 250).all() and (flipped > 175).sum() == (frame > 175).sum()


@pytest.mark.parametrize("seed", range(40))
def test_geometry_keeps_targets_inside_and_on_their_pixels(seed):
    rng = np.random.default_rng(seed)
    corners = [(int(rng.integers(0, 92)), int(rng.integers(0, 60))) for _ in range(3)]
    frames = frames_with_spots(corners)
    boxes = np.array([[*corners[-1], corners[-1][0] + 4, corners[-1][1] + 4, 0]], np.float32)
    out_frames, out_boxes = augment_sample(frames, boxes, GEOMETRY, rng)
    (x1, y1, x2, y2, _), = out_boxes
    assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 64  # kept whole inside the input
    # The box sits on the bright pixels of the key frame.
    np.testing.assert_allclose(bright_centroid(out_frames[-1]), [(x1 + x2) / 2 - 0.5, (y1 + y2) / 2 - 0.5], atol=0.6)


def test_frames_of_a_sample_move_together():
    # A spot moving 6 px right per frame: after any draw, the displacement between frames keeps its length up to
    # the zoom, and every frame got the same map (the key-frame box predicts each frame through the same matrix).
    centres = [(20, 30), (26, 30), (32, 30)]
    for seed in range(20):
        rng = np.random.default_rng(seed)
        draw = draw_augmentation(GEOMETRY, rng, (64, 96), np.array([[32, 30, 36, 34, 0]], np.float32))
        out = [augment_frame(frame, draw, rng) for frame in frames_with_spots(centres)]
        for (x, y), frame in zip(centres, out):
            box = transform_boxes(np.array([[x, y, x + 4, y + 4, 0]], np.float32), draw.matrix)[0]
            if box[0] < 0 or box[1] < 0 or box[2] > 96 or box[3] > 64:
                continue  # only the key frame's targets are kept inside; an older position may leave the input
            np.testing.assert_allclose(bright_centroid(frame), [(box[0] + box[2]) / 2 - 0.5,
                                                                (box[1] + box[3]) / 2 - 0.5], atol=0.6)


def test_photometric_changes_are_shared_and_noise_is_fresh_per_frame():
    frame = np.tile(np.arange(0, 256, 4, dtype=np.uint8)[None, :, None], (16, 1, 3))
    frames = [frame.copy() for _ in range(3)]
    shared = AugmentConfig(contrast=0.5, brightness=0.2, gamma=1.0)
    for seed in range(10):
        out, _ = augment_sample(frames, np.zeros((0, 5), np.float32), shared, np.random.default_rng(seed))
        assert all(np.array_equal(out[0], other) for other in out[1:])
        assert not np.array_equal(out[0], frame) or seed  # at least the first draw changes the frame
        assert (np.diff(out[0][0, :, 0].astype(int)) >= 0).all()  # a monotone grey-level map
    noisy, _ = augment_sample(frames, np.zeros((0, 5), np.float32), AugmentConfig(noise=10.0),
                              np.random.default_rng(1))
    assert not np.array_equal(noisy[0], noisy[1])
    assert all((image[:, :, 0] == image[:, :, 2]).all() for image in noisy)  # grey stays grey


def test_default_config_is_off_and_the_release_preset_is_flip_and_hsv():
    assert not AugmentConfig().enabled
    assert RELEASE_AUGMENT == AugmentConfig(flip_lr=0.5, hsv=(0.1, 0.7, 0.4))
    assert parse_config([], DAUB).augment == AugmentConfig()
    assert parse_config(["--augment"], DAUB).augment == RELEASE_AUGMENT
    assert parse_config(["--augment", "--flip-lr", "0"], DAUB).augment.flip_lr == 0.0
    config = parse_config(["--translate", "0.3", "--scale", "0.8", "1.2", "--noise", "3"], DAUB).augment
    assert (config.translate, config.scale, config.noise, config.flip_lr) == (0.3, (0.8, 1.2), 3.0, 0.0)


@pytest.mark.parametrize("argv,flag", [(["--translate", "1.5"], "--translate"), (["--flip-ud", "nan"], "--flip-ud"),
                                       (["--scale", "1.2", "0.8"], "--scale"), (["--noise", "-1"], "--noise")])
def test_bad_values_name_the_flag(argv, flag):
    with pytest.raises(SSTNetError, match=flag):
        parse_config(argv, DAUB)
