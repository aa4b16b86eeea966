"""`p2p ui` served in-process on an ephemeral port and called through gradio_client, as a browser page calls it:
its pictures are the CLI's, a bad prompt gets the validate lines, a cancelled run stops and the app goes on."""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

# Found, not imported: gradio takes seconds to import, and collection runs in every test worker; the app
# imports it when a test starts it.
if importlib.util.find_spec("gradio") is None:
    pytest.skip("the ui extra (pip install 'p2p-cli[ui]') is not installed", allow_module_level=True)
gradio_client = pytest.importorskip("gradio_client")

from p2p_cli.app.controls import Controls, error_text, from_recipe  # noqa: E402
from p2p_cli.cli.main import app as cli_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
INLINE = "a big [red->blue] circle on the left on a white background"
FIELDS = ["prompt", "source", "targets", "model", "seed", "steps", "guidance", "cross", "self_window", "blend",
          "baseline", "attention", "image", "inversion", "word_windows"]


def args(c: Controls) -> list:
    """The /check and /run endpoints' inputs, in the page's order."""
    values = vars(c)
    return [picture(values[name]) if name == "image" else values[name] for name in FIELDS]


def picture(path, layers=()):
    """The picture editor's value: the uploaded picture and its brush layers."""
    if path is None:
        return None
    return {"background": gradio_client.handle_file(path), "layers": [gradio_client.handle_file(p) for p in layers],
            "composite": None}


@pytest.fixture(scope="module")
def served():
    """One app for the module (its models load once): (Blocks, gradio_client.Client)."""
    from p2p_cli.app import launch

    blocks = launch(block=False, quiet=True)
    assert blocks.local_url.startswith("http://127.0.0.1:")
    yield blocks, gradio_client.Client(blocks.local_url, verbose=False)
    blocks.close()


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def cli_pictures(command: str, out: Path) -> Path:
    """Run the app's command line (p2p edit ...) in-process and return the folder it wrote."""
    words = shlex.split(command)
    assert words[:2] == ["p2p", "edit"]
    done = CliRunner().invoke(cli_app, words[1:] + ["--out", str(out), "--json", "--quiet"])
    assert done.exit_code == 0, done.output
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return folder


def test_the_library_works_beside_the_app_the_moment_launch_returns(served):
    """launch(block=False) returns while its thread loads the model: a recipe checked and another model loaded at
    once in the caller's thread (a notebook's next cells) must not meet transformers or diffusers half imported, or
    a load half done, by that thread."""
    from p2p_cli.models import load_model

    recipe = Controls(prompt=INLINE, model="shapes", image=str(ROOT / "recipes" / "pictures" / "blue-circle.png"),
                      steps=3).recipe()
    assert recipe.image is not None and recipe.edits[0].target.startswith("a big blue circle")
    assert load_model("shapes-mmdit", device="cpu", dtype="fp32").id == "bundled:shapes-mmdit"


@pytest.mark.parametrize("model, prompt, guidance, self_window", [
    ("shapes", INLINE, 7.5, 0.4),
    ("shapes-mmdit", "a big [red->green] circle and a small blue square on a white background", 7.0, 0.2),
], ids=["unet", "transformer"])
def test_an_inline_edit_gives_the_pictures_of_p2p_edit_prompt(served, tmp_path, model, prompt, guidance,
                                                               self_window):
    _, client = served
    c = Controls(prompt=prompt, model=model, seed=3, steps=3, guidance=guidance, self_window=self_window,
                 cross=0.6, baseline=True, word_windows="circle: 0.3" if model == "shapes" else "")
    gallery, (before, after), files, recipe, command, _ = client.predict(*args(c), api_name="/run")
    assert command == c.command() and f"--model {model}" in command
    assert ("--set 'cross_replace={\"default\": 0.6, \"circle\": 0.3}'" if model == "shapes"
            else "--set cross_replace=0.6") in command
    folder = cli_pictures(command, tmp_path)
    roles = [item["caption"].split(":")[0] for item in gallery]
    assert roles == ["source", "edit-1", "baseline-1"]
    for item, role in zip(gallery, roles):
        assert np.array_equal(pixels(item["image"]), pixels(folder / f"{role}.png")), role
    assert np.array_equal(pixels(before), pixels(folder / "source.png"))
    assert np.array_equal(pixels(after), pixels(folder / "edit-1.png"))
    # the downloads: the PNGs p2p writes (they carry the recipe), run.json, recipe.yaml, the command
    names = sorted(Path(f).name for f in files)
    assert names == ["baseline-1.png", "command.txt", "edit-1.png", "grid.png", "recipe.yaml", "run.json",
                     "source.png"]
    recipe_file = next(Path(f) for f in files if f.endswith("recipe.yaml"))
    assert Path(recipe_file).read_text().rstrip() == recipe.rstrip()
    if model != "shapes":
        return  # the recipe file's run, once is enough
    again = cli_pictures(f"p2p edit {shlex.quote(str(recipe_file))} --baseline", tmp_path / "from-yaml")
    assert np.array_equal(pixels(again / "edit-1.png"), pixels(folder / "edit-1.png"))


