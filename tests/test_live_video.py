"""vid_predict.py --mode video on live sources. A stream URL served by a local HTTP server stands in for a camera: it
goes through the same capture path (frames read as they arrive, batch 1, nothing counted beforehand). A stop by SIGTERM
keeps the video written so far; sources that cannot be opened and --show without a display are refused in one line."""
import functools
import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO, assert_clean_error, frames_of, prior_weights, run_script

from nets import Network

MODEL = ["--input-size", "64", "--phi", "nano", "--workers", "0", "--quiet"]
LONG = 3000  # frames of the stream a test stops early


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Untrained nano weights whose head prior gives detections of many scores on every frame."""
    return prior_weights(tmp_path_factory.mktemp("weights"))


def write_video(path: Path, frames: int, height: int, width: int) -> Path:
    """Motion-JPEG in AVI: read front to back, so it streams over a server without range requests (an mp4 whose index
    comes last does not)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (width, height))
    for k in range(frames):
        image = np.full((height, width, 3), 60, np.uint8)
        x = 4 + (3 * k) % (width - 12)
        image[height // 3:height // 3 + 4, x:x + 4] = 250
        writer.write(image)
    writer.release()
    return path


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; ``/stall.avi`` sends long.avi up to its 100th frame (cut at a frame's chunk, so that what
    arrives decodes), then holds the connection silent."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path != "/stall.avi":
            return super().do_GET()
        data = (Path(self.directory) / "long.avi").read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "video/x-msvideo")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        cut = [match.start() for match in re.finditer(b"00dc", data)][100]
        self.wfile.write(data[:cut])
        self.wfile.flush()
        time.sleep(60)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An HTTP server on 127.0.0.1 serving a 12-frame 80×120 clip and a long 64×64 one; yields its base URL."""
    folder = tmp_path_factory.mktemp("served")
    write_video(folder / "clip.avi", 12, 80, 120)
    write_video(folder / "long.avi", LONG, 64, 64)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_stream_is_read_frame_by_frame_to_its_end(server, weights, tmp_path, monkeypatch):
    import utils.infer.sources
    import utils.runtime.memory

    import vid_predict

    def no_count(path):
        raise AssertionError("a live source must not be counted beforehand")

    backbone_batches = []
    extract = Network.extract_frame_features

    def counting(self, frames):
        backbone_batches.append(len(frames))
        return extract(self, frames)

    monkeypatch.setattr(utils.infer.sources, "video_frame_count", no_count)
    monkeypatch.setattr(Network, "extract_frame_features", counting)
    # The memory estimate probes a model of its own; only the engine's passes are counted here.
    monkeypatch.setattr(utils.runtime.memory, "estimate_peak", lambda *args, **kwargs: 0.0)
    out = tmp_path / "out.mp4"
    assert vid_predict.main(["--mode", "video", "--weights", str(weights), "--source", f"{server}/clip.avi",
                             "--out", str(out), *MODEL]) == 0
    # The streaming engine at batch 1: one backbone pass per frame, each as it arrives.
    assert backbone_batches == [1] * 12
    assert frames_of(out) == (12, (120, 80))


def test_a_stream_through_the_command_line(server, weights, tmp_path):
    out = tmp_path / "out.mp4"
    result = run_script("vid_predict.py", "--mode", "video", "--weights", weights, "--source", f"{server}/clip.avi",
                        "--out", out, "--no-letterbox", *MODEL)
    assert result.returncode == 0, result.stderr
    assert f"reading {server}/clip.avi" in result.stdout and f"wrote {out}" in result.stdout
    assert "stopped" not in result.stdout  # the stream ended by itself
    assert frames_of(out) == (12, (120, 80))


def test_sigterm_stops_a_live_source_and_keeps_the_video(server, weights, tmp_path):
    out = tmp_path / "live.mp4"
    command = [sys.executable, "vid_predict.py", "--mode", "video", "--weights", weights, "--source",
               f"{server}/long.avi", "--out", out, "--count", *MODEL]
    process = subprocess.Popen(list(map(str, command)), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    counted = 0
    while counted < 3:  # --count prints a line per frame: wait until frames are flowing
        line = process.stdout.readline()
        assert line, process.communicate()[1]
        counted += bool(re.match(r"long\.avi_\d+: ", line))
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    # The video is complete, and the exit code says a signal ended the run, as for every script.
    assert process.returncode == 143, stderr
    assert stderr.rstrip().endswith("terminated")
    assert "SIGTERM: stopping after this frame" in stdout and "Traceback" not in stderr
    written = int(re.search(r"stopped after (\d+) frames", stdout).group(1))
    assert frames_of(out) == (written, (64, 64)) and 3 <= written < LONG
    assert not [path for path in tmp_path.iterdir() if ".tmp" in path.name]


def test_sources_that_cannot_be_opened(weights, tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/none.mp4"
    out = tmp_path / "out.mp4"
    result = run_script("vid_predict.py", "--mode", "video", "--weights", weights, "--source", url, "--out", out,
                        *MODEL)
    assert_clean_error(result, f"--source {url}", "cannot open the stream")
    result = run_script("vid_predict.py", "--mode", "video", "--weights", weights, "--source", "97", "--out", out,
                        *MODEL)
    assert_clean_error(result, "--source 97", "cannot open camera 97")
    result = run_script("vid_predict.py", "--weights", weights, "--source", "0", *MODEL)
    assert_clean_error(result, "--source 0", "--mode video only")
    assert not out.exists()


def test_show_needs_a_display_and_a_gui(weights, tmp_path):
    clip = write_video(tmp_path / "clip.avi", 3, 32, 32)
    argv = ["vid_predict.py", "--mode", "video", "--weights", weights, "--source", clip, "--out", tmp_path / "o.mp4",
            "--show", *MODEL]
    no_display = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY")}
    assert_clean_error(run_script(*argv, env=no_display), "--show", "no display")
    if re.search(r"^\s*GUI:\s*NONE\s*$", cv2.getBuildInformation(), re.MULTILINE):
        assert_clean_error(run_script(*argv, env={**no_display, "DISPLAY": ":97"}), "--show", "no GUI support")
    result = run_script("vid_predict.py", "--mode", "dir", "--weights", weights, "--source", tmp_path, "--show", *MODEL)
    assert_clean_error(result, "--show: applies to --mode video")


def test_live_source_names_and_default_outputs():
    from utils.infer.sources import live_source
    from vid_predict import default_out
    assert live_source("0") == 0 and live_source("12") == 12
    assert live_source("rtsp://camera.local/stream1") == "rtsp://camera.local/stream1"
    assert live_source("http://127.0.0.1:8080/x.mp4") == "http://127.0.0.1:8080/x.mp4"
    assert live_source("clip.mp4") is None and live_source("data/0.bmp") is None
    assert default_out("video", 0) == Path("img_out/camera0.mp4")
    assert default_out("video", "rtsp://camera.local/stream1") == Path("img_out/stream.mp4")


def test_a_stalled_stream_ends_after_its_timeout_with_a_note(server, weights, tmp_path):
    out = tmp_path / "stalled.mp4"
    started = time.monotonic()
    result = run_script("vid_predict.py", "--mode", "video", "--weights", weights, "--source", f"{server}/stall.avi",
                        "--out", out, "--stream-timeout", "2", *MODEL, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "the stream stalled; ending here" in result.stderr
    assert time.monotonic() - started < 45  # the server holds the connection for 60 s
    assert 90 <= frames_of(out)[0] <= 100
