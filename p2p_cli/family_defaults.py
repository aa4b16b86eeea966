"""Each model family's defaults in one table, without torch: the family adapters (families/) read their defaults
from here, and so does `p2p validate`, which must not import torch. Why each default: docs/families.md."""

from __future__ import annotations

from dataclasses import dataclass

from p2p_cli.recipe import Recipe

# Stable Flow's "vital layers" of FLUX.1-dev (Avrahami et al., CVPR 2025), numbered double-stream blocks first.
FLUX_VITAL_BLOCKS = (0, 1, 17, 18, 25, 28, 53, 54, 56)


@dataclass(frozen=True)
class FamilyDefaults:
    """What a recipe gets from its model's family when it leaves a setting out."""

    name: str
    label: str
    short: str  # the name in one-line lists ("SD", "SDXL", ...)
    guidance: float  # the family's diffusers pipeline's guidance_scale default
    joint: bool = False  # joint-attention transformer (self_blocks / blend_blocks / text_mass) or UNet (layer sides)
    sampler: str = "ddim"  # "ddim" (a DDPM-trained UNet) or "flow" (flow matching's Euler ODE)
    cfg: bool = True  # guidance runs classifier-free guidance's unconditional batch (FLUX.1: distilled, none)
    micro_conditioning: bool = False  # SDXL's size and crop ids
    self_replace: float | None = None  # the self window's end when a recipe sets none (None: the recipe's 0.4)
    self_blocks: tuple[int, ...] | None = None  # joint families: blocks whose image-image attention is injected
    self_blocks_text: str = "every block"  # how validate names self_blocks' default

    def __post_init__(self) -> None:
        if not self.joint and (self.self_blocks is not None or self.self_replace is not None):
            raise ValueError(f"{self.name}: self_blocks and a family self window are for joint families")


# The flow families' self window is the first 20 % of the steps: with the text share following the window, the
# transformer shapes model changed a swapped colour in 87.5 % of cases at 0.2 and 52.5 % at the UNet's 0.4.
FAMILY_DEFAULTS: dict[str, FamilyDefaults] = {d.name: d for d in (
    FamilyDefaults("sd", "Stable Diffusion 1.x/2.x", "SD", guidance=7.5),
    FamilyDefaults("sdxl", "Stable Diffusion XL", "SDXL", guidance=5.0, micro_conditioning=True),
    FamilyDefaults("sd3", "Stable Diffusion 3", "SD3", guidance=7.0, joint=True, sampler="flow", self_replace=0.2),
    FamilyDefaults("flux", "FLUX.1", "FLUX.1", guidance=3.5, joint=True, sampler="flow", cfg=False, self_replace=0.2,
                   self_blocks=FLUX_VITAL_BLOCKS,
                   self_blocks_text="Stable Flow's vital layers"),
    FamilyDefaults("qwen-image", "Qwen-Image", "Qwen-Image", guidance=4.0, joint=True, sampler="flow",
                   self_replace=0.2),
    FamilyDefaults("flux2-klein", "FLUX.2 [klein]", "FLUX.2 klein", guidance=4.0, joint=True, sampler="flow",
                   self_replace=0.2),
    FamilyDefaults("flux2-dev", "FLUX.2 [dev]", "FLUX.2 dev", guidance=4.0, joint=True, sampler="flow", cfg=False,
                   self_replace=0.2),
    FamilyDefaults("chroma", "Chroma", "Chroma", guidance=5.0, joint=True, sampler="flow", self_replace=0.2),
)}


def with_family_defaults(recipe: Recipe, family: FamilyDefaults) -> Recipe:
    """The recipe with its model family's defaults filled in where it sets none: guidance, and the self window
    (edits that set theirs keep it)."""
    if "guidance" not in recipe.model_fields_set and recipe.guidance != family.guidance:
        recipe = recipe.model_copy(update={"guidance": family.guidance})
    if recipe.self_replace is None and family.self_replace is not None:
        recipe = recipe.model_copy(update={"self_replace": (0.0, family.self_replace)})
    return recipe


def default_blend_side(latent_side: int) -> int:
    """Local blend's map side before it is matched to the layers a UNet has: latent side / 4 (16 for SD at 512 px),
    but at least 8 (or the latent side): the mask is max-pooled 3x3, which would cover most of a smaller map."""
    return max(latent_side // 4, min(8, latent_side))


def nearest_side(available: list[int], wanted: int) -> int:
    """The available layer side closest to wanted (ties go to the smaller side)."""
    return min(sorted(set(available)), key=lambda s: abs(s - wanted))
