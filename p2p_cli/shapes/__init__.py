"""The bundled shapes models: their weights, and the words they were trained on (vocabulary.py). The world that
drew their training scenes, the trainers and the evaluation live in lab/shapes (not installed)."""

from importlib import resources
from pathlib import Path


def weights_dir() -> Path:
    """The folder holding the bundled model (diffusers StableDiffusionPipeline layout)."""
    return Path(str(resources.files("p2p_cli") / "shapes" / "weights"))
