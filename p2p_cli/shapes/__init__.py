"""The bundled shapes world: scene generator, captions, oracle, training, and the trained weights."""

from importlib import resources
from pathlib import Path


def weights_dir() -> Path:
    """The folder holding the bundled model (diffusers StableDiffusionPipeline layout)."""
    return Path(str(resources.files("p2p_cli") / "shapes" / "weights"))
