"""The model options every script shares, parsed once into one frozen :class:`ModelSpec`.

``--phi``, ``--num-frame``, ``--input-size``, ``--lstm-hidden``, ``--computation``, ``--device``, ``--amp`` and
``--threads`` are defined here, once, for the training scripts, ``vid_map_coco.py``, ``vid_predict.py``,
``export_onnx.py`` and ``benchmarks/bench.py``. A script that starts from trained weights fills the flags left
out from what the weights say they are (:class:`TrainedModel`: their sidecar ``<weights>.json``, or their tensor
shapes); a flag that contradicts them is an error, except ``--input-size`` (running at another size is legitimate,
and noted once).

This module does not import torch, so ``--help`` and argument errors answer at once.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import SSTNetError

# The choices the command lines offer; a test checks them against nets (VARIANTS, COMPUTATIONS) and utils.device
# (AMP_DTYPES).
PHI_CHOICES = ("nano", "tiny", "s", "m", "l", "x")
COMPUTATION_CHOICES = ("fast", "released")
AMP_CHOICES = ("none", "fp16", "bf16")
ENGINE_CHOICES = ("stream", "window")
# torch.compile's modes (utils.inference.TorchBackend); "reduce-overhead" replays CUDA graphs.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")

# The published model (spec §2, §8).
DEFAULT_PHI = "s"
DEFAULT_NUM_FRAME = 5
DEFAULT_INPUT_SIZE = 512
DEFAULT_LSTM_HIDDEN = 64
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


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_times(cpus: set[int]) -> dict[int, tuple[int, int]]:
    """(idle, total) jiffies so far of each of ``cpus``, from Linux's /proc/stat."""
    times = {}
    with open("/proc/stat") as stat:
        for line in stat:
            name, *values = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                jiffies = [int(value) for value in values[:8]]  # user nice system idle iowait irq softirq steal
                times[int(name[3:])] = (jiffies[3] + jiffies[4], sum(jiffies))
    return times


def idle_cpus(interval: float = 0.1) -> float:
    """How many of this process's CPUs are idle now: each one's idle share over ``interval`` seconds, summed
    (Linux's /proc/stat; where it cannot be read, every CPU counts as idle)."""
    try:
        allowed = os.sched_getaffinity(0)
        before = cpu_times(allowed)
        time.sleep(interval)
        after = cpu_times(allowed)
    except AttributeError:  # not on Linux
        return float(available_cpus())
    except (OSError, ValueError, IndexError):
        return float(len(allowed))
    idle = 0.0
    for cpu, (idle_after, total_after) in after.items():
        idle_before, total_before = before.get(cpu, (idle_after, total_after))
        elapsed = total_after - total_before
        idle += (idle_after - idle_before) / elapsed if elapsed > 0 else 1.0
    return idle


def default_workers() -> int:
    """DataLoader workers when ``--workers`` is left out: none on 1–2 CPUs, where a worker process takes a core's
    share from the compute threads and every OpenMP barrier waits for it (evaluation 1.4× slower on 2 CPUs,
    benchmarks/NOTES.md); 1 on 3 CPUs; 2 from 4 CPUs on, where decoding overlaps the compute for free."""
    return min(2, max(0, available_cpus() - 2))


