"""run_edit: the source and every target in ONE batched sampling loop (DDIM, or flow matching for SD3 / FLUX)
from ONE initial latent, with P2P control."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from p2p_cli.checks import size_problem
from p2p_cli.engine.attention import controlled
from p2p_cli.engine.control.run import Control
from p2p_cli.engine.memory import Layers, check_fits, estimate_bytes
from p2p_cli.engine.joint_attention import controlled_joint
from p2p_cli.engine.layers import cross_sides, latent_size, layer_grid, layer_infos, level_sides, model_layers, size_multiple
from p2p_cli.engine.control.blend import LocalBlend
from p2p_cli.engine.control.store import AttentionStore
from p2p_cli.families import Conditioning, Geometry
from p2p_cli.models import Model
from p2p_cli.placement import vae_tile_for, vae_tiling
from p2p_cli.engine.plan import EditPlan, UncheckedRecipe, check_recipe, combine_plans, compile_plan
from p2p_cli.family_defaults import default_blend_side as blend_side_for, nearest_side, with_family_defaults
from p2p_cli.recipe import BATCH_SHARED, Recipe
from p2p_cli.engine.sampler import (FlowSchedule, NoisySchedule, Predict, ResidualFlowSchedule, Schedule, sample_ddim,
                                    sample_flow)

__all__ = ["EditResult", "run_edit", "run_edits", "run_bytes", "check_recipe", "encode_prompts", "encode_negative", "initial_latent",
           "decode_latents", "generate", "geometry"]


@dataclass
class EditResult:
    """What one run produced, in batch order."""

    prompts: list[str]  # [source, edit_1..edit_n, baseline_1..]
    roles: list[str]  # "source", "edit-1", ..., "baseline-1", ...
    images: torch.Tensor  # (N, 3, H, W) float32 in [0, 1], CPU
    latents: torch.Tensor  # (N, C, h, w) final latents, CPU
    masks: dict[int, torch.Tensor]  # edit number (1-based) -> local-blend mask (H, W) in {0, 1}, CPU
    seconds: dict[str, float]
    plan: EditPlan
    layout: dict = field(default_factory=dict)  # latent_hw, self_max_res, blend_res


def geometry(model: Model, recipe: Recipe | None = None, size: tuple[int, int] | None = None) -> Geometry:
    """The pictures' size and SDXL's size/crop ids for a recipe (or the model's native size)."""
    size = size or (recipe.size if recipe is not None else None) or model.native_size
    if recipe is None:
        return Geometry(size=tuple(size))
    return Geometry(size=tuple(size), original_size=recipe.original_size,
                    crop_top_left=recipe.crops_coords_top_left or (0, 0), target_size=recipe.target_size,
                    shift=recipe.shift)


def encode_prompts(model: Model, prompts: list[str], geo: Geometry | None = None) -> Conditioning:
    """The denoiser's conditioning for the prompts, as the family's diffusers pipeline computes it:
    hidden (B, L, D) (SD: CLIP's last hidden states, padded to 77; SDXL: both encoders' penultimate states
    joined) and the family's extra per-row tensors (SDXL: pooled embedding, size/crop ids)."""
    return model.family.encode(model, prompts, geo or geometry(model))


def encode_negative(model: Model, negative_prompt: str, n: int, geo: Geometry | None = None) -> Conditioning:
    """The n unconditional rows of classifier-free guidance (SDXL: zeros for an empty negative prompt)."""
    return model.family.encode_negative(model, negative_prompt, n, geo or geometry(model))


def initial_latent(seed: int, channels: int, latent_hw: tuple[int, int]) -> torch.Tensor:
    """(1, C, h, w) standard normal from a CPU generator: the same picture for a seed on any device."""
    gen = torch.Generator("cpu").manual_seed(seed)
    return torch.randn((1, channels, *latent_hw), generator=gen, dtype=torch.float32)


def decode_latents(model: Model, latents: torch.Tensor, chunk: int = 8, vae: str | None = None) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1], float32 on CPU (in the VAE's dtype: float32 for SDXL under fp16).

    vae: the recipe's `vae:` (auto when None): diffusers' tiled VAE, one picture at a time, where it says so
    (loading.tile_side). Tiles are blended over their overlap, so a tiled picture differs slightly from a whole one
    near the seams (tests/engine/test_vae_tiling.py bounds it); full decodes as diffusers' pipelines do."""
    out = []
    size = (latents.shape[-2] * model.vae_scale, latents.shape[-1] * model.vae_scale)
    for part in latents.split(chunk):
        with vae_tiling(model.vae, vae, size, part.shape[0]):
            pixels = model.family.to_pixels(model, part.to(model.device, model.vae_dtype))
        out.append((pixels.float() / 2 + 0.5).clamp(0, 1).cpu())
    return torch.cat(out)


def guided_predict(model: Model, conditioning: Callable[[int], Conditioning], guidance: float,
                   attention_kwargs: Callable[[int], dict] | None = None) -> Predict:
    """The sampler's predict(x, t, i): classifier-free guidance over [uncond x B, cond x B] when guidance > 1.

    conditioning(i) gives the denoiser's rows at step i (both halves when guided), attention_kwargs(i) the
    cross_attention_kwargs the attention processors read.
    """
    guided = guidance > 1.0

    def predict(x: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
        inp = torch.cat([x, x]) if guided else x
        kwargs = attention_kwargs(i) if attention_kwargs is not None else None
        out = model.family.denoise(model, inp, t, conditioning(i), kwargs)
        if not guided:
            return out
        out_uncond, out_cond = out.chunk(2)
        return model.family.guide(out_uncond, out_cond, guidance)

    return predict


def default_blend_side(latent_hw: tuple[int, int]) -> int:
    """Local blend's map side for a latent (family_defaults.default_blend_side of its longer side)."""
    return blend_side_for(max(latent_hw))


def _check_size(model: Model, recipe: Recipe, source: str) -> tuple[int, int]:
    height, width = recipe.size or model.native_size
    multiple = size_multiple(model)
    problems = [size_problem(s, multiple, model.native_size[0]) for s in dict.fromkeys((height, width))]
    if any(problems):
        raise UncheckedRecipe([p for p in problems if p], source)
    return latent_size(model, (height, width))


def run_bytes(model: Model, latent_hw: tuple[int, int], n_prompts: int, guided: bool, stores: list[AttentionStore],
              explicit: bool, text_length: int, vae_mode: str | None = None) -> int:
    """memory.estimate_bytes for a run of this model at a latent size, with these stores (before they allocate),
    and the VAE tiled as the recipe's `vae:` says at that size."""
    maps, stored = [], []
    tile = vae_tile_for(model.vae, vae_mode, (latent_hw[0] * model.vae_scale, latent_hw[1] * model.vae_scale))
    vae = dict(vae_channels=model.family.vae_width(model), vae_scale=model.vae_scale,
               vae_bytes=torch.finfo(model.vae_dtype).bits // 8, latent_channels=model.latent_channels, vae_tile=tile)
    if model.family.denoiser == "unet":
        sides = level_sides(model, latent_hw)
        for name, info in layer_infos(model.unet).items():
            factor = max(latent_hw) // sides[name]
            q = (latent_hw[0] // factor) * (latent_hw[1] // factor)
            k = text_length if info.is_cross else q
            recorded = any(store.wants(info, sides[name]) for store in stores)
            if recorded:
                stored.append((q, k))
            if recorded or explicit:
                heads = getattr(model.unet.get_submodule(name.removesuffix(".processor")), "heads", 1)
                maps.append((heads, q, k))
        return estimate_bytes(latent_hw=latent_hw, prompts=n_prompts, guided=guided,
                              width=model.unet.config.block_out_channels[0],
                              denoiser_bytes=torch.finfo(model.dtype).bits // 8, layers=Layers(tuple(maps), tuple(stored)),
                              **vae)
    # a joint transformer (JointControl.attend says which maps it makes): every layer has one token grid
    grid = model.family.token_grid(model, latent_hw)
    n_img = grid[0] * grid[1]
    config = model.transformer.config
    heads = config.num_attention_heads
    recorded = [info for info in model_layers(model).values() if any(s.wants(info, max(grid)) for s in stores)]
    stored = [(n_img, text_length if info.is_cross else n_img) for info in recorded]
    if explicit or any(not info.is_cross for info in recorded) or (recorded and n_img <= text_length):
        maps = [(heads, n_img, n_img + text_length)]
    elif recorded:
        maps = [(heads, n_img, text_length)]
    return estimate_bytes(latent_hw=latent_hw, prompts=n_prompts, guided=guided,
                          width=heads * config.attention_head_dim, denoiser_bytes=torch.finfo(model.dtype).bits // 8,
                          layers=Layers(tuple(maps), tuple(stored)), tokens=n_img + text_length, **vae)


def run_edit(
    model: Model,
    recipe: Recipe,
    *,
    baseline: bool = False,
    attention: str = "fused",
    progress: Callable[[int, int], None] | None = None,
    stores: list[AttentionStore] | None = None,
    source_name: str = "recipe",
    latent: torch.Tensor | None = None,
    uncond_per_step: torch.Tensor | None = None,
    uncond_added: dict[str, torch.Tensor] | None = None,
    source_only: bool = False,
    source_trajectory: torch.Tensor | None = None,
    user_mask: torch.Tensor | None = None,
    noise_maps: torch.Tensor | None = None,
) -> EditResult:
    """Generate the source, every edit (and baselines) of a recipe in one batch; see DEVELOPERS.md.

    latent (1, C, h, w) replaces the seed's initial latent and uncond_per_step (T, L, D) the unconditional
    text sequence at each step (real-image editing: an inverted latent and null-text embeddings); with it,
    uncond_added (one row of each) is the unconditional rows' extra conditioning (SDXL: pooled embedding and
    ids), by default the negative prompt's. source_only: run the source prompt alone (the edits are checked,
    not sampled): one row, as `p2p attn-viz --prompt` needs. source_trajectory (T + 1, C, h, w): direct
    inversion: after every step the source row is set to the trajectory's next latent (before local blend
    reads it), so the source is the inverted picture and the targets edit from it. user_mask (H, W) in [0, 1]
    at picture size (white = may change, grey soft): after every step each target is confined to it,
    x_edit := x_src + m * (x_edit - x_src) with m averaged down to the latent; with local blend the edit may
    change only where both allow (their product), and the masks returned are that product. noise_maps
    (T, C, h, w): ddpm or flowedit inversion's maps: steps that add map i at step i to every row.
    """
    return _run(model, [recipe], baseline=baseline, attention=attention, progress=progress, stores=stores,
                source_names=[source_name], latent=latent, uncond_per_step=uncond_per_step, uncond_added=uncond_added,
                source_only=source_only, source_trajectory=source_trajectory, user_mask=user_mask,
                noise_maps=noise_maps)[0]


def run_edits(model: Model, recipes: list[Recipe], *, baseline: bool = False, attention: str = "fused",
              progress: Callable[[int, int], None] | None = None, source_names: list[str] | None = None,
              ) -> list[EditResult]:
    """Several recipes in ONE batch (p2p edit --batch-rows): each recipe's source, targets and baselines from
    its own seed's latent, each target controlled by its own source, so every result equals run_edit of that
    recipe alone. The recipes must share what the batch shares: steps, size, guidance, the layer settings
    (self_replace_max_res, blend_res, self_blocks, blend_blocks) and SDXL's size/crop ids; negative prompts and
    seeds may differ. Generated pictures only (no real picture, mask or attention store)."""
    names = source_names or [r.name or "recipe" for r in recipes]
    return _run(model, recipes, baseline=baseline, attention=attention, progress=progress, source_names=names)


def _run(model: Model, recipes: list[Recipe], *, baseline: bool, attention: str, progress, stores=None,
         source_names: list[str], latent=None, uncond_per_step=None, uncond_added=None, source_only: bool = False,
         source_trajectory=None, user_mask=None, noise_maps=None) -> list[EditResult]:
    if attention not in ("fused", "explicit"):
        raise ValueError(f"attention must be 'fused' or 'explicit', not {attention!r}")
    recipes = [with_family_defaults(r, model.family.defaults, model.defaults) for r in recipes]  # checks.checked's
    recipe, source_name = recipes[0], source_names[0]
    differ = [key for key in BATCH_SHARED if len({repr(getattr(r, key)) for r in recipes}) > 1]
    if differ:
        raise ValueError(f"recipes batched together must share {', '.join(differ)}")
    family = model.family
    joint = family.denoiser == "transformer"
    seconds: dict[str, float] = {}
    tic = time.perf_counter()
    plans = [compile_plan(r, text_tokenizers(model), baseline=baseline, source_name=name, source_only=source_only)
             for r, name in zip(recipes, source_names)]
    batched = combine_plans(plans)
    plan = batched.plan
    latent_hw = _check_size(model, recipe, source_name)
    geo = geometry(model, recipe, (latent_hw[0] * model.vae_scale, latent_hw[1] * model.vae_scale))
    vae_tile_for(model.vae, recipe.vae, geo.size)  # a VAE that cannot tile refuses vae: tiled before sampling
    if joint:
        blend_res, self_max_res, blend_places = _joint_layout(model, recipe, latent_hw, source_name)
        self_blocks = family.self_blocks(model, recipe.self_blocks)
        blend_blocks = set(recipe.blend_blocks or range(len(family.blocks(model))))
        blend_wants = lambda layer, side: layer.is_cross and layer.place == "joint" and layer.block in blend_blocks  # noqa: E731
    else:
        blend_sides = cross_sides(model, latent_hw)  # down and up blocks: the maps local blend reads
        if recipe.blend_res is not None and recipe.blend_res not in blend_sides:
            raise UncheckedRecipe([f"blend_res: no cross-attention layer has side {recipe.blend_res};"
                               f" this model's sides at this size are {blend_sides}"], source_name)
        blend_res = recipe.blend_res or nearest_side(blend_sides, default_blend_side(latent_hw))
        self_max_res = recipe.self_replace_max_res or max(latent_hw) // 4
        self_blocks, blend_places = frozenset(), ("down", "up")
        blend_wants = lambda layer, side: layer.is_cross and layer.place != "mid" and side == blend_res  # noqa: E731
    device, steps = model.device, recipe.steps
    dev_plan = plan.to(device)
    seconds["plan"] = time.perf_counter() - tic

    with torch.inference_mode():
        tic = time.perf_counter()
        n_prompts = len(plan.prompts)
        guided = recipe.guidance > 1.0 and family.unconditional(model)
        cond = family.with_guidance(model, encode_prompts(model, plan.prompts, geo), recipe.guidance)
        uncond = None
        if guided:
            negatives = [r.negative_prompt for r in recipes]
            if len(set(negatives)) == 1:
                uncond = encode_negative(model, negatives[0], n_prompts, geo)
            else:  # each row its recipe's negative prompt, each encoded once
                one = {neg: encode_negative(model, neg, 1, geo) for neg in dict.fromkeys(negatives)}
                uncond = Conditioning.cat([one[negatives[k]] for k in batched.row_recipe])
        seconds["encode"] = time.perf_counter() - tic

        tic = time.perf_counter()
        if latent is None:
            sigma = getattr(model.scheduler, "init_noise_sigma", 1.0)
            seeds = [initial_latent(r.seed, model.latent_channels, latent_hw) * sigma for r in recipes]
            x = torch.cat([seeds[k] for k in batched.row_recipe]).to(device)
        else:
            x = latent.expand(n_prompts, -1, -1, -1).to(device)
        if uncond_per_step is not None and guided:
            per_step = uncond_per_step.to(device, model.dtype)[:, None].expand(-1, n_prompts, -1, -1)  # (T, B, L, D)
            if uncond_added:
                uncond = Conditioning(uncond.hidden, {k: v.to(device, model.dtype).expand(n_prompts, *v.shape[1:])
                                                      for k, v in uncond_added.items()})
        used = family.text_used(cond if uncond is None else Conditioning.cat([cond, uncond]))
        if used is not None:  # masked padding no row reads: the run drops it (exact)
            cond, uncond = cond.first(used), None if uncond is None else uncond.first(used)
            plan = plan.first(used)
            dev_plan = plan.to(device)
            if uncond_per_step is not None and guided:
                per_step = per_step[..., :used, :]
        all_stores = list(stores or [])
        blend = None
        if dev_plan.blend is not None:
            blend_store = AttentionStore(blend_wants, torch.ones(steps, device=device))
            all_stores.append(blend_store)
            blend = LocalBlend(dev_plan.blend, blend_store, blend_res, plan.n_targets, places=blend_places,
                               source_of=batched.source_of.to(device))
        control = Control(
            n_prompts=n_prompts, n_targets=plan.n_targets, guided=guided, latent_hw=latent_hw,
            mapper=dev_plan.mapper, aligned=dev_plan.aligned, equalizer=dev_plan.equalizer, alpha=dev_plan.alpha,
            self_gate=dev_plan.self_gate, self_max_res=self_max_res, explicit=attention == "explicit",
            stores=all_stores, dtype=model.dtype, joint=joint, self_blocks=self_blocks,
            text_mass=recipe.text_mass_rule,
            source_of=batched.source_of.to(device),
        )
        step_inputs = control.step_inputs()
        grids = layer_grid(model, latent_hw)
        shapes = {info: grids[name] for name, info in model_layers(model).items()}
        size = (latent_hw[0] * model.vae_scale, latent_hw[1] * model.vae_scale)
        check_fits(lambda hw: run_bytes(model, (hw[0] // model.vae_scale, hw[1] // model.vae_scale), n_prompts,
                                        guided, all_stores, attention == "explicit", cond.hidden.shape[1],
                                        recipe.vae),
                   size, size_multiple(model), device, explicit=attention == "explicit")
        for store in all_stores:
            store.prepare(shapes, n_prompts, cond.hidden.shape[1], device)
        if not guided:
            embeddings = lambda i: cond  # noqa: E731
        elif uncond_per_step is None:
            both = Conditioning.cat([uncond, cond])
            embeddings = lambda i: both  # noqa: E731
        else:
            embeddings = lambda i: Conditioning.cat([uncond.with_hidden(per_step[i]), cond])  # noqa: E731
        predict = guided_predict(model, embeddings, recipe.guidance if guided else 1.0,
                                 lambda i: {"p2p": step_inputs[i]})

        trajectory = None
        if source_trajectory is not None:
            if source_trajectory.shape[0] != steps + 1:
                raise ValueError(f"the trajectory has {source_trajectory.shape[0] - 1} steps, the recipe {steps}")
            trajectory = source_trajectory.to(device, torch.float32)

        latent_mask = None
        if user_mask is not None:
            latent_mask = F.adaptive_avg_pool2d(user_mask.float()[None, None].to(device), latent_hw)  # (1, 1, h, w)

        shared_steps = int((recipe.edit_start or 0.0) * steps)  # the edits start from their source after these
        own_source = torch.tensor(batched.row_recipe, device=device)  # each row's source row

        def after_step(i: int, x: torch.Tensor) -> torch.Tensor:
            if trajectory is not None:  # direct inversion: the source row back on the inverted trajectory
                x = torch.cat([trajectory[i + 1 : i + 2], x[1:]])
            if i < shared_steps:  # edit_start: every row is still its source
                x = x[own_source]
            else:
                if blend is not None:
                    x = blend(i, x)
                if latent_mask is not None and plan.n_targets:  # the user's mask confines every target
                    n = plan.n_targets
                    x = torch.cat([x[:1], x[:1] + latent_mask * (x[1 : 1 + n] - x[:1]), x[1 + n :]])
            if progress is not None:
                progress(i + 1, steps)
            return x

        with control_installed(model, control):
            latents = sample(model, predict, x, steps, latent_hw, after_step, shift=geo.shift, noise=noise_maps)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds["sample"] = time.perf_counter() - tic

        tic = time.perf_counter()
        images = decode_latents(model, latents, vae=recipe.vae)
        seconds["decode"] = time.perf_counter() - tic

    masks = {}  # target number in the batch (from 1) -> mask
    if blend is not None and blend.last_mask is not None:
        full = F.interpolate(blend.last_mask.float().cpu(), size=images.shape[-2:], mode="nearest")[:, 0]
        masks = {k + 1: full[k] for k in range(plan.n_targets) if bool(plan.blend["active"][k])}
    if user_mask is not None:
        shown = F.interpolate(user_mask.float()[None, None].cpu(), size=images.shape[-2:], mode="bilinear",
                              align_corners=False)[0, 0].clamp(0, 1)
        masks = {k: shown * masks[k] if k in masks else shown for k in range(1, plan.n_targets + 1)}
    latents = latents.float().cpu()
    layout = dict(latent_hw=latent_hw, self_max_res=self_max_res, blend_res=blend_res)
    results, first = [], 0
    for own, rows in zip(plans, batched.rows):
        index = torch.tensor(rows)
        own_masks = {k - first: m for k, m in masks.items() if first < k <= first + own.n_targets}
        first += own.n_targets
        results.append(EditResult(prompts=own.prompts, roles=own.roles, images=images[index], latents=latents[index],
                                  masks=own_masks, seconds=dict(seconds), plan=own, layout=dict(layout)))
    return results


def text_tokenizers(model: Model):
    """What the plan maps words with: the tokenizer, or the family's text parts in order (SD3: CLIP, then T5)."""
    parts = model.family.text_parts(model)
    return parts[0] if len(parts) == 1 and not isinstance(parts[0], int) else parts


def _joint_layout(model: Model, recipe: Recipe, latent_hw: tuple[int, int], source_name: str):
    """A transformer's (blend side, self side, blend places): one token grid. The recipe was checked
    (checks.model_problems refuses UNet-only keys and blocks the model lacks, naming the fix); one that was not is
    an UncheckedRecipe here."""
    grid = max(model.family.token_grid(model, latent_hw))
    count = len(model.family.blocks(model))
    if (recipe.self_replace_max_res is not None or recipe.blend_res not in (None, grid)
            or any(b >= count for key in ("self_blocks", "blend_blocks") for b in getattr(recipe, key) or [])):
        raise UncheckedRecipe(["self_replace_max_res, blend_res or blocks this model lacks: check the recipe with"
                               " checks.checked first"], source_name)
    return grid, grid, ("joint",)


@contextlib.contextmanager
def control_installed(model: Model, control: Control):
    """The P2P attention processors on the model's denoiser for the duration of the block."""
    if model.family.denoiser == "transformer":
        with controlled_joint(model, control):
            yield
    else:
        with controlled(model.unet, control):
            yield


def schedule_for(model: Model, steps: int, latent_hw: tuple[int, int], shift: float | None = None
                 ) -> Schedule | FlowSchedule:
    """The family's schedule for `steps` steps at a latent size: DDIM's alphas, or flow matching's sigmas (with
    the recipe's fixed `shift` when it sets one)."""
    if model.family.sampler == "flow":
        kwargs = model.family.scheduler_kwargs(model, steps, latent_hw)
        if shift is not None:  # a fixed shift replaces the resolution-dependent one
            kwargs.pop("mu", None)
        return FlowSchedule.from_scheduler(model.family.scheduler(model, shift), steps, model.device, **kwargs)
    return Schedule.from_scheduler(model.scheduler, steps, model.device)


def sample(model: Model, predict, x: torch.Tensor, steps: int, latent_hw: tuple[int, int], callback=None,
           shift: float | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """The family's sampler from the initial latent: DDIM, or flow matching's Euler ODE; with noise maps (T, C, h, w)
    DDPM steps that add them (ddpm inversion), or Euler steps that add them (flowedit inversion)."""
    schedule = schedule_for(model, steps, latent_hw, shift)
    if model.family.sampler == "flow":
        if noise is not None:
            schedule = ResidualFlowSchedule(schedule, noise.to(model.device, torch.float32))
        return sample_flow(predict, x, schedule, callback)
    if noise is not None:
        schedule = NoisySchedule(schedule, noise.to(model.device, torch.float32))
    return sample_ddim(predict, x, schedule, callback)


def generate(model: Model, prompts: list[str], seeds: list[int], *, steps: int = 50, guidance: float | None = None,
             negative_prompt: str = "") -> torch.Tensor:
    """Plain text-to-image (no control), one seed per prompt, in one batch: images (N, 3, H, W) in [0, 1].
    guidance None: the family's default (SD 7.5, SDXL 5.0)."""
    latent_hw = (model.native_size[0] // model.vae_scale, model.native_size[1] // model.vae_scale)
    guidance = model.family.default_guidance if guidance is None else guidance
    with torch.inference_mode():
        cond = encode_prompts(model, prompts)
        guided = guidance > 1.0 and model.family.unconditional(model)
        cond = model.family.with_guidance(model, cond, guidance)
        emb = Conditioning.cat([encode_negative(model, negative_prompt, len(prompts)), cond]) if guided else cond
        x = torch.cat([initial_latent(s, model.latent_channels, latent_hw) for s in seeds])
        x = (x * getattr(model.scheduler, "init_noise_sigma", 1.0)).to(model.device)
        predict = guided_predict(model, lambda i: emb, guidance if guided else 1.0)
        latents = sample(model, predict, x, steps, latent_hw)
        return decode_latents(model, latents)
