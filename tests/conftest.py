"""Shared fixtures: the offline CLIP tokenizer, tiny random SD components and a way to save them as a model folder
(nothing is downloaded)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

# The inversion cache of the test run: one folder per test process (never the user's ~/.cache/p2p, never shared
# between xdist workers); tests that need their own set P2P_CACHE themselves.
os.environ.setdefault("P2P_CACHE", tempfile.mkdtemp(prefix="p2p-test-cache-"))


def pytest_configure(config):
    """Set up each process that runs tests. An xdist controller only hands tests out: it imports no torch (5 s of
    CPU before the workers start)."""
    if getattr(config.option, "numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    import torch

    import p2p_cli.models
    from tests.shared_loads import shared

    # Under pytest-xdist (`make test` runs two workers) each worker takes one thread, so two workers fill two cores.
    torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))
    # Before p2p_cli.api imports it: loads of the read-only fixture folders and the bundled models are shared
    # between tests while the model is as loaded (tests/shared_loads.py).
    p2p_cli.models.load_model = shared(p2p_cli.models.load_model)


def _tiny(components: str, id: str, **options):
    """A Model from lab.arch's tiny random components of that name."""
    import lab.arch
    from p2p_cli.models import from_components

    return from_components(getattr(lab.arch, components)(**options), id=id)


try:  # property-based tests: a few hundred examples by default, many more under `make test-slow`
    from hypothesis import HealthCheck, settings

    _common = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("default", max_examples=150, **_common)
    settings.register_profile("slow", max_examples=3000, **_common)
    settings.load_profile(os.environ.get("P2P_HYPOTHESIS_PROFILE", "default"))
except ImportError:  # the fuzz tests skip themselves without hypothesis
    pass


# The family matrix. A test parametrized over model families checks code that is the same on every family (the
# family lives below one adapter interface), so the default run (`make test`) takes it on four representatives:
# SD (a UNet, the bundled model's family), SD 2.x (v-prediction), SD3 (an MMDiT with CLIP + T5) and FLUX.2
# [klein] (double- and single-stream blocks, a chat template). Every family's own test file runs by default;
# `make test-slow` and CI (.ci/run) run the matrix on every family. A test whose families include no
# representative keeps its first one.
REPRESENTATIVE_FAMILIES = {"sd", "sd2", "sd3", "flux2-klein"}
_FIXTURE_FAMILY = {"tiny_model": "sd", "tiny_v_model": "sd2", "tiny_xl_model": "sdxl", "tiny_sd3_model": "sd3",
                   "tiny_flux_model": "flux", "tiny_qwen_image_model": "qwen-image",
                   "tiny_flux2_klein_model": "flux2-klein", "tiny_flux2_dev_model": "flux2-dev",
                   "tiny_chroma_model": "chroma"}
_FAMILY_NAMES = set(_FIXTURE_FAMILY.values())


def family_of(item) -> str | None:
    """The model family a collected test runs on, where it is parametrized over families (None elsewhere)."""
    for value in getattr(getattr(item, "callspec", None), "params", {}).values():
        if isinstance(value, str) and (value in _FIXTURE_FAMILY or value in _FAMILY_NAMES):
            return _FIXTURE_FAMILY.get(value, value)
    return None


# The lab's own tests (training, evaluation, benchmark internals: tests/lab/) test code the package does not ship;
# they run in `make test-rest` and CI, not in the default run.
LAB_TESTS = Path(__file__).parent / "lab"


@pytest.hookimpl(tryfirst=True)  # before -m "not slow" deselects
def pytest_collection_modifyitems(config, items):
    groups: dict[tuple, list] = {}
    for item in items:
        if LAB_TESTS in item.path.parents:
            item.add_marker(pytest.mark.slow)
        family = family_of(item)
        if family is not None:
            groups.setdefault((item.path, item.cls, item.originalname), []).append((family, item))
    for variants in groups.values():
        kept = {f for f, _ in variants if f in REPRESENTATIVE_FAMILIES} or {variants[0][0]}
        for family, item in variants:
            if family not in kept:
                item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tokenizer():
    from lab.arch import clip_tokenizer

    return clip_tokenizer()


