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
