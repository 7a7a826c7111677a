"""Held-out clips: a DAUB-layout folder's training split cut into the clips a recipe trains on and the clips it is
chosen on, so that the test split is never what a recipe is chosen by.

A clip is a sequence folder (``images/<split>/<clip>/``); where the COCO file lists ``videos`` (as
``videos_to_daub.py`` writes them) a frame's clip is its video, and the video's ``attributes`` (class, distance bin,
...) can stratify the draw.
"""
from __future__ import annotations

import random
from collections import defaultdict
from pathlib import PurePosixPath
from typing import Any, Sequence

from ..errors import SSTNetError


def image_clips(coco: dict) -> list[str]:
    """The clip each of ``coco``'s images belongs to, in order: its video's name, else the folder its file sits in."""
    video_names = {video["id"]: video["name"] for video in coco.get("videos", [])}
    return [video_names[image["video_id"]] if image.get("video_id") in video_names
            else PurePosixPath(image["file_name"].replace("\\", "/")).parent.name for image in coco["images"]]


def clip_attributes(coco: dict) -> dict[str, dict[str, Any]]:
    """Each clip of ``coco`` with its attributes (empty where the file lists no videos)."""
    attributes = {video["name"]: dict(video.get("attributes", {})) for video in coco.get("videos", [])}
    return {clip: attributes.get(clip, {}) for clip in sorted(set(image_clips(coco)))}


def draw_clips(clips: dict[str, dict[str, Any]], count: int, stratify: Sequence[str], seed: int) -> list[str]:
    """``count`` clips drawn at random (``seed``), each stratum (the clips sharing the values of the ``stratify``
    attributes) giving its share: the rounded-down shares first, the remainder to the strata with the largest
    fractions left. Returns the names, sorted."""
    if not 0 < count < len(clips):
        raise SSTNetError(f"--count {count}: must lie between 1 and {len(clips) - 1} (the split has {len(clips)} "
                          f"clips, and some must stay for training)")
    strata: dict[tuple, list[str]] = defaultdict(list)
    for name, attributes in clips.items():
        missing = [key for key in stratify if key not in attributes]
        if missing:
            raise SSTNetError(f"--stratify {' '.join(stratify)}: clip {name} has no attribute {missing[0]!r} "
                              f"(attributes: {', '.join(sorted(attributes)) or 'none'})")
        strata[tuple(str(attributes[key]) for key in stratify)].append(name)
    shares = {key: len(names) * count / len(clips) for key, names in strata.items()}
    take = {key: int(share) for key, share in shares.items()}
    for key in sorted(shares, key=lambda key: (take[key] - shares[key], key))[: count - sum(take.values())]:
        take[key] += 1
    rng = random.Random(seed)
    held = []
    for key in sorted(strata):
        held += rng.sample(sorted(strata[key]), take[key])
    return sorted(held)


def split_coco(coco: dict, held: set[str]) -> tuple[dict, dict]:
    """``coco`` cut into (the frames of clips not in ``held``, the frames of clips in ``held``), each with its
    annotations and videos and the same categories."""
    clips = image_clips(coco)
    parts = []
    for keep in (lambda clip: clip not in held, lambda clip: clip in held):
        images = [image for image, clip in zip(coco["images"], clips) if keep(clip)]
        ids = {image["id"] for image in images}
        part = dict(coco, images=images, annotations=[a for a in coco["annotations"] if a["image_id"] in ids])
        if "videos" in coco:
            part["videos"] = [video for video in coco["videos"] if keep(video["name"])]
        parts.append(part)
    return parts[0], parts[1]
