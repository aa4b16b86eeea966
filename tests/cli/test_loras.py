"""LoRA weights: loaded with diffusers' loader, they give the pictures diffusers' pipeline gives with the same
file and scale (every family); a recipe names them and run.json records them with their hashes."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

from lab.arch import tiny_components, tiny_xl_components
from p2p_cli.loras import LoraError, apply_loras
from p2p_cli.models import from_components
from p2p_cli.engine.pipeline import initial_latent, run_edit
from p2p_cli.recipe import RecipeError, parse_recipe

peft = pytest.importorskip("peft")

SOURCE = "a painting of a squirrel eating a burger"
COMPONENTS = {"sd": tiny_components, "sdxl": tiny_xl_components}


def make_lora(family: str, folder) -> str:
    """A random (non-zero) rank-4 LoRA on the UNet's attention projections, saved as diffusers saves one."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = COMPONENTS[family](seed=0)["unet"]
    torch.manual_seed(5)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                init_lora_weights=False))
    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    cls.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet), safe_serialization=True)
    return str(folder / "pytorch_lora_weights.safetensors")


def reference(family: str, lora: str, scale: float, steps: int, guidance: float) -> torch.Tensor:
    parts = COMPONENTS[family](seed=0)
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(**parts)
    else:
        pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(lora, adapter_name="style")
    pipe.set_adapters(["style"], adapter_weights=[scale])
    latent = initial_latent(3, 4, (16, 16))
    return pipe(SOURCE, latents=latent, num_inference_steps=steps, guidance_scale=guidance, height=128, width=128,
                output_type="pt").images[0]


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_lora_source_equals_diffusers_with_the_same_lora(family, tmp_path):
    lora = make_lora(family, tmp_path)
    r = parse_recipe({"source": SOURCE, "steps": 3, "seed": 3, "guidance": 5.0,
                      "edits": [{"target": "a painting of a lion eating a burger"}]})
    plain = from_components(COMPONENTS[family](seed=0))
    styled = from_components(COMPONENTS[family](seed=0))
    records = apply_loras(styled, [(lora, 0.8)])
    assert records[0]["scale"] == 0.8 and len(records[0]["sha256"]) == 64
    ours = run_edit(styled, r).images[0]
    assert torch.allclose(ours, reference(family, lora, 0.8, 3, 5.0), atol=1e-4)
    assert not torch.allclose(ours, run_edit(plain, r).images[0], atol=1e-3)  # the LoRA does something
    with pytest.raises(LoraError, match="already has LoRA weights"):
        apply_loras(styled, [(lora, 1.0)])


def test_only_safetensors_files_are_named(tmp_path):
    with pytest.raises(RecipeError, match=r"loras\[0\].path: .*not a .safetensors file"):
        parse_recipe({"source": SOURCE, "loras": [{"path": "style.bin"}], "edits": [{"target": SOURCE + " at night"}]})


def test_a_recipe_with_a_lora_records_it_and_a_missing_file_is_a_recipe_error(cli, tiny_model_dir, tmp_path):
    lora = make_lora("sd", tmp_path)
    data = {"name": "styled", "source": SOURCE, "steps": 2, "size": 128,
            "loras": [{"path": "pytorch_lora_weights.safetensors", "scale": 0.5}],
            "edits": [{"target": "a painting of a lion eating a burger"}]}
    path = tmp_path / "styled.yaml"
    path.write_text(yaml.safe_dump(data))
    result = cli("edit", path, "--model", tiny_model_dir, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "out" / "styled" / "run.json").read_text())
    assert run["loras"][0]["path"] == str(tmp_path / "pytorch_lora_weights.safetensors")
    assert run["loras"][0]["scale"] == 0.5 and len(run["loras"][0]["sha256"]) == 64
    assert lora == run["loras"][0]["path"]
    assert run["recipe"]["loras"] == [{"path": lora, "scale": 0.5}]  # absolute: the record replays from anywhere
    record = tmp_path / "out" / "styled" / "run.json"
    assert cli("validate", record).exit_code == 2  # a LoRA file outside the run's folder: only when trusted
    assert cli("validate", record, "--trust-recipe").exit_code == 0

    data["loras"][0]["path"] = "missing.safetensors"
    path.write_text(yaml.safe_dump(data))
    result = cli("edit", path, "--model", tiny_model_dir, "--out", tmp_path / "out2")
    assert result.exit_code == 2
    assert "loras[0].path: no file at" in result.stderr
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())


TRANSFORMER_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


@pytest.mark.parametrize("name", ["tiny_sd3_model", "tiny_flux_model", "tiny_qwen_image_model",
                                  "tiny_flux2_klein_model", "tiny_chroma_model", "tiny_flux2_dev_model"])
def test_a_transformer_lora_gives_the_pictures_diffusers_pipeline_gives_with_it(request, name, tmp_path):
    """The joint-attention families take LoRA files too, through their own pipeline's loader: with the windows
    at 0 our source and target equal the family's diffusers pipeline that loaded the same file at the same scale
    (the user's way: pipe.load_lora_weights, set_adapters), on fresh components; and the LoRA changes them."""
    import copy

    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from lab.bench import variant_fns
    from p2p_cli.models import family_pipeline

    base = request.getfixturevalue(name)
    fresh = lambda: copy.deepcopy(base)  # noqa: E731 - the session's model stays as it is
    donor = fresh()
    torch.manual_seed(5)
    donor.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=TRANSFORMER_LORA_TARGETS,
                                             init_lora_weights=False))
    type(family_pipeline(donor)).save_lora_weights(tmp_path, transformer_lora_layers=get_peft_model_state_dict(
        donor.transformer), safe_serialization=True)
    lora = str(tmp_path / "pytorch_lora_weights.safetensors")
    r = parse_recipe({"source": "a cat on a bench", "steps": 2, "seed": 1, "size": 128, "cross_replace": 0.0,
                      "self_replace": 0.0, "negative_prompt": "blurry" if "qwen" in name or "chroma" in name else "",
                      "edits": [{"target": "a dog on a bench"}]})
    styled = fresh()
    assert apply_loras(styled, [(lora, 0.7)])[0]["scale"] == 0.7
    ours = run_edit(styled, r).images
    theirs_model = fresh()
    pipe = family_pipeline(theirs_model)
    pipe.load_lora_weights(lora, adapter_name="style")
    pipe.set_adapters(["style"], adapter_weights=[0.7])
    theirs = variant_fns(theirs_model, r, pipe)["plain"]()
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
    assert not torch.allclose(ours, run_edit(fresh(), r).images, atol=1e-3)  # the LoRA does something
