"""Model components: the Model bundle every stage uses; loading from hub ids, local folders, the bundled model."""

from __future__ import annotations

import os
import socket
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from p2p_cli.checks import BUNDLED_MMDIT
from p2p_cli.model_spec import ModelSpec, from_configs


@dataclass
class Model:
    """The parts of a text-to-image model the engine needs, on one device and dtype."""

    unet: Any = None  # diffusers UNet2DConditionModel (SD, SDXL); None for transformer families
    vae: Any = None  # diffusers AutoencoderKL
    text_encoder: Any = None  # transformers CLIPTextModel (SD3: CLIPTextModelWithProjection)
    tokenizer: Any = None  # transformers CLIPTokenizer
    scheduler: Any = None  # diffusers DDIMScheduler, or FlowMatchEulerDiscreteScheduler (only its config is used)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    id: str = "components"  # hub id, local path or "bundled:shapes"
    revision: str | None = None  # hub commit, when known
    path: str | None = None  # the folder the weights were read from, when loaded from disk
    text_encoder_2: Any = None  # SDXL, SD3: CLIPTextModelWithProjection; FLUX: T5EncoderModel
    tokenizer_2: Any = None  # its tokenizer (SDXL, SD3: the same BPE, "!" as padding; FLUX: T5's)
    transformer: Any = None  # SD3Transformer2DModel or FluxTransformer2DModel
    text_encoder_3: Any = None  # SD3: T5EncoderModel (may be absent: zeros)
    tokenizer_3: Any = None  # SD3: T5's tokenizer
    options: dict = field(default_factory=dict)  # pipeline settings from model_index.json (force_zeros_for_empty_prompt)
    family: Any = None  # families.Family, detected from the components when None
    loras: list = field(default_factory=list)  # LoRA weights loaded into the networks: [{path, scale, sha256}]

    def __post_init__(self) -> None:
        if self.family is None:
            from p2p_cli.families import detect

            self.family = detect(self.parts())

    def parts(self) -> dict[str, Any]:
        """The components by their diffusers names (text_encoder_2 and tokenizer_2 only when present)."""
        names = ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "text_encoder_2", "tokenizer_2",
                 "transformer", "text_encoder_3", "tokenizer_3")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def networks(self) -> list[Any]:
        """The torch modules: the denoiser, VAE and every text encoder."""
        return [n for n in (self.unet, self.transformer, self.vae, self.text_encoder, self.text_encoder_2,
                            self.text_encoder_3) if n is not None]

    @property
    def denoiser(self) -> Any:
        """The network that denoises: the UNet, or the transformer of SD3 / FLUX."""
        return self.unet if self.unet is not None else self.transformer

    @property
    def vae_scale(self) -> int:
        """Pixels per latent cell (8 for SD)."""
        return self.family.vae_scale(self)

    @property
    def latent_channels(self) -> int:
        """Channels of the (unpacked) latent (4 for SD and SDXL, 16 for SD3 and FLUX)."""
        return self.family.latent_channels(self)

    @property
    def native_size(self) -> tuple[int, int]:
        """The (height, width) in pixels the denoiser was trained at."""
        side = self.family.native_side(self)
        return side * self.vae_scale, side * self.vae_scale

    @property
    def spec(self) -> ModelSpec:
        """What recipes are checked against (checks.model_problems): read from the components' configs, with the
        tokenizers of the text the denoiser reads and the family's check of a prompt."""
        family = self.family
        return from_configs(family.name, dict(self.vae.config),
                            unet=dict(self.unet.config) if self.unet is not None else None,
                            transformer=dict(self.transformer.config) if self.transformer is not None else None,
                            id=self.id, text_parts=tuple(family.text_parts(self)),
                            prompt_check=lambda prompt: family.check_prompt(self, prompt))

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Model:
        """Move every network to device/dtype (in place) and return self."""
        self.device, self.dtype = torch.device(device), dtype
        for net in self.networks():
            want = self.family.vae_dtype(dtype, net.config) if net is self.vae else dtype
            net.to(self.device)
            if net.dtype != want:
                net.to(want)
        return self

    @property
    def vae_dtype(self) -> torch.dtype:
        """The dtype the VAE runs in (SDXL keeps it in float32 under fp16, as diffusers upcasts it)."""
        return self.vae.dtype


