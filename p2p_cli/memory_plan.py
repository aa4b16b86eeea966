"""The memory plan: whether a recipe fits a device's memory, before anything loads, and the settings that would.

Peak = the weights resident on the device + what sampling adds (engine/memory.estimate_bytes, the activation
model the run's own check uses; attention stores are counted by that check once the model is loaded, not here).

- Weights: each network's parameter count times its bytes per parameter (the dtype's, or its quantization's:
  loading.KINDS; a GGUF file's own tensor bytes). Counts come from the safetensors headers of a local folder (or
  the bundled models), and for the published models whose files are not on this machine from PUBLISHED: their
  published configs built on the meta device by lab/model_sizes.py (no weights, nothing downloaded).
- Offload: none keeps every network on the device; model keeps one at a time (the largest counts); sequential
  and group keep about one block of the largest network (its size over the denoiser's block count).
- The VAE: decoded whole, or in tiles where the recipe's `vae:` tiles at this size (loading.tile_side, with the
  tile its config gives), which the activation model counts one tile at a time.

Torch-free: `p2p validate --memory 16GB` runs it without loading torch. These are estimates: measured against a
GPU they are not yet (the README's table says so)."""

from __future__ import annotations

import functools
import json
import re
import struct
from dataclasses import dataclass, replace
from pathlib import Path

