"""Model layout: the default Network has the released state dict (keys, shapes, dtypes), other variants build
with the documented channel widths, and every input size / frame count the design allows runs in both modes."""
import pytest
import torch
from parity_recipe import read_layout

from nets.backbone import VARIANTS
from nets.sstnet import Network
from utils.errors import SSTNetError


def test_default_state_dict_is_the_released_layout():
    layout = read_layout()
    assert len(layout) == 415
    expected = {key: (shape, dtype) for key, shape, dtype in layout}
    ours = {key: (tuple(value.shape), str(value.dtype)) for key, value in Network().state_dict().items()}
    assert sorted(set(ours) - set(expected)) == []
    assert sorted(set(expected) - set(ours)) == []
    assert {key: v for key, v in ours.items() if v != expected[key]} == {}


def test_command_line_choices_are_the_models():
    """The torch-free copies the command lines offer equal what the model and device code accept."""
    from nets.sstnet import COMPUTATIONS
    from utils.model_spec import AMP_CHOICES, COMPUTATION_CHOICES, PHI_CHOICES
    from utils.runtime.device import AMP_DTYPES
    assert PHI_CHOICES == tuple(VARIANTS)
    assert COMPUTATION_CHOICES == COMPUTATIONS
    assert AMP_CHOICES == tuple(AMP_DTYPES)


def test_variant_table_drives_widths():
    assert set(VARIANTS) == {"nano", "tiny", "s", "m", "l", "x"}
    for phi, c in (("nano", 64), ("tiny", 96), ("m", 192)):
        model = Network(num_classes=3, num_frame=4, phi=phi)
        state = model.state_dict()
        assert model.channels == c
        assert state["mapping2.0.weight"].shape == (c * 4, 64 * 4, 1, 1)
        assert state["mapping0.0.weight"].shape == (c, c * 4, 1, 1)
        assert state["head.stems.0.conv.weight"].shape == (2 * c, c, 1, 1)
        assert state["head.cls_preds.0.weight"].shape == (3, 2 * c, 1, 1)
        assert state["neck.conv_ref.0.conv.weight"].shape == (2 * c, 3 * c, 3, 3)
        assert len(model.neck.weight) == 4
    nano = Network(phi="nano").state_dict()
    # nano's darknet is depthwise: the stride-2 convs are dconv + pconv.
    assert "backbone.backbone.dark2.0.dconv.conv.weight" in nano
    with pytest.raises(SSTNetError, match="phi"):
        Network(phi="huge")


def test_small_lstm_options_name_cells_by_slice_and_layer():
    model = Network(phi="nano", lstm_hidden=8, lstm_slices=2, lstm_layers=3)
    assert sorted(model.SSTNet.cell_list) == ["00", "01", "02", "10", "11", "12"]
    state = model.state_dict()
    assert state["mapping1.2.weight"].shape == (8, 32, 1, 1)
    assert state["SSTNet.cell_list.12.conv2.weight"].shape == (32, 32, 3, 3)
    assert state["SSTNet.cell_list.12.motion.0.weight"].shape == (32, 24, 3, 3)


def test_head_prior_bias_initialisation():
    head = Network(num_classes=2, phi="nano", lstm_hidden=8).head
    head.initialize_biases(0.01)
    for conv in (head.cls_preds[0], head.obj_preds[0]):
        torch.testing.assert_close(torch.sigmoid(conv.bias), torch.full_like(conv.bias, 0.01))
    with pytest.raises(SSTNetError):
        head.initialize_biases(0.0)


def _run(model, x):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("height, width, frames", [(64, 64, 2), (64, 96, 3), (96, 64, 5)])
def test_sizes_and_frame_counts_in_both_modes(height, width, frames):
    torch.manual_seed(0)
    model = Network(num_frame=frames)
    x = torch.randn(2, 3, frames, height, width)
    model.eval()
    (out,) = _run(model, x)
    assert out.shape == (2, 6, height // 8, width // 8)
    model.train()
    (out_train,), motion_loss = _run(model, x)
    assert out_train.shape == out.shape
    assert motion_loss.dim() == 0 and torch.isfinite(motion_loss)


def test_tiny_config_runs_in_both_modes():
    torch.manual_seed(0)
    model = Network(num_classes=2, num_frame=3, phi="nano", lstm_hidden=8, lstm_slices=2, lstm_layers=2)
    x = torch.randn(2, 3, 3, 64, 96)
    model.train()
    (out,), motion_loss = _run(model, x)
    assert out.shape == (2, 7, 8, 12) and torch.isfinite(motion_loss)
    model.eval()
    (out,) = _run(model, x)
    assert out.shape == (2, 7, 8, 12) and torch.isfinite(out).all()


def test_exposed_steps_compose_to_forward():
    torch.manual_seed(0)
    model = Network(phi="nano", num_frame=3, lstm_hidden=8).eval()
    x = torch.randn(2, 3, 3, 64, 64)
    with torch.no_grad():
        feats = [model.extract_frame_features(x[:, :, t]) for t in range(3)]
        assert feats[0].shape == (2, model.channels, 8, 8)
        torch.testing.assert_close(model.detect(feats), model(x)[0], rtol=1e-5, atol=1e-5)
        assert model.motion_loss(x, feats).dim() == 0


@pytest.mark.parametrize("shape", [(1, 3, 5, 100, 128), (1, 3, 4, 64, 64), (1, 1, 5, 64, 64), (3, 5, 64, 64)])
def test_bad_inputs_are_rejected(shape):
    with pytest.raises(SSTNetError):
        Network(phi="nano", lstm_hidden=8).eval()(torch.zeros(shape))