def from_components(parts: dict, id: str = "components", device: str = "cpu", dtype=torch.float32) -> Model:
    """A Model from a dict of diffusers/transformers parts (as arch.tiny_components() returns); the family
    (SD or SDXL) is detected from the parts."""
    return Model(**parts, id=id).to(device, dtype)


# --- loading -------------------------------------------------------------------------------------------

BUNDLED_NAMES = ("shapes", "bundled:shapes")  # `--model shapes` (or none) means the bundled model; run.json says bundled:shapes
PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_WEIGHTS = {  # part -> (safetensors name, pickle name), as save_pretrained writes them
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "text_encoder": ("model.safetensors", "pytorch_model.bin"),
    "text_encoder_2": ("model.safetensors", "pytorch_model.bin"),  # SDXL, SD3, FLUX
    "transformer": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),  # SD3, FLUX
    "text_encoder_3": ("model.safetensors", "pytorch_model.bin"),  # SD3's T5 (may be absent)
}
OPTIONAL_PARTS = ("text_encoder_2", "tokenizer_2", "transformer", "text_encoder_3")  # not every family has them


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; the message says what to do about it."""


def bundled_weights() -> Path:
    """Where the bundled shapes model lives (written by the shapes training command)."""
    return Path(__file__).resolve().parent / "shapes" / "weights"


def bundle_mmdit_weights() -> Path:
    """Where the bundled transformer shapes model lives: its own parts only (lab/shapes/mmdit_bundle.py exports them)."""
    return Path(__file__).resolve().parent / "shapes" / "weights-mmdit"


def shapes_mmdit_parts(unet_folder: Path, dtype: torch.dtype = torch.float32) -> dict:
    """The parts the transformer shapes model shares with the bundled UNet model, as its training builds them: the
    VAE with shift_factor 0 (SD3's pipeline subtracts one) and the CLIP text encoder with a projection that is the
    identity (it only makes the pooled embedding), as both text encoders, with its tokenizer."""
    import transformers
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    transformers.utils.logging.set_verbosity_error()  # it would report the new projection as missing
    transformers.utils.logging.disable_progress_bar()
    vae = AutoencoderKL.from_pretrained(unet_folder / "vae", torch_dtype=dtype)
    vae.register_to_config(shift_factor=0.0)
    text = CLIPTextModelWithProjection.from_pretrained(unet_folder / "text_encoder", dtype=dtype)
    with torch.no_grad():  # the pooled output is the pooled hidden state itself
        n = min(text.text_projection.weight.shape)
        text.text_projection.weight.zero_()
        text.text_projection.weight[:n, :n] = torch.eye(n)
    text = text.requires_grad_(False).eval()
    tokenizer = CLIPTokenizer.from_pretrained(unet_folder / "tokenizer")
    return dict(vae=vae.requires_grad_(False).eval(), text_encoder=text, text_encoder_2=text, tokenizer=tokenizer,
                tokenizer_2=tokenizer)


def pick_device(device: str = "auto") -> torch.device:
    """auto: cuda if available, else mps, else cpu; an explicit device must be usable here."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise ModelLoadError(f"unknown device {device!r}: use auto, cpu, cuda or mps")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError("CUDA is not available on this machine: use --device cpu (or auto)")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("MPS is not available on this machine: use --device cpu (or auto)")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """auto: fp16 on cuda, fp32 elsewhere; fp16/bf16/fp32 as asked."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}: use auto, fp32, fp16 or bf16")
    return DTYPES[dtype]


