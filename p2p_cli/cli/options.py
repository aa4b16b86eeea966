"""Options shared by the commands, as Annotated aliases."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Dtype(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class Attention(str, Enum):
    fused = "fused"
    explicit = "explicit"


RecipeArgs = Annotated[
    list[str], typer.Argument(help="Recipe files (YAML); - reads one from standard input.", metavar="RECIPE")
]
OptionalRecipeArgs = Annotated[
    Optional[list[str]],
    typer.Argument(help="Recipe files (YAML, JSON lines, or a PNG p2p wrote); - reads standard input.",
                   metavar="RECIPE", show_default=False),
]
InlinePrompts = Annotated[
    Optional[list[str]],
    typer.Option("--prompt", "-p", show_default=False, metavar="TEXT",
                 help='An inline edit instead of a recipe: "a \\[cat->dog] on a mat", "a (smiling:5) doll",'
                      ' "a house \\[->in winter]"; repeatable.'),
]
ImageOpt = Annotated[
    Optional[Path],
    typer.Option("--image", "-i", show_default=False, metavar="PICTURE",
                 help="A picture of your own to edit (PNG, JPEG, WebP), inverted first; with --prompt, or replacing"
                      " a recipe's image (same as --set image=PICTURE; default: the recipe's image:, if any)."),
]
MaskOpt = Annotated[
    Optional[Path],
    typer.Option("--mask", show_default=False, metavar="PICTURE",
                 help="A black-and-white picture: the edits change only its white part (same as --set mask=PICTURE;"
                      " default: the recipe's mask:, else the whole picture)."),
]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Folder for the results; each recipe writes OUT/<name>/.")]
ModelSpec = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="Hub id, local diffusers folder or 'shapes' (default: the recipe's model:, else"
                                       " shapes)."),
]
ModelOnly = Annotated[  # commands that take no recipe
    Optional[str],
    typer.Option("--model", "-m", help="Hub id, local diffusers folder or 'shapes' (default: shapes, the bundled"
                                       " model)."),
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto: cuda, else mps, else cpu.")]
DtypeOpt = Annotated[Dtype, typer.Option("--dtype", help="auto: fp16 on cuda, fp32 elsewhere.")]
Steps = Annotated[Optional[int], typer.Option(
    "--steps", help="Sampling steps (same as --set steps=N; default: the recipe's steps:, else 50).")]
Seed = Annotated[Optional[int], typer.Option(
    "--seed", help="Seed of the initial noise (same as --set seed=N; default: the recipe's seed:, else 8888).")]
Quantize = Annotated[Optional[str], typer.Option(
    "--quantize", help="Quantize the denoiser: int8 or fp8 (torchao weight-only), bnb-8bit, bnb-4bit, or a .gguf file of"
                       " it (same as --set quantize=KIND; per part: --set quantize.text_encoder_2=int8; default: the recipe's"
                       " quantize:, else the weights as they are).")]
Memory = Annotated[Optional[str], typer.Option(
    "--memory", help="Plan the run's memory for a card of this size (16GB; several: 8GB,16GB,24GB): the peak"
                     " estimate, and the settings that fit when it does not (estimates, no torch loaded; default: no plan).")]
Offload = Annotated[Optional[str], typer.Option(
    "--offload", help="none, model, sequential or group: diffusers' offload hooks (same as --set offload=...;"
                      " default: the recipe's offload:, else none).")]
Vae = Annotated[Optional[str], typer.Option(
    "--vae", help="auto, tiled or full: diffusers' tiled VAE (same as --set vae=...; default: the recipe's vae:, else"
                  " auto: tiled, one picture at a time, only where the picture is larger than the VAE's tile).")]
Sets = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a recipe field before validation, e.g. edits.0.cross_replace=0.6 (values are YAML).",
    ),
]
Baseline = Annotated[bool, typer.Option("--baseline", help="Also render every target prompt with no control.")]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace existing output folders (once the new one is complete).")
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object per finished recipe and nothing else.")]
JsonInvert = Annotated[bool, typer.Option("--json", help="Print the written folder and the inversion's record as one JSON"
                                                         " object, and nothing else.")]
JsonShow = Annotated[bool, typer.Option("--json", help="Print one JSON object per picture (its file, parameters text"
                                                       " and recipe), and nothing else.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no log lines.")]
AttentionOpt = Annotated[Attention, typer.Option("--attention", help="Attention kernels: fused (SDPA) or explicit.")]
AllowPickle = Annotated[
    bool, typer.Option("--allow-pickle", help="Also load pickle (.bin) weights; only for sources you trust.")
]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks (also P2P_DEBUG=1).")]
SaveAttention = Annotated[
    bool, typer.Option("--save-attention", help="Also draw every prompt's attention maps into OUT/<name>/attention/.")
]
Threads = Annotated[
    Optional[int],
    typer.Option("--threads", min=1, help="CPU threads for torch (default: OMP_NUM_THREADS when set, else half the"
                 " CPUs this process may use, at least 1 and at most 4)."),
]
BatchRows = Annotated[
    Optional[int],
    typer.Option("--batch-rows", min=1, metavar="N",
                 help="Run recipes that share a model, size, steps and guidance together, at most N denoiser rows per"
                      " call (a recipe's rows: its prompts, twice with guidance), so small edits fill a big GPU; the"
                      " same pictures as one by one. Recipes with image:, mask: or --save-attention run alone"
                      " (default: one recipe per call)."),
]
Resume = Annotated[
    bool, typer.Option("--resume", help="Keep each recipe's folder that a finished run of the same recipe wrote;"
                                         " run only the rest (a killed run, started again). Without --overwrite an"
                                         " unchanged recipe's folder is kept anyway.")
]

TrustRecipe = Annotated[
    bool, typer.Option("--trust-recipe", help="Let a recipe p2p did not write for you (a PNG's, a run.json, a PIE-Bench"
                                               " mapping file) name files outside its own folder and a model to"
                                               " download; only for files you trust.")
]
InlineNames = Annotated[
    Optional[list[str]],
    typer.Option("--name", metavar="NAME", show_default=False,
                 help="The folder name of the k-th --prompt; repeatable (default: the source's first words, numbered"
                      " -2, -3 when an earlier --prompt took them)."),
]
