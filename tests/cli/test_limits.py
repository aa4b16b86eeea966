"""Limits refused before the work: emoji words, sizes the model cannot run, runs that do not fit in memory."""

from __future__ import annotations

from p2p_cli.checks import clip_tokenizer, recipe_problems
from p2p_cli.recipe import Recipe

EMOJI = {
    "name": "emoji",
    "source": "a 🐱 on a mat",
    "edits": [
        {"target": "a 🐶 on a mat", "local_blend": {"words": ["🐱", "🐶"]}},
        {"target": "a 🐱 on a mat", "reweight": {"🐱": 2.0}},
    ],
}


def test_an_emoji_word_can_be_named_in_local_blend_and_reweight():
    assert recipe_problems(Recipe.model_validate(EMOJI), clip_tokenizer()) == []


def test_validate_accepts_emoji_words_and_a_missing_one_lists_them(cli, write_recipe):
    result = cli("validate", write_recipe(EMOJI, name="emoji"))
    assert result.exit_code == 0, result.stderr
    bad = {**EMOJI, "edits": [{"target": "a 🐱 on a mat", "reweight": {"🦊": 2.0}}]}
    result = cli("validate", write_recipe(bad, name="bad"))
    assert result.exit_code == 2
    assert '"🦊" is not in the prompt; its words are: a, 🐱, on, a, mat' in result.stderr


def test_validate_refuses_sizes_the_bundled_model_cannot_run(cli, write_recipe):
    for size, line in [(8, "size: 8 is not a multiple of 16"), ([64, 40], "size: 40 is not a multiple of 16")]:
        result = cli("validate", write_recipe({"source": "a red circle", "edits": [{"target": "a blue circle"}],
                                               "size": size}, name="bad"))
        assert result.exit_code == 2, result.stdout
        assert f"  {line}, which this model needs" in result.stderr
        assert "use a multiple of 16, e.g. its native size 64" in result.stderr
    result = cli("validate", write_recipe({"source": "a red circle", "edits": [{"target": "a blue circle"}],
                                           "size": 48}, name="good"))
    assert result.exit_code == 0, result.stderr