def load_model(spec: str | None, device: str = "auto", dtype: str = "auto", allow_pickle: bool = False) -> Model:
    """A Model from a hub id, a local save_pretrained folder or the bundled model (spec None or "shapes")."""
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    if spec is None or spec in BUNDLED_NAMES:
        folder = bundled_weights()
        if not all((folder / part).is_dir() for part in PARTS):
            raise ModelLoadError(
                f"the bundled shapes model is not installed (no model in {folder}); train it first, or pass"
                " --model with a local folder saved by diffusers' save_pretrained or a hub id"
            )
        model = load_folder(folder, allow_pickle, dt, id="bundled:shapes")
    elif spec in BUNDLED_MMDIT:  # `--model shapes-mmdit`: the bundled transformer (SD3-layout) shapes model
        folder = bundle_mmdit_weights()
        if not (folder / "transformer").is_dir() or not all((bundled_weights() / p).is_dir() for p in PARTS):
            raise ModelLoadError(f"the bundled transformer shapes model is not installed (no model in {folder}); see"
                                 " DEVELOPERS.md, 'The wide world and the transformer shapes model'")
        model = load_transformer_folder(folder, allow_pickle, dt, id="bundled:shapes-mmdit",
                                        parts=shapes_mmdit_parts(bundled_weights(), dt))
    elif (path := Path(spec).expanduser()).exists():
        if path.is_dir():
            model = load_folder(path, allow_pickle, dt, id=str(path.resolve()))
        else:
            model = load_single_file(path, dt)
    elif spec.startswith(("/", ".", "~")) or spec.count("/") != 1:
        raise ModelLoadError(
            f"no model folder at {spec}; --model takes a local folder saved by diffusers (unet/ or transformer/,"
            " vae/, text encoders, tokenizers, scheduler/) or a hub id such as CompVis/stable-diffusion-v1-4"
        )
    else:
        folder, revision = _hub_snapshot(spec, allow_pickle)
        model = load_folder(folder, allow_pickle, dt, id=spec)
        model.revision = revision
    return model.to(dev, dt)


def load_folder(
    folder: Path, allow_pickle: bool = False, dtype: torch.dtype = torch.float32, id: str | None = None
) -> Model:
    """Each part with its class's from_pretrained (on the CPU); the scheduler as DDIM with the SD settings it lacks."""
    import diffusers
    import transformers
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from p2p_cli.families.sd import SD_SCHEDULER
    from p2p_cli.families import detect

    for lib in (diffusers, transformers):  # their loading bars and advice would drown our stderr
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()

    folder = Path(folder)
    if (folder / "transformer").is_dir():
        return load_transformer_folder(folder, allow_pickle, dtype, id)
    missing = [p for p in PARTS if not (folder / p).is_dir()]
    if missing:
        raise ModelLoadError(
            f"{folder} is not a diffusers model folder: missing {', '.join(p + '/' for p in missing)}"
            " (save one with pipeline.save_pretrained, or pass a hub id)"
        )
    xl = (folder / "text_encoder_2").is_dir()
    if xl and not (folder / "tokenizer_2").is_dir():
        raise ModelLoadError(f"{folder} has text_encoder_2/ but no tokenizer_2/: an SDXL folder needs both")
    for part, (safe, pickled) in _WEIGHTS.items():
        sub = folder / part
        if part in OPTIONAL_PARTS and not sub.is_dir():
            continue
        has_safe = (sub / safe).exists() or any(sub.glob(safe.replace(".safetensors", "-*.safetensors")))
        if not has_safe and not allow_pickle:
            hint = " (only pickle weights found; pass --allow-pickle if you trust them)" if (sub / pickled).exists() else ""
            raise ModelLoadError(f"{sub}: no {safe}{hint}")
    use_safe = None if allow_pickle else True
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", use_safetensors=use_safe, torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", use_safetensors=use_safe, torch_dtype=dtype)
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", use_safetensors=use_safe, dtype=dtype)
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
        config = DDIMScheduler.load_config(folder, subfolder="scheduler")
        extra = {}
        if xl:
            extra["text_encoder_2"] = CLIPTextModelWithProjection.from_pretrained(
                folder / "text_encoder_2", use_safetensors=use_safe, dtype=dtype).eval()
            extra["tokenizer_2"] = CLIPTokenizer.from_pretrained(folder / "tokenizer_2")
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"cannot load the model in {folder}: {err}") from err
    scheduler = DDIMScheduler.from_config({**SD_SCHEDULER, **config})  # the model's own settings win
    parts = dict(unet=unet.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer,
                 scheduler=scheduler, **extra)
    try:
        family = detect(parts)
    except ValueError as err:
        raise ModelLoadError(f"{folder}: {err}") from None
    return Model(**parts, family=family, options=_pipeline_options(folder), id=id or str(folder.resolve()),
                 path=str(folder.resolve()))


