"""ONNX export and the ONNX Runtime backend: the graphs compute what PyTorch computes (raw outputs on random and real
DAUB frames), the engine on ONNX Runtime detects what it detects on PyTorch, through the real command lines, and
bad input is refused in one line."""
import json
import shutil
import sys

import numpy as np
import pytest
import torch
from conftest import assert_clean_error, calibrated_tiny_model, run_script

from nets import Network

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from utils.data.images import read_frame  # noqa: E402
from utils.data.preprocess import preprocess_frame  # noqa: E402
from utils.deploy.onnx_backend import OnnxBackend  # noqa: E402
from utils.deploy.onnx_export import export_graphs, max_relative_difference  # noqa: E402
from utils.deploy.onnx_format import GRAPHS, ExportedGraph  # noqa: E402
from utils.errors import SSTNetError  # noqa: E402
from utils.infer.engine import SequenceDetector, TorchBackend  # noqa: E402
from utils.infer.sources import frame_batches, plan_sequence_walk  # noqa: E402
from utils.model_spec import ModelSpec  # noqa: E402

T, SIZE, SHAPE = 3, "64x96", (64, 96)  # three frames and a non-square input: nothing hides behind the defaults
TOLERANCE = 1e-4  # the bound on max |ONNX − PyTorch| / max |PyTorch| in float32


def calibrated_model() -> Network:
    """The calibrated tiny model with YOLOX's head prior, so that scores spread around 0.25 and the engine finds
    boxes at any threshold used here."""
    model = calibrated_tiny_model(1, T, SHAPE)
    model.head.initialize_biases(0.5)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return calibrated_model()


