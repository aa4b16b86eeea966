"""Model components: the Model bundle every stage uses; loading from hub ids, local folders, the bundled model."""

from __future__ import annotations

import logging
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import p2p_cli
from p2p_cli.family_defaults import FAMILY_DEFAULTS, read_folder_defaults
from p2p_cli.model_spec import ModelSpec, from_configs
from p2p_cli.loading import Loading
from p2p_cli.resolve import (BUNDLED, PIPELINES, TRANSFORMER_FAMILIES, WEIGHT_FILES, HubUnavailable, NotASingleFile,
                             env_flag, file_family, hub_reachable, hub_snapshot, resolve, unsafe_weights)

# torchao's CUDA kernels fail to load under a CPU build of torch, and diffusers warns about torchao versions it
# does not know: each says so on every import of diffusers once torchao is installed, though the weight-only
# quantization p2p uses works; those lines are kept out of p2p's output (errors still show)
for _name in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer"):
    logging.getLogger(_name).setLevel(logging.ERROR)


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
    loading: Loading = field(default_factory=Loading)  # how it was loaded: quantization per part, offload
    offload: Any = None  # the diffusers pipeline holding its offload hooks (placement.install_offload), if any
    defaults: Any = None  # family_defaults.FolderDefaults: its folder's p2p-defaults.json (real pictures), if any

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
                            prompt_check=lambda prompt: family.check_prompt(self, prompt),
                            unconditional=family.unconditional(self), defaults=self.defaults)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Model:
        """Move every network to device/dtype (in place) and return self."""
        self.device, self.dtype = torch.device(device), dtype
        for net in self.networks():
            want = self.family.vae_dtype(dtype, net.config) if net is self.vae else dtype
            net.to(self.device)
            if net.dtype != want and getattr(net, "hf_quantizer", None) is None:  # quantized: loaded in its dtype
                net.to(want)
        return self

    @property
    def vae_dtype(self) -> torch.dtype:
        """The dtype the VAE runs in (SDXL keeps it in float32 under fp16, as diffusers upcasts it)."""
        return self.vae.dtype


def family_pipeline(model: Model) -> Any:
    """The model's family's own diffusers pipeline (resolve.PIPELINES: StableDiffusionPipeline ...
    ChromaPipeline) around the model's components, nothing copied, with the options its folder gave
    (is_distilled, force_zeros_for_empty_prompt, FLUX.2 dev's system message); the parts a family lacks (safety
    checker, image encoder, SD3's T5 when left out) None. diffusers' LoRA loader runs on it (loras.py)."""
    import inspect

    import diffusers

    from p2p_cli.resolve import PIPELINES

    name = next(cls for cls, family in PIPELINES.items() if family == model.family.name)
    cls = getattr(diffusers, name)
    parts, options = model.parts(), dict(getattr(model, "options", None) or {})
    kwargs: dict[str, Any] = {}
    for param in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if param.name in parts:
            kwargs[param.name] = parts[param.name]
        elif param.name in options:
            kwargs[param.name] = options[param.name]
        elif param.name == "requires_safety_checker":
            kwargs[param.name] = False
        elif param.default is inspect.Parameter.empty:
            kwargs[param.name] = None
    pipe = cls(**kwargs)
    if isinstance(options.get("system_message"), str):
        pipe.system_message = options["system_message"]
    pipe.set_progress_bar_config(disable=True)
    return pipe


def from_components(parts: dict, id: str = "components", device: str = "cpu", dtype=torch.float32) -> Model:
    """A Model from a dict of diffusers/transformers parts (as arch.tiny_components() returns); the family
    (SD or SDXL) is detected from the parts."""
    return Model(**parts, id=id).to(device, dtype)


COMPONENTS = ("unet", "transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
              "text_encoder_3", "tokenizer_3", "scheduler")  # what a Model takes of a pipeline (the rest is ignored)


