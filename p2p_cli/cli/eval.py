"""`p2p eval pie-bench DIR`: edit a PIE-Bench folder's pictures (OUT/<entry id>/ as `p2p edit` writes them) and
score them with the benchmark's seven measures (OUT/pie-bench.json, a table on stdout). The work is in
p2p_cli/pie_bench.py; the folder is checked here before any model loads."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from p2p_cli.cli import options as o
from p2p_cli.cli.common import overrides_from, use_threads
from p2p_cli.cli.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK, UsageError, describe, handled, report
from p2p_cli.runs.edits import check_out
from p2p_cli.files.pie_folder import REWEIGHT, PieBenchError, Settings, invalid_entries, parse_kinds, read_folder

CLIP_DEFAULT = "openai/clip-vit-large-patch14"  # metrics.CLIP_DEFAULT (metrics imports torch; help must not)
DINO_DEFAULT = "facebook/dino-vitb8"  # metrics.DINO_DEFAULT


class Inversion(str, Enum):
    direct = "direct"
    null_text = "null-text"
    negative_prompt = "negative-prompt"
    ddim = "ddim"
    ddpm = "ddpm"
    flowedit = "flowedit"


class Protocol(str, Enum):  # pie_folder.PROTOCOLS
    reference = "reference"
    p2p = "p2p"


def pie_bench(
    folder: Annotated[Path, typer.Argument(help="The PIE-Bench data folder: mapping_file.json and annotation_images/.",
                                           metavar="DIR", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the results: OUT/<entry id>/ and"
                                                         " OUT/pie-bench.json.")] = Path("outputs/pie-bench"),
    model: o.ModelOnly = None,
    inversion: Annotated[Inversion, typer.Option("--inversion", help="How each picture is inverted.")]
    = Inversion.direct,
    kinds: Annotated[Optional[str], typer.Option(
        "--kinds", show_default=False, help="Editing kinds to run, ids or names, comma-separated: 0 random,"
        " 1 change-object, 2 add-object, 3 delete-object, 4 change-content, 5 change-pose, 6 change-color,"
        " 7 change-material, 8 change-background, 9 change-style (default: all).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, show_default=False,
                                                 help="Run only the first N entries (of the chosen kinds; default:"
                                                      " all of them).")] = None,
    protocol: Annotated[Protocol, typer.Option(
        "--protocol", help="reference: edit as the benchmark's own P2P run does, so the numbers compare with the"
        " published ones (always refine; cross window 0.4, self window 0.6 in layers of at most 32x32; guidance"
        " 7.5, 50 steps; blend on the source's blended word in the source and the target's in the target). p2p:"
        " p2p's own choices (replace when the prompts have as many words, else refine; the model family's"
        " windows, guidance and steps; blended words looked up in both prompts). Each entry's record says"
        " which; --resume never mixes them.")] = Protocol.reference,
    reweight: Annotated[float, typer.Option(
        "--reweight", help="Factor on the target's blended word, as the benchmark's P2P run does; 1 for none.")]
    = REWEIGHT,
    no_blend: Annotated[bool, typer.Option("--no-blend", help="No local blend on the blended words.")] = False,
    steps: o.Steps = None,
    seed: o.Seed = None,
    set_: o.Sets = None,
    dino: Annotated[str, typer.Option("--dino", help="DINO ViT for the structure distance: hub id or local"
                                                     " folder; 'none' skips it.")] = DINO_DEFAULT,
    clip: Annotated[str, typer.Option("--clip", help="CLIP model for the CLIP scores: hub id or local folder;"
                                                     " 'none' skips them.")] = CLIP_DEFAULT,
    lpips: Annotated[str, typer.Option("--lpips", help="LPIPS backbone (needs the lpips package): squeeze (the"
                                                       " benchmark's), alex, or none.")] = "squeeze",
    device: o.DeviceOpt = o.Device.auto,
    dtype: o.DtypeOpt = o.Dtype.auto,
    resume: Annotated[bool, typer.Option("--resume", help="Keep each entry's folder that a finished run with the"
                                                          " same settings wrote (it is scored again).")] = False,
    overwrite: o.Overwrite = False,
    trust_recipe: o.TrustRecipe = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON instead of the table.")] = False,
    quiet: o.Quiet = False,
    threads: o.Threads = None,
    allow_pickle: o.AllowPickle = False,
    debug: o.Debug = False,
) -> None:
    """Run PIE-Bench: edit every chosen picture (OUT/<entry id>/ as `p2p edit` writes it) and score it with the
    benchmark's seven measures; OUT/pie-bench.json holds every entry and the means per kind and overall."""
    console = Console(stderr=True, soft_wrap=True, highlight=False, markup=False)
    log = (lambda msg: None) if quiet else console.print
    with handled(debug):
        try:
            chosen = parse_kinds(kinds)
        except ValueError as err:
            raise UsageError(f"--kinds: {err}") from None
        if lpips.lower() not in ("squeeze", "alex", "none"):
            raise UsageError(f"--lpips {lpips}: give squeeze (the benchmark's), alex or none")
        try:
            entries = read_folder(folder, chosen, limit, trust=trust_recipe)
        except PieBenchError as err:
            raise UsageError(str(err)) from None
        if not entries:
            raise UsageError(f"{folder}: no entries of the kinds {kinds} in mapping_file.json")
        settings = Settings(protocol=protocol.value, inversion=inversion.value, reweight=reweight,
                            blend=not no_blend, overrides=overrides_from(set_, steps=steps, seed=seed))
        check_recipes(entries, settings, model)
        check_out(out)
        if resume and not overwrite:
            check_protocols(entries, out, settings.protocol)
        if not (resume or overwrite):
            taken = [e.id for e in entries if (out / e.id).exists()]
            if taken:
                more = f" and {len(taken) - 1} other entry folder(s)" if len(taken) > 1 else ""
                raise UsageError(f"{out / taken[0]}/{more} already exist; pass --resume to keep the finished ones"
                                 " and run the rest, --overwrite to replace them, or another --out")
        use_threads(threads)
        summary = run(folder, entries, out, settings, model=model, device=device.value, dtype=dtype.value,
                      dino=dino, clip=clip, lpips=lpips.lower(), resume=resume, overwrite=overwrite,
                      allow_pickle=allow_pickle, log=log, debug=debug)
        if json_:
            keep = ("folder", "model", "settings", "skipped_measures", "entries_chosen", "failed", "kinds",
                    "overall")
            from p2p_cli.pie_bench import SUMMARY_FILE, _jsonable

            line = {"out": str(out / SUMMARY_FILE), **{k: summary[k] for k in keep}}
            print(json.dumps(_jsonable(line)), flush=True)
        else:
            from p2p_cli.pie_bench import SUMMARY_FILE, table

            print(table(summary), flush=True)
            done = summary["entries_done"]
            log(f"wrote {out / SUMMARY_FILE} ({done} entr{'y' if done == 1 else 'ies'}, {summary['failed']} failed)")
    raise typer.Exit(EXIT_FAILED if summary["failed"] else EXIT_OK)


