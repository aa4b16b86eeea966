"""The bundled transformer shapes model (`model: shapes-mmdit`): what is shipped and how it becomes a pipeline.

`python -m lab.shapes.train_mmdit` writes a whole StableDiffusion3Pipeline folder (38.5 MB of safetensors).
Its VAE and its two CLIP text encoders are the bundled UNet model's, frozen, so the package ships only what is
new: `weights-mmdit/` holds model_index.json, scheduler/ and transformer/ (9 MB), and loading passes the shared
parts, rebuilt from `weights/` exactly as training built them (`models.shapes_mmdit_parts`), to the same
StableDiffusion3Pipeline.from_pretrained that reads a hub SD3 folder.

    python -m lab.shapes.mmdit_bundle CHECKPOINT   # replace weights-mmdit/ with a trained checkpoint's parts
    python -m lab.shapes.mmdit_bundle --unpack DIR  # the shipped model as a whole folder train_mmdit --resume reads
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

from p2p_cli.family_defaults import DEFAULTS_FILE
from p2p_cli.models import bundle_mmdit_weights, bundled_weights, shapes_mmdit_parts

SHIPPED = ("model_index.json", "scheduler", "transformer")


def export(checkpoint: Path, out: Path | None = None) -> Path:
    """Copy a train_mmdit checkpoint's own parts (SHIPPED) into out (default: the bundle folder), replacing it
    whole but for its p2p-defaults.json; refuse a checkpoint whose VAE or text encoder is not the bundled UNet model's."""
    from safetensors.torch import load_file

    out = out or bundle_mmdit_weights()
    shared = shapes_mmdit_parts(bundled_weights())
    for part, module in (("vae", shared["vae"]), ("text_encoder", shared["text_encoder"]),
                         ("text_encoder_2", shared["text_encoder_2"])):
        files = sorted((checkpoint / part).glob("*.safetensors"))
        saved = {k: v for f in files for k, v in load_file(f).items()}
        own = module.state_dict()
        if not saved or any(k not in own or not torch.equal(own[k], v) for k, v in saved.items()):
            raise SystemExit(f"{checkpoint / part}: not the bundled UNet model's part; the bundle would differ from"
                             " the checkpoint")
    index = json.loads((checkpoint / "model_index.json").read_text())
    if index.get("_class_name") != "StableDiffusion3Pipeline":
        raise SystemExit(f"{checkpoint}: not a StableDiffusion3Pipeline folder")
    tmp = Path(tempfile.mkdtemp(prefix=".weights-mmdit-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the package folder is read by whoever installs it
    try:
        for name in SHIPPED:
            src = checkpoint / name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp / name)
        if (out / DEFAULTS_FILE).is_file():  # the bundle's real-picture defaults (docs/shapes.md) stay with it
            shutil.copy2(out / DEFAULTS_FILE, tmp / DEFAULTS_FILE)
            print(f"kept {DEFAULTS_FILE}: it was measured on the previous weights; measure it again (docs/shapes.md,"
                  " \"Real pictures at the default inversion\")")
        old = out.with_name(out.name + ".old")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def unpack(out: Path, bundle: Path | None = None) -> Path:
    """Write the bundled model (or bundle, a folder export wrote) as the whole StableDiffusion3Pipeline folder
    train_mmdit writes: its transformer and scheduler with the shared parts rebuilt from the UNet model, so that
    `train_mmdit --resume out` continues from the shipped weights."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    from .train_mmdit import save

    bundle = bundle or bundle_mmdit_weights()
    shared = shapes_mmdit_parts(bundled_weights())
    transformer = SD3Transformer2DModel.from_pretrained(bundle / "transformer")
    shift = FlowMatchEulerDiscreteScheduler.from_pretrained(bundle / "scheduler").config.shift
    save(out, transformer, shared["vae"], shared["text_encoder"], shared["tokenizer"], shift)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Replace the bundled transformer shapes model with a checkpoint's parts.")
    ap.add_argument("checkpoint", type=Path, nargs="?", help="a folder train_mmdit wrote")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--unpack", type=Path, default=None, metavar="DIR",
                    help="instead: write the bundled model as a whole folder (train_mmdit --resume DIR)")
    args = ap.parse_args(argv)
    if (args.checkpoint is None) == (args.unpack is None):
        ap.error("give a checkpoint to export or --unpack DIR")
    print(unpack(args.unpack) if args.unpack else export(args.checkpoint, args.out))


if __name__ == "__main__":
    main()
