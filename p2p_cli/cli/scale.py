"""Many recipes, many processes: each process of a torchrun or accelerate launch takes its own share of the
recipes, and `--resume` keeps the folders a killed run already finished. No scheduler of our own: the
launchers start the processes and set RANK, WORLD_SIZE and LOCAL_RANK; torch.distributed (gloo) gathers what
each process did so that rank 0 writes one index.jsonl."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
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


def cost(job: Any) -> int:
    """What a recipe costs to run: steps x batch rows (the source, each edit, each baseline)."""
    recipe = job.recipe
    rows = 1 + len(recipe.edits) + sum(1 for e in recipe.edits if recipe.baseline or e.baseline)
    return recipe.steps * rows


def shard(jobs: list, rank: int, world: int) -> list:
    """This rank's jobs: the most expensive first, each to the rank with the least work so far (ties to the
    lower rank), so every process of a launch makes the same split; kept in command-line order."""
    if world <= 1:
        return list(jobs)
    load = [0] * world
    owner = {}
    for index in sorted(range(len(jobs)), key=lambda i: (-cost(jobs[i]), i)):
        r = min(range(world), key=lambda k: (load[k], k))
        owner[index] = r
        load[r] += cost(jobs[index])
    return [job for i, job in enumerate(jobs) if owner[i] == rank]


def fingerprint(job: Any, **how: Any) -> str:
    """A hash of what makes a recipe's folder: the recipe as given, the model and LoRAs, and the options that
    change the pictures (baseline, attention, attention pictures)."""
    what = {"recipe": job.recipe.model_dump(mode="json"), "model": job.spec, "loras": list(job.loras),
            "source_only": job.source_only, **{k: str(v) for k, v in sorted(how.items())}}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def finished(folder: Path, digest: str) -> bool:
    """Whether folder holds a finished run of exactly this recipe (its run.json says so; folders appear whole)."""
    try:
        record = json.loads((Path(folder) / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("input_sha256") == digest


def gather_index(entries: list[dict], out: Path, rank: int, world: int) -> Path | None:
    """Every process's entries, gathered to rank 0, which writes OUT/index.jsonl (one line per recipe, in
    command-line order); None on other ranks. Uses torch.distributed (gloo) under a launcher."""
    everything = entries
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        gathered: list = [None] * world
        dist.all_gather_object(gathered, entries)
        everything = [e for part in gathered for e in (part or [])]
        dist.barrier()
        dist.destroy_process_group()
    if rank != 0:
        return None
    everything.sort(key=lambda e: e["index"])
    path = Path(out) / "index.jsonl"
    tmp = path.with_name(f".index.jsonl.{os.getpid()}.tmp")
    Path(out).mkdir(parents=True, exist_ok=True)
    tmp.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in everything), encoding="utf-8")
    os.replace(tmp, path)
    return path