def default_threads(workers: int) -> int:
    """Intra-op threads when ``--threads`` is left out: ``OMP_NUM_THREADS`` when the environment sets it (the user
    said so), else the CPUs idle when the script starts (a CPU counts when it is at least 75 % idle over 0.1 s)
    minus one per DataLoader worker, at least one. A thread on a core that another process keeps busy stalls
    every parallel region of the others (2–2.5× slower on 2 CPUs with one busy, benchmarks/NOTES.md)."""
    configured = os.environ.get("OMP_NUM_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return max(1, math.floor(idle_cpus() + 0.25) - workers)


WORKERS_HELP = ("frame-decoding worker processes (default: 0 on 1-2 CPUs, 1 on 3, 2 from 4 on: on two cores a "
                "worker slows the compute more than it helps)")


def resolve_workers(args: argparse.Namespace) -> None:
    """Fill ``args.workers`` left out (None) with :func:`default_workers`."""
    if getattr(args, "workers", None) is None:
        args.workers = default_workers()


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

    def __post_init__(self) -> None:
        if self.phi not in PHI_CHOICES:
            raise SSTNetError(f"--phi {self.phi!r}: expected one of {', '.join(PHI_CHOICES)}")
        if isinstance(self.num_frame, bool) or not isinstance(self.num_frame, int) or self.num_frame < 2:
            raise SSTNetError(f"--num-frame {self.num_frame}: SSTNet needs at least 2 frames per window")
        if isinstance(self.lstm_hidden, bool) or not isinstance(self.lstm_hidden, int) or self.lstm_hidden < 1:
            raise SSTNetError(f"--lstm-hidden {self.lstm_hidden}: must be at least 1")
        object.__setattr__(self, "input_shape", parse_input_shape(self.input_shape))
        if self.computation not in COMPUTATION_CHOICES:
            raise SSTNetError(f"--computation {self.computation!r}: expected one of {', '.join(COMPUTATION_CHOICES)}")
        if self.amp not in AMP_CHOICES:
            raise SSTNetError(f"--amp {self.amp!r}: expected one of {', '.join(AMP_CHOICES)}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise SSTNetError(f"--threads {self.threads}: must be at least 1")

    @property
    def input_size(self) -> str:
        """The input size as the command line writes it (``512`` or ``HxW``)."""
        return format_input_shape(self.input_shape)

    def architecture(self) -> dict[str, Any]:
        """The fields that decide the weights' layout, with the input size the model was trained at."""
        return {"phi": self.phi, "num_frame": self.num_frame, "input_size": list(self.input_shape),
                "lstm_hidden": self.lstm_hidden}


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


def add_model_arguments(parser: argparse.ArgumentParser, several_sizes: bool = False,
                        computation: bool = True, from_weights: bool = True) -> None:
    """The shared model and device options, with the same help in every script. Defaults are None so a script
    knows which flags were written; the help states the published default. ``several_sizes``: ``--input-size``
    takes one or more sizes (bench). ``from_weights``: the script starts from trained weights, whose values fill the
    model flags left out (said once, in the group's description)."""
    description = ("flags left out take the values the weights were trained with (their sidecar <weights>.json, "
                   "else their tensor shapes), then the defaults below" if from_weights else None)
    model = parser.add_argument_group("model", description)
    model.add_argument("--phi", default=None, choices=PHI_CHOICES, help=f"YOLOX size (default: {DEFAULT_PHI})")
    model.add_argument("--num-frame", type=int, default=None, metavar="T",
                       help=f"frames per window, key frame last (default: {DEFAULT_NUM_FRAME})")
    model.add_argument("--input-size", default=None, nargs="+" if several_sizes else None, metavar="S",
                       help=f"input side, a multiple of {INPUT_MULTIPLE}, or HxW (default: {DEFAULT_INPUT_SIZE})")
    model.add_argument("--lstm-hidden", type=int, default=None, metavar="C",
                       help=f"width of the training-only motion branch; other values than {DEFAULT_LSTM_HIDDEN} change "
                            f"the checkpoint layout (default: {DEFAULT_LSTM_HIDDEN})")
    if computation:
        model.add_argument("--computation", default=None, choices=COMPUTATION_CHOICES,
                           help="fast: the same function with fewer operations (equal outputs, losses and gradients); "
                                "released: the authors' operations (default: fast; with --engine window: released)")
    run = parser.add_argument_group("device")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    run.add_argument("--amp", default="none", choices=AMP_CHOICES,
                     help="mixed precision: bf16 (CPU or CUDA) or fp16 (CUDA) (default: none)")
    run.add_argument("--threads", type=int, default=None, metavar="N",
                     help="intra-op CPU threads (default: $OMP_NUM_THREADS when set, else the CPUs this process may "
                          "use minus one per DataLoader worker, at least 1)")


def resolve_spec(args: argparse.Namespace, trained: TrainedModel | None = None,
                 note: Callable[[str], None] = print, engine: str | None = None,
                 input_size: Any = None, flags_win: bool = False) -> ModelSpec:
    """The spec of a run: flags written on the command line, else the trained model's values, else the defaults.

    A flag contradicting the trained model (phi, frames, motion-branch width) is an error naming both values, unless
    ``flags_win`` (``--pretrained``: a partial load into another shape is legitimate); an input size other than the
    trained one is allowed and ``note``-d. ``input_size`` overrides ``args.input_size`` (bench: one of several).
    """
    values: dict[str, Any] = {}
    for name in ARCHITECTURE_FIELDS:
        written = getattr(args, name, None)
        if trained is not None and (written is None or not flags_win):
            held = getattr(trained, name)
            if written is not None and written != held:
                flag = "--" + name.replace("_", "-")
                raise SSTNetError(f"{flag} {written}: {trained.origin} holds a model with {flag} {held}; leave the "
                                  f"flag out or pass {held}")
            values[name] = held
        elif written is not None:
            values[name] = written
    size = input_size if input_size is not None else getattr(args, "input_size", None)
    if size is not None:
        values["input_shape"] = parse_input_shape(size)
        if trained is not None and trained.input_shape is not None and values["input_shape"] != trained.input_shape \
                and not flags_win:
            note(f"note: --input-size {format_input_shape(values['input_shape'])}: {trained.source} was trained at "
                 f"{format_input_shape(trained.input_shape)}; running at the size given")
    elif trained is not None and trained.input_shape is not None:
        values["input_shape"] = trained.input_shape
    computation = getattr(args, "computation", None)
    if computation is None:
        computation = "released" if engine == "window" else "fast"
    threads = getattr(args, "threads", None)
    return ModelSpec(**values, computation=computation, device=getattr(args, "device", "auto") or "auto",
                     amp=getattr(args, "amp", "none") or "none", threads=threads)


def sidecar_path(weights: str | os.PathLike) -> str:
    """Where the metadata of ``weights`` lives: the weights file's name plus ``.json``."""
    return os.fspath(weights) + ".json"


SIDECAR_FORMAT = "sstnet-weights/1"


def sidecar_record(spec: ModelSpec, num_classes: int, class_names: list[str], extra: dict) -> dict:
    """The content of a sidecar: the model spec, the classes, then whatever ``extra`` adds (data root, commit...)."""
    return {"format": SIDECAR_FORMAT, "model": {**spec.architecture(), "num_classes": num_classes},
            "class_names": list(class_names), "trained_with": {"computation": spec.computation, "amp": spec.amp},
            **extra}


def trained_from_sidecar(data: Any, source: str) -> TrainedModel:
    """Validate a parsed sidecar; a malformed one is an error naming the file and field."""
    where = sidecar_path(source)
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT or not isinstance(data.get("model"), dict):
        raise SSTNetError(f"{where}: not a weights sidecar of this project (expected \"format\": \"{SIDECAR_FORMAT}\" "
                          "and a \"model\" object)")
    model = data["model"]
    try:
        shape = parse_input_shape(model["input_size"], flag=f"{where}: model.input_size")
        spec = ModelSpec(phi=model["phi"], num_frame=model["num_frame"], lstm_hidden=model["lstm_hidden"],
                         input_shape=shape)
        num_classes = model["num_classes"]
    except KeyError as exc:
        raise SSTNetError(f"{where}: model.{exc.args[0]} is missing") from None
    except SSTNetError as exc:
        raise SSTNetError(f"{where}: {exc}") from None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise SSTNetError(f"{where}: model.num_classes {num_classes!r}: expected a positive integer")
    names = data.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != num_classes
                              or not all(isinstance(name, str) for name in names)):
        raise SSTNetError(f"{where}: class_names: expected {num_classes} strings")
    extra = {key: value for key, value in data.items() if key not in ("format", "model", "class_names")}
    return TrainedModel(source, spec.phi, spec.num_frame, spec.lstm_hidden, num_classes, spec.input_shape,
                        tuple(names) if names is not None else None, True, extra)
