"""Numeric parity with the authors' released code (tests/fixtures/sstnet_reference.pt, see parity_recipe.py):
float32 on the CPU, relative error ‖ours − ref‖ / ‖ref‖ within what README claims: 1e-6 for eval outputs (measured
0–2e-7) and 5e-5 for the training-mode forward and motion loss at 512. There BatchNorm on batch statistics sums over
a 512² map, whose float32 rounding depends on the CPU's summation order: the reference, itself a float32 result, is
1.8e-5 from the exact (float64) computation, and our float32 is 2.6e-5 from it on an AMD EPYC Zen 3, so the two
differ by 1.6e-5 (the first machine measured) to 2.9e-5 (Zen 3). Our float64 forward, free of that rounding, must
land within the reference's own (2e-5)."""
import pytest
import torch
from parity_recipe import REFERENCE, make_input, make_state, read_layout, relative_error
from torch import nn

from nets.sstnet import Network
from nets.weights import load_weights

EVAL_TOLERANCE = 1e-6
TRAIN_TOLERANCE = 5e-5
REFERENCE_ROUNDING = 2e-5  # the float32 reference against the float64 computation: 1.76e-5


@pytest.fixture(scope="module")
def reference():
    return torch.load(REFERENCE, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def recipe_state():
    return make_state(read_layout())


def recipe_model(state) -> Network:
    model = Network(num_classes=1, num_frame=5, phi="s").float()
    report = load_weights(model, state, mode="strict")
    assert report.num_loaded == 415
    return model


@pytest.fixture(scope="module")
def eval_model(recipe_state):
    return recipe_model(recipe_state).eval()


def train_forward(state, dtype: torch.dtype):
    """The 512-px training-mode forward in ``dtype``: BatchNorm on batch statistics, attention dropout off."""
    model = recipe_model(state).to(dtype).train()
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            module.eval()
    with torch.no_grad():
        (out,), motion_loss = model(make_input((2, 3, 5, 512, 512), seed=3).to(dtype))
    return out, motion_loss


@pytest.fixture(scope="module")
def train512(recipe_state):
    """The one float32 512-px training-mode forward of the session."""
    return train_forward(recipe_state, torch.float32)


@pytest.mark.parametrize("name, shape, seed", [("eval128", (2, 3, 5, 128, 128), 1),
                                               ("eval256", (1, 3, 5, 256, 256), 2)])
def test_eval_output_matches_reference(eval_model, reference, name, shape, seed):
    with torch.no_grad():
        (out,) = eval_model(make_input(shape, seed))
    assert out.shape == reference[name].shape
    assert relative_error(out, reference[name]) <= EVAL_TOLERANCE


def test_per_frame_steps_match_reference(eval_model, reference):
    # The exposed steps, one frame at a time, give the same output as forward's batched eval path.
    x = make_input((2, 3, 5, 128, 128), seed=1)
    with torch.no_grad():
        out = eval_model.detect([eval_model.extract_frame_features(x[:, :, t]) for t in range(5)])
    assert relative_error(out, reference["eval128"]) <= EVAL_TOLERANCE


def test_train_output_matches_reference(train512, reference):
    out, _ = train512
    assert out.shape == reference["train512"].shape
    assert relative_error(out, reference["train512"]) <= TRAIN_TOLERANCE


def test_motion_loss_matches_reference(train512, reference):
    _, motion_loss = train512
    assert relative_error(motion_loss, reference["train512_motion_loss"]) <= TRAIN_TOLERANCE


def test_train_output_in_float64_is_within_the_references_own_rounding(recipe_state, reference):
    out, motion_loss = train_forward(recipe_state, torch.float64)
    assert relative_error(out, reference["train512"]) <= REFERENCE_ROUNDING
    assert relative_error(motion_loss, reference["train512_motion_loss"]) <= REFERENCE_ROUNDING
