"""The inference engine: walk plans, and streaming equal to the released window computation."""
import numpy as np
import pytest
import torch
from conftest import calibrated_tiny_model, moving_sequence, write_frames
from parity_recipe import relative_error

from utils.data.annotations import FrameRecord
from utils.infer.engine import DetectSettings, SequenceDetector, TorchBackend, detect_plan
from utils.infer.sources import frame_batches, plan_sequence_walk


def records(folder, numbers):
    return [FrameRecord(folder / f"{n}.bmp", np.zeros((0, 5), np.float32), image_id=n) for n in numbers]


def test_plan_reads_each_needed_frame_once_with_clamped_windows(tmp_path):
    write_frames(tmp_path / "a", range(12))
    write_frames(tmp_path / "b", range(5))
    plan = plan_sequence_walk(records(tmp_path / "a", [9, 1, 10]) + records(tmp_path / "b", [0]), num_frame=4)
    assert [(p.sequence[-1], p.number) for p in plan] == [("a", 0), ("a", 1), ("a", 6), ("a", 7), ("a", 8), ("a", 9),
                                                         ("a", 10), ("b", 0)]
    keys = {p.number: p.window for p in plan if p.is_key and p.sequence.endswith("a")}
    assert keys == {1: (0, 0, 0, 1), 9: (6, 7, 8, 9), 10: (7, 8, 9, 10)}
    assert [p.window for p in plan if p.sequence.endswith("b")] == [(0, 0, 0, 0)]
    assert [p.image_id for p in plan if p.is_key] == [1, 9, 10, 0]


@pytest.fixture(scope="module")
def tiny_model():
    # Float64, so float rounding (which depends on how frames are batched) stays far below the 1e-5 criterion.
    return calibrated_tiny_model(2, 3, (64, 96)).double().eval()



