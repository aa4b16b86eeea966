"""CLI fixtures: a tiny random SD saved like a real one, an in-process runner, small recipes (128 px, 3 steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from p2p_cli.cli.main import app
from tests.shared_loads import share

SMALL = {
    "name": "small",
    "source": "a painting of a squirrel eating a burger",
    "size": 128,
    "steps": 3,
    "edits": [
        {"target": "a painting of a lion eating a burger", "local_blend": {"words": ["squirrel", "lion"]}},
        {"target": "a painting of a squirrel eating a burger at night"},
    ],
}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, save_tiny_model) -> Path:
    """A tiny random SD (128 px images) on disk: loaded through the same path as a real model."""
    return share(save_tiny_model(tmp_path_factory.mktemp("tiny-sd")))


@pytest.fixture
def small() -> dict:
    """A two-edit recipe (replace with a local blend, refine) for the tiny model."""
    return json.loads(json.dumps(SMALL))


@pytest.fixture
def cli():
    """cli(*args, input=None, env=None) -> click Result (stdout and stderr apart)."""
    runner = CliRunner()

    def invoke(*args, input=None, env=None):
        return runner.invoke(app, [str(a) for a in args], input=input, env=env)

    return invoke


@pytest.fixture
def write_recipe(tmp_path):
    """write_recipe(data, name="small") -> path of a YAML file holding data."""

    def write(data: dict | None = None, name: str = "small") -> Path:
        data = SMALL if data is None else data
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write
