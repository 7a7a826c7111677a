"""What ``export_onnx.py`` writes and the ONNX Runtime backend reads: the three graphs, their tensor names and the
metadata each model carries (``metadata_props``, all strings).

- ``frame.onnx``: ``images`` N×3×H×W → ``features`` N×3c×H/8×W/8, what the streaming cache keeps per frame
  (the P3 map, channels [0, c), and the neck's reference half of ``conv_gl``, channels [c, 3c));
- ``detect.onnx``: ``features_0`` … ``features_{T-1}`` (the T cached frames, oldest first, key frame last) →
  ``output`` N×(5+C)×H/8×W/8, the raw head output;
- ``window.onnx``: ``window`` N×3×T×H×W → ``output``, the released single-graph computation.

This module imports neither torch nor onnx, so command lines stay fast to answer.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from types import ModuleType

from ..data.preprocess import MEAN, PAD_VALUE, STD
from ..errors import SSTNetError
from ..model_spec import TrainedModel, format_input_shape, parse_input_shape

FORMAT = "sstnet-onnx/1"
GRAPHS = ("frame", "detect", "window")
STREAM_GRAPHS = ("frame", "detect")
HEAD_STRIDE = 8
FRAME_INPUT, FRAME_OUTPUT = "images", "features"
WINDOW_INPUT, OUTPUT = "window", "output"
PRECISIONS = ("float32", "float16", "int8")
LEGACY_WEIGHT_BITS = 8  # int8 graphs exported before their metadata named the weights' bits had 8-bit weights
MIN_OPSET = 17
DEFAULT_OPSET = 18

LETTERBOX = ("scale by min(H/h, W/w), truncate the new size to integers, resize bicubically (PIL), paste centred "
             "(offset (H-new_h)//2, (W-new_w)//2) on a canvas filled with pad_value")
NORMALISATION = "RGB, x = (pixel / 255 - mean) / std per channel, N×3×H×W float"
DECODE = ("output channels (p0, p1, p2, p3, obj, cls_0..cls_{C-1}); cell (x, y) of the H/8×W/8 map: cx = (p0 + x)·8, "
          "cy = (p1 + y)·8, w = exp(p2)·8, h = exp(p3)·8 in input pixels; score = sigmoid(obj)·max_c sigmoid(cls_c); "
          "keep score >= conf, class-wise NMS; to frame pixels per axis: new = round(frame·min(H/h, W/w)), "
          "centre = (centre - (input - new)/2)·frame/new, size = size·frame/new")

# Where each package is needed, and how to get it (requirements-dev.txt pins them).
PACKAGES = {"onnx": "pip install -r requirements-dev.txt (or pip install onnx onnxscript)",
            "onnxscript": "pip install -r requirements-dev.txt (or pip install onnxscript)",
            "onnxruntime": "pip install -r requirements-dev.txt (or pip install onnxruntime)"}


def detect_inputs(num_frame: int) -> list[str]:
    """The input names of ``detect.onnx``, oldest frame first, the key frame last."""
    return [f"features_{index}" for index in range(num_frame)]


def graph_file(graph: str) -> str:
    return f"{graph}.onnx"


def require(package: str, flag: str) -> ModuleType:
    """Import ``package`` for ``flag``, or fail with one line saying how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise SSTNetError(f"{flag}: needs the Python package {package}, which is not installed; "
                          f"{PACKAGES[package]}") from None


def known(value: str | None) -> str | None:
    return None if value in (None, "unknown") else value


