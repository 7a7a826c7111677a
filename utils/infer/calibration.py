"""Calibration samples for int8 export: real windows of a DAUB-layout folder, read as the evaluation reads them."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import torch

from nets import Network

from ..data.annotations import read_coco
from ..deploy.onnx_int8 import Calibration
from ..errors import SSTNetError
from ..model_spec import ModelSpec
from .evaluation import scored_records
from .sources import frame_batches, plan_sequence_walk


def calibration_windows(model: Network, spec: ModelSpec, roots: Sequence[str | Path] | str | Path, split: str,
                        count: int, workers: int = 0) -> Calibration:
    """``count`` key frames spread evenly over the ``split`` of each folder in ``roots`` (an equal share each; every
    listed frame, annotated or not), their windows read as the evaluation reads them, and the float model's
    per-frame features of each window."""
    roots = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(root) for root in roots]
    chosen = []
    for position, root in enumerate(roots):
        annotations = root / "annotations" / f"instances_{split}2017.json"
        if not annotations.is_file():
            raise SSTNetError(f"--calibration {root}: no {annotations.relative_to(root)} (a DAUB-layout folder with a "
                              f"{split} split is expected; --calibration-split picks another)")
        records = scored_records(read_coco(annotations, root), all_frames=True)
        share = count // len(roots) + (position < count % len(roots))
        chosen += [records[int(index * len(records) / share)] for index in range(min(share, len(records)))]
    plan = plan_sequence_walk(chosen, spec.num_frame, frame_step=spec.frame_step)
    images: dict[tuple[str, int], torch.Tensor] = {}
    for batch in frame_batches(plan, spec.input_shape, 8, workers):
        for ref, image in zip(batch.refs, batch.images):
            images[(ref.sequence, ref.number)] = image
    frames, features, windows = [], [], []
    # The streaming graphs' per-frame features are the fast computation's (the cache the engine keeps).
    stream_model = copy.deepcopy(model).eval().set_computation("fast")
    with torch.no_grad():
        for ref in plan:
            if not ref.is_key:
                continue
            window = torch.stack([images[(ref.sequence, number)] for number in ref.window])  # T×3×H×W
            per_frame = stream_model.frame_features(window.to(next(stream_model.parameters()).device))
            frames.append(window[-1:].numpy())
            features.append([per_frame[t:t + 1].cpu().numpy() for t in range(spec.num_frame)])
            windows.append(window.permute(1, 0, 2, 3).unsqueeze(0).numpy())
    names = " + ".join(str(root) for root in roots)
    return Calibration(frames, features, windows, f"{names} ({split}, {len(frames)} key frames)")
