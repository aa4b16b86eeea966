"""shapes.average: the weighted mean of two checkpoints, refused when they are not the same architecture."""

import json

import pytest
import torch
from safetensors.torch import load_file

from p2p_cli.models import load_model
from lab.shapes.average import average, main

WEIGHTS = ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
           "vae/diffusion_pytorch_model.safetensors")


@pytest.fixture(scope="module")
def pair(tmp_path_factory, save_tiny_model):
    root = tmp_path_factory.mktemp("soup")
    return save_tiny_model(root / "a", 0), save_tiny_model(root / "b", 1)


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_every_tensor_is_the_weighted_mean(pair, tmp_path, weight):
    a, b = pair
    out = tmp_path / "mixed"
    assert sorted(average(a, b, weight, out)) == sorted(WEIGHTS)
    for rel in WEIGHTS:
        ta, tb, tm = load_file(a / rel), load_file(b / rel), load_file(out / rel)
        assert tm.keys() == ta.keys()
        for k, x in tm.items():
            if not x.is_floating_point():
                assert torch.equal(x, ta[k])
            elif weight in (0.0, 1.0):  # exactly one side, bit for bit
                assert torch.equal(x, (ta if weight == 0.0 else tb)[k]), k
            else:
                torch.testing.assert_close(x, 0.7 * ta[k] + 0.3 * tb[k])
    assert (out / "unet/config.json").read_text() == (a / "unet/config.json").read_text()


def test_the_mix_loads_and_samples_like_any_model(pair, tmp_path):
    from p2p_cli.engine.pipeline import generate

    out = tmp_path / "mixed"
    average(*pair, 0.5, out)
    model = load_model(str(out), device="cpu", dtype="fp32")
    images = generate(model, ["a red circle"], [0], steps=2, guidance=1.0)
    assert images.shape[0] == 1 and torch.isfinite(images).all()


@pytest.mark.parametrize("change", ["unet", "scheduler"])
def test_different_settings_are_refused_and_nothing_is_written(pair, tmp_path, capsys, change, save_tiny_model):
    a, _ = pair
    other = save_tiny_model(tmp_path / "other", 0)
    rel = "unet/config.json" if change == "unet" else "scheduler/scheduler_config.json"
    cfg = json.loads((other / rel).read_text())
    if change == "unet":
        cfg["norm_num_groups"] = 1  # another architecture, with the same tensor names and shapes
    else:
        cfg["prediction_type"] = "v_prediction"
    (other / rel).write_text(json.dumps(cfg))
    out = tmp_path / "bad"
    with pytest.raises(SystemExit) as e:
        main([str(a), str(other), "--weight", "0.5", "--out", str(out)])
    assert e.value.code == 2
    assert f"{rel}: differs between" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "bad.tmp").exists()


def test_an_existing_output_is_kept_unless_overwrite(pair, tmp_path, capsys):
    out = tmp_path / "mixed"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        main([str(pair[0]), str(pair[1]), "--weight", "0.5", "--out", str(out)])
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    main([str(pair[0]), str(pair[1]), "--weight", "0.5", "--out", str(out), "--overwrite"])
    assert not (out / "keep.txt").exists() and (out / "unet").is_dir()
    with pytest.raises(SystemExit):
        main([str(pair[0]), str(pair[1]), "--weight", "1.5", "--out", str(tmp_path / "x")])
