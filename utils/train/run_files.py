"""Weights and resume checkpoints on disk, always written atomically.

Weights files (``last_epoch_weights.pth``, ``best_epoch_weights.pth``, ``epNNN-...pth``) are plain state dicts
that the authors' code loads as they are; beside each, ``<weights>.json`` says what model they hold. The resume
checkpoint holds everything needed to continue a run exactly; the previous one is kept as ``*.prev.pth`` until
the new one is complete.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from nets.weights import CODE_REFUSAL, embed_record, would_run_code

from ..errors import SSTNetError
from ..runtime.fileio import atomic_path, write_json
from ..sidecar import sidecar_path

RESUME_NAME = "last_checkpoint.pth"


def save_state(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary name, then rename."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_weights(state: dict, path: str | os.PathLike, sidecar: dict) -> None:
    """A weights file (a plain state dict, carrying ``sidecar`` inside it where strict loading ignores it) and then its
    sidecar ``<weights>.json``: the file describes itself even when the sidecar is lost, renamed away or stale, and a
    write that fails leaves the previous weights whole."""
    save_state(embed_record(state, sidecar), path)
    write_json(sidecar_path(path), sidecar, indent=2)


def previous_path(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def save_resume(state: dict, path: str | os.PathLike) -> None:
    """Write a resume checkpoint; the one it replaces stays as ``*.prev.pth`` until this one is complete."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        if path.exists():
            os.replace(path, previous_path(path))


def load_resume(path: str | os.PathLike) -> dict:
    """Read a resume checkpoint; a missing or corrupt file names the previous checkpoint to fall back on."""
    path = Path(path)
    previous = previous_path(path)
    hint = f"; the previous checkpoint {previous} may still be usable" if previous.exists() and previous != path else ""
    if not path.is_file():
        raise SSTNetError(f"--resume {path}: file not found{hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        if would_run_code(exc):
            raise SSTNetError(f"--resume {path}: {CODE_REFUSAL}") from None
        raise SSTNetError(f"--resume {path}: not a readable checkpoint ({type(exc).__name__}){hint}") from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise SSTNetError(f"--resume {path}: not a resume checkpoint of this project (use --pretrained for weights)"
                          f"{hint}")
    return state