@pytest.fixture(scope="module")
def weights(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def exported(weights, tmp_path_factory):
    """The three graphs written by export_onnx.py (batch 1, the default)."""
    out = tmp_path_factory.mktemp("onnx")
    result = run_script("export_onnx.py", "--weights", weights, "--out", out, "--input-size", SIZE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("within") == 3, result.stdout
    return out


@pytest.fixture(scope="module")
def dynamic(model, tmp_path_factory):
    """The two streaming graphs with a dynamic batch axis, exported in-process."""
    out = tmp_path_factory.mktemp("onnx_dynamic")
    spec = ModelSpec(phi="nano", num_frame=T, input_shape=SHAPE, lstm_hidden=8)
    written = export_graphs(model, spec, 1, ["target"], out, dynamic_batch=True, graphs=("frame", "detect"))
    assert [item.graph for item in written] == ["frame", "detect"]
    return out


def real_frames(daub_real, count):
    """The first ``count`` frames of test clip data5, letterboxed and normalised: count×3×64×96."""
    folder = daub_real / "images" / "test" / "data5"
    return torch.from_numpy(np.stack([preprocess_frame(read_frame(folder / f"{n}.bmp"), SHAPE)[0]
                                      for n in range(count)]))


def random_frames(count):
    return torch.randn(count, 3, *SHAPE, generator=torch.Generator().manual_seed(7))


def assert_graphs_match_pytorch(model, backend, frames):
    """frame.onnx → detect.onnx and window.onnx against PyTorch on windows of ``frames`` (oldest first)."""
    torch_backend = TorchBackend(model.set_computation("fast"))
    with torch.no_grad():
        features = backend.frame_features(frames)
        expected_features = torch_backend.frame_features(frames)
        assert max_relative_difference(features, expected_features) <= TOLERANCE
        windows = [list(range(k, k + T)) for k in range(len(frames) - T + 1)]
        slots = [features[[window[t] for window in windows]] for t in range(T)]
        output = backend.detect(slots)
        expected = torch_backend.detect([expected_features[[window[t] for window in windows]] for t in range(T)])
        assert output.shape == (len(windows), 6, 8, 12)
        assert max_relative_difference(output, expected) <= TOLERANCE
        # The check means something: the windows give clearly different outputs.
        assert max_relative_difference(expected[0], expected[-1]) > 0.01
        stacked = torch.stack([frames[window] for window in windows]).transpose(1, 2)
        assert max_relative_difference(backend.window(stacked), model.set_computation("released")(stacked)[0]) \
            <= TOLERANCE


def test_graphs_carry_their_metadata_and_names(exported):
    import onnx
    for graph in GRAPHS:
        proto = onnx.load(str(exported / f"{graph}.onnx"))
        props = {entry.key: entry.value for entry in proto.metadata_props}
        info = ExportedGraph.from_metadata(props, graph)
        assert (info.graph, info.phi, info.num_frame, info.input_shape, info.class_names, info.batch) == \
               (graph, "nano", T, SHAPE, ("target",), 1)
        assert info.computation == ("released" if graph == "window" else "fast")  # window.onnx as released
        assert props["stride"] == "8" and json.loads(props["mean"]) == [0.485, 0.456, 0.406]
        assert json.loads(props["std"]) == [0.229, 0.224, 0.225] and props["pad_value"] == "128"
        assert "exp(p2)" in props["decode"] and "bicubic" in props["letterbox"] and props["commit"]
        inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
        outputs = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in proto.graph.output}
        if graph == "frame":
            assert inputs == {"images": [1, 3, 64, 96]} and outputs == {"features": [1, 192, 8, 12]}
        elif graph == "detect":
            assert inputs == {f"features_{t}": [1, 192, 8, 12] for t in range(T)}
            assert outputs == {"output": [1, 6, 8, 12]}
        else:
            assert inputs == {"window": [1, 3, T, 64, 96]} and outputs == {"output": [1, 6, 8, 12]}
        assert not [node for node in proto.graph.initializer if "mapping" in node.name or "SSTNet" in node.name]


@pytest.mark.parametrize("source", ["random", "real"])
def test_graphs_compute_what_pytorch_computes(model, exported, dynamic, daub_real, source):
    frames = random_frames(6) if source == "random" else real_frames(daub_real, 6)
    assert_graphs_match_pytorch(model, OnnxBackend(exported, ("stream", "window"), "cpu", 1), frames)
    dynamic_backend = OnnxBackend(dynamic, ("stream",), "cpu", 1)
    torch_backend = TorchBackend(model.set_computation("fast"))
    with torch.no_grad():
        assert max_relative_difference(dynamic_backend.frame_features(frames), torch_backend.frame_features(frames)) \
            <= TOLERANCE


@pytest.mark.parametrize("graphs,engine", [("exported", "stream"), ("exported", "window"), ("dynamic", "stream")])
def test_the_engine_walks_the_same_on_both_backends(model, exported, dynamic, daub_real, graphs, engine):
    """Sequence starts (cache reset, clamped windows) and batches of 4 frames, on two real clips."""
    from utils.data.annotations import FrameRecord
    records = [FrameRecord(daub_real / "images" / "test" / clip / f"{n}.bmp", np.zeros((0, 5), np.float32))
               for clip, numbers in (("data5", range(6)), ("data6", (0, 1, 7))) for n in numbers]
    plan = plan_sequence_walk(records, T)
    folder = exported if graphs == "exported" else dynamic
    model.set_computation("fast" if engine == "stream" else "released")
    outputs = {}
    for name, backend in (("onnx", OnnxBackend(folder, (engine,), "cpu", 1)), ("torch", TorchBackend(model))):
        detector = SequenceDetector(backend, T, engine)
        outputs[name] = [item.output for batch in frame_batches(plan, SHAPE, 4, 0) for item in detector.process(batch)]
    assert len(outputs["onnx"]) == len(outputs["torch"]) == 9
    for ours, theirs in zip(outputs["onnx"], outputs["torch"]):
        assert max_relative_difference(ours, theirs) <= TOLERANCE


def detections_above(path, conf):
    by_image = {}
    for row in json.loads(path.read_text()):
        if row["score"] >= conf:
            by_image.setdefault(row["image_id"], []).append((*row["bbox"], row["score"]))
    return {image: np.array(sorted(rows)) for image, rows in by_image.items()}


def test_evaluation_on_onnx_runtime_scores_the_same(weights, exported, daub_real, tmp_path):
    metrics = {}
    for name, source in (("torch", ["--weights", weights, "--input-size", SIZE]), ("onnx", ["--onnx", exported])):
        result = run_script("vid_map_coco.py", *source, "--data-root", daub_real, "--out-dir", tmp_path / name,
                            "--batch-size", "4", "--workers", "0", "--quiet")
        assert result.returncode == 0, result.stderr
        metrics[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert "on ONNX Runtime" in result.stdout
    for key in ("mAP50", "precision", "recall", "f1"):
        assert metrics["onnx"][key] == pytest.approx(metrics["torch"][key], abs=0.05), key
    torch_rows = detections_above(tmp_path / "torch" / "detections.json", 0.05)
    onnx_rows = detections_above(tmp_path / "onnx" / "detections.json", 0.05)
    assert onnx_rows.keys() == torch_rows.keys() and len(torch_rows) == 200
    for image, rows in torch_rows.items():
        assert onnx_rows[image].shape == rows.shape, image
        np.testing.assert_allclose(onnx_rows[image], rows, rtol=1e-4, atol=1e-3)


def test_prediction_on_onnx_runtime_finds_the_same(weights, exported, daub_real, tmp_path):
    folder = daub_real / "images" / "test" / "data6"
    counts = {}
    for name, source in (("torch", ["--weights", weights, "--input-size", SIZE]), ("onnx", ["--onnx", exported])):
        result = run_script("vid_predict.py", "--mode", "dir", *source, "--source", folder, "--out", tmp_path / name,
                            "--count", "--conf", "0.3", "--workers", "0", "--quiet")
        assert result.returncode == 0, result.stderr
        counts[name] = [line for line in result.stdout.splitlines() if line.startswith(str(folder))]
        assert len(list((tmp_path / name).glob("*.png"))) == 100
    assert counts["onnx"] == counts["torch"] and len(counts["torch"]) == 100
    assert any("none" not in line for line in counts["torch"])
    result = run_script("vid_predict.py", "--mode", "fps", "--onnx", exported, "--source", folder, "--fps-frames", "6",
                        "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert "on ONNX Runtime" in result.stdout and "streaming speed-up" in result.stdout


# ------------------------------------------------------------------------------------------------- refusals
# One refusal of each script goes through the command line (one `error:` line, no traceback); the others call the
# scripts' main() in-process, where run_cli would turn the same SSTNetError into that line.
def evaluate_in_process(daub_real, tmp_path, *argv):
    import vid_map_coco
    return vid_map_coco.main(["--data-root", str(daub_real), "--out-dir", str(tmp_path / "o"), "--workers", "0",
                              "--quiet", *map(str, argv)])


def export_in_process(*argv):
    import export_onnx
    return export_onnx.main(list(map(str, argv)))


def test_exactly_one_of_weights_and_onnx(weights, exported, daub_real, tmp_path):
    result = run_script("vid_map_coco.py", "--data-root", daub_real, "--out-dir", tmp_path / "o")
    assert_clean_error(result, "--weights / --onnx / --detections: give exactly one")
    result = run_script("vid_predict.py", "--source", daub_real / "images/test/data5/3.bmp",
                        "--out", tmp_path / "p.png")
    assert_clean_error(result, "--weights / --onnx: give exactly one")
    with pytest.raises(SSTNetError, match="exactly one"):
        evaluate_in_process(daub_real, tmp_path, "--weights", weights, "--onnx", exported)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv,fragment", [
    (["--phi", "s"], r"--phi s: .* \(ONNX metadata\) holds a model with --phi nano"),
    (["--num-frame", "5"], "--num-frame 5: .* --num-frame 3"),
    (["--input-size", "64"], "--input-size 64: the graphs in .* take 64x96"),
    (["--computation", "released"], "--computation released: .* compute the fast computation"),
    (["--amp", "bf16"], "--amp bf16: the ONNX graphs fix their precision"),
    (["--compile", "default"], "--compile default: torch.compile applies to --weights"),
    (["--device", "cuda"], "--device cuda: this onnxruntime has no CUDA provider"),
])
def test_flags_contradicting_the_graphs(exported, daub_real, tmp_path, argv, fragment):
    if "cuda" in argv and "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    with pytest.raises(SSTNetError, match=fragment):
        evaluate_in_process(daub_real, tmp_path, "--onnx", exported, *argv)


def test_broken_export_folders(exported, dynamic, daub_real, tmp_path):
    assert_clean_error(run_script("vid_map_coco.py", "--onnx", tmp_path / "none", "--data-root", daub_real,
                                  "--out-dir", tmp_path / "o"), "none: not a folder")
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(exported / "frame.onnx", partial)
    for damage, fragment in ((lambda: None, "detect.onnx is missing"),
                             (lambda: shutil.copy(dynamic / "detect.onnx", partial), "come from different exports"),
                             (lambda: (partial / "detect.onnx").write_bytes(b"not a model"),
                              "detect.onnx: not a loadable ONNX model"),
                             (lambda: shutil.copy(exported / "frame.onnx", partial / "detect.onnx"),
                              "detect.onnx: its metadata says it is the frame graph")):
        damage()
        with pytest.raises(SSTNetError, match=fragment):
            OnnxBackend(partial, ("stream",), "cpu", 1)


def test_export_refusals(weights, tmp_path, monkeypatch):
    out = tmp_path / "out"
    if not torch.cuda.is_available():
        assert_clean_error(run_script("export_onnx.py", "--weights", weights, "--out", out, "--half"),
                           "--half", "no CUDA device")
    with pytest.raises(SSTNetError, match=r"--opset 13: must lie in \[17, "):
        export_in_process("--weights", weights, "--out", out, "--opset", "13")
    with pytest.raises(SSTNetError, match="--amp bf16"):
        export_in_process("--weights", weights, "--out", out, "--amp", "bf16")
    with pytest.raises(SSTNetError, match="none.pth"):
        export_in_process("--weights", tmp_path / "none.pth", "--out", out)
    for package in ("onnx", "onnxscript", "onnxruntime"):
        with monkeypatch.context() as hidden:
            hidden.setitem(sys.modules, package, None)  # as if not installed
            with pytest.raises(SSTNetError, match=f"export_onnx.py: needs the Python package {package}, which is "
                                                  "not installed; pip install"):
                export_in_process("--weights", weights, "--out", out)
    assert not out.exists() or not list(out.iterdir())


def test_a_missing_onnxruntime_is_one_error_line(exported, daub_real, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(SSTNetError, match="--onnx: needs the Python package onnxruntime"):
        evaluate_in_process(daub_real, tmp_path, "--onnx", exported)
