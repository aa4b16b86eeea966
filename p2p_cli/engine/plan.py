"""Recipe + tokenizer -> EditPlan: per-target mappers, per-step gates, equalizers and blend tokens (tensors)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from p2p_cli.checks import Problems, words_in_either, words_in_one
from p2p_cli.recipe import Recipe, Window
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

    def first(self, length: int) -> EditPlan:
        """The plan on the first `length` text positions: exact when nothing maps beyond them (a family whose
        padding is masked out runs only as many positions as its longest prompt has, families/qwen_image.py)."""
        blend = None if self.blend is None else {
            k: (v[..., :length] if k in _TOKEN_KEYS else v) for k, v in self.blend.items()}
        return replace(self, mapper=self.mapper[:, :length, :length], aligned=self.aligned[:, :length],
                       equalizer=self.equalizer[:, :length], alpha=self.alpha[..., :length], blend=blend)


class UncheckedRecipe(ValueError):
    """A recipe that reached the engine with problems `checks.model_problems` finds: the engine runs checked
    recipes only (the API checks each with `checks.checked` first, which raises the user's RecipeError)."""

    def __init__(self, problems: list[str], source: str = "recipe"):
        self.problems, self.source = list(problems), source
        super().__init__(f"{source}: unchecked recipe: " + "; ".join(self.problems))


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
            src[words_in_one(tokenizer, f"edits[{i}].local_blend.source_words", lb.source_words, recipe.source,
                             "source", problems)] = 1.0
            tgt[words_in_one(tokenizer, f"edits[{i}].local_blend.target_words", lb.target_words, edit.target,
                             "target", problems)] = 1.0
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
    from p2p_cli.checks import recipe_problems_for

    parts = tokenizer if isinstance(tokenizer, (list, tuple)) else [tokenizer]
    return recipe_problems_for(recipe, [p for p in parts if not isinstance(p, int)])


def _no_blend(length: int) -> dict[str, torch.Tensor]:
    zeros = torch.zeros(length)
    return dict(src_tokens=zeros, tgt_tokens=zeros, sub_src_tokens=zeros, sub_tgt_tokens=zeros,
                threshold=torch.tensor(0.3), sub_threshold=torch.tensor(0.3), start=torch.tensor(0),
                active=torch.tensor(False))


def _filler(per_edit: list, length: int) -> list:
    """A text part no tokenizer reads (SD3's T5 half when the model has no T5: zeros): identity mappers, no
    reweight, the cross gate of the first part's last (padding) position, no blend words."""
    out = []
    for tmap, alpha, _, self_gate, blend in per_edit:
        filler = TokenMap(torch.eye(length), torch.ones(length))
        out.append((filler, alpha[:, -1:].expand(-1, length).clone(), torch.ones(length), self_gate,
                    None if blend is None else {**blend, **{k: torch.zeros(length) for k in _TOKEN_KEYS}}))
    return out


_TOKEN_KEYS = ("src_tokens", "tgt_tokens", "sub_src_tokens", "sub_tgt_tokens")


def _joined(parts: list[list]) -> list:
    """Per-edit tensors of several text parts (each over its own token positions) as one sequence: mappers
    block-diagonal, the rest concatenated along the token axis."""
    joined = []
    for edit_parts in zip(*parts):
        maps = [p[0] for p in edit_parts]
        mapper = torch.block_diag(*[m.mapper for m in maps])
        aligned = torch.cat([m.aligned for m in maps])
        alpha = torch.cat([p[1] for p in edit_parts], dim=1)
        equalizer = torch.cat([p[2] for p in edit_parts])
        blends = [p[4] for p in edit_parts]
        blend = None
        if blends[0] is not None:
            blend = {**blends[0], **{k: torch.cat([b[k] for b in blends]) for k in _TOKEN_KEYS}}
        joined.append((TokenMap(mapper, aligned), alpha, equalizer, edit_parts[0][3], blend))
    return joined


def text_length(tokenizer) -> int:
    """Positions of the text sequence: a tokenizer's model_max_length, or the sum over a list of text parts."""
    if isinstance(tokenizer, (list, tuple)):
        return sum(p if isinstance(p, int) else p.model_max_length for p in tokenizer)
    return tokenizer.model_max_length


def _compile_parts(recipe: Recipe, tokenizer, steps: int):
    """_compile_edits over each text part of a list (tokenizers in the sequence's order, or an int: a filler of
    that many positions), joined; a problem found by several tokenizers is listed once."""
    if not isinstance(tokenizer, (list, tuple)):
        return _compile_edits(recipe, tokenizer, steps)
    tokenizers = [p for p in tokenizer if not isinstance(p, int)]
    compiled = [_compile_edits(recipe, t, steps) for t in tokenizers]
    problems = list(dict.fromkeys(p for _, found in compiled for p in found))
    if problems:
        return [], problems
    by_tokenizer = iter(c[0] for c in compiled)
    parts = [_filler(compiled[0][0], p) if isinstance(p, int) else next(by_tokenizer) for p in tokenizer]
    return _joined(parts), []


def compile_plan(recipe: Recipe, tokenizer, *, baseline: bool = False, source_name: str = "recipe",
                 source_only: bool = False) -> EditPlan:
    """Compile a checked recipe (checks.checked); UncheckedRecipe if it has tokenizer-dependent problems.

    tokenizer: one tokenizer, or the text parts of the denoiser's sequence in order (SD3: CLIP's 77 positions,
    then T5's; an int for a part no tokenizer reads): each part is planned with its own tokenizer (CLIP BPE and
    T5 SentencePiece split words differently) and the parts are joined, mappers block-diagonal.
    source_only: the recipe's edits are checked but not run: a plan of the source alone (no target rows).
    """
    steps = recipe.steps
    per_edit, problems = _compile_parts(recipe, tokenizer, steps)
    if problems:
        raise UncheckedRecipe(problems, source_name)
    length = text_length(tokenizer)
    maps = [p[0] for p in per_edit]
    blends = [p[4] or _no_blend(length) for p in per_edit]
    has_blend = any(p[4] is not None for p in per_edit)
    prompts = [recipe.source] + [e.target for e in recipe.edits]
    roles = ["source"] + [f"edit-{k}" for k in range(1, len(recipe.edits) + 1)]
    for k in recipe.baseline_edits(baseline):
        prompts.append(recipe.edits[k - 1].target)
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


@dataclass
class Batched:
    """Several recipes' plans as one batch: [every source, every target, every baseline], recipe by recipe."""

    plan: EditPlan  # prompts in batch order; mapper, gates, blend over every target
    rows: list[list[int]]  # per recipe: the batch rows of its own prompts, in its plan's order
    source_of: torch.Tensor  # (n,) long: each target's source row (its recipe's number)
    row_recipe: list[int]  # per batch row: the recipe it belongs to


def combine_plans(plans: list[EditPlan]) -> Batched:
    """Plans of recipes with the same steps (and tokenizer) as one batch; each target keeps its own source."""
    if len({p.steps for p in plans}) != 1:
        raise ValueError("plans batched together must have the same number of steps")
    g = len(plans)
    n_total = sum(p.n_targets for p in plans)
    targets, baselines, rows, source_of, row_recipe = [], [], [], [], list(range(g))
    for k, p in enumerate(plans):
        own_targets = list(range(g + len(targets), g + len(targets) + p.n_targets))
        targets += p.prompts[1 : 1 + p.n_targets]
        rows.append([k] + own_targets)
        source_of += [k] * p.n_targets
    for k, p in enumerate(plans):
        extra = p.prompts[1 + p.n_targets :]
        rows[k] += list(range(g + n_total + len(baselines), g + n_total + len(baselines) + len(extra)))
        baselines += extra
    for k, p in enumerate(plans):
        row_recipe += [k] * p.n_targets
    for k, p in enumerate(plans):
        row_recipe += [k] * (len(p.prompts) - 1 - p.n_targets)
    length = plans[0].mapper.shape[-1]
    blend = None
    if any(p.blend is not None for p in plans):
        parts = [p.blend or {k: v.expand(p.n_targets, *v.shape) for k, v in _no_blend(length).items()} for p in plans]
        blend = {key: torch.cat([b[key] for b in parts]) for key in parts[0]}
    plan = EditPlan(
        prompts=[p.prompts[0] for p in plans] + targets + baselines,
        roles=[f"{k}:{role}" for k, p in enumerate(plans) for role in p.roles],  # not in batch order; see rows
        steps=plans[0].steps, n_targets=n_total,
        mapper=torch.cat([p.mapper for p in plans]), aligned=torch.cat([p.aligned for p in plans]),
        equalizer=torch.cat([p.equalizer for p in plans]), alpha=torch.cat([p.alpha for p in plans], dim=1),
        self_gate=torch.cat([p.self_gate for p in plans], dim=1), blend=blend,
    )
    return Batched(plan, rows, torch.tensor(source_of, dtype=torch.long), row_recipe)