from p2p_cli.checks import model_geometry
from p2p_cli.engine.memory import GIB, estimate_bytes
from p2p_cli.family_defaults import FAMILY_DEFAULTS
from p2p_cli.loading import KINDS, Loading, tile_side, vae_tile
from p2p_cli.recipe import Recipe
from p2p_cli.resolve import BUNDLED, WEIGHT_FILES, folder_family, read_json, resolve

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
_SD1 = dict(family="sd", params={"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}, native=512,
            width=320, latent_channels=4, vae_channels=128, scale=8, patch=1, blocks=9, text=77, multiple=64,
            tile=512)
PUBLISHED = {  # python -m lab.model_sizes: parameters per part, the published configs built on the meta device
    "CompVis/stable-diffusion-v1-4": _SD1,
    "runwayml/stable-diffusion-v1-5": _SD1,
    "stable-diffusion-v1-5/stable-diffusion-v1-5": _SD1,
    "stabilityai/stable-diffusion-xl-base-1.0": dict(
        family="sdxl", params={"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480,
                               "text_encoder_2": 694_659_840},
        native=1024, width=320, latent_channels=4, vae_channels=128, scale=8, patch=1, blocks=7, text=77, multiple=32,
        tile=1024),
    "stabilityai/stable-diffusion-3-medium-diffusers": dict(
        family="sd3", params={"transformer": 2_028_328_000, "vae": 83_819_683, "text_encoder": 123_650_304,
                              "text_encoder_2": 694_659_840, "text_encoder_3": 4_762_310_656},
        native=1024, width=1536, latent_channels=16, vae_channels=128, scale=8, patch=2, blocks=24, text=333,
        multiple=16, tile=1024),
    "black-forest-labs/FLUX.1-dev": dict(
        family="flux", params={"transformer": 11_901_408_320, "vae": 83_819_683, "text_encoder": 123_060_480,
                               "text_encoder_2": 4_762_310_656},
        native=1024, width=3072, latent_channels=16, vae_channels=128, scale=8, patch=2, blocks=57, text=512,
        multiple=16, tile=1024),
    "lodestones/Chroma1-HD": dict(
        family="chroma", params={"transformer": 8_899_983_424, "vae": 83_819_683, "text_encoder": 4_762_310_656},
        native=1024, width=3072, latent_channels=16, vae_channels=128, scale=8, patch=2, blocks=57, text=512,
        multiple=16, tile=1024),
}


@dataclass(frozen=True)
class Sizes:
    """What the plan needs of a model: parameters per network, and the geometry the activation model reads."""

    family: str
    params: dict
    native: int
    width: int  # a UNet's first level's channels, or a transformer's width (heads x head size)
    latent_channels: int
    vae_channels: int
    scale: int  # pixels per latent cell
    patch: int  # latent cells per token side (transformers; 1 for a UNet)
    blocks: int  # the denoiser's blocks (what sequential/group offload keep one of)
    text: int  # text tokens a transformer's sequence holds
    multiple: int  # the size multiple
    tile: int = 512  # the side of the VAE's tile in pixels (loading.vae_tile)
    published: bool = False  # from PUBLISHED (the files are not here)

    @property
    def denoiser(self) -> str:
        return "transformer" if "transformer" in self.params else "unet"


def parse_memory(text: str) -> int:
    """"16GB", "16G", "12.5GiB", "800MB" -> bytes (GB and GiB both 2**30: cards are sold by GiB)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([GMT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if m is None:
        raise ValueError(f"--memory: {text!r} is not an amount; write it as 16GB (or 800MB)")
    unit = {"": GIB, "G": GIB, "M": 2**20, "T": 2**40}[m.group(2).upper()]
    return int(float(m.group(1)) * unit)


def safetensors_params(folder: Path) -> int | None:
    """Parameters in a part's safetensors files (read from their headers only); None when there are none."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, info in header.items():
            if name != "__metadata__":
                count = 1
                for dim in info["shape"]:
                    count *= dim
                total += count
    return total


def gguf_bytes(path: Path) -> int:
    """The bytes of a GGUF file's tensors (as quantized), from its header (the gguf package)."""
    from gguf import GGUFReader

    return sum(int(t.n_bytes) for t in GGUFReader(str(path)).tensors)


@functools.cache  # read once per model, however many recipes name it
def model_sizes(spec: str | None) -> Sizes | None:
    """A model's Sizes: from its folder's config files and safetensors headers, or PUBLISHED; None when unknown."""
    source = resolve(spec)
    if source.kind == "hub" and source.key in PUBLISHED:
        return Sizes(**PUBLISHED[source.key], published=True)
    geometry = model_geometry(spec)
    folder = source.path if source.kind in ("bundled", "folder") else None
    if geometry is None or folder is None:
        return None
    family = folder_family(folder) or geometry.family.name
    params = {}
    for part in WEIGHT_FILES:
        sub = folder / part if (folder / part).is_dir() else BUNDLED["shapes"] / part  # shapes-mmdit shares these
        if (folder / part).is_dir() or (source.key == "shapes-mmdit" and part in ("vae", "text_encoder")):
            if (count := safetensors_params(sub)) is not None:
                params[part] = count
    vae = read_json((folder if (folder / "vae").is_dir() else BUNDLED["shapes"]) / "vae" / "config.json") or {}
    if "transformer" in params:
        config = read_json(folder / "transformer" / "config.json") or {}
        width = config.get("num_attention_heads", 1) * config.get("attention_head_dim", 1)
        patch = config.get("patch_size", 1) if family not in ("flux", "chroma") else 2
        blocks = config.get("num_layers", 1) + config.get("num_single_layers", 0)
        text = 333 if family == "sd3" else 512 if config.get("guidance_embeds") or family == "chroma" else 256
    else:
        config = read_json(folder / "unet" / "config.json") or {}
        width, patch, text = config.get("block_out_channels", [320])[0], 1, 77
        blocks = 2 * len(config.get("block_out_channels", [0])) + 1
    return Sizes(family=family, params=params, native=geometry.native, width=width,
                 latent_channels=vae.get("latent_channels", 4), vae_channels=vae.get("block_out_channels", [128])[0],
                 scale=geometry.vae_scale, patch=patch, blocks=max(1, blocks), text=text, multiple=geometry.multiple,
                 tile=vae_tile(vae))


@dataclass(frozen=True)
class Plan:
    """A recipe's memory plan on one model with one dtype and loading settings (sizes in bytes)."""

    sizes: Sizes
    size: tuple[int, int]
    prompts: int
    dtype: str
    loading: Loading
    vae: str | None = None  # the recipe's vae: (None: auto)

    @property
    def guided(self) -> bool:
        return FAMILY_DEFAULTS[self.sizes.family].cfg  # FLUX.1's and FLUX.2 dev's guidance is an input, no batch

    def weights(self) -> dict[str, int]:
        """Each network's bytes on the device when it is resident."""
        loading = self.loading.for_family(self.sizes.denoiser)
        out = {}
        for part, count in self.sizes.params.items():
            kind = loading.kind(part)
            if kind is not None and kind.endswith(".gguf") and Path(kind).is_file():
                out[part] = gguf_bytes(Path(kind))
            elif kind is not None and kind in KINDS:
                out[part] = int(count * KINDS[kind][1])
            elif kind is not None:  # a GGUF file not here: about 4.5 bits per weight (Q4_K)
                out[part] = int(count * 0.5625)
            else:
                out[part] = count * DTYPE_BYTES[self.dtype]
        return out

    def resident(self) -> int:
        """The weights on the device at the peak, under this offload."""
        weights = self.weights()
        offload = self.loading.offload
        if offload == "none":
            return sum(weights.values())
        if offload == "model":
            return max(weights.values())
        return max(weights.values()) // self.sizes.blocks

    def activations(self, size: tuple[int, int] | None = None, prompts: int | None = None) -> int:
        """What sampling and decoding add (engine/memory.estimate_bytes, without attention stores)."""
        s = self.sizes
        h, w = size or self.size
        latent_hw = (h // s.scale, w // s.scale)
        tokens = None
        if s.denoiser == "transformer":
            tokens = (latent_hw[0] // s.patch) * (latent_hw[1] // s.patch) + s.text
        dtype_bytes = DTYPE_BYTES[self.dtype]
        vae_bytes = 4 if s.family == "sdxl" and self.dtype == "fp16" else dtype_bytes  # SDXL's VAE upcasts
        return estimate_bytes(latent_hw=latent_hw, prompts=prompts or self.prompts, guided=self.guided,
                              width=s.width, denoiser_bytes=dtype_bytes, vae_channels=s.vae_channels,
                              vae_scale=s.scale, vae_bytes=vae_bytes, latent_channels=s.latent_channels, tokens=tokens,
                              vae_tile=tile_side(self.vae, (h, w), s.tile, s.scale))

    def peak(self, size: tuple[int, int] | None = None, prompts: int | None = None) -> int:
        return self.resident() + self.activations(size, prompts)

    def with_loading(self, loading: Loading) -> Plan:
        return replace(self, loading=loading)

    def largest_size(self, budget: int) -> int | None:
        """The largest side (a multiple of the model's, the recipe's aspect kept) whose peak fits, if any."""
        m, (h, w) = self.sizes.multiple, self.size
        long = max(h, w)
        for side in range(long - long % m, 0, -m):
            other = max(m, round(side * min(h, w) / long / m) * m)
            trial = (side, other) if h >= w else (other, side)
            if self.peak(trial) <= budget:
                return side
        return None

    def fixes(self, budget: int, device: str = "cuda") -> list[str]:
        """Settings that fit the budget, smallest change first, each with its peak (offload and bitsandbytes only
        on a CUDA device: elsewhere there is nothing to offload to, and bitsandbytes needs CUDA)."""
        text_encoders = [p for p in TEXT_ENCODERS if p in self.sizes.params]
        den = self.sizes.denoiser
        candidates = [
            ("offload: model", Loading(self.loading.quantize, "model")),
            (f"quantize: {{{den}: int8}}", Loading(((den, "int8"),), self.loading.offload)),
            (f"quantize: int8 for the {den} and the text encoders",
             Loading(tuple((p, "int8") for p in [den, *text_encoders]), self.loading.offload)),
            (f"quantize: int8 for the {den} and the text encoders, offload: model",
             Loading(tuple((p, "int8") for p in [den, *text_encoders]), "model")),
            (f"quantize: {{{den}: bnb-4bit}} with int8 text encoders",
             Loading(((den, "bnb-4bit"), *((p, "int8") for p in text_encoders)), self.loading.offload)),
            (f"quantize: {{{den}: bnb-4bit}} with int8 text encoders, offload: model",
             Loading(((den, "bnb-4bit"), *((p, "int8") for p in text_encoders)), "model")),
            ("offload: sequential", Loading(self.loading.quantize, "sequential")),
        ]
        found, with_tiles = [], []
        tiled = replace(self, vae="tiled") if self.vae != "tiled" else None  # the VAE decoded tile by tile
        if tiled is not None and tiled.peak() <= budget:
            found.append(f"vae: tiled ({gib(tiled.peak())})")
            tiled = None  # enough alone: no need to pair it with the others
        for label, loading in candidates:
            if loading == self.loading or device != "cuda" and (
                    loading.offload != "none" or any(k.startswith("bnb") for _, k in loading.quantize)):
                continue
            peak = self.with_loading(loading).peak()
            if peak <= budget:
                found.append(f"{label} ({gib(peak)})")
            elif tiled is not None and (peak := tiled.with_loading(loading).peak()) <= budget:
                with_tiles.append(f"{label}, vae: tiled ({gib(peak)})")
        found += with_tiles
        if self.prompts > 2 and self.peak(prompts=2) <= budget:
            found.append(f"one edit per recipe ({gib(self.peak(prompts=2))})")
        side = self.largest_size(budget)
        if side is not None and side < max(self.size):
            found.append(f"size: {side} ({gib(self.peak(self._scaled(side)))})")
        return found

    def _scaled(self, side: int) -> tuple[int, int]:
        h, w = self.size
        m = self.sizes.multiple
        other = max(m, round(side * min(h, w) / max(h, w) / m) * m)
        return (side, other) if h >= w else (other, side)

    def lines(self, budget: int, device: str) -> list[str]:
        """What `p2p validate --memory` prints: the peak and its parts, and when it does not fit what would."""
        weights = self.weights()
        parts = ", ".join(f"{p} {gib(b)}" for p, b in sorted(weights.items(), key=lambda kv: -kv[1]))
        peak = self.peak()
        verdict = "fits" if peak <= budget else "does NOT fit"
        where = " (published parameter counts: the files are not here)" if self.sizes.published else ""
        lines = [f"  memory on {device}, {gib(budget)}: about {gib(peak)} at {self.size[1]}x{self.size[0]},"
                 f" {self.prompts} prompts, {self.dtype}, offload {self.loading.offload}: {verdict}"
                 f" (weights {gib(self.resident())} resident of {parts}{where}; sampling {gib(self.activations())})"]
        if peak > budget:
            fixes = self.fixes(budget, device)
            lines.append("      would fit: " + ("; ".join(fixes) if fixes else "nothing p2p offers: use a"
                                                                                   " larger card"))
        return lines


def gib(n: int) -> str:
    return f"{n / GIB:.1f} GB"


def plan_for(spec: str | None, recipe: Recipe, dtype: str, loading: Loading | None = None) -> Plan | None:
    """The recipe's plan on the model `spec` in `dtype` ("fp16", ...): None when the model's sizes are unknown."""
    sizes = model_sizes(spec)
    if sizes is None:
        return None
    size = tuple(recipe.size) if recipe.size else (sizes.native, sizes.native)
    prompts = 1 + len(recipe.edits) + len(recipe.baseline_edits())
    return Plan(sizes, size, prompts, dtype, loading or recipe.loading, recipe.vae)