def pipeline_parts(pipe: Any) -> dict[str, Any]:
    """The components of a diffusers pipeline a Model holds, by name (extras such as a safety checker, a feature
    extractor or an image encoder left out, and parts the pipeline was built without)."""
    return {k: v for k, v in pipe.components.items() if k in COMPONENTS and v is not None}


# --- loading -------------------------------------------------------------------------------------------

PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; the message says what to do about it."""


def bundled_weights() -> Path:
    """Where the bundled shapes model lives (written by the shapes training command)."""
    return BUNDLED["shapes"]


def bundle_mmdit_weights() -> Path:
    """Where the bundled transformer shapes model lives: its own parts only (lab/shapes/mmdit_bundle.py exports them)."""
    return BUNDLED["shapes-mmdit"]


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


MAX_DEFAULT_THREADS = 4  # the small models this tool runs on a CPU gain little from more; more oversubscribe
# torch's own count, when torch was not imported before p2p (then nobody changed it since, in all likelihood)
_TORCH_DEFAULT_THREADS = None if p2p_cli.TORCH_BEFORE_P2P else torch.get_num_threads()
_chosen_threads: int | None = None  # the count p2p last set in this process


def default_threads(environ=os.environ) -> int | None:
    """The CPU thread count when none is asked for: None if the user set OMP_NUM_THREADS (torch reads it),
    else half the CPUs this process may run on (its affinity; at least 1, at most MAX_DEFAULT_THREADS).

    Half: on a 2-core machine one thread made `make demo` faster than two even when idle (15.9 s against 21.3 s
    with passive waiting, 2026-12-01), and it leaves the other core to whatever else runs."""
    if environ.get("OMP_NUM_THREADS", "").strip():
        return None
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(available // 2, MAX_DEFAULT_THREADS))


def user_set_threads() -> bool:
    """Whether someone other than p2p changed torch's thread count (torch.set_num_threads before a model loads).

    Known exactly when p2p imported torch first (torch's own count was read then); after a torch imported before
    p2p, a count torch would not pick itself (the CPUs, those this process may use, or half the CPUs: its physical
    cores with two threads each) is taken as the user's."""
    now = torch.get_num_threads()
    if _chosen_threads is not None:
        return now != _chosen_threads
    if _TORCH_DEFAULT_THREADS is not None:
        return now != _TORCH_DEFAULT_THREADS
    cpus = os.cpu_count() or 1
    return now not in {cpus, cpus // 2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus}


def use_threads(threads: int | None = None, environ=os.environ) -> int:
    """Set torch's CPU threads and return the number in use: `threads` if given, else default_threads() unless the
    user chose already (OMP_NUM_THREADS, torch.set_num_threads, or an earlier `threads=`).

    The CLI and the library both come here, so a notebook runs as fast as `p2p edit` (issue 27: 66 s for a first
    edit with torch's two spinning threads on a shared 2-core machine against 2.5 s with one passive thread)."""
    global _chosen_threads
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads={threads}: give 1 or more CPU threads")
        wanted = threads
    elif _chosen_threads is not None or user_set_threads():  # chosen already, by p2p or by the user
        return torch.get_num_threads()
    else:
        wanted = default_threads(environ)
    if wanted:
        torch.set_num_threads(wanted)
        _chosen_threads = torch.get_num_threads()
    return torch.get_num_threads()


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


_LOADING = threading.RLock()  # one load at a time in a process (load_model)


def load_model(spec: str | None, device: str = "auto", dtype: str = "auto", allow_pickle: bool = False,
               threads: int | None = None, loading: Loading | None = None) -> Model:
    """A Model from a hub id, a local save_pretrained folder or the bundled model (spec None or "shapes"); torch's
    CPU threads set first (use_threads: `threads`, else the CLI's default unless the user chose); loading:
    quantization per part and offload (loading.py), through diffusers' and transformers' own configs and hooks.

    One load at a time in a process: two threads loading at once (`p2p ui`'s warm-up beside a notebook's own
    load) failed, diffusers and transformers being half imported by the other thread, or their weights built on
    the meta device that the other thread's load had switched on for the whole process."""
    with _LOADING:
        return _load_model(spec, device, dtype, allow_pickle, threads, loading)


def _load_model(spec: str | None, device: str, dtype: str, allow_pickle: bool, threads: int | None,
                loading: Loading | None) -> Model:
    """load_model, in its lock."""
    from p2p_cli.placement import LoadingError, check_backend

    use_threads(threads)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    loading = loading or Loading()
    try:
        check_backend(loading, dev.type)
    except LoadingError as err:
        raise ModelLoadError(str(err)) from None
    source = resolve(spec)
    defaults = read_folder_defaults(source.path if source.kind in ("bundled", "folder") else None)  # before weights
    if not loading.plain and source.kind == "file":
        raise ModelLoadError(f"{spec}: quantize and offload apply to model folders and hub ids; a single-file"
                             " checkpoint loads as it is (save it as a folder with save_pretrained first)")
    if source.kind == "bundled" and source.key == "shapes":
        folder = bundled_weights()
        if not all((folder / part).is_dir() for part in PARTS):
            raise ModelLoadError(
                f"the bundled shapes model is not installed (no model in {folder}); train it first, or pass"
                " --model with a local folder saved by diffusers' save_pretrained or a hub id"
            )
        model = load_folder(folder, allow_pickle, dt, id="bundled:shapes", loading=loading)
    elif source.kind == "bundled":  # `--model shapes-mmdit`: the bundled transformer (SD3-layout) shapes model
        folder = bundle_mmdit_weights()
        if not (folder / "transformer").is_dir() or not all((bundled_weights() / p).is_dir() for p in PARTS):
            raise ModelLoadError(f"the bundled transformer shapes model is not installed (no model in {folder}); see"
                                 " DEVELOPERS.md, 'The wide world and the transformer shapes model'")
        model = load_pipeline_folder(folder, allow_pickle, dt, id="bundled:shapes-mmdit",
                                     parts=shapes_mmdit_parts(bundled_weights(), dt), loading=loading)
    elif source.kind == "folder":
        model = load_folder(source.path, allow_pickle, dt, id=source.key, loading=loading)
    elif source.kind == "file":
        _regular(source.path)
        model = load_single_file(source.path, dt)
    elif source.kind == "missing":
        raise ModelLoadError(
            f"no model folder at {spec}; --model takes a local folder saved by diffusers (unet/ or transformer/,"
            " vae/, text encoders, tokenizers, scheduler/) or a hub id such as CompVis/stable-diffusion-v1-4"
        )
    else:
        folder, revision = _hub_snapshot(spec, allow_pickle)
        model = load_folder(folder, allow_pickle, dt, id=spec, loading=loading)
        model.revision = revision
    model.defaults = defaults if source.kind != "hub" else read_folder_defaults(folder)
    if model.loading.offload == "none":
        return model.to(dev, dt)
    from p2p_cli.placement import install_offload

    model.to("cpu", dt)  # the weights stay on the CPU; the hooks move each part to the device when it runs
    model.device = dev
    model.offload = install_offload(model, model.loading.offload, dev)
    return model


def quantized_parts(loading: Loading, family: str, present: list[str]) -> Loading:
    """The settings with "denoiser" named as the family names it, each named part checked to be in the model."""
    denoiser = "transformer" if family in TRANSFORMER_FAMILIES else "unet"
    loading = loading.for_family(denoiser)
    for part, _ in loading.quantize:
        if part not in present:
            other = " (its denoiser is its transformer)" if part == "unet" else (
                " (its denoiser is its UNet)" if part == "transformer" else "")
            raise ModelLoadError(f"quantize.{part}: this {family} model has no {part}{other}; it has"
                                 f" {', '.join(present)}")
    return loading


def load_folder(
    folder: Path, allow_pickle: bool = False, dtype: torch.dtype = torch.float32, id: str | None = None,
    loading: Loading | None = None,
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

    from p2p_cli.placement import LoadingError, gguf_denoiser, part_kwargs

    folder = Path(folder)
    loading = loading or Loading()
    if (folder / "transformer").is_dir():
        return load_pipeline_folder(folder, allow_pickle, dtype, id, loading=loading)
    missing = [p for p in PARTS if not (folder / p).is_dir()]
    if missing:
        raise ModelLoadError(
            f"{folder} is not a diffusers model folder: missing {', '.join(p + '/' for p in missing)}"
            " (save one with pipeline.save_pretrained, or pass a hub id)"
        )
    xl = (folder / "text_encoder_2").is_dir()
    if xl and not (folder / "tokenizer_2").is_dir():
        raise ModelLoadError(f"{folder} has text_encoder_2/ but no tokenizer_2/: an SDXL folder needs both")
    _check_safe(folder, allow_pickle)
    use_safe = None if allow_pickle else True
    loading = quantized_parts(loading, "sdxl" if xl else "sd",
                              ["unet", "text_encoder"] + (["text_encoder_2"] if xl else []))
    gguf = loading.kind("unet") if (loading.kind("unet") or "").endswith(".gguf") else None
    try:
        unet = (gguf_denoiser(UNet2DConditionModel, Path(gguf), folder, "unet", dtype) if gguf else
                UNet2DConditionModel.from_pretrained(folder, subfolder="unet", use_safetensors=use_safe,
                                                     torch_dtype=dtype, **part_kwargs(loading, "unet", dtype)))
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", use_safetensors=use_safe, torch_dtype=dtype)
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", use_safetensors=use_safe, dtype=dtype,
                                                     **part_kwargs(loading, "text_encoder", dtype))
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
        config = DDIMScheduler.load_config(folder, subfolder="scheduler")
        extra = {}
        if xl:
            extra["text_encoder_2"] = CLIPTextModelWithProjection.from_pretrained(
                folder / "text_encoder_2", use_safetensors=use_safe, dtype=dtype,
                **part_kwargs(loading, "text_encoder_2", dtype)).eval()
            extra["tokenizer_2"] = CLIPTokenizer.from_pretrained(folder / "tokenizer_2")
    except LoadingError as err:
        raise ModelLoadError(str(err)) from None
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
                 path=str(folder.resolve()), loading=loading)


def _read_text(path: Path) -> str:
    """A regular file's text (a FIFO is refused, not waited on)."""
    from p2p_cli.paths import read_regular_text

    return read_regular_text(path)


def _regular(path: Path) -> None:
    """ModelLoadError unless `path` is a regular file (a FIFO would hang the loader)."""
    from p2p_cli.paths import check_regular

    try:
        check_regular(path)
    except OSError as err:
        raise ModelLoadError(f"{path}: {err.strerror}") from None


def _check_safe(folder: Path, allow_pickle: bool) -> None:
    """Every network's weights in safetensors (pickle files only with allow_pickle: they can run code); every
    file of the folder's parts a regular file."""
    for entry in [folder, *(p for p in folder.iterdir() if p.is_dir())]:  # a FIFO would hang the loaders
        for file in entry.iterdir():
            if not file.is_dir():
                _regular(file)
    if problem := unsafe_weights(folder, allow_pickle):
        raise ModelLoadError(problem)


def load_pipeline_folder(folder: Path, allow_pickle: bool = False, dtype: torch.dtype = torch.float32,
                         id: str | None = None, parts: dict | None = None, loading: Loading | None = None) -> Model:
    """An SD3 / SD3.5, FLUX.1, Qwen-Image, FLUX.2 klein or Chroma folder (transformer/, vae/, text encoders,
    tokenizers, scheduler/), read by the family's diffusers pipeline class as it reads a hub snapshot; parts:
    components given instead of read from the folder (the bundled transformer shapes model shares its VAE and text
    encoders with the UNet model)."""
    import json

    import diffusers
    import transformers

    for lib in (diffusers, transformers):
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()
    try:
        index = json.loads(_read_text(folder / "model_index.json"))
        name = index["_class_name"]
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"{folder}: a transformer model folder needs its model_index.json ({err})") from None
    family = PIPELINES.get(name)
    if family not in TRANSFORMER_FAMILIES:
        known = ", ".join(d.label for d in FAMILY_DEFAULTS.values())
        raise ModelLoadError(f"{folder}: a {name} model; p2p edits {known} (text-to-image)")
    _check_safe(folder, allow_pickle)
    from p2p_cli.placement import LoadingError, gguf_denoiser, pipeline_kwargs

    present = [k for k, v in index.items() if isinstance(v, list) and v[0] is not None
               and k in ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3")]
    loading = quantized_parts(loading or Loading(), family, present)
    parts = dict(parts or {})
    try:
        gguf = loading.kind("transformer")
        if gguf and gguf.endswith(".gguf"):
            parts["transformer"] = gguf_denoiser(getattr(diffusers, index["transformer"][1]), Path(gguf), folder,
                                                 "transformer", dtype)
        with warnings.catch_warnings():  # newer diffusers rename torch_dtype; older ones know only it
            warnings.simplefilter("ignore", FutureWarning)
            # parts the folder leaves out ([null, null] in model_index.json, as SD3 without T5 is saved) are
            # passed as None: diffusers does not read them as absent by itself
            absent = {k: None for k, v in index.items() if v == [None, None]}
            pipe = getattr(diffusers, name).from_pretrained(folder, torch_dtype=dtype,
                                                   use_safetensors=None if allow_pickle else True,
                                                   **{**absent, **parts}, **pipeline_kwargs(loading, dtype))
    except LoadingError as err:
        raise ModelLoadError(str(err)) from None
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"cannot load the model in {folder}: {err}") from err
    parts = {k: (v.eval() if hasattr(v, "eval") else v) for k, v in pipeline_parts(pipe).items()}
    return Model(**parts, options=_pipeline_options(folder), id=id or str(folder.resolve()), path=str(folder.resolve()),
                 loading=loading)


