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