def _check_safe(folder: Path, allow_pickle: bool) -> None:
    """Every network's weights in safetensors (pickle files only with allow_pickle: they can run code)."""
    for part, (safe, pickled) in _WEIGHTS.items():
        sub = folder / part
        if not sub.is_dir():
            continue
        has_safe = (sub / safe).exists() or any(sub.glob(safe.replace(".safetensors", "-*.safetensors")))
        if not has_safe and not allow_pickle:
            hint = " (only pickle weights found; pass --allow-pickle if you trust them)" if (sub / pickled).exists() else ""
            raise ModelLoadError(f"{sub}: no {safe}{hint}")


def load_transformer_folder(folder: Path, allow_pickle: bool = False, dtype: torch.dtype = torch.float32,
                            id: str | None = None, parts: dict | None = None) -> Model:
    """An SD3 / SD3.5, FLUX.1, Qwen-Image or FLUX.2 klein folder (transformer/, vae/, text encoders, tokenizers,
    scheduler/), read by the
    family's diffusers pipeline class as it reads a hub snapshot; parts: components given instead of read from
    the folder (the bundled transformer shapes model shares its VAE and text encoders with the UNet model)."""
    import json

    import diffusers
    import transformers
    from diffusers import Flux2KleinPipeline, FluxPipeline, QwenImagePipeline, StableDiffusion3Pipeline

    for lib in (diffusers, transformers):
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()
    try:
        index = json.loads((folder / "model_index.json").read_text())
        name = index["_class_name"]
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"{folder}: a transformer model folder needs its model_index.json ({err})") from None
    pipelines = {"StableDiffusion3Pipeline": StableDiffusion3Pipeline, "FluxPipeline": FluxPipeline,
                 "QwenImagePipeline": QwenImagePipeline, "Flux2KleinPipeline": Flux2KleinPipeline}
    if name not in pipelines:
        raise ModelLoadError(f"{folder}: a {name} model; p2p edits SD 1.x/2.x, SDXL, SD3, FLUX.1, Qwen-Image and"
                             " FLUX.2 klein (text-to-image)")
    _check_safe(folder, allow_pickle)
    try:
        with warnings.catch_warnings():  # newer diffusers rename torch_dtype; older ones know only it
            warnings.simplefilter("ignore", FutureWarning)
            # parts the folder leaves out ([null, null] in model_index.json, as SD3 without T5 is saved) are
            # passed as None: diffusers does not read them as absent by itself
            absent = {k: None for k, v in index.items() if v == [None, None]}
            pipe = pipelines[name].from_pretrained(folder, torch_dtype=dtype,
                                                   use_safetensors=None if allow_pickle else True,
                                                   **{**absent, **(parts or {})})
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"cannot load the model in {folder}: {err}") from err
    keep = ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3",
            "tokenizer_3", "scheduler")
    parts = {k: (v.eval() if hasattr(v, "eval") else v) for k, v in pipe.components.items() if k in keep and v is not None}
    return Model(**parts, options=_pipeline_options(folder), id=id or str(folder.resolve()), path=str(folder.resolve()))


SINGLE_FILE_KEYS = {  # a key only that family's single-file checkpoints hold (as diffusers tells them apart)
    "sdxl": "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias",
    "sd": "model.diffusion_model.output_blocks.11.0.skip_connection.weight",
}


