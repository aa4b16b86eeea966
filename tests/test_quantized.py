"""Quantized models (loading.py, placement.py): with both windows 0 a quantized model's source and edit are what
diffusers' own pipeline draws with the SAME quantization config and noise; fused = explicit attention on it; the
settings are recorded and refused clearly where they cannot apply."""

from __future__ import annotations

import pytest
import torch

from p2p_cli.engine.pipeline import initial_latent, run_edit
from p2p_cli.families.flux import pack
from p2p_cli.loading import Loading, parse, pipeline_config
from p2p_cli.models import ModelLoadError, load_model
from p2p_cli.recipe import RecipeError, parse_recipe

pytest.importorskip("torchao")

SOURCE, TARGET = "a big red circle on the left", "a big blue circle on the left"
STEPS = 2
PIPELINES = {"sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline"}


def recipe(**top):
    data = {"source": SOURCE, "steps": STEPS, "seed": 5, "size": 128, "edits": [{"target": TARGET}]}
    return parse_recipe({**data, **top})


def pipeline_rows(pipe, model, r) -> torch.Tensor:
    """The source and target as diffusers' own pipeline draws them from the project's initial noise."""
    latent = initial_latent(r.seed, model.latent_channels, (16, 16)).expand(2, -1, -1, -1)
    common = dict(num_inference_steps=STEPS, height=128, width=128, output_type="pt",
                  guidance_scale=model.family.default_guidance)
    if model.family.name == "sd3":
        return pipe([SOURCE, TARGET], latents=latent.clone(), **common).images
    return pipe([SOURCE, TARGET], latents=pack(latent.clone()), max_sequence_length=model.family.t5_length(model),
                **common).images


@pytest.fixture(scope="module", params=list(PIPELINES))
def quantized(request, tmp_path_factory, save_tiny_model):
    """(family, folder, the folder loaded by p2p with the transformer and a text encoder int8 weight-only)."""
    family = request.param
    folder = save_tiny_model(tmp_path_factory.mktemp(f"q-{family}"), family=family)
    loading = parse({"transformer": "int8", "text_encoder": "int8"})
    return family, folder, load_model(str(folder), device="cpu", dtype="fp32", loading=loading)


def test_the_parts_are_quantized_by_torchao(quantized):
    family, _, model = quantized
    weight = model.transformer.transformer_blocks[0].attn.to_q.weight
    assert type(weight).__module__.startswith("torchao")
    linear = next(m for m in model.text_encoder.modules() if isinstance(m, torch.nn.Linear))
    assert type(linear.weight).__module__.startswith("torchao")
    assert model.loading.record() == {"quantize": {"text_encoder": "int8", "transformer": "int8"}, "offload": "none"}


def test_uncontrolled_rows_equal_diffusers_with_the_same_quantization(quantized):
    import diffusers

    family, folder, model = quantized
    r = recipe(cross_replace=0.0, self_replace=0.0)
    ours = run_edit(model, r).images
    config = pipeline_config(model.loading, torch.float32)
    pipe = getattr(diffusers, PIPELINES[family]).from_pretrained(folder, quantization_config=config, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipeline_rows(pipe, model, r)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=0)
    plain = run_edit(load_model(str(folder), device="cpu", dtype="fp32"), r).images
    assert not torch.equal(ours, plain)  # the quantization took effect: the check can fail


def test_fused_equals_explicit_on_a_quantized_model(quantized):
    _, _, model = quantized
    r = recipe(cross_replace=0.6, self_replace=0.4)
    fused = run_edit(model, r).images
    explicit = run_edit(model, r, attention="explicit").images
    assert torch.allclose(fused, explicit, atol=1e-4, rtol=0)


def test_bad_settings_name_the_field():
    with pytest.raises(RecipeError) as err:
        parse_recipe({"source": SOURCE, "edits": [{"target": TARGET}],
                      "quantize": {"transformer": "int4", "vae": "int8", "text_encoder": "x.gguf"}})
    text = str(err.value)
    assert "quantize.transformer: 'int4' is not a quantization" in text
    assert "quantize.vae: not a part" in text
    assert "quantize.text_encoder: a GGUF file holds the denoiser" in text
    with pytest.raises(RecipeError, match="offload"):
        parse_recipe({"source": SOURCE, "edits": [{"target": TARGET}], "offload": "disk"})
    assert parse_recipe({"source": SOURCE, "edits": [{"target": TARGET}], "quantize": "int8"}).loading == Loading(
        (("denoiser", "int8"),), "none")


