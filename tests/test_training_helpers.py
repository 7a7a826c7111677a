"""Training helpers: lr scaling and schedule, EMA, weight initialisation and optimizer parameter groups."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nets.training import (ModelEMA, build_optimizer, init_weights, lr_at_epoch, parameter_groups, scaled_lrs,
                           set_optimizer_lr)
from utils.errors import SSTNetError


# ------------------------------------------------------------------------------------------------ lr scaling
def test_scaled_lrs_sgd_released_recipe_and_bounds():
    lr, min_lr = scaled_lrs(1e-2, 1e-4, 4, "sgd")  # batch 4 of 64
    assert lr == pytest.approx(6.25e-4) and min_lr == pytest.approx(6.25e-6)
    assert scaled_lrs(1e-2, 1e-4, 1, "sgd") == pytest.approx((5e-4, 5e-6))  # raised to the lower bounds
    assert scaled_lrs(1e-2, 1e-4, 1024, "sgd") == pytest.approx((5e-2, 5e-4))  # capped at the upper bounds


def test_scaled_lrs_adam_bounds_and_unknown_optimizer():
    assert scaled_lrs(1e-3, 1e-5, 4, "adam") == pytest.approx((3e-4, 3e-6))
    assert scaled_lrs(1e-2, 1e-4, 64, "adam") == pytest.approx((1e-3, 1e-5))
    with pytest.raises(SSTNetError):
        scaled_lrs(1e-2, 1e-4, 4, "rmsprop")


# ---------------------------------------------------------------------------------------------- lr schedule
LR, MIN_LR = 6.25e-4, 6.25e-6


def test_schedule_for_100_epochs():
    # E = 100: warm-up 3 epochs from 0.1·lr, cosine over epochs 3..95 (92 epochs), min lr from epoch 95.
    start = 0.1 * LR
    assert lr_at_epoch(0, 100, LR, MIN_LR) == pytest.approx(start)
    assert lr_at_epoch(1, 100, LR, MIN_LR) == pytest.approx(start + (LR - start) / 9)
    assert lr_at_epoch(3, 100, LR, MIN_LR) == pytest.approx(LR)  # end of warm-up
    assert lr_at_epoch(49, 100, LR, MIN_LR) == pytest.approx((LR + MIN_LR) / 2)  # half-way through the cosine
    assert lr_at_epoch(26, 100, LR, MIN_LR) == pytest.approx(
        MIN_LR + (LR - MIN_LR) * (1 + math.cos(math.pi / 4)) / 2)
    assert lr_at_epoch(94, 100, LR, MIN_LR) == pytest.approx(
        MIN_LR + (LR - MIN_LR) * (1 + math.cos(math.pi * 91 / 92)) / 2)
    assert all(lr_at_epoch(epoch, 100, LR, MIN_LR) == MIN_LR for epoch in range(95, 100))


def test_schedule_edge_cases_of_few_epochs():
    # E = 1 and 2: warm-up and tail are 1 epoch each; the warm-up test comes first.
    assert lr_at_epoch(0, 1, LR, MIN_LR) == pytest.approx(0.1 * LR)
    assert lr_at_epoch(1, 2, LR, MIN_LR) == pytest.approx(LR)
    # E = 10: warm-up 1, tail 1 → cosine over epochs 1..9.
    assert lr_at_epoch(5, 10, LR, MIN_LR) == pytest.approx((LR + MIN_LR) / 2)
    assert lr_at_epoch(9, 10, LR, MIN_LR) == MIN_LR
    # E = 30: fractional warm-up and tail of 1.5 epochs.
    assert lr_at_epoch(1, 30, LR, MIN_LR) == pytest.approx(0.1 * LR + 0.9 * LR / 2.25)
    assert lr_at_epoch(2, 30, LR, MIN_LR) == pytest.approx(
        MIN_LR + (LR - MIN_LR) * (1 + math.cos(math.pi * 0.5 / 27)) / 2)
    assert lr_at_epoch(28, 30, LR, MIN_LR) > MIN_LR and lr_at_epoch(29, 30, LR, MIN_LR) == MIN_LR
    # E = 400: warm-up capped at 3 epochs, tail at 15.
    assert lr_at_epoch(3, 400, LR, MIN_LR) == pytest.approx(LR)
    assert lr_at_epoch(384, 400, LR, MIN_LR) > MIN_LR and lr_at_epoch(385, 400, LR, MIN_LR) == MIN_LR
    # The warm-up start never drops below 1e-6.
    assert lr_at_epoch(0, 100, 5e-6, 1e-7) == pytest.approx(1e-6)
    with pytest.raises(SSTNetError):
        lr_at_epoch(0, 0, LR, MIN_LR)


@pytest.mark.parametrize("total", [1, 2, 5, 21, 60, 100, 333])
def test_schedule_stays_in_range_and_decreases_after_warmup(total):
    rates = [lr_at_epoch(epoch, total, LR, MIN_LR) for epoch in range(total)]
    assert all(MIN_LR <= rate <= LR * (1 + 1e-12) for rate in rates)
    peak = rates.index(max(rates))
    assert all(later <= earlier for earlier, later in zip(rates[peak:], rates[peak + 1:]))


def test_set_optimizer_lr_sets_every_group():
    optimizer = build_optimizer(nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)), lr=0.1)
    set_optimizer_lr(optimizer, 0.0123)
    assert [group["lr"] for group in optimizer.param_groups] == [0.0123] * len(optimizer.param_groups)


# --------------------------------------------------------------------------------------------------------- EMA
def test_ema_follows_its_formula_for_params_and_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = ModelEMA(model, decay=0.9, tau=2.0)
    expected = {key: value.clone() for key, value in model.state_dict().items()}
    for step in range(1, 4):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter))
        model.train()(torch.randn(8, 3))  # moves the BatchNorm running statistics and counter
        ema.update(model)
        keep = 0.9 * (1 - math.exp(-step / 2.0))
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                expected[key] = keep * expected[key] + (1 - keep) * value
    ema_state = ema.ema.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(ema_state[key], value)
    assert ema_state["1.num_batches_tracked"].item() == 0  # integer buffers are not averaged
    assert model.state_dict()["1.num_batches_tracked"].item() == 3
    assert ema.updates == 3 and not ema.ema.training
    assert not any(parameter.requires_grad for parameter in ema.ema.parameters())


def test_ema_state_dict_round_trip_and_resume_count():
    model = nn.Linear(2, 2)
    ema = ModelEMA(model, updates=7)
    ema.update(model)
    restored = ModelEMA(nn.Linear(2, 2))
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 8
    torch.testing.assert_close(restored.ema.weight, ema.ema.weight)
    assert ema.decay(8) == pytest.approx(0.9999 * (1 - math.exp(-8 / 2000)))


# --------------------------------------------------------------------------------------------- initialisation
def test_init_weights_normal():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 128, 3), nn.BatchNorm2d(4096), nn.Linear(3, 3))
    conv_bias, linear_weight = model[0].bias.clone(), model[2].weight.clone()
    init_weights(model)
    conv, bn = model[0].weight, model[1]
    assert abs(conv.mean().item()) < 1e-3 and conv.std().item() == pytest.approx(0.02, rel=0.02)
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=2e-3)
    assert bn.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.equal(bn.bias, torch.zeros(4096))
    assert torch.equal(model[0].bias, conv_bias)  # the release leaves conv biases as PyTorch made them
    assert torch.equal(model[2].weight, linear_weight)
    with pytest.raises(SSTNetError):
        init_weights(model, "uniform")


# ------------------------------------------------------------------------------------------- optimizer groups
class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=True)
        self.norm = nn.BatchNorm2d(4)
        self.scale = nn.Parameter(torch.tensor(0.25))
        self.attention = nn.MultiheadAttention(8, 2)
        self.bn_proj = nn.Linear(4, 4)  # a "bn" in the name makes the release treat it as a BatchNorm


def ids(parameters) -> set[int]:
    return {id(parameter) for parameter in parameters}


def test_parameter_groups_follow_the_release():
    toy = Toy()
    groups = {group["name"]: group for group in build_optimizer(toy, lr=0.01).param_groups}
    assert set(groups) == {"no_decay", "decay", "bias"}
    assert ids(groups["decay"]["params"]) == ids([toy.conv.weight, toy.attention.out_proj.weight])
    assert ids(groups["no_decay"]["params"]) == ids([toy.norm.weight, toy.bn_proj.weight])
    assert ids(groups["bias"]["params"]) == ids([toy.conv.bias, toy.norm.bias, toy.attention.out_proj.bias,
                                                toy.bn_proj.bias])
    assert groups["decay"]["weight_decay"] == 5e-4
    assert groups["no_decay"]["weight_decay"] == 0 and groups["bias"]["weight_decay"] == 0
    grouped = set().union(*(ids(group["params"]) for group in groups.values()))
    left_out = ids(toy.parameters()) - grouped
    assert left_out == ids([toy.scale, toy.attention.in_proj_weight, toy.attention.in_proj_bias])


def test_include_all_params_adds_the_rest():
    toy = Toy()
    groups = parameter_groups(toy, include_all_params=True)
    assert ids(groups["decay"]) == ids([toy.conv.weight, toy.attention.out_proj.weight,
                                        toy.attention.in_proj_weight])
    assert ids(groups["no_decay"]) == ids([toy.norm.weight, toy.bn_proj.weight, toy.scale,
                                           toy.attention.in_proj_bias])
    every = [parameter for group in groups.values() for parameter in group]
    assert len(every) == len(ids(every)) == len(list(toy.parameters()))


def test_optimizer_kinds_and_hyper_parameters():
    sgd = build_optimizer(Toy(), "sgd", lr=0.01, weight_decay=1e-3)
    assert isinstance(sgd, torch.optim.SGD)
    assert all(group["nesterov"] and group["momentum"] == 0.937 and group["lr"] == 0.01
               for group in sgd.param_groups)
    assert [group["weight_decay"] for group in sgd.param_groups] == [0.0, 1e-3, 0.0]
    adam = build_optimizer(Toy(), "adam", lr=0.001, momentum=0.9)
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["betas"] == (0.9, 0.999)
    with pytest.raises(SSTNetError):
        build_optimizer(Toy(), "lamb", lr=0.01)


def test_optimizer_trains_only_grouped_parameters():
    toy = Toy()
    optimizer = build_optimizer(toy, lr=0.1)
    scale_before = toy.scale.detach().clone()
    conv_before = toy.conv.weight.detach().clone()
    (toy.conv.weight.sum() + toy.scale).backward()
    optimizer.step()
    assert torch.equal(toy.scale, scale_before)
    assert not torch.equal(toy.conv.weight, conv_before)


# ------------------------------------------------------------------------------------------ step lr schedule
def test_step_schedule_values_for_100_epochs():
    # The release's step schedule: rate (min/lr)^(1/9), applied every 100/10 = 10 epochs; no warm-up.
    rate = (MIN_LR / LR) ** (1 / 9)
    assert rate == pytest.approx(0.01 ** (1 / 9))
    for epoch, drops in ((0, 0), (9, 0), (10, 1), (19, 1), (20, 2), (55, 5), (89, 8), (90, 9), (99, 9)):
        assert lr_at_epoch(epoch, 100, LR, MIN_LR, "step") == pytest.approx(LR * rate ** drops), epoch
    assert lr_at_epoch(99, 100, LR, MIN_LR, "step") == pytest.approx(MIN_LR)


def test_step_schedule_with_fractional_steps_and_too_few_epochs():
    # E = 25: steps of 2.5 epochs, so the drops come at epochs 3, 5, 8, 10, 13, 15, 18, 20, 23.
    rates = [lr_at_epoch(epoch, 25, LR, MIN_LR, "step") for epoch in range(25)]
    drops = [round(math.log(rate / LR) / math.log((MIN_LR / LR) ** (1 / 9))) for rate in rates]
    assert drops == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 5, 5, 6, 6, 6, 7, 7, 8, 8, 8, 9, 9]
    assert lr_at_epoch(9, 10, LR, MIN_LR, "step") == pytest.approx(MIN_LR)
    with pytest.raises(SSTNetError, match="at least 10 epochs"):
        lr_at_epoch(0, 9, LR, MIN_LR, "step")
    with pytest.raises(SSTNetError, match="lr decay 'linear'"):
        lr_at_epoch(0, 100, LR, MIN_LR, "linear")


def test_command_line_schedule_choices_match_nets():
    from nets.training import LR_DECAYS, STEP_DECAY_STEPS
    from utils.train.config import LR_DECAY_CHOICES
    from utils.train.config import STEP_DECAY_STEPS as CLI_STEPS
    assert LR_DECAY_CHOICES == LR_DECAYS and CLI_STEPS == STEP_DECAY_STEPS


def test_set_requires_grad_freezes_and_unfreezes_a_module():
    from nets.training import set_requires_grad
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Conv2d(2, 1, 1))
    set_requires_grad(model[:2], False)
    assert [p.requires_grad for p in model.parameters()] == [False, False, False, False, True, True]
    set_requires_grad(model[:2], True)
    assert all(p.requires_grad for p in model.parameters())
