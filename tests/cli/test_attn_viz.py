"""`p2p attn-viz` and `p2p edit --save-attention` end to end on the tiny saved model (CPU, 128 px, 2-3 steps)."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from p2p_cli.render.attention import DIM
from p2p_cli.render.grid import PAD


def pixels(path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)


def test_prompt_draws_tokens_components_words_and_maps(cli, tiny_model_dir, tmp_path):
    prompt = "a painting of a squirrel eating a lasagne"
    result = cli("attn-viz", "--prompt", prompt, "--model", tiny_model_dir, "--out", tmp_path, "--steps", 2,
                 "--words", "lasagne,squirrel", "--components", 4, "--res", 8, "--json")
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout)
    folder = tmp_path / "a-painting-of-a-squirrel-eating-a-lasagne"
    assert line["out"] == str(folder / "attention")
    assert sorted(p.name for p in folder.iterdir()) == ["attention"]  # attn-viz owns <name>/attention/ only
    drawn = sorted(p.name for p in (folder / "attention").iterdir())
    assert drawn == ["maps.npz", "run.json", "source-cross.png", "source-lasagne.png", "source-self.png",
                     "source-squirrel.png"]
    assert set(json.loads((folder / "attention" / "run.json").read_text())["attention"]) == {
        "source-cross", "source-self", "source-lasagne", "source-squirrel", "maps"}

    cross = Image.open(folder / "attention" / "source-cross.png")
    assert cross.width == 9 * (128 + PAD) + PAD  # nine tokens (lasagne is two), one row
    words = Image.open(folder / "attention" / "source-lasagne.png")
    assert words.width == 2 * (128 + PAD) + PAD and words.height > 128  # full size: heat and plain map
    assert Image.open(folder / "attention" / "source-self.png").width == 4 * (128 + PAD) + PAD
    for name in ("source-cross.png", "source-self.png", "source-lasagne.png"):
        assert pixels(folder / "attention" / name).std() > 0.05  # not blank

    maps = np.load(folder / "attention" / "maps.npz")
    assert maps["source"].shape == (11, 8, 8) and maps["source"].dtype == np.float32
    assert list(maps["source.tokens"])[:3] == ["<|startoftext|>", "a", "painting"]
    assert (maps["source"] > 0).all() and (maps["source"].sum(0) < 1).all()  # probabilities; padding holds the rest


def test_step_range_changes_the_saved_maps(cli, tiny_model_dir, tmp_path):
    saved = {}
    for rng in ("0:0.5", "0.5:1"):
        out = tmp_path / rng.replace(":", "-")
        result = cli("attn-viz", "--prompt", "a red cube", "--model", tiny_model_dir, "--out", out, "--steps", 2,
                     "--step-range", rng, "--components", 0, "--from", "down", "--from", "mid", "--quiet")
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in (out / "a-red-cube" / "attention").iterdir()) == ["maps.npz", "run.json",
                                                                                       "source-cross.png"]
        saved[rng] = np.load(out / "a-red-cube" / "attention" / "maps.npz")["source"]
    assert saved["0:0.5"].shape == (5, 16, 16)  # default side: latent side / 4 (4) is under 16: the latent's 16
    assert not np.allclose(saved["0:0.5"], saved["0.5:1"], atol=1e-4)


def test_edit_save_attention_draws_every_prompt_and_the_blend_mask(cli, write_recipe, tiny_model_dir, tmp_path):
    result = cli("edit", write_recipe(), "--model", tiny_model_dir, "--out", tmp_path, "--save-attention", "--quiet",
                 "--set", "edits.0.local_blend.subtract=[burger]",  # a random model's maps are flat: the subtracted
                 "--set", "edits.0.local_blend.subtract_threshold=0.9")  # word makes a mask that is not all ones
    assert result.exit_code == 0, result.output
    folder = tmp_path / "small"
    drawn = sorted(p.name for p in (folder / "attention").iterdir())
    pictures = [f"{k}-{kind}.png" for k in ("source", "edit-1", "edit-2") for kind in ("cross", "self")]
    assert drawn == sorted(pictures + ["edit-1-mask.png", "maps.npz"])
    edited, mask = pixels(folder / "edit-1.png"), pixels(folder / "edit-1-mask.png")[0]
    shown = pixels(folder / "attention" / "edit-1-mask.png")
    assert shown.shape == (3, 128, 128)
    assert 0 < mask.mean() < 1  # the blend kept some of the source
    expected = edited * (mask + (1 - mask) * DIM)
    assert (shown - expected).abs().max() <= 1.5 / 255


def test_bad_options_are_usage_errors(cli, tiny_model_dir, write_recipe, tmp_path):
    base = ("attn-viz", "--model", tiny_model_dir, "--out", tmp_path, "--steps", 2)
    cases = [
        ((), "give a RECIPE or --prompt"),
        (("--prompt", "a cat", write_recipe()), "not both"),
        (("--prompt", "a cat", "--step-range", "0.6:0.2"), "need 0 <= a < b <= 1"),
        (("--prompt", "a cat", "--step-range", "0.5:0.6"), "holds none of the 2 steps"),
        (("--prompt", "a cat", "--res", 3), "the sides are 4, 8, 16"),
        (("--prompt", "a cat", "--words", "dog"), "--words dog: in none of the prompts"),
    ]
    for args, message in cases:
        result = cli(*base, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
    assert not any(tmp_path.glob("a-cat*"))


def test_cross_pictures_have_a_colour_scale_and_a_grey_background(cli, tiny_model_dir, tmp_path):
    from p2p_cli.render.attention import JET

    result = cli("attn-viz", "--prompt", "a red cube", "--model", tiny_model_dir, "--out", tmp_path, "--steps", 2,
                 "--components", 0, "--background", "grey", "--words", "cube", "--quiet")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "a-red-cube" / "attention"
    for name in ("source-cross.png", "source-cube.png"):
        picture = pixels(folder / name)
        bottom = picture[:, -90:]  # the colour bar under the tiles (its legend wrapped under it): both ends of JET
        for end in (JET[0], JET[-1]):
            close = ((bottom - end[:, None, None]).abs().amax(0) < 0.02).sum()
            assert close >= 8, (name, end)
    assert json.loads((folder / "run.json").read_text())["seconds"]  # the run was recorded
    bad = cli("attn-viz", "--prompt", "a red cube", "--model", tiny_model_dir, "--out", tmp_path / "b",
              "--background", "sepia")
    assert bad.exit_code == 2