def test_edit_refuses_a_size_before_loading_a_local_model(cli, write_recipe, tiny_model_dir, tmp_path, monkeypatch):
    import p2p_cli.models

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(p2p_cli.models, "load_model", no_loading)
    data = {"source": "a cat", "edits": [{"target": "a dog"}], "size": 8, "steps": 2}
    result = cli("edit", write_recipe(data, name="tiny8"), "--model", tiny_model_dir, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.stderr
    assert "size: 8 is not a multiple of" in result.stderr and "loading model" not in result.stderr
    result = cli("edit", write_recipe(data, name="shapes8"), "--out", tmp_path / "out")  # the bundled model
    assert result.exit_code == 2 and "size: 8 is not a multiple of 16" in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_run_that_cannot_fit_is_refused_before_sampling_and_the_next_recipe_runs(
        cli, write_recipe, small, tiny_model_dir, tmp_path, monkeypatch):
    import p2p_cli.engine.memory as memory
    import p2p_cli.engine.sampler as sampler

    calls = []
    real_sample = sampler.sample_ddim
    monkeypatch.setattr("p2p_cli.engine.pipeline.sample_ddim", lambda *a, **k: calls.append(1) or real_sample(*a, **k))
    monkeypatch.setattr(memory, "available_bytes", lambda device: 300 * 2**20)  # 300 MiB free
    big = write_recipe({**small, "name": "big", "size": 1024}, name="big")
    fine = write_recipe({**small, "name": "fine"}, name="fine")  # 128 px
    result = cli("edit", big, fine, "--model", tiny_model_dir, "--out", tmp_path / "out")
    assert result.exit_code == 1, result.stderr
    line = next(line for line in result.stderr.splitlines() if "not enough memory" in line)
    assert line.startswith(f"error: {big}: not enough memory: size 1024x1024 needs about ")
    assert "GiB on cpu, which has 0.3 GiB free; the largest size that fits is about size: " in line
    largest = int(line.split("about size: ")[1].split()[0])
    assert 128 <= largest < 1024 and largest % 32 == 0
    assert "--set size=N" in line
    assert not (tmp_path / "out" / "big").exists() and (tmp_path / "out" / "fine" / "edit-1.png").is_file()
    assert len(calls) == 1  # only the recipe that fits was sampled


def test_the_estimate_grows_with_size_rows_and_explicit_attention(tiny_model):
    from p2p_cli.engine.pipeline import run_bytes

    small = run_bytes(tiny_model, (16, 16), 2, True, [], False, 77)
    assert run_bytes(tiny_model, (32, 32), 2, True, [], False, 77, "full") > 3 * small  # whole: 4x the pixels
    assert run_bytes(tiny_model, (32, 32), 2, True, [], False, 77) > 2 * small  # auto: tiled above the 128 px tile
    assert run_bytes(tiny_model, (16, 16), 4, True, [], False, 77) > 1.5 * small
    unguided = run_bytes(tiny_model, (64, 64), 2, False, [], False, 77)
    assert unguided <= run_bytes(tiny_model, (64, 64), 2, True, [], False, 77)
    assert run_bytes(tiny_model, (64, 64), 2, True, [], True, 77) > 2**30  # explicit: rows x heads x Q x Q maps


def test_real_out_of_memory_is_reported_with_advice_and_the_next_recipe_runs(
        cli, write_recipe, small, tiny_model_dir, tmp_path, monkeypatch):
    import torch

    import p2p_cli.engine.pipeline as pipeline

    real_sample, calls = pipeline.sample_ddim, []

    def sample(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(pipeline, "sample_ddim", sample)
    first = write_recipe({**small, "name": "first"}, name="first")
    second = write_recipe({**small, "name": "second"}, name="second")
    result = cli("edit", first, second, "--model", tiny_model_dir, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert f"error: {first}: out of memory: try --dtype fp16" in result.stderr
    assert "a smaller size (--set size=512)" in result.stderr
    assert not (tmp_path / "out" / "first").exists() and (tmp_path / "out" / "second" / "edit-1.png").is_file()


def test_a_joint_run_that_cannot_fit_is_refused_before_sampling_with_the_size_that_fits(joint_model, monkeypatch):
    import pytest

    import p2p_cli.engine.memory as memory
    from p2p_cli.engine.pipeline import run_bytes, run_edit
    from p2p_cli.recipe import parse_recipe

    calls = []
    monkeypatch.setattr("p2p_cli.engine.pipeline.sample_flow", lambda *a, **k: calls.append(1))
    guided = joint_model.family.name == "sd3"
    text = 77 + 256 if guided else 512
    side = 256 // joint_model.vae_scale
    free = run_bytes(joint_model, (side, side), 2, guided, [], False, text, "full")  # what 256 px needs, whole
    monkeypatch.setattr(memory, "available_bytes", lambda device: free)
    recipe = parse_recipe({"source": "a cat on a mat", "edits": [{"target": "a dog on a mat"}], "steps": 2,
                           "size": 512, "vae": "full"})  # whole pictures (tiled, Qwen-Image fits 480 px)
    with pytest.raises(memory.NotEnoughMemory, match=r"size 512x512 needs about .* the largest size that fits is "
                                                     r"about size: (256|2[0-9][0-9]) "):
        run_edit(joint_model, recipe)
    assert calls == []


def test_the_joint_estimate_grows_with_size_rows_and_explicit_attention(joint_model):
    from p2p_cli.engine.pipeline import run_bytes

    def need(side, prompts=2, explicit=False):
        return run_bytes(joint_model, (side, side), prompts, False, [], explicit, 512, "full")  # whole pictures

    assert need(32) > 3 * need(16)
    assert need(16, prompts=4) > 1.5 * need(16)
    # explicit attention materialises (image x [image; text]) maps: on a 256x256 token grid (65536 tokens) they
    # are the largest part, over 100 GiB
    assert need(512, explicit=True) - need(512) > 100 * 2**30


def test_a_run_the_plan_refuses_fails_before_its_model_loads(cli, write_recipe, small, tiny_model_dir, tmp_path,
                                                             monkeypatch):
    import p2p_cli.engine.memory as memory
    import p2p_cli.models as models

    loads = []
    real = models.load_model
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    monkeypatch.setattr(memory, "available_bytes", lambda device: 60 * 2**20)  # 60 MiB free
    big = write_recipe({**small, "name": "big", "size": 1024}, name="big")
    result = cli("edit", big, "--model", tiny_model_dir, "--out", tmp_path / "out")
    assert result.exit_code == 1, result.stderr
    assert "not enough memory: size 1024x1024" in result.stderr and "settings that fit:" in result.stderr
    assert loads == [] and not (tmp_path / "out" / "big").exists()
