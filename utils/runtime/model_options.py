"""The model options every script shares (``--phi``, ``--num-frame``, ``--input-size``, ``--frame-step``,
``--lstm-hidden``, ``--computation``, ``--device``, ``--amp``, ``--threads``), defined once and parsed into one
:class:`ModelSpec`.

They serve the training scripts, ``vid_map_coco.py``, ``vid_predict.py``, ``export_onnx.py``, ``summary.py`` and
``benchmarks/bench.py``. A script that starts from trained weights fills the flags left out from what the weights say
they are (:class:`TrainedModel`: their sidecar ``<weights>.json``, or their tensor shapes); a flag that contradicts
them is an error, except ``--input-size`` and ``--frame-step`` (running at another size or step is legitimate, and
noted once).

No torch here, so ``--help`` and argument errors answer at once.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

from ..errors import SSTNetError
from ..model_spec import (AMP_CHOICES, ARCHITECTURE_FIELDS, COMPUTATION_CHOICES, DEFAULT_FRAME_STEP,
                          DEFAULT_INPUT_SIZE, DEFAULT_LSTM_HIDDEN, DEFAULT_NUM_FRAME, DEFAULT_PHI, INPUT_MULTIPLE,
                          PHI_CHOICES, ModelSpec, TrainedModel, format_input_shape, parse_input_shape)
from .cpus import default_workers

WORKERS_HELP = ("frame-decoding worker processes (default: 0 on 1-2 CPUs, 1 on 3, 2 from 4 on: on two cores a "
                "worker slows the compute more than it helps)")


def resolve_workers(args: argparse.Namespace) -> None:
    """Fill ``args.workers`` left out (None) with :func:`default_workers`."""
    if getattr(args, "workers", None) is None:
        args.workers = default_workers()


def add_model_arguments(parser: argparse.ArgumentParser, several_sizes: str | None = None,
                        computation: bool = True, from_weights: bool = True) -> None:
    """The shared model and device options, with the same help in every script. Defaults are None so a script
    knows which flags were written; the help states the published default. ``several_sizes``: ``--input-size``
    takes one or more sizes, and this is its help (bench: sizes to measure; vid_map_coco: one per dataset root).
    ``from_weights``: the script starts from trained weights, whose values fill the model flags left out (said once,
    in the group's description)."""
    description = ("flags left out take the values the weights were trained with (their sidecar <weights>.json, "
                   "else their tensor shapes), then the defaults below" if from_weights else None)
    model = parser.add_argument_group("model", description)
    model.add_argument("--phi", default=None, choices=PHI_CHOICES, help=f"YOLOX size (default: {DEFAULT_PHI})")
    model.add_argument("--num-frame", type=int, default=None, metavar="T",
                       help=f"frames per window, key frame last (default: {DEFAULT_NUM_FRAME})")
    size_help = several_sizes or f"input side, a multiple of {INPUT_MULTIPLE}, or HxW (default: {DEFAULT_INPUT_SIZE})"
    model.add_argument("--input-size", default=None, nargs="+" if several_sizes else None, metavar="S",
                       help=size_help)
    model.add_argument("--frame-step", type=int, default=None, metavar="S",
                       help=f"frames between the frames of a window: key frame k sees k-(T-1)S, ..., k-S, k, so a "
                            f"slow target moves S times farther across the window (default: {DEFAULT_FRAME_STEP}, "
                            f"consecutive frames as released; weights trained with another step say so)")
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
                     help="intra-op CPU threads (default: $OMP_NUM_THREADS when set, else the CPUs idle when the run "
                          "starts, less one per DataLoader worker, at least 1)")


def resolve_spec(args: argparse.Namespace, trained: TrainedModel | None = None,
                 note: Callable[[str], None] = print, engine: str | None = None,
                 input_size: Any = None, flags_win: bool = False) -> ModelSpec:
    """The spec of a run: flags written on the command line, else the trained model's values, else the defaults.

    A flag contradicting the trained model (phi, frames, motion-branch width) is an error naming both values, unless
    ``flags_win`` (``--pretrained``: a partial load into another shape is legitimate); an input size other than the
    trained one is allowed and ``note``-d. ``input_size`` overrides ``args.input_size`` (bench: one of several).
    """
    if trained is not None and trained.note:
        note(trained.note)
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
    elif trained is not None and not flags_win:
        note(f"note: {trained.origin} does not say the input size it was trained at (no sidecar beside it); running at "
             f"the default {DEFAULT_INPUT_SIZE}, which is wrong for a model trained at another size: give --input-size")
    step = getattr(args, "frame_step", None)
    if step is not None:
        values["frame_step"] = step
        if trained is not None and step != trained.frame_step and not flags_win:
            note(f"note: --frame-step {step}: {trained.source} was trained with frame step {trained.frame_step}; "
                 "running with the step given")
    elif trained is not None:
        values["frame_step"] = trained.frame_step
    computation = getattr(args, "computation", None)
    if computation is None:
        computation = "released" if engine == "window" else "fast"
    threads = getattr(args, "threads", None)
    return ModelSpec(**values, computation=computation, device=getattr(args, "device", "auto") or "auto",
                     amp=getattr(args, "amp", "none") or "none", threads=threads)