@pytest.fixture(scope="session")
def tiny_model():
    """Tiny epsilon-prediction model: latent 16x16 (128 px), cross-attention layers at sides 16, 8, 4."""
    return _tiny("tiny_components", "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_v_model():
    """The same architecture as a v-prediction model (SD 2.x style)."""
    return _tiny("tiny_components", "tiny-v", seed=1, prediction_type="v_prediction")


@pytest.fixture(scope="session")
def tiny_xl_model():
    """Tiny SDXL-shaped model: latent 16x16 (128 px), cross-attention at 8 and 4, two text encoders."""
    return _tiny("tiny_xl_components", "tiny-xl", seed=0)


@pytest.fixture(scope="session")
def tiny_sd3_model():
    """Tiny SD3-shaped model: an MMDiT with two joint blocks on an 8x8 token grid, CLIP + T5 text (77 + 256)."""
    return _tiny("tiny_sd3_components", "tiny-sd3", seed=0)


@pytest.fixture(scope="session")
def tiny_flux_model():
    """Tiny FLUX.1-dev-shaped model: two double- and two single-stream blocks, T5 text (512), distilled guidance."""
    return _tiny("tiny_flux_components", "tiny-flux", seed=0)


@pytest.fixture(scope="session")
def tiny_qwen_image_model():
    """Tiny Qwen-Image-shaped model: two dual-stream blocks, a Qwen2.5-VL text model read through the chat template
    (512 positions, masked padding), a video VAE; true CFG."""
    return _tiny("tiny_qwen_image_components", "tiny-qwen-image", seed=0)


@pytest.fixture(scope="session")
def tiny_flux2_klein_model():
    """Tiny FLUX.2 [klein]-shaped model: one double- and two single-stream blocks, a Qwen3 read through its chat
    template (512 positions, layers 9, 18, 27), latents in 2x2 patches (128 channels, 8x8 at 128 px); CFG."""
    return _tiny("tiny_flux2_klein_components", "tiny-flux2-klein", seed=0)


@pytest.fixture(scope="session")
def tiny_chroma_model():
    """Tiny Chroma-shaped model: FLUX.1's tiny layout with Chroma's transformer, T5 text (512) run with its mask, the
    transformer's attention mask (prompt, end token and one padding token kept); true CFG."""
    return _tiny("tiny_chroma_components", "tiny-chroma", seed=0)


@pytest.fixture(scope="session")
def tiny_flux2_dev_model():
    """Tiny FLUX.2 [dev]-shaped model: klein's transformer with the guidance embedding, a 30-layer Mistral3 read
    through the system message and Mistral's template (layers 10, 20, 30); guidance-distilled, no CFG batch."""
    return _tiny("tiny_flux2_dev_components", "tiny-flux2-dev", seed=0)


@pytest.fixture(scope="session", params=["tiny_sd3_model", "tiny_flux_model", "tiny_qwen_image_model",
                                         "tiny_flux2_klein_model", "tiny_flux2_dev_model", "tiny_chroma_model"],
                ids=["sd3", "flux", "qwen-image", "flux2-klein", "flux2-dev", "chroma"])
def joint_model(request):
    """Each joint-attention (transformer, flow-matching) family's tiny model in turn."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session", params=["tiny_model", "tiny_xl_model"], ids=["sd", "sdxl"])
def family_model(request):
    """Each model family's tiny model in turn: the engine's properties must hold for every family."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A tiny random CLIPModel (32 px images, 16-d embeddings) saved like a real one, for the sweep's CLIP columns."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    text = dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                  num_attention_heads=4)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    return folder


def _save_tiny_model(folder: Path, seed: int = 0, family: str = "sd", **kwargs) -> Path:
    """arch.tiny_components() (family "sdxl": tiny_xl_components(), "sd3", "flux", "qwen-image": theirs) saved with
    save_pretrained, laid out as a diffusers pipeline folder."""
    from lab.arch import (tiny_chroma_components, tiny_components, tiny_flux2_dev_components,
                          tiny_flux2_klein_components, tiny_flux_components, tiny_qwen_image_components,
                          tiny_sd3_components, tiny_xl_components)

    if family in ("sd3", "flux", "qwen-image", "flux2-klein", "flux2-dev", "chroma"):  # by the family's own pipeline
        from diffusers import FluxPipeline, QwenImagePipeline, StableDiffusion3Pipeline

        if family == "qwen-image":
            QwenImagePipeline(**tiny_qwen_image_components(seed, **kwargs)).save_pretrained(folder)
        elif family == "flux2-dev":
            from diffusers import Flux2Pipeline

            Flux2Pipeline(**tiny_flux2_dev_components(seed, **kwargs)).save_pretrained(folder)
        elif family == "flux2-klein":
            from diffusers import Flux2KleinPipeline

            Flux2KleinPipeline(**tiny_flux2_klein_components(seed, **kwargs)).save_pretrained(folder)
        elif family == "chroma":
            from diffusers import ChromaPipeline

            ChromaPipeline(**tiny_chroma_components(seed, **kwargs)).save_pretrained(folder)
        elif family == "sd3":
            parts = {"text_encoder_3": None, "tokenizer_3": None, **tiny_sd3_components(seed, **kwargs)}
            StableDiffusion3Pipeline(**parts).save_pretrained(folder)
        else:
            FluxPipeline(**tiny_flux_components(seed, **kwargs)).save_pretrained(folder)
        return folder
    parts = tiny_xl_components(seed) if family == "sdxl" else tiny_components(seed, **kwargs)
    for name, part in parts.items():
        part.save_pretrained(folder / name)
    if family == "sdxl":
        index = {
            "_class_name": "StableDiffusionXLPipeline",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "scheduler": ["diffusers", "DDIMScheduler"],
            "force_zeros_for_empty_prompt": True,
        }
        (folder / "model_index.json").write_text(json.dumps(index, indent=2))
        return folder
    index = {
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


@pytest.fixture(scope="session")
def save_tiny_model():
    """save_tiny_model(folder, seed=0, **tiny_components options) -> folder: a tiny random SD written as a
    diffusers pipeline folder, to load through the same path as a real model."""
    return _save_tiny_model
