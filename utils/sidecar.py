"""The weights sidecar ``<weights>.json``: what model a weights file holds (its spec, classes, where it came from).

Its format is defined here once; ``nets.weights`` reads it when loading, the trainer and ``strip_weights.py`` write it.
"""
from __future__ import annotations

import os
from typing import Any

from .errors import SSTNetError
from .model_spec import ModelSpec, TrainedModel, parse_input_shape


def weights_inputs(flag: str, weights: str | os.PathLike | None) -> list[tuple[str, str | os.PathLike | None]]:
    """A weights file and its sidecar as inputs of a run (for :func:`utils.runtime.fileio.check_output`)."""
    if weights is None:
        return []
    return [(flag, weights), (f"{flag} (its sidecar)", sidecar_path(weights))]


def sidecar_path(weights: str | os.PathLike) -> str:
    """Where the metadata of ``weights`` lives: the weights file's name plus ``.json``."""
    return os.fspath(weights) + ".json"


SIDECAR_FORMAT = "sstnet-weights/1"


def sidecar_record(spec: ModelSpec, num_classes: int, class_names: list[str], extra: dict) -> dict:
    """The content of a sidecar: the model spec, the classes, then whatever ``extra`` adds (data root, commit...)."""
    return {"format": SIDECAR_FORMAT, "model": {**spec.architecture(), "num_classes": num_classes},
            "class_names": list(class_names), "trained_with": {"computation": spec.computation, "amp": spec.amp},
            **extra}


def trained_from_sidecar(data: Any, source: str, described_by: str | None = None) -> TrainedModel:
    """Validate a parsed sidecar (or the same record carried inside the weights, ``described_by`` saying so); a
    malformed one is an error naming the file and field."""
    where = f"{source} ({described_by})" if described_by else sidecar_path(source)
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT or not isinstance(data.get("model"), dict):
        raise SSTNetError(f"{where}: not a weights sidecar of this project (expected \"format\": \"{SIDECAR_FORMAT}\" "
                          "and a \"model\" object)")
    model = data["model"]
    try:
        shape = parse_input_shape(model["input_size"], flag=f"{where}: model.input_size")
        spec = ModelSpec(phi=model["phi"], num_frame=model["num_frame"], lstm_hidden=model["lstm_hidden"],
                         input_shape=shape, frame_step=model.get("frame_step", 1))
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
                        tuple(names) if names is not None else None, True, extra, described_by=described_by,
                        frame_step=spec.frame_step)
