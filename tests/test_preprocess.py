"""Letterbox and normalisation: exact geometry on hand-made images."""
import numpy as np
import pytest

from utils.data.preprocess import MEAN, STD, Letterbox, normalize, preprocess_frame
from utils.errors import SSTNetError
from utils.model_spec import parse_input_shape


def test_box_maps_onto_the_pasted_pixels_it_covers():
    # 32×64 (h×w) frame with a white block; letterboxed into 128×128 the scale is exactly 2 and the frame is
    # pasted 32 rows down, so the block must land where the mapped box says.
    image = np.zeros((32, 64, 3), np.uint8)
    image[8:12, 10:20] = 255
    letterbox = Letterbox.fit(image.shape[:2], (128, 128))
    assert letterbox.new_hw == (64, 128) and letterbox.offset_yx == (32, 0)
    canvas = letterbox.apply(image)
    (x1, y1, x2, y2, cls), = letterbox.map_boxes(np.array([[10, 8, 20, 12, 0]], np.float32))
    assert (x1, y1, x2, y2, cls) == (20, 48, 40, 56, 0)
    x1, y1, x2, y2 = int(x1), int(y1), int(x2), int(y2)
    # Bicubic ringing reaches 2 px from an edge at 2× upsampling; beyond that the pixels are exact.
    assert (canvas[y1 + 2:y2 - 2, x1 + 2:x2 - 2] == 255).all()
    outside = canvas[32:96].copy()
    outside[y1 - 32 - 3:y2 - 32 + 3, max(x1 - 3, 0):x2 + 3] = 0
    assert (outside == 0).all()
    # Rows above and below the pasted frame are the grey canvas.
    assert (canvas[:32] == 128).all() and (canvas[96:] == 128).all()


def test_odd_padding_is_floored_and_size_truncated():
    letterbox = Letterbox.fit((100, 300), (96, 96))
    # scale = min(96/300, 96/100) = 0.32 → new 32×96, padding (96-32)//2 = 32
    assert letterbox.new_hw == (32, 96) and letterbox.offset_yx == (32, 0)
    letterbox = Letterbox.fit((33, 100), (64, 64))
    scale = min(64 / 100, 64 / 33)
    assert letterbox.new_hw == (int(33 * scale), int(100 * scale))
    assert letterbox.offset_yx == ((64 - int(33 * scale)) // 2, 0)


def test_boxes_are_clipped_and_thin_ones_dropped():
    letterbox = Letterbox.fit((64, 64), (64, 64))
    boxes = np.array([[-5, 10, 20, 30, 0], [60, 60, 70, 70, 0], [10, 10, 11, 30, 0], [63.5, 0, 70, 10, 0]], np.float32)
    mapped = letterbox.map_boxes(boxes)
    np.testing.assert_array_equal(mapped, [[0, 10, 20, 30, 0], [60, 60, 64, 64, 0]])
    assert letterbox.map_boxes(np.zeros((0, 5), np.float32)).shape == (0, 5)


def test_normalisation_and_channel_order():
    image = np.zeros((2, 2, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 0, 128, 255
    data = normalize(image)
    assert data.shape == (3, 2, 2) and data.dtype == np.float32
    expected = (np.array([0, 128, 255]) / 255 - MEAN) / STD
    np.testing.assert_allclose(data[:, 0, 0], expected, rtol=1e-6)


def test_normalisation_table_is_bit_identical_to_the_arithmetic():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    image.reshape(-1, 3)[:256] = np.arange(256, dtype=np.uint8)[:, None]
    expected = np.ascontiguousarray(((image.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1))
    data = normalize(image)
    assert data.dtype == np.float32 and data.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(data.view(np.uint32), expected.view(np.uint32))
    with pytest.raises(ValueError, match="uint8"):
        normalize(image.astype(np.float32))


def test_preprocess_frame_pads_with_normalised_grey():
    data, letterbox = preprocess_frame(np.zeros((32, 64, 3), np.uint8), (64, 64))
    assert data.shape == (3, 64, 64) and letterbox.offset_yx == (16, 0)
    np.testing.assert_allclose(data[:, 0, 0], (128 / 255 - MEAN) / STD, rtol=1e-6)
    np.testing.assert_allclose(data[:, 20, 0], -MEAN / STD, rtol=1e-6)


@pytest.mark.parametrize("text,expected", [(512, (512, 512)), ("256", (256, 256)), ("384x640", (384, 640)),
                                           ((64, 96), (64, 96))])
def test_parse_input_shape(text, expected):
    assert parse_input_shape(text) == expected


@pytest.mark.parametrize("text", ["500", "abc", "0", "64x65", "1x2x3"])
def test_parse_input_shape_rejects(text):
    with pytest.raises(SSTNetError, match="--input-size"):
        parse_input_shape(text)


def test_plain_resize_maps_a_box_on_a_non_square_frame_there_and_back():
    # 32×64 (h×w) frame stretched to 128×128: x scales by 2, y by 4, nothing is padded.
    from utils.boxes import letterbox_to_image
    image = np.zeros((32, 64, 3), np.uint8)
    image[8:12, 10:20] = 255
    resize = Letterbox.fit(image.shape[:2], (128, 128), keep_ratio=False)
    assert resize.new_hw == (128, 128) and resize.offset_yx == (0, 0)
    canvas = resize.apply(image)
    (x1, y1, x2, y2, cls), = resize.map_boxes(np.array([[10, 8, 20, 12, 0]], np.float32))
    assert (x1, y1, x2, y2, cls) == (20, 32, 40, 48, 0)
    assert (canvas[34:46, 22:38] == 255).all() and (canvas[:28] == 0).all() and (canvas[52:] == 0).all()
    # The inverse used for detections (docs/design.md, Inference and post-processing, without the letterbox) returns
    # the box drawn on the frame.
    normalised = np.array([[(x1 + x2) / 2 / 128, (y1 + y2) / 2 / 128, (x2 - x1) / 128, (y2 - y1) / 128]])
    np.testing.assert_allclose(letterbox_to_image(normalised, (128, 128), (32, 64), letterbox=False),
                               [[8, 10, 12, 20]], atol=1e-9)
    data, used = preprocess_frame(image, (128, 128), keep_ratio=False)
    assert used == resize and data.shape == (3, 128, 128)
    assert preprocess_frame(image, (128, 128))[1].offset_yx == (32, 0)  # letterbox stays the default