def test_a_part_the_model_lacks_is_refused(save_tiny_model, tmp_path):
    folder = save_tiny_model(tmp_path / "sd")
    with pytest.raises(ModelLoadError, match="quantize.transformer: this sd model has no transformer"):
        load_model(str(folder), device="cpu", dtype="fp32", loading=parse({"transformer": "int8"}))


def test_run_json_png_and_cache_key_record_the_settings_and_replay(quantized, tmp_path):
    """`p2p edit --quantize int8` records the setting in run.json's recipe and model, and in each PNG's recipe;
    `p2p edit run.json` replays it (the same pixels); the inversion cache's key tells it from the plain model's."""
    import json

    import yaml
    from PIL import Image
    from typer.testing import CliRunner

    from p2p_cli.cli.main import app
    from p2p_cli.files.inversion_cache import inversion_key
    from p2p_cli.picture_texts import recipe_from_texts

    family, folder, model = quantized
    if family != "sd3":
        pytest.skip("one family is enough for the records")
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump({"name": "q", "model": str(folder), "source": SOURCE, "steps": STEPS, "seed": 5,
                                    "size": 128, "edits": [{"target": TARGET}]}))
    run = CliRunner().invoke(app, ["edit", str(path), "--quantize", "int8", "--device", "cpu", "--out",
                                   str(tmp_path / "a"), "--quiet"])
    assert run.exit_code == 0, run.output
    record = json.loads((tmp_path / "a" / "q" / "run.json").read_text())
    assert record["recipe"]["quantize"] == "int8" and "offload" not in record["recipe"]
    assert record["loading"] == {"quantize": {"transformer": "int8"}, "offload": "none"}
    png = Image.open(tmp_path / "a" / "q" / "source.png")
    assert recipe_from_texts(png.text)["quantize"] == "int8"
    again = CliRunner().invoke(app, ["edit", str(tmp_path / "a" / "q" / "run.json"), "--device", "cpu", "--out",
                                     str(tmp_path / "b"), "--quiet", "--trust-recipe"])  # own run, local model
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "b" / "q" / "run.json").read_text())["loading"] == record["loading"]
    for name in ("source.png", "edit-1.png"):
        a, b = (Image.open(tmp_path / d / "q" / name) for d in ("a", "b"))
        assert a.tobytes() == b.tobytes()

    image = torch.rand(3, 128, 128)
    keys = [inversion_key(image, m, prompt=SOURCE, method="direct", steps=2, guidance=1.0)["key"]
            for m in (model, load_model(str(folder), device="cpu", dtype="fp32"))]
    assert keys[0] != keys[1]


def write_gguf(transformer, path) -> None:
    """A transformer's weights as a GGUF file written by the gguf package: Q8_0 where a row splits into its
    32-value blocks, float32 elsewhere (diffusers reads diffusers-named tensors as they are)."""
    gguf = pytest.importorskip("gguf")

    writer = gguf.GGUFWriter(str(path), "p2p-test")
    for name, value in transformer.state_dict().items():
        array = value.float().numpy()
        if array.ndim == 2 and array.shape[1] % 32 == 0:
            q8 = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, q8, raw_shape=q8.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_gguf_transformer_equals_diffusers_reading_the_same_file(quantized, tmp_path):
    """quantize: {transformer: file.gguf} reads the file with diffusers' from_single_file + GGUFQuantizationConfig:
    with windows 0 the pictures are diffusers' pipeline's with that same transformer and noise."""
    import diffusers
    from diffusers import GGUFQuantizationConfig

    family, folder, _ = quantized
    plain = load_model(str(folder), device="cpu", dtype="fp32")
    path = tmp_path / "transformer.gguf"
    write_gguf(plain.transformer, path)
    model = load_model(str(folder), device="cpu", dtype="fp32", loading=parse({"transformer": str(path)}))
    assert any(type(p).__name__ == "GGUFParameter" for p in model.transformer.parameters())
    r = recipe(cross_replace=0.0, self_replace=0.0)
    ours = run_edit(model, r).images
    cls = type(plain.transformer)
    transformer = cls.from_single_file(str(path), quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32),
                                       config=str(folder), subfolder="transformer", torch_dtype=torch.float32)
    pipe = getattr(diffusers, PIPELINES[family]).from_pretrained(folder, transformer=transformer,
                                                                 torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipeline_rows(pipe, model, r)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=0)
    assert not torch.equal(ours, run_edit(plain, r).images)  # Q8_0 rounding reached the pictures
    assert torch.allclose(ours, run_edit(plain, r).images, atol=0.05)  # and the file holds the same transformer


