"""Check once: one problem-finder (checks.model_problems) on a ModelSpec read from config files (validate, before
anything loads) or from a loaded model (the API, before the engine); the engine takes checked recipes only."""

from __future__ import annotations

import subprocess

import pytest

from p2p_cli.api import resolve_recipe
from p2p_cli.checks import model_geometry, model_problems, problems_before_loading
from p2p_cli.engine.layers import cross_sides
from p2p_cli.engine.pipeline import run_edit
from p2p_cli.engine.plan import UncheckedRecipe
from p2p_cli.models import from_components
from p2p_cli.recipe import RecipeError, parse_recipe

from lab.arch import tiny_components

SOURCE = "a big red circle on the left on a white background"
TARGET = "a big blue circle on the left on a white background"


def recipe(**top):
    return parse_recipe({"source": SOURCE, "steps": 2, "edits": [{"target": TARGET}], **top})


def test_the_engine_raises_no_recipe_error():
    found = subprocess.run(["grep", "-rn", "RecipeError(", "p2p_cli/engine"], capture_output=True, text=True)
    assert found.stdout == ""


def test_an_unchecked_recipe_reaching_the_engine_is_a_programming_error_and_the_check_finds_it_first(tiny_model):
    bad = recipe(size=[120, 128])
    with pytest.raises(UncheckedRecipe):
        run_edit(tiny_model, bad)
    assert not isinstance(UncheckedRecipe(["x"]), RecipeError)
    with pytest.raises(RecipeError, match="size: 120 is not a multiple of 32"):
        resolve_recipe(tiny_model, bad)


def test_a_folder_spec_equals_the_loaded_models_spec(save_tiny_model, tmp_path):
    """The ModelSpec `p2p validate` reads from config files is the one the API builds from the loaded model."""
    loaded = from_components(tiny_components(seed=0)).spec
    folder = model_geometry(str(save_tiny_model(tmp_path / "tiny")))
    keep = ("family", "native", "vae_scale", "multiple", "cross_depths", "blocks", "patch")
    assert {k: getattr(folder, k) for k in keep} == {k: getattr(loaded, k) for k in keep}


@pytest.mark.parametrize("size", [(128, 128), (64, 64), (128, 192), (256, 256)])
def test_the_specs_layer_sides_are_the_engines(tiny_model, size):
    spec = tiny_model.spec
    latent = spec.latent(size)
    assert spec.cross_sides(latent) == cross_sides(tiny_model, latent)


def test_the_spec_of_a_joint_model_counts_its_blocks_as_the_family_does(tiny_sd3_model, tiny_flux_model):
    for model in (tiny_sd3_model, tiny_flux_model):
        spec = model.spec
        assert spec.blocks == len(model.family.blocks(model))
        latent = spec.latent(None)
        assert spec.grid(latent) == max(model.family.token_grid(model, latent))


def test_validate_and_the_api_find_the_same_problems_on_the_bundled_model():
    """The same recipe, checked before loading (config files, shipped CLIP tokenizer) and on the loaded model."""
    import p2p_cli as p2p

    bad = parse_recipe({"source": SOURCE, "steps": 2, "original_size": [64, 64], "shift": 2.0,
                        "edits": [{"target": TARGET, "reweight": {"zebra": 2}}]})
    before = problems_before_loading(bad, "shapes")
    loaded = model_problems(bad, p2p.load_model("shapes", device="cpu", dtype="fp32").spec)
    assert before == loaded and any(p.startswith("original_size:") for p in before)
    words = recipe(edits=[{"target": TARGET, "reweight": {"zebra": 2}}])
    assert problems_before_loading(words, "shapes") == [
        p for p in model_problems(words, p2p.load_model("shapes", device="cpu", dtype="fp32").spec)]
    assert any("zebra" in p for p in problems_before_loading(words, "shapes"))


def test_a_distilled_model_refuses_the_inversions_that_need_an_unconditional_batch():
    """What the loaded model says (a guidance-distilled FLUX.2 klein runs no unconditional batch) decides, not
    the family's table: null-text and negative-prompt need that batch."""
    from p2p_cli.model_spec import from_configs

    vae, transformer = {"block_out_channels": [32, 64]}, {"num_layers": 1, "num_single_layers": 1}
    picture = parse_recipe({"source": SOURCE, "steps": 2, "image": "p.png", "inversion": "null-text",
                            "edits": [{"target": TARGET}]})
    base = from_configs("flux2-klein", vae, transformer=transformer)
    distilled = from_configs("flux2-klein", vae, transformer=transformer, unconditional=False)
    assert not any(p.startswith("inversion:") for p in model_problems(picture, base))
    assert any(p.startswith("inversion: null-text") for p in model_problems(picture, distilled))


def test_flux2_dev_is_checked_from_its_config_files_as_a_distilled_family():
    """FLUX.2 [dev] from config dicts alone (validate before loading): klein's geometry (1024 px, patched latents,
    16 px cells), and no unconditional batch by its family, so null-text is refused and direct is not."""
    from p2p_cli.model_spec import from_configs

    spec = from_configs("flux2-dev", {"block_out_channels": [32, 64, 128, 128]},
                        transformer={"num_layers": 8, "num_single_layers": 48})
    assert spec.family.label == "FLUX.2 [dev]" and not spec.cfg
    assert (spec.native, spec.multiple, spec.blocks) == (1024, 16, 56)
    picture = {"source": SOURCE, "steps": 2, "image": "p.png", "edits": [{"target": TARGET}]}
    assert any(p.startswith("inversion: null-text")
               for p in model_problems(parse_recipe({**picture, "inversion": "null-text"}), spec))
    assert not any(p.startswith("inversion:") for p in model_problems(parse_recipe({**picture, "inversion": "direct"}),
                                                                        spec))
