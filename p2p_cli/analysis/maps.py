"""Attention maps as numbers (paper sec. 3.1, fig. 4; algorithm.md "Attention store and pictures"): pure tensors.

The store holds, per layer, the conditional branch's maps as each row used them (an edited target's after the
edit: its cross maps mapped from the source inside the cross window, the source's self maps where injected),
averaged over heads and summed over the chosen steps; here they are averaged over the layers of one side and
places, per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from p2p_cli.engine.control.store import AttentionStore
from p2p_cli.engine.layers import LayerInfo, cross_sides, latent_size
from p2p_cli.models import Model
from p2p_cli.family_defaults import nearest_side
from p2p_cli.text.tokens import find_tokens, lead_tokens, token_ids, trail_tokens

PLACES = ("down", "mid", "up")


class SpecError(ValueError):
    """A VizSpec (or sweep) setting that cannot work; `field` names it (the CLI shows its option instead)."""

    def __init__(self, field: str, detail: str):
        self.field, self.detail = field, detail
        super().__init__(f"{field} {detail}")

    def as_option(self) -> str:
        """The message with the field as its command-line option (res -> --res, step_range -> --step-range)."""
        return f"--{self.field.replace('_', '-')} {self.detail}"


@dataclass(frozen=True)
class VizSpec:
    """Which attention pictures to make and how to average their maps."""

    res: int | None = None  # map side; None: latent side / 4, else the nearest side the UNet has
    places: tuple[str, ...] = ("down", "up")  # UNet places averaged over
    step_range: tuple[float, float] = (0.0, 1.0)  # fraction of the steps averaged over, [a, b)
    components: int = 10  # self-attention components drawn (0: none)
    words: tuple[str, ...] = ()  # words (or phrases, word#k) drawn at full size
    special: bool = False  # also tiles for the start and end tokens
    # under the heat colours: "grey" (the picture in greyscale: its own colours cannot read as heat, as a blue
    # square over the image read as zero attention) or "image" (the picture itself)
    background: str = "grey"


def parse_step_range(text: str) -> tuple[float, float]:
    """ "a:b" (fractions of the steps, 0 <= a < b <= 1; either may be left out) -> (a, b)."""
    start, sep, end = text.partition(":")
    if not sep:
        raise ValueError(f"--step-range {text}: expected a:b with fractions of the steps, e.g. 0:0.5")
    try:
        a = float(start) if start.strip() else 0.0
        b = float(end) if end.strip() else 1.0
    except ValueError:
        raise ValueError(f"--step-range {text}: a and b must be numbers in [0, 1], e.g. 0.5:1") from None
    if not 0.0 <= a < b <= 1.0:
        raise ValueError(f"--step-range {text}: need 0 <= a < b <= 1")
    return a, b


def step_weights(steps: int, step_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """(T,) 1 on the steps [int(a*T), int(b*T)) (as the self-attention window), 0 elsewhere."""
    a, b = step_range
    first, stop = int(a * steps), int(b * steps)
    if stop <= first:
        raise SpecError("step_range", f"{a:g}:{b:g} holds none of the {steps} steps; widen it")
    weights = torch.zeros(steps)
    weights[first:stop] = 1.0
    return weights


def map_sides(model: Model, latent_hw: tuple[int, int], places: tuple[str, ...]) -> list[int]:
    """Sorted sides of the cross-attention layers in `places` (a transformer: its one token grid, every block)."""
    if model.family.denoiser == "transformer":
        return [max(model.family.token_grid(model, latent_hw))]
    return cross_sides(model, latent_hw, places)


def viz_tokenizer(model: Model):
    """The tokenizer whose positions the maps' first text part holds (SD, SDXL, SD3: CLIP's; FLUX: T5's)."""
    return model.family.text_parts(model)[0]


