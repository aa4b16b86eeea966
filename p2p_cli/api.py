"""The Python API: what a notebook needs, and what every `p2p` command stands on.

    import p2p_cli as p2p
    model = p2p.load_model("shapes")        # a hub id, a folder, a single file or a bundled model
    result = p2p.edit(model, "a big [red->blue] circle on the left on a white background")
    result = p2p.edit(model, "recipes/shapes-replace.yaml")   # a Recipe, a dict, a file or an inline prompt
    result.images        # PIL pictures: the source, then each edit in recipe order
    result.maps.word("red", prompt=1)
    result.save("outputs/mine")   # the files `p2p edit --save-attention` writes

Every function that takes a model also takes a diffusers pipeline the user already has of a family p2p serves
(StableDiffusionPipeline, StableDiffusionXLPipeline, StableDiffusion3Pipeline, FluxPipeline, QwenImagePipeline,
Flux2KleinPipeline, Flux2Pipeline, ChromaPipeline): its components are used in place and its
attention processors are restored after each run (user_pipeline.from_pipeline).

Inputs are checked here with the recipe's error style (RecipeError lines name the field and the fix).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import torch

from p2p_cli.models import Model
from p2p_cli.user_pipeline import as_model
from p2p_cli.models import load_model as _load_model
from p2p_cli.models import pick_device, pick_dtype, use_threads  # noqa: F401 - the CLI's device, dtype and threads
from p2p_cli.recipe import Recipe, RecipeError, beside_recipe, parse_recipe, recipe_document

Progress = Callable[[int, int], None]  # (done, total) of one phase
# edit()'s one callback: (done, total, phase) with phase "invert" (a real picture's inversion; null-text counts its
# DDIM inversion and its optimisation as one run of 2 x steps) or "sample" (the batched sampling loop)
PhasedProgress = Callable[[int, int, str], None]

if TYPE_CHECKING:
    from p2p_cli.engine.pipeline import EditResult
    from p2p_cli.files.real import RealPicture

RecipeLike = Union[Recipe, dict, str, Path]  # a Recipe, a dict as YAML gives, a recipe file or an inline prompt


class MapsError(ValueError):
    """Attention maps that cannot be made as asked (a word in none of the prompts, a side the model lacks);
    `spec_error` is the analysis.maps.SpecError behind it (its field names the VizSpec setting)."""

    def __init__(self, err):
        self.spec_error = err
        super().__init__(str(err))


# --- models and recipes ------------------------------------------------------------------------------------

def load_model(name: str | None = "shapes", *, device: str = "auto", dtype: str = "auto",
               allow_pickle: bool = False, loras: list[tuple[str, float]] | tuple = (),
               threads: int | None = None, quantize: str | dict[str, str] | None = None,
               offload: str | None = None) -> Model:
    """A model by name: "shapes" (the bundled model), a hub id, a save_pretrained folder or a single-file
    checkpoint; on `device` ("auto": cuda, else mps, else cpu) in `dtype` ("auto": fp16 on cuda, else fp32),
    with LoRA files [(path, scale)] loaded into it; quantize and offload as the recipe keys say (loading.py).
    torch's CPU threads: `threads`, else half the CPUs (at most 4), as `p2p` uses, unless you chose already
    (OMP_NUM_THREADS, torch.set_num_threads, an earlier `threads=`). Every function that takes a model also takes
    a diffusers pipeline you already have (user_pipeline.as_model: its components used in place)."""
    from p2p_cli.loading import parse
    from p2p_cli.loras import apply_loras

    model = _load_model(name, device, dtype, allow_pickle=allow_pickle, threads=threads,
                        loading=parse(quantize, offload))
    apply_loras(model, list(loras))
    return model


def load_recipe(path: str | Path, overrides: list[str] | tuple = (), trust: bool = False) -> Recipe:
    """A recipe file, validated, with `overrides` ("key=value", as `--set`) applied first. Its `image:` and
    LoRA paths are made absolute (they are relative to the file), so the recipe stands on its own. A PNG's recipe
    or a run.json may name files only inside its folder, and no hub model, unless `trust`."""
    from p2p_cli.overrides import read_recipe

    recipe = read_recipe(str(path), list(overrides), trust=trust)
    return anchored(recipe, str(path))


def anchored(recipe: Recipe, recipe_path: str) -> Recipe:
    """The recipe with `image:`, LoRA and GGUF paths made absolute against the recipe file's folder."""
    if recipe_path == "-":
        return recipe
    update: dict[str, Any] = {}
    for key in ("image", "mask"):
        value = getattr(recipe, key)
        if value is not None and not Path(value).expanduser().is_absolute():
            update[key] = str(beside_recipe(value, recipe_path).resolve())
    loras = [lora.model_copy(update={"path": str(beside_recipe(lora.path, recipe_path).resolve())})
             if not Path(lora.path).expanduser().is_absolute() else lora for lora in recipe.loras]
    if loras != list(recipe.loras):
        update["loras"] = loras
    if recipe.quantize is not None:  # a .gguf file of the denoiser, relative to the recipe
        quantize = {part: str(beside_recipe(kind, recipe_path).resolve())
                    if kind.endswith(".gguf") and not Path(kind).expanduser().is_absolute() else kind
                    for part, kind in ({"denoiser": recipe.quantize} if isinstance(recipe.quantize, str)
                                       else recipe.quantize).items()}
        if quantize != ({"denoiser": recipe.quantize} if isinstance(recipe.quantize, str) else recipe.quantize):
            update["quantize"] = quantize
    return recipe.model_copy(update=update) if update else recipe


