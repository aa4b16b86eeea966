"""The benchmark's pieces on the tiny model: recipes per case, one interleaved run, the report, the checks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lab.bench import BenchConfig, case_recipe, graph_breaks, markdown, run_bench, write_results


def test_config_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown case 'nope'.*unknown variant 'fast'"):
        BenchConfig(cases=("nope",), variants=("fast",))
    with pytest.raises(ValueError, match="targets must be in 1..8"):
        BenchConfig(targets=9)


@pytest.mark.parametrize("case, kind", [("replace+blend", "replace"), ("refine+reweight", "refine")])
def test_case_recipes_have_n_targets(case, kind):
    recipe = case_recipe(case, BenchConfig(targets=3, steps=7, size=256))
    assert len(recipe.edits) == 3 and {e.type for e in recipe.edits} == {kind}
    assert recipe.steps == 7 and recipe.size == (256, 256) and recipe.guidance == 7.5
    assert all((e.local_blend is not None) == (case == "replace+blend") for e in recipe.edits)
    assert all(bool(e.reweight) == (case == "refine+reweight") for e in recipe.edits)


@pytest.mark.slow  # a whole benchmark run; `make test-slow`
def test_one_run_of_each_variant_makes_a_report(tmp_path):
    cfg = BenchConfig(steps=2, repeats=2, warmup=0, memory=False, threads=1)
    report = run_bench(cfg, command="test")
    assert set(report.cases) == set(cfg.cases)
    for res in report.cases.values():
        assert {v: len(t) for v, t in res["times"].items()} == {"plain": 2, "p2p": 2, "explicit": 2}
    text = markdown(report)
    assert "| replace+blend |" in text and "| refine+reweight |" in text and "Command: `test`" in text
    write_results(report, tmp_path / "R.md")
    write_results(report, tmp_path / "R.md")
    assert (tmp_path / "R.md").read_text().count("### tiny") == 2


@pytest.mark.slow  # torch.compile of the tiny model: 15-35 s; `make test-slow`
@pytest.mark.parametrize("attention", ["fused", "explicit"])
@pytest.mark.parametrize("case", ["replace+blend", "refine+reweight"])
def test_no_graph_breaks_in_the_processors(tiny_model, case, attention):
    """torch._dynamo.explain finds one graph and no break at step 0 and step 1 (about 8 s each)."""
    found = graph_breaks(tiny_model, case_recipe(case, BenchConfig(steps=2)), attention)
    assert found["breaks"] == [0, 0], found["reasons"]


@pytest.mark.slow  # long; make test-slow
def test_memory_child_prints_json():
    """The CPU memory child: one variant in a fresh process, one JSON line (about 5 s)."""
    cmd = [sys.executable, "-m", "lab.bench", "--one", "p2p", "--cases", "refine+reweight", "--steps", "2",
           "--warmup", "1", "--threads", "1"]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    assert out["peak_mib"] > 0 and (out["run_mib"] is None or out["run_mib"] >= 0)


@pytest.mark.slow  # long; make test-slow
def test_a_compiled_unet_is_traced_once_per_edit(tiny_model):
    """torch.compile traces the controlled UNet once: no retrace between steps (store, gates) or runs."""
    import torch

    from p2p_cli.engine.pipeline import run_edit

    traced = []

    def count(gm, inputs):  # a backend that only counts the graphs handed to it
        traced.append(gm)
        return gm.forward

    torch._dynamo.reset()
    unet = tiny_model.unet
    tiny_model.unet = torch.compile(unet, backend=count)
    try:
        recipe = case_recipe("replace+blend", BenchConfig(steps=3))
        run_edit(tiny_model, recipe)
        run_edit(tiny_model, recipe)
    finally:
        tiny_model.unet = unet
        torch._dynamo.reset()
    assert len(traced) == 1


def test_control_adds_few_operator_calls_per_step(tiny_model):
    """Host-bound GPU runs pay per call: the fused control path adds under 40 % to plain diffusers' calls."""
    from lab.bench import calls_per_step

    for case in ("replace+blend", "refine+reweight"):
        calls = calls_per_step(tiny_model, case, BenchConfig())
        assert calls["plain"] < calls["p2p"] < 1.4 * calls["plain"] < calls["explicit"], (case, calls)


def test_the_sdxl_family_is_benchmarked_against_diffusers_sdxl_pipeline():
    """--arch tiny-xl runs the three variants, plain being StableDiffusionXLPipeline (sdxl: the full
    architecture, too large for the default run)."""
    cfg = BenchConfig(arch="tiny-xl", steps=2, repeats=1, warmup=0, memory=False, threads=1,
                      cases=("replace+blend",))
    report = run_bench(cfg, command="test")
    assert {v: len(t) for v, t in report.cases["replace+blend"]["times"].items()} == {"plain": 1, "p2p": 1,
                                                                                       "explicit": 1}
    assert "### tiny-xl" in markdown(report) and "128x128" in markdown(report)
    with pytest.raises(ValueError, match="unknown arch 'xl'"):
        BenchConfig(arch="xl")


@pytest.mark.parametrize("threads", ["-1", "0"])
def test_threads_below_one_is_a_usage_error(threads, capsys):
    from lab.bench import main

    assert main(["--threads", threads]) == 2  # was "unexpected RuntimeError" from torch.set_num_threads
    assert "threads" in capsys.readouterr().err


def test_bench_json_writes_one_report(tmp_path):
    from lab.bench import main

    path = tmp_path / "report.json"
    assert main(["--steps", "1", "--repeats", "1", "--warmup", "0", "--variants", "p2p", "--cases", "refine+reweight",
                 "--no-memory", "--threads", "1", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["config"]["threads"] == 1 and report["cases"]


@pytest.mark.parametrize("name", ["tiny_qwen_image_model", "tiny_flux2_klein_model", "tiny_flux2_dev_model",
                                  "tiny_chroma_model"])
def test_the_new_families_are_benchmarked_against_their_own_pipeline_on_the_same_work(request, name):
    """--arch qwen-image / flux2 / flux2-dev / chroma: plain is QwenImagePipeline (true CFG over the recipe's
    negative prompt) / Flux2KleinPipeline / Flux2Pipeline / ChromaPipeline (CFG over the negative prompt) given the
    same noise; with the windows at 0 its pictures are p2p's, so the ratio compares
    equal work."""
    import torch

    from lab.bench import variant_fns
    from p2p_cli.recipe import parse_recipe

    model = request.getfixturevalue(name)
    recipe = parse_recipe({"source": "a cat on a bench", "steps": 2, "seed": 1, "size": 128, "cross_replace": 0.0,
                           "self_replace": 0.0,
                           "negative_prompt": "blurry" if ("qwen" in name or "chroma" in name) else "",  # klein, dev: ""
                           "edits": [{"target": "a dog on a bench"}]})
    fns = variant_fns(model, recipe)
    assert torch.allclose(fns["plain"](), fns["p2p"](), atol=1e-4)
