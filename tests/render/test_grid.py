"""render: PNG files from tensors, the labelled grid and its layout."""

from __future__ import annotations

import torch
from PIL import Image

from p2p_cli.render.grid import PAD, changed_positions, edit_tiles, make_grid
from p2p_cli.render.images import save_images, to_pil


def test_changed_positions():
    src = "A painting of a squirrel eating a burger"
    assert changed_positions(src, "A painting of a lion eating a burger") == {4}  # "lion"
    assert changed_positions("a photo of a house", "a photo of a house at fall") == {5, 6}  # "at", "fall"
    assert changed_positions(src, src) == set()


def test_to_pil_rounds_and_clamps():
    image = torch.zeros(3, 2, 4)
    image[0] = 1.5  # clamped to 255
    picture = to_pil(image)
    assert picture.size == (4, 2) and picture.getpixel((0, 0)) == (255, 0, 0)


def test_save_images_and_masks(tmp_path):
    files = save_images(tmp_path, ["source", "edit-1"], torch.rand(2, 3, 16, 24), {1: torch.ones(16, 24)})
    assert files == {"source": "source.png", "edit-1": "edit-1.png", "edit-1-mask": "edit-1-mask.png",
                     "edit-1-mask-over": "edit-1-mask-over.png"}
    assert Image.open(tmp_path / "edit-1.png").size == (24, 16)
    assert Image.open(tmp_path / "edit-1-mask.png").getpixel((0, 0)) == 255


def test_grid_layout_baselines_under_their_edits():
    prompts = ["a smiling bunny doll", "a smiling bunny doll", "a sad bunny doll", "a sad bunny doll"]
    roles = ["source", "edit-1", "edit-2", "baseline-2"]
    tiles = edit_tiles(torch.rand(4, 3, 32, 48), prompts, roles, {1: "reweight", 2: "replace"}, {1: {"smiling": 5}})
    assert [(t.row, t.col) for t in tiles] == [(0, 0), (0, 1), (0, 2), (1, 2)]
    assert tiles[1].marked == {1} and tiles[1].title == "edit-1 · reweight · smiling x5"  # word 1: "smiling"
    assert tiles[2].marked == {1} and tiles[3].marked == {1}  # "sad"
    grid = make_grid(tiles)  # 32 px high: scaled up 4x (nearest) to MIN_TILE, so labels fit
    assert grid.width == 3 * (4 * 48 + PAD) + PAD
    assert grid.height > 2 * (4 * 32 + PAD)
    assert grid.getpixel((PAD + 2 * (4 * 48 + PAD), 0)) == (255, 255, 255)  # background between images


def test_small_pictures_are_scaled_up_nearest_and_titles_wrap_rather_than_cut():
    from p2p_cli.render.grid import MIN_TILE, Tile

    image = torch.zeros(3, 64, 64)
    image[:, :32] = 1.0  # top half white
    grid = make_grid([Tile(image, "edit-1 · reweight · smiling x5 · small x-1 · big x3", "a big smiling doll")])
    assert grid.width == MIN_TILE + 2 * PAD
    assert grid.getpixel((PAD, PAD + 63)) == (255, 255, 255) and grid.getpixel((PAD, PAD + 64)) == (0, 0, 0)
    one_line = make_grid([Tile(image, "edit-1", "a big smiling doll")])
    assert grid.height > one_line.height  # the long title took more lines: nothing cut


def test_grid_shows_the_input_and_the_blend_masks():
    prompts = ["a red cat", "a blue cat", "a green cat", "a blue cat"]
    roles = ["source", "edit-1", "edit-2", "baseline-1"]
    tiles = edit_tiles(torch.rand(4, 3, 16, 16), prompts, roles, {1: "replace", 2: "replace"}, {},
                       masks={2: torch.ones(16, 16)}, picture=torch.rand(3, 16, 16))
    assert [(t.title.split(" · ")[0], t.row, t.col) for t in tiles] == [
        ("input", 0, 0), ("source", 0, 1), ("edit-1", 0, 2), ("edit-2", 0, 3), ("baseline-1", 1, 2),
        ("edit-2", 2, 3)]
    assert tiles[-1].title == "edit-2 · blend mask" and tiles[-1].image.shape == (3, 16, 16)
    assert tiles[3].title == "edit-2 · replace · local blend" and tiles[2].title == "edit-1 · replace"


def test_only_the_added_occurrence_of_a_repeated_word_is_marked():
    from p2p_cli.render.grid import _spans, changed_positions

    src, tgt = "a small yellow triangle at the top", "a small yellow triangle at the top on a black background"
    spans = _spans(tgt, changed_positions(src, tgt))
    assert [w for w, m in spans if m] == ["on", "a", "black", "background"]
    assert spans[0] == ("a", False)


def test_blend_mask_files_are_smooth_at_picture_size_and_laid_over_the_edit(tmp_path):
    import numpy as np

    from p2p_cli.render.images import DIM, block_size, smooth_mask

    low = torch.zeros(4, 4)
    low[1:3, 1:3] = 1.0  # the mask as applied, on a 4x4 latent
    blocky = low.repeat_interleave(8, 0).repeat_interleave(8, 1)  # (32, 32), as run_edit gives it (nearest)
    assert block_size(blocky) == 8
    images = torch.rand(2, 3, 32, 32)
    files = save_images(tmp_path, ["source", "edit-1"], images, {1: blocky}, latent_hw=(4, 4))
    assert files["edit-1-mask-over"] == "edit-1-mask-over.png"
    saved = np.asarray(Image.open(tmp_path / "edit-1-mask.png"), dtype=np.float32) / 255
    assert saved.shape == (32, 32)
    assert len(np.unique(saved)) > 8  # smooth edges, not two values in 8x8 blocks
    assert saved[16, 16] == 1.0 and saved[0, 0] == 0.0  # inside and outside as applied
    assert 0.2 < saved[8, 16] < 0.8  # the edge is a ramp
    assert torch.equal(smooth_mask(blocky), smooth_mask(blocky, (4, 4)))  # the grid found from the blocks
    over = np.asarray(Image.open(tmp_path / "edit-1-mask-over.png"), dtype=np.float32) / 255
    edit = images[1].permute(1, 2, 0).numpy()
    keep = smooth_mask(blocky, (4, 4)).numpy()[..., None]
    assert np.abs(over - edit * (keep + (1 - keep) * DIM)).max() <= 1 / 255 + 1e-6


def test_a_mask_that_is_not_blocky_is_saved_as_it_is():
    from p2p_cli.render.images import smooth_mask

    soft = torch.linspace(0, 1, 32)[None].expand(32, -1).contiguous()  # a recipe's own mask, already smooth
    assert torch.equal(smooth_mask(soft, (4, 4)), soft) and torch.equal(smooth_mask(soft), soft)
