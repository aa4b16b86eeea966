"""Where a model comes from, resolved in one place and without torch: the bundled models' names, local folders,
single files and hub ids; the family a model's config files name; the hub's cache and reachability.

Loading (models.py), the torch-free checks (checks.py, `p2p validate`), the metrics' model folders and the CLI's
model cache all read a model's name through `resolve()`, so one model has one key wherever it is named."""

from __future__ import annotations

import json
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from p2p_cli.family_defaults import FAMILY_DEFAULTS

SHAPES = Path(__file__).resolve().parent / "shapes"
BUNDLED = {"shapes": SHAPES / "weights", "shapes-mmdit": SHAPES / "weights-mmdit"}  # name -> its folder
BUNDLED_PREFIX = "bundled:"  # run.json names a bundled model "bundled:shapes"; recipes say "shapes"

# diffusers' pipeline class (model_index.json's _class_name, or a pipeline object's class) -> the family that
# edits it (families/); a new family plugs in with one entry here
PIPELINES = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
    "QwenImagePipeline": "qwen-image",
    "Flux2KleinPipeline": "flux2-klein",
    "Flux2Pipeline": "flux2-dev",
    "ChromaPipeline": "chroma",
}
# the joint-attention families: folders read whole by their pipeline class (models.load_pipeline_folder)
TRANSFORMER_FAMILIES = tuple(name for name, family in FAMILY_DEFAULTS.items() if family.joint)

WEIGHT_FILES = {  # part -> (safetensors name, pickle name), as save_pretrained writes them
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "text_encoder": ("model.safetensors", "pytorch_model.bin"),
    "text_encoder_2": ("model.safetensors", "pytorch_model.bin"),  # SDXL, SD3, FLUX
    "transformer": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),  # SD3, FLUX
    "text_encoder_3": ("model.safetensors", "pytorch_model.bin"),  # SD3's T5 (may be absent)
}

SINGLE_FILE_KEYS = {  # a key only that family's single-file checkpoints hold (as diffusers tells them apart)
    "sdxl": "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias",
    "sd": "model.diffusion_model.output_blocks.11.0.skip_connection.weight",
}


@dataclass(frozen=True)
class Source:
    """A model's name resolved: kind is "bundled", "folder", "file", "hub" or "missing" (a path that is not
    there); key is its one name (the bundled model's short name, a resolved path, a hub id); path the folder or
    file (None for a hub id)."""

    kind: str
    key: str
    path: Path | None = None


def resolve(spec: str | None) -> Source:
    """What a model name means: None and "shapes" the bundled model, a path that exists a folder or a file,
    something shaped like owner/name a hub id, anything else a missing path."""
    name = "shapes" if spec is None else spec.removeprefix(BUNDLED_PREFIX)
    if name in BUNDLED:
        return Source("bundled", name, BUNDLED[name])
    path = Path(spec).expanduser()
    if path.exists():
        return Source("folder" if path.is_dir() else "file", str(path.resolve()), path)
    if spec.startswith(("/", ".", "~")) or spec.count("/") != 1:
        return Source("missing", spec, path)
    return Source("hub", spec)


def key(spec: str | None) -> str:
    """One name per model: "shapes" / "shapes-mmdit" for the bundled ones, a resolved path for local folders and
    files, else the name as given (a hub id)."""
    return resolve(spec).key


def config_folder(spec: str | None) -> Path | None:
    """The folder a model's config files are in: the bundled models' (the transformer model's holds no VAE: it is
    the UNet model's), a local folder (or the path given, when it is missing), or a hub id's snapshot in the local
    Hugging Face cache (never downloaded: checks run before anything loads; None when it is not cached)."""
    source = resolve(spec)
    if source.kind != "hub":
        return source.path
    try:
        return cached_snapshot(source.key, ["model_index.json"])
    except HubUnavailable:  # not cached (or no such id): the model is checked once it loads
        return None


