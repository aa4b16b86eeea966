"""A diffusers pipeline the user already has, as a model: its components used in place (nothing copied, moved or
reloaded), the same pictures as the same folder loaded by name for every family, and the pipeline generating as
before afterwards (its attention processors and scheduler untouched)."""

from __future__ import annotations

import pytest
import torch

import p2p_cli as p2p
from p2p_cli.models import ModelLoadError
from p2p_cli.user_pipeline import as_model, from_pipeline

RECIPE = {"source": "a red cat on a sofa", "steps": 2, "seed": 3, "size": 128,
          "edits": [{"target": "a blue cat on a sofa", "type": "replace"}, {"target": "a red cat on a sofa",
                                                                            "type": "reweight", "reweight": {"red": 2}}]}
PIPELINES = {"sd": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline", "sd3": "StableDiffusion3Pipeline",
             "flux": "FluxPipeline", "chroma": "ChromaPipeline"}


@pytest.fixture(scope="module", params=list(PIPELINES))
def folder_and_pipe(request, tmp_path_factory, save_tiny_model):
    import diffusers

    family = request.param
    folder = save_tiny_model(tmp_path_factory.mktemp(f"pipe-{family}"), family=family)
    pipe = getattr(diffusers, PIPELINES[family]).from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return family, folder, pipe


def generate(pipe) -> torch.Tensor:
    """The pipeline's own picture for one prompt and seed."""
    kwargs = {"height": 128, "width": 128} if type(pipe).__name__ in ("StableDiffusion3Pipeline", "FluxPipeline",
                                                                     "ChromaPipeline") else {}
    return pipe("a red cat on a sofa", num_inference_steps=2, generator=torch.Generator().manual_seed(1),
                output_type="pt", **kwargs).images


def test_same_pictures_as_the_folder_by_name_and_the_pipeline_unchanged(folder_and_pipe):
    family, folder, pipe = folder_and_pipe
    before = generate(pipe)
    processors = dict(pipe.components.get("unet", pipe.components.get("transformer")).attn_processors)
    scheduler = dict(pipe.scheduler.config)
    weights = {name: p.data_ptr() for name, p in pipe.vae.named_parameters()}

    model = from_pipeline(pipe)
    assert model.family.name == family and model.id == str(folder.resolve())
    for name in ("unet", "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer"):
        assert getattr(model, name) is getattr(pipe, name, None)  # the very objects: nothing copied
    ours = p2p.edit(pipe, RECIPE, maps=False).run.images
    by_name = p2p.edit(p2p.load_model(str(folder), device="cpu", dtype="fp32"), RECIPE, maps=False).run.images
    assert torch.equal(ours, by_name)

    denoiser = pipe.components.get("unet", pipe.components.get("transformer"))
    assert {k: v for k, v in denoiser.attn_processors.items()} == processors  # the same processor objects
    assert dict(pipe.scheduler.config) == scheduler
    assert {name: p.data_ptr() for name, p in pipe.vae.named_parameters()} == weights
    assert torch.equal(generate(pipe), before)


def test_extras_are_ignored_and_the_scheduler_settings_match_loading_by_name(save_tiny_model, tmp_path):
    """A safety checker and its feature extractor (a pipeline as the hub ships it) do not reach the Model, and SD's
    DDIM settings come from the folder's scheduler file as load_model reads it (not the class's defaults)."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    folder = save_tiny_model(tmp_path / "sd")
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    tiny = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4)
    checker = StableDiffusionSafetyChecker(CLIPConfig(text_config=tiny, vision_config={**tiny, "image_size": 32,
                                                                                       "patch_size": 8},
                                                      projection_dim=16))
    with_extras = StableDiffusionPipeline(**{**pipe.components, "safety_checker": checker,
                                             "feature_extractor": CLIPImageProcessor(),
                                             "scheduler": PNDMScheduler.from_config(pipe.scheduler.config)})
    model = as_model(with_extras)
    assert "safety_checker" not in model.parts() and model.unet is pipe.unet
    assert dict(model.scheduler.config) == dict(p2p.load_model(str(folder), device="cpu", dtype="fp32").scheduler.config)


def test_not_a_model():
    with pytest.raises(TypeError, match="a model is a p2p Model"):
        as_model("shapes")

    class Other:  # a pipeline-like object holding no known denoiser
        components = {"vae": None}
        config = {}

    with pytest.raises(ModelLoadError, match="a Other: unsupported model"):
        as_model(Other())
