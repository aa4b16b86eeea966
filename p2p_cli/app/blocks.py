"""The Gradio Blocks app of `p2p ui`: the Edit and Attention tabs, wired to app.runs (the only module that imports
gradio, with app/__init__.py's launch)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
import random
import uuid
import threading
from dataclasses import asdict
from typing import Any

import gradio as gr

from p2p_cli.app.controls import (BUNDLED, INVERSIONS, Controls, error_text, family_defaults, from_recipe,
                                  recipe_yaml)
from p2p_cli.app.runs import Outcome, Runner, Stopped
from p2p_cli.recipe import RecipeError

# (prompt, model, seed): edits where control shows. On the transformer model the caption names no place, so
# the uncontrolled target (the baseline) moves the objects; P2P keeps the layout and changes the colour alone.
EXAMPLES = [
    ["a big [red->green] circle and a small blue square on a white background", "shapes-mmdit", 1],
    ["a big [red->blue|red->green] circle on the left on a white background", "shapes", 1],
    ["a big red [circle->square] on the left on a white background", "shapes", 1],
]
FIELDS = ["prompt", "source", "targets", "model", "seed", "steps", "guidance", "cross", "self_window", "blend",
          "baseline", "attention", "image", "inversion", "word_windows"]
CSS = """
.pixels img { image-rendering: pixelated; object-fit: contain; }
#p2p-title h1 { margin-bottom: 0; }
"""


class Sessions:
    """Per browser session: the stop flag of its run and its last outcome (the Attention tab reads it); the
    sessions seen last are kept (an outcome holds its pictures and maps in memory)."""

    def __init__(self, keep: int = 8):
        self.keep = keep
        self.stops: dict[str, threading.Event] = {}
        self.last: OrderedDict[str, Outcome] = OrderedDict()

    def stop_flag(self, key: str) -> threading.Event:
        flag = threading.Event()
        self.stops[key] = flag
        return flag

    def finished(self, key: str, outcome: Outcome) -> None:
        self.last[key] = outcome
        self.last.move_to_end(key)
        while len(self.last) > self.keep:
            old, _ = self.last.popitem(last=False)
            self.stops.pop(old, None)


_checking = threading.Lock()  # one check at a time: the tokenizer is shared by the page's threads


def checked(c: Controls) -> tuple[str, Any, str]:
    """What the page shows as the controls change: the recipe (or validate's lines), the local-blend choices, the
    command line (empty while the recipe is invalid)."""
    choices = c.words()
    chosen = [w for w in c.blend if w in choices]
    with _checking:
        try:
            text, line = recipe_yaml(c.recipe()), c.command()
        except RecipeError as err:
            text, line = error_text(err), ""
    return text, gr.update(choices=choices, value=chosen), line


async def in_thread(flag: threading.Event, fn, *args, **kwargs):
    """fn(*args, **kwargs) in a thread, so that the page stays live: a cancelled event (Stop, a closed page, a
    client's cancel) sets `flag`, which stops the run between steps; a bad recipe and a stop become the page's
    error line."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except asyncio.CancelledError:
        flag.set()
        raise
    except RecipeError as err:
        raise gr.Error(error_text(err), print_exception=False) from None
    except Stopped as err:
        raise gr.Error(f"stopped: {err}", print_exception=False) from None


def picture_of(editor) -> str | None:
    """The picture in the editor's value (its background; a plain path as the API may send), None for none."""
    return editor.get("background") if isinstance(editor, dict) else editor


def warm_up(runner: Runner, start: Controls) -> None:
    """Load the first model before the page asks (in a thread, while the page is served; launch has read the
    tokenizers first, in its caller's thread: a first import of transformers racing another thread's can see the
    package half made and fail)."""
    try:
        runner.model(start.model)
    except Exception:  # noqa: BLE001 - the first run reports it, with the page's error wording
        pass


def build(runner: Runner, models: list[str] | None = None, start: Controls | None = None) -> gr.Blocks:
    """The app on `runner`; `models` are the choices (the bundled ones first), `start` the controls it opens with."""
    models = list(dict.fromkeys([*(models or []), *BUNDLED]))
    start = start or Controls(prompt=EXAMPLES[0][0], model=EXAMPLES[0][1], seed=EXAMPLES[0][2], guidance=7.0,
                              self_window=family_defaults(EXAMPLES[0][1])["self_window"])
    sessions = Sessions()

    with gr.Blocks(title="p2p: edit a picture by editing its prompt") as app:
        gr.Markdown("# p2p\nEdit a generated picture by editing its prompt (Prompt-to-Prompt). Write the edit inline:"
                    " `a [red->blue] circle`, `a house [->in winter]`, `a (fluffy:2) cat`.", elem_id="p2p-title")
        with gr.Tab("Edit"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=5):
                    prompt = gr.Textbox(start.prompt, label="Prompt with inline edits", lines=2, max_lines=4)
                    recipe = gr.Code(label="The recipe it stands for (or what is wrong with it)", language="yaml",
                                     lines=4, max_lines=14, interactive=False, elem_id="p2p-recipe",
                                     wrap_lines=True)
                    with gr.Accordion("or: a source prompt and target prompts", open=False):
                        source = gr.Textbox(start.source, label="Source prompt")
                        targets = gr.Textbox(start.targets, label="Target prompts (one a line)", lines=2)
                    with gr.Accordion("Edit a real picture", open=False):
                        image = gr.ImageEditor(label="Picture (the source prompt describes it); paint where the edit"
                                               " may change it, or nowhere for everywhere", type="filepath",
                                               sources=["upload", "clipboard"], format="png", transforms=(),
                                               layers=False, brush=gr.Brush(colors=["#ff2d55"], color_mode="fixed"),
                                               height=300)
                        inversion = gr.Radio(INVERSIONS, value=start.inversion, label="Inversion (cached per picture"
                                             " and settings)")
                    with gr.Row(equal_height=True):
                        model = gr.Radio(models, value=start.model, label="Model", scale=3)
                        with gr.Column(scale=2, min_width=140):
                            seed = gr.Number(start.seed, label="Seed", precision=0, minimum=0)
                            new_seed = gr.Button("New seed", size="sm")
                    steps = gr.Slider(1, 250, start.steps, step=1, label="Steps")
                    with gr.Row():
                        cross = gr.Slider(0, 1, start.cross, step=0.05, label="Cross-attention window (tau)")
                        self_window = gr.Slider(0, 1, start.self_window, step=0.05, label="Self-attention window")
                    word_windows = gr.Textbox(start.word_windows, label="Per-word cross windows (word: tau, ...)",
                                              placeholder="e.g. green: 0.4")
                    guidance = gr.Slider(0, 15, start.guidance, step=0.5, label="Guidance")
                    blend = gr.CheckboxGroup(Controls(prompt=start.prompt).words(), value=start.blend,
                                             label="Local blend: change only where these words are")
                    with gr.Row():
                        baseline = gr.Checkbox(start.baseline, label="Also draw each target without control")
                        attention = gr.Checkbox(start.attention, label="Keep attention maps (Attention tab)")
                    with gr.Row():
                        run = gr.Button("Run", variant="primary", scale=3)
                        stop = gr.Button("Stop", variant="stop", scale=1)
                with gr.Column(scale=6):
                    slider = gr.ImageSlider(label="Source / edit (drag the handle)", type="filepath", format="png",
                                            height=360, width=360, elem_classes="pixels", interactive=False)
                    gallery = gr.Gallery(label="Source, edits, baselines (click one to compare it)",
                                         elem_id="p2p-gallery", columns=3, height=250, format="png",
                                         allow_preview=False, object_fit="contain", elem_classes="pixels",
                                         interactive=False)
                    command = gr.Textbox(label="The same run from the command line", elem_id="p2p-command",
                                         interactive=False, buttons=["copy"])
                    files = gr.File(label="Files (the PNGs carry their recipe)", file_count="multiple",
                                    interactive=False, height=150)
                    with gr.Accordion("Load the recipe of a PNG p2p wrote", open=False):
                        loaded = gr.File(label="PNG", file_types=[".png"], type="filepath", height=120)
            gr.Examples(EXAMPLES, [prompt, model, seed], label="Examples on the bundled models")
        with gr.Tab("Attention"):
            gr.Markdown("Where each word looked, averaged over layers, heads and steps (tick *Keep attention maps*,"
                        " then Run).")
            with gr.Row():
                row = gr.Dropdown([], label="Picture")
                word = gr.Dropdown([], label="Word")
            with gr.Row():
                heat = gr.Image(label="Attention", type="pil", format="png", height=360, elem_classes="pixels",
                                interactive=False)
                blend_mask = gr.Image(label="Local-blend mask of this edit (white: edited)", type="pil",
                                      format="png", height=360, elem_classes="pixels", interactive=False)

        with gr.Tab("Sweep"):
            gr.Markdown("Every window of a range as one more picture of the batch, from the Edit tab's prompt and"
                        " settings: how much of the source each keeps against how much of the edit happens.")
            with gr.Row():
                taus = gr.Textbox("0.2:1", label="Cross-attention taus (LO:HI, LO:HI:STEP or V1,V2,...)")
                self_taus = gr.Textbox("", label="Self-attention taus (empty: the Edit tab's)")
                sweep_run = gr.Button("Sweep", variant="primary")
                sweep_stop = gr.Button("Stop", variant="stop")
            with gr.Row():
                grid = gr.Image(label="Sweep", type="filepath", format="png", interactive=False)
                plot = gr.Image(label="Trade-off", type="filepath", format="png", interactive=False)
            sweep_command = gr.Textbox(label="The same sweep from the command line (in the folder of recipe.yaml)",
                                       interactive=False, buttons=["copy"])
            sweep_files = gr.File(label="Files", file_count="multiple", interactive=False, height=120)

        inputs = [prompt, source, targets, model, seed, steps, guidance, cross, self_window, blend, baseline,
                  attention, image, inversion, word_windows]

        def controls_of(values, painted: bool = False) -> Controls:
            """Controls from the widgets' values; the editor's picture, and with `painted` its mask (a file)."""
            given = dict(zip(FIELDS, values))
            editor = given.pop("image") or {}
            given["image"] = picture_of(editor)
            layers = [layer for layer in (editor.get("layers") or []) if layer] if isinstance(editor, dict) else []
            if painted and given["image"] and layers:
                from p2p_cli.render.images import painted_mask

                runner.out.joinpath("masks").mkdir(exist_ok=True)
                mask = runner.out / "masks" / f"{uuid.uuid4().hex}.png"
                given["mask"] = painted_mask(layers, mask)
                given["mask"] = str(given["mask"]) if given["mask"] else None
            return Controls.from_values(given)

        def check(*values):
            return checked(controls_of(values))

        def on_model(name, editor):
            """A model chosen: its guidance, windows and inversion, a real picture's when one is given (its
            p2p-defaults.json)."""
            d = family_defaults(name, image=bool(picture_of(editor)))
            return d["guidance"], d["cross"], d["self_window"], d["inversion"]

        def on_picture(name, editor):
            """A picture given or cleared: on_model's windows and inversion (its guidance stays)."""
            return on_model(name, editor)[1:]

        async def run_edit(prompt, source, targets, model, seed, steps, guidance, cross, self_window, blend, baseline,
                           attention, image, inversion, word_windows, request: gr.Request,
                           progress=gr.Progress()):
            # named parameters: gradio finds `request` and `progress` by position, which *values would swallow
            given = dict(locals())  # (a comprehension's locals() would be its own)
            c = controls_of([given[name] for name in FIELDS], painted=True)
            key = request.session_hash if request is not None else "default"
            flag = sessions.stop_flag(key)
            progress(0, desc="loading the model")
            out = await in_thread(flag, runner.run, c, stop=flag,
                                  progress=lambda done, total: progress((done, total), desc="sampling"))
            sessions.finished(key, out)
            role = {caption.split(":")[0]: path for path, caption in out.pictures}
            before = role.get("input", role["source"])  # a real picture: the picture itself, else the source
            rows = [r for r in role if r == "source" or r.startswith("edit-")]
            return (out.pictures, (before, role.get("edit-1")), out.files, out.recipe, out.command,
                    gr.update(choices=rows, value=rows[-1]))

        async def run_sweep(prompt, source, targets, model, seed, steps, guidance, cross, self_window, blend,
                            baseline, attention, image, inversion, word_windows, taus, self_taus, request: gr.Request,
                            progress=gr.Progress()):
            given = dict(locals())
            c = controls_of([given[name] for name in FIELDS])
            flag = sessions.stop_flag(request.session_hash if request is not None else "default")
            out = await in_thread(flag, runner.sweep, c, taus, self_taus, stop=flag,
                                  progress=lambda done, total: progress((done, total), desc="sampling"))
            return out.pictures[0][0], out.pictures[1][0], out.command, out.files

        def on_stop(request: gr.Request = None):
            key = request.session_hash if request is not None else "default"
            if key in sessions.stops:
                sessions.stops[key].set()

        def pick(evt: gr.SelectData, pictures):
            source_picture = pictures[0]["image"]["path"] if isinstance(pictures[0], dict) else pictures[0][0]
            chosen = pictures[evt.index]
            chosen = chosen["image"]["path"] if isinstance(chosen, dict) else chosen[0]
            return source_picture, chosen

        def load_png(path):
            if not path:
                return [gr.update() for _ in FIELDS]
            from p2p_cli.overrides import read_recipe

            try:
                c = from_recipe(read_recipe(path))
            except RecipeError as err:
                raise gr.Error(error_text(err), print_exception=False) from None
            values = asdict(c)
            return [values[name] for name in FIELDS]

        def words_of(which, request: gr.Request = None):
            out = sessions.last.get(request.session_hash if request is not None else "default")
            if out is None or out.result.maps is None:
                return gr.update(choices=[], value=None)
            tokens = [text for _, text in out.result.maps.tokens(which)]
            return gr.update(choices=tokens, value=tokens[0] if tokens else None)

        def blend_of(which, request: gr.Request = None):
            """The chosen edit's final local-blend mask (Result.masks: edit-<k>-mask.png's mask), None without one."""
            out = sessions.last.get(request.session_hash if request is not None else "default")
            if out is None or not which or not str(which).startswith("edit-"):
                return None
            return out.result.masks.get(int(str(which).split("-")[1]))

        def draw(which, chosen, request: gr.Request = None):
            out = sessions.last.get(request.session_hash if request is not None else "default")
            if out is None or out.result.maps is None or not which or not chosen:
                return None
            try:
                return out.result.maps.overlay(chosen, which)
            except ValueError as err:
                raise gr.Error(str(err), print_exception=False) from None

        prompt.change(check, inputs, [recipe, blend, command], api_name="check", queue=False, show_progress="hidden")
        for box in (source, targets, model, seed, steps, guidance, cross, self_window, baseline, attention, image,
                    inversion, word_windows):
            box.change(check, inputs, [recipe, blend, command], api_name=False, queue=False, show_progress="hidden")
        blend.input(check, inputs, [recipe, blend, command], api_name=False, queue=False, show_progress="hidden")
        app.load(check, inputs, [recipe, blend, command], api_name=False, queue=False)
        model.input(on_model, [model, image], [guidance, cross, self_window, inversion], api_name=False, queue=False)
        for event in (image.upload, image.clear):
            event(on_picture, [model, image], [cross, self_window, inversion], api_name=False, queue=False)
        new_seed.click(lambda: random.randrange(2**31), None, seed, api_name=False, queue=False)
        running = run.click(run_edit, inputs, [gallery, slider, files, recipe, command, row], api_name="run",
                            concurrency_limit=1, concurrency_id="model")
        stop.click(on_stop, None, None, cancels=[running], api_name=False, queue=False)
        sweeping = sweep_run.click(run_sweep, inputs + [taus, self_taus], [grid, plot, sweep_command, sweep_files],
                                   api_name="sweep", concurrency_limit=1, concurrency_id="model")
        sweep_stop.click(on_stop, None, None, cancels=[sweeping], api_name=False, queue=False)
        gallery.select(pick, gallery, slider, api_name=False, queue=False)
        loaded.upload(load_png, loaded, inputs, api_name=False)
        row.change(words_of, row, word, api_name="words")
        row.change(blend_of, row, blend_mask, api_name="blend_mask")
        word.change(draw, [row, word], heat, api_name="attention")
    app.start = start
    return app
