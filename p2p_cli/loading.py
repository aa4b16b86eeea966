"""How a model is loaded to fit the GPU at hand: quantization per component and offloading, as the recipe keys
`quantize:` and `offload:` (and `p2p edit --quantize/--offload`) spell them. Only diffusers' and transformers' own
quantization configs and offload hooks are used; this module holds the names and their meaning, without torch
(validate and the memory plan read it); the configs are made when a model loads.

    quantize: int8                                  # the denoiser (UNet or transformer), torchao int8 weight-only
    quantize: {transformer: fp8, text_encoder_2: int8}
    quantize: {transformer: flux1-dev-Q4_K_S.gguf}  # a GGUF file of the transformer (diffusers' from_single_file)
    offload: model                                  # none | model | sequential | group
    vae: auto                                       # auto | tiled | full: diffusers' VAE tiling and slicing
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# kind -> (what it is, weight bytes per parameter: the memory plan's ratio against 2-byte weights)
KINDS = {
    "int8": ("torchao int8 weight-only", 1.0),
    "fp8": ("torchao float8 weight-only", 1.0),
    "bnb-8bit": ("bitsandbytes LLM.int8", 1.0),
    "bnb-4bit": ("bitsandbytes NF4 (bf16 compute)", 0.5625),  # 4 bits plus a scale per 64 weights, double-quantized
}
GGUF = "gguf"  # a path ending in .gguf: the denoiser read from that file (its own quantization)
PARTS = ("denoiser", "unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")
OFFLOAD = ("none", "model", "sequential", "group")
DENOISERS = ("unet", "transformer")
VAE_MODES = ("auto", "tiled", "full")
QWEN_VAE_TILE = 256  # AutoencoderKLQwenImage's tile (diffusers sets it in code, not in the config)


@dataclass(frozen=True)
class Loading:
    """A model's loading settings: quantize as ((part, kind or .gguf path), ...) with the part named as diffusers
    names it ("denoiser" until the family is known), offload one of OFFLOAD."""

    quantize: tuple[tuple[str, str], ...] = ()
    offload: str = "none"

    @property
    def plain(self) -> bool:
        return not self.quantize and self.offload == "none"

    def kind(self, part: str) -> str | None:
        """The part's quantization (a KINDS name, or a .gguf path), None when it loads as it is."""
        return dict(self.quantize).get(part)

    def for_family(self, denoiser: str) -> Loading:
        """"denoiser" named as the family names it ("unet" or "transformer")."""
        return Loading(tuple((denoiser if p == "denoiser" else p, k) for p, k in self.quantize), self.offload)

    def record(self) -> dict:
        """What run.json, the PNG metadata and the inversion cache's key record (they change the pictures)."""
        return {"quantize": dict(self.quantize), "offload": self.offload}

    def key(self) -> str:
        """A short stable text for the model cache's key."""
        return ",".join(f"{p}={k}" for p, k in self.quantize) + f";offload={self.offload}"


def quantize_problems(value: str | dict | None) -> list[str]:
    """The problems of a `quantize:` value, as "quantize...: message" lines."""
    if value is None:
        return []
    if isinstance(value, str):
        value = {"denoiser": value}
    if not isinstance(value, dict):
        return [f"quantize: a kind ({', '.join(KINDS)}) or a .gguf file for the denoiser, or {{part: kind}}; not"
                f" {type(value).__name__}"]
    problems = []
    for part, kind in value.items():
        if part not in PARTS:
            problems.append(f"quantize.{part}: not a part; use {', '.join(PARTS)}")
        elif not isinstance(kind, str) or not (kind in KINDS or kind.endswith(".gguf")):
            problems.append(f"quantize.{part}: {kind!r} is not a quantization; use {', '.join(KINDS)} or a .gguf file")
        elif kind.endswith(".gguf") and part not in ("denoiser", *DENOISERS):
            problems.append(f"quantize.{part}: a GGUF file holds the denoiser (transformer or unet) only; quantize"
                            f" the text encoders with {', '.join(KINDS)}")
    denoisers = [p for p in value if p in ("denoiser", *DENOISERS)]
    if len(denoisers) > 1:
        problems.append(f"quantize: {' and '.join(denoisers)} both name the denoiser; keep one")
    return problems