def test_bitsandbytes_is_refused_on_the_cpu_with_a_clear_line(save_tiny_model, tmp_path):
    folder = save_tiny_model(tmp_path / "sd")
    with pytest.raises(ModelLoadError, match="quantize: bnb-8bit needs"):  # the package, or a CUDA GPU
        load_model(str(folder), device="cpu", dtype="fp32", loading=parse({"unet": "bnb-8bit"}))


def test_bitsandbytes_config_plumbing():
    """bitsandbytes is not run here: diffusers' and transformers' bitsandbytes quantizers refuse a machine without
    a CUDA GPU ("No GPU found"), so the CPU checks the configs p2p hands them (building them needs the package)."""
    pytest.importorskip("bitsandbytes")
    import diffusers
    import transformers

    from p2p_cli.placement import part_kwargs, pipeline_kwargs

    loading = parse({"transformer": "bnb-4bit", "text_encoder_2": "bnb-8bit"})
    config = pipeline_kwargs(loading, torch.bfloat16)["quantization_config"]
    mapping = config.quant_mapping
    assert isinstance(mapping["transformer"], diffusers.BitsAndBytesConfig)
    assert mapping["transformer"].load_in_4bit and mapping["transformer"].bnb_4bit_quant_type == "nf4"
    assert mapping["transformer"].bnb_4bit_compute_dtype == torch.bfloat16
    assert isinstance(mapping["text_encoder_2"], transformers.BitsAndBytesConfig) and mapping["text_encoder_2"].load_in_8bit
    unet = part_kwargs(parse({"unet": "bnb-8bit"}), "unet", torch.float16)["quantization_config"]
    assert isinstance(unet, diffusers.BitsAndBytesConfig) and unet.load_in_8bit
    assert part_kwargs(loading, "vae", torch.float16) == {}


def test_a_pipeline_the_user_quantized_and_offloaded_is_a_model(quantized):
    """A pipeline loaded with diffusers' own quantization config (and offload hooks) goes into p2p.edit as it is:
    with control off its rows are the pictures that pipeline draws from the same noise, and the records say how it
    was quantized."""
    import diffusers

    import p2p_cli as p2p
    from p2p_cli.user_pipeline import from_pipeline

    family, folder, model = quantized
    pipe = getattr(diffusers, PIPELINES[family]).from_pretrained(
        folder, quantization_config=pipeline_config(model.loading, torch.float32), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_model_cpu_offload(device="cpu")  # no GPU here: the CPU is the execution device
    r = recipe(cross_replace=0.0, self_replace=0.0)
    ours = p2p.edit(pipe, r, maps=False).run.images
    assert torch.allclose(ours, pipeline_rows(pipe, model, r), atol=1e-4, rtol=0)
    record = from_pipeline(pipe).loading.record()
    assert record["offload"] == "pipeline"
    assert record["quantize"]["transformer"].startswith("torchao") and "text_encoder" in record["quantize"]


@pytest.mark.parametrize("family", ["qwen-image", "flux2-klein", "flux2-dev", "chroma"])
def test_the_newer_families_quantize_as_their_pipeline_does(family, tmp_path, save_tiny_model):
    """Qwen-Image, FLUX.2 klein and dev and Chroma: an int8 (torchao weight-only) transformer gives, with both
    windows 0, the pictures their own diffusers pipeline draws when loaded with the same quantization config."""
    import diffusers

    from lab.bench import variant_fns
    from p2p_cli.resolve import PIPELINES as CLASSES

    folder = save_tiny_model(tmp_path / family, family=family)
    model = load_model(str(folder), device="cpu", dtype="fp32", loading=parse({"transformer": "int8"}))
    assert type(model.transformer.transformer_blocks[0].attn.to_q.weight).__module__.startswith("torchao")
    r = parse_recipe({"source": "a cat on a bench", "steps": STEPS, "seed": 5, "size": 128, "cross_replace": 0.0,
                      "self_replace": 0.0, "negative_prompt": "blurry" if family in ("qwen-image", "chroma") else "",
                      "edits": [{"target": "a dog on a bench"}]})
    ours = run_edit(model, r).images
    name = next(cls for cls, fam in CLASSES.items() if fam == family)
    pipe = getattr(diffusers, name).from_pretrained(folder, quantization_config=pipeline_config(model.loading,
                                                                                                torch.float32),
                                                    torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    theirs = variant_fns(model, r, pipe)["plain"]()
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=0), (ours - theirs).abs().max()
    plain = run_edit(load_model(str(folder), device="cpu", dtype="fp32"), r).images
    assert not torch.equal(ours, plain)  # the quantization took effect: the check can fail