@dataclass(frozen=True)
class ExportedGraph:
    """What one exported graph says about itself: the model it computes and how to feed it.

    ``batch`` is the fixed batch size, or None when the batch axis is dynamic.
    """

    graph: str
    phi: str
    num_frame: int
    lstm_hidden: int
    num_classes: int
    input_shape: tuple[int, int]
    class_names: tuple[str, ...]
    computation: str
    batch: int | None
    precision: str
    commit: str | None = None
    export_id: str | None = None  # shared by the graphs of one export: a folder mixing two exports is refused
    frame_step: int = 1  # frames between a window's frames; the caller builds windows with it
    calibration: str | None = None  # int8: the frames the activation ranges were calibrated on
    float_modules: tuple[str, ...] = ()  # int8: the modules kept in float
    calibration_method: str | None = None  # int8: how the ranges were set ("minmax", "percentile 99.999", ...)
    weight_bits: int | None = None  # int8: 7 or 8 (graphs written before the entry existed have 8)


    def metadata(self) -> dict[str, str]:
        """The ``metadata_props`` of the graph: the model, the preprocessing and the decoding, as strings."""
        props = {"format": FORMAT, "graph": self.graph, "phi": self.phi, "num_frame": str(self.num_frame),
                "lstm_hidden": str(self.lstm_hidden), "num_classes": str(self.num_classes),
                "class_names": json.dumps(list(self.class_names)),
                "input_size": json.dumps(list(self.input_shape)), "stride": str(HEAD_STRIDE),
                "computation": self.computation, "batch": "dynamic" if self.batch is None else str(self.batch),
                "precision": self.precision, "letterbox": LETTERBOX, "pad_value": str(PAD_VALUE),
                "mean": json.dumps([float(f"{value:.6g}") for value in MEAN]),
                "std": json.dumps([float(f"{value:.6g}") for value in STD]),
                "normalisation": NORMALISATION, "decode": DECODE, "commit": self.commit or "unknown",
                "export_id": self.export_id or "unknown", "frame_step": str(self.frame_step)}
        if self.precision == "int8":
            props["calibration"] = self.calibration or "unknown"
            props["float_modules"] = json.dumps(list(self.float_modules))
            props["calibration_method"] = self.calibration_method or "minmax"
            props["weight_bits"] = str(self.weight_bits or LEGACY_WEIGHT_BITS)
        return props

    @classmethod
    def from_metadata(cls, props: dict[str, str], source: str) -> ExportedGraph:
        """Validate the metadata of an exported graph; a missing or malformed entry is an error naming it."""
        if props.get("format") != FORMAT:
            raise SSTNetError(f"{source}: not a graph exported by export_onnx.py (its metadata lacks "
                              f"format {FORMAT!r}); export it again")

        def field(key: str) -> str:
            if key not in props:
                raise SSTNetError(f"{source}: metadata entry {key!r} is missing; export it again")
            return props[key]

        def integer(key: str) -> int:
            text = field(key)
            if not text.isdigit() or int(text) < 1:
                raise SSTNetError(f"{source}: metadata {key} {text!r}: expected a positive integer")
            return int(text)

        try:
            shape = parse_input_shape(json.loads(field("input_size")), flag=f"{source}: metadata input_size")
            names = json.loads(field("class_names"))
        except json.JSONDecodeError as exc:
            raise SSTNetError(f"{source}: malformed metadata ({exc})") from None
        num_classes = integer("num_classes")
        if not isinstance(names, list) or len(names) != num_classes or not all(isinstance(n, str) for n in names):
            raise SSTNetError(f"{source}: metadata class_names: expected {num_classes} strings")
        batch = field("batch")
        graph = cls(field("graph"), field("phi"), integer("num_frame"), integer("lstm_hidden"), num_classes, shape,
                    tuple(names), field("computation"), None if batch == "dynamic" else integer("batch"),
                    field("precision"), known(props.get("commit")), known(props.get("export_id")),
                    integer("frame_step") if "frame_step" in props else 1, known(props.get("calibration")),
                    calibration_method=known(props.get("calibration_method")),
                    weight_bits=(integer("weight_bits") if "weight_bits" in props else LEGACY_WEIGHT_BITS)
                    if field("precision") == "int8" else None)
        if graph.graph not in GRAPHS or graph.precision not in PRECISIONS:
            raise SSTNetError(f"{source}: metadata graph {graph.graph!r} / precision {graph.precision!r} not "
                              f"understood")
        return graph

    def trained_model(self, source: str) -> TrainedModel:
        """The model as the shared option resolver sees trained weights (flags are checked against it)."""
        return TrainedModel(source, self.phi, self.num_frame, self.lstm_hidden, self.num_classes, self.input_shape,
                            self.class_names, described_by="ONNX metadata", frame_step=self.frame_step)

    def same_model(self, other: ExportedGraph) -> bool:
        """Whether two graphs of one folder come from one export (same model, size, batch and precision)."""
        keys = ("phi", "num_frame", "lstm_hidden", "num_classes", "input_shape", "class_names", "batch", "precision",
                "commit", "export_id", "frame_step")
        return all(getattr(self, key) == getattr(other, key) for key in keys)

    def describe(self) -> str:
        return (f"phi {self.phi}, T {self.num_frame}, frame step {self.frame_step}, "
                f"input {format_input_shape(self.input_shape)}, "
                f"{self.num_classes} class(es), batch {'dynamic' if self.batch is None else self.batch}, "
                f"{self.precision}" + (f" (calibrated on {self.calibration}"
                                       f"{', ' + self.calibration_method if self.calibration_method else ''}"
                                       f"{f', {self.weight_bits}-bit weights' if self.weight_bits else ''})"
                                       if self.calibration else ""))
