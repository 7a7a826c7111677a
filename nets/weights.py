"""The one place weights are loaded into a model.

``load_weights(model, source, mode)`` takes a checkpoint path or an already loaded object. Accepted: a plain state
dict, one wrapped as ``{"model": ...}`` (official YOLOX checkpoints, ours) or ``{"state_dict": ...}``, with or
without the ``module.`` prefix DataParallel / DDP add.

- ``strict``: the checkpoint must hold exactly the model's keys with the model's shapes (full SSTNet weights, e.g.
  the authors'), or exactly its detector's (backbone, neck, head: ``strip_weights.py``'s detector-only weights;
  the training-only motion branch then keeps its initialisation). Anything else raises :class:`SSTNetError`
  naming the first missing / unexpected keys and shape mismatches, and nothing is loaded.
- ``partial``: every checkpoint tensor whose key exists in the model with the same shape is loaded, the rest are
  skipped and listed in the report (the released way of starting from COCO-pretrained YOLOX weights: the official
  YOLOX-s ``backbone.backbone.*`` darknet and the top-down ``backbone.lateral_conv0`` / ``C3_p4`` /
  ``reduce_conv1`` / ``C3_p3`` have our names and shapes; its bottom-up PAN and three-level head do not — though
  a few head biases and BatchNorm counters match by shape, pass ``include=("backbone.",)`` to take the backbone
  only). A partial load that matches nothing is an error.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from utils.errors import SSTNetError
from utils.model_spec import TrainedModel
from utils.sidecar import sidecar_path, trained_from_sidecar

MODES = ("strict", "partial")
WRAPPER_KEYS = ("model", "state_dict")  # where checkpoints keep the weights, tried in this order
DDP_PREFIX = "module."
SHOWN = 5  # how many keys an error message names per category


@dataclass
class LoadReport:
    """What a :func:`load_weights` call did. ``skipped`` maps each checkpoint key not loaded to the reason."""

    source: str
    mode: str
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # model keys the checkpoint did not provide

    @property
    def num_loaded(self) -> int:
        return len(self.loaded)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def by_part(self) -> dict[str, dict[str, int]]:
        """Per part of the model (backbone, neck, head, motion branch): its tensors that were loaded, that the
        checkpoint holds with another shape, and that it does not hold at all."""
        counts = {part: {"loaded": 0, "shape mismatch": 0, "absent": 0} for part in MODEL_PARTS}
        mismatched = {key for key, reason in self.skipped.items() if reason.startswith("shape")}
        for key in self.loaded:
            counts[model_part(key)]["loaded"] += 1
        for key in self.missing:
            counts[model_part(key)]["shape mismatch" if key in mismatched else "absent"] += 1
        return counts

    def summary(self) -> str:
        """A few lines for the console: per part what was loaded, then the first skipped keys and why."""
        lines = [f"{self.source}: loaded {self.num_loaded} tensors ({self.mode}), skipped {self.num_skipped} of the "
                 f"checkpoint's; model tensors by part:"]
        for part, counts in self.by_part().items():
            total = sum(counts.values())
            state = ("all loaded" if counts["loaded"] == total else
                     ", ".join(f"{number} {what}" for what, number in counts.items() if number))
            lines.append(f"  {part:<13} {total:4d} tensors: {state}")
        for key, reason in list(self.skipped.items())[:SHOWN]:
            lines.append(f"  skipped {key}: {reason}")
        if self.num_skipped > SHOWN:
            lines.append(f"  ... and {self.num_skipped - SHOWN} more skipped")
        return "\n".join(lines)


# The top-level parts of Network, as a report names them; everything else belongs to the training-only motion
# branch (mapping0-2 and the cross-slice ConvLSTM).
MODEL_PARTS = ("backbone", "neck", "head", "motion branch")


def model_part(key: str) -> str:
    """The part of the model a state-dict key belongs to."""
    top = key.split(".", 1)[0]
    return top if top in MODEL_PARTS else "motion branch"


def is_detector_key(key: str) -> bool:
    """Whether a state-dict key belongs to the detector (backbone, neck, head): what inference runs."""
    return model_part(key) != "motion branch"


def holds_motion_branch(state: Mapping[str, torch.Tensor]) -> bool:
    return any(not is_detector_key(key) for key in state)


def detector_state(state: Mapping[str, torch.Tensor], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The detector's tensors of ``state`` (the training-only motion branch left out), floating ones cast to
    ``dtype`` when given (integer counters stay as they are)."""
    return {key: value.to(dtype) if dtype is not None and value.is_floating_point() else value
            for key, value in state.items() if is_detector_key(key)}


