"""The "fast" computation is the released function: same outputs, losses, BatchNorm statistics and gradients
(float64, so that only float rounding separates them), same streaming results, same state dict."""
import pytest
import torch
from parity_recipe import REFERENCE, make_input, make_state, read_layout, relative_error
from torch import nn

from nets import Network, YOLOLoss
from nets.blocks import SiLU
from utils.errors import SSTNetError

TOLERANCE = 1e-5  # relative, ‖fast − released‖ / ‖released‖

# (Network options, input shape B×3×T×H×W): the released model at a small size, and grids of ConvLSTM nodes
# where the motion state crosses layers and slices (only the last node's motion update is skipped there).
CONFIGS = {
    "released-1x1": (dict(), (2, 3, 5, 64, 64)),
    "grid-2x2": (dict(num_classes=2, num_frame=3, phi="tiny", lstm_hidden=8, lstm_slices=2, lstm_layers=2),
                 (2, 3, 3, 64, 64)),
    "grid-3x1": (dict(num_classes=2, num_frame=3, phi="tiny", lstm_hidden=8, lstm_slices=3, lstm_layers=1),
                 (2, 3, 3, 64, 64)),
    "grid-1x3": (dict(num_classes=2, num_frame=3, phi="tiny", lstm_hidden=8, lstm_slices=1, lstm_layers=3),
                 (2, 3, 3, 64, 64)),
}


def recipe_model(options: dict, computation: str, dtype=torch.float64) -> Network:
    """A model with the parity recipe's weights (over its own state-dict layout), attention dropout off."""
    model = Network(**options, computation=computation)
    layout = [(key, tuple(value.shape), str(value.dtype)) for key, value in model.state_dict().items()]
    model.load_state_dict(make_state(layout))
    model = model.to(dtype).train()
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            module.eval()
    return model


def targets_for(batch: int, size: int, num_classes: int) -> list[torch.Tensor]:
    """A few boxes per image (cx, cy, w, h, class) in input pixels; the last image has none."""
    boxes = [torch.tensor([[20.0, 24.0, 8.0, 8.0, 0.0], [44.0, 40.0, 12.0, 6.0, num_classes - 1.0]])]
    boxes += [torch.tensor([[size / 2, size / 3, 10.0, 10.0, 0.0]])] * (batch - 2)
    return boxes + [torch.zeros(0, 5)]


def training_step(model: Network, x: torch.Tensor) -> dict:
    """Forward, detection + motion loss, backward: everything the two computations must agree on."""
    (out,), motion_loss = model(x)
    detection_loss = YOLOLoss(model.num_classes)([out], targets_for(x.shape[0], x.shape[-1], model.num_classes))
    (detection_loss + motion_loss).backward()
    return {"out": out.detach(), "motion_loss": motion_loss.detach(), "detection_loss": detection_loss.detach(),
            "grads": {name: p.grad for name, p in model.named_parameters()},
            "buffers": {name: b.clone() for name, b in model.named_buffers() if b.dtype.is_floating_point}}


@pytest.fixture(scope="module", params=list(CONFIGS))
def steps(request):
    options, shape = CONFIGS[request.param]
    x = make_input(shape, seed=7).double()
    return request.param, {computation: training_step(recipe_model(options, computation), x)
                           for computation in ("released", "fast")}


def test_training_outputs_and_losses_equal(steps):
    _, runs = steps
    released, fast = runs["released"], runs["fast"]
    for name in ("out", "motion_loss", "detection_loss"):
        assert relative_error(fast[name], released[name]) <= TOLERANCE, name
    assert released["detection_loss"] > 0 and released["motion_loss"] > 0
    # BatchNorm running statistics: the neck still normalises each (reference, key) pair on its own.
    for name, buffer in released["buffers"].items():
        assert relative_error(fast["buffers"][name], buffer) <= TOLERANCE, name


def test_every_gradient_equal(steps):
    config, runs = steps
    released, fast = runs["released"]["grads"], runs["fast"]["grads"]
    assert released.keys() == fast.keys()
    without = sorted(name for name, grad in released.items() if grad is None)
    assert without == sorted(name for name, grad in fast.items() if grad is None)
    # The last node's motion update reaches nothing, in both computations; mapping0 is never used.
    options = CONFIGS[config][0]
    last = f"SSTNet.cell_list.{options.get('lstm_slices', 1) - 1}{options.get('lstm_layers', 1) - 1}."
    assert {name for name in without if name.startswith("SSTNet.")} == {
        name for name in released if name.startswith(last) and name.split(".")[3] not in ("conv", "conv2")}
    assert "mapping0.0.weight" in without
    scale = torch.cat([grad.flatten() for grad in released.values() if grad is not None]).norm()
    for name, grad in released.items():
        if grad is None:
            continue
        if grad.norm() <= 1e-12 * scale:
            # Zero but for rounding: the slice-0 past attention's projections (its keys and values all come
            # from the zero motion state, so its output does not depend on them). Relative error is
            # meaningless there; the fast gradient must be zero but for rounding too.
            assert "past_attention.in_proj_weight" in name, name
            assert fast[name].norm() <= 1e-12 * scale, name
            continue
        assert relative_error(fast[name], grad) <= TOLERANCE, name


