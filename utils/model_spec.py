"""What a model is: :class:`ModelSpec` (the model options, validated) and :class:`TrainedModel` (what trained weights
say they hold), with the input-size syntax. Plain data, no torch and no argparse: ``nets`` may import it, and so
does every script before anything slow.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import SSTNetError

# The choices the command lines offer; a test checks them against nets (VARIANTS, COMPUTATIONS) and utils.runtime.device
# (AMP_DTYPES).
PHI_CHOICES = ("nano", "tiny", "s", "m", "l", "x")
COMPUTATION_CHOICES = ("fast", "released")
AMP_CHOICES = ("none", "fp16", "bf16")
ENGINE_CHOICES = ("stream", "window")
# torch.compile's modes (utils.infer.engine.TorchBackend); "reduce-overhead" replays CUDA graphs.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")

# The published model (docs/design.md).
DEFAULT_PHI = "s"
DEFAULT_NUM_FRAME = 5
DEFAULT_INPUT_SIZE = 512
DEFAULT_LSTM_HIDDEN = 64
# Bounds checked before anything is built: far beyond any model of the paper (T = 5, width 64), and small enough
# that the largest model they allow still builds in well under a gigabyte.
MAX_NUM_FRAME = 64
MAX_LSTM_HIDDEN = 512
DEFAULT_FRAME_STEP = 1  # consecutive frames, as released
INPUT_MULTIPLE = 32  # the darknet's deepest stride

# The fields a trained model carries with it; the others (computation, device, amp, threads) are how to run it.
ARCHITECTURE_FIELDS = ("phi", "num_frame", "lstm_hidden")


def parse_input_shape(value: int | str | tuple[int, int] | list[int], flag: str = "--input-size") -> tuple[int, int]:
    """Return (height, width) from ``512``, ``"512"``, ``"384x640"`` (height×width) or a pair.

    Both sides must be positive multiples of 32 (the backbone downsamples 32×).
    """
    if isinstance(value, (tuple, list)):
        sides = tuple(int(v) for v in value)
    elif isinstance(value, int):
        sides = (value, value)
    else:
        text = str(value).lower().replace(",", "x")
        try:
            sides = tuple(int(part) for part in text.split("x"))
        except ValueError:
            raise SSTNetError(f"{flag} {value!r}: expected a number like 512 or HEIGHTxWIDTH like 384x640") from None
        if len(sides) == 1:
            sides = sides * 2
    if len(sides) != 2 or any(side < INPUT_MULTIPLE or side % INPUT_MULTIPLE for side in sides):
        raise SSTNetError(f"{flag} {value!r}: each side must be a multiple of {INPUT_MULTIPLE} and at least "
                          f"{INPUT_MULTIPLE}")
    return sides[0], sides[1]


def format_input_shape(shape: tuple[int, int]) -> str:
    return str(shape[0]) if shape[0] == shape[1] else f"{shape[0]}x{shape[1]}"


@dataclass(frozen=True)
class ModelSpec:
    """What model to build and how to run it, validated."""

    phi: str = DEFAULT_PHI
    num_frame: int = DEFAULT_NUM_FRAME
    input_shape: tuple[int, int] = (DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE)
    lstm_hidden: int = DEFAULT_LSTM_HIDDEN
    computation: str = "fast"
    device: str = "auto"
    amp: str = "none"
    threads: int | None = None
    frame_step: int = DEFAULT_FRAME_STEP

    def __post_init__(self) -> None:
        if self.phi not in PHI_CHOICES:
            raise SSTNetError(f"--phi {self.phi!r}: expected one of {', '.join(PHI_CHOICES)}")
        if isinstance(self.num_frame, bool) or not isinstance(self.num_frame, int) or self.num_frame < 2:
            raise SSTNetError(f"--num-frame {self.num_frame}: SSTNet needs at least 2 frames per window")
        if self.num_frame > MAX_NUM_FRAME:
            raise SSTNetError(f"--num-frame {self.num_frame}: at most {MAX_NUM_FRAME} frames per window")
        if isinstance(self.lstm_hidden, bool) or not isinstance(self.lstm_hidden, int) or self.lstm_hidden < 1:
            raise SSTNetError(f"--lstm-hidden {self.lstm_hidden}: must be at least 1")
        if self.lstm_hidden > MAX_LSTM_HIDDEN:
            raise SSTNetError(f"--lstm-hidden {self.lstm_hidden}: at most {MAX_LSTM_HIDDEN}")
        object.__setattr__(self, "input_shape", parse_input_shape(self.input_shape))
        if self.computation not in COMPUTATION_CHOICES:
            raise SSTNetError(f"--computation {self.computation!r}: expected one of {', '.join(COMPUTATION_CHOICES)}")
        if self.amp not in AMP_CHOICES:
            raise SSTNetError(f"--amp {self.amp!r}: expected one of {', '.join(AMP_CHOICES)}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise SSTNetError(f"--threads {self.threads}: must be at least 1")
        if isinstance(self.frame_step, bool) or not isinstance(self.frame_step, int) or self.frame_step < 1:
            raise SSTNetError(f"--frame-step {self.frame_step}: must be at least 1")

    @property
    def input_size(self) -> str:
        """The input size as the command line writes it (``512`` or ``HxW``)."""
        return format_input_shape(self.input_shape)

    def architecture(self) -> dict[str, Any]:
        """The fields that decide the weights' layout, with the input size and frame step the model was trained at."""
        return {"phi": self.phi, "num_frame": self.num_frame, "input_size": list(self.input_shape),
                "lstm_hidden": self.lstm_hidden, "frame_step": self.frame_step}


@dataclass(frozen=True)
class TrainedModel:
    """What a weights file says about the model it holds: from its sidecar, else inferred from tensor shapes (or
    what exported ONNX graphs say about theirs).

    ``input_shape`` is None when only shapes were available (they do not tell the size the model was trained at).
    """

    source: str
    phi: str
    num_frame: int
    lstm_hidden: int
    num_classes: int
    input_shape: tuple[int, int] | None = None
    class_names: tuple[str, ...] | None = None
    from_sidecar: bool = False
    extra: dict = field(default_factory=dict)
    described_by: str | None = None  # what described the model when not its weights (e.g. "ONNX metadata")
    frame_step: int = DEFAULT_FRAME_STEP  # the frame step it was trained with (1 when nothing says otherwise)
    note: str | None = None  # said once by whoever resolves a run's spec from it (e.g. a stale sidecar ignored)

    @property
    def origin(self) -> str:
        if self.described_by is not None:
            return f"{self.source} ({self.described_by})"
        return f"{self.source} (sidecar)" if self.from_sidecar else f"{self.source} (from its tensor shapes)"

    @property
    def labels(self) -> tuple[str, ...]:
        """The class names, or ``target`` (one class) / ``class0``, ``class1``... when none were stored."""
        if self.class_names is not None:
            return self.class_names
        return ("target",) if self.num_classes == 1 else tuple(f"class{index}" for index in range(self.num_classes))
