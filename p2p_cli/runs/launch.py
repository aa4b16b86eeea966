"""Many recipes, many processes: each process of a torchrun or accelerate launch takes its own share of the
recipes, and `--resume` keeps the folders a killed run already finished. No scheduler of our own: the
launchers start the processes and set RANK, WORLD_SIZE and LOCAL_RANK; torch.distributed (gloo) gathers what
each process did so that rank 0 writes one index.jsonl."""

from __future__ import annotations

import os
from typing import Any


def launch() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment; (0, 1, 0) without one."""
    def number(name: str, default: int) -> int:
        try:
            return int(os.environ.get(name, default))
        except ValueError:
            return default

    world = max(1, number("WORLD_SIZE", 1))
    rank = min(max(0, number("RANK", 0)), world - 1)
    return rank, world, max(0, number("LOCAL_RANK", 0))


def shard(works: list, rank: int, world: int) -> list:
    """This rank's share: the most expensive work first (each item's `cost`, 1 where it has none), each to the
    rank with the least work so far (ties to the lower rank), so every process of a launch makes the same split;
    kept in the given order. Items of equal cost go round-robin (the k-th to rank k mod world)."""
    if world <= 1:
        return list(works)
    load = [0] * world
    owner = {}
    costs = [getattr(work, "cost", 1) for work in works]
    for index in sorted(range(len(works)), key=lambda i: (-costs[i], i)):
        r = min(range(world), key=lambda k: (load[k], k))
        owner[index] = r
        load[r] += costs[index]
    return [work for i, work in enumerate(works) if owner[i] == rank]


def device_for(device, world: int, local_rank: int):
    """Under a launcher, a bare "cuda" becomes this process's GPU (LOCAL_RANK modulo the GPUs it sees)."""
    if world > 1 and device.type == "cuda" and device.index is None:
        import torch

        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return device


def gather(payload: Any, world: int) -> list:
    """Every process's payload, in rank order, on every process (torch.distributed's all_gather_object over gloo,
    then the group is closed); [payload] without a launcher. Each process calls it once, when its work is done."""
    if world <= 1:
        return [payload]
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    gathered: list = [None] * world
    dist.all_gather_object(gathered, payload)
    dist.barrier()
    dist.destroy_process_group()
    return gathered
