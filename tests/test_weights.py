"""Weight loading (nets/weights.py): accepted wrappings, DDP prefixes, strict mismatch messages, partial loads by
key and shape with a report, and clear errors for files that are not weights."""
import os
import re

import pytest
import torch

from nets.backbone import FeatureExtractor
from nets.sstnet import Network
from nets.weights import detector_state, load_weights
from utils.errors import SSTNetError


def small(**kwargs) -> Network:
    return Network(**{"phi": "nano", "num_frame": 2, "lstm_hidden": 8, **kwargs})


@pytest.fixture
def source_state():
    torch.manual_seed(1)
    return small().state_dict()


def assert_loaded(model, state):
    ours = model.state_dict()
    assert set(ours) == set(state)
    for key, value in state.items():
        assert torch.equal(ours[key], value), key


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"model": sd, "start_epoch": 3, "optimizer": {"state": {}, "param_groups": []}},
    lambda sd: {"state_dict": sd, "epoch": 7},
    lambda sd: {f"module.{k}": v for k, v in sd.items()},
    lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
], ids=["plain", "model", "state_dict", "module-prefix", "model+module-prefix"])
def test_strict_accepts_each_wrapping_from_file_and_memory(tmp_path, source_state, wrap):
    path = tmp_path / "weights.pth"
    torch.save(wrap(source_state), path)
    for source in (path, str(path), wrap(source_state)):
        torch.manual_seed(2)
        model = small()
        report = load_weights(model, source, mode="strict")
        assert report.num_loaded == len(source_state) and report.num_skipped == 0
        assert_loaded(model, source_state)


def test_strict_rejects_another_class_count_naming_the_keys(source_state):
    with pytest.raises(SSTNetError, match=r"shape: head\.cls_preds\.0\.weight \(1, 128, 1, 1\) vs model "
                                          r"\(2, 128, 1, 1\)") as info:
        load_weights(small(num_classes=2), source_state)
    assert "head.cls_preds.0.bias" in str(info.value) and "state dict" in str(info.value)


def test_strict_rejects_another_architecture_naming_missing_and_unexpected(tmp_path, source_state):
    path = tmp_path / "three_frames.pth"
    torch.save(small(num_frame=3).state_dict(), path)
    with pytest.raises(SSTNetError) as info:
        load_weights(small(), path)
    message = str(info.value)
    assert str(path) in message
    assert "unexpected: neck.weight.2" in message
    assert "neck.conv_ref.0.conv.weight" in message  # 2·64 vs 64 input channels

    broken = dict(source_state)
    del broken["head.stems.0.conv.weight"]
    broken["head.extra.weight"] = torch.zeros(1)
    model = small()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SSTNetError, match=r"1 missing: head\.stems\.0\.conv\.weight.*1 unexpected: head\.extra"):
        load_weights(model, broken)
    assert_loaded(model, before)  # a failed strict load changes nothing


def test_strict_takes_detector_only_weights_but_not_a_partial_motion_branch(source_state):
    detector = detector_state(source_state)
    assert 0 < len(detector) < len(source_state)
    torch.manual_seed(2)
    model = small()
    initial = {key: value.clone() for key, value in model.state_dict().items()}
    report = load_weights(model, detector, mode="strict")
    assert set(report.loaded) == set(detector) and set(report.missing) == set(source_state) - set(detector)
    assert report.by_part()["motion branch"]["absent"] == len(report.missing)
    loaded = model.state_dict()
    for key, value in source_state.items():
        assert torch.equal(loaded[key], detector[key] if key in detector else initial[key]), key

    partial = dict(source_state)
    del partial["mapping1.2.weight"]
    with pytest.raises(SSTNetError, match=r"1 missing: mapping1\.2\.weight"):
        load_weights(small(), partial, mode="strict")
    incomplete = dict(detector)
    del incomplete["head.stems.0.conv.weight"]
    with pytest.raises(SSTNetError, match=r"missing: head\.stems\.0\.conv\.weight"):
        load_weights(small(), incomplete, mode="strict")