def test_a_real_picture_is_inverted_once_and_edited_as_the_cli_edits_it(served, tmp_path, monkeypatch):
    import json
    import shutil

    _, client = served
    monkeypatch.setenv("P2P_CACHE", str(tmp_path / "cache"))
    source = ROOT / "recipes" / "pictures" / "blue-circle.png"
    c = Controls(prompt="a big [blue->red] circle on the left on a white background", model="shapes", steps=3,
                 cross=1.0, self_window=0.9, baseline=False, image=str(source), inversion="ddim")
    brush = np.zeros((*Image.open(source).size[::-1], 4), np.uint8)
    brush[:, : brush.shape[1] // 2] = (255, 45, 85, 255)  # the left half painted
    Image.fromarray(brush, "RGBA").save(tmp_path / "layer.png")
    values = args(c)
    values[FIELDS.index("image")] = picture(str(source), [tmp_path / "layer.png"])
    runs = [client.predict(*args(c), api_name="/run"), client.predict(*values, api_name="/run")]
    (plain, _, plain_files, *_), (gallery, (before, after), files, recipe, command, _) = runs
    assert [item["caption"].split(":")[0] for item in gallery] == ["input", "source", "edit-1"]
    records = [json.loads(Path(next(f for f in run if f.endswith("run.json"))).read_text())
               for run in (plain_files, files)]
    assert [r["inversion"]["cached"] for r in records] == [False, True]  # the second run reads the cache
    assert command.endswith("--set image=picture.png --set inversion=ddim --set mask=painted-mask.png")
    assert "image: picture.png" in recipe and "mask: painted-mask.png" in recipe
    mask = pixels(next(f for f in files if f.endswith("painted-mask.png")))
    assert mask[:, :32].min() == 255 and mask[:, 32:].max() == 0
    assert not np.array_equal(pixels(plain[2]["image"]), pixels(gallery[2]["image"]))  # the mask changed the edit
    folder = tmp_path / "downloaded"  # the files the page offers, in one folder: the command runs there
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder / Path(f).name)
    monkeypatch.chdir(folder)
    made = cli_pictures(command, tmp_path / "cli")
    for item, role in zip(gallery, ["input", "source", "edit-1"]):
        assert np.array_equal(pixels(item["image"]), pixels(made / f"{role}.png")), role
    assert np.array_equal(pixels(before), pixels(source))


def test_the_attention_tab_draws_the_maps_the_api_keeps(served):
    import p2p_cli as p2p

    _, client = served
    c = Controls(prompt=INLINE, model="shapes", steps=3, baseline=False, attention=True)
    *_, command, rows = client.predict(*args(c), api_name="/run")
    assert command.endswith("--save-attention") and rows["value"] == "edit-1"
    words = client.predict("edit-1", api_name="/words")  # what picking the picture offers
    assert [w[0] for w in words["choices"]] == ["a", "big", "blue", "circle", "on", "the", "left", "on", "a", "white",
                                                "background"]
    drawn = client.predict("edit-1", "blue", api_name="/attention")
    result = p2p.edit(p2p.load_model("shapes"), c.recipe(), maps=True)
    assert np.array_equal(pixels(drawn), np.asarray(result.maps.overlay("blue", "edit-1").convert("RGB")))