def single_file_family(path: Path) -> str:
    """"sdxl" or "sd" from the tensor names of a single-file .safetensors checkpoint (read from its header)."""
    from safetensors import SafetensorError, safe_open

    if path.suffix != ".safetensors":
        raise ModelLoadError(f"{path}: only .safetensors single-file checkpoints are loaded (pickled files can run"
                             " code); or pass a folder saved by save_pretrained")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
    except (OSError, SafetensorError) as err:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({err})") from None
    for family, key in SINGLE_FILE_KEYS.items():
        if key in keys:
            return family
    raise ModelLoadError(f"{path}: not a Stable Diffusion 1.x/2.x or SDXL single-file checkpoint (none of the"
                         " tensor names those hold)")


def load_single_file(path: Path, dtype: torch.dtype = torch.float32) -> Model:
    """A single-file checkpoint (.safetensors, as CivitAI and the original repositories ship them), read with
    diffusers' from_single_file. diffusers takes the model's configuration from the hub (or its cache)."""
    import diffusers
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    from p2p_cli.families.sd import SD_SCHEDULER

    family = single_file_family(path)
    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    offline = _env_flag("HF_HUB_OFFLINE") or not _hub_reachable()
    try:
        pipe = cls.from_single_file(str(path), torch_dtype=dtype, local_files_only=offline)
    except Exception as err:  # diffusers raises many kinds (missing config, connection, bad keys)
        why = " (the hub is unreachable and its configuration is not cached)" if offline else ""
        raise ModelLoadError(
            f"cannot read the single-file checkpoint {path}{why}: {err}. diffusers needs the model's configuration"
            " files from the hub once; or convert it on a connected machine with"
            f" {cls.__name__}.from_single_file(...).save_pretrained(folder) and pass the folder"
        ) from None
    parts = {k: v for k, v in pipe.components.items()
             if k in ("unet", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")}
    scheduler = DDIMScheduler.from_config({**SD_SCHEDULER, **pipe.scheduler.config})
    options = {"force_zeros_for_empty_prompt": pipe.config.get("force_zeros_for_empty_prompt", True)} if family == "sdxl" else {}
    return Model(**{k: (v.eval() if hasattr(v, "eval") else v) for k, v in parts.items()}, scheduler=scheduler,
                 options=options, id=str(path.resolve()), path=str(path.resolve()))


def _pipeline_options(folder: Path) -> dict:
    """The pipeline-level settings in model_index.json that change what the engine does."""
    import json

    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: index[k] for k in ("force_zeros_for_empty_prompt", "is_distilled") if k in index}


def _hub_snapshot(repo_id: str, allow_pickle: bool) -> tuple[Path, str | None]:
    """The local snapshot folder and commit of a hub model; from the cache only when offline."""
    from huggingface_hub import snapshot_download

    patterns = ["model_index.json", "tokenizer/*", "tokenizer_2/*", "tokenizer_3/*", "scheduler/*"]
    for part, (safe, pickled) in _WEIGHTS.items():
        stem = safe.removesuffix(".safetensors")
        patterns += [f"{part}/config.json", f"{part}/{safe}", f"{part}/{stem}-*.safetensors", f"{part}/{safe}.index.json"]
        if allow_pickle:
            patterns += [f"{part}/{pickled}"]
    env_offline = _env_flag("HF_HUB_OFFLINE")
    offline = env_offline or not _hub_reachable()
    try:
        folder = snapshot_download(repo_id, allow_patterns=patterns, local_files_only=offline, etag_timeout=5)
    except Exception as err:  # the hub raises many kinds: connection, not found, gated, ...
        if offline:
            how, fix = (
                ("HF_HUB_OFFLINE is set", "unset it to download the model") if env_offline
                else ("the hub is unreachable from this machine", "connect to the network")
            )
            raise ModelLoadError(
                f"{repo_id} is not in the local Hugging Face cache and {how}: {fix}, or pass --model with a"
                " local folder saved by diffusers' save_pretrained (pipeline.save_pretrained(folder))"
            ) from err
        raise ModelLoadError(f"cannot get {repo_id} from the hub: {err}. Check the id, or pass a local folder") from err
    folder = Path(folder)
    revision = folder.name if len(folder.name) == 40 else None  # snapshots/<commit hash>
    return folder, revision


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub endpoint, so an offline machine fails in seconds, not minutes of retries."""
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