def read_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load`` (CPU, weights only) with one-line errors naming the file."""
    path = Path(path)
    if not path.exists():
        raise SSTNetError(f"{path}: weights file not found")
    if not path.is_file():
        raise SSTNetError(f"{path}: not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and format errors all mean "not a checkpoint we can read"
        raise SSTNetError(f"{path}: {unreadable_reason(exc)}") from exc


CODE_REFUSAL = ("refused: the file holds Python objects other than tensors and plain containers, and loading it "
                "could run code; only plain weights files are loaded")


def would_run_code(exc: Exception) -> bool:
    """Whether the weights-only loader refused a pickle because it names Python objects (classes, functions) to
    build: a whole pickled model, or a booby-trapped file."""
    return isinstance(exc, pickle.UnpicklingError) and "GLOBAL" in str(exc)


def unreadable_reason(exc: Exception) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a file, in one sentence of ours: a pickle that needs more
    than tensors and plain containers is refused outright (loading it could run code), never with PyTorch's
    advice to turn the protection off."""
    text = str(exc).strip()
    if would_run_code(exc):
        return CODE_REFUSAL
    if "WeightsUnpickler error:" in text:  # not a pickle at all: keep PyTorch's reason, not its advice
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
    detail = text.splitlines()[0] if text else type(exc).__name__
    return f"not a readable PyTorch weights file ({detail[:200]})"


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside ``obj`` (plain or wrapped in ``model`` / ``state_dict``), ``module.`` stripped."""
    seen = 0
    while not _is_state_dict(obj):
        wrapped = None
        if isinstance(obj, Mapping):
            wrapped = next((obj[key] for key in WRAPPER_KEYS if isinstance(obj.get(key), Mapping)), None)
        if wrapped is None or seen >= 3:
            what = f"a dict with keys {', '.join(map(str, list(obj)[:SHOWN]))}" if isinstance(obj, Mapping) \
                else type(obj).__name__
            raise SSTNetError(f"{source}: holds no state dict (found {what}; expected tensors by name, or "
                              f"{' / '.join(repr(k) for k in WRAPPER_KEYS)} wrapping them)")
        obj, seen = wrapped, seen + 1
    state = dict(obj)
    while state and all(key.startswith(DDP_PREFIX) for key in state):
        state = {key[len(DDP_PREFIX):]: value for key, value in state.items()}
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise SSTNetError(f"{source}: {key} holds {bad} NaN or infinite value(s); such weights compute nothing "
                              "(a diverged run?) and are refused")
    return state


# Where this project's weights carry their own description: the state dict's per-module metadata, root entry,
# which PyTorch keeps through save and load and which load_state_dict (strict included) ignores, so the authors'
# code still loads the file as it is.
RECORD_KEY = "sstnet"
INSIDE = "the description inside the weights"


def embed_record(state: Mapping[str, torch.Tensor], record: dict) -> "OrderedDict[str, torch.Tensor]":
    """A copy of ``state`` that carries ``record`` (the sidecar's content) inside it."""
    copy = OrderedDict(state)
    metadata = OrderedDict(getattr(state, "_metadata", None) or {})
    metadata[""] = {**metadata.get("", {}), RECORD_KEY: record}
    copy._metadata = metadata  # type: ignore[attr-defined]
    return copy


def embedded_record(obj: Any) -> dict | None:
    """The description a loaded checkpoint carries inside it (see :func:`embed_record`), if any."""
    for candidate in (obj, *(obj.get(key) for key in WRAPPER_KEYS if isinstance(obj, Mapping))):
        record = (getattr(candidate, "_metadata", None) or {}).get("", {}).get(RECORD_KEY)
        if isinstance(record, dict):
            return record
    return None


def sidecar_of(path: str | os.PathLike) -> Path | None:
    """The sidecar of ``path``: beside the file itself (a symbolic link resolved), else beside the link; only a
    regular file counts (a FIFO or folder there is never opened)."""
    candidates = [Path(sidecar_path(Path(path).resolve())), Path(sidecar_path(path))]
    return next((candidate for candidate in candidates if candidate.is_file()), None)


def weights_record(path: str | os.PathLike, obj: Any | None = None) -> tuple[dict | None, str]:
    """The description of the weights at ``path`` as written (the dict a sidecar holds) and where it was found:
    inside the file, else its sidecar; (None, "") when neither. ``obj``: the already loaded checkpoint."""
    record = embedded_record(read_checkpoint(path) if obj is None else obj)
    if record is not None:
        return record, INSIDE
    sidecar = sidecar_of(path)
    if sidecar is None:
        return None, ""
    try:
        return json.loads(sidecar.read_text(encoding="utf-8")), f"sidecar {sidecar}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SSTNetError(f"{sidecar}: unreadable weights sidecar ({exc}); fix or delete it") from None


def _first(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:SHOWN])
    return shown + (f" (+{len(keys) - SHOWN} more)" if len(keys) > SHOWN else "")