def check_protocols(entries, out: Path, protocol: str) -> None:
    """--resume keeps only entries made under this run's protocol: an entry folder another protocol (or a p2p
    that recorded none) made stops the run before any model loads, exit 2."""
    from p2p_cli.pie_bench import recorded_protocol

    other = [(e.id, recorded_protocol(out / e.id)) for e in entries if (out / e.id / "run.json").is_file()]
    other = [(name, found) for name, found in other if found != protocol]
    if other:
        name, found = other[0]
        made = f"--protocol {found}" if found else "no recorded protocol"
        more = f" (and {len(other) - 1} other entry folder(s))" if len(other) > 1 else ""
        raise UsageError(f"{out / name}/ was made under {made}{more}, this run is --protocol {protocol}: --resume"
                         " never mixes protocols; pass --overwrite to edit them again, or another --out")


def check_recipes(entries, settings: Settings, model: str | None) -> None:
    """Every entry's recipe (with --set) must be valid before any model loads: all problems listed, exit 2."""
    try:
        invalid = invalid_entries(entries, settings, model)
    except ValueError as err:  # a --set that cannot apply: the same for every entry
        raise UsageError(str(err)) from None
    if invalid:
        for err in invalid:
            report(err)
        raise typer.Exit(EXIT_INVALID)


def run(folder: Path, entries, out: Path, settings: Settings, *, model, device, dtype, dino, clip, lpips, resume,
        overwrite, allow_pickle, log, debug) -> dict:
    """Load the model and the metric networks, then edit and score every entry (p2p_cli.pie_bench.run)."""
    from p2p_cli.api import load_model
    from p2p_cli.cli.common import dtype_name
    from p2p_cli.api import pick_device, pick_dtype
    from p2p_cli.pie_bench import load_scorers, run as run_benchmark

    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    spec = model or "shapes"
    log(f"loading model {spec} ({dev}, {dtype_name(dt)})")
    sd = load_model(spec, device=dev.type if dev.index is None else str(dev), dtype=dtype_name(dt),
                    allow_pickle=allow_pickle)
    scorers = load_scorers(sd.device, dino=dino, clip=clip, lpips=lpips,
                           warn=lambda line: print(f"warning: {line}", file=sys.stderr, flush=True))
    n = len(entries)
    log(f"{folder}: {n} entr{'y' if n == 1 else 'ies'}, {settings.inversion} inversion, writing {out}/")

    def failed(err: BaseException, where: str) -> str:
        report(err, where=where, debug=debug)
        return describe(err)[0]

    return run_benchmark(sd, entries, out, settings, scorers, folder=Path(folder).resolve(), resume=resume,
                         overwrite=overwrite, log=log, report=failed)