def read_json(path: Path) -> dict | None:
    """A JSON file's object, None when it is absent or unreadable."""
    from p2p_cli.paths import read_regular_text  # a FIFO at a config's path would hang the reader

    try:
        data = json.loads(read_regular_text(path))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def folder_family(folder: Path) -> str | None:
    """The family a diffusers folder holds, from its config files: model_index.json's pipeline class, else its
    parts (transformer/ with guidance_embeds in its config is FLUX.1, without SD3; unet/ with text_encoder_2/ is
    SDXL, without SD 1.x/2.x); None when it holds no model this table knows."""
    index = read_json(folder / "model_index.json") or {}
    if index.get("_class_name") in PIPELINES:
        return PIPELINES[index["_class_name"]]
    if (folder / "transformer").is_dir():
        config = read_json(folder / "transformer" / "config.json")
        if config is None:
            return None
        return "flux" if "guidance_embeds" in config else "sd3"  # FluxTransformer2DModel's config has it
    if (folder / "unet").is_dir():
        return "sdxl" if (folder / "text_encoder_2").is_dir() else "sd"
    return None


class NotASingleFile(ValueError):
    """A single-file checkpoint this table cannot read (models.py turns it into a ModelLoadError)."""


def file_family(path: Path) -> str:
    """"sdxl" or "sd" from the tensor names of a single-file .safetensors checkpoint (read from its header)."""
    from safetensors import SafetensorError, safe_open

    if path.suffix != ".safetensors":
        raise NotASingleFile(f"{path}: only .safetensors single-file checkpoints are loaded (pickled files can run"
                             " code); or pass a folder saved by save_pretrained")
    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = set(f.keys())
    except (OSError, SafetensorError) as err:
        raise NotASingleFile(f"{path}: not a readable safetensors file ({err})") from None
    for family, name in SINGLE_FILE_KEYS.items():
        if name in keys:
            return family
    raise NotASingleFile(f"{path}: not a Stable Diffusion 1.x/2.x or SDXL single-file checkpoint (none of the"
                         " tensor names those hold)")


def unsafe_weights(folder: Path, allow_pickle: bool) -> str | None:
    """The problem with a folder's weight files, if any: every network's weights in safetensors (pickle files only
    with allow_pickle: they can run code)."""
    for part, (safe, pickled) in WEIGHT_FILES.items():
        sub = folder / part
        if not sub.is_dir():
            continue
        has_safe = (sub / safe).exists() or any(sub.glob(safe.replace(".safetensors", "-*.safetensors")))
        if not has_safe and not allow_pickle:
            hint = " (only pickle weights found; pass --allow-pickle if you trust them)" if (sub / pickled).exists() else ""
            return f"{sub}: no {safe}{hint}"
    return None


# --- the hub --------------------------------------------------------------------------------------------------

class HubUnavailable(RuntimeError):
    """A hub snapshot that cannot be had; offline: it was looked for in the local cache only, `how` says why."""

    def __init__(self, err: BaseException, offline: bool, how: str):
        self.err, self.offline, self.how = err, offline, how
        super().__init__(str(err))


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub endpoint, so an offline machine fails in seconds, not minutes of retries."""
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # name resolution ignores socket timeouts
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def hub_snapshot(repo_id: str, patterns: list[str]) -> Path:
    """The local snapshot folder of a hub model's files matching `patterns`: downloaded when the hub is reachable,
    else from the local cache only; HubUnavailable says which and why."""
    from huggingface_hub import snapshot_download

    forced = env_flag("HF_HUB_OFFLINE")
    offline = forced or not hub_reachable()
    how = "HF_HUB_OFFLINE is set" if forced else "the hub is unreachable from this machine" if offline else ""
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=offline, etag_timeout=5))
    except Exception as err:  # noqa: BLE001 - the hub raises many kinds: connection, not found, gated, ...
        raise HubUnavailable(err, offline, how) from err


def cached_snapshot(repo_id: str, patterns: list[str]) -> Path:
    """A hub model's snapshot folder from the local cache, never downloaded (HubUnavailable when not cached)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=patterns))
    except Exception as err:  # noqa: BLE001
        raise HubUnavailable(err, True, "only the local cache is read") from err
