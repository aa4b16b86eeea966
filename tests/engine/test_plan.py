"""Compiling recipes into tensors: windows, per-word gates, equalizers, blend tokens, batch order."""

from __future__ import annotations

import pytest
import torch

from p2p_cli.engine.control.edits import edit_cross_explicit, fused_gates, mapped_values
from p2p_cli.engine.plan import compile_plan, cross_window_steps, self_window_steps
from p2p_cli.family_defaults import nearest_side
from p2p_cli.recipe import parse_recipe
from p2p_cli.text.tokens import find_tokens

SOURCE = "A painting of a squirrel eating a burger"


def test_windows_follow_the_reference_index_rules():
    assert cross_window_steps((0.0, 0.8), 50) == (0, 40)  # int(0.8 * 51) = 40
    assert cross_window_steps((0.2, 0.6), 50) == (10, 30)
    assert cross_window_steps((0.0, 1.0), 50) == (0, 50)
    assert self_window_steps((0.0, 0.4), 50) == (0, 20)
    assert self_window_steps((0.5, 1.0), 10) == (5, 10)


def test_per_word_cross_gates_and_equalizer(tokenizer):
    r = parse_recipe({"source": SOURCE, "steps": 10, "edits": [
        {"target": "A painting of a lion eating a burger", "cross_replace": {"default": 1.0, "lion": 0.4},
         "self_replace": [0.1, 0.5], "reweight": {"burger": 2.5}}]})
    plan = compile_plan(r, tokenizer)
    lion = find_tokens(tokenizer, r.edits[0].target, "lion")
    burger = find_tokens(tokenizer, r.edits[0].target, "burger")
    assert plan.alpha.shape == (10, 1, 77)
    assert plan.alpha[:, 0, 1].tolist() == [1.0] * 10  # default window [0, 1) covers every step
    assert plan.alpha[:, 0, lion[0]].tolist() == [1.0] * 4 + [0.0] * 6  # int(0.4 * 11) = 4
    assert plan.self_gate[:, 0].tolist() == [0.0] + [1.0] * 4 + [0.0] * 5
    assert plan.equalizer[0, burger].tolist() == [2.5] * len(burger)
    assert plan.equalizer[0].sum().item() == 77 - len(burger) + 2.5 * len(burger)


def test_batch_order_and_baselines(tokenizer):
    r = parse_recipe({"source": SOURCE, "edits": [
        {"target": "A painting of a lion eating a burger", "baseline": True},
        {"target": "A painting of a squirrel eating a big burger"}]})
    plan = compile_plan(r, tokenizer)
    assert plan.roles == ["source", "edit-1", "edit-2", "baseline-1"]
    assert plan.prompts[3] == plan.prompts[1]
    assert compile_plan(r, tokenizer, baseline=True).roles[-2:] == ["baseline-1", "baseline-2"]


def test_blend_tokens_come_from_either_prompt(tokenizer):
    r = parse_recipe({"source": SOURCE, "steps": 50, "edits": [
        {"target": "A painting of a lion eating a burger",
         "local_blend": {"words": ["squirrel", "lion"], "subtract": ["burger"], "start": 0.2}},
        {"target": "A painting of a squirrel eating a big burger"}]})
    plan = compile_plan(r, tokenizer)
    b = plan.blend
    assert b["src_tokens"][0].nonzero().flatten().tolist() == find_tokens(tokenizer, SOURCE, "squirrel")
    assert b["tgt_tokens"][0].nonzero().flatten().tolist() == find_tokens(tokenizer, r.edits[0].target, "lion")
    assert b["sub_src_tokens"][0].sum() > 0 and b["sub_tgt_tokens"][0].sum() > 0
    assert b["start"].tolist() == [10, 0] and b["active"].tolist() == [True, False]


def test_blend_words_of_one_prompt_are_looked_up_there_only(tokenizer):
    """source_words / target_words: the reference's per-prompt lists ("squirrel" in the source only, though the
    target has it too); a word missing from its prompt is a problem naming the field, as validate reports it."""
    from p2p_cli.checks import recipe_problems

    target = "A painting of a squirrel eating a lion"
    r = parse_recipe({"source": SOURCE, "edits": [
        {"target": target, "local_blend": {"source_words": ["squirrel"], "target_words": ["lion"]}}]})
    b = compile_plan(r, tokenizer).blend
    assert b["src_tokens"][0].nonzero().flatten().tolist() == find_tokens(tokenizer, SOURCE, "squirrel")
    assert b["tgt_tokens"][0].nonzero().flatten().tolist() == find_tokens(tokenizer, target, "lion")
    both = compile_plan(parse_recipe({"source": SOURCE, "edits": [
        {"target": target, "local_blend": {"words": ["squirrel", "lion"]}}]}), tokenizer).blend
    assert both["tgt_tokens"][0].sum() == b["tgt_tokens"][0].sum() + len(find_tokens(tokenizer, target, "squirrel"))
    wrong = parse_recipe({"source": SOURCE, "edits": [
        {"target": target, "local_blend": {"source_words": ["lion"], "target_words": ["burger"]}}]})
    problems = recipe_problems(wrong, tokenizer)
    assert any(p.startswith('edits[0].local_blend.source_words: "lion" is not in the source') for p in problems)
    assert any(p.startswith('edits[0].local_blend.target_words: "burger" is not in the target') for p in problems)
    with pytest.raises(Exception, match="local_blend needs a word"):
        parse_recipe({"source": SOURCE, "edits": [{"target": target, "local_blend": {"threshold": 0.5}}]})


def test_nearest_side():
    assert nearest_side([16, 8, 4], 4) == 4
    assert nearest_side([32, 16, 8], 4) == 8
    assert nearest_side([16, 8], 12) == 8  # ties go to the smaller side


def test_fused_identity_on_random_maps():
    """A_final @ V from the explicit edit equals the two value-gated products of the fused form."""
    torch.manual_seed(0)
    n, heads, q, length, d, steps = 2, 3, 5, 77, 4, 6
    a_src = torch.softmax(torch.randn(heads, q, length), -1)
    a_tgt = torch.softmax(torch.randn(n, heads, q, length), -1)
    mapper = torch.rand(n, length, length)
    aligned = (torch.rand(n, length) > 0.3).float()
    equalizer = torch.randn(n, length)
    alpha = (torch.rand(steps, n, length) > 0.5).float()
    v = torch.randn(n, heads, length, d)
    g_src, g_own = fused_gates(alpha, equalizer, aligned)
    for t in range(steps):
        explicit = edit_cross_explicit(a_src, a_tgt, mapper, aligned, equalizer, alpha[t]) @ v
        fused = a_src @ mapped_values(v, mapper, g_src[t][:, None, :, None]) + a_tgt @ (v * g_own[t][:, None, :, None])
        assert torch.allclose(explicit, fused, atol=1e-5)


def test_mapping_only_the_moved_columns_equals_the_full_product():
    from p2p_cli.engine.control.edits import map_columns, moved_columns

    torch.manual_seed(0)
    mapper = torch.eye(12).repeat(2, 1, 1)
    mapper[0, 3, 3], mapper[0, 3, 4], mapper[0, 4, 4] = 0.0, 0.5, 0.0  # a swap spreading one token over two
    mapper[0, 4, 3] = 0.5
    mapper[1, :, 7] = 0.0  # an inserted token: an empty column
    assert moved_columns(mapper).tolist() == [3, 4, 7]
    a = torch.softmax(torch.randn(2, 3, 5, 12), -1)
    assert torch.allclose(map_columns(a, mapper, moved_columns(mapper)), a @ mapper[:, None], atol=1e-6)
