"""summary.py and utils/runtime/complexity.py: parameters and GFLOPs per part add up to the model's totals, and the
totals are
the benchmark's figures for the same configuration."""
import copy
import json

import pytest
import torch
from conftest import assert_clean_error, run_script

from nets import Network
from utils.model_spec import ModelSpec
from utils.runtime.complexity import OTHER, parameters_by_part, stream_frame_flops, training_forward_flops, window_flops

TINY = ["--phi", "nano", "--lstm-hidden", "8", "--input-size", "64", "--device", "cpu"]


def load_bench():
    import benchmarks.measure
    return benchmarks.measure


@pytest.mark.parametrize("computation", ["fast", "released"])
def test_parts_add_up_to_the_totals(computation):
    model = Network(1, 3, "nano", lstm_hidden=8, computation=computation)
    parameters = parameters_by_part(model)
    assert sum(parameters.values()) == sum(p.numel() for p in model.parameters())
    assert all(count > 0 for count in parameters.values())
    inference = window_flops(model, (64, 96), 3)
    training = training_forward_flops(model, (64, 96), 3)
    for count in (inference, training):
        assert count.by_part[OTHER] == 0 and sum(count.by_part.values()) == count.total > 0
        assert count.by_part["backbone"] > 0 and count.by_part["neck"] > 0 and count.by_part["head"] > 0
    # The motion branch runs in training only; everything else costs the same in both.
    assert inference.by_part["motion branch"] == 0 < training.by_part["motion branch"]
    assert {part: training.by_part[part] for part in ("backbone", "neck", "head")} == \
           {part: inference.by_part[part] for part in ("backbone", "neck", "head")}
    # Streaming: one frame through the backbone instead of three.
    assert stream_frame_flops(model, (64, 96), 3).total < inference.total
    assert model.training  # the counts leave the model as they found it


def test_training_forward_count_leaves_batchnorm_statistics_alone():
    model = Network(1, 3, "nano", lstm_hidden=8).eval()
    before = copy.deepcopy(model.state_dict())
    training_forward_flops(model, (64, 64), 3)
    assert not model.training
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


@pytest.mark.parametrize("computation", ["fast", "released"])
def test_summary_totals_are_the_bench_figures(tmp_path, computation):
    out = tmp_path / "summary.json"
    result = run_script("summary.py", *TINY, "--computation", computation, "--json", out)
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())
    parts = ("backbone", "neck", "head", "motion branch")
    for table in ("parameters", "flops/inference_window", "flops/training_forward"):
        section = figures
        for key in table.split("/"):
            section = section[key]
        assert sum(section[part] for part in parts) == section["total"], table
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[2:6]] == ["backbone", "neck", "head", "motion"]
    assert lines[6].startswith("total") and f"{figures['parameters']['total']:,}" in lines[6]

    bench = load_bench()
    spec = ModelSpec(phi="nano", num_frame=5, input_shape=64, lstm_hidden=8, device="cpu")
    model = Network(1, 5, "nano", lstm_hidden=8)
    models = {"released": copy.deepcopy(model).set_computation("released"), "fast": model.set_computation("fast")}
    counts = bench.flop_counts(models, torch.device("cpu"), spec)
    assert figures["parameters"]["total"] == sum(p.numel() for p in model.parameters())  # the bench's "params"
    if computation == "released":
        assert figures["flops"]["inference_window"]["total"] / 1e9 == counts["window_released"]
    else:
        assert figures["flops"]["stream_per_frame"]["total"] / 1e9 == counts["stream_per_frame"]


def test_summary_of_weights_takes_their_model(tmp_path):
    weights = tmp_path / "tiny.pth"
    torch.save(Network(2, 3, "nano", lstm_hidden=8).state_dict(), weights)
    from_weights = run_script("summary.py", "--weights", weights, "--input-size", "64", "--device", "cpu")
    from_flags = run_script("summary.py", *TINY, "--num-frame", "3", "--num-classes", "2")
    assert from_weights.returncode == 0 and from_flags.returncode == 0, from_weights.stderr + from_flags.stderr
    assert "phi nano, 3 frames, input 64x64, 2 classes" in from_weights.stdout
    assert from_weights.stdout == from_flags.stdout
    assert_clean_error(run_script("summary.py", "--weights", weights, "--num-frame", "5"), "--num-frame 5",
                       "holds a model with --num-frame 3")
    assert_clean_error(run_script("summary.py", "--weights", weights, "--num-classes", "1"), "--num-classes 1")
    assert_clean_error(run_script("summary.py", "--num-classes", "0"), "--num-classes 0")
