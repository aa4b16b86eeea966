"""Will a run fit in memory? A conservative estimate made before sampling, and the memory the device has free.

The estimate counts what a run adds to the loaded weights (which are not counted again):

- the UNet's activations: UNET_COPIES copies of its first level's activation, rows x latent cells x channels
  (rows: prompts x 2 with guidance), in the UNet's dtype. Self-attention is fused (SDPA: no rows x heads x Q x Q
  map), so the feed-forward and the resnets at full latent size dominate;
- a transformer's (SD3, FLUX) activations: TRANSFORMER_COPIES copies of rows x (image tokens + text tokens) x its
  width (heads x head size), in its dtype: every block keeps that shape, and the feed-forward's 4x widening, the
  single-stream blocks' joined MLP and the text encoders' work fit inside the copies;
- attention probabilities where they are materialised: in the layers an attention store records (local blend,
  attention pictures) or in every layer with `attention="explicit"`: rows x heads x Q x K in float32 (plus the
  UNet-dtype scores under fp16/bf16), for the largest such layer (layers run one after the other; a joint layer
  makes them for the conditional rows only, image queries x all keys, JOINT_PROB_COPIES times), and the stores' sums
  (prompts x Q x K float32 per recorded layer), which live for the whole run;
- the VAE decode, 8 pictures at a time: VAE_COPIES copies of pictures x pixels x the VAE's first channels, in the
  VAE's dtype; tiled (diffusers' tiled VAE, a recipe's `vae:`), one picture at a time and one tile at a time:
  VAE_COPIES copies of a tile's pixels, plus the decoded tiles of one picture before they are blended (pictures
  of four times its pixels: the overlapping tiles, the blended rows and their join) and the pictures of the call
  joined (the tiny VAE alone at 512 and 1024 px, 1 and 2 pictures, 128 px tiles, `ru_maxrss` over the decode:
  peaks of 18 to 104 MiB, 0.59 to 0.85 of the estimate before SAFETY; the whole decode measured 0.56);
- the latents and the decoded pictures (float32).

The UNet and the VAE run one after the other: the peak is the larger of the two phases, plus what lives
throughout. The copy counts were measured on the tiny test models (peak RSS over a warm run on the CPU,
`ru_maxrss`, for 512 and 1024 px at 1 to 4 rows: the UNet 34 to 42 copies, the VAE 5.6 to 7.4) and rounded up;
the total is then multiplied by SAFETY. The transformer counts were measured the same way on the CPU benchmark
layouts (`arch.bench_sd3_components`, `bench_flux_components`; the denoising phase alone, 256 and 512 px, 2 and 4
prompts): 20 to 48 copies fused, and explicit attention added 2.5 to 2.7 maps. Whole runs of the tiny model (2 prompts, guided, 2 steps) peaked at 146
to 159 MiB (512 px; estimate 215), 423 and 463 MiB (1024 px, without and with local blend; estimate 864), 2149
MiB (512 px, explicit attention; estimate 2695) and 156 MiB (256 px, explicit, local blend; estimate 194).
Set P2P_MEMORY_CHECK=0 to skip the check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a device is asked about: the estimate itself is plain arithmetic,
    import torch  # which the memory plan (memory_plan.py, `p2p validate --memory`) runs without torch

UNET_COPIES = 48  # measured 34..42 (tiny UNet, fused attention, CPU)
TRANSFORMER_COPIES = 64  # measured 20..48 (SD3 / FLUX benchmark layouts, fused attention, CPU)
JOINT_PROB_COPIES = 3  # measured 2.5..2.7 maps (explicit joint attention: scores, probabilities, the edited rows)
VAE_COPIES = 10  # measured 5.6..7.4 (tiny VAE alone, CPU); a whole run at 512 px peaked 10% above 8
SAFETY = 1.25
DECODE_CHUNK = 8  # pipeline.decode_latents' pictures per VAE call

GIB = 2**30


class NotEnoughMemory(RuntimeError):
    """A run whose estimated memory is more than the device has free (raised before sampling)."""

    def __init__(self, needed: int, available: int, device: str, size: tuple[int, int], largest: int | list | None,
                 explicit: bool = False, fixes: list[str] | tuple = ()):
        self.needed, self.available, self.device, self.size, self.largest = needed, available, device, size, largest
        fits = (f"the largest size that fits is about size: {largest}" if largest is not None
                else "no size fits; free memory or use a smaller model")
        hints = ["fewer edits per recipe"]
        if explicit:
            hints.insert(0, "the fused attention (without --attention explicit)")
        if device.startswith("cuda"):
            hints.insert(0, "--dtype fp16")
        super().__init__(
            f"not enough memory: size {size[0]}x{size[1]} needs about {needed / GIB:.1f} GiB on {device}, which has"
            f" {available / GIB:.1f} GiB free; {fits} (set it with size: in the recipe or --set size=N); or try "
            + ", ".join(hints) + " (P2P_MEMORY_CHECK=0 skips this estimate)"
            + (f"; settings that fit: {'; '.join(fixes)}" if fixes else "")
        )


@dataclass(frozen=True)
class Layers:
    """What the estimate needs of the denoiser's attention layers at one latent size."""

    maps: tuple[tuple[int, int, int], ...]  # (heads, Q, K) of each layer whose probabilities are materialised
    stored: tuple[tuple[int, int], ...]  # (Q, K) of each layer a store records