def test_eval_outputs_equal():
    for options, shape in (CONFIGS["released-1x1"], CONFIGS["grid-2x2"]):
        x = make_input(shape, seed=8).double()
        with torch.no_grad():
            outs = {computation: recipe_model(options, computation).eval()(x)[0]
                    for computation in ("released", "fast")}
        assert relative_error(outs["fast"], outs["released"]) <= 1e-10


def test_dropout_draws_the_same_numbers_before_the_skipped_node():
    # With attention dropout on, the nodes the fast computation keeps draw the same random numbers in the same
    # order (only the last node, whose attentions are skipped, draws none): same training outputs.
    options, shape = CONFIGS["grid-2x2"]
    x = make_input(shape, seed=9).double()
    results = {}
    for computation in ("released", "fast"):
        model = recipe_model(options, computation).train()
        torch.manual_seed(11)
        with torch.no_grad():
            (out,), motion_loss = model(x)
        results[computation] = out, motion_loss
    assert relative_error(results["fast"][1], results["released"][1]) <= 1e-10
    assert relative_error(results["fast"][0], results["released"][0]) <= 1e-10


@pytest.fixture(scope="module")
def stream_model():
    """An eval-mode released-config model whose BatchNorm statistics come from a few training batches."""
    options, shape = CONFIGS["released-1x1"]
    model = recipe_model(options, "fast")
    with torch.no_grad():
        model(make_input(shape, seed=10).double())
    return model.eval()


def test_frame_features_layout(stream_model):
    c = stream_model.channels
    frames = make_input((2, 3, 64, 64), seed=12).double()
    with torch.no_grad():
        released = stream_model.set_computation("released").frame_features(frames)
        released_p3 = stream_model.extract_frame_features(frames)
        fast = stream_model.set_computation("fast").frame_features(frames)
        p3 = stream_model.extract_frame_features(frames)
        projection = stream_model.neck.project_references(p3)
    assert released.shape == (2, c, 8, 8) and torch.equal(released, released_p3)
    assert fast.shape == (2, 3 * c, 8, 8)
    assert torch.equal(fast[:, :c], p3) and torch.equal(fast[:, c:], projection)
    assert relative_error(p3, released_p3) <= 1e-10  # the fused SiLU rounds differently


@pytest.mark.parametrize("computation", ["fast", "released"])
def test_detect_on_cached_frames_equals_the_window(stream_model, computation):
    """Frame features computed once per frame, windows assembled from them, equal the window forward; and
    detect takes either per-frame layout in either computation."""
    x = make_input((2, 3, 5, 64, 64), seed=13).double()
    other = "fast" if computation == "released" else "released"
    with torch.no_grad():
        window = stream_model.set_computation("released")(x)[0]
        cached = {name: [stream_model.set_computation(name).frame_features(x[:, :, t]) for t in range(5)]
                  for name in ("released", "fast")}
        stream_model.set_computation(computation)
        from_cache = stream_model.detect(cached[computation])
        mixed = stream_model.detect(cached[other][:2] + cached[computation][2:])
        forward = stream_model(x)[0]
    assert relative_error(from_cache, window) <= 1e-10
    assert relative_error(mixed, window) <= 1e-10
    assert relative_error(forward, window) <= 1e-10


def test_detect_rejects_other_widths(stream_model):
    maps = [torch.zeros(1, 2 * stream_model.channels, 8, 8, dtype=torch.float64)] * 5
    with pytest.raises(SSTNetError, match="frame map 0"):
        stream_model.detect(maps)


def test_switch_keeps_the_state_dict_and_rejects_unknown_names():
    model = Network(phi="nano", lstm_hidden=8)
    silus = [module for module in model.modules() if isinstance(module, SiLU)]
    assert len(silus) > 50
    assert model.computation == "fast" and model.neck.fast and model.SSTNet.fast
    assert all(silu.fused for silu in silus)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    assert model.set_computation("released") is model
    assert model.computation == "released" and not model.neck.fast and not model.SSTNet.fast
    assert not any(silu.fused for silu in silus)
    assert Network(phi="nano", lstm_hidden=8, computation="released").state_dict().keys() == state.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    with pytest.raises(SSTNetError, match="computation"):
        model.set_computation("approximate")
    with pytest.raises(SSTNetError, match="computation"):
        Network(phi="nano", lstm_hidden=8, computation="")


def test_both_computations_match_the_authors_reference():
    """Parity with tests/fixtures/sstnet_reference.pt (float32, 1e-4, as test_model_parity.py): eval in both
    computations, and the 128-px eval output again through the fast streaming layout."""
    reference = torch.load(REFERENCE, map_location="cpu", weights_only=True)
    model = Network().eval()
    model.load_state_dict(make_state(read_layout()))
    x = make_input((2, 3, 5, 128, 128), seed=1)
    with torch.no_grad():
        for computation in ("released", "fast"):
            (out,) = model.set_computation(computation)(x)
            assert relative_error(out, reference["eval128"]) <= 1e-4, computation
        out = model.detect([model.frame_features(x[:, :, t]) for t in range(5)])
    assert relative_error(out, reference["eval128"]) <= 1e-4