def default_res(latent_hw: tuple[int, int]) -> int:
    """Latent side / 4 (16 for SD at 512 px, the paper's maps), but at least 16 (or the latent side): on a small
    latent, a quarter of it is a few cells that cannot place an object (4x4 on the bundled 16x16 model)."""
    side = max(latent_hw)
    return max(side // 4, min(16, side))


def pick_res(model: Model, latent_hw: tuple[int, int], places: tuple[str, ...], res: int | None = None) -> int:
    """The map side: `res` if some layer in places has it, else default_res's side or the nearest there is."""
    sides = map_sides(model, latent_hw, places)
    if not sides:
        raise ValueError(f"this model has no cross-attention layers in {', '.join(places)}")
    if res is None:
        return nearest_side(sides, default_res(latent_hw))
    if res not in sides:
        raise SpecError("res", f"{res}: no cross-attention layer in {', '.join(places)} has that side at this"
                         f" size; the sides are {', '.join(map(str, sides))}")
    return res


def viz_store(steps: int, res: int, places: tuple[str, ...], step_range: tuple[float, float] = (0.0, 1.0),
              self_maps: bool = True, device: torch.device | str = "cpu") -> AttentionStore:
    """A store of the cross (and self) maps of the layers of side `res` in `places`, over the chosen steps."""

    def wants(layer: LayerInfo, side: int) -> bool:  # a transformer's joint layers are in every place
        return side == res and (layer.place in places or layer.place == "joint") and (layer.is_cross or self_maps)

    return AttentionStore(wants, step_weights(steps, step_range).to(device))


def cross_maps(store: AttentionStore, prompt_index: int, res: int, places: tuple[str, ...]) -> torch.Tensor:
    """(h, w, L) cross-attention of one prompt: mean over the layers of side res in places, heads, steps."""
    return store.mean_maps("cross", res, places)[prompt_index].float().cpu()


def self_matrix(store: AttentionStore, prompt_index: int, res: int, places: tuple[str, ...]) -> torch.Tensor:
    """(h*w, h*w) self-attention of one prompt (rows: queries), averaged like cross_maps."""
    maps = store.mean_maps("self", res, places)[prompt_index]  # (h, w, h*w)
    return maps.reshape(-1, maps.shape[-1]).float().cpu()


def self_components(store: AttentionStore, prompt_index: int, res: int, places: tuple[str, ...],
                    k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k right singular vectors of the self matrix with its row mean removed, (k, h, w), each signed so its
    largest entry is positive, and each one's share of the variance (k,) (its squared singular value's)."""
    maps = store.mean_maps("self", res, places)[prompt_index]  # (h, w, h*w)
    h, w = maps.shape[:2]
    matrix = maps.reshape(h * w, -1).double().cpu()
    _, values, vh = torch.linalg.svd(matrix - matrix.mean(1, keepdim=True))  # vh (h*w, h*w)
    k = min(k, vh.shape[0])
    vecs = vh[:k]
    peak = vecs.gather(1, vecs.abs().argmax(1, keepdim=True))  # (k, 1)
    vecs = vecs * torch.where(peak < 0, -1.0, 1.0)
    shares = values[:k] ** 2 / (values**2).sum().clamp_min(1e-30)
    return vecs.reshape(k, h, w).float(), shares.float()


def token_labels(tokenizer, prompt: str, special: bool = False) -> list[tuple[int, str]]:
    """(position, text) of each token of the prompt; start and end tokens only when `special`."""
    ids = token_ids(tokenizer, prompt)
    labels = [(pos, tokenizer.decode([i]).strip() or "▁") for pos, i in enumerate(ids)]
    return labels if special else labels[lead_tokens(tokenizer) : len(labels) - trail_tokens(tokenizer)]


def word_positions(tokenizer, prompt: str, word: str) -> list[int] | None:
    """Token positions of a word (phrase, word#k) in the prompt, or None when the prompt lacks it."""
    try:
        return find_tokens(tokenizer, prompt, word)
    except ValueError:
        return None


def word_map(maps: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """(h, w) sum of the maps (h, w, L) of a word's tokens."""
    return maps[..., positions].sum(-1)


def upsample(map_: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An (h, w) map scaled by its own max and resized smoothly (bilinear) to size: (H, W) in [0, 1]."""
    m = map_.float()[None, None]  # (1, 1, h, w)
    m = m / m.amax().clamp_min(1e-12)
    return F.interpolate(m, size=size, mode="bilinear", align_corners=False)[0, 0].clamp(0, 1)


def min_max(map_: torch.Tensor) -> torch.Tensor:
    """A map scaled to [0, 1] (a constant map gives zeros)."""
    low, high = map_.min(), map_.max()
    return (map_ - low) / (high - low).clamp_min(1e-12)


def missing_words(tokenizer, prompts: list[str], words: tuple[str, ...]) -> list[str]:
    """The words that none of the prompts has."""
    return [w for w in words if all(word_positions(tokenizer, p, w) is None for p in prompts)]


def store_for(model: Model, recipe, spec: VizSpec) -> tuple[AttentionStore, int]:
    """The store a run of `recipe` fills for spec's pictures, and its map side; ValueError on a bad option."""
    prompts = [recipe.source] + [e.target for e in recipe.edits]
    lost = missing_words(viz_tokenizer(model), prompts, spec.words)
    if lost:
        raise SpecError("words", f"{', '.join(lost)}: in none of the prompts ({' / '.join(prompts)})")
    res = pick_res(model, latent_size(model, recipe.size), spec.places, spec.res)
    return viz_store(recipe.steps, res, spec.places, spec.step_range, spec.components > 0, model.device), res
