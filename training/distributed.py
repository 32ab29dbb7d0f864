"""Data-parallel training over several GPUs or machines: ``torchrun ... -m training [flags]``.

    torchrun --standalone --nproc-per-node=4 -m training --output checkpoints/mine        # one host, 4 GPUs
    torchrun --nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \
        -m training --data /shared/reviews.csv --output /shared/checkpoints/mine            # two hosts

torchrun sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; ``python -m training`` sees them and trains with
``DistributedDataParallel`` (NCCL on CUDA, gloo on CPU). Every rank loads the data and builds the same
tokenizer and model (same seed; DDP also broadcasts rank 0's weights). Each epoch, every rank draws the
same length-bucketed batches from a generator seeded by (seed, epoch) — DistributedSampler's ``set_epoch``
— and takes its own rows of each batch: rank r gets rows r, r+W, r+2W, ... So the ranks see disjoint
shares of every epoch, gradients are averaged over the whole batch, and the global batch size, number of
steps and learning-rate schedule are those of a single-process run: hyperparameters carry over as they
are, and ``--batch-size`` is the global batch (raise it with the number of GPUs to keep each one busy).
Validation runs on every rank and rank 0's verdict is broadcast, so early stopping never diverges. Only
rank 0 writes the per-epoch resume state and the checkpoint, and prints the report.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from training.batches import EncodedSplit, bucketed_batches


@dataclass
class DataParallel:
    """This process's place in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    seed: int  # of the training run: seeds every rank's batch order

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # The training.loop.Strategy of a torchrun job.

    def wrap(self, model: nn.Module) -> nn.Module:
        """The DDP-wrapped forward: gradients are averaged over the ranks in ``backward``."""
        ids = [self.local_rank] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def rng(self, seed: int) -> np.random.Generator:
        """Word dropout: each rank its own stream (batch order does not use it)."""
        return np.random.default_rng([seed, self.rank])

    def batches(
        self, split: EncodedSplit, batch_size: int, epoch: int, rng: np.random.Generator
    ) -> list[np.ndarray]:
        """This rank's rows of every batch of ``epoch`` (the same batches on every rank)."""
        order = np.random.default_rng([self.seed, epoch])
        batches = bucketed_batches(split, batch_size, order)
        # A batch with fewer rows than ranks would leave a rank idle, and DDP needs every rank each step.
        return [rows[self.rank :: self.world_size] for rows in batches if len(rows) >= self.world_size]

    def agree(self, report: dict[str, Any]) -> dict[str, Any]:
        """Rank 0's validation report: ranks must agree on "improved" and on stopping, or one would
        leave while the others wait."""
        return self.broadcast(report)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def launched() -> bool:
    """Whether this process is one of several started by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str | None, seed: int) -> DataParallel:
    """Join the torchrun job described by the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device in (None, "auto") else str(device).startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if rank != 0:
        # One report per job: the other ranks' stdout (epoch lines, final report) goes nowhere.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    return DataParallel(rank, world, local_rank, dev, seed)


def setup(args: argparse.Namespace) -> DataParallel | None:
    """For ``python -m training`` under torchrun: join the job and point ``args.device`` at this rank's
    device. Outside torchrun: None, and nothing changes."""
    if not launched():
        return None
    if getattr(args, "resume", False):
        raise ValueError("--resume is not supported under torchrun yet: resume in one process, or start over")
    parallel = init_from_env(args.device, args.seed)
    args.device = str(parallel.device)
    atexit.register(parallel.close)
    return parallel
