"""Multi-process training under ``torchrun``: process-group set-up, rank helpers and the epoch sampler."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..errors import SSTNetError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank among ``world_size`` processes and its local GPU index."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group ``torchrun`` describes in the environment (a single process when it does not)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info


def process_device(device: torch.device, info: DistInfo) -> torch.device:
    """Under DDP each process drives the GPU of its local rank."""
    if info.enabled and device.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return device


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``values`` over all processes (identity for one process)."""
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


class EpochSubsetSampler(Sampler[int]):
    """Each epoch, a fresh random subset of the dataset sized to whole global batches, split across processes.

    The release trains every epoch on the first ``(len // batch) // 5`` batches of a reshuffled loader, i.e. a
    random fifth of the frames; ``fraction`` generalises the fifth. The permutation depends only on
    (seed, epoch), so a resumed run draws the same subsets. Without shuffling (validation) the subset is the
    first frames in order. ``steps`` (``--epoch-steps``) sets the batches per epoch instead of ``fraction``.
    """

    def __init__(self, length: int, global_batch: int, fraction: float = 1.0, seed: int = 0, shuffle: bool = True,
                 info: DistInfo = DistInfo(), name: str = "dataset", steps: int | None = None) -> None:
        if not 0 < fraction <= 1:
            raise SSTNetError(f"{name}: the fraction of frames per epoch must be in (0, 1], got {fraction}")
        full_steps = length // global_batch
        if full_steps == 0:
            raise SSTNetError(f"{name}: {length} frames do not fill one batch of {global_batch}; "
                              "lower --batch-size or add data")
        if steps is not None and steps > full_steps:
            raise SSTNetError(f"{name}: --epoch-steps {steps} asks for more batches than its {length} frames fill "
                              f"({full_steps} of {global_batch}); lower --epoch-steps or add data")
        self.steps = steps if steps is not None else max(1, int(full_steps * fraction + 1e-9))
        self.length = length
        self.global_batch = global_batch
        self.seed = seed
        self.shuffle = shuffle
        self.info = info
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps * self.global_batch // self.info.world_size

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.length, generator=generator)
        else:
            order = torch.arange(self.length)
        chosen = order[:self.steps * self.global_batch]
        return iter(chosen[self.info.rank::self.info.world_size].tolist())
