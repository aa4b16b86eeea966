"""The library runs at the CLI's speed: load_model sets torch's CPU threads as `p2p` does (half the CPUs, passive
OpenMP waiting), and a user's own choice (threads=, OMP_NUM_THREADS, torch.set_num_threads) wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def notebook(*lines: str, **env: str) -> list[dict]:
    """Run `lines` in a fresh interpreter as a notebook would (no OMP_* set unless given); its JSON lines."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_"))}
    clean.update(PYTHONPATH=str(ROOT), **env)
    out = subprocess.run([sys.executable, "-c", "\n".join(lines)], env=clean, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


LOAD = 'p2p.load_model("shapes", device="cpu"{})'
REPORT = 'print(json.dumps({"threads": torch.get_num_threads(), "wait": os.environ.get("OMP_WAIT_POLICY")}))'


def test_default_threads_rule(monkeypatch):
    from p2p_cli.models import MAX_DEFAULT_THREADS, default_threads

    assert default_threads({"OMP_NUM_THREADS": "3"}) is None  # the user's setting: torch reads it
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert default_threads({}) == 1  # half of 2 cores: the other is left to the rest of the machine
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert default_threads({}) == MAX_DEFAULT_THREADS


def test_cpu_defaults_keep_the_users_wait_policy():
    from p2p_cli import cpu_defaults

    env = {}
    cpu_defaults(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    cpu_defaults(env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_a_notebook_gets_the_clis_threads_and_its_own_choices_win():
    from p2p_cli.models import default_threads

    reports = notebook("import json, os", "import p2p_cli as p2p", LOAD.format(""), "import torch", REPORT,
                       "torch.set_num_threads(3)", LOAD.format(""), REPORT,  # the user's torch setting is kept
                       LOAD.format(", threads=2"), REPORT, LOAD.format(""), REPORT)
    assert [r["threads"] for r in reports] == [default_threads({}), 3, 2, 2]
    assert {r["wait"] for r in reports} == {"PASSIVE"}


@pytest.mark.slow  # long (a subprocess or more); `make test-slow` runs it
def test_omp_num_threads_and_the_wait_policy_set_by_the_user_win():
    seen = notebook("import json, os", "import p2p_cli as p2p", LOAD.format(""), "import torch", REPORT,
                    OMP_NUM_THREADS="2", OMP_WAIT_POLICY="ACTIVE")  # torch caps it at the CPUs
    assert seen == [{"threads": 2, "wait": "ACTIVE"}]  # not the default 1 of 2 CPUs


@pytest.mark.slow  # long (a subprocess or more); `make test-slow` runs it
def test_a_torch_set_up_before_p2p_keeps_its_count():
    seen = notebook("import json, os, torch", "torch.set_num_threads(3)", "import p2p_cli as p2p", LOAD.format(""),
                    REPORT)
    assert seen[0]["threads"] == 3


def test_threads_must_be_positive():
    import p2p_cli as p2p

    with pytest.raises(ValueError, match="threads=0"):
        p2p.load_model("shapes", device="cpu", threads=0)