def as_recipe(recipe: RecipeLike) -> Recipe:
    """A Recipe from a Recipe, a dict (as YAML would give), a recipe file (YAML, JSON, a run.json or a PNG p2p wrote)
    or an inline prompt ("a [cat->dog] on a (sofa:1.5)", the syntax of `p2p edit --prompt`). A string is a path
    only when it names a file; otherwise it is read as an inline prompt, and the error says both. A Recipe is checked
    again (recipe.steps = 10**9 after loading is refused as the file would be)."""
    if isinstance(recipe, Recipe):
        return parse_recipe(recipe_document(recipe), recipe.name or "recipe")
    if isinstance(recipe, dict):
        if recipe.get("image") is not None and hasattr(recipe["image"], "save"):  # a PIL image: its cached file
            from p2p_cli.files.real import picture_file

            recipe = {**recipe, "image": str(picture_file(recipe["image"]))}
        return parse_recipe(recipe, "recipe", default_name="recipe")
    if isinstance(recipe, Path) or (isinstance(recipe, str) and _names_a_file(recipe)):
        return load_recipe(recipe)
    if isinstance(recipe, str):
        return inline_recipe(recipe)
    raise TypeError(f"a recipe is a Recipe, a dict, a file path or an inline prompt, not {type(recipe).__name__}")


def _names_a_file(text: str) -> bool:
    try:
        return text == "-" or Path(text).expanduser().is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: not a file
        return False


def inline_recipe(text: str) -> Recipe:
    """The recipe an inline prompt expands to, as `p2p edit --prompt TEXT` reads it."""
    from p2p_cli.overrides import inline_recipes

    (_, recipe), = inline_recipes([text])
    if isinstance(recipe, RecipeError):
        shown = text if len(text) <= 80 else text[:38] + "..." + text[-39:]  # a path keeps its file name
        raise RecipeError([f"recipe: {shown!r} names no file, and as an inline prompt ({p})" for p in recipe.problems],
                          "recipe")
    return recipe


def resolve_recipe(model: Model, recipe: Recipe, source_name: str = "recipe") -> Recipe:
    """The recipe as the engine runs it on this model (its family's defaults filled in), or RecipeError listing
    every problem checks.model_problems finds on the model's ModelSpec (the engine itself raises none)."""
    from p2p_cli.checks import checked

    return checked(recipe, model.spec, source_name)