def parse(quantize: str | dict | None, offload: str | None = None, where: str = "") -> Loading:
    """Loading settings from a recipe's values (ValueError with the quantize_problems lines when they are wrong)."""
    problems = quantize_problems(quantize)
    if offload is not None and offload not in OFFLOAD:
        problems.append(f"offload: {offload!r} is not one of {', '.join(OFFLOAD)}")
    if problems:
        raise ValueError("\n".join(problems))
    value = {"denoiser": quantize} if isinstance(quantize, str) else dict(quantize or {})
    return Loading(tuple(sorted(value.items())), offload or "none")


def gguf_path(kind: str, recipe_path: str | None = None) -> Path:
    """A .gguf quantization's file: absolute, or relative to the recipe file's folder."""
    path = Path(kind).expanduser()
    if path.is_absolute() or recipe_path in (None, "-"):
        return path
    return Path(recipe_path).parent / path


def vae_tile(config: dict) -> int:
    """The side of a VAE's tile in pixels, from its config: AutoencoderKL's (and FLUX.2's) sample_size, the
    picture size it was trained at; Qwen-Image's fixed 256."""
    if "temperal_downsample" in config:
        return QWEN_VAE_TILE
    size = config.get("sample_size", 512)
    return int(min(size) if isinstance(size, (list, tuple)) else size)


def tile_side(mode: str | None, size: tuple[int, int], tile: int, scale: int) -> int | None:
    """The tile side (pixels) diffusers' tiled VAE works in for a picture of `size`, None for one whole pass.

    auto (None too): tiled exactly when the picture is larger than the VAE's tile on a side, in the VAE's own
    tiles (what diffusers' enable_tiling does there); tiled: always, in the VAE's tiles, or where the picture fits
    in one, in tiles of half its longer side (a multiple of `scale`, the VAE's pixels per latent cell), so that it
    is split too; full: never (the picture in one pass, as diffusers' pipelines decode by default)."""
    if mode not in (None, *VAE_MODES):
        raise ValueError(f"vae: {mode!r} is not one of {', '.join(VAE_MODES)}")
    if mode == "full":
        return None
    if max(size) > tile:
        return tile
    if mode != "tiled":
        return None
    return max(scale, max(size) // 2 // scale * scale)


# --- the configs (diffusers and transformers imported only here) ----------------------------------------------

def torchao_type(kind: str):
    """torchao's weight-only config for a KINDS name."""
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

    return Int8WeightOnlyConfig() if kind == "int8" else Float8WeightOnlyConfig()


def diffusers_config(kind: str, compute_dtype):
    """diffusers' own quantization config for a denoiser (or a VAE)."""
    import diffusers

    return _library_config(diffusers, kind, compute_dtype)


def transformers_config(kind: str, compute_dtype):
    """transformers' own quantization config for a text encoder."""
    import transformers

    return _library_config(transformers, kind, compute_dtype)


def _library_config(library, kind: str, compute_dtype):
    """The config of a KINDS name in `library` (diffusers and transformers name theirs alike): torchao weight-only
    for int8 / fp8, bitsandbytes for bnb-8bit / bnb-4bit (NF4, double quantization)."""
    if kind in ("int8", "fp8"):
        return library.TorchAoConfig(torchao_type(kind))
    if kind == "bnb-8bit":
        return library.BitsAndBytesConfig(load_in_8bit=True)
    return library.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_use_double_quant=True)


def pipeline_config(loading: Loading, compute_dtype):
    """diffusers' PipelineQuantizationConfig for the parts a pipeline's from_pretrained quantizes (every part but
    a GGUF denoiser, which is read by from_single_file); None when there are none."""
    from diffusers import PipelineQuantizationConfig

    mapping = {}
    for part, kind in loading.quantize:
        if kind in KINDS:
            make = diffusers_config if part in DENOISERS else transformers_config
            mapping[part] = make(kind, compute_dtype)
    return PipelineQuantizationConfig(quant_mapping=mapping) if mapping else None
