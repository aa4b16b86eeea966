"""`p2p attn-viz RECIPE... | --prompt TEXT`: sample with the attention store on, draw OUT/<name>/attention/."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from p2p_cli.cli import options as o
from p2p_cli.cli.common import dtype_name, exit_code, overrides_from, progress_bar, use_threads
from p2p_cli.cli.errors import UsageError, handled
from p2p_cli.cli.jobs import bars, reporter, show_warnings, written
from p2p_cli.runs.edits import Options, check_folders, check_out, prompt_job, read_jobs, run_jobs


class Place(str, Enum):
    down = "down"
    mid = "mid"
    up = "up"


class Background(str, Enum):
    image = "image"
    grey = "grey"


BackgroundOpt = Annotated[
    Background,
    typer.Option("--background", help="Under the heat colours: the picture in grey (its own colours never read as"
                 " heat), or the image itself."),
]
OptRecipes = Annotated[
    Optional[list[str]],
    typer.Argument(help="Recipe files (YAML); - reads one from standard input. Or use --prompt.",
                   metavar="RECIPE", show_default=False),
]
Prompt = Annotated[Optional[str], typer.Option("--prompt", "-p", help="One prompt to draw, instead of recipes (default: none).")]
Name = Annotated[Optional[str], typer.Option("--name", help="Folder name for --prompt (default: its first words).")]
Size = Annotated[Optional[int], typer.Option("--size", min=8, help="Image side in pixels (same as --set size=N; default: the recipe's"
                                                              " size:, else the model's).")]
Words = Annotated[
    Optional[list[str]],
    typer.Option("--words", "-w", help="Draw these words' maps at full size (repeat, or separate with commas)."),
]
Res = Annotated[
    Optional[int],
    typer.Option("--res", min=1, help="Map side (default: latent side / 4 but at least 16, else the nearest side the UNet has)."),
]
From = Annotated[
    Optional[list[Place]],
    typer.Option("--from", help="UNet places averaged over (repeat for several; default down and up)."),
]
StepRange = Annotated[
    str, typer.Option("--step-range", metavar="A:B", help="Average over this fraction of the steps, e.g. 0:0.3.")
]
Components = Annotated[int, typer.Option("--components", min=0, help="Self-attention components drawn (0: none).")]
Special = Annotated[bool, typer.Option("--special", help="Also tiles for the start and end tokens.")]


def attn_viz(
    recipes: OptRecipes = None,
    prompt: Prompt = None,
    name: Name = None,
    out: o.OutDir = Path("outputs"),
    model: o.ModelSpec = None,
    device: o.DeviceOpt = o.Device.auto,
    dtype: o.DtypeOpt = o.Dtype.auto,
    steps: o.Steps = None,
    seed: o.Seed = None,
    size: Size = None,
    set_: o.Sets = None,
    words: Words = None,
    res: Res = None,
    from_: From = None,
    step_range: StepRange = "0:1",
    components: Components = 10,
    special: Special = False,
    background: BackgroundOpt = Background.grey,
    overwrite: o.Overwrite = False,
    json_: o.Json = False,
    quiet: o.Quiet = False,
    allow_pickle: o.AllowPickle = False,
    threads: o.Threads = None,
    trust_recipe: o.TrustRecipe = False,
    debug: o.Debug = False,
) -> None:
    """Draw the attention maps of every prompt (source and targets) into OUT/<name>/attention/: <k>-cross.png
    (one tile per token), <k>-self.png (top self-attention components), <k>-<word>.png, maps.npz, run.json."""
    overrides = overrides_from(set_, steps=steps, seed=seed, size=size)
    console = Console(stderr=True, soft_wrap=True, highlight=False, markup=False)
    log = (lambda msg: None) if quiet else console.print
    with handled(debug):
        spec = _spec(words, res, from_, step_range, components, special, background.value)
        if recipes and prompt is not None:
            raise UsageError("give recipes or --prompt, not both")
        if prompt is not None:
            jobs = [prompt_job(prompt, name, overrides, out, model)]
        elif recipes:
            if name is not None:
                raise UsageError("--name goes with --prompt; a recipe names its folder with name:")
            jobs = read_jobs(recipes, overrides, out, model, report=reporter(debug), warn=show_warnings,
                             trust=trust_recipe)
        else:
            raise UsageError("nothing to draw: give a RECIPE or --prompt TEXT")
        from p2p_cli.analysis.maps import SpecError, step_weights

        for job in jobs:  # attn-viz owns <name>/attention/ only: it never touches what `p2p edit` wrote
            job.folder, job.attention_only = job.folder / "attention", True
        for job in jobs:
            try:
                step_weights(job.recipe.steps, spec.step_range)
            except SpecError as err:
                raise UsageError(f"{job.label}: {err.as_option()}") from None
        use_threads(threads)
        from p2p_cli.api import pick_device, pick_dtype

        dev = pick_device(device.value)
        dt = pick_dtype(dtype.value, dev)
        check_out(out)
        check_folders(jobs, overwrite, reporter(debug))
        bar = None if quiet or not console.is_terminal else progress_bar(console)
        options = Options(overrides=overrides, overwrite=overwrite, allow_pickle=allow_pickle, viz=spec)
        run_jobs(jobs, dev, dtype_name(dt), options, report=reporter(debug), log=log, written=written(json_),
                 bars=bars(bar))
    raise typer.Exit(exit_code(job.code for job in jobs))


def _spec(words, res, places, step_range, components, special, background="grey"):
    """The options as a viz.VizSpec; UsageError for a bad --step-range."""
    from p2p_cli.analysis.maps import VizSpec, parse_step_range

    try:
        rng = parse_step_range(step_range)
    except ValueError as err:
        raise UsageError(str(err)) from None
    chosen = tuple(p.value for p in places) if places else ("down", "up")
    wanted = tuple(w.strip() for item in words or [] for w in item.split(",") if w.strip())
    return VizSpec(res=res, places=tuple(p for p in ("down", "mid", "up") if p in chosen), step_range=rng,
                   components=components, words=tuple(dict.fromkeys(wanted)), special=special,
                   background=background)