def load_weights(model: nn.Module, source: str | os.PathLike | Mapping, mode: str = "strict",
                 include: Sequence[str] | None = None, name: str | None = None) -> LoadReport:
    """Load ``source`` (a checkpoint path or a loaded checkpoint / state dict) into ``model``.

    ``mode`` is ``strict`` or ``partial`` (see the module docstring). ``include`` (partial only): load just the
    keys starting with one of these prefixes. ``name`` names the source in messages (default: its path, or
    "state dict" for a loaded one). Returns a :class:`LoadReport`.
    """
    if mode not in MODES:
        raise SSTNetError(f"weights mode {mode!r}: expected one of {', '.join(MODES)}")
    if include is not None and mode != "partial":
        raise SSTNetError("weights: 'include' applies to partial loading only")
    if isinstance(source, Mapping):
        name, obj = name or "state dict", source
    else:
        name, obj = name or str(source), read_checkpoint(source)
    state = extract_state_dict(obj, name)
    model_state = model.state_dict()
    report = LoadReport(source=name, mode=mode)

    if mode == "strict":
        # Detector-only weights (strip_weights.py) fit: the training-only motion branch, absent as a whole, keeps
        # its initialisation; inference never runs it.
        optional = () if holds_motion_branch(state) else [key for key in model_state if not is_detector_key(key)]
        missing = [key for key in model_state if key not in state and key not in optional]
        unexpected = [key for key in state if key not in model_state]
        mismatched = [f"{key} {tuple(state[key].shape)} vs model {tuple(value.shape)}"
                      for key, value in model_state.items() if key in state and state[key].shape != value.shape]
        if missing or unexpected or mismatched:
            problems = []
            if missing:
                problems.append(f"{len(missing)} missing: {_first(missing)}")
            if unexpected:
                problems.append(f"{len(unexpected)} unexpected: {_first(unexpected)}")
            if mismatched:
                problems.append(f"{len(mismatched)} with another shape: {_first(mismatched)}")
            raise SSTNetError(f"{name}: weights do not fit this model (another architecture, variant, frame or "
                              f"class count?) — {'; '.join(problems)}")
        model.load_state_dict({**model_state, **state}, strict=True)
        report.loaded = list(state)
        report.missing = list(optional)
        return report

    merged = dict(model_state)
    for key, value in state.items():
        if include is not None and not any(key.startswith(prefix) for prefix in include):
            report.skipped[key] = "not included"
        elif key not in model_state:
            report.skipped[key] = "not in model"
        elif value.shape != model_state[key].shape:
            report.skipped[key] = f"shape {tuple(value.shape)} vs model {tuple(model_state[key].shape)}"
        else:
            merged[key] = value
            report.loaded.append(key)
    if not report.loaded:
        raise SSTNetError(f"{name}: no tensor matches this model by name and shape "
                          f"(checkpoint keys: {_first(list(state))})")
    model.load_state_dict(merged, strict=True)
    loaded = set(report.loaded)
    report.missing = [key for key in model_state if key not in loaded]
    return report


