"""The bundled shapes models: their weights, and the words they were trained on (vocabulary.py). The world that
drew their training scenes, the trainers and the evaluation live in lab/shapes (not installed)."""

from pathlib import Path

from p2p_cli.resolve import BUNDLED


def weights_dir() -> Path:
    """The folder holding the bundled model (diffusers StableDiffusionPipeline layout)."""
    return BUNDLED["shapes"]
