"""The memory plan (memory_plan.py): weights read from safetensors / GGUF headers, estimates that grow with size,
rows and precision and fall by a quantization's weight ratio, `p2p validate --memory` without torch for the
example recipes of the real models, and a run the plan refuses failing before its model loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from p2p_cli.loading import Loading, parse
from p2p_cli.memory_plan import PUBLISHED, gguf_bytes, model_sizes, parse_memory, plan_for, safetensors_params
from p2p_cli.overrides import read_recipe
from p2p_cli.recipe import parse_recipe

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["recipes/bunny-smiling.yaml", "recipes/sdxl-cat-tiger.yaml", "recipes/sd3-cat-tiger.yaml",
            "recipes/flux-cat-tiger.yaml"]


def recipe(model: str, **top):
    return parse_recipe({"model": model, "source": "a cat on a bench", "edits": [{"target": "a dog on a bench"}],
                         **top})


def test_weights_are_read_from_the_safetensors_headers(save_tiny_model, tmp_path):
    from p2p_cli.models import load_model

    folder = save_tiny_model(tmp_path / "m")
    model = load_model(str(folder), device="cpu", dtype="fp32")
    sizes = model_sizes(str(folder))
    for part in ("unet", "vae", "text_encoder"):
        assert sizes.params[part] == sum(p.numel() for p in getattr(model, part).parameters())
    assert safetensors_params(tmp_path) is None  # no weights: no count
    assert sizes.native == model.native_size[0] and sizes.width == model.unet.config.block_out_channels[0]


@pytest.mark.parametrize("model", ["black-forest-labs/FLUX.1-dev", "stabilityai/stable-diffusion-xl-base-1.0",
                                   "lodestones/Chroma1-HD"])
def test_the_estimate_grows_with_size_rows_and_precision(model):
    plan = plan_for(model, recipe(model), "fp16")
    assert plan.sizes.published
    sizes = [plan.peak((s, s)) for s in (256, 512, 768, 1024)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    rows = [plan.peak(prompts=n) for n in (2, 3, 5)]
    assert rows == sorted(rows) and len(set(rows)) == 3
    assert plan_for(model, recipe(model), "fp32").peak() > plan.peak()


def test_a_quantized_part_lowers_the_weights_by_its_ratio():
    model = "black-forest-labs/FLUX.1-dev"
    plain = plan_for(model, recipe(model), "bf16")
    int8 = plain.with_loading(parse("int8"))
    nf4 = plain.with_loading(parse({"transformer": "bnb-4bit", "text_encoder_2": "int8"}))
    params = PUBLISHED[model]["params"]
    assert int8.weights()["transformer"] * 2 == plain.weights()["transformer"] == params["transformer"] * 2
    assert plain.resident() - int8.resident() == params["transformer"]  # 2 bytes -> 1 byte per weight
    assert nf4.weights()["transformer"] == int(params["transformer"] * 0.5625)
    assert nf4.activations() == plain.activations()  # quantization changes the weights, not the activations
    model_offload = plain.with_loading(Loading(offload="model"))
    assert model_offload.resident() == max(plain.weights().values())  # one network on the device at a time


def test_a_gguf_file_counts_its_own_bytes(tmp_path):
    gguf = pytest.importorskip("gguf")
    import numpy as np

    writer = gguf.GGUFWriter(str(tmp_path / "t.gguf"), "flux")
    data = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    q8 = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("a.weight", q8, raw_shape=q8.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("b.weight", data[:8])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert gguf_bytes(tmp_path / "t.gguf") == q8.nbytes + data[:8].nbytes
    model = "black-forest-labs/FLUX.1-dev"
    plan = plan_for(model, recipe(model, quantize=str(tmp_path / "t.gguf")), "bf16")
    assert plan.weights()["transformer"] == q8.nbytes + data[:8].nbytes


def test_a_plan_that_does_not_fit_names_what_would():
    model = "black-forest-labs/FLUX.1-dev"
    plan = plan_for(model, read_recipe(str(ROOT / "recipes" / "flux-cat-tiger.yaml"), []), "bf16")
    lines = plan.lines(parse_memory("16GB"), "cuda")
    assert "does NOT fit" in lines[0] and "would fit:" in lines[1] and "bnb-4bit" in lines[1]
    fitting = plan.with_loading(parse({"transformer": "bnb-4bit", "text_encoder_2": "int8"}, "model"))
    assert fitting.peak() <= parse_memory("16GB") and "fits" in fitting.lines(parse_memory("16GB"), "cuda")[0]
    on_cpu = plan.fixes(parse_memory("32GB"), "cpu")  # no offload target, no bitsandbytes without CUDA
    assert on_cpu and not any("offload" in f or "bnb" in f for f in on_cpu)
    assert parse_memory("800MB") == 800 * 2**20 and parse_memory("12.5GiB") == int(12.5 * 2**30)
    with pytest.raises(ValueError, match="--memory: 'lots' is not an amount"):
        parse_memory("lots")


def test_validate_prints_the_plan_of_the_example_recipes_without_torch():
    code = ("import runpy, sys\nsys.argv = ['p2p', 'validate', '--device', 'cuda', '--memory', '8GB,12GB,16GB,24GB', "
            + ", ".join(repr(e) for e in EXAMPLES) + "]\ntry:\n    runpy.run_module('p2p_cli', run_name='__main__')\n"
            "except SystemExit as exc:\n    print('EXIT', exc.code, 'torch' in sys.modules, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert "EXIT 0 False" in done.stderr, done.stderr[-2000:]
    plans = [line for line in done.stdout.splitlines() if line.startswith("  memory on cuda")]
    assert len(plans) == 16
    assert all("published parameter counts" in line for line in plans)
    flux_16 = plans[3 * 4 + 2]
    assert flux_16.startswith("  memory on cuda, 16.0 GB:") and "does NOT fit" in flux_16