def estimate_bytes(*, latent_hw: tuple[int, int], prompts: int, guided: bool, width: int, denoiser_bytes: int,
                   vae_channels: int, vae_scale: int, vae_bytes: int, latent_channels: int,
                   layers: Layers | None = None, tokens: int | None = None, vae_tile: int | None = None) -> int:
    """The estimated peak bytes a run adds to the loaded weights (the module docstring says what is counted).

    width: the UNet's first level's channels, or a transformer's width; tokens: a transformer's sequence length
    (image + text tokens; None for a UNet); vae_tile: the side in pixels of the tiles the VAE decodes in (None:
    whole pictures)."""
    rows = prompts * (2 if guided else 1)
    cells = latent_hw[0] * latent_hw[1]
    pixels = cells * vae_scale**2
    if tokens is None:
        denoiser = UNET_COPIES * rows * cells * width * denoiser_bytes
        map_rows = rows
    else:
        denoiser = TRANSFORMER_COPIES * rows * tokens * width * denoiser_bytes
        map_rows = prompts * JOINT_PROB_COPIES
    probs = stored = 0
    if layers is not None:
        per_score = 4 if denoiser_bytes == 4 else 4 + denoiser_bytes  # float32 probabilities (and the model's scores)
        probs = max((map_rows * heads * q * k * per_score for heads, q, k in layers.maps), default=0)
        stored = sum(prompts * q * k * 4 for q, k in layers.stored)
    if vae_tile is None:
        vae = VAE_COPIES * min(prompts, DECODE_CHUNK) * pixels * vae_channels * vae_bytes
    else:  # sliced: one picture, one tile at a time
        tile = min(latent_hw[0] * vae_scale, vae_tile) * min(latent_hw[1] * vae_scale, vae_tile)
        vae = (VAE_COPIES * tile * vae_channels + (4 + min(prompts, DECODE_CHUNK)) * pixels * 3) * vae_bytes
    always = stored + prompts * (cells * latent_channels * 4 * 3 + pixels * 3 * 4 * 2)
    return int(SAFETY * (max(denoiser + probs, vae) + always))


def available_bytes(device: torch.device) -> int | None:
    """Free memory on the device: torch.cuda.mem_get_info (plus what torch's allocator holds unused) on a GPU;
    psutil's or /proc/meminfo's MemAvailable on the CPU; None when it cannot be known (then nothing is checked)."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    try:
        import psutil  # not a dependency: used when installed
    except ImportError:
        pass
    else:
        return int(psutil.virtual_memory().available)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_enabled() -> bool:
    return os.environ.get("P2P_MEMORY_CHECK", "1").strip().lower() not in ("0", "false", "no", "off")


def check_fits(estimate, size: tuple[int, int], multiple: int, device: torch.device,
               explicit: bool = False) -> int | None:
    """Raise NotEnoughMemory when estimate(size) is above the device's free memory; return the estimate.

    estimate: (height, width) in pixels -> bytes. The largest size that fits keeps the aspect ratio (the longer
    side a multiple of `multiple`, the other rounded to one)."""
    if not check_enabled():
        return None
    needed = estimate(size)
    available = available_bytes(device)
    if available is None or needed <= available:
        return needed
    largest = None
    long_side = max(size)
    for side in range(long_side - long_side % multiple, 0, -multiple):
        other = max(multiple, round(side * min(size) / long_side / multiple) * multiple)
        trial = (side, other) if size[0] >= size[1] else (other, side)
        if estimate(trial) <= available:
            largest = side if trial[0] == trial[1] else list(trial)
            break
    raise NotEnoughMemory(needed, available, str(device), size, largest, explicit)
