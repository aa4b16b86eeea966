"""Recipe + tokenizer -> EditPlan: per-target mappers, per-step gates, equalizers and blend tokens (tensors)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from p2p_cli.checks import Problems, words_in_either
from p2p_cli.recipe import Recipe, RecipeError, Window
from p2p_cli.text.mappers import TokenMap, identity_map, refine_map, replace_map
from p2p_cli.text.tokens import find_tokens, token_ids
from p2p_cli.text.words import same_words


@dataclass
class EditPlan:
    """A recipe compiled against a tokenizer and a number of steps; n controlled targets, L tokens."""

    prompts: list[str]  # batch order: [source, edit_1..edit_n, baseline_1..]
    roles: list[str]  # "source", "edit-1", ..., "baseline-1", ...
    steps: int  # T
    n_targets: int  # n
    mapper: torch.Tensor  # (n, L, L) A_edit = A_src @ mapper
    aligned: torch.Tensor  # (n, L) 1 where the target token's map comes from the source
    equalizer: torch.Tensor  # (n, L) reweight factors, 1 elsewhere
    alpha: torch.Tensor  # (T, n, L) cross-attention gate per step and token
    self_gate: torch.Tensor  # (T, n) 1 where the target takes the source's self-attention
    blend: dict[str, torch.Tensor] | None  # local blend tensors (see _blend_tensors), None if no edit blends

    def to(self, device: torch.device | str) -> EditPlan:
        """A copy with every tensor on device."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                moved[f.name] = value.to(device)
            elif isinstance(value, dict):
                moved[f.name] = {k: v.to(device) for k, v in value.items()}
        return replace(self, **moved)


def cross_window_steps(window: Window, steps: int) -> tuple[int, int]:
    """Step indices [a, b) of a cross-attention window, as the reference: int(s * (T + 1)), int(e * (T + 1))."""
    return min(int(window[0] * (steps + 1)), steps), min(int(window[1] * (steps + 1)), steps)


def self_window_steps(window: Window, steps: int) -> tuple[int, int]:
    """Step indices [a, b) of a self-attention window, as the reference: int(s * T), int(e * T)."""
    return int(window[0] * steps), int(window[1] * steps)


def _gate(window: Window, steps: int, to_steps) -> torch.Tensor:
    a, b = to_steps(window, steps)
    gate = torch.zeros(steps)
    gate[a:b] = 1.0
    return gate  # (T,)


def _words_in_either(tokenizer, path: str, words: list[str], source: str, target: str, problems: Problems):
    """0/1 token vectors (L,) for words looked up in source and in target; a word in neither is a problem."""
    length = tokenizer.model_max_length
    src, tgt = torch.zeros(length), torch.zeros(length)
    in_source, in_target = words_in_either(tokenizer, path, words, source, target, problems)
    src[in_source], tgt[in_target] = 1.0, 1.0
    return src, tgt


def _token_map(tokenizer, recipe: Recipe, i: int, problems: Problems) -> TokenMap | None:
    edit = recipe.edits[i]
    if edit.type == "replace":
        return problems.run(f"edits[{i}].type", replace_map, tokenizer, recipe.source, edit.target)
    if edit.type == "refine":
        return problems.run(f"edits[{i}].type", refine_map, tokenizer, recipe.source, edit.target)
    if not same_words(recipe.source, edit.target):
        problems.append(f"edits[{i}].type: reweight keeps the source's words; to change words use type replace"
                        " or refine with reweight on top")
        return None
    if token_ids(tokenizer, recipe.source) != token_ids(tokenizer, edit.target):
        problems.append(f"edits[{i}].target: reweight needs the target to tokenize as the source does"
                        " (check punctuation)")
        return None
    return identity_map(tokenizer.model_max_length)


