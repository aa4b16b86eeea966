"""Edit metrics on (3, H, W) images in [0, 1]: how much of the source is kept (SSIM, PSNR, LPIPS, also outside a
mask) and how much of the edit happened (CLIP score, directional CLIP similarity), as the field reports them."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
import torch.nn.functional as F

CLIP_DEFAULT = "openai/clip-vit-large-patch14"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class MetricUnavailable(RuntimeError):
    """A metric whose model or package is not here; the message says why (shown once, the column left empty)."""


def _pair(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images as float64 (1, 3, H, W) and the keep mask as (1, 1, H, W)."""
    if a.shape != b.shape or a.ndim != 3 or a.shape[0] != 3:
        raise ValueError(f"expected two (3, H, W) images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    keep = torch.ones(a.shape[-2:]) if keep is None else keep
    if keep.shape != a.shape[-2:]:
        raise ValueError(f"mask {tuple(keep.shape)} does not match the images {tuple(a.shape[-2:])}")
    return a.double()[None].cpu(), b.double()[None].cpu(), (keep.double().cpu() > 0.5).double()[None, None]


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """(size, size) Gaussian weights summing to 1 (Wang et al. 2004: 11x11, sigma 1.5)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_map(a: torch.Tensor, b: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel, per-channel SSIM (1, 3, H, W) of (1, 3, H, W) images in [0, 1]; borders reflected."""
    if min(a.shape[-2:]) <= size // 2:
        raise ValueError(f"images of {tuple(a.shape[-2:])} are too small for an {size}x{size} SSIM window")
    c1, c2 = 0.01**2, 0.03**2  # (K * data range)^2 with range 1
    window = gaussian_window(size, sigma).to(a)[None, None].expand(3, 1, -1, -1)  # (3, 1, k, k) depthwise

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, [size // 2] * 4, mode="reflect"), window, groups=3)  # (1, 3, H, W)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a * mu_a, blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))


def ssim(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None) -> float | None:
    """Mean SSIM over the channels and the pixels where keep (H, W) is 1 (all when None); None if keep is empty.

    With a mask both images are zeroed outside it first (as PIE-Bench does), so changes there cannot leak into
    the windows of kept pixels near the border.
    """
    a, b, keep = _pair(a, b, keep)
    if keep.sum() == 0:
        return None
    values = ssim_map(a * keep, b * keep)  # (1, 3, H, W)
    return float((values * keep).sum() / (keep.sum() * 3))


def psnr(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None) -> float | None:
    """PSNR in dB for images in [0, 1] over the pixels where keep is 1; inf for identical pixels, None if empty."""
    a, b, keep = _pair(a, b, keep)
    if keep.sum() == 0:
        return None
    mse = float((((a - b) ** 2) * keep).sum() / (keep.sum() * 3))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


class Lpips:
    """LPIPS (AlexNet) from the `lpips` package, only when it and torchvision's AlexNet weights are already here."""

    def __init__(self, device: torch.device | str = "cpu"):
        if importlib.util.find_spec("lpips") is None:
            raise MetricUnavailable("LPIPS needs the `lpips` package (pip install lpips)")
        weights = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
        if not weights.exists():
            raise MetricUnavailable(f"LPIPS needs torchvision's AlexNet weights at {weights}; they are not downloaded")
        import lpips

        try:
            self.net = lpips.LPIPS(net="alex", verbose=False).eval().to(device)
        except Exception as err:  # noqa: BLE001 - a broken install is reported, not raised
            raise MetricUnavailable(f"LPIPS could not be set up: {err}") from err
        self.device = torch.device(device)

    @torch.inference_mode()
    def __call__(self, a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None) -> float | None:
        """LPIPS distance (lower = more alike); with keep, of the images zeroed outside it."""
        a, b, keep = _pair(a, b, keep)
        if keep.sum() == 0:
            return None
        a, b = (x * keep * 2 - 1 for x in (a, b))  # LPIPS takes [-1, 1]
        return float(self.net(a.float().to(self.device), b.float().to(self.device)).mean())


def clip_pixels(images: torch.Tensor, side: int) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> CLIP input (N, 3, side, side): shorter side to `side` (bicubic), centre crop,
    CLIP mean/std, as CLIPImageProcessor does."""
    h, w = images.shape[-2:]
    scale = side / min(h, w)
    size = (max(side, round(h * scale)), max(side, round(w * scale)))
    x = F.interpolate(images.float(), size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    top, left = (size[0] - side) // 2, (size[1] - side) // 2
    x = x[:, :, top:top + side, left:left + side]  # (N, 3, side, side)
    mean = torch.tensor(CLIP_MEAN, device=x.device)[None, :, None, None]
    std = torch.tensor(CLIP_STD, device=x.device)[None, :, None, None]
    return (x - mean) / std


class ClipScorer:
    """CLIP image/text embeddings from a transformers CLIPModel (hub id or local folder), loaded on first use.

    Text goes through the project's offline CLIP tokenizer (the BPE every OpenAI CLIP uses), so only the model's
    config and safetensors weights are read.
    """

    def __init__(self, spec: str = CLIP_DEFAULT, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.spec, self.device, self.dtype = spec, torch.device(device), dtype
        self._model = None
        self._tokenizer = None

    def load(self) -> ClipScorer:
        """Load the model now; raise MetricUnavailable saying why it cannot be (offline, missing files, ...)."""
        if self._model is not None:
            return self
        from transformers import CLIPModel
        from transformers.utils import logging

        from p2p_cli.arch import clip_tokenizer

        logging.set_verbosity_error()
        folder = _clip_folder(self.spec)
        try:
            model = CLIPModel.from_pretrained(folder, use_safetensors=True)
        except (OSError, ValueError, KeyError) as err:
            raise MetricUnavailable(f"cannot load CLIP from {folder}: {err}") from err
        self._model = model.eval().to(self.device, self.dtype)
        self._tokenizer = clip_tokenizer()
        return self

    @property
    def model(self):
        return self.load()._model

    @torch.inference_mode()
    def image_features(self, images: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> unit embeddings (N, D), float32 on the CPU."""
        model = self.model
        out = []
        for part in images.split(chunk):
            pixels = clip_pixels(part.to(self.device), model.config.vision_config.image_size).to(self.dtype)
            pooled = model.vision_model(pixel_values=pixels).pooler_output  # (n, hidden)
            out.append(F.normalize(model.visual_projection(pooled).float(), dim=-1).cpu())  # (n, D)
        return torch.cat(out)

    @torch.inference_mode()
    def text_features(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> unit embeddings (N, D), float32 on the CPU (truncated to the model's context)."""
        model = self.model
        length = min(self._tokenizer.model_max_length, model.config.text_config.max_position_embeddings)
        tok = self._tokenizer(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        pooled = model.text_model(input_ids=tok.input_ids.to(self.device),
                                  attention_mask=tok.attention_mask.to(self.device)).pooler_output  # (N, hidden)
        return F.normalize(model.text_projection(pooled).float(), dim=-1).cpu()  # (N, D)


def clip_score(image_feature: torch.Tensor, text_feature: torch.Tensor) -> float:
    """CLIPScore as torchmetrics and PIE-Bench report it: 100 * max(cos(image, text), 0), in [0, 100]."""
    return 100.0 * max(float(image_feature @ text_feature), 0.0)


def directional_similarity(src_image: torch.Tensor, image: torch.Tensor, src_text: torch.Tensor,
                           text: torch.Tensor, eps: float = 1e-6) -> float | None:
    """cos(image change, text change) of unit CLIP embeddings (Gal et al. 2022), in [-1, 1]; None when either
    change is nil (e.g. a reweight edit, whose target prompt is the source's)."""
    d_image, d_text = image - src_image, text - src_text
    if d_image.norm() < eps or d_text.norm() < eps:
        return None
    return float(F.cosine_similarity(d_image, d_text, dim=0))


def _clip_folder(spec: str) -> Path:
    """A local folder, or the hub snapshot of an id (from the cache only when offline); MetricUnavailable if not."""
    from p2p_cli.models import _env_flag, _hub_reachable

    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise MetricUnavailable(f"{spec} has no config.json; --clip takes a CLIPModel folder or a hub id")
        return path
    if spec.startswith(("/", ".", "~")) or spec.count("/") != 1:
        raise MetricUnavailable(f"no CLIP model folder at {spec}; --clip takes a local folder or a hub id")
    from huggingface_hub import snapshot_download

    patterns = ["config.json", "model.safetensors", "model-*.safetensors", "model.safetensors.index.json"]
    forced = _env_flag("HF_HUB_OFFLINE")
    offline = forced or not _hub_reachable()
    try:
        return Path(snapshot_download(spec, allow_patterns=patterns, local_files_only=offline, etag_timeout=5))
    except Exception as err:  # noqa: BLE001 - connection, not found, gated, ...: all mean "no CLIP here"
        if offline:
            how = "HF_HUB_OFFLINE is set" if forced else "the hub is unreachable"
            raise MetricUnavailable(f"CLIP {spec} is not in the local Hugging Face cache and {how}"
                                    " (pass --clip with a local folder)") from err
        raise MetricUnavailable(f"cannot get CLIP {spec} from the hub: {err}") from err