load_transformer_folder = load_pipeline_folder  # its name before the table of pipeline classes (resolve.PIPELINES)


def single_file_family(path: Path) -> str:
    """"sdxl" or "sd" from the tensor names of a single-file .safetensors checkpoint (resolve.file_family)."""
    _regular(path)
    try:
        return file_family(path)
    except NotASingleFile as err:
        raise ModelLoadError(str(err)) from None


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
    offline = env_flag("HF_HUB_OFFLINE") or not hub_reachable()
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
        index = json.loads(_read_text(folder / "model_index.json"))
    except (OSError, ValueError):
        return {}
    return {k: index[k] for k in ("force_zeros_for_empty_prompt", "is_distilled") if k in index}


def _hub_snapshot(repo_id: str, allow_pickle: bool) -> tuple[Path, str | None]:
    """The local snapshot folder and commit of a hub model; from the cache only when offline."""
    patterns = ["model_index.json", "tokenizer/*", "tokenizer_2/*", "tokenizer_3/*", "scheduler/*"]
    for part, (safe, pickled) in WEIGHT_FILES.items():
        stem = safe.removesuffix(".safetensors")
        patterns += [f"{part}/config.json", f"{part}/{safe}", f"{part}/{stem}-*.safetensors", f"{part}/{safe}.index.json"]
        if allow_pickle:
            patterns += [f"{part}/{pickled}"]
    try:
        folder = hub_snapshot(repo_id, patterns)
    except HubUnavailable as err:
        if err.offline:
            fix = "unset it to download the model" if err.how.startswith("HF_HUB_OFFLINE") else "connect to the network"
            raise ModelLoadError(
                f"{repo_id} is not in the local Hugging Face cache and {err.how}: {fix}, or pass --model with a"
                " local folder saved by diffusers' save_pretrained (pipeline.save_pretrained(folder))"
            ) from err.err
        raise ModelLoadError(f"cannot get {repo_id} from the hub: {err}. Check the id, or pass a local folder") from err.err
    revision = folder.name if len(folder.name) == 40 else None  # snapshots/<commit hash>
    return folder, revision