@contextmanager
def _bar(progress: Progress | str | None, label: str):
    """The progress callback to use: `progress` itself, or for "auto" a bar (rich's, which notebooks show too)
    when someone watches: an IPython kernel, or a terminal on stderr; the bar is gone when the run ends."""
    if progress != "auto":
        yield progress
        return
    if "ipykernel" not in sys.modules and not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

    bar = Bar(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
    with bar_task(bar, label) as update:
        yield update


@contextmanager
def bar_task(bar, label: str):
    """A progress(done, total) callback that shows one task on a rich Progress bar while it is used: the bar
    starts at the first update, and stops (its task gone) when the block ends. The API's bar and the CLI's share
    it."""
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(label, total=total)
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()
            bar.remove_task(task)


# --- attention maps ----------------------------------------------------------------------------------------

@dataclass
class AttentionMaps:
    """Where each token of each prompt attended, averaged over the layers of one side, heads and steps (the
    maps of `p2p attn-viz`); prompt i is row i of the run: 0 the source, k the k-th edit."""

    store: Any  # control.store.AttentionStore
    res: int
    spec: Any  # viz.VizSpec
    prompts: list[str]
    roles: list[str]
    tokenizer: Any
    images: torch.Tensor  # (N, 3, H, W) in [0, 1]

    def _row(self, prompt: int | str) -> int:
        if isinstance(prompt, str):
            if prompt not in self.roles:
                raise ValueError(f"no prompt {prompt!r}: the rows are {', '.join(self.roles)}")
            return self.roles.index(prompt)
        if not 0 <= prompt < len(self.prompts):
            raise ValueError(f"prompt {prompt}: the run has {len(self.prompts)} prompts (0 is the source)")
        return prompt

    def tokens(self, prompt: int | str = 0) -> list[tuple[int, str]]:
        """(position, text) of each token of a prompt, start and end tokens left out."""
        from p2p_cli.analysis.maps import token_labels

        return token_labels(self.tokenizer, self.prompts[self._row(prompt)])

    def cross(self, prompt: int | str = 0) -> torch.Tensor:
        """(h, w, L) cross-attention maps of every token position of a prompt."""
        from p2p_cli.analysis.maps import cross_maps

        return cross_maps(self.store, self._row(prompt), self.res, self.spec.places)

    def word(self, word: str, prompt: int | str = 0, size: tuple[int, int] | None = None) -> torch.Tensor:
        """(h, w) map of a word (the sum over its tokens), or scaled to its max and resized to `size`."""
        from p2p_cli.analysis.maps import upsample, word_map, word_positions

        row = self._row(prompt)
        positions = word_positions(self.tokenizer, self.prompts[row], word)
        if positions is None:
            raise ValueError(f"{word!r} is not in prompt {row} ({self.prompts[row]!r})")
        m = word_map(self.cross(row), positions)
        return upsample(m, size) if size is not None else m

    def self_components(self, prompt: int | str = 0, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """The top-k components of the self-attention (k, h, w) and each one's share of the variance (k,)."""
        from p2p_cli.analysis.maps import self_components

        if not self.store.select("self", self.res, self.spec.places):
            raise ValueError("these maps hold no self-attention (made with components=0)")
        return self_components(self.store, self._row(prompt), self.res, self.spec.places, k)

    def overlay(self, word: str, prompt: int | str = 0):
        """The word's map as a heat map over the prompt's picture (PIL), in grey unless the maps' spec says
        background "image"."""
        from p2p_cli.render.attention import heat_over
        from p2p_cli.render.images import to_pil

        row = self._row(prompt)
        image = self.images[row]
        background = getattr(self.spec, "background", "grey")
        return to_pil(heat_over(image, self.word(word, row, tuple(image.shape[-2:])), background))


# --- edits ---------------------------------------------------------------------------------------------------

@dataclass
class Result:
    """An edit run: pictures, masks, maps and what writes them as `p2p edit` does."""

    recipe: Recipe  # as run: the family's defaults filled in
    model: Model
    run: EditResult  # tensors in batch order: [source, edits, baselines]
    maps: AttentionMaps | None
    real: RealPicture | None = None  # the inverted picture of an image: recipe
    user_mask: Any = None  # (H, W) the recipe's mask as applied, in [0, 1] (8-bit steps): mask.png in the folder
    source_only: bool = False  # attn-viz --prompt: only the source row is kept
    attention: str = "fused"
    recipe_file: str | None = None
    overrides: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)  # "total" in run.json counts from here

    @property
    def roles(self) -> list[str]:
        return self.run.roles

    @property
    def prompts(self) -> list[str]:
        return self.run.prompts

    @property
    def images(self) -> list:
        """PIL pictures: the source, then each edit in recipe order (baselines in `baselines`)."""
        from p2p_cli.render.images import to_pil

        return [to_pil(img) for img, role in zip(self.run.images, self.roles) if not role.startswith("baseline")]

    @property
    def source(self):
        """The source picture (PIL); for a real picture, its reconstruction."""
        return self.images[0]

    @property
    def edits(self) -> list:
        """The edited pictures (PIL), in recipe order: what a diffusers user expects `images` to hold."""
        return self.images[1:]

    def __repr__(self) -> str:
        h, w = self.run.images.shape[-2:]
        edits = len(self.images) - 1
        real = f", real picture {Path(self.real.path).name}" if self.real is not None else ""
        return (f"<p2p Result {self.recipe.name or 'recipe'!r}: source + {edits} edit{'s' * (edits != 1)},"
                f" {w}x{h}, model {self.model.id}{real}; .edits, .source, .grid(), .save(folder)>")

    def _repr_png_(self) -> bytes:
        """The labelled grid, which a notebook shows for a result."""
        import io

        data = io.BytesIO()
        self.grid().save(data, format="PNG")
        return data.getvalue()

    @property
    def baselines(self) -> dict[int, Any]:
        """Edit number -> the uncontrolled target (PIL), when baselines were asked for."""
        from p2p_cli.render.images import to_pil

        return {int(r.split("-")[1]): to_pil(img) for img, r in zip(self.run.images, self.roles)
                if r.startswith("baseline-")}

    @property
    def masks(self) -> dict[int, Any]:
        """Edit number -> the final local-blend mask (PIL, white = edited), for edits that blend."""
        from p2p_cli.render.images import mask_to_pil

        return {k: mask_to_pil(m) for k, m in self.run.masks.items()}

    def grid(self):
        """The labelled grid of `grid.png` (PIL)."""
        from p2p_cli.render.grid import make_grid

        return make_grid(self._tiles())

    def _tiles(self):
        from p2p_cli.render.grid import edit_tiles

        kinds = {k: e.type for k, e in enumerate(self.recipe.edits, 1)}
        reweights = {k: e.reweight for k, e in enumerate(self.recipe.edits, 1) if e.reweight}
        real, source = self.real, self.run.images[0]
        return edit_tiles(self.run.images, self.run.prompts, self.run.roles, kinds, reweights, masks=self.run.masks,
                          picture=real.picture if real is not None else None,
                          source_note=real.tile_note(source) if real is not None else None,
                          picture_note=real.summary(source).split(";")[0] if real is not None else None)

    def save(self, folder: str | Path, overwrite: bool = False, attention_only: bool = False,
             extra: dict | None = None) -> dict[str, Any]:
        """Write the folder `p2p edit` writes (pictures, grid.png, run.json; attention/ when maps were kept;
        input.png and the inversion for a real picture), whole or not at all; returns its run record.

        attention_only (`p2p attn-viz`): `folder` gets only the attention pictures, maps.npz and run.json.
        The record's recipe replays from the folder: for a real picture its image is input.png (the picture as
        cropped and resized: the same pixels, so the same cached inversion), and its crop none."""
        from p2p_cli.files.metadata import png_texts
        from p2p_cli.files.outputs import atomic_folder, resolved_recipe, run_record, write_record
        from p2p_cli.render.grid import save_grid
        from p2p_cli.render.images import save_images

        folder = Path(folder)
        start = time.perf_counter()
        run = self.run
        size = tuple(run.images.shape[-2:])
        latent_hw = tuple(run.latents.shape[-2:])  # the local-blend masks' grid
        stored = resolved_recipe(self.recipe, size, self.model.id)
        if attention_only and self.real is not None:  # attn-viz writes no input.png: the original, absolute
            stored.update(image=str(Path(self.real.path).resolve()))
        elif self.real is not None:  # pictures and run.json replay from input.png (already cropped) in the folder
            stored.update(image="input.png", crop=None)
        if self.user_mask is not None and not attention_only:  # and from the mask as applied: over input.png the
            stored.update(mask="mask.png")  # original mask would be scaled to input.png, not the original picture
        texts = {role: png_texts(stored, role, prompt, size) for role, prompt in zip(run.roles, run.prompts)}
        with atomic_folder(folder, overwrite) as tmp:
            files: dict[str, str] = {}
            if not attention_only:
                files = save_images(tmp, run.roles, run.images, run.masks, texts, latent_hw=latent_hw)
                if self.real is not None:  # source.png is the reconstruction
                    files.update(self.real.write(tmp))
                if self.user_mask is not None:
                    from p2p_cli.render.images import save_png

                    files["mask"] = save_png(self.user_mask, tmp / "mask.png").name
                files["grid"] = save_grid(tmp / "grid.png", self._tiles(), texts["source"])
            drawn = {}
            if self.maps is not None:
                from p2p_cli.analysis.maps import viz_tokenizer
                from p2p_cli.render.attention import save_attention

                where = "" if attention_only else "attention/"
                drawn = save_attention(tmp / where, roles=run.roles, prompts=run.prompts, images=run.images,
                                       masks=run.masks, store=self.maps.store, tokenizer=viz_tokenizer(self.model),
                                       spec=self.maps.spec, res=self.maps.res, texts=texts, latent_hw=latent_hw)
                drawn = {key: f"{where}{name}" for key, name in drawn.items()}
            seconds = {**self.seconds, "write": time.perf_counter() - start}
            seconds["total"] = time.perf_counter() - self.started
            record = run_record(
                self.recipe, recipe_file=self.recipe_file, overrides=self.overrides, model=self.model,
                size=tuple(run.images.shape[-2:]), attention=self.attention,
                prompts=dict(zip(run.roles, run.prompts)), images=files,
                seconds={k: round(v, 3) for k, v in seconds.items()},
            )
            if drawn:
                record["attention"] = drawn
            if self.real is not None:
                record["inversion"] = self.real.record(run.images[0])
                record["recipe"].update(image=stored["image"], crop=stored["crop"])
            record["recipe"]["mask"] = stored["mask"]
            record.update(extra or {})  # e.g. the CLI's input_sha256 (--resume)
            write_record(tmp, "run.json", record)
        return record


def invert(model: Model | Any, image: Any, prompt: str, *, method: str | None = None, steps: int = 50,
           guidance: float | None = None, negative_prompt: str = "", crop=None, size=None,
           progress: Progress | str | None = "auto", warn: Callable[[str], None] | None = None,
           vae: str | None = None):
    """Invert a picture (a file's path or a PIL image) at the model's size (cached): a files.real.RealPicture to
    pass to edit(..., inversion=...); its .reconstruction(model) is the source picture guided sampling makes from
    it. method None: the model's (its folder's p2p-defaults.json `inversion`, else direct); guidance None: the
    model family's default; warn(message) hears about a damaged or unwritable cache;
    progress "auto": a bar when someone watches (a notebook, a terminal); vae: as the recipe key (auto, tiled or
    full; the edit's recipe must say the same)."""
    from p2p_cli.loading import VAE_MODES

    if vae not in (None, *VAE_MODES):
        raise ValueError(f"vae: {vae!r} is not one of {', '.join(VAE_MODES)}")
    model = as_model(model)
    from p2p_cli.engine.inversion import METHODS
    from p2p_cli.engine.pipeline import geometry
    from p2p_cli.family_defaults import default_inversion
    from p2p_cli.files.real import picture_file, prepare
    from p2p_cli.render.load import ImageError, check_picture

    method = default_inversion(model.defaults) if method is None else method
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if not prompt.strip():
        raise ValueError("the prompt must describe the picture")
    path = picture_file(image)
    try:
        check_picture(path, crop)
    except ImageError as err:
        raise RecipeError([f"image: {err}"], str(path)) from None
    guidance = model.family.default_guidance if guidance is None else guidance
    geo = geometry(model, size=size) if size is not None else None
    with _bar(progress, "invert") as update:
        return prepare(model, path.resolve(), prompt, size=size, crop=crop, method=method, steps=steps,
                       guidance=guidance, negative_prompt=negative_prompt, geo=geo, where=str(path), progress=update,
                       warn=warn, vae=vae)


def edit(model: Model | Any, recipe: RecipeLike | list[RecipeLike], *, baseline: bool = False, maps: Any = True,
         attention: str = "fused", inversion: RealPicture | None = None,
         progress: PhasedProgress | str | None = "auto") -> Result | list[Result]:
    """Run a recipe: the source and every edit in one batch from one initial latent (Hertz et al., sec. 3).
    `result.edits` are the edited pictures; `result.images[0]` is the source (unlike a diffusers pipeline's
    `images[0]`).

    recipe: a Recipe, a dict, a recipe file, or an inline prompt ("a [cat->dog] on a (sofa:1.5)"); a list of
    them runs as edit_many() does, in one batch, and gives a list of Results. A recipe with `image:` (a path, or a
    PIL image in a dict recipe) inverts the picture first (or takes its inversion from the cache, or `inversion`,
    from invert(), which must match the recipe's steps, guidance, prompt and model). baseline: also render every
    target without control. maps: True keeps the attention maps at attn-viz's defaults, an analysis.maps.VizSpec
    chooses them, False keeps none. attention: "fused" (fast) or "explicit" (the probabilities as the paper
    writes them). progress: one callback, progress(done, total, phase) with phase "invert" or "sample"; "auto"
    draws a bar when someone watches (a notebook, a terminal); None none. Bad input raises RecipeError.
    """
    if callable(progress):
        sample, invert = (lambda d, t: progress(d, t, "sample")), (lambda d, t: progress(d, t, "invert"))
    else:
        sample = invert = progress  # "auto" or None
    if isinstance(recipe, list):
        if inversion is not None:
            raise ValueError("inversion= goes with one recipe, not a list")
        with _bar(sample, "edit") as bar:
            return edit_many(model, recipe, baseline=baseline, attention=attention, progress=bar)
    with _bar(sample, "edit") as bar, _bar(invert, "invert") as invert_bar:
        return run_recipe(model, recipe, baseline=baseline, maps=maps, attention=attention, inversion=inversion,
                          progress=bar, invert_progress=invert_bar)


def run_recipe(model: Model | Any, recipe: RecipeLike, *, baseline: bool = False, maps: Any = True,
               attention: str = "fused", inversion: RealPicture | None = None, progress: Progress | None = None,
               invert_progress: Progress | None = None, recipe_file: str | None = None,
               overrides: list[str] | tuple = (), source_only: bool = False) -> Result:
    """edit() with what the command line also needs: a progress callback per phase, the recipe's file (its
    relative paths, the name in messages, run.json) and `--set` overrides to record, and attn-viz's source-only
    run."""
    model = as_model(model)
    from p2p_cli.files.outputs import check_latents
    from p2p_cli.engine.pipeline import geometry, run_edit
    from p2p_cli.analysis.maps import VizSpec, store_for, viz_tokenizer

    start = time.perf_counter()
    if isinstance(recipe, (str, Path)) and recipe_file is None:
        recipe_file = str(recipe)
    recipe = as_recipe(recipe)
    if recipe_file is not None and recipe.mask is not None:
        mask = beside_recipe(recipe.mask, recipe_file)
        mask = mask if Path(recipe.mask).expanduser().is_absolute() else mask.resolve()
        recipe = recipe.model_copy(update={"mask": str(mask)})  # run.json's recipe replays from anywhere
    where = recipe_file or recipe.name or "recipe"
    _check_loras(model, recipe, recipe_file, where)
    if inversion is not None and recipe.image is not None and recipe.inversion is None:
        recipe = recipe.model_copy(update={"inversion": inversion.inversion.method})  # the one given, not a default
    recipe = resolve_recipe(model, recipe, where)
    seconds: dict[str, float] = {}
    store = res = spec = None
    if maps:
        spec = maps if isinstance(maps, VizSpec) else VizSpec()
        try:
            store, res = store_for(model, recipe, spec)
        except ValueError as err:
            raise MapsError(err) from None
    real = inversion
    if real is None and recipe.image is not None:
        from p2p_cli.files.real import prepare, resolve_image

        path = resolve_image(recipe, recipe_file or "-")
        real = prepare(model, path, recipe.source, size=recipe.size, crop=recipe.crop,
                       method=recipe.inversion_method, steps=recipe.steps, guidance=recipe.guidance,
                       negative_prompt=recipe.negative_prompt, geo=geometry(model, recipe), where=where,
                       progress=invert_progress, vae=recipe.vae)
    if real is not None:
        real.check_matches(recipe, model, where)
        seconds["invert"] = real.seconds
    mask = None
    if recipe.mask is not None:
        from p2p_cli.files.real import user_mask

        size = tuple(real.picture.shape[-2:]) if real is not None else tuple(recipe.size or model.native_size)
        mask = user_mask(recipe, recipe_file or "-", size, Path(real.path) if real is not None else None)
    run = run_edit(model, recipe, baseline=baseline, attention=attention, progress=progress, source_name=where,
                   stores=[store] if store is not None else None,
                   latent=real.inversion.latent if real else None,
                   uncond_per_step=real.inversion.uncond if real else None,
                   uncond_added=real.inversion.uncond_added if real else None, source_only=source_only,
                   source_trajectory=real.inversion.trajectory if real else None, user_mask=mask,
                   noise_maps=real.inversion.noise if real else None)
    check_latents(run.latents, run.roles, recipe)  # diverged sampling (NaN, huge values) is a failure, not a picture
    seconds.update(run.seconds)
    attention_maps = None
    if store is not None:
        attention_maps = AttentionMaps(store, res, spec, run.prompts, run.roles, viz_tokenizer(model), run.images)
    return Result(recipe=recipe, model=model, run=run, maps=attention_maps, real=real, user_mask=mask,
                  source_only=source_only,
                  attention=attention, recipe_file=recipe_file, overrides=list(overrides), seconds=seconds,
                  started=start)


def _check_loras(model: Model, recipe: Recipe, recipe_file: str | None, where: str) -> None:
    """A recipe's LoRA files must be the ones the model was loaded with (edit() does not load them into it)."""
    from p2p_cli.files.real import recipe_loras

    wanted = recipe_loras(recipe, recipe_file or "-") if recipe.loras else ()
    have = tuple((lora["path"], float(lora["scale"])) for lora in getattr(model, "loras", []) or [])
    if wanted and tuple((path, float(scale)) for path, scale in wanted) != have:
        listed = ", ".join(f"({path!r}, {scale:g})" for path, scale in wanted)
        raise RecipeError([f"loras: the model was not loaded with these LoRA files; load it with"
                           f" p2p.load_model(..., loras=[{listed}])"], where)


def edit_many(model: Model | Any, recipes: list, *, baseline: bool = False, attention: str = "fused", progress=None,
              batch_rows: int | None = None, recipe_files: list[str | None] | None = None,
              overrides: list[str] | tuple = ()) -> list[Result]:
    """Several recipes, a Result each in order, each the same pictures as edit() of that recipe alone. Those that
    share their settings (recipe.BATCH_SHARED: steps, size, guidance, the layer settings) run in one batch
    (recipe.batch_groups, the rule `p2p edit --batch-rows` uses; at most `batch_rows` denoiser rows a batch, None:
    no limit); a recipe with a real picture or a mask, or settings of its own, runs alone. No attention maps."""
    model = as_model(model)
    from p2p_cli.engine.pipeline import run_edits
    from p2p_cli.files.outputs import check_latents
    from p2p_cli.recipe import batch_groups

    recipes = [as_recipe(r) for r in recipes]
    files = list(recipe_files) if recipe_files is not None else [None] * len(recipes)
    wheres = [f or r.name or "recipe" for f, r in zip(files, recipes)]
    for r, where, f in zip(recipes, wheres, files):
        _check_loras(model, r, f, where)
    recipes = [resolve_recipe(model, r, w) for r, w in zip(recipes, wheres)]  # every problem before any sampling
    results: list[Result | None] = [None] * len(recipes)
    for group in batch_groups(recipes, baseline, batch_rows):
        start = time.perf_counter()
        if len(group) == 1:
            k = group[0]
            results[k] = run_recipe(model, recipes[k], baseline=baseline, maps=False, attention=attention,
                                    progress=progress, recipe_file=files[k], overrides=overrides)
            continue
        runs = run_edits(model, [recipes[k] for k in group], baseline=baseline, attention=attention,
                         progress=progress, source_names=[wheres[k] for k in group])
        for k, run in zip(group, runs):
            check_latents(run.latents, run.roles, recipes[k])
            results[k] = Result(recipe=recipes[k], model=model, run=run, maps=None, attention=attention,
                                recipe_file=files[k], overrides=list(overrides), seconds=dict(run.seconds),
                                started=start)
    return results


def sweep(model: Model | Any, recipe, *, tau: list[float] | None = None, self_tau: list[float] | None = None,
          edit_number: int | None = None, baseline: bool = False, batch_size: int = 8, attention: str = "fused",
          progress=None, source_name: str | None = None):
    """A tau sweep of a recipe as extra batch rows from the recipe's one initial latent: (sweep plan,
    analysis.tau_sweep.SweepResult with a picture per point); score it with tau_sweep.score_sweep. `recipe`
    may also be a plan tau_sweep.expand made (the CLI checks it before loading the model)."""
    model = as_model(model)
    from p2p_cli.analysis.tau_sweep import Sweep, expand, run_sweep

    if isinstance(recipe, Sweep):
        plan = recipe
    else:
        recipe = resolve_recipe(model, as_recipe(recipe))
        plan = expand(recipe, tau, self_tau, edit_number, baseline=baseline)
    name = source_name or plan.recipe.name or "recipe"
    return plan, run_sweep(model, plan, batch_size, attention=attention, source_name=name, progress=progress)
