"""The benchmark script runs end to end on a tiny configuration and writes its report (figures not asserted)."""
import json
import subprocess
import sys

from conftest import REPO


def test_benchmark_smoke(tmp_path):
    out, report = tmp_path / "bench.json", tmp_path / "bench.md"
    result = subprocess.run([sys.executable, "benchmarks/bench.py", "--phi", "nano", "--input-size", "64",
                             "--repeats", "1", "--frames", "3", "--out", str(out), "--markdown", str(report)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    (device, entry), = json.loads(out.read_text()).items()
    assert device.startswith("CPU")
    # The ONNX Runtime row is there when its packages are (requirements-dev.txt), checked against PyTorch.
    onnx = entry["onnxruntime"] is not None
    assert set(entry["inference"]["64"]) == {"window", "stream"} | ({"stream_onnx", "stream_onnx_int8"} if onnx
                                                                     else set())
    assert not onnx or any("ONNX Runtime streaming raw outputs within" in check for check in entry["checks"])
    assert not onnx or any("int8 graphs (calibrated on" in check for check in entry["checks"])
    assert set(entry["train_step"]["64"]) == {"released", "ours"}
    assert entry["params"] > 0 and entry["peak_mem_mb"] > 0 and entry["gflops"]["64"]["window_released"] > 0
    assert any("identical" in check for check in entry["checks"])
    assert "| 64 |" in report.read_text()
    evaluation = entry["evaluation"]
    engines = ("", "int8_") if onnx else ("",)
    assert all(0 <= evaluation[f"{prefix}outside_model_batch{batch}"] < 1
               and evaluation[f"{prefix}model_batch{batch}"] > 0 for prefix in engines for batch in (1, 8))
    # vid_predict.py --mode video end to end on an mp4 of the test frames (3 frames asked, 4 x 3 walked).
    video = evaluation["video"]
    assert video["frames"] == 12 and video["end_to_end"] > 0 and 0 <= video["outside"] < 1
    assert "share outside the model" in report.read_text() and "| vid_predict.py --mode video" in report.read_text()
    assert ("ONNX Runtime int8 | 8 |" in report.read_text()) == onnx
    # The distance to the limit: the dominant convolution found and timed, each engine a fraction of its rate.
    limit = entry["limits"]["64"]
    assert "conv" in limit["op"] and limit["conv_float32"] > 0 and limit["gemm_float32"] > 0
    assert ("conv_int8" in limit) == onnx
    assert limit["others"] and all("conv" in other["op"] and other["conv_float32"] > 0 for other in limit["others"])
    assert "fraction of the best conv rate in its precision" in report.read_text()
    assert "| PyTorch streaming float32 |" in report.read_text()
    assert ("## ONNX Runtime" in report.read_text()) == onnx
    assert ("int8 / float32 speed-up" in report.read_text()) == onnx


def test_benchmark_amp_variants(tmp_path):
    """--amp adds our mixed-precision training step; --variants times both layouts, each compared with float32."""
    out, report = tmp_path / "bench.json", tmp_path / "bench.md"
    result = subprocess.run([sys.executable, "benchmarks/bench.py", "--phi", "nano", "--input-size", "64",
                             "--repeats", "1", "--frames", "3", "--no-onnx", "--amp", "bf16", "--variants",
                             "--out", str(out), "--markdown", str(report)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    (key, entry), = json.loads(out.read_text()).items()
    assert key == f"{entry['device']}, --amp bf16"
    assert set(entry["train_step"]["64"]) == {"released", "ours", "ours_bf16"}
    assert {"stream_bf16", "window_bf16"} <= set(entry["inference"]["64"])
    rows = entry["variants"]["rows"]
    assert [(row["channels_last"], row["compile"]) for row in rows] == [(False, "off"), (True, "off")]
    assert all(row["stream_ms"] > 0 and row["train_step_s"] > 0 for row in rows)
    layouts = [check for check in entry["checks"] if "of float32 eager's" in check]
    assert len(layouts) == 2 and all("streaming in bfloat16" in check for check in layouts)
    text = report.read_text()
    assert text.startswith(f"# Benchmark: {key}") and "## Layout and torch.compile at S = 64 (bf16, ours)" in text


def test_loader_benchmark(tmp_path, daub_real):
    """benchmarks/loader.py times a real training step's wait for data and its compute, per worker count."""
    out = tmp_path / "loader.json"
    result = subprocess.run([sys.executable, "benchmarks/loader.py", "--steps", "3", "--warmup", "1",
                             "--worker-counts", "0", "1", "--json", str(out), "--", "--data-root", str(daub_real),
                             "--input-size", "64", "--phi", "nano", "--lstm-hidden", "8", "--batch-size", "2"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    workers = json.loads(out.read_text())["workers"]
    assert set(workers) == {"0", "1"}
    assert all(row["compute_s"] > 0 and 0 <= row["wait_share"] < 1 for row in workers.values())
    assert result.stdout.count("of the step waits") == 2