def yolox_official_like(phi="nano"):
    """Keys and shapes of an official YOLOX checkpoint for this width: the PAFPN (our top-down path plus the
    bottom-up half we lack) under ``backbone.``, and a three-level head of width 256·w."""
    torch.manual_seed(3)
    extractor = FeatureExtractor.from_variant(phi)
    state = {f"backbone.{k}": v for k, v in extractor.state_dict().items()}
    c = extractor.out_channels
    state["backbone.bu_conv2.conv.weight"] = torch.randn(c, c, 3, 3)
    state["backbone.C3_n3.conv1.conv.weight"] = torch.randn(c, 2 * c, 1, 1)
    for level in range(3):
        state[f"head.stems.{level}.conv.weight"] = torch.randn(c, c * 2 ** level, 1, 1)
        state[f"head.cls_preds.{level}.weight"] = torch.randn(80, c, 1, 1)
        state[f"head.cls_preds.{level}.bias"] = torch.randn(80)
        state[f"head.reg_preds.{level}.bias"] = torch.randn(4)
    return {"model": state, "start_epoch": 300}, extractor


def test_partial_loads_by_key_and_shape_and_reports(tmp_path):
    checkpoint, extractor = yolox_official_like()
    path = tmp_path / "yolox_nano.pth"
    torch.save(checkpoint, path)
    model = small()
    report = load_weights(model, path, mode="partial")
    backbone_keys = {f"backbone.{k}" for k in extractor.state_dict()}
    # The whole darknet and top-down path, plus the one head tensor that happens to share name and shape.
    assert set(report.loaded) == backbone_keys | {"head.reg_preds.0.bias"}
    assert report.num_loaded == len(backbone_keys) + 1
    assert report.skipped["backbone.bu_conv2.conv.weight"] == "not in model"
    assert report.skipped["head.stems.1.conv.weight"] == "not in model"
    assert report.skipped["head.stems.0.conv.weight"].startswith("shape (64, 64, 1, 1) vs model (128, 64, 1, 1)")
    assert report.skipped["head.cls_preds.0.bias"].startswith("shape (80,)")
    assert report.num_skipped == len(checkpoint["model"]) - report.num_loaded
    assert "neck.conv_final.1.conv.weight" in report.missing
    ours = model.state_dict()
    for key in report.loaded:
        assert torch.equal(ours[key], checkpoint["model"][key])
    summary = report.summary()
    assert f"loaded {report.num_loaded} tensors" in summary and "skipped" in summary and str(path) in summary

    report = load_weights(small(), checkpoint, mode="partial", include=("backbone.",))
    assert set(report.loaded) == backbone_keys
    assert report.skipped["head.reg_preds.0.bias"] == "not included"


def test_partial_with_nothing_in_common_is_an_error():
    with pytest.raises(SSTNetError, match="no tensor matches"):
        load_weights(small(), {"other.weight": torch.zeros(3)}, mode="partial")


@pytest.mark.parametrize("content", [os.urandom(4096), b"just some notes\nnot weights\n", b""],
                         ids=["random-bytes", "text", "empty"])
def test_non_checkpoint_files_are_reported_by_name(tmp_path, content):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(SSTNetError, match=re.escape(f"{path}: not a readable PyTorch weights file")):
        load_weights(small(), path)


def test_missing_file_folder_and_non_state_dict(tmp_path):
    with pytest.raises(SSTNetError, match="weights file not found"):
        load_weights(small(), tmp_path / "absent.pth")
    with pytest.raises(SSTNetError, match="not a file"):
        load_weights(small(), tmp_path)
    path = tmp_path / "numbers.pth"
    torch.save({"epoch": 3, "lr": [0.1]}, path)
    with pytest.raises(SSTNetError, match=re.escape(f"{path}: holds no state dict")):
        load_weights(small(), path)
    # A whole pickled model needs arbitrary code to load: refused by the weights-only loader, in plain words.
    torch.save(small(), tmp_path / "module.pth")
    with pytest.raises(SSTNetError, match="refused: .* loading it could run code; only plain weights files") as error:
        load_weights(small(), tmp_path / "module.pth")
    assert "weights_only" not in str(error.value) and "trusted" not in str(error.value)


def test_bad_mode():
    with pytest.raises(SSTNetError, match="mode"):
        load_weights(small(), {}, mode="loose")