def test_the_attention_tab_shows_the_blend_mask_the_api_makes(served):
    import p2p_cli as p2p

    _, client = served
    c = Controls(prompt=INLINE, model="shapes", steps=3, baseline=False, attention=True, blend=["circle"])
    client.predict(*args(c), api_name="/run")
    shown = client.predict("edit-1", api_name="/blend_mask")
    result = p2p.edit(p2p.load_model("shapes"), c.recipe(), maps=False)
    assert np.array_equal(pixels(shown), np.asarray(result.masks[1].convert("RGB")))
    assert client.predict("source", api_name="/blend_mask") is None  # the source has no blend


def test_a_sweep_draws_the_grid_and_plot_of_p2p_sweep(served, tmp_path, monkeypatch):
    _, client = served
    c = Controls(prompt=INLINE, model="shapes", steps=2, baseline=False)
    grid, plot, command, files = client.predict(*args(c), "0.2,0.8", "", api_name="/sweep")
    assert command == "p2p sweep recipe.yaml --tau=0.2,0.8 --clip none"
    recipe = next(f for f in files if f.endswith("recipe.yaml"))
    monkeypatch.chdir(Path(recipe).parent)
    done = CliRunner().invoke(cli_app, shlex.split(command)[1:] + ["--out", str(tmp_path), "--quiet"])
    assert done.exit_code == 0, done.output
    (folder,) = [p / "sweep" for p in tmp_path.iterdir()]
    assert np.array_equal(pixels(grid), pixels(folder / "sweep.png"))
    assert np.array_equal(pixels(plot), pixels(folder / "tradeoff.png"))
    with pytest.raises(gradio_client.exceptions.AppError, match="tau 0.2:x: "):
        client.predict(*args(c), "0.2:x", "", api_name="/sweep")


def test_a_bad_prompt_gets_the_lines_p2p_validate_prints(served):
    _, client = served
    bad = Controls(prompt="a [cat on a mat", model="shapes")
    text, _, command = client.predict(*args(bad), api_name="/check")
    validate = CliRunner().invoke(cli_app, ["validate", "--prompt", bad.prompt])
    assert validate.exit_code == 2
    assert text.startswith("--prompt: invalid recipe (1 problem)\n  prompt: unmatched or malformed '['")
    assert text in validate.stderr and command == ""
    with pytest.raises(gradio_client.exceptions.AppError) as err:
        client.predict(*args(bad), api_name="/run")
    assert str(err.value) == text and "Traceback" not in str(err.value)
    # the fields' recipe: a source with no target
    empty = Controls(source="a big red circle", targets="", model="shapes")
    text, _, _ = client.predict(*args(empty), api_name="/check")
    assert text.startswith("recipe: invalid recipe (1 problem)\n  edits:")


def test_the_check_shows_the_recipe_and_offers_the_prompt_words_for_local_blend(served):
    _, client = served
    text, blend, command = client.predict(*args(Controls(prompt=INLINE, steps=7)), api_name="/check")
    assert "source: a big red circle on the left on a white background" in text and "steps: 7" in text
    assert [choice[0] for choice in blend["choices"]][:3] == ["a", "big", "red"] and "blue" in str(blend["choices"])
    assert command.startswith("p2p edit --prompt 'a big [red->blue] circle")


def test_a_cancelled_run_stops_and_the_app_goes_on_serving(served):
    blocks, client = served
    runner = blocks.runner
    before = set(runner.out.glob("run-*"))
    job = client.submit(*args(Controls(prompt=INLINE, steps=250, baseline=False)), api_name="/run")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not job.done():  # wait until it samples
        status = job.status()
        if status.progress_data and any(p.index for p in status.progress_data if p.index is not None):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the run never reported a step: {job.status()}")
    assert job.cancel() or True  # gradio_client returns False for a started job, yet asks the server to cancel
    gallery, *_ = client.predict(*args(Controls(prompt=INLINE, steps=2, baseline=False)), api_name="/run")
    assert [item["caption"].split(":")[0] for item in gallery] == ["source", "edit-1"]
    made = set(runner.out.glob("run-*")) - before
    assert len(made) == 1, "the cancelled run went on to the end and wrote its folder"


