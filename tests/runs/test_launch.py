"""Each process of a torchrun or accelerate launch takes a balanced, deterministic share of the recipes
(p2p_cli/runs/launch.py); tests/cli/test_scale.py runs them under a real launcher."""

from __future__ import annotations

from pathlib import Path

from p2p_cli.recipe import parse_recipe
from p2p_cli.runs.edits import Job
from p2p_cli.runs.launch import launch, shard

SOURCE = "a painting of a squirrel eating a burger"


def job(name: str, steps: int, edits: int):
    recipe = parse_recipe({"name": name, "source": SOURCE, "steps": steps,
                           "edits": [{"target": SOURCE + " at night"}] * edits})
    return Job(name, Path(name), recipe=recipe)


def test_shards_are_balanced_disjoint_deterministic_and_keep_order():
    jobs = [job(f"r{i}", steps, edits) for i, (steps, edits) in enumerate([(50, 1), (10, 1), (50, 3), (20, 2),
                                                                            (5, 1), (40, 1), (30, 2)])]
    parts = [shard(jobs, r, 3) for r in range(3)]
    names = [[j.name for j in p] for p in parts]
    assert sorted(n for p in names for n in p) == sorted(j.name for j in jobs)  # each recipe exactly once
    assert all(p == sorted(p, key=lambda n: int(n[1:])) for p in names)  # command-line order kept
    loads = [sum(j.cost for j in p) for p in parts]
    assert max(loads) - min(loads) <= max(j.cost for j in jobs)  # greedy balance bound
    assert [[j.name for j in shard(jobs, r, 3)] for r in range(3)] == names  # the same split every time
    assert shard(jobs, 0, 1) == jobs


def test_launch_reads_the_launchers_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launch() == (0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "4"), monkeypatch.setenv("RANK", "2"), monkeypatch.setenv("LOCAL_RANK", "1")
    assert launch() == (2, 4, 1)


def test_equal_works_go_round_robin():
    """Works without a cost (dataset pairs) go to rank k mod world, the k-th each."""
    items = list(range(7))
    assert [shard(items, r, 3) for r in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
