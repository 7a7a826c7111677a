"""Gradient flow in training mode: everything on a path to (detections + motion loss) gets a finite, non-zero
gradient; the parts that cannot reach the loss (docs/design.md, Motion branch) get none."""
import torch

from nets.sstnet import Network


def gradients(model, x):
    model.train()
    (out,), motion_loss = model(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    ((out * weights).sum() + motion_loss).backward()
    return {name: p.grad for name, p in model.named_parameters()}


def check(grads, expected_none, may_be_zero=frozenset()):
    """Exactly ``expected_none`` get no gradient; every other one is finite and non-zero somewhere, except those
    in ``may_be_zero`` (on the graph, but possibly with an all-zero gradient)."""
    assert expected_none | may_be_zero <= set(grads), sorted((expected_none | may_be_zero) - set(grads))
    assert sorted(name for name, g in grads.items() if g is None) == sorted(expected_none)
    for name, grad in grads.items():
        if grad is not None:
            assert torch.isfinite(grad).all(), name
    zero = {name for name, grad in grads.items() if grad is not None and not grad.abs().sum() > 0}
    assert sorted(zero - may_be_zero) == []


def attention_and_motion_gates(cell):
    prefix = f"SSTNet.cell_list.{cell}."
    names = [f"{attention}.{p}" for attention in ("past_attention", "future_attention")
             for p in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")]
    names += ["mm1.weight", "mm2.weight", "motion.0.weight", "motion.0.bias"]
    return {prefix + name for name in names}


def test_released_config_gradients():
    torch.manual_seed(0)
    model = Network()
    grads = gradients(model, torch.randn(2, 3, 5, 64, 64))
    # 1 slice: the attention and motion gates never reach h'; mapping0 is unused; the last neck scalar too.
    expected_none = attention_and_motion_gates("00") | {"mapping0.0.weight", "neck.weight.4"}
    assert len(expected_none) == 14
    check(grads, expected_none)


def test_motion_state_crosses_slices_and_layers():
    # With 2 slices × 2 layers only the last node's gates are dead ends: node 00's motion state is node 01's
    # head input and node 10's motion state input, and so on.
    torch.manual_seed(0)
    model = Network(num_frame=3, phi="nano", lstm_hidden=8, lstm_slices=2, lstm_layers=2)
    # nn.MultiheadAttention starts with zero biases; give them values so that zero motion states do not turn
    # the slice-0 attention outputs (and with them every attention gradient there) into exact zeros.
    for name, p in model.named_parameters():
        if "attention" in name and name.endswith("bias"):
            torch.nn.init.normal_(p, std=0.1)
    grads = gradients(model, torch.randn(2, 3, 3, 64, 64))
    # In slice 0 the motion state is zero, so the past attention's keys and values are the same for every token
    # and its output hardly depends on its projection weights: their gradient is zero up to rounding and dropout.
    check(grads, attention_and_motion_gates("11") | {"mapping0.0.weight", "neck.weight.2"},
          {"SSTNet.cell_list.00.past_attention.in_proj_weight", "SSTNet.cell_list.01.past_attention.in_proj_weight"})