def test_the_controls_of_a_png_p2p_wrote_make_its_pictures_again(tmp_path):
    c = Controls(source="a big red circle on the left on a white background",
                 targets="a big blue circle on the left on a white background", model="shapes", seed=5, steps=2,
                 cross=0.7, self_window=0.3, blend=["red", "blue"], word_windows="circle: 0.4")
    recipe = c.recipe()
    from p2p_cli.overrides import read_recipe
    import yaml

    path = tmp_path / "r.yaml"
    from p2p_cli.app.controls import recipe_yaml

    path.write_text(recipe_yaml(recipe))
    folder = cli_pictures(f"p2p edit {path}", tmp_path / "out")
    back = from_recipe(read_recipe(str(folder / "edit-1.png")))
    assert back.recipe().model_dump() == recipe.model_copy(update={"name": back.recipe().name}).model_dump()
    assert yaml.safe_load(recipe_yaml(recipe))["edits"][0]["local_blend"]["words"] == ["red", "blue"]


def test_error_text_counts_problems():
    from p2p_cli.recipe import RecipeError

    assert error_text(RecipeError(["a: x", "b: y"], "recipe")) == "recipe: invalid recipe (2 problems)\n  a: x\n  b: y"
    with pytest.raises(RecipeError, match="per-word window 'circle 0.3': write word: tau"):
        Controls(prompt=INLINE, word_windows="circle 0.3").recipe()
    with pytest.raises(RecipeError, match=r"cross_replace: \[circle\] tau 1.5 is outside \[0, 1\]"):
        Controls(prompt=INLINE, word_windows="circle: 1.5").recipe()


def test_p2p_ui_help_imports_neither_gradio_nor_torch():
    probe = ("import runpy, sys\nsys.argv = ['p2p', 'ui', '--help']\ntry:\n    runpy.run_module('p2p_cli',"
             " run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\nprint('HEAVY', sorted(m for m in"
             " ('torch', 'gradio', 'diffusers') if m in sys.modules), code, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"})
    assert "HEAVY [] 0" in done.stderr, done.stderr[-2000:]
    assert "--share" in done.stdout and "127.0.0.1" in done.stdout


def test_p2p_ui_without_the_ui_extra_says_how_to_install_it():
    probe = ("import runpy, sys\nsys.modules['gradio'] = None  # as if not installed\nsys.argv = ['p2p', 'ui']\n"
             "runpy.run_module('p2p_cli', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "p2p ui needs the ui extra: pip install 'p2p-cli[ui]'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("model", ["shapes", "shapes-mmdit"])
def test_a_picture_given_moves_the_windows_to_the_models_own_for_real_pictures(served, model):
    """Uploading a picture sets the cross and self sliders and the inversion to what an `image:` recipe that names
    none gets on this model (its folder's p2p-defaults.json), so the page's edit is the CLI's default edit;
    clearing it puts the generated pictures' windows back."""
    from p2p_cli.family_defaults import FAMILY_DEFAULTS, with_family_defaults
    from p2p_cli.recipe import parse_recipe
    from p2p_cli.checks import model_geometry

    blocks, _ = served
    image = next(b for b in blocks.blocks.values() if type(b).__name__ == "ImageEditor")
    handlers = {event: fn.fn for fn in blocks.fns.values() for target, event in fn.targets if target == image._id
                and event in ("upload", "clear")}
    picked = str(ROOT / "recipes" / "pictures" / "blue-circle.png")
    cross, self_window, inversion = handlers["upload"](model, {"background": picked, "layers": []})
    if model == "shapes":  # its real pictures' cross window (1.0) and inversion (ddpm) are not the generic ones
        assert (cross, self_window, inversion) != handlers["clear"](model, None)
    geometry = model_geometry(model)
    plain = parse_recipe({"source": "a big blue circle on the left on a white background", "image": picked,
                          "edits": [{"target": "a big red circle on the left on a white background"}]}, "r.yaml")
    cli = with_family_defaults(plain, FAMILY_DEFAULTS[geometry.family.name], geometry.defaults)
    page = Controls(prompt="a big [blue->red] circle on the left on a white background", model=model, cross=cross,
                    self_window=self_window, image=picked, inversion=inversion).recipe()
    page = with_family_defaults(page, FAMILY_DEFAULTS[geometry.family.name], geometry.defaults)
    for key in ("cross_replace", "self_replace", "self_replace_max_res", "self_blocks", "inversion_method",
                "edit_start"):
        assert getattr(page, key) == getattr(cli, key), key
