"""Many recipes, many processes: each process of a torchrun or accelerate launch takes its own share of the
recipes, and `--resume` keeps the folders a killed run already finished. No scheduler of our own: the
launchers start the processes and set RANK, WORLD_SIZE and LOCAL_RANK; torch.distributed (gloo) gathers what
each process did so that rank 0 writes one index.jsonl."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2p_cli.fingerprint import fingerprint as digest
from p2p_cli.paths import read_regular_text


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
    """What makes a recipe's folder: the recipe as given, the model and LoRAs, and the options that change the
    pictures (baseline, attention, attention pictures), fingerprinted (p2p_cli/fingerprint.py). `vae:` unset is
    left out, so that folders written before the key existed still resume."""
    recipe = job.recipe.model_dump(mode="json")
    if recipe.get("vae") is None:
        recipe.pop("vae", None)
    return digest({"recipe": recipe, "model": job.spec, "loras": list(job.loras),
                   "source_only": job.source_only, **{k: str(v) for k, v in sorted(how.items())}})


def resume_state(folder: Path, digest: str) -> str | None:
    """"finished" (run.json records this recipe and every file it lists is there, of its size), "damaged" (this
    recipe's folder with a file missing or changed: --resume runs it again in its place) or None."""
    from p2p_cli.files.outputs import intact

    try:
        record = json.loads(read_regular_text(Path(folder) / "run.json"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("input_sha256") != digest:
        return None
    return "finished" if intact(folder, record) else "damaged"


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


def write_lines(path: Path, rows: list[dict]) -> Path:
    """A JSON-lines file written whole (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_index(entries: list[dict], out: Path) -> Path:
    """OUT/index.jsonl: one line per recipe, in command-line order (entries carry their "index")."""
    return write_lines(Path(out) / "index.jsonl", sorted(entries, key=lambda e: e["index"]))


def write_failures(out: Path, failures: list[dict]) -> Path:
    """OUT/failures.jsonl: one line per manifest line that was invalid or failed, in file order."""
    return write_lines(Path(out) / "failures.jsonl", sorted(failures, key=lambda f: (f["recipe"].rsplit("#", 1)[0],
                                                                                     f.get("line", 0))))


@dataclass
class Tally:
    """What one process did: recipes done, kept (--resume) and failed, pictures written, seconds of work."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    pictures: int = 0
    seconds: float = 0.0

    @staticmethod
    def total(parts: list[Tally]) -> Tally:
        """The launch's tally: sums, and the longest process's seconds (they run side by side)."""
        return Tally(sum(p.done for p in parts), sum(p.skipped for p in parts), sum(p.failed for p in parts),
                     sum(p.pictures for p in parts), max((p.seconds for p in parts), default=0.0))

    def line(self) -> str:
        """"3 done, 1 skipped (finished earlier), 1 failed; 9 pictures in 4.2 s, 2.1 pictures/s"."""
        rate = self.pictures / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.done} done, {self.skipped} skipped (finished earlier), {self.failed} failed; {self.pictures}"
                f" picture{'s' if self.pictures != 1 else ''} in {self.seconds:.1f} s, {rate:.2f} pictures/s")