@pytest.mark.parametrize("computation", ["fast", "released"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_stream_equals_window(tmp_path, tiny_model, batch_size, computation):
    tiny_model.set_computation(computation)
    rng = np.random.default_rng(3)
    moving_sequence(tmp_path / "s1", 9, rng)
    moving_sequence(tmp_path / "s2", 5, rng)
    plan = plan_sequence_walk(records(tmp_path / "s1", range(9)) + records(tmp_path / "s2", [1, 3, 4]), num_frame=3)
    outputs = {}
    for mode in ("stream", "window"):
        detector = SequenceDetector(tiny_model, num_frame=3, mode=mode)
        outputs[mode] = {(item.ref.sequence, item.ref.number): item.output
                         for batch in frame_batches(plan, (64, 96), batch_size, workers=0)
                         for item in detector.process(batch)}
    assert len(outputs["stream"]) == 12 and outputs["stream"].keys() == outputs["window"].keys()
    for key, stream in outputs["stream"].items():
        window = outputs["window"][key]
        assert stream.shape == (1, 7, 8, 12)
        assert relative_error(stream, window) <= 1e-9, key  # the issue asks 1e-5; in float64 it is exact
    # The engine really detects per window: different key frames give different outputs.
    late, early = outputs["stream"][(str(tmp_path / "s1"), 8)], outputs["stream"][(str(tmp_path / "s1"), 2)]
    assert relative_error(late, early) > 0.01


def test_window_mode_matches_the_model_on_a_stacked_window(tmp_path, tiny_model):
    """The engine's window mode is the released computation: model(x) on the clamped window."""
    rng = np.random.default_rng(4)
    moving_sequence(tmp_path / "s", 4, rng)
    plan = plan_sequence_walk(records(tmp_path / "s", [0, 3]), num_frame=3)
    items = {}
    detector = SequenceDetector(tiny_model, num_frame=3, mode="window")
    for batch in frame_batches(plan, (64, 96), 8, workers=0):
        items.update({item.ref.number: item.output for item in detector.process(batch)})
    images = {ref.number: image for batch in frame_batches(plan, (64, 96), 8, 0)
              for image, ref in zip(batch.images, batch.refs)}
    with torch.no_grad():
        for key, window in ((0, (0, 0, 0)), (3, (1, 2, 3))):
            x = torch.stack([images[n] for n in window], dim=1)[None].double()
            assert relative_error(items[key], tiny_model(x)[0]) <= 1e-12


def test_detections_identical_in_both_modes(tmp_path, tiny_model):
    rng = np.random.default_rng(5)
    moving_sequence(tmp_path / "s", 6, rng)
    plan = plan_sequence_walk(records(tmp_path / "s", range(6)), num_frame=3)
    found = {}
    for mode in ("stream", "window"):
        settings = DetectSettings((64, 96), 3, conf=0.01, nms=0.5, mode=mode, batch_size=2)
        found[mode] = [detections for _, detections in detect_plan(tiny_model, plan, settings, progress=False)]
    assert sum(len(d) for d in found["stream"]) > 0
    assert [len(d) for d in found["stream"]] == [len(d) for d in found["window"]]
    for stream, window in zip(found["stream"], found["window"]):
        assert stream.shape[1] == 7
        # The model runs in float64 and detections come out in float32: identical up to float32's last bit.
        np.testing.assert_allclose(stream, window, rtol=2e-7, atol=1e-6)


def test_compiled_backend_streams_the_same_outputs(tmp_path):
    """--compile: the engine's calls through torch.compile give eager's outputs; the streaming cache keeps copies
    where CUDA graphs would reuse output memory (on a CPU "reduce-overhead" compiles without graphs)."""
    model = calibrated_tiny_model(1, 3, (64, 96)).eval()
    rng = np.random.default_rng(6)
    moving_sequence(tmp_path / "s", 5, rng)
    plan = plan_sequence_walk(records(tmp_path / "s", range(5)), num_frame=3)
    outputs = {}
    for mode in (None, "reduce-overhead"):
        detector = SequenceDetector(TorchBackend(model, compile_mode=mode), num_frame=3)
        outputs[mode] = [item.output for batch in frame_batches(plan, (64, 96), 1, workers=0)
                         for item in detector.process(batch)]
    assert len(outputs[None]) == 5
    for eager, compiled in zip(outputs[None], outputs["reduce-overhead"]):
        assert relative_error(compiled, eager) <= 1e-4
    assert relative_error(outputs[None][4], outputs[None][1]) > 0.01  # the frames differ, so the check has teeth


@pytest.mark.parametrize("read_ahead", [False, True])
def test_end_to_end_engine_gives_the_model_only_detections(tmp_path, tiny_model, monkeypatch, read_ahead):
    """detect_plan (decoding, read ahead in a thread where a core is spare, model, NMS) returns exactly what the
    model alone gives on frames decoded beforehand, followed by the same postprocessing."""
    import utils.infer.sources as sources
    from utils.infer.engine import postprocess

    monkeypatch.setattr(sources, "spare_core", lambda workers: read_ahead)
    tiny_model.set_computation("fast")
    rng = np.random.default_rng(7)
    moving_sequence(tmp_path / "s", 9, rng)
    plan = plan_sequence_walk(records(tmp_path / "s", range(9)), num_frame=3)
    settings = DetectSettings((64, 96), 3, conf=0.01, nms=0.5, batch_size=4)
    engine = [(item.ref.number, detections) for item, detections in detect_plan(tiny_model, plan, settings,
                                                                                 progress=False)]
    detector = SequenceDetector(tiny_model, num_frame=3)
    outputs = [item for batch in list(frame_batches(plan, (64, 96), 4, 0)) for item in detector.process(batch)]
    alone = list(zip([item.ref.number for item in outputs], postprocess(outputs, settings)))
    assert [number for number, _ in engine] == list(range(9)) and sum(len(d) for _, d in engine) > 0
    for (number, found), (expected_number, expected) in zip(engine, alone):
        assert number == expected_number
        np.testing.assert_array_equal(found, expected)


def test_read_ahead_keeps_order_raises_in_place_and_stops_its_thread():
    import threading

    from utils.errors import SSTNetError
    from utils.infer.sources import read_ahead

    assert list(read_ahead(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        yield 2
        raise SSTNetError("frame 3: not a readable image")

    received = []
    with pytest.raises(SSTNetError, match="frame 3"):
        for item in read_ahead(failing()):
            received.append(item)
    assert received == [1, 2]

    closed = threading.Event()

    def endless():
        try:
            number = 0
            while True:
                yield number
                number += 1
        finally:
            closed.set()

    ahead = read_ahead(endless(), depth=2)
    assert [next(ahead) for _ in range(5)] == [0, 1, 2, 3, 4]
    ahead.close()  # a consumer leaving early (a stop, an error downstream)
    assert closed.wait(5) and not any(thread.name == "read-ahead" for thread in threading.enumerate())


def test_a_signal_while_the_read_ahead_thread_starts_still_stops_the_thread(monkeypatch):
    """SIGTERM sent as the progress bar appears can land inside Thread.start (CI saw exit -6 once, the thread left
    running into the exit): it is delivered once the thread has started, and the thread is stopped on the way out."""
    import signal
    import threading

    from utils.infer.sources import read_ahead
    from utils.runtime.signals import Terminated

    def raise_terminated(signum, frame):
        raise Terminated

    start = threading.Thread.start

    def start_then_signal(thread):
        start(thread)
        signal.raise_signal(signal.SIGTERM)

    def endless():
        while True:
            yield 0

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        monkeypatch.setattr(threading.Thread, "start", start_then_signal)
        with pytest.raises(Terminated):
            next(read_ahead(endless(), depth=1))
        monkeypatch.undo()
        assert not any(thread.name == "read-ahead" for thread in threading.enumerate())
        assert signal.getsignal(signal.SIGTERM) is raise_terminated
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_read_ahead_left_unclosed_does_not_abort_the_exit(tmp_path):
    """A stop can leave the read-ahead generator unclosed (the traceback of Ctrl-C / SIGTERM holds it): the process
    must still exit with its own code, not abort while the thread is inside OpenCV (CI saw exit -6 after SIGTERM)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "unclosed.py"
    script.write_text(
        "import sys\n"
        "import cv2\n"
        "import numpy as np\n"
        "from utils.infer.sources import read_ahead\n"
        "image = np.random.rand(2000, 2000).astype(np.float32)\n"
        "def blurred():\n"
        "    while True:\n"
        "        yield cv2.GaussianBlur(image, (61, 61), 0)\n"
        "ahead = read_ahead(blurred(), depth=1)\n"
        "next(ahead)\n"
        "cycle = [ahead]\n"
        "cycle.append(cycle)\n"
        "sys.exit(3)\n")
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(script)], cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
