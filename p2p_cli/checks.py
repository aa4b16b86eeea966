"""Every problem of a recipe, found once, without torch: the tokenizer's (words that must be in a prompt, prompts
over the token limit, reweight targets that tokenize differently) and the model's (keys its family does not take,
sizes it cannot run, layers or blocks it lacks), as "path: message" lines. `p2p validate` runs them on what config
files and the shipped CLIP tokenizer say; the API runs them on the loaded model's ModelSpec before the engine, which
receives only checked recipes (`checked`)."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from p2p_cli.family_defaults import (FAMILY_DEFAULTS, default_blend_side, inversion_problem, nearest_side,
                                     read_folder_defaults, with_family_defaults)
from p2p_cli.model_spec import ModelSpec, from_configs
from p2p_cli.paths import read_regular_text
from p2p_cli.recipe import Recipe, RecipeError
from p2p_cli.resolve import BUNDLED, config_folder, folder_family, resolve
from p2p_cli.text.tokens import PromptError, find_tokens, token_ids, word_spans
from p2p_cli.text.words import same_words, split_words


def clip_tokenizer():
    """The real CLIP BPE tokenizer of SD v1 (49408 tokens, 77 max) from the shipped files, without torch."""
    from transformers import CLIPTokenizer  # about 0.6 s, and no torch

    folder = resources.files("p2p_cli") / "assets" / "clip_tokenizer"
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77,
                         pad_token="<|endoftext|>")


def check_tokenizers(spec: str | None, clip: Any) -> list:
    """The tokenizers whose positions a model's denoiser reads, for torch-free checks: CLIP's (SD v1's shipped
    BPE stands in for every CLIP), plus T5's from a local or cached SD3 folder; a local or cached FLUX.1 or Chroma
    folder's T5 alone (FLUX.1's CLIP gives only the pooled embedding, which diffusers truncates silently). Each sized
    as its pipeline pads it."""
    geometry = model_geometry(spec) if resolve(spec).key != "shapes" else None
    family = geometry.family.name if geometry else None
    if family in ("qwen-image", "flux2-klein", "flux2-dev"):
        return [_template_tokenizer(spec, family)]
    if family not in ("sd3", "flux", "chroma"):
        return [clip]
    t5 = _t5_tokenizer(spec, family)
    if t5 is None:
        return [clip]  # SD3 without T5 (the bundled transformer shapes model too): its CLIP part only
    return [clip, t5] if family == "sd3" else [t5]


@functools.cache  # read once per model, however many recipes name it
def _t5_tokenizer(spec: str, family: str) -> Any:
    from transformers import AutoTokenizer

    folder = model_folder(spec) / {"sd3": "tokenizer_3", "flux": "tokenizer_2"}.get(family, "tokenizer")
    if not folder.is_dir():
        return None
    t5 = AutoTokenizer.from_pretrained(str(folder))
    long = family == "chroma" or (family == "flux" and _flux_guidance(spec))  # FLUX.1-dev and Chroma: 512
    t5.model_max_length = 512 if long else 256
    return t5


@functools.cache
def _template_tokenizer(spec: str, family: str) -> Any:
    """An LLM-encoded family's tokenizer read through its chat template, as the family plans words
    (families/qwen_image.py, families/flux2.py)."""
    from transformers import AutoTokenizer

    from p2p_cli.text.template import (QWEN_IMAGE_DROP, QWEN_IMAGE_TEMPLATE, QWEN_IMAGE_TEXT_LENGTH, TemplateTokenizer,
                                       chat_template)

    tokenizer = AutoTokenizer.from_pretrained(str(model_folder(spec) / "tokenizer"))
    if family == "qwen-image":
        return TemplateTokenizer(tokenizer, QWEN_IMAGE_TEMPLATE, QWEN_IMAGE_DROP, QWEN_IMAGE_TEXT_LENGTH)
    if family == "flux2-dev":  # Flux2Pipeline's system message and Mistral template, which holds <s>
        from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE

        out = TemplateTokenizer(tokenizer, chat_template(tokenizer, system=SYSTEM_MESSAGE), 0, 512, False)
    else:
        out = TemplateTokenizer(tokenizer, chat_template(tokenizer, enable_thinking=False), 0, 512)
    out.masked_padding = False
    return out


def _flux_guidance(spec: str) -> bool:
    try:
        return bool(json.loads(read_regular_text(model_folder(spec) / "transformer" / "config.json"))["guidance_embeds"])
    except (OSError, ValueError, KeyError):
        return True


def recipe_problems_for(recipe: Recipe, tokenizers: list) -> list[str]:
    """recipe_problems over each tokenizer, each problem once."""
    return list(dict.fromkeys(p for tok in tokenizers for p in recipe_problems(recipe, tok)))


class Problems(list):
    """Collects "path: message" lines."""

    def run(self, path: str, fn, *args):
        try:
            return fn(*args)
        except PromptError as err:
            self.append(f"{path}: {err}")
            return None


def words_in_either(tokenizer: Any, path: str, words: list[str], source: str, target: str,
                    problems: Problems) -> tuple[list[int], list[int]]:
    """Token positions of the words in the source and in the target (local blend looks a word up in both); a
    word in neither prompt is a problem."""
    positions: tuple[list[int], list[int]] = ([], [])
    for word in words:
        found = False
        for prompt, into in zip((source, target), positions):
            try:
                into += find_tokens(tokenizer, prompt, word)
                found = True
            except PromptError:
                pass
        if not found:
            both = list(dict.fromkeys(split_words(source) + split_words(target)))
            close = difflib.get_close_matches(word.lower(), both, n=1, cutoff=0.6)
            problems.append(
                f"{path}: \"{word}\" is in neither prompt; source words: {', '.join(split_words(source))};"
                f" target words: {', '.join(split_words(target))}" + (f'; did you mean "{close[0]}"?' if close else "")
            )
    return positions


def words_in_one(tokenizer: Any, path: str, words: list[str], prompt: str, which: str,
                 problems: Problems) -> list[int]:
    """Token positions of the words in one prompt (`which`: "source" or "target"); a word not in it is a
    problem."""
    positions: list[int] = []
    for word in words:
        try:
            positions += find_tokens(tokenizer, prompt, word)
        except PromptError:
            close = difflib.get_close_matches(word.lower(), split_words(prompt), n=1, cutoff=0.6)
            problems.append(f"{path}: \"{word}\" is not in the {which}; {which} words: {', '.join(split_words(prompt))}"
                            + (f'; did you mean "{close[0]}"?' if close else ""))
    return positions


def recipe_problems(recipe: Recipe, tokenizer: Any) -> list[str]:
    """The problems plan.compile_plan would raise, in its order, as "path: message" lines."""
    problems = Problems()
    source_ok = problems.run("source", token_ids, tokenizer, recipe.source) is not None
    if recipe.negative_prompt:
        problems.run("negative_prompt", token_ids, tokenizer, recipe.negative_prompt)
    for i, edit in enumerate(recipe.edits):
        if problems.run(f"edits[{i}].target", token_ids, tokenizer, edit.target) is None or not source_ok:
            continue
        if edit.type == "replace":
            word_spans(tokenizer, recipe.source), word_spans(tokenizer, edit.target)
        elif edit.type == "reweight":
            if not same_words(recipe.source, edit.target):
                problems.append(f"edits[{i}].type: reweight keeps the source's words; to change words use type"
                                " replace or refine with reweight on top")
            elif token_ids(tokenizer, recipe.source) != token_ids(tokenizer, edit.target):
                problems.append(f"edits[{i}].target: reweight needs the target to tokenize as the source does"
                                " (check punctuation)")
        for word in recipe.cross_for(edit).words:
            problems.run(f"edits[{i}].cross_replace.{word}", find_tokens, tokenizer, edit.target, word)
        for word in edit.reweight or {}:
            problems.run(f"edits[{i}].reweight.{word}", find_tokens, tokenizer, edit.target, word)
        if edit.local_blend is not None:
            lb = edit.local_blend
            words_in_either(tokenizer, f"edits[{i}].local_blend.words", lb.words, recipe.source, edit.target,
                            problems)
            words_in_one(tokenizer, f"edits[{i}].local_blend.source_words", lb.source_words, recipe.source,
                         "source", problems)
            words_in_one(tokenizer, f"edits[{i}].local_blend.target_words", lb.target_words, edit.target,
                         "target", problems)
            words_in_either(tokenizer, f"edits[{i}].local_blend.subtract", lb.subtract, recipe.source, edit.target,
                            problems)
    return list(problems)


# other tools' prompt weighting, which p2p reads as plain text: `(word:1.2)`, `((word))`, `[word]`
_WEIGHT_SYNTAX = re.compile(r"\([^()]*:\s*-?\d+(?:\.\d*)?\s*\)|\(\([^()]+\)\)|\[[^\[\]]+\]")


DDIM_GUIDANCE = 2.0  # above this, plain DDIM inversion drifts visibly


def ddim_warning(where: str, guidance: float) -> str:
    return (f"{where}: ddim at guidance {guidance:g} drifts: plain DDIM inversion retraces the picture only without"
            " guidance, so the reconstruction (and every edit) comes out far from it; use direct (the default), null-text or"
            " negative-prompt, or guidance: 1")


def recipe_warnings(recipe: Recipe) -> list[str]:
    """Likely mistakes that still make a valid recipe, as "path: message" lines (no tokenizer needed)."""
    warnings = []
    prompts = [("source", recipe.source), ("negative_prompt", recipe.negative_prompt)]
    prompts += [(f"edits[{i}].target", e.target) for i, e in enumerate(recipe.edits)]
    for path, prompt in prompts:
        for m in _WEIGHT_SYNTAX.finditer(prompt or ""):
            text, _, factor = m.group(0).strip("()[]").partition(":")
            words = " ".join(split_words(text)) or text
            warnings.append(f"{path}: {m.group(0)!r} looks like another tool's prompt weighting, which p2p does not"
                            f" read (the model gets the brackets and numbers as text); write the words plainly and"
                            f" weight them in an edit with reweight: {{{words}: {factor.strip() or 'FACTOR'}}} (or use"
                            f" `p2p edit --prompt`, whose inline syntax reads (word:1.5))")
    if recipe.image is not None and recipe.inversion_method == "ddim" and recipe.guidance > DDIM_GUIDANCE:
        warnings.append(ddim_warning("inversion", recipe.guidance))
    n_words = len(split_words(recipe.source))
    for i, edit in enumerate(recipe.edits):
        if same_words(recipe.source, edit.target) and not edit.reweight:
            warnings.append(f"edits[{i}].target: the same words as the source and no reweight: this edit renders"
                            " the source again; change a word, or add reweight: {word: factor}")
        for field, keys in (("reweight", list(edit.reweight or {})),
                            ("cross_replace", list(edit.cross_replace.words) if edit.cross_replace else [])):
            seen: dict[tuple[str, ...], str] = {}
            for key in keys:
                norm = tuple(split_words(key))
                if norm in seen:
                    warnings.append(f"edits[{i}].{field}: {seen[norm]!r} and {key!r} name the same word (words match"
                                    f" without case or punctuation); only the last one, {key!r}, applies")
                seen[norm] = key
        if edit.type == "replace" and n_words >= 3:
            changed = sum(a != b for a, b in zip(split_words(recipe.source), split_words(edit.target)))
            if changed * 2 > n_words:
                warnings.append(f"edits[{i}].target: this replace swaps {changed} of {n_words} words, so little"
                                " of the source's layout carries over; check the target (a word swap changes a"
                                " few words), or use type: refine")
        if edit.type == "reweight" and edit.baseline:
            warnings.append(f"edits[{i}].baseline: a reweight edit's prompt is the source's, so its baseline would"
                            " be the source picture again; it is not rendered")
    return warnings


def model_folder(spec: str | None) -> Path | None:
    """The folder a model's config files are in (resolve.config_folder: never downloaded; None for a hub id that
    is not cached)."""
    return config_folder(spec)


@functools.cache  # read once per model, however many recipes name it (a manifest of thousands)
def model_geometry(spec: str | None) -> ModelSpec | None:
    """The ModelSpec of the bundled model, a local folder or a hub id in the local Hugging Face cache, from its
    config files (no weights read, no torch, no download); None for a hub id not cached or a single-file
    checkpoint."""
    folder = model_folder(spec)
    if folder is None:
        return None
    family = folder_family(folder) if folder.is_dir() else None
    if family is None:
        return None
    source = resolve(spec)
    vae_folder = BUNDLED["shapes"] if source.key == "shapes-mmdit" else folder  # it shares the UNet model's VAE
    # the id the loaded model reports (models.load_model), so that messages name it alike before and after loading
    name = f"bundled:{source.key}" if source.kind == "bundled" else source.key
    part = "transformer" if FAMILY_DEFAULTS[family].joint else "unet"
    try:
        vae = json.loads(read_regular_text(vae_folder / "vae" / "config.json"))
        config = json.loads(read_regular_text(folder / part / "config.json"))
        geometry = from_configs(family, vae, **{part: config}, id=name)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    return dataclasses.replace(geometry, defaults=read_folder_defaults(folder))  # a malformed file: RecipeError


def size_problem(side: int, multiple: int, native: int) -> str | None:
    """The line for a picture side the model cannot run (its VAE and UNet halve it until it must stay whole)."""
    if side % multiple == 0:
        return None
    return (f"size: {side} is not a multiple of {multiple}, which this model needs (the VAE and the UNet's"
            f" downsampling); use a multiple of {multiple}, e.g. its native size {native}")


def missing_model_problems(spec: str | None) -> list[str]:
    """A model that names a local folder or file that is not there (resolve: from the working directory, as
    models.load_model reads it); a hub id is looked up when it loads."""
    if resolve(spec).kind != "missing":
        return []
    return [f"model: no model folder or file at {spec}; give a folder saved by diffusers, a .safetensors"
            " checkpoint, a hub id (owner/name) or shapes"]


def size_problems(recipe: Recipe, spec: str | None) -> list[str]:
    """`size` against the model's size multiple, before any model loads, where the model's config files are here
    (the bundled model, a local folder); a hub id is checked once loaded (engine.pipeline)."""
    geometry = model_geometry(spec) if recipe.size else None
    if geometry is None:
        return []
    lines = [size_problem(side, geometry.multiple, geometry.native) for side in dict.fromkeys(recipe.size)]
    return [line for line in lines if line]


def model_problems(recipe: Recipe, spec: ModelSpec) -> list[str]:
    """Every problem of a recipe on a model, as "path: message" lines: keys its family does not take, sizes it
    cannot run, layers or blocks it lacks, real-picture methods its sampler cannot invert, prompts its tokenizers
    cannot read (when the spec holds them). The engine runs only recipes with none (`checked`)."""
    family, problems = spec.family, []
    if not family.micro_conditioning:
        problems += [f"{k}: only SDXL models take size and crop ids; {spec.id} is {family.label}"
                     for k in ("original_size", "crops_coords_top_left", "target_size") if getattr(recipe, k) is not None]
    if not family.joint:
        problems += [f"{k}: only the flow-matching transformers (SD3, FLUX.1) have joint blocks and a sampler shift;"
                     f" {spec.id} is {family.label}" + (": use self_replace_max_res / blend_res" if k.endswith("blocks")
                                                        else "")
                     for k in ("self_blocks", "blend_blocks", "shift", "text_mass") if getattr(recipe, k) is not None]
    if recipe.image is not None and (problem := inversion_problem(recipe.inversion_method, family.sampler, spec.cfg,
                                                                    family.label)) is not None:
        problems.append(f"inversion: {problem}")
    if problems:
        return problems  # the rest reads the family's own keys
    if spec.prompt_check is not None:
        for where, prompt in [("source", recipe.source), ("negative_prompt", recipe.negative_prompt)] + [
                (f"edits[{i}].target", e.target) for i, e in enumerate(recipe.edits)]:
            if prompt and (problem := spec.prompt_check(prompt)):
                problems.append(f"{where}: {problem}")
        if problems:
            return problems
    height, width = recipe.size or (spec.native, spec.native)
    problems += [p for p in (size_problem(s, spec.multiple, spec.native) for s in dict.fromkeys((height, width))) if p]
    if problems:
        return problems
    latent_hw = spec.latent((height, width))
    if family.joint:
        grid = spec.grid(latent_hw)
        if recipe.self_replace_max_res is not None:
            problems.append(f"self_replace_max_res: {family.label} has no resolution levels; choose the blocks"
                            " that take the source's image attention with self_blocks: [0, 1, ...]")
        if recipe.blend_res is not None and recipe.blend_res != grid:
            problems.append(f"blend_res: {family.label} has one token grid, of side {grid} at this size;"
                            " choose blocks with blend_blocks instead")
        for key in ("self_blocks", "blend_blocks"):
            wrong = [b for b in getattr(recipe, key) or [] if spec.blocks is not None and b >= spec.blocks]
            if wrong:
                problems.append(f"{key}: this model has blocks 0 to {spec.blocks - 1}, not {wrong}")
    elif recipe.blend_res is not None and recipe.blend_res not in (sides := spec.cross_sides(latent_hw)):
        problems.append(f"blend_res: no cross-attention layer has side {recipe.blend_res};"
                        f" this model's sides at this size are {sides}")
    if not problems and spec.text_parts:
        problems += recipe_problems_for(recipe, [p for p in spec.text_parts if not isinstance(p, int)])
    return problems


def problems_before_loading(recipe: Recipe, model: str | None, tokenizers: bool = True) -> list[str]:
    """What model_problems finds before the model loads: on the ModelSpec its config files give (the bundled
    models, a local folder, a hub id already cached; nothing for others), with the shipped CLIP tokenizer (and a
    local T5's) when `tokenizers` (p2p validate; p2p edit checks the words on the loaded model's own tokenizers)."""
    spec = model_geometry(model)
    parts = tuple(check_tokenizers(model, _shipped_clip())) if tokenizers else ()
    if spec is None:
        return recipe_problems_for(recipe, list(parts)) if parts else []
    spec = dataclasses.replace(spec, text_parts=parts)
    return model_problems(recipe, spec) or defaults_problems(recipe, spec)


def defaults_problems(recipe: Recipe, spec: ModelSpec) -> list[str]:
    """What the model folder's p2p-defaults.json gives this recipe that the model cannot run (a block it lacks, a
    key its family does not take), as lines naming the file."""
    if spec.defaults is None or not spec.defaults.for_recipe(recipe):
        return []
    problems = model_problems(with_family_defaults(recipe, spec.family, spec.defaults), spec)
    return [f"{spec.defaults.file}: {p}" for p in problems]


@functools.cache
def _shipped_clip():
    return clip_tokenizer()


def checked(recipe: Recipe, spec: ModelSpec, source_name: str = "recipe") -> Recipe:
    """The recipe as the engine runs it (its family's defaults filled in), or RecipeError listing every problem."""
    problems = model_problems(recipe, spec) or defaults_problems(recipe, spec)
    if problems:
        raise RecipeError(problems, source_name)
    return with_family_defaults(recipe, spec.family, spec.defaults)


def blend_side(spec: ModelSpec, recipe: Recipe) -> int:
    """The side of the maps local blend reads on a UNet model: the recipe's, else the default side's nearest layer."""
    latent_hw = spec.latent(recipe.size)
    return recipe.blend_res or nearest_side(spec.cross_sides(latent_hw), default_blend_side(max(latent_hw)))


FAR_FROM_NATIVE = 4.0  # an area this many times larger or smaller than the native one composes poorly
CROP_KEEPS = 0.8  # a centre crop that keeps less of the picture than this is worth a word


def size_warning(size: tuple[int, int], native: int) -> str | None:
    """A size far from the one the model was trained at (it still runs, but composes poorly)."""
    ratio = size[0] * size[1] / (native * native)
    if 1 / FAR_FROM_NATIVE <= ratio <= FAR_FROM_NATIVE:
        return None
    return (f"size: {size[1]}x{size[0]} is {'far above' if ratio > 1 else 'far below'} this model's native"
            f" {native}x{native} ({ratio:.2g}x the pixels); models compose poorly far from the size they were trained"
            f" at (repeated or cut-off objects); prefer a size near {native}")


def crop_warning(picture_wh: tuple[int, int], size: tuple[int, int]) -> str | None:
    """A centre crop that cuts away much of the picture (its shape differs from the model's)."""
    width, height = picture_wh
    out_h, out_w = size
    keep = min(width * out_h / (height * out_w), height * out_w / (width * out_h))
    if keep >= CROP_KEEPS:
        return None
    return (f"image: the centre crop keeps {keep:.0%} of the {width}x{height} picture, whose shape is not the"
            f" model's {out_w}x{out_h}; give crop: [left, top, right, bottom] to choose the part, or size: with"
            " the picture's shape")