# YOLOX width of each variant, read off the stem's output channels (int(64 · width)).
_PHI_BY_STEM_WIDTH = {16: "nano", 24: "tiny", 32: "s", 48: "m", 64: "l", 80: "x"}
_STEM = "backbone.backbone.stem.conv.conv.weight"
_NECK_REF = "neck.conv_ref.0.conv.weight"     # input channels: (T − 1) frames of the neck width
_NECK_WIDTH = "neck.conv_ref.1.conv.weight"   # output channels: the neck width
_CLASSES = "head.cls_preds.0.weight"          # output channels: the classes
_LSTM = "mapping1.2.weight"                   # output channels: the motion branch width


def architecture_of(state: Mapping[str, torch.Tensor], source: str = "weights") -> dict[str, int | str]:
    """phi, frames per window, classes and motion-branch width (None for detector-only weights) of SSTNet
    weights, read off tensor shapes.

    Works for weights without a sidecar (e.g. the authors'); raises :class:`SSTNetError` when a tensor that tells
    one of them is absent (not SSTNet weights).
    """
    missing = [key for key in (_STEM, _NECK_REF, _NECK_WIDTH, _CLASSES) if key not in state]
    if missing:
        raise SSTNetError(f"{source}: not SSTNet weights (no {_first(missing)})")
    phi = _PHI_BY_STEM_WIDTH.get(int(state[_STEM].shape[0]))
    if phi is None:
        raise SSTNetError(f"{source}: stem width {int(state[_STEM].shape[0])} matches no YOLOX size")
    width = int(state[_NECK_WIDTH].shape[0])
    frames, rest = divmod(int(state[_NECK_REF].shape[1]), width)
    if rest:
        raise SSTNetError(f"{source}: neck input channels {int(state[_NECK_REF].shape[1])} are not a multiple of its "
                          f"width {width}")
    return {"phi": phi, "num_frame": frames + 1, "num_classes": int(state[_CLASSES].shape[0]),
            "lstm_hidden": int(state[_LSTM].shape[0]) if _LSTM in state else None}


def _stale_sidecar_note(path: str | os.PathLike, record: dict) -> str | None:
    """A note when weights that describe themselves have a sidecar that says something else (or cannot be read)."""
    sidecar = sidecar_of(path)
    if sidecar is None:
        return None
    try:
        same = json.loads(sidecar.read_text(encoding="utf-8")).get("model") == record.get("model")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        same = False
    if same:
        return None
    return (f"note: {sidecar} does not match the description inside {path} (a stale or foreign sidecar); the "
            "weights' own description is used")


def read_trained_weights(path: str | os.PathLike,
                         any_weights: bool = False) -> tuple[TrainedModel | None, dict[str, torch.Tensor]]:
    """Load SSTNet weights and say what model they hold: from the description they carry inside them, else their
    sidecar ``<weights>.json`` (beside the file, a symbolic link resolved), checked against the tensors; else from
    the tensor shapes. Detector-only weights need a description for the motion-branch width. ``any_weights``:
    weights that are not SSTNet's (e.g. YOLOX COCO weights for ``--pretrained``) or that cannot say their model give
    None instead of an error. Weights with NaN or infinite values are refused."""
    name = str(path)
    obj = read_checkpoint(path)
    state = extract_state_dict(obj, name)
    try:
        shapes = architecture_of(state, name)
    except SSTNetError:
        if any_weights:
            return None, state
        raise
    record, where = weights_record(path, obj)
    if record is None:
        if shapes["lstm_hidden"] is None:
            if any_weights:
                return None, state
            raise SSTNetError(f"{name}: detector-only weights without their sidecar {sidecar_path(path)} "
                              "(strip_weights.py writes both; it says the model)")
        return TrainedModel(name, shapes["phi"], shapes["num_frame"], shapes["lstm_hidden"],
                            shapes["num_classes"]), state
    trained = trained_from_sidecar(record, name, described_by=INSIDE if where == INSIDE else None)
    if where == INSIDE:
        trained = dataclasses.replace(trained, note=_stale_sidecar_note(path, record))
    for key, value in shapes.items():
        if value is not None and getattr(trained, key) != value:
            source = f"{name} ({where})" if where == INSIDE else where
            raise SSTNetError(f"{source}: says {key} {getattr(trained, key)}, but the weights hold {value}; it "
                              "belongs to other weights (fix or delete it)")
    return trained, state