def _compile_edits(recipe: Recipe, tokenizer, steps: int):
    """Per-edit tensors and every tokenizer-dependent problem."""
    problems = Problems()
    source_ok = problems.run("source", token_ids, tokenizer, recipe.source) is not None
    if recipe.negative_prompt:
        problems.run("negative_prompt", token_ids, tokenizer, recipe.negative_prompt)
    length = tokenizer.model_max_length
    per_edit = []
    for i, edit in enumerate(recipe.edits):
        if problems.run(f"edits[{i}].target", token_ids, tokenizer, edit.target) is None or not source_ok:
            continue  # a prompt that does not tokenize has been reported; its mapper would say it again
        tmap = _token_map(tokenizer, recipe, i, problems)
        cross = recipe.cross_for(edit)
        alpha = _gate(cross.default, steps, cross_window_steps)[:, None].repeat(1, length)  # (T, L)
        for word, window in cross.words.items():
            pos = problems.run(f"edits[{i}].cross_replace.{word}", find_tokens, tokenizer, edit.target, word)
            if pos is not None:
                alpha[:, pos] = _gate(window, steps, cross_window_steps)[:, None]
        equalizer = torch.ones(length)
        for word, factor in (edit.reweight or {}).items():
            pos = problems.run(f"edits[{i}].reweight.{word}", find_tokens, tokenizer, edit.target, word)
            if pos is not None:
                equalizer[pos] = factor
        self_gate = _gate(recipe.self_for(edit), steps, self_window_steps)
        blend = None
        if edit.local_blend is not None:
            lb = edit.local_blend
            src, tgt = _words_in_either(tokenizer, f"edits[{i}].local_blend.words", lb.words, recipe.source,
                                        edit.target, problems)
            sub_src, sub_tgt = _words_in_either(tokenizer, f"edits[{i}].local_blend.subtract", lb.subtract,
                                                recipe.source, edit.target, problems)
            blend = dict(src_tokens=src, tgt_tokens=tgt, sub_src_tokens=sub_src, sub_tgt_tokens=sub_tgt,
                         threshold=torch.tensor(lb.threshold), sub_threshold=torch.tensor(lb.subtract_threshold),
                         start=torch.tensor(int(lb.start * steps)), active=torch.tensor(True))
        per_edit.append((tmap, alpha, equalizer, self_gate, blend))
    return per_edit, list(problems)


def check_recipe(recipe: Recipe, tokenizer) -> list[str]:
    """Every problem that needs the tokenizer (words not in prompts, prompts too long, ...), as path lines.

    The same rules as _compile_edits, without making any tensor (checks.py, which `p2p validate` uses
    without torch; tests/text/test_problems.py holds the two to the same answers)."""
    from p2p_cli.checks import recipe_problems

    return recipe_problems(recipe, tokenizer)


def _no_blend(length: int) -> dict[str, torch.Tensor]:
    zeros = torch.zeros(length)
    return dict(src_tokens=zeros, tgt_tokens=zeros, sub_src_tokens=zeros, sub_tgt_tokens=zeros,
                threshold=torch.tensor(0.3), sub_threshold=torch.tensor(0.3), start=torch.tensor(0),
                active=torch.tensor(False))


def compile_plan(recipe: Recipe, tokenizer, *, baseline: bool = False, source_name: str = "recipe",
                 source_only: bool = False) -> EditPlan:
    """Compile a validated recipe; raise RecipeError listing every tokenizer-dependent problem.

    source_only: the recipe's edits are checked but not run: a plan of the source alone (no target rows).
    """
    steps = recipe.steps
    per_edit, problems = _compile_edits(recipe, tokenizer, steps)
    if problems:
        raise RecipeError(problems, source_name)
    length = tokenizer.model_max_length
    maps = [p[0] for p in per_edit]
    blends = [p[4] or _no_blend(length) for p in per_edit]
    has_blend = any(p[4] is not None for p in per_edit)
    prompts = [recipe.source] + [e.target for e in recipe.edits]
    roles = ["source"] + [f"edit-{k}" for k in range(1, len(recipe.edits) + 1)]
    for k, edit in enumerate(recipe.edits, start=1):
        # a reweight edit's prompt is the source's tokens: without control it is the source row again
        if (baseline or recipe.baseline or edit.baseline) and edit.type != "reweight":
            prompts.append(edit.target)
            roles.append(f"baseline-{k}")
    plan = EditPlan(
        prompts=prompts,
        roles=roles,
        steps=steps,
        n_targets=len(recipe.edits),
        mapper=torch.stack([m.mapper for m in maps]),
        aligned=torch.stack([m.aligned for m in maps]),
        equalizer=torch.stack([p[2] for p in per_edit]),
        alpha=torch.stack([p[1] for p in per_edit], dim=1),
        self_gate=torch.stack([p[3] for p in per_edit], dim=1),
        blend={k: torch.stack([b[k] for b in blends]) for k in blends[0]} if has_blend else None,
    )
    if source_only:
        plan = replace(plan, prompts=prompts[:1], roles=roles[:1], n_targets=0, mapper=plan.mapper[:0],
                       aligned=plan.aligned[:0], equalizer=plan.equalizer[:0], alpha=plan.alpha[:, :0],
                       self_gate=plan.self_gate[:, :0], blend=None)
    return plan


def nearest_side(available: list[int], wanted: int) -> int:
    """The available layer side closest to wanted (ties go to the smaller side)."""
    return min(sorted(set(available)), key=lambda s: abs(s - wanted))
