"""What a recipe gets when it leaves a setting out, without torch: each model family's defaults in one table, and
the real-picture defaults a model folder may carry (`p2p-defaults.json`). The family adapters (families/), the
checks and `p2p validate` (which must not import torch) read them here. Why each default: docs/families.md."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from p2p_cli.paths import outside, read_regular
from p2p_cli.recipe import DEFAULT_INVERSION, CrossSchedule, InversionMethod, Recipe, RecipeError

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


DEFAULTS_FILE = "p2p-defaults.json"  # a model folder's own defaults for real pictures (FolderDefaults)
DEFAULTS_FILE_LIMIT = 16_384  # bytes: the file holds a few numbers
Tau = Annotated[float, Field(ge=0.0, le=1.0)]


class ImageDefaults(BaseModel):
    """What a recipe with `image:` gets on this model when it sets none: windows and the inversion method, never a
    path."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    cross_replace: Tau | None = None  # the cross window's end (window [0, tau))
    self_replace: Tau | None = None  # the self window's end
    self_replace_max_res: Annotated[int, Field(ge=1)] | None = None  # UNet: the largest layer side injected
    self_blocks: tuple[Annotated[int, Field(ge=0)], ...] | None = None  # joint families: the blocks injected
    inversion: InversionMethod | None = None  # how the picture is inverted (else direct, every model's default)
    edit_start: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None  # the steps the edits take from the source


class FolderDefaults(BaseModel):
    """A model folder's `p2p-defaults.json`: {"image": {...}}, defaults measured on that model (docs/shapes.md).
    The folder is not trusted: unknown keys, wrong types and out-of-range numbers are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    image: ImageDefaults = ImageDefaults()
    _file: str = PrivateAttr("")  # where they were read (read_folder_defaults), for messages

    @property
    def file(self) -> str:
        """The file these defaults were read from."""
        return self._file

    def for_recipe(self, recipe: Recipe) -> dict:
        """The settings these defaults give `recipe`: a real picture's windows and inversion it leaves out (an
        edit's own window still wins over the recipe's), nothing for a generated source."""
        if recipe.image is None:
            return {}
        wanted = self.image.model_dump(exclude_none=True)
        return {k: v for k, v in wanted.items() if getattr(recipe, k) is None}


def read_folder_defaults(folder: Path | None) -> FolderDefaults | None:
    """The model folder's p2p-defaults.json (None when it has none); RecipeError naming the file and the field when
    it is malformed."""
    if folder is None or not folder.is_dir() or not (path := folder / DEFAULTS_FILE).exists():
        return None
    fix = f"fix or delete {DEFAULTS_FILE} (its keys: docs/shapes.md, \"Real pictures at the default inversion\")"
    try:
        if outside(path, folder):  # the folder is not trusted: a link never makes p2p read elsewhere
            raise ValueError("a link to a file outside the model folder")
        data = read_regular(path, DEFAULTS_FILE_LIMIT)
        if len(data) > DEFAULTS_FILE_LIMIT:
            raise ValueError(f"larger than {DEFAULTS_FILE_LIMIT} bytes")
        defaults = FolderDefaults.model_validate_json(data)
    except ValidationError as err:
        problems = [f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}; {fix}" for e in err.errors()]
    except (OSError, ValueError) as err:
        problems = [f"file: not read ({err}); {fix}"]
    else:
        defaults._file = str(path)
        return defaults
    raise RecipeError(problems, str(path))


INVERSION_SAMPLER = {"ddpm": "ddim", "flowedit": "flow"}  # the inversions that need one sampler, and which
NEEDS_CFG = ("null-text", "negative-prompt")  # the inversions that need an unconditional batch (not FLUX.1's)


def inversion_problem(method: str, sampler: str, cfg: bool, label: str) -> str | None:
    """Why `method` cannot invert a picture on a model whose sampler is `sampler` ("ddim" | "flow") and whose
    guidance runs an unconditional batch or not (`cfg`), with the method to use there; None when it can. The one
    message the engine, the checks and `p2p invert` give."""
    if INVERSION_SAMPLER.get(method, sampler) == sampler:
        if method in NEEDS_CFG and not cfg:
            return (f"{method} works on classifier-free guidance's unconditional batch, which {label} does not run"
                    " (its guidance is distilled): use direct or ddim")
        return None
    if method == "ddpm":
        return (f"ddpm inverts a DDPM sampler's noise; {label} samples an ODE (flow matching): use flowedit (its flow"
                " counterpart), direct (the default) or ddim")
    return (f"flowedit inverts a flow-matching ODE; {label} samples with DDIM: use ddpm (its DDPM counterpart),"
            " direct (the default) or ddim")


def default_inversion(folder: FolderDefaults | None) -> InversionMethod:
    """How a real picture is inverted on this model when nothing says: its folder's `inversion`, else direct."""
    return (folder.image.inversion if folder is not None else None) or DEFAULT_INVERSION


def with_folder_defaults(recipe: Recipe, folder: FolderDefaults | None) -> Recipe:
    """The recipe with the model folder's real-picture windows and inversion filled in where it sets none
    (FolderDefaults)."""
    update = folder.for_recipe(recipe) if folder is not None else {}
    if not update:
        return recipe
    if "cross_replace" in update:
        update["cross_replace"] = CrossSchedule(default=(0.0, update["cross_replace"]))
    if "self_replace" in update:
        update["self_replace"] = (0.0, update["self_replace"])
    if "self_blocks" in update:
        update["self_blocks"] = list(update["self_blocks"])
    return recipe.model_copy(update=update)


def with_family_defaults(recipe: Recipe, family: FamilyDefaults, folder: FolderDefaults | None = None) -> Recipe:
    """The recipe with its model's defaults filled in where it sets none: a real picture's windows from the model
    folder's p2p-defaults.json, then the family's guidance and self window (edits that set theirs keep it)."""
    recipe = with_folder_defaults(recipe, folder)
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
